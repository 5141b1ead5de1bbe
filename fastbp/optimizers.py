"""Optimizers by Keras's names and defaults, for :meth:`fastbp.Sequential.compile`.

Each is fastbp's optimizer of that name (:func:`fastbp.train`'s ``optimizer``) with
Keras's argument names and default settings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ._validate import as_flag, as_fraction, as_positive

#: The settings that must be positive; the others but the flags are rates of decay or momentum, in [0, 1).
_POSITIVE = ("learning_rate", "epsilon")


@dataclass
class _KerasOptimizer:
    """What the optimizers share: their settings checked and kept as Python floats and bools (numpy scalars
    would not go into a model file's JSON) whenever set, as a Keras callback sets ``learning_rate`` during
    training; a name that is not one of their settings is refused, not kept unused."""

    def __setattr__(self, name: str, value) -> None:
        field = self.__dataclass_fields__.get(name)
        if field is None:
            settings = ", ".join(self.__dataclass_fields__)
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}; its settings are {settings}")
        if field.type in (bool, "bool"):
            value = as_flag(value, name)
        else:
            value = as_positive(value, name) if name in _POSITIVE else as_fraction(value, name)
        object.__setattr__(self, name, value)


@dataclass
class Adam(_KerasOptimizer):
    """Keras's ``Adam`` optimizer and its defaults (as fastbp's ``optimizer="adam"``)."""

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def options(self) -> dict:
        return {"optimizer": "adam", "lr": self.learning_rate, "beta1": self.beta_1, "beta2": self.beta_2,
                "epsilon": self.epsilon}  # fmt: skip


@dataclass
class SGD(_KerasOptimizer):
    """Keras's ``SGD`` optimizer and its defaults (as fastbp's ``optimizer="sgd"``)."""

    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False

    def options(self) -> dict:
        return {"optimizer": "sgd", "lr": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}


@dataclass
class RMSprop(_KerasOptimizer):
    """Keras's ``RMSprop`` optimizer and its defaults (as fastbp's ``optimizer="rmsprop"``), without momentum or
    centring."""

    learning_rate: float = 0.001
    rho: float = 0.9
    epsilon: float = 1e-7

    def options(self) -> dict:
        return {"optimizer": "rmsprop", "lr": self.learning_rate, "rho": self.rho, "epsilon": self.epsilon}


#: Keras's optimizer settings that only matter where another one is on (its moving average's).
_KERAS_IDLE = ("name", "ema_momentum", "ema_overwrite_frequency")


def from_keras(optimizer) -> Adam | SGD | RMSprop:
    """Keras's own ``Adam``, ``SGD`` or ``RMSprop`` object as fastbp's, with its settings (``get_config``); one
    that sets what fastbp lacks (weight decay, clipping, a moving average, AMSGrad, RMSprop's momentum or
    centring, a learning-rate schedule) is refused, the setting named."""
    cls = BY_CLASS_NAME.get(type(optimizer).__name__)
    config = optimizer.get_config() if cls is not None and callable(getattr(optimizer, "get_config", None)) else None
    if not isinstance(config, dict):
        raise TypeError(f"optimizer must be a name, a fastbp RMSprop, Adam or SGD, or Keras's, got {optimizer!r}")
    names = {field.name for field in fields(cls)}
    schedule = config.get("learning_rate")
    if isinstance(schedule, dict):  # a schedule's config
        raise ValueError(
            f"fastbp's {cls.__name__} takes no learning-rate schedule (Keras's {schedule.get('class_name')}): give "
            "it a number, and change it from a callback, as keras.callbacks.LearningRateScheduler does"
        )
    unsupported = [key for key, value in config.items() if key not in names and key not in _KERAS_IDLE and value]
    if unsupported or not isinstance(config.get("learning_rate"), int | float):
        settings = ", ".join(f"{key}={config[key]!r}" for key in unsupported or ["learning_rate"])
        raise ValueError(f"fastbp's {cls.__name__} has no {settings} (Keras's {type(optimizer).__name__} setting)")
    return cls(**{key: config[key] for key in names if key in config})


#: The optimizers by the names ``compile`` takes, and by their class names (model files keep those).
OPTIMIZERS = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop}
BY_CLASS_NAME = {cls.__name__: cls for cls in OPTIMIZERS.values()}

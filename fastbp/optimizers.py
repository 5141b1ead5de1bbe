"""Optimizers by Keras's names and defaults, for :meth:`fastbp.Sequential.compile`.

Each is fastbp's optimizer of that name (:func:`fastbp.train`'s ``optimizer``) with
Keras's argument names and default settings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Adam:
    """Keras's ``Adam`` optimizer and its defaults (as fastbp's ``optimizer="adam"``)."""

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def options(self) -> dict:
        return {"optimizer": "adam", "lr": self.learning_rate, "beta1": self.beta_1, "beta2": self.beta_2,
                "epsilon": self.epsilon}  # fmt: skip


@dataclass(frozen=True)
class SGD:
    """Keras's ``SGD`` optimizer and its defaults (as fastbp's ``optimizer="sgd"``)."""

    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False

    def options(self) -> dict:
        return {"optimizer": "sgd", "lr": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}

"""Layers by Keras's names, for :class:`fastbp.Sequential` and ``fastbp.train(X, y, layers=[...])``.

Each is a small description (its settings, checked when it is made); given the shape
of what comes in, it builds the layer the kernels run (:class:`fastbp._layout.Layer`).
Images are channels-last, ``(height, width, channels)``, as Keras's default.  Where
fastbp differs from Keras: ``Activation`` joins the layer before it (a convolution or
dense layer, through any pooling or flatten between them), a dense layer takes vectors
only (put a ``Flatten`` before it), pooling's stride is its size and its padding
"valid", and ``"leaky_relu"`` has fastbp's slope of 0.01 (Keras's is 0.2).  ``MaxPool2D`` is
``MaxPooling2D``, as in Keras.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from numbers import Integral, Real

import numpy as np

from ._concepts import HIDDEN_ACTIVATIONS, INITIALIZERS, documented
from ._layout import Layer as KernelLayer
from ._layout import Shape, WindowTooLarge, channels_first_hint
from ._validate import image_shape_of

__all__ = [
    "Activation", "Conv2D", "Dense", "Dropout", "Flatten", "Input", "LayerSpec", "MaxPool2D", "MaxPooling2D",
    "WeightedLayer", "from_config", "layer_config",
]  # fmt: skip

#: Keras's activation names that fastbp spells otherwise.
KERAS_ACTIVATIONS = {"linear": "identity", None: "identity"}
#: What an Activation layer may pass through to reach the layer it joins: a max pooling commutes with every
#: activation fastbp has, as they never decrease; flatten only reorders.
_TRANSPARENT = ("max_pool2d", "flatten")


def activation_name(name: str | None, where: str) -> str:
    """fastbp's name of a Keras activation (``None`` and ``"linear"`` are ``"identity"``)."""
    resolved = KERAS_ACTIVATIONS.get(name, name)
    if resolved not in (*HIDDEN_ACTIVATIONS, "softmax"):
        choices = ", ".join(repr(choice) for choice in (*HIDDEN_ACTIVATIONS, "softmax", "linear", None))
        raise ValueError(f"{where}: unknown activation {name!r}; choose from {choices}")
    return resolved


def _pair(value, name: str, where: str) -> tuple[int, int]:
    """A size or stride given as one positive integer or two."""
    pair = (value, value) if isinstance(value, Integral) else tuple(np.ravel(value)) if np.ndim(value) == 1 else ()
    if len(pair) != 2 or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in pair):
        raise ValueError(f"{where}: {name} must be a positive integer or two, got {value!r}")
    return int(pair[0]), int(pair[1])


def _padding(value, accepted: tuple[str, ...], refusal: str) -> str:
    """A padding's name among ``accepted``, in any case as Keras reads it (``"SAME"`` is ``"same"``); else a
    ValueError, ``refusal`` followed by the value given."""
    name = value.lower() if isinstance(value, str) else value
    if name not in accepted:
        raise ValueError(f"{refusal}, got {value!r}")
    return name


def as_row_shape(value, where: str) -> Shape | None:
    """A row's shape: ``(n_features,)``, ``(height, width, channels)``, or ``(height, width)`` for one channel."""
    if value is None:
        return None
    shape = tuple(value) if isinstance(value, Sequence) else (value,)
    if len(shape) not in (1, 2, 3) or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in shape):
        raise ValueError(
            f"{where}: input_shape must be (n_features,), (height, width) or (height, width, channels), got {value!r}"
        )
    return tuple(int(n) for n in shape) + ((1,) if len(shape) == 2 else ())


def _as_name(value, where: str) -> str | None:
    """A layer's name: None (a ``Sequential`` then names it as Keras would) or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{where}: name must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerSpec:
    """What every layer shares: the shape of one input row it may declare (``input_shape``, Keras's, or
    ``input_dim=n`` for ``input_shape=(n,)``, which it becomes), and its ``name`` (Keras's: unique in a model; a
    ``Sequential`` names a layer without one after its class, ``dense``, ``dense_1``, ...)."""

    input_shape: Shape | None = field(default=None, kw_only=True)
    name: str | None = field(default=None, kw_only=True)
    input_dim: int | None = field(default=None, kw_only=True, repr=False, compare=False)

    def __post_init__(self):
        where, shape = self._where(), self.input_shape
        if self.input_dim is not None:
            if shape is not None:
                raise ValueError(f"{where}: give input_shape or input_dim, not both")
            if not isinstance(self.input_dim, Integral) or isinstance(self.input_dim, bool) or self.input_dim < 1:
                raise ValueError(f"{where}: input_dim must be a positive integer, got {self.input_dim!r}")
            shape = (self.input_dim,)
            object.__setattr__(self, "input_dim", None)  # kept as input_shape alone
        object.__setattr__(self, "input_shape", as_row_shape(shape, where))
        _as_name(self.name, where)

    def _where(self) -> str:
        return type(self).__name__

    def build(self, in_shape: Shape) -> KernelLayer:
        """The layer the kernels run, taking rows of ``in_shape``."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Its settings by Keras's names, as Keras gives them (sizes as tuples; its name only where it has
        one)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "input_dim" and (f.name != "name" or self.name is not None)
        }


@documented
@dataclass(frozen=True)
class WeightedLayer(LayerSpec):
    """What a layer with weights shares: Keras's initializers of its kernel and bias, by name
    (<<initializer_names>>), or None for the model's (a ``Sequential``'s are Keras's defaults, ``glorot_uniform``
    kernels and ``zeros`` biases; ``fastbp.train``'s follow its ``init``)."""

    kernel_initializer: str | None = field(default=None, kw_only=True)
    bias_initializer: str | None = field(default=None, kw_only=True)

    def __post_init__(self):
        super().__post_init__()
        for name in ("kernel_initializer", "bias_initializer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or value not in INITIALIZERS):
                offered = ", ".join(INITIALIZERS)
                raise ValueError(f"{self._where()}: unknown {name} {value!r}; fastbp takes Keras's by name: {offered}")

    @property
    def initializers(self) -> tuple[str | None, str | None]:
        """Its kernel's and its bias's initializer (None: the model's)."""
        return self.kernel_initializer, self.bias_initializer

    def get_config(self) -> dict:
        """Its settings, its initializers only where given (files of networks without them stay as they were)."""
        unset = {"kernel_initializer", "bias_initializer"}
        return {name: value for name, value in super().get_config().items() if name not in unset or value is not None}


@dataclass(frozen=True)
class Dense(WeightedLayer):
    """A fully connected layer of ``units`` units (Keras's ``Dense``); its input must be a vector."""

    units: int
    activation: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.units, Integral) or isinstance(self.units, bool) or self.units < 1:
            raise ValueError(f"Dense: units must be a positive integer, got {self.units!r}")
        object.__setattr__(self, "units", int(self.units))
        activation_name(self.activation, "Dense")

    def build(self, in_shape: Shape) -> KernelLayer:
        if len(in_shape) != 1:
            raise ValueError(f"Dense takes vectors, but its input is an image of shape {in_shape}: put a Flatten first")
        return KernelLayer.dense(in_shape[0], self.units, activation_name(self.activation, "Dense"))


@dataclass(frozen=True)
class Conv2D(WeightedLayer):
    """``filters`` 2-D convolution filters of ``kernel_size`` over channels-last images (Keras's ``Conv2D``).

    ``padding="valid"`` uses whole windows only; ``"same"`` pads zeros so the output has
    ``ceil(size / stride)`` rows and columns.
    """

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.filters, Integral) or isinstance(self.filters, bool) or self.filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive integer, got {self.filters!r}")
        object.__setattr__(self, "filters", int(self.filters))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size", "Conv2D"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides", "Conv2D"))
        object.__setattr__(
            self, "padding", _padding(self.padding, ("valid", "same"), "Conv2D: padding must be 'valid' or 'same'")
        )
        if activation_name(self.activation, "Conv2D") == "softmax":
            raise ValueError("Conv2D: softmax is an output layer's activation; use it on the last Dense layer")

    def build(self, in_shape: Shape) -> KernelLayer:
        activation = activation_name(self.activation, "Conv2D")
        return KernelLayer.conv2d(in_shape, self.filters, self.kernel_size, self.strides, self.padding, activation)


@dataclass(frozen=True)
class MaxPooling2D(LayerSpec):
    """The largest value of each ``pool_size`` window of each channel (Keras's ``MaxPooling2D``).

    The windows lie side by side (``strides`` must be ``None`` or ``pool_size``), and
    rows and columns past the last whole window are dropped (``padding="valid"``).
    """

    pool_size: int | tuple[int, int] = (2, 2)
    strides: int | tuple[int, int] | None = None
    padding: str = "valid"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "pool_size", _pair(self.pool_size, "pool_size", "MaxPooling2D"))
        if self.strides is not None and _pair(self.strides, "strides", "MaxPooling2D") != self.pool_size:
            raise ValueError(f"MaxPooling2D: strides must be None or pool_size {self.pool_size}, got {self.strides!r}")
        object.__setattr__(self, "strides", None)
        refusal = "MaxPooling2D: fastbp pools whole windows only (padding='valid')"
        object.__setattr__(self, "padding", _padding(self.padding, ("valid",), refusal))

    def build(self, in_shape: Shape) -> KernelLayer:
        return KernelLayer.max_pool2d(in_shape, self.pool_size)


@dataclass(frozen=True)
class Dropout(LayerSpec):
    """Zeroes each value with probability ``rate`` in training and scales the rest by ``1 / (1 - rate)``;
    passes values on in prediction (Keras's ``Dropout``).  The masks are drawn from the training's seed,
    the update's number, the row and the unit, so they do not depend on threads."""

    rate: float

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.rate, Real) or isinstance(self.rate, bool) or not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {self.rate!r}")
        object.__setattr__(self, "rate", float(self.rate))

    def build(self, in_shape: Shape) -> KernelLayer:
        return KernelLayer.dropout(in_shape, self.rate)


@dataclass(frozen=True)
class Flatten(LayerSpec):
    """An image's values as one vector, channels-last (Keras's ``Flatten``)."""

    def build(self, in_shape: Shape) -> KernelLayer:
        return KernelLayer.flatten(in_shape)


@dataclass(frozen=True)
class Activation(LayerSpec):
    """Applies ``activation`` to the layer before (Keras's ``Activation``); fastbp joins it to that layer."""

    activation: str | None

    def __post_init__(self):
        super().__post_init__()
        activation_name(self.activation, "Activation")


@dataclass(frozen=True)
class Input(LayerSpec):
    """The shape of one input row, ``(n_features,)`` or ``(height, width, channels)`` (Keras's ``Input``)."""

    shape: Shape

    def __post_init__(self):
        if self.input_dim is not None:
            raise ValueError("Input: its shape is the input's shape; it takes no input_dim")
        object.__setattr__(self, "input_shape", as_row_shape(self.shape, "Input"))
        object.__setattr__(self, "shape", self.input_shape)
        _as_name(self.name, "Input")


#: The layer classes by name, for rebuilding a model from its configuration.
LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Conv2D, MaxPooling2D, Dropout, Flatten, Activation, Input)}
#: Keras's other name for the layer.
MaxPool2D = MaxPooling2D


def layer_list(layers) -> Sequence:
    """``layers`` as given, refused (``TypeError``) unless a list or another sequence of them."""
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list of fastbp.layers layers, got {layers!r}")
    return layers


def not_a_layer(spec) -> str:
    """Why ``spec`` is refused as a layer, naming fastbp's layer of its class's name (a Keras layer's, say)."""
    name = "MaxPooling2D" if type(spec).__name__ == "MaxPool2D" else type(spec).__name__
    ours = f": use fastbp.layers.{name}" if name in LAYER_CLASSES else ""
    return f"{spec!r} is not a fastbp.layers layer{ours}"


def layer_config(layer: LayerSpec) -> dict:
    """A layer as JSON values, its class's name and its settings (``{"class_name": "Conv2D", "filters": 32,
    "kernel_size": [3, 3], ...}``), as ``model.options`` and model files keep it; :func:`from_config` makes the
    layer again."""
    settings = {name: list(value) if isinstance(value, tuple) else value for name, value in layer.get_config().items()}
    return {"class_name": type(layer).__name__, **settings}


def from_config(config: Mapping) -> LayerSpec:
    """The layer that ``config``, as :func:`layer_config` gives it, describes."""
    settings = dict(config)
    name = settings.pop("class_name", None)
    cls = LAYER_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown layer {config!r}: its class_name must be one of {tuple(LAYER_CLASSES)}")
    return cls(**settings)


def declared_input_shape(specs: Sequence[LayerSpec]) -> Shape | None:
    """The network's input shape as its first layer declares it (an ``Input``, or ``input_shape=``), as Keras
    takes it; a later layer's declaration is a check of its own input, which ``build_layers`` makes."""
    return specs[0].input_shape if specs else None


def input_shape_of(specs: Sequence[LayerSpec], X) -> Shape:
    """The shape of one input row: the one the first layer declares, else ``X``'s: images where ``X`` holds
    them, or where the first layer is a convolution or pooling (so that a matrix gets a clear error)."""
    declared = declared_input_shape(specs)
    if declared is not None:
        return declared
    if np.ndim(X) > 2 or any(isinstance(spec, Conv2D | MaxPooling2D) for spec in specs[:1]):
        return image_shape_of(X)  # a layer that cannot take images says so, naming their shape
    return (np.shape(X)[-1],) if np.ndim(X) else ()


def build_layers(specs: Sequence[LayerSpec], input_shape: Shape) -> list[KernelLayer]:
    """The kernels' layers for ``specs`` on rows of ``input_shape``, each ``Activation`` joined to the layer
    it follows; a ValueError names the layer (:func:`layer_named`) and the shapes for anything that cannot work."""
    layers: list[KernelLayer] = []
    shape = input_shape
    for index, spec in enumerate(specs):
        where = layer_named(spec, sum(not isinstance(earlier, Input) for earlier in specs[:index]))
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"{where}: {not_a_layer(spec)}")
        if spec.input_shape is not None and spec.input_shape != shape:
            raise ValueError(f"{where}: it declares input_shape {spec.input_shape}, but its input has shape {shape}")
        try:
            if isinstance(spec, Input):
                continue
            if isinstance(spec, Activation):
                _join_activation(layers, activation_name(spec.activation, "Activation"))
                continue
            layer = spec.build(shape)
            if layer.activation == "softmax":
                raise ValueError("softmax is the output layer's activation, not a hidden layer's")
        except ValueError as error:
            # Images in the wrong order are the user's own: the network's input, not what a layer put out.
            wrong_order = isinstance(error, WindowTooLarge) and shape == input_shape
            raise ValueError(f"{where}: {error}{channels_first_hint(shape) if wrong_order else ''}") from None
        layers.append(layer)
        shape = layer.out_shape
    return layers


def all_dense(specs: Sequence[LayerSpec]) -> bool:
    """Whether ``specs`` make a network of dense layers alone (``Dense`` layers, the ``Activation`` layers joined to
    them, an ``Input``), which every training mode's kernels run, in either arithmetic (``exact``)."""
    return all(isinstance(spec, Dense | Activation | Input) for spec in specs)


def layer_named(spec, position: int) -> str:
    """How errors name a layer: the Input, or its ``position`` among the layers but Input (its index in a
    ``Sequential``'s ``layers``, as Keras lists them); then its class and its name, where it has one."""
    name = getattr(spec, "name", None)
    called = f" {name!r}" if isinstance(name, str) else ""
    if isinstance(spec, Input):
        return f"the Input layer{called}"
    return f"layer {position} ({type(spec).__name__}{called})"


def _join_activation(layers: list[KernelLayer], activation: str) -> None:
    """Give ``activation`` to the last layer with weights, reached through layers it commutes with; the identity
    (Keras's ``"linear"``) changes nothing, anywhere."""
    if activation == "identity":
        return
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        if layer.units:
            if layer.activation != "identity":
                raise ValueError(f"the layer before already has activation {layer.activation!r}")
            if activation == "softmax":
                raise ValueError("softmax is the output layer's activation, not a hidden layer's")
            layers[position] = replace(layer, activation=activation)
            return
        if layer.kind not in _TRANSPARENT:
            break
    raise ValueError("an Activation must follow a Conv2D or Dense layer (through pooling or Flatten only)")

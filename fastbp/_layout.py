"""The flat parameter layout shared by every backend, and weight initialisation.

A network is a sequence of layers (:class:`Layer`), each of a kind
(:data:`fastbp._concepts.LAYER_KINDS`) that says what it computes from the values
the layer before it puts out.  All the weights live in one contiguous buffer
(float64, or float32 on request): a layer with weights keeps them as one row-major
block of ``units`` rows of ``fan_in + 1`` weights, bias last, starting at
``w_off[k]``; a layer without weights takes none.  Each layer's outputs (and their
error signals) start at ``o_off[k]`` in their own buffers.  This is the tutorial's
(and FANN's) order, so filling the buffer with ``random()`` draws reproduces the
tutorial's ``initialize_network``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from ._backends import Network
from ._concepts import (
    ACTIVATIONS,
    INITIALIZERS,
    INITS,
    LAYER_KINDS,
    OUTPUTS,
    ActivationCode,
    LayerKindCode,
    LossCode,
)

_KIND_CODES = {code.name.lower(): int(code) for code in LayerKindCode}
_ACTIVATION_CODES = {code.name.lower(): int(code) for code in ActivationCode}

#: The most weights a network may have: 16 GiB of float64, far past a "small" network,
#: and far below where the kernels' offsets could overflow.
MAX_WEIGHTS = 2**31
#: The most values a network may compute for one row (its layers' inputs together): training keeps those of a
#: chunk of rows at once, a few GiB at this limit.
MAX_VALUES = 2**26


#: A layer's input or output: a vector ``(n,)``, or a channels-last image ``(height, width, channels)``.
Shape = tuple[int, ...]


def as_image(shape: Shape) -> tuple[int, int, int]:
    """``shape`` as the kernels see it: a vector of ``n`` values is a ``(1, 1, n)`` image."""
    return (1, 1, shape[0]) if len(shape) == 1 else shape


@dataclass(frozen=True)
class Layer:
    """One layer: its kind and activation, the shapes it takes and puts out, its weight block and its window.

    A layer with weights keeps ``units`` rows of ``fan_in`` weights and a bias: a dense
    layer's unit weighs every input; a convolution's unit is a filter, weighing a
    ``kernel`` window of every input channel in ``(kernel_h, kernel_w, channel)``
    order, which is Keras's kernel ``(kh, kw, c_in, c_out)`` transposed to
    ``(c_out, kh * kw * c_in)``.
    """

    kind: str
    activation: str
    in_shape: Shape
    out_shape: Shape
    #: Rows of its weight block, one per unit (0: no weights).
    units: int = 0
    #: Weights per unit before its bias.
    fan_in: int = 0
    #: The window of a convolution or a pooling: its size and its stride; a convolution's padding, "valid" (none)
    #: or "same" (zeros around the image, so that the output has ``ceil(size / stride)`` rows and columns).
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    #: Dropout's probability of zeroing a value.
    rate: float = 0.0

    @classmethod
    def dense(cls, n_in: int, n_out: int, activation: str) -> Layer:
        """A fully connected layer: each of its ``n_out`` units weighs all ``n_in`` inputs, plus a bias."""
        return cls("dense", activation, (n_in,), (n_out,), units=n_out, fan_in=n_in)

    @classmethod
    def conv2d(
        cls, in_shape: Shape, filters: int, kernel: tuple[int, int], strides: tuple[int, int], padding: str,
        activation: str,
    ) -> Layer:  # fmt: skip
        """``filters`` filters of ``kernel`` over an image, moved by ``strides``, with ``padding``."""
        height, width, channels = _image(in_shape, "a convolution")
        if filters < 1:
            raise ValueError(f"a convolution needs at least one filter, got {filters}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        if padding == "valid" and (kernel[0] > height or kernel[1] > width):
            raise WindowTooLarge(f"a {kernel[0]}x{kernel[1]} kernel is larger than its {height}x{width} input")
        sizes = [
            (size - k) // stride + 1 if padding == "valid" else -(-size // stride)
            for size, k, stride in zip((height, width), kernel, strides)
        ]
        return cls(
            "conv2d", activation, in_shape, (*sizes, filters), units=filters, fan_in=kernel[0] * kernel[1] * channels,
            kernel=tuple(kernel), strides=tuple(strides), padding=padding,
        )  # fmt: skip

    @classmethod
    def max_pool2d(cls, in_shape: Shape, pool: tuple[int, int]) -> Layer:
        """The largest value of each ``pool`` window of each channel, windows side by side (stride ``pool``);
        rows and columns past the last whole window are dropped (floor mode)."""
        height, width, channels = _image(in_shape, "a max pooling")
        if pool[0] > height or pool[1] > width:
            raise WindowTooLarge(f"a {pool[0]}x{pool[1]} pool is larger than its {height}x{width} input")
        out_shape = (height // pool[0], width // pool[1], channels)
        return cls("max_pool2d", "identity", in_shape, out_shape, kernel=tuple(pool), strides=tuple(pool))

    @classmethod
    def dropout(cls, in_shape: Shape, rate: float) -> Layer:
        """Zeroes each value with probability ``rate`` in training (scaling the others by ``1 / (1 - rate)``)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"a dropout rate must be in [0, 1), got {rate}")
        return cls("dropout", "identity", in_shape, in_shape, rate=float(rate))

    @classmethod
    def flatten(cls, in_shape: Shape) -> Layer:
        """An image's values as one vector, channels-last (row by row, each pixel's channels together)."""
        return cls("flatten", "identity", in_shape, (math.prod(in_shape),))

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def fan_out(self) -> int:
        """The values each input feeds (Glorot's initialisation weighs it): every unit of a dense layer, every
        filter at every offset of a convolution's window."""
        return self.units * self.kernel[0] * self.kernel[1]

    @property
    def n_weights(self) -> int:
        return self.units * (self.fan_in + 1)

    @property
    def geometry(self) -> tuple[int, ...]:
        """Its row of ``Network.geometry`` (:data:`fastbp._constants.GEOMETRY_FIELDS`).

        "Same" padding splits the zeros a window needs as TensorFlow and Keras do: the
        odd one after the image.
        """
        in_image, out_image = as_image(self.in_shape), as_image(self.out_shape)
        pads = [
            max((out - 1) * stride + k - size, 0) // 2 if self.padding == "same" else 0
            for size, out, k, stride in zip(in_image[:2], out_image[:2], self.kernel, self.strides)
        ]
        return (self.units, self.fan_in, *in_image, *out_image, *self.kernel, *self.strides, *pads)

    def config(self) -> dict:
        """What rebuilds it from its input shape (:meth:`from_config`), as JSON values: for model files."""
        settings = {
            "dense": {"units": self.units},
            "conv2d": {"filters": self.units, "kernel": self.kernel, "strides": self.strides, "padding": self.padding},
            "max_pool2d": {"pool": self.kernel},
            "dropout": {"rate": self.rate},
            "flatten": {},
        }[self.kind]
        return {"kind": self.kind, "activation": self.activation, **settings}

    @classmethod
    def from_config(cls, in_shape: Shape, config: dict) -> Layer:
        """The layer ``config`` describes, taking rows of ``in_shape``, every value checked."""
        if not isinstance(config, dict) or config.get("kind") not in LAYER_KINDS:
            raise ValueError(f"{config!r} does not describe a layer")
        kind, activation = config["kind"], config.get("activation")
        if activation not in ACTIVATIONS or (kind in _WEIGHTLESS and activation != "identity"):
            raise ValueError(f"a {kind} layer cannot have activation {activation!r}")
        expected = {"kind", "activation", *_SETTINGS[kind]}
        if set(config) != expected:
            raise ValueError(f"a {kind} layer is described by {sorted(expected)}, got {sorted(config)}")
        if kind == "dense":
            if len(in_shape) != 1:
                raise ValueError(f"a dense layer takes vectors, got shape {in_shape}")
            return cls.dense(in_shape[0], _count(config["units"]), activation)
        if kind == "conv2d":
            return cls.conv2d(
                in_shape, _count(config["filters"]), _counts(config["kernel"]), _counts(config["strides"]),
                config["padding"], activation,
            )  # fmt: skip
        if kind == "max_pool2d":
            return cls.max_pool2d(in_shape, _counts(config["pool"]))
        if kind == "dropout":
            if not isinstance(config["rate"], float | int) or isinstance(config["rate"], bool):
                raise ValueError(f"a dropout rate must be a number, got {config['rate']!r}")
            return cls.dropout(in_shape, config["rate"])
        return cls.flatten(in_shape)


#: What describes a layer of each kind beside its kind and activation (:meth:`Layer.config`).
_SETTINGS = {
    "dense": ("units",),
    "conv2d": ("filters", "kernel", "strides", "padding"),
    "max_pool2d": ("pool",),
    "dropout": ("rate",),
    "flatten": (),
}
#: The kinds whose values pass on without an activation of their own.
_WEIGHTLESS = ("max_pool2d", "dropout", "flatten")


def _count(value) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _counts(value) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{value!r} is not two positive integers")
    return _count(value[0]), _count(value[1])


def _image(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{what} takes images (height, width, channels), got values of shape {shape}")
    return shape


class WindowTooLarge(ValueError):
    """A convolution's kernel or a pooling's window larger than the image it slides over."""


def channels_first_hint(shape: Shape) -> str:
    """A hint, for the network's input images too small for the first window, where their shape reads like
    channels-first ``(channels, height, width)``: more channels than their height or width."""
    height, width, channels = shape
    if channels <= min(height, width):
        return ""
    return (
        f" (images are channels-last, (height, width, channels): {shape} has {channels} channels; channels-first "
        "images need x.transpose(0, 2, 3, 1))"
    )


@dataclass(frozen=True)
class Layout:
    """Where each layer's weights and outputs start, and the codes the kernels read."""

    layers: tuple[Layer, ...]
    #: intp arrays: the values into each layer, then the network's outputs (``sizes``); where each layer's weight
    #: block and outputs start, then the totals (``w_off``, ``o_off``); each layer's kind and activation code.
    sizes: np.ndarray = field(init=False, repr=False, compare=False)
    w_off: np.ndarray = field(init=False, repr=False, compare=False)
    o_off: np.ndarray = field(init=False, repr=False, compare=False)
    kinds: np.ndarray = field(init=False, repr=False, compare=False)
    acts: np.ndarray = field(init=False, repr=False, compare=False)
    #: Each layer's shapes and window (``(n_layers, len(GEOMETRY_FIELDS))`` intp), and dropout rate (float64).
    geometry: np.ndarray = field(init=False, repr=False, compare=False)
    dropout: np.ndarray = field(init=False, repr=False, compare=False)

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], activations: Sequence[str] | None = None) -> Layout:
        """Dense layers of ``sizes`` (inputs, hidden..., outputs); ``activations`` names each layer's (default:
        all sigmoid)."""
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer sizes must be at least two positive integers, got {sizes}")
        _check_weight_count(sum(n_out * (n_in + 1) for n_in, n_out in zip(sizes, sizes[1:])), "layer sizes", sizes)
        names = activations if activations is not None else ["sigmoid"] * (len(sizes) - 1)
        if len(names) != len(sizes) - 1:
            raise ValueError(f"{len(names)} activations given for {len(sizes) - 1} layers")
        return cls.from_layers([Layer.dense(n_in, n_out, name) for n_in, n_out, name in zip(sizes, sizes[1:], names)])

    @classmethod
    def from_layers(cls, layers: Sequence[Layer]) -> Layout:
        """The layout of ``layers``, each taking what the one before puts out, checked."""
        layers = tuple(layers)
        for layer in layers:
            if layer.kind not in LAYER_KINDS:
                raise ValueError(f"unknown layer kind {layer.kind!r}: choose from {tuple(LAYER_KINDS)}")
            if layer.activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {layer.activation!r}: choose from {tuple(ACTIVATIONS)}")
        for before, after in zip(layers, layers[1:]):
            if before.out_shape != after.in_shape:
                raise ValueError(f"a layer puts out shape {before.out_shape} but the next takes {after.in_shape}")
        shapes = tuple(layer.out_shape for layer in layers)
        _check_weight_count(sum(layer.n_weights for layer in layers), "layers putting out", shapes)
        # A convolution also gathers each row's windows, its positions times its fan-in.
        n_values = sum(layer.n_in + (layer.n_weights // layer.units * math.prod(as_image(layer.out_shape)[:2])
                                     if layer.kind == "conv2d" else 0) for layer in layers)  # fmt: skip
        if n_values > MAX_VALUES:
            raise ValueError(f"the layers compute {n_values} values per row, more than fastbp's {MAX_VALUES}")
        return cls(layers)

    def __post_init__(self):
        # The arrays the kernels read, made once: every call of a model's kernels passes the same network.
        w_off, o_off = [0], [0]
        for layer in self.layers:
            w_off.append(w_off[-1] + layer.n_weights)
            o_off.append(o_off[-1] + layer.n_out)
        arrays = {
            "sizes": [self.layers[0].n_in, *(layer.n_out for layer in self.layers)],
            "w_off": w_off,
            "o_off": o_off,
            "kinds": [_KIND_CODES[layer.kind] for layer in self.layers],
            "acts": [_ACTIVATION_CODES[layer.activation] for layer in self.layers],
            "geometry": [layer.geometry for layer in self.layers],
        }
        for name, values in arrays.items():
            object.__setattr__(self, name, np.array(values, dtype=np.intp))
        object.__setattr__(self, "dropout", np.array([layer.rate for layer in self.layers], dtype=np.float64))
        arrays = (self.kinds, self.acts, self.sizes, self.w_off, self.o_off, self.geometry, self.dropout)
        output = OUTPUTS.get(self.layers[-1].activation)
        losses = output.losses if output is not None else ("mse",)  # the tests' networks ending in hidden units
        networks = {(exact, loss): Network(*arrays, exact, int(LossCode[loss.upper()])) for exact in (False, True)
                    for loss in losses}  # fmt: skip
        object.__setattr__(self, "_networks", networks)
        object.__setattr__(self, "_default_loss", losses[0])

    def __reduce__(self):
        # The layers alone: the arrays are made again where the layout is unpickled, writeable as the kernels
        # take them, even from a read-only memory map.
        return Layout, (self.layers,)

    def network(self, exact: bool, loss: str | None = None) -> Network:
        """The description the kernels take, computing in the exact arithmetic or the fast mode, and training
        with ``loss`` (one of the output units' ``OUTPUTS[...].losses``; ``None``: their first, as prediction
        takes, which never reads it)."""
        key = (bool(exact), loss or self._default_loss)
        if key not in self._networks:
            raise ValueError(f"a network with {self.layers[-1].activation} outputs does not train with loss {loss!r}")
        return self._networks[key]

    @property
    def n_weights(self) -> int:
        return int(self.w_off[-1])

    @property
    def n_neurons(self) -> int:
        return int(self.o_off[-1])

    @property
    def work_per_row(self) -> int:
        """About how many multiply-adds a row's forward pass takes: a dense layer's weights, a convolution's
        weights at every position, a value per value for the others.  For networks of dense layers it is
        ``n_weights``; the Python layer sizes its kernel calls and its thread splits by it."""
        work = 0
        for layer in self.layers:
            if layer.kind == "conv2d":
                work += math.prod(as_image(layer.out_shape)[:2]) * layer.n_weights
            else:
                work += layer.n_weights if layer.units else layer.n_in
        return work if not self.dense_only else self.n_weights

    @property
    def input_shape(self) -> Shape:
        """The shape of one row of the data it takes: ``(n_features,)`` or ``(height, width, channels)``."""
        return self.layers[0].in_shape

    @property
    def dense_only(self) -> bool:
        """Whether every layer is dense: such networks run the kernels of every training mode."""
        return all(layer.kind == "dense" for layer in self.layers)

    @property
    def activations(self) -> tuple[str, ...]:
        """Each layer's activation name, the output layer's last."""
        return tuple(layer.activation for layer in self.layers)

    def layer_views(self, weights: np.ndarray) -> list[np.ndarray]:
        """Views ``(units, fan_in + 1)`` into ``weights``, one per layer with weights."""
        return [
            weights[start : start + layer.n_weights].reshape(layer.units, layer.fan_in + 1)
            for layer, start in zip(self.layers, self.w_off.tolist())
            if layer.units
        ]


def _check_weight_count(total: int, what: str, which) -> None:
    """Refuse more than MAX_WEIGHTS weights, summed in Python integers: the kernels index with the offsets
    unchecked, and a wrapped-around offset would write outside the buffers."""
    if total > MAX_WEIGHTS:
        raise ValueError(f"{what} {which} make {total} weights, more than fastbp's {MAX_WEIGHTS}")


def initial_weights(
    layout: Layout,
    init: str | None,
    rng: random.Random | np.random.Generator | np.random.RandomState,
    dtype: DTypeLike = np.float64,
    initializers: Sequence[tuple[str | None, str | None]] = (),
) -> np.ndarray:
    """A fresh flat weight buffer of ``dtype``.

    ``"tutorial"`` draws ``rng.random()`` (a ``random.Random``) for every weight in
    buffer order: layer by layer, unit by unit, bias last, exactly as
    ``initialize_network`` does.  The other schemes (:data:`fastbp._concepts.INITS`)
    draw each layer's weights from ``rng`` (a ``numpy.random.Generator``, or a
    ``RandomState``, with which ``"sklearn"`` draws scikit-learn's numbers), taking
    ``n_in`` as its fan-in and ``n_out`` as its units, and start the biases at zero;
    ``"sklearn"`` draws the biases too, with ``f`` 2 when the first layer is sigmoid
    and 6 otherwise, for every layer.  A convolution's fan-in is its window over every
    input channel, and its fan-out the window times its filters (as in Keras).  ``None`` gives each layer the scheme its
    activation names (He for relu layers, Glorot for the others).

    ``initializers`` gives the first layers with weights Keras's initializers by name
    (:data:`fastbp._concepts.INITIALIZERS`), a ``(kernel, bias)`` pair per layer, None
    for the scheme's; a layer's kernel is drawn before its bias.
    """
    if init == "tutorial":
        if any(name is not None for pair in initializers for name in pair):
            raise ValueError("init='tutorial' draws every weight from the tutorial's stream: it takes no layer's "
                             "kernel_initializer or bias_initializer")  # fmt: skip
        return np.array([rng.random() for _ in range(layout.n_weights)], dtype=dtype)
    if init is not None and init not in INITS:
        raise ValueError(f"init must be None or one of {tuple(INITS)}, got {init!r}")
    weights = np.zeros(layout.n_weights, dtype=dtype)
    sklearn_factor = 2.0 if layout.activations[0] == "sigmoid" else 6.0
    layers = [layer for layer in layout.layers if layer.units]
    for index, (block, layer) in enumerate(zip(layout.layer_views(weights), layers)):
        units, fan_in, fan_out = layer.units, layer.fan_in, layer.fan_out
        scheme = init or ACTIVATIONS[layer.activation].init
        kernel, bias = initializers[index] if index < len(initializers) else (None, None)
        limit = np.sqrt(sklearn_factor / (fan_in + fan_out))  # scikit-learn's, for its weights and its biases
        if kernel is not None:
            block[:, :fan_in] = draw_initializer(kernel, rng, (units, fan_in), fan_in, fan_out)
        elif scheme == "sklearn":  # in scikit-learn's order: the (fan_in, units) coefficients, then the biases
            block[:, :fan_in] = rng.uniform(-limit, limit, (fan_in, units)).T
        elif scheme == "he":
            block[:, :fan_in] = rng.normal(0.0, np.sqrt(2.0 / fan_in), (units, fan_in))
        else:
            block[:, :fan_in] = draw_initializer("glorot_uniform", rng, (units, fan_in), fan_in, fan_out)
        if bias is not None:
            block[:, fan_in] = draw_initializer(bias, rng, (units,), units, units)  # a vector's fans, as Keras's
        elif scheme == "sklearn":
            block[:, fan_in] = rng.uniform(-limit, limit, units)
    return weights


#: The standard deviation of a standard normal truncated to two standard deviations: Keras divides the standard
#: deviation of its truncated variance-scaling draws by it, so that they have the variance they name.
TRUNCATED_STDDEV = 0.87962566103423978


def draw_initializer(
    name: str, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    """Values for an array of ``shape`` by Keras's initializer ``name`` (:data:`fastbp._concepts.INITIALIZERS`),
    given its layer's ``fan_in`` and ``fan_out`` (a convolution's window over its input channels, and over its
    filters); normal values beyond two standard deviations are redrawn where the rule truncates them."""
    rule = INITIALIZERS[name]
    if rule.distribution == "constant":
        return np.full(shape, rule.scale)
    spread = rule.scale  # a uniform's limit, or a normal's standard deviation
    if rule.fan is not None:  # of variance scale / n (a uniform's limit squared is 3 * scale / n, rounded once)
        n = max(1.0, fan_in if rule.fan == "in" else (fan_in + fan_out) / 2.0)
        if rule.distribution == "uniform":
            spread = math.sqrt(3.0 * rule.scale / n)
        else:
            spread = math.sqrt(rule.scale / n) / (TRUNCATED_STDDEV if rule.distribution == "truncated_normal" else 1)
    if rule.distribution == "uniform":
        return rng.uniform(-spread, spread, shape)
    values = rng.normal(0.0, spread, shape)
    if rule.distribution == "truncated_normal":
        outside = np.abs(values) > 2.0 * spread
        while outside.any():
            values[outside] = rng.normal(0.0, spread, int(outside.sum()))
            outside = np.abs(values) > 2.0 * spread
    return values

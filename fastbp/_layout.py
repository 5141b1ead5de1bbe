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

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from ._backends import Network
from ._concepts import ACTIVATIONS, INITS, LAYER_KINDS, ActivationCode, LayerKindCode

_KIND_CODES = {code.name.lower(): int(code) for code in LayerKindCode}
_ACTIVATION_CODES = {code.name.lower(): int(code) for code in ActivationCode}

#: The most weights a network may have: 16 GiB of float64, far past a "small" network,
#: and far below where the kernels' offsets could overflow.
MAX_WEIGHTS = 2**31


@dataclass(frozen=True)
class Layer:
    """One layer: its kind and activation, the values it takes and puts out, and its weight block."""

    kind: str
    activation: str
    n_in: int
    n_out: int
    #: Rows of its weight block, one per unit (0: no weights).
    units: int
    #: Weights per unit before its bias.
    fan_in: int

    @classmethod
    def dense(cls, n_in: int, n_out: int, activation: str) -> Layer:
        """A fully connected layer: each of its ``n_out`` units weighs all ``n_in`` inputs, plus a bias."""
        return cls("dense", activation, n_in, n_out, units=n_out, fan_in=n_in)

    @property
    def n_weights(self) -> int:
        return self.units * (self.fan_in + 1)


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
            if before.n_out != after.n_in:
                raise ValueError(f"a layer puts out {before.n_out} values but the next takes {after.n_in}")
        _check_weight_count(sum(layer.n_weights for layer in layers), "layers", layers)
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
        }
        for name, values in arrays.items():
            object.__setattr__(self, name, np.array(values, dtype=np.intp))
        arrays = (self.kinds, self.acts, self.sizes, self.w_off, self.o_off)
        object.__setattr__(self, "_networks", (Network(*arrays, False), Network(*arrays, True)))

    def __reduce__(self):
        # The layers alone: the arrays are made again where the layout is unpickled, writeable as the kernels
        # take them, even from a read-only memory map.
        return Layout, (self.layers,)

    def network(self, exact: bool) -> Network:
        """The description the kernels take, computing in the exact arithmetic or the fast mode."""
        return self._networks[bool(exact)]

    @property
    def n_weights(self) -> int:
        return int(self.w_off[-1])

    @property
    def n_neurons(self) -> int:
        return int(self.o_off[-1])

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
    layout: Layout, init: str | None, rng: random.Random | np.random.Generator, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """A fresh flat weight buffer of ``dtype``.

    ``"tutorial"`` draws ``rng.random()`` (a ``random.Random``) for every weight in
    buffer order: layer by layer, unit by unit, bias last, exactly as
    ``initialize_network`` does.  The other schemes (:data:`fastbp._concepts.INITS`)
    draw each layer's weights from ``rng`` (a ``numpy.random.Generator``), taking
    ``n_in`` as its fan-in and ``n_out`` as its units, and start the biases at zero;
    ``"sklearn"`` draws the biases too, with ``f`` 2 when the first layer is sigmoid
    and 6 otherwise, for every layer.  ``None`` gives each layer the scheme its
    activation names (He for relu layers, Glorot for the others).
    """
    if init == "tutorial":
        return np.array([rng.random() for _ in range(layout.n_weights)], dtype=dtype)
    if init is not None and init not in INITS:
        raise ValueError(f"init must be None or one of {tuple(INITS)}, got {init!r}")
    weights = np.zeros(layout.n_weights, dtype=dtype)
    sklearn_factor = 2.0 if layout.activations[0] == "sigmoid" else 6.0
    layers = [layer for layer in layout.layers if layer.units]
    for block, layer in zip(layout.layer_views(weights), layers):
        n_out, n_in = block.shape[0], block.shape[1] - 1
        scheme = init or ACTIVATIONS[layer.activation].init
        if scheme == "sklearn":
            limit = np.sqrt(sklearn_factor / (n_in + n_out))
            block[:] = rng.uniform(-limit, limit, block.shape)
        elif scheme == "he":
            block[:, :n_in] = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            block[:, :n_in] = rng.uniform(-limit, limit, (n_out, n_in))
    return weights

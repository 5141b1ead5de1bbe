"""The flat parameter layout shared by every backend, and weight initialisation.

All weights of a network live in one contiguous buffer (float64, or float32 on
request).  Layer ``k`` (``k = 0`` is the first hidden layer) is a row-major block
of ``sizes[k + 1]`` neurons by ``sizes[k] + 1`` weights, bias last, starting at
``w_off[k]``.  The neuron outputs and error signals of layer ``k`` start at
``o_off[k]`` in their own buffers, and ``acts[k]`` is its activation code
(:data:`fastbp._codes.ACTIVATIONS`).  This is the tutorial's (and FANN's) order,
so filling the buffer with ``random()`` draws reproduces the tutorial's
``initialize_network``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from ._codes import ACTIVATIONS, LEAKY_RELU, RELU

#: Initialisation schemes; ``None`` picks Glorot or He per layer from its activation.
INITS = ("tutorial", "glorot", "he")
_NAMES = {code: name for name, code in ACTIVATIONS.items()}


@dataclass(frozen=True)
class Layout:
    """Offsets and activation codes of each layer, for layer sizes ``sizes``."""

    sizes: np.ndarray  # intp, (n_layers + 1,): inputs, hidden..., outputs
    w_off: np.ndarray  # intp, (n_layers + 1,): block starts, then the total
    o_off: np.ndarray  # intp, (n_layers + 1,): output starts, then the total
    acts: np.ndarray  # intp, (n_layers,): activation code of each layer

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], activations: Sequence[str] | None = None) -> Layout:
        """The layout of a network; ``activations`` names each layer's (default: all sigmoid)."""
        sizes_arr = np.asarray(sizes, dtype=np.intp)
        block = sizes_arr[1:] * (sizes_arr[:-1] + 1)
        w_off = np.concatenate(([0], np.cumsum(block))).astype(np.intp)
        o_off = np.concatenate(([0], np.cumsum(sizes_arr[1:]))).astype(np.intp)
        names = activations if activations is not None else ["sigmoid"] * (len(sizes_arr) - 1)
        if len(names) != len(sizes_arr) - 1:
            raise ValueError(f"{len(names)} activations given for {len(sizes_arr) - 1} layers")
        acts = np.array([ACTIVATIONS[name] for name in names], dtype=np.intp)
        return cls(sizes_arr, w_off, o_off, acts)

    @property
    def n_weights(self) -> int:
        return int(self.w_off[-1])

    @property
    def n_neurons(self) -> int:
        return int(self.o_off[-1])

    @property
    def activations(self) -> tuple[str, ...]:
        """Each layer's activation name, the output layer's last."""
        return tuple(_NAMES[code] for code in self.acts.tolist())

    def layer_views(self, weights: np.ndarray) -> list[np.ndarray]:
        """Per-layer views ``(n_neurons, n_inputs + 1)`` into ``weights``."""
        return [
            weights[self.w_off[k] : self.w_off[k + 1]].reshape(self.sizes[k + 1], self.sizes[k] + 1)
            for k in range(len(self.sizes) - 1)
        ]


def initial_weights(
    layout: Layout, init: str | None, rng: random.Random | np.random.Generator, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """A fresh flat weight buffer of ``dtype``.

    ``"tutorial"`` draws ``rng.random()`` (a ``random.Random``) for every weight in
    buffer order: layer by layer, neuron by neuron, bias last, exactly as
    ``initialize_network`` does.  The modern schemes draw each layer's weights from
    ``rng`` (a ``numpy.random.Generator``) and start the biases at zero:
    ``"glorot"`` uniform in ``±sqrt(6 / (n_in + n_out))`` (Glorot & Bengio 2010),
    ``"he"`` normal with standard deviation ``sqrt(2 / n_in)`` (He et al. 2015).
    ``None`` uses He for relu layers and Glorot for the others.
    """
    if init == "tutorial":
        return np.array([rng.random() for _ in range(layout.n_weights)], dtype=dtype)
    if init is not None and init not in INITS:
        raise ValueError(f"init must be None or one of {INITS}, got {init!r}")
    weights = np.zeros(layout.n_weights, dtype=dtype)
    for block, code in zip(layout.layer_views(weights), layout.acts.tolist()):
        n_out, n_in = block.shape[0], block.shape[1] - 1
        if init == "he" or (init is None and code in (RELU, LEAKY_RELU)):
            block[:, :n_in] = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            block[:, :n_in] = rng.uniform(-limit, limit, (n_out, n_in))
    return weights

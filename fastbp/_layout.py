"""The flat parameter layout shared by every backend, and weight initialisation.

All weights of a network live in one contiguous float64 buffer.  Layer ``k``
(``k = 0`` is the first hidden layer) is a row-major block of ``sizes[k + 1]``
neurons by ``sizes[k] + 1`` weights, bias last, starting at ``w_off[k]``.  The
neuron outputs and error signals of layer ``k`` start at ``o_off[k]`` in their own
buffers.  This is the tutorial's (and FANN's) order, so filling the buffer with
``random()`` draws reproduces the tutorial's ``initialize_network``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

INITS = ("tutorial",)


@dataclass(frozen=True)
class Layout:
    """Offsets of each layer in the flat buffers, for layer sizes ``sizes``."""

    sizes: np.ndarray  # intp, (n_layers + 1,): inputs, hidden..., outputs
    w_off: np.ndarray  # intp, (n_layers + 1,): block starts, then the total
    o_off: np.ndarray  # intp, (n_layers + 1,): output starts, then the total

    @classmethod
    def from_sizes(cls, sizes: tuple[int, ...]) -> Layout:
        sizes_arr = np.asarray(sizes, dtype=np.intp)
        block = sizes_arr[1:] * (sizes_arr[:-1] + 1)
        w_off = np.concatenate(([0], np.cumsum(block))).astype(np.intp)
        o_off = np.concatenate(([0], np.cumsum(sizes_arr[1:]))).astype(np.intp)
        return cls(sizes_arr, w_off, o_off)

    @property
    def n_weights(self) -> int:
        return int(self.w_off[-1])

    @property
    def n_neurons(self) -> int:
        return int(self.o_off[-1])

    def layer_views(self, weights: np.ndarray) -> list[np.ndarray]:
        """Per-layer views ``(n_neurons, n_inputs + 1)`` into ``weights``."""
        return [
            weights[self.w_off[k] : self.w_off[k + 1]].reshape(self.sizes[k + 1], self.sizes[k] + 1)
            for k in range(len(self.sizes) - 1)
        ]


def initial_weights(layout: Layout, init: str, rng: random.Random) -> np.ndarray:
    """A fresh flat weight buffer.

    ``"tutorial"`` draws ``rng.random()`` for every weight in buffer order: layer by
    layer, neuron by neuron, bias last, exactly as ``initialize_network`` does.
    """
    if init == "tutorial":
        return np.array([rng.random() for _ in range(layout.n_weights)], dtype=np.float64)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")

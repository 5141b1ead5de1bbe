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

from ._codes import ACTIVATIONS, LEAKY_RELU, RELU, SIGMOID

#: The most weights a network may have: 16 GiB of float64, far past a "small" network,
#: and far below where the kernels' offsets could overflow.
MAX_WEIGHTS = 2**31

#: Initialisation schemes; ``None`` picks Glorot or He per layer from its activation.
INITS = ("tutorial", "glorot", "he", "sklearn")
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
        """The layout of a network; ``activations`` names each layer's (default: all sigmoid).

        Offsets are summed in Python integers and bounded, because the kernels index
        with them unchecked: a wrapped-around offset would write outside the buffers.
        """
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer sizes must be at least two positive integers, got {sizes}")
        w_off, o_off = [0], [0]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w_off.append(w_off[-1] + n_out * (n_in + 1))
            o_off.append(o_off[-1] + n_out)
        if w_off[-1] > MAX_WEIGHTS:
            raise ValueError(f"layer sizes {sizes} make {w_off[-1]} weights, more than fastbp's {MAX_WEIGHTS}")
        names = activations if activations is not None else ["sigmoid"] * (len(sizes) - 1)
        if len(names) != len(sizes) - 1:
            raise ValueError(f"{len(names)} activations given for {len(sizes) - 1} layers")
        unknown = [name for name in names if name not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation {unknown[0]!r}: choose from {tuple(ACTIVATIONS)}")
        acts = np.array([ACTIVATIONS[name] for name in names], dtype=np.intp)
        return cls(*(np.array(values, dtype=np.intp) for values in (sizes, w_off, o_off)), acts)

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
    ``None`` uses He for relu layers and Glorot for the others.  ``"sklearn"`` is
    scikit-learn's MLP scheme: weights *and* biases uniform in
    ``±sqrt(factor / (n_in + n_out))``, ``factor`` 2 when the first layer is sigmoid
    and 6 otherwise, for every layer.
    """
    if init == "tutorial":
        return np.array([rng.random() for _ in range(layout.n_weights)], dtype=dtype)
    if init is not None and init not in INITS:
        raise ValueError(f"init must be None or one of {INITS}, got {init!r}")
    weights = np.zeros(layout.n_weights, dtype=dtype)
    sklearn_factor = 2.0 if layout.acts[0] == SIGMOID else 6.0
    for block, code in zip(layout.layer_views(weights), layout.acts.tolist()):
        n_out, n_in = block.shape[0], block.shape[1] - 1
        if init == "sklearn":
            limit = np.sqrt(sklearn_factor / (n_in + n_out))
            block[:] = rng.uniform(-limit, limit, block.shape)
        elif init == "he" or (init is None and code in (RELU, LEAKY_RELU)):
            block[:, :n_in] = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            block[:, :n_in] = rng.uniform(-limit, limit, (n_out, n_in))
    return weights

"""Numba backend: the kernels of the flat-buffer contract, compiled in nopython mode.

Every backend module exposes the same functions with the same arguments, in the
order model, scratch, data, scalars (see :mod:`fastbp._layout` for the buffers):

* ``forward_propagate(weights, w_off, sizes, outputs, o_off, x)``
* ``backward_propagate_error(weights, w_off, sizes, outputs, o_off, deltas, expected) -> float``
* ``update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate)``
* ``train_epoch(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate) -> float``
* ``train_epochs(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate, history)``
* ``predict_batch(weights, w_off, sizes, outputs, o_off, X, out)``

Kernels mutate their buffers in place and never allocate.  They trust their
inputs: C-contiguous float64 arrays of matching shapes, checked by
:mod:`fastbp._api`.  The arithmetic follows :mod:`fastbp.reference` operation by
operation (bias first, then inputs in ascending order; no fastmath), so the
weights agree with it bit for bit.

Offsets and loop counters are cast to unsigned (``uintp``) before indexing:
Numba checks every signed index for Python's negative wraparound, and those
checks (plus the registers they tie up) cost about 30% of the epoch time here.
Mixing signed and unsigned integers would make Numba compute in float64, so
every integer operand of an index expression is unsigned, constants included.
"""

import math

import numpy as np
from numba import njit

from ._config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS

ONE = np.uintp(1)


@njit(**NUMBA_INLINED_OPTIONS)
def _activate_layer(weights, start, n_in, n_out, inputs, in_off, outputs, out_off):
    """Sigmoid outputs of one layer whose inputs are ``inputs[in_off : in_off + n_in]``.

    The layer's inputs are addressed by offset rather than sliced out, because an
    array slice costs a reference count per call in compiled code.
    """
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, out_off = np.uintp(in_off), np.uintp(out_off)
    for j in range(n_out):
        neuron = start + j * (n_in + ONE)
        activation = weights[neuron + n_in]
        for i in range(n_in):
            activation += weights[neuron + i] * inputs[in_off + i]
        outputs[out_off + j] = 1.0 / (1.0 + math.exp(-activation))


@njit(**NUMBA_INLINED_OPTIONS)
def forward_propagate(weights, w_off, sizes, outputs, o_off, x):
    """Store every neuron's sigmoid output for input row ``x`` in ``outputs``."""
    _activate_layer(weights, w_off[0], sizes[0], sizes[1], x, 0, outputs, o_off[0])
    for k in range(1, sizes.shape[0] - 1):
        _activate_layer(weights, w_off[k], sizes[k], sizes[k + 1], outputs, o_off[k - 1], outputs, o_off[k])


@njit(**NUMBA_INLINED_OPTIONS)
def backward_propagate_error(weights, w_off, sizes, outputs, o_off, deltas, expected):
    """Store every neuron's error signal in ``deltas``; return the row's squared error."""
    last = sizes.shape[0] - 2
    own = np.uintp(o_off[last])
    sum_error = 0.0
    for j in range(np.uintp(sizes[last + 1])):
        output = outputs[own + j]
        sum_error += (expected[j] - output) ** 2
        deltas[own + j] = (output - expected[j]) * (output * (1.0 - output))
    for k in range(last - 1, -1, -1):
        block, own, downstream = np.uintp(w_off[k + 1]), np.uintp(o_off[k]), np.uintp(o_off[k + 1])
        stride = np.uintp(sizes[k + 1] + 1)
        for j in range(np.uintp(sizes[k + 1])):
            error = 0.0
            for m in range(np.uintp(sizes[k + 2])):
                error += weights[block + m * stride + j] * deltas[downstream + m]
            output = outputs[own + j]
            deltas[own + j] = error * (output * (1.0 - output))
    return sum_error


@njit(**NUMBA_INLINED_OPTIONS)
def _update_layer(weights, start, n_in, n_out, inputs, in_off, deltas, d_off, l_rate):
    """SGD step for one layer whose inputs are ``inputs[in_off : in_off + n_in]``."""
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, d_off = np.uintp(in_off), np.uintp(d_off)
    for j in range(n_out):
        neuron = start + j * (n_in + ONE)
        delta = deltas[d_off + j]
        for i in range(n_in):
            weights[neuron + i] -= l_rate * delta * inputs[in_off + i]
        weights[neuron + n_in] -= l_rate * delta


@njit(**NUMBA_INLINED_OPTIONS)
def update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first."""
    _update_layer(weights, w_off[0], sizes[0], sizes[1], x, 0, deltas, o_off[0], l_rate)
    for k in range(1, sizes.shape[0] - 1):
        _update_layer(weights, w_off[k], sizes[k], sizes[k + 1], outputs, o_off[k - 1], deltas, o_off[k], l_rate)


@njit(**NUMBA_INLINED_OPTIONS)
def train_epoch(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate):
    """Online SGD over the rows of ``X`` in ``order``; return the epoch's squared error."""
    sum_error = 0.0
    for t in range(order.shape[0]):
        r = np.uintp(order[t])
        forward_propagate(weights, w_off, sizes, outputs, o_off, X[r])
        sum_error += backward_propagate_error(weights, w_off, sizes, outputs, o_off, deltas, Y[r])
        update_weights(weights, w_off, sizes, outputs, o_off, deltas, X[r], l_rate)
    return sum_error


@njit(**NUMBA_OPTIONS)
def train_epochs(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate, history):
    """Run ``len(history)`` epochs, writing each epoch's squared error into ``history``."""
    for epoch in range(history.shape[0]):
        history[epoch] = train_epoch(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate)


@njit(**NUMBA_OPTIONS)
def predict_batch(weights, w_off, sizes, outputs, o_off, X, out):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    last = np.uintp(o_off[sizes.shape[0] - 2])
    for r in range(X.shape[0]):
        forward_propagate(weights, w_off, sizes, outputs, o_off, X[r])
        for j in range(np.uintp(out.shape[1])):
            out[r, j] = outputs[last + j]

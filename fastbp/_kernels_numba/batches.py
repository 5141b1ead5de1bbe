"""The Numba backend's mini-batch kernels: whole batches by matrix products (BLAS through ``np.dot``).

Layer ``k``'s inputs form a ``(b, sizes[k] + 1)`` matrix whose last column is ones,
so ``inputs @ W.T`` includes the biases and ``deltas.T @ inputs`` is the layer's
whole gradient block, bias column included.  The products are cut into blocks of
``block_size(b)`` neurons or rows, which threads share (``prange``); each block is
computed the same way whichever thread takes it, so the result does not depend on
the thread count.
"""

import threading
import types

import numpy as np
from numba import config, get_num_threads, njit, prange, set_num_threads

from .._concepts import ActivationCode
from .._constants import block_size as _block_size
from .config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS
from .primitives import activation, derivative, optimizer_step, output_error, softmax

block_size = njit(**NUMBA_INLINED_OPTIONS)(_block_size)
#: The most threads ``train_batches`` may start (Numba's NUMBA_NUM_THREADS, fixed when the process starts).
MAX_THREADS = config.NUMBA_NUM_THREADS
#: Held while ``train_batches`` runs on several threads: Numba's fallback threading layer (workqueue) aborts
#: the process if two threads launch parallel loops at once.
PARALLEL_LOCK = threading.Lock()


@njit(**NUMBA_INLINED_OPTIONS)
def _matrix(buffer, start, n_rows, n_cols):
    """A C-ordered ``(n_rows, n_cols)`` view of ``buffer`` from ``start``."""
    return buffer[start : start + n_rows * n_cols].reshape(n_rows, n_cols)


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_buffers(net, batch_size, dt):
    """Scratch for batches of up to ``batch_size`` rows: ``(activations, a_off, products, deltas, deltas_t)``.

    Layer ``k``'s activation matrix starts at ``a_off[k]`` and has room for
    ``batch_size`` rows (a shorter last batch uses its first rows), its last column
    ones.  ``products`` holds a layer's weighted sums, block after block of
    ``block_size`` columns, or its errors; ``deltas`` and ``deltas_t`` (the same,
    transposed) have two sides: the layer in hand and the layer below.
    """
    sizes = net.sizes
    widest = 0
    total = 0
    for k in range(sizes.shape[0]):
        widest = max(widest, sizes[k] + 1)
        total += sizes[k] + 1
    a_off = np.empty(sizes.shape[0], dtype=np.intp)
    a_off[0] = 0
    for k in range(sizes.shape[0] - 1):
        a_off[k + 1] = a_off[k] + batch_size * (sizes[k] + 1)
    activations = np.empty(batch_size * total, dtype=dt)
    products = np.empty(batch_size * widest, dtype=dt)
    deltas = np.empty((2, batch_size * widest), dtype=dt)
    deltas_t = np.empty((2, batch_size * widest), dtype=dt)
    return activations, a_off, products, deltas, deltas_t


@njit(**NUMBA_INLINED_OPTIONS)
def _forward_block(layer, inputs, outputs, products, b, n_in, n_out, code, size, block):
    """Neurons ``block * size ...`` of a layer: weighted sums for the ``b`` rows, then activations."""
    dt = products.dtype.type
    first = block * size
    width = min(size, n_out - first)
    sums = _matrix(products, b * first, b, width)
    np.dot(inputs, _matrix(layer, first * (n_in + 1), width, n_in + 1).T, sums)
    for s in range(b):
        for j in range(width):
            value = sums[s, j]
            outputs[s, first + j] = value if code == ActivationCode.SOFTMAX else activation(value, code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _backward_block(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, task):
    """One task of a layer's backward pass, ``shape`` being ``(b, n_in, n_out, size)``: the gradient of a block
    of its neurons (the first tasks, one per block), or the error signals of a block of rows for the layer below
    (``deltas`` and ``deltas_t``: the layer's at ``side``, the layer below's at the other)."""
    dt = products.dtype.type
    b, n_in, n_out, size = shape
    n_grad = -(-n_out // size)
    if task < n_grad:
        first = task * size
        width = min(size, n_out - first)
        block_grad = _matrix(layer_grad, first * (n_in + 1), width, n_in + 1)
        np.dot(_matrix(deltas_t[side], first * b, width, b), inputs, block_grad)
        return
    below, below_t = deltas[1 - side], deltas_t[1 - side]
    first = (task - n_grad) * size
    width = min(size, b - first)
    errors = _matrix(products, first * (n_in + 1), width, n_in + 1)
    np.dot(_matrix(deltas[side], first * n_out, width, n_out), _matrix(layer, 0, n_out, n_in + 1), errors)
    for s in range(width):
        for j in range(n_in):
            value = errors[s, j] * derivative(inputs[first + s, j], code_below, dt)
            below[(first + s) * n_in + j] = value
            below_t[j * b + first + s] = value


def _forward_tasks(layer, inputs, out, products, b, n_in, n_out, code, size):
    """A layer's forward pass over a batch, block after block of ``size`` neurons (see ``_forward_block``)."""
    for task in prange(-(-n_out // size)):
        _forward_block(layer, inputs, out, products, b, n_in, n_out, code, size, task)


def _backward_tasks(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, n_tasks):
    """A layer's backward pass over a batch: its gradient blocks and the error blocks of the layer below."""
    for task in prange(n_tasks):
        _backward_block(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, task)


def _variant(function, suffix: str, **bindings):
    """A copy of ``function`` named with ``suffix``, its global names ``bindings`` bound to other objects:
    a second compilation of one source that calls other functions.  Each copy needs a name of its own,
    since Numba names a function's disk cache after it and does not tell serial and parallel
    compilations apart there."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **bindings}, function.__name__ + suffix)
    copy.__qualname__ = function.__qualname__ + suffix
    return copy


# Each compiled twice: ``prange`` is a plain loop without ``parallel``.  The one-thread chain below never
# starts Numba's threading layer, so a forked child (see fastbp._parallel) can run it, and the threaded
# chain is compiled only when a batch is first shared between threads.
_forward_layer = njit(**NUMBA_OPTIONS)(_forward_tasks)
_backward_layer = njit(**NUMBA_OPTIONS)(_backward_tasks)
_forward_layer_on_threads = njit(parallel=True, **NUMBA_OPTIONS)(_variant(_forward_tasks, "_on_threads"))
_backward_layer_on_threads = njit(parallel=True, **NUMBA_OPTIONS)(_variant(_backward_tasks, "_on_threads"))


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_gradient(net, weights, data, rows, grad, scratch):
    """Mean weighted gradient over rows ``data.X[rows]`` into ``grad``; returns the rows' weighted loss sum.

    ``scratch`` comes from ``_batch_buffers`` for at least ``len(rows)`` rows.
    """
    dt = weights.dtype.type
    X, Y, sample_weight = data.X, data.Y, data.sample_weight
    sizes, w_off, acts = net.sizes, net.w_off, net.activations
    activations, a_off, products, deltas, deltas_t = scratch
    b = rows.shape[0]
    size = block_size(b)
    n_layers = sizes.shape[0] - 1
    inputs = _matrix(activations, 0, b, sizes[0] + 1)
    for s in range(b):
        inputs[s, : sizes[0]] = X[rows[s]]
        inputs[s, sizes[0]] = dt(1.0)
    for k in range(n_layers):
        n_in, n_out, code = sizes[k], sizes[k + 1], acts[k]
        layer = weights[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        inputs = _matrix(activations, a_off[k], b, n_in + 1)
        out = _matrix(activations, a_off[k + 1], b, n_out + 1)
        _forward_layer(layer, inputs, out, products, b, n_in, n_out, code, size)
        for s in range(b):
            if code == ActivationCode.SOFTMAX:
                softmax(activations, a_off[k + 1] + s * (n_out + 1), n_out, dt)
            out[s, n_out] = dt(1.0)

    n_out, code = sizes[n_layers], acts[n_layers - 1]
    outputs = _matrix(activations, a_off[n_layers], b, n_out + 1)
    total_loss = dt(0.0)
    for s in range(b):
        r = rows[s]
        row_loss = dt(0.0)
        scale = sample_weight[r] / dt(b)
        for j in range(n_out):
            loss, delta = output_error(outputs[s, j], Y[r, j], code, net.loss, dt)
            row_loss += loss
            deltas[0, s * n_out + j] = delta * scale
            deltas_t[0, j * b + s] = delta * scale
        total_loss += sample_weight[r] * row_loss
    side = 0
    for k in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        layer = weights[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        layer_grad = grad[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        inputs = _matrix(activations, a_off[k], b, n_in + 1)
        code_below = acts[k - 1] if k > 0 else 0
        n_tasks = -(-n_out // size) + (-(-b // size) if k > 0 else 0)
        shape = (b, n_in, n_out, size)
        _backward_layer(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, n_tasks)
        side = 1 - side
    return total_loss


@njit(**NUMBA_OPTIONS)
def batch_gradient(net, weights, data, rows, grad):
    """Mean weighted gradient of the loss over rows ``data.X[rows]``, into ``grad``; returns their loss sum."""
    scratch = _batch_buffers(net, rows.shape[0], weights.dtype)
    return _batch_gradient(net, weights, data, rows, grad, scratch)


def _train_batches(net, weights, optimizer_state, data, schedule, history):
    """Mini-batch training for ``len(history)`` epochs: one update per ``batch_size`` rows (the last may be short)."""
    orders = schedule.orders
    n_rows = orders.shape[1]
    batch_size = min(schedule.batch_size, n_rows)
    scratch = _batch_buffers(net, batch_size, weights.dtype)
    grad = np.empty_like(weights)
    step = schedule.steps_done
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        epoch_loss = weights.dtype.type(0.0)
        for start in range(0, n_rows, batch_size):
            rows = order[start : min(start + batch_size, n_rows)]
            epoch_loss += _batch_gradient(net, weights, data, rows, grad, scratch)
            step += 1
            optimizer_step(net, weights, grad, optimizer_state, schedule, schedule.rates[epoch], step)
        history[epoch] = epoch_loss


_train_batches_on_one_thread = njit(**NUMBA_OPTIONS)(_train_batches)
_train_batches_on_threads = njit(**NUMBA_OPTIONS)(
    _variant(
        _train_batches,
        "_on_threads",
        _batch_gradient=njit(**NUMBA_INLINED_OPTIONS)(
            _variant(
                _batch_gradient.py_func,
                "_on_threads",
                _forward_layer=_forward_layer_on_threads,
                _backward_layer=_backward_layer_on_threads,
            )
        ),
    )
)


def on_threads(n_threads: int, kernel, *args) -> None:
    """``kernel(*args)`` with Numba's thread count set to ``n_threads`` (at most MAX_THREADS), the calling
    thread's setting given back afterwards.  Set from Python: a kernel that set it could not be cached."""
    previous = get_num_threads()
    set_num_threads(min(n_threads, MAX_THREADS))
    try:
        kernel(*args)
    finally:
        set_num_threads(previous)


def train_batches(net, weights, optimizer_state, data, schedule, history, n_threads):
    """Mini-batch training for ``len(history)`` epochs on up to ``n_threads`` threads (at most MAX_THREADS)."""
    if n_threads <= 1:
        _train_batches_on_one_thread(net, weights, optimizer_state, data, schedule, history)
    else:
        on_threads(n_threads, _train_batches_on_threads, net, weights, optimizer_state, data, schedule, history)


#: The compiled functions behind each kernel that is a Python function.
DISPATCHERS = {"train_batches": (_train_batches_on_one_thread, _train_batches_on_threads)}

"""The Numba backend's mini-batch kernels: whole batches by matrix products (BLAS's ``gemm``).

Layer ``k``'s inputs form a ``(b, sizes[k] + 1)`` matrix whose last column is ones,
so ``inputs @ W.T`` includes the biases and ``deltas.T @ inputs`` is the layer's
whole gradient block, bias column included.  The products are cut into blocks of
``block_size(b)`` neurons or rows, which threads share (``prange``); each block is
computed the same way whichever thread takes it, so the result does not depend on
the thread count.  Every block is one ``gemm`` call, the Cython backend's, even a
block of one row or one neuron (where ``np.dot`` would take a vector product, other
bits), so the two backends agree bit for bit.

Sparse rows (CSR) go through the same layers but the first, whose work follows the
rows' nonzeros: each nonzero adds its value times its input's weights to the row's
weighted sums, and its input's weights are the ones its gradient reaches.  For that
the first layer's weights are read input-major, ``(sizes[0] + 1, sizes[1])`` with the
biases last: a transposed copy, or the buffer's own block transposed in place while
``train_sparse`` runs (its optimizer's memory too, so every update stays elementwise).
"""

import threading
import types

import numpy as np
from numba import config, get_num_threads, njit, prange, set_num_threads

from .._concepts import ActivationCode, OptimizerCode
from .._constants import PREDICT_CHUNK_ROWS
from .._constants import block_size as _block_size
from .config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS
from .llvm import flush_subnormals, restore_subnormals
from .primitives import (
    AS_IS,
    START,
    TRANSPOSED,
    activate_row,
    copy_values,
    derive_row,
    gemm,
    optimizer_step,
    output_error,
    softmax,
)

block_size = njit(**NUMBA_INLINED_OPTIONS)(_block_size)
#: The most threads ``train_batches`` may start (Numba's NUMBA_NUM_THREADS, fixed when the process starts).
MAX_THREADS = config.NUMBA_NUM_THREADS
#: The fields of a ``Network`` that hold one entry per layer (or per layer and one more), whose tail from the
#: second entry describes the layers above the first.
UPPER_LAYER_FIELDS = ("kinds", "activations", "sizes", "w_off", "o_off", "geometry", "dropout")
#: Held while ``train_batches`` runs on several threads: Numba's fallback threading layer (workqueue) aborts
#: the process if two threads launch parallel loops at once.
PARALLEL_LOCK = threading.Lock()


@njit(**NUMBA_INLINED_OPTIONS)
def _matrix(buffer, start, n_rows, n_cols):
    """A C-ordered ``(n_rows, n_cols)`` view of ``buffer`` from ``start``."""
    return buffer[start : start + n_rows * n_cols].reshape(n_rows, n_cols)


@njit(**NUMBA_INLINED_OPTIONS)
def _blas_scratch(dtype):
    """``gemm``'s arguments' room with ``dtype``'s floats, made inside a task so that threads never share it."""
    return np.empty(8, dtype=np.int32), np.empty(2, dtype=dtype)


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_buffers(net, batch_size, dt, first):
    """Scratch for batches of up to ``batch_size`` rows: ``(activations, a_off, products, deltas, deltas_t)``.

    Layer ``k``'s activation matrix starts at ``a_off[k]`` and has room for
    ``batch_size`` rows (a shorter last batch uses its first rows), its last column
    ones.  ``products`` holds a layer's weighted sums, block after block of
    ``block_size`` columns, or its errors; ``deltas`` and ``deltas_t`` (the same,
    transposed) have two sides: the layer in hand and the layer below.  Matrix
    products start at layer ``first``: 1 for sparse rows, whose input matrix is
    never formed (``a_off[0] == a_off[1]``).
    """
    sizes = net.sizes
    widest = 0
    total = 0
    for k in range(first, sizes.shape[0]):
        widest = max(widest, sizes[k] + 1)
        total += sizes[k] + 1
    a_off = np.zeros(sizes.shape[0], dtype=np.intp)
    for k in range(first, sizes.shape[0] - 1):
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
    gemm(AS_IS, (inputs.reshape(-1), START, n_in + 1), TRANSPOSED, (layer, first * (n_in + 1), n_in + 1),
         (products, b * first, width), 0.0, (b, width, n_in + 1), _blas_scratch(products.dtype))  # fmt: skip
    flat_outputs = outputs.reshape(-1)  # the same values, indexed as activate_row's
    for s in range(b):
        activate_row(products, b * first + s * width, flat_outputs, s * (n_out + 1) + first, width, code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _backward_block(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, task):
    """One task of a layer's backward pass, ``shape`` being ``(b, n_in, n_out, size)``: the gradient of a block
    of its neurons (the first tasks, one per block), or the error signals of a block of rows for the layer below
    (``deltas`` and ``deltas_t``: the layer's at ``side``, the layer below's at the other)."""
    dt = products.dtype.type
    blas = _blas_scratch(products.dtype)
    b, n_in, n_out, size = shape
    n_grad = -(-n_out // size)
    if task < n_grad:
        first = task * size
        width = min(size, n_out - first)
        gemm(AS_IS, (deltas_t[side], first * b, b), AS_IS, (inputs.reshape(-1), START, n_in + 1),
             (layer_grad, first * (n_in + 1), n_in + 1), 0.0, (width, n_in + 1, b), blas)  # fmt: skip
        return
    below, below_t = deltas[1 - side], deltas_t[1 - side]
    first = (task - n_grad) * size
    width = min(size, b - first)
    gemm(AS_IS, (deltas[side], first * n_out, n_out), AS_IS, (layer, START, n_in + 1),
         (products, first * (n_in + 1), n_in + 1), 0.0, (width, n_in + 1, n_out), blas)  # fmt: skip
    flat_inputs = inputs.reshape(-1)
    for s in range(first, first + width):
        derive_row(below, s * n_in, products, s * (n_in + 1), flat_inputs, s * (n_in + 1), n_in, code_below, dt)
        row = np.uintp(s * n_in)  # the indexes unsigned: no wrap-around tests in the loop below
        for j in range(np.uintp(n_in)):
            below_t[j * np.uintp(b) + np.uintp(s)] = below[row + j]


def _forward_tasks(layer, inputs, out, products, b, n_in, n_out, code, size):
    """A layer's forward pass over a batch, block after block of ``size`` neurons (see ``_forward_block``)."""
    for task in prange(-(-n_out // size)):
        kept = flush_subnormals()  # on each thread (see llvm.flush_subnormals)
        _forward_block(layer, inputs, out, products, b, n_in, n_out, code, size, task)
        restore_subnormals(kept)


def _backward_tasks(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, n_tasks):
    """A layer's backward pass over a batch: its gradient blocks and the error blocks of the layer below."""
    for task in prange(n_tasks):
        kept = flush_subnormals()
        _backward_block(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, task)
        restore_subnormals(kept)


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
def _forward_layers(net, weights, scratch, b, first):
    """The forward pass of layers ``first ...`` over a batch of ``b`` rows, from layer ``first``'s inputs."""
    dt = weights.dtype.type
    sizes, w_off, acts = net.sizes, net.w_off, net.activations
    activations, a_off, products, _, _ = scratch
    size = block_size(b)
    for k in range(first, sizes.shape[0] - 1):
        n_in, n_out, code = sizes[k], sizes[k + 1], acts[k]
        layer = weights[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        inputs = _matrix(activations, a_off[k], b, n_in + 1)
        out = _matrix(activations, a_off[k + 1], b, n_out + 1)
        _forward_layer(layer, inputs, out, products, b, n_in, n_out, code, size)
        for s in range(b):
            if code == ActivationCode.SOFTMAX:
                softmax(activations, a_off[k + 1] + s * (n_out + 1), n_out, dt)
            out[s, n_out] = dt(1.0)


@njit(**NUMBA_INLINED_OPTIONS)
def _output_deltas(net, data, rows, scratch):
    """The output layer's error signals for rows ``rows`` (side 0 of the deltas), each times its row's weight
    over the batch's size; returns the rows' weighted loss sum."""
    Y, sample_weight = data.Y, data.sample_weight
    activations, a_off, _, deltas, deltas_t = scratch
    dt = activations.dtype.type
    b = rows.shape[0]
    n_layers = net.sizes.shape[0] - 1
    n_out, code = net.sizes[n_layers], net.activations[n_layers - 1]
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
    return total_loss


@njit(**NUMBA_INLINED_OPTIONS)
def _backward_layers(net, weights, grad, scratch, b, first):
    """The backward pass of layers ``first ...`` from the output's deltas: their gradient blocks into ``grad``,
    and the error signals of each layer below down to layer ``first - 1``'s; returns the side of the deltas
    that holds the lowest layer's."""
    sizes, w_off, acts = net.sizes, net.w_off, net.activations
    activations, a_off, products, deltas, deltas_t = scratch
    size = block_size(b)
    side = np.intp(0)  # not the literal 0: a call typed with it would compile the layer's pass twice
    for k in range(sizes.shape[0] - 2, first - 1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        layer = weights[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        layer_grad = grad[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        inputs = _matrix(activations, a_off[k], b, n_in + 1)
        code_below = acts[k - 1] if k > 0 else 0
        n_tasks = -(-n_out // size) + (-(-b // size) if k > 0 else 0)
        shape = (b, n_in, n_out, size)
        _backward_layer(layer, inputs, layer_grad, products, deltas, deltas_t, side, shape, code_below, n_tasks)
        side = 1 - side
    return side


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_gradient(net, weights, data, rows, grad, scratch):
    """Mean weighted gradient over rows ``data.X[rows]`` into ``grad``; returns the rows' weighted loss sum.

    ``scratch`` comes from ``_batch_buffers`` for at least ``len(rows)`` rows.
    """
    dt = weights.dtype.type
    X, n_in = data.X, net.sizes[0]
    activations, a_off, _, _, _ = scratch
    b = rows.shape[0]
    inputs = _matrix(activations, 0, b, n_in + 1)
    for s in range(b):
        copy_values(X[rows[s]], activations, s * (n_in + 1), n_in)
        inputs[s, n_in] = dt(1.0)
    _forward_layers(net, weights, scratch, b, 0)
    total_loss = _output_deltas(net, data, rows, scratch)
    _backward_layers(net, weights, grad, scratch, b, 0)
    return total_loss


@njit(**NUMBA_OPTIONS)
def batch_gradient(net, weights, data, rows, grad):
    """Mean weighted gradient of the loss over rows ``data.X[rows]``, into ``grad``; returns their loss sum."""
    scratch = _batch_buffers(net, rows.shape[0], weights.dtype, 0)
    kept = flush_subnormals()
    total_loss = _batch_gradient(net, weights, data, rows, grad, scratch)
    restore_subnormals(kept)
    return total_loss


def _train_batches(net, weights, optimizer_state, data, schedule, history, starts):
    """Mini-batch training for ``len(history)`` epochs: one update per ``batch_size`` rows (the last may be short);
    each epoch's starting weights into ``starts`` unless it has no rows."""
    orders = schedule.orders
    n_rows = orders.shape[1]
    batch_size = min(schedule.batch_size, n_rows)
    scratch = _batch_buffers(net, batch_size, weights.dtype, 0)
    grad = np.empty_like(weights)
    step = schedule.steps_done
    kept = flush_subnormals()
    for epoch in range(history.shape[0]):
        if starts.shape[0] > 0:
            starts[epoch, :] = weights
        order = orders[epoch % orders.shape[0]]
        epoch_loss = weights.dtype.type(0.0)
        for start in range(0, n_rows, batch_size):
            rows = order[start : min(start + batch_size, n_rows)]
            epoch_loss += _batch_gradient(net, weights, data, rows, grad, scratch)
            step += 1
            optimizer_step(net, weights, grad, optimizer_state, schedule, schedule.rates[epoch], step)
        history[epoch] = epoch_loss
    restore_subnormals(kept)


_train_batches_on_one_thread = njit(**NUMBA_OPTIONS)(_train_batches)
_train_batches_on_threads = njit(**NUMBA_OPTIONS)(
    _variant(
        _train_batches,
        "_on_threads",
        _batch_gradient=njit(**NUMBA_INLINED_OPTIONS)(
            _variant(
                _batch_gradient.py_func,
                "_on_threads",
                _forward_layers=njit(**NUMBA_INLINED_OPTIONS)(
                    _variant(_forward_layers.py_func, "_on_threads", _forward_layer=_forward_layer_on_threads)
                ),
                _backward_layers=njit(**NUMBA_INLINED_OPTIONS)(
                    _variant(_backward_layers.py_func, "_on_threads", _backward_layer=_backward_layer_on_threads)
                ),
            )
        ),
    )
)


@njit(**NUMBA_INLINED_OPTIONS)
def _transpose_block(buffer, start, n_rows, n_cols, swap):
    """Rewrite ``buffer``'s ``(n_rows, n_cols)`` block at ``start`` as its ``(n_cols, n_rows)`` transpose, in
    place, through ``swap`` (room for the block)."""
    n = n_rows * n_cols
    swap[:n] = buffer[start : start + n]
    for i in range(n_rows):
        for j in range(n_cols):
            buffer[start + j * n_rows + i] = swap[i * n_cols + j]


@njit(**NUMBA_INLINED_OPTIONS)
def _input_major_copy(net, weights):
    """A copy of the first layer's weights, input-major ``(sizes[0] + 1, sizes[1])``, biases last."""
    n_in, units = net.sizes[0], net.sizes[1]
    copy = np.empty((n_in + 1) * units, dtype=weights.dtype)
    copy[:] = weights[: (n_in + 1) * units]
    swap = np.empty_like(copy)
    _transpose_block(copy, 0, units, n_in + 1, swap)
    return copy.reshape(n_in + 1, units)


@njit(**NUMBA_INLINED_OPTIONS)
def _sparse_first_layer(net, first_layer, X, rows, scratch):
    """The first layer's outputs for sparse rows ``X[rows]``, from its input-major weights ``first_layer``:
    the biases, plus each nonzero times its input's weights, then the activation."""
    dt = first_layer.dtype.type
    indptr, indices, values = X
    activations, a_off, _, _, _ = scratch
    n_in, units, code = net.sizes[0], net.sizes[1], net.activations[0]
    out = _matrix(activations, a_off[1], rows.shape[0], units + 1)
    for s in range(rows.shape[0]):
        r = rows[s]
        for j in range(units):
            out[s, j] = first_layer[n_in, j]
        for p in range(indptr[r], indptr[r + 1]):
            weights, value = first_layer[indices[p]], values[p]
            for j in range(units):
                out[s, j] += value * weights[j]
        row = a_off[1] + s * (units + 1)
        activate_row(activations, row, activations, row, units, code, dt)  # in place; softmax's sums as they are
        if code == ActivationCode.SOFTMAX:
            softmax(activations, row, units, dt)
        out[s, units] = dt(1.0)


@njit(**NUMBA_INLINED_OPTIONS)
def _sparse_forward(net, first_layer, weights, X, rows, scratch):
    """Every layer's outputs for sparse rows ``X[rows]`` (the first layer's weights input-major)."""
    _sparse_first_layer(net, first_layer, X, rows, scratch)
    _forward_layers(net, weights, scratch, rows.shape[0], 1)


@njit(**NUMBA_INLINED_OPTIONS)
def _sparse_gradient(net, first_layer, weights, data, rows, grad, scratch):
    """``_batch_gradient`` for sparse rows, but the first layer's gradient: the other layers' blocks go into
    ``grad``; returns the rows' weighted loss sum and the first layer's error signals ``(b * sizes[1],)``."""
    _sparse_forward(net, first_layer, weights, data.X, rows, scratch)
    total_loss = _output_deltas(net, data, rows, scratch)
    side = _backward_layers(net, weights, grad, scratch, rows.shape[0], 1)
    return total_loss, scratch[3][side]


@njit(**NUMBA_INLINED_OPTIONS)
def _scatter_first(net, X, rows, deltas, first, factor):
    """Add ``factor`` times the first layer's gradient terms for sparse rows ``X[rows]`` into ``first``
    (input-major): each nonzero's value times the layer's error signals ``deltas`` into its input's row, the
    signals themselves into the biases' row.  Into zeros with factor 1 it is the gradient; into the weights with
    factor ``-rate``, plain SGD's step, which moves only the rows' inputs' weights and the biases."""
    n_in, units = net.sizes[0], net.sizes[1]
    indptr, indices, values = X
    for s in range(rows.shape[0]):
        r = rows[s]
        row_deltas = deltas[s * units : (s + 1) * units]
        for p in range(indptr[r], indptr[r + 1]):
            target, value = first[indices[p]], values[p]
            for j in range(units):
                target[j] += factor * (row_deltas[j] * value)
        for j in range(units):
            first[n_in, j] += factor * row_deltas[j]


@njit(**NUMBA_INLINED_OPTIONS)
def _first_gradient(net, X, rows, deltas, first_grad):
    """The first layer's gradient for sparse rows ``X[rows]``, input-major into ``first_grad``."""
    first_grad[:] = 0.0
    _scatter_first(net, X, rows, deltas, first_grad, first_grad.dtype.type(1.0))


@njit(**NUMBA_INLINED_OPTIONS)
def _add_decay(net, weights, grad, l2):
    """Add ``l2`` times each weight, but the biases, to its gradient, the first layer's input-major (its biases
    its last row)."""
    for p in range(net.sizes[0] * net.sizes[1]):
        grad[p] += l2 * weights[p]
    for k in range(1, net.sizes.shape[0] - 1):
        n_in, n_out, start = net.sizes[k], net.sizes[k + 1], net.w_off[k]
        for j in range(n_out):
            neuron = start + j * (n_in + 1)
            for i in range(n_in):
                grad[neuron + i] += l2 * weights[neuron + i]


@njit(**NUMBA_OPTIONS)
def _train_sparse(net, upper, weights, optimizer_state, data, schedule, undecayed, history):
    """``train_sparse`` with ``upper``, the network's layers above the first (for plain SGD's step, which moves
    the first layer's weights itself), and ``undecayed``, the schedule without L2, which the other optimizers'
    gradient gets here (their step then updates the transposed first layer elementwise, as any other)."""
    dt = weights.dtype.type
    orders = schedule.orders
    n_rows, n_w = orders.shape[1], weights.shape[0]
    batch_size = min(schedule.batch_size, n_rows)
    scratch = _batch_buffers(net, batch_size, weights.dtype, 1)
    grad = np.empty_like(weights)
    n_in, units = net.sizes[0], net.sizes[1]
    first_layer, first_grad = _matrix(weights, 0, n_in + 1, units), _matrix(grad, 0, n_in + 1, units)
    plain = schedule.optimizer == OptimizerCode.SGD and schedule.l2 == 0.0
    stateful = schedule.optimizer != OptimizerCode.SGD
    swap = np.empty((n_in + 1) * units, dtype=weights.dtype)
    _transpose_block(weights, 0, units, n_in + 1, swap)
    if stateful:
        _transpose_block(optimizer_state, 0, units, n_in + 1, swap)
        _transpose_block(optimizer_state, n_w, units, n_in + 1, swap)
    step = schedule.steps_done
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        rate = schedule.rates[epoch]
        epoch_loss = dt(0.0)
        for start in range(0, n_rows, batch_size):
            rows = order[start : min(start + batch_size, n_rows)]
            loss, deltas = _sparse_gradient(net, first_layer, weights, data, rows, grad, scratch)
            epoch_loss += loss
            step += 1
            if plain:
                _scatter_first(net, data.X, rows, deltas, first_layer, -dt(rate))
                optimizer_step(upper, weights, grad, optimizer_state, schedule, rate, step)
            else:
                _first_gradient(net, data.X, rows, deltas, first_grad)
                if schedule.l2 != 0.0:
                    _add_decay(net, weights, grad, dt(schedule.l2))
                optimizer_step(net, weights, grad, optimizer_state, undecayed, rate, step)
        history[epoch] = epoch_loss
    _transpose_block(weights, 0, n_in + 1, units, swap)
    if stateful:
        _transpose_block(optimizer_state, 0, n_in + 1, units, swap)
        _transpose_block(optimizer_state, n_w, n_in + 1, units, swap)


def train_sparse(net, weights, optimizer_state, data, schedule, history):
    """Training on sparse rows (``data.X`` a ``SparseRows``) for ``len(history)`` epochs: one update per
    ``batch_size`` rows, on one thread."""
    upper = net._replace(**{field: getattr(net, field)[1:] for field in UPPER_LAYER_FIELDS})
    _train_sparse(net, upper, weights, optimizer_state, data, schedule, schedule._replace(l2=0.0), history)


@njit(**NUMBA_OPTIONS)
def sparse_gradient(net, weights, data, rows, grad):
    """``batch_gradient`` for sparse rows (``data.X`` a ``SparseRows``)."""
    n_in, units = net.sizes[0], net.sizes[1]
    scratch = _batch_buffers(net, rows.shape[0], weights.dtype, 1)
    first_layer = _input_major_copy(net, weights)
    total_loss, deltas = _sparse_gradient(net, first_layer, weights, data, rows, grad, scratch)
    first_grad = np.empty((n_in + 1) * units, dtype=weights.dtype)
    _first_gradient(net, data.X, rows, deltas, first_grad.reshape(n_in + 1, units))
    swap = np.empty_like(first_grad)
    _transpose_block(first_grad, 0, n_in + 1, units, swap)
    grad[: first_grad.shape[0]] = first_grad
    return total_loss


@njit(**NUMBA_OPTIONS)
def predict_sparse(net, weights, X, out):
    """The output layer's values for every sparse row of ``X`` (a ``SparseRows``), into ``out``.

    Every chunk is a whole ``PREDICT_CHUNK_ROWS`` rows above the first layer, the last
    one filled up with copies of its last row's first-layer values: BLAS rounds a
    product's rows alike only within products of one shape, so each row's outputs do not
    depend on the rows predicted with it (nor on how many threads share them).
    """
    n_rows = out.shape[0]
    chunk = np.intp(PREDICT_CHUNK_ROWS)  # not the constant: a call typed with it would compile the layers again
    scratch = _batch_buffers(net, chunk, weights.dtype, 1)
    first_layer = _input_major_copy(net, weights)
    n_layers, n_out = net.sizes.shape[0] - 1, out.shape[1]
    for start in range(0, n_rows, chunk):
        real = min(chunk, n_rows - start)
        _sparse_first_layer(net, first_layer, X, np.arange(start, start + real), scratch)
        values = _matrix(scratch[0], scratch[1][1], chunk, net.sizes[1] + 1)
        for s in range(real, chunk):
            values[s] = values[real - 1]
        _forward_layers(net, weights, scratch, chunk, 1)
        outputs = _matrix(scratch[0], scratch[1][n_layers], chunk, n_out + 1)
        out[start : start + real] = outputs[:real, :n_out]


def on_threads(n_threads: int, kernel, *args) -> None:
    """``kernel(*args)`` with Numba's thread count set to ``n_threads`` (at most MAX_THREADS), the calling
    thread's setting given back afterwards.  Set from Python: a kernel that set it could not be cached."""
    previous = get_num_threads()
    set_num_threads(min(n_threads, MAX_THREADS))
    try:
        kernel(*args)
    finally:
        set_num_threads(previous)


def train_batches(net, weights, optimizer_state, data, schedule, history, n_threads, starts):
    """Mini-batch training for ``len(history)`` epochs on up to ``n_threads`` threads (at most MAX_THREADS); each
    epoch's starting weights into ``starts`` unless it has no rows."""
    if n_threads <= 1:
        _train_batches_on_one_thread(net, weights, optimizer_state, data, schedule, history, starts)
    else:
        on_threads(n_threads, _train_batches_on_threads, net, weights, optimizer_state, data, schedule, history, starts)


#: The compiled functions behind each kernel that is a Python function.
DISPATCHERS = {
    "train_batches": (_train_batches_on_one_thread, _train_batches_on_threads),
    "train_sparse": (_train_sparse,),
}

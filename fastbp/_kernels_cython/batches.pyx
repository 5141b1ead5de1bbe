# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's mini-batch kernels: whole batches by matrix products (BLAS ``gemm``, scipy's ``cython_blas``).

Layer ``k``'s inputs form a ``(b, sizes[k] + 1)`` matrix whose last column is ones,
so ``inputs @ W.T`` includes the biases and ``deltas.T @ inputs`` is the layer's
whole gradient block, bias column included.  The products are cut into blocks of
``block_size(b)`` neurons or rows, which OpenMP threads share (``n_threads``; one
thread where the extension was built without OpenMP); each block is computed the
same way whichever thread takes it, so the result does not depend on the thread
count.  The ``gemm`` calls are those that the Numba backend's ``np.dot`` makes,
block for block, so the two agree bit for bit, except where ``np.dot`` takes a
vector product instead (a block of one row or of one neuron).
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastbp._kernels_cython.constants cimport (
    ACTIVATION_IDENTITY, ACTIVATION_LEAKY_RELU, ACTIVATION_RELU, ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX,
    ACTIVATION_TANH, LARGE_BLOCK, SMALL_BLOCK, compiled_constants,
)
from fastbp._kernels_cython.primitives cimport (
    Data, Network, Schedule, activation, bind_libm_exp, derivative, floating, network_of, optimizer_step,
    output_error, schedule_of, softmax,
)

from fastbp._constants import check_compiled
from fastbp._libm import libm_address

check_compiled(compiled_constants(), __name__)
bind_libm_exp(libm_address("exp"))


cdef extern from *:
    """
    #ifdef _OPENMP
    #define FASTBP_OPENMP 1
    #else
    #define FASTBP_OPENMP 0
    #endif
    """
    int FASTBP_OPENMP

#: Whether the extension was compiled with OpenMP: without it, the mini-batch kernels run on one thread.
OPENMP = bool(FASTBP_OPENMP)


cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int fastbp_processor_has_avx2(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx2"); }
    #else
    static int fastbp_processor_has_avx2(void) { return 0; }
    #endif
    """
    int fastbp_processor_has_avx2()

#: Whether this processor (and its operating system) runs AVX2's instructions, for which the ``_avx2`` builds
#: of the modules are compiled.
PROCESSOR_HAS_AVX2 = bool(fastbp_processor_has_avx2())


cdef struct Product:
    # The shape of a matrix product: (rows, inner) @ (inner, cols).
    int rows
    int inner
    int cols


cdef struct LayerPass:
    # One layer's pass over a batch of `rows` rows, its products cut into blocks of `size` neurons or rows.
    Py_ssize_t rows
    Py_ssize_t n_in
    Py_ssize_t n_out
    Py_ssize_t activation  # the forward pass: the layer's; the backward pass: the layer below's
    Py_ssize_t size
    Py_ssize_t side  # the backward pass: which side of the deltas holds the layer's


cdef struct BatchScratch:
    # Where the parts of one scratch block for batches of up to `capacity` rows start (see _batch_scratch).
    Py_ssize_t products
    Py_ssize_t deltas
    Py_ssize_t deltas_t
    Py_ssize_t side_size
    Py_ssize_t size  # its values in all


cdef inline void _matmul(
    const floating* a, bint transpose_b, const floating* b, Product shape, floating* c
) noexcept nogil:
    """Row-major ``c = a @ b`` (``shape``), or ``a @ b.T`` with ``b`` stored ``(cols, inner)``.

    BLAS is column-major, where every row-major matrix reads as its transpose, so
    this computes ``c.T = op(b).T @ a.T``: Numba's call for ``np.dot``.
    """
    cdef char trans_a = c'N'
    cdef char trans_b = c'T' if transpose_b else c'N'
    cdef int ldb = shape.inner if transpose_b else shape.cols
    cdef floating one = 1.0
    cdef floating zero = 0.0
    if floating is float:
        sgemm(
            &trans_b, &trans_a, &shape.cols, &shape.rows, &shape.inner, &one, <float*>b, &ldb, <float*>a,
            &shape.inner, &zero, c, &shape.cols,
        )
    else:
        dgemm(
            &trans_b, &trans_a, &shape.cols, &shape.rows, &shape.inner, &one, <double*>b, &ldb, <double*>a,
            &shape.inner, &zero, c, &shape.cols,
        )


cdef BatchScratch _batch_scratch(const Network* net, Py_ssize_t capacity) noexcept nogil:
    """The parts of one scratch block for batches of up to ``capacity`` rows.

    It holds each layer's ``(rows, n + 1)`` activation matrix from its start,
    inputs first (the last column ones); the ``products`` of a layer (its weighted
    sums, block after block of ``_block_size`` columns, or its errors); and two
    sides of ``deltas`` and of ``deltas_t`` (the same transposed), ``side_size``
    apart: one for the layer in hand, one for the layer below.
    """
    cdef Py_ssize_t k
    cdef Py_ssize_t widest = 0
    cdef Py_ssize_t total = 0
    cdef BatchScratch parts
    for k in range(net.n_layers + 1):
        widest = max(widest, net.sizes[k] + 1)
        total += net.sizes[k] + 1
    parts.side_size = capacity * widest
    parts.products = capacity * total
    parts.deltas = parts.products + parts.side_size
    parts.deltas_t = parts.deltas + 2 * parts.side_size
    parts.size = parts.deltas_t + 2 * parts.side_size
    return parts


cdef inline Py_ssize_t _blocks(Py_ssize_t n, Py_ssize_t size) noexcept nogil:
    return (n + size - 1) // size


cdef inline Py_ssize_t _block_size(Py_ssize_t batch_rows) noexcept nogil:
    """Neurons or rows per block for a batch of ``batch_rows`` rows: ``fastbp._constants.block_size``."""
    return SMALL_BLOCK if batch_rows <= SMALL_BLOCK else LARGE_BLOCK


cdef inline void _activate_row(
    floating* out, const floating* values, Py_ssize_t n, Py_ssize_t code
) noexcept nogil:
    """``out[j] = activation(values[j], code)`` for ``j < n``.

    The code is tested once, outside the loop, which then vectorises where the
    activation does (relu, leaky relu, identity): gcc does not hoist the tests out
    of ``_forward_block``'s loops by itself.
    """
    if code == ACTIVATION_SIGMOID:
        _activate_row_as(out, values, n, ACTIVATION_SIGMOID)
    elif code == ACTIVATION_TANH:
        _activate_row_as(out, values, n, ACTIVATION_TANH)
    elif code == ACTIVATION_RELU:
        _activate_row_as(out, values, n, ACTIVATION_RELU)
    elif code == ACTIVATION_LEAKY_RELU:
        _activate_row_as(out, values, n, ACTIVATION_LEAKY_RELU)
    elif code == ACTIVATION_IDENTITY:
        _activate_row_as(out, values, n, ACTIVATION_IDENTITY)
    else:
        _activate_row_as(out, values, n, code)


cdef inline void _activate_row_as(
    floating* out, const floating* values, Py_ssize_t n, Py_ssize_t code
) noexcept nogil:
    """``_activate_row``'s loop for one code."""
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = activation(values[j], code)


cdef void _forward_block(
    const floating* weights, const floating* inputs, floating* outputs, const LayerPass* layer, floating* products,
    Py_ssize_t block,
) noexcept nogil:
    """Neurons ``block * size ...`` of a layer: weighted sums for the batch's rows, then activations."""
    cdef Py_ssize_t b = layer.rows
    cdef Py_ssize_t n_in = layer.n_in
    cdef Py_ssize_t n_out = layer.n_out
    cdef Py_ssize_t code = layer.activation
    cdef Py_ssize_t first = block * layer.size
    cdef Py_ssize_t width = min(layer.size, n_out - first)
    cdef floating* sums = products + b * first
    cdef Py_ssize_t s, j
    _matmul(inputs, True, weights + first * (n_in + 1), Product(rows=b, inner=n_in + 1, cols=width), sums)
    for s in range(b):
        if code == ACTIVATION_SOFTMAX:  # a whole row's, once all its blocks are done
            for j in range(width):
                outputs[s * (n_out + 1) + first + j] = sums[s * width + j]
        else:
            _activate_row(outputs + s * (n_out + 1) + first, sums + s * width, width, code)


cdef void _backward_block(
    const floating* weights, const floating* inputs, floating* grad, const LayerPass* layer, floating* scratch,
    const BatchScratch* parts, Py_ssize_t task,
) noexcept nogil:
    """One task of a layer's backward pass: the gradient of a block of its neurons (the first tasks, one per
    block), or the error signals of a block of rows for the layer below (``layer.side`` of the deltas holds the
    layer's, the other side receives the layer below's)."""
    cdef Py_ssize_t b = layer.rows
    cdef Py_ssize_t n_in = layer.n_in
    cdef Py_ssize_t n_out = layer.n_out
    cdef Py_ssize_t n_grad_blocks = _blocks(n_out, layer.size)
    cdef const floating* deltas = scratch + parts.deltas + layer.side * parts.side_size
    cdef const floating* deltas_t = scratch + parts.deltas_t + layer.side * parts.side_size
    cdef floating* below = scratch + parts.deltas + (1 - layer.side) * parts.side_size
    cdef floating* below_t = scratch + parts.deltas_t + (1 - layer.side) * parts.side_size
    cdef floating* errors = scratch + parts.products
    cdef Py_ssize_t first, width, s, j
    cdef floating value
    if task < n_grad_blocks:
        first = task * layer.size
        width = min(layer.size, n_out - first)
        _matmul(
            deltas_t + first * b, False, inputs, Product(rows=width, inner=b, cols=n_in + 1), grad + first * (n_in + 1)
        )
        return
    first = (task - n_grad_blocks) * layer.size
    width = min(layer.size, b - first)
    _matmul(
        deltas + first * n_out, False, weights, Product(rows=width, inner=n_out, cols=n_in + 1),
        errors + first * (n_in + 1),
    )
    for s in range(first, first + width):
        for j in range(n_in):
            value = errors[s * (n_in + 1) + j] * derivative(inputs[s * (n_in + 1) + j], layer.activation)
            below[s * n_in + j] = value
            below_t[j * b + s] = value


cdef floating _batch_gradient(
    const Network* net, const floating* weights, const Data* data, const Py_ssize_t* rows, Py_ssize_t b,
    floating* grad, floating* scratch, const BatchScratch* parts, int n_threads,
) noexcept nogil:
    """Mean weighted gradient over the ``b`` rows ``X[rows]`` into ``grad``; returns their weighted loss sum.

    ``scratch`` holds ``parts`` (``_batch_scratch``) for at least ``b`` rows, whose
    products ``n_threads`` threads share.
    """
    cdef const floating* X = <const floating*>data.X
    cdef const floating* Y = <const floating*>data.Y
    cdef const floating* sample_weight = <const floating*>data.sample_weight
    cdef floating* deltas = scratch + parts.deltas  # side 0
    cdef floating* deltas_t = scratch + parts.deltas_t
    cdef Py_ssize_t n_layers = net.n_layers
    cdef LayerPass layer
    cdef Py_ssize_t i, j, k, r, s, n_in, n_out, code, task, n_tasks
    cdef floating* inputs
    cdef floating* outputs = scratch  # the rows with their ones, then each layer's outputs in turn
    cdef floating total_loss = 0.0
    cdef floating row_loss, scale, delta
    layer.rows, layer.size, layer.side = b, _block_size(b), 0
    n_in = net.sizes[0]
    for s in range(b):
        for i in range(n_in):
            outputs[s * (n_in + 1) + i] = X[rows[s] * n_in + i]
        outputs[s * (n_in + 1) + n_in] = 1.0
    for k in range(n_layers):
        layer.n_in, layer.n_out, layer.activation = net.sizes[k], net.sizes[k + 1], net.activations[k]
        n_in, n_out, code = layer.n_in, layer.n_out, layer.activation
        inputs = outputs
        outputs = inputs + b * (n_in + 1)
        n_tasks = _blocks(n_out, layer.size)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            _forward_block(weights + net.w_off[k], inputs, outputs, &layer, scratch + parts.products, task)
        for s in range(b):
            if code == ACTIVATION_SOFTMAX:
                softmax(outputs + s * (n_out + 1), n_out)
            outputs[s * (n_out + 1) + n_out] = 1.0

    n_out, code = net.sizes[n_layers], net.activations[n_layers - 1]
    for s in range(b):
        r = rows[s]
        row_loss = 0.0
        scale = sample_weight[r] / <floating>b
        for j in range(n_out):
            row_loss += output_error(outputs[s * (n_out + 1) + j], Y[r * n_out + j], code, net.loss, &delta)
            deltas[s * n_out + j] = delta * scale
            deltas_t[j * b + s] = delta * scale
        total_loss += sample_weight[r] * row_loss
    for k in range(n_layers - 1, -1, -1):
        layer.n_in, layer.n_out = net.sizes[k], net.sizes[k + 1]
        layer.activation = net.activations[k - 1] if k > 0 else 0
        inputs = outputs - b * (layer.n_in + 1)
        n_tasks = _blocks(layer.n_out, layer.size) + (_blocks(b, layer.size) if k > 0 else 0)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            _backward_block(weights + net.w_off[k], inputs, grad + net.w_off[k], &layer, scratch, parts, task)
        layer.side = 1 - layer.side
        outputs = inputs
    return total_loss


cdef void _train_batches(
    const Network* net, floating* weights, floating* state, const Data* data, const Schedule* schedule,
    double* history, floating* scratch, int n_threads,
) noexcept nogil:
    """Mini-batch training for ``schedule.n_epochs`` epochs: one update per ``batch_size`` rows (the last may be
    short).  ``scratch`` holds ``_batch_scratch`` for ``batch_size`` rows, then a gradient."""
    cdef Py_ssize_t n_rows = schedule.n_visits
    cdef Py_ssize_t batch_size = min(schedule.batch_size, n_rows)
    cdef BatchScratch parts = _batch_scratch(net, batch_size)
    cdef floating* grad = scratch + parts.size
    cdef Py_ssize_t step = schedule.steps_done
    cdef Py_ssize_t epoch, start
    cdef const Py_ssize_t* order
    cdef floating epoch_loss
    for epoch in range(schedule.n_epochs):
        order = schedule.orders + (epoch % schedule.n_orders) * n_rows
        epoch_loss = 0.0
        start = 0
        while start < n_rows:
            epoch_loss += _batch_gradient(
                net, weights, data, order + start, min(batch_size, n_rows - start), grad, scratch, &parts, n_threads
            )
            step += 1
            optimizer_step(net, weights, grad, state, schedule, schedule.rates[epoch], step)
            start += batch_size
        history[epoch] = epoch_loss


def train_batches(
    net, floating[::1] weights, floating[::1] optimizer_state, data, schedule, double[::1] history, int n_threads
):
    """Mini-batch training for ``len(history)`` epochs: one update per ``schedule.batch_size`` rows (the last may
    be short), each batch's products shared by up to ``n_threads`` threads."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_of(schedule, history.shape[0])
    cdef Py_ssize_t rows = min(c_schedule.batch_size, c_schedule.n_visits)
    cdef Py_ssize_t size = _batch_scratch(&c_net, rows).size + weights.shape[0]
    cdef floating* scratch = <floating*>malloc(size * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_batches(
                &c_net, &weights[0], &optimizer_state[0], &c_data, &c_schedule, &history[0], scratch, n_threads
            )
    finally:
        free(scratch)


def batch_gradient(net, const floating[::1] weights, data, const Py_ssize_t[::1] rows, floating[::1] grad):
    """Mean weighted gradient of the loss over rows ``data.X[rows]``, into ``grad``; returns their loss sum."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef BatchScratch parts = _batch_scratch(&c_net, rows.shape[0])
    cdef floating* scratch = <floating*>malloc(parts.size * sizeof(floating))
    cdef floating total_loss
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            total_loss = _batch_gradient(
                &c_net, &weights[0], &c_data, &rows[0], rows.shape[0], &grad[0], scratch, &parts, 1
            )
    finally:
        free(scratch)
    return total_loss

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's mini-batch kernels: whole batches by matrix products (BLAS ``gemm``, scipy's ``cython_blas``).

Layer ``k``'s inputs form a ``(b, sizes[k] + 1)`` matrix whose last column is ones,
so ``inputs @ W.T`` includes the biases and ``deltas.T @ inputs`` is the layer's
whole gradient block, bias column included.  The products are cut into blocks of
``block_size(b)`` neurons or rows, which OpenMP threads share (``n_threads``; one
thread where the extension was built without OpenMP); each block is computed the
same way whichever thread takes it, so the result does not depend on the thread
count.  The ``gemm`` calls are the Numba backend's, block for block (a block of one
row or of one neuron too), so the two agree bit for bit.

Sparse rows (CSR) go through the same layers but the first, whose work follows the
rows' nonzeros: each nonzero adds its value times its input's weights to the row's
weighted sums, and its input's weights are the ones its gradient reaches.  For that
the first layer's weights are read input-major, ``(sizes[0] + 1, sizes[1])`` with the
biases last: a transposed copy, or the buffer's own block transposed in place while
``train_sparse`` runs (its optimizer's memory too, so every update stays elementwise).
The sparse kernels run on one thread, in the Numba backend's order of operations.
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastbp._kernels_cython.constants cimport (
    ACTIVATION_IDENTITY, ACTIVATION_LEAKY_RELU, ACTIVATION_RELU, ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX,
    ACTIVATION_TANH, LARGE_BLOCK, OPTIMIZER_SGD, PREDICT_CHUNK_ROWS, SMALL_BLOCK, compiled_constants,
)
from fastbp._kernels_cython.primitives cimport (
    Data, Network, Schedule, activation, bind_libm_exp, derivative, fastbp_flush_subnormals,
    fastbp_restore_subnormals, floating, network_of, optimizer_step, output_error, schedule_of, softmax,
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
    static int fastbp_processor_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl");
    }
    #else
    static int fastbp_processor_has_avx2(void) { return 0; }
    static int fastbp_processor_has_avx512(void) { return 0; }
    #endif
    """
    int fastbp_processor_has_avx2()
    int fastbp_processor_has_avx512()

#: Whether this processor (and its operating system) runs AVX2's instructions, for which the ``_avx2`` builds
#: of the modules are compiled, and AVX-512's (those of the ``_avx512`` builds: F, CD, BW, DQ and VL).
PROCESSOR_HAS_AVX2 = bool(fastbp_processor_has_avx2())
PROCESSOR_HAS_AVX512 = bool(fastbp_processor_has_avx512())


cdef struct SparseRows:
    # fastbp._backends.SparseRows: row r's nonzero values (of the weights' type, which each fused function casts
    # them to) are values[indptr[r]:indptr[r + 1]], in the columns indices[indptr[r]:indptr[r + 1]].
    const Py_ssize_t* indptr
    const Py_ssize_t* indices
    const void* values


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
    this computes ``c.T = op(b).T @ a.T``, as the Numba backend's ``gemm`` does.
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


cdef BatchScratch _batch_scratch(const Network* net, Py_ssize_t capacity, Py_ssize_t first) noexcept nogil:
    """The parts of one scratch block for batches of up to ``capacity`` rows whose matrix products start at layer
    ``first`` (1 for sparse rows, whose input matrix is never formed).

    It holds the ``(rows, n + 1)`` activation matrix of each layer's inputs from
    layer ``first`` on, then the output layer's, from its start (the last column
    ones); the ``products`` of a layer (its weighted sums, block after block of
    ``_block_size`` columns, or its errors); and two sides of ``deltas`` and of
    ``deltas_t`` (the same transposed), ``side_size`` apart: one for the layer in
    hand, one for the layer below.
    """
    cdef Py_ssize_t k
    cdef Py_ssize_t widest = 0
    cdef Py_ssize_t total = 0
    cdef BatchScratch parts
    for k in range(first, net.n_layers + 1):
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


cdef floating* _forward_layers(
    const Network* net, const floating* weights, floating* scratch, const BatchScratch* parts, Py_ssize_t b,
    Py_ssize_t first, int n_threads,
) noexcept nogil:
    """The forward pass of layers ``first ...`` over a batch of ``b`` rows, from layer ``first``'s inputs at the
    start of ``scratch`` (``parts``), each layer's outputs after its inputs, each layer's products shared by
    ``n_threads`` threads; returns the output layer's activation matrix."""
    cdef LayerPass layer
    cdef Py_ssize_t k, s, n_out, code, task, n_tasks
    cdef unsigned int kept
    cdef floating* inputs
    cdef floating* outputs = scratch
    layer.rows, layer.size, layer.side = b, _block_size(b), 0
    for k in range(first, net.n_layers):
        layer.n_in, layer.n_out, layer.activation = net.sizes[k], net.sizes[k + 1], net.activations[k]
        n_out, code = layer.n_out, layer.activation
        inputs = outputs
        outputs = inputs + b * (layer.n_in + 1)
        n_tasks = _blocks(n_out, layer.size)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            kept = fastbp_flush_subnormals()  # on each thread (see fastbp_flush_subnormals)
            _forward_block(weights + net.w_off[k], inputs, outputs, &layer, scratch + parts.products, task)
            fastbp_restore_subnormals(kept)
        for s in range(b):
            if code == ACTIVATION_SOFTMAX:
                softmax(outputs + s * (n_out + 1), n_out)
            outputs[s * (n_out + 1) + n_out] = 1.0
    return outputs


cdef floating _output_deltas(
    const Network* net, const Data* data, const Py_ssize_t* rows, Py_ssize_t b, const floating* outputs,
    floating* scratch, const BatchScratch* parts,
) noexcept nogil:
    """The output layer's error signals for the ``b`` rows ``rows`` (side 0 of the deltas), from its activation
    matrix ``outputs``, each times its row's weight over the batch's size; returns the rows' weighted loss sum."""
    cdef const floating* Y = <const floating*>data.Y
    cdef const floating* sample_weight = <const floating*>data.sample_weight
    cdef floating* deltas = scratch + parts.deltas
    cdef floating* deltas_t = scratch + parts.deltas_t
    cdef Py_ssize_t n_out = net.sizes[net.n_layers]
    cdef Py_ssize_t code = net.activations[net.n_layers - 1]
    cdef Py_ssize_t j, r, s
    cdef floating total_loss = 0.0
    cdef floating row_loss, scale, delta
    for s in range(b):
        r = rows[s]
        row_loss = 0.0
        scale = sample_weight[r] / <floating>b
        for j in range(n_out):
            row_loss += output_error(outputs[s * (n_out + 1) + j], Y[r * n_out + j], code, net.loss, &delta)
            deltas[s * n_out + j] = delta * scale
            deltas_t[j * b + s] = delta * scale
        total_loss += sample_weight[r] * row_loss
    return total_loss


cdef Py_ssize_t _backward_layers(
    const Network* net, const floating* weights, floating* grad, const floating* outputs, floating* scratch,
    const BatchScratch* parts, Py_ssize_t b, Py_ssize_t first, int n_threads,
) noexcept nogil:
    """The backward pass of layers ``first ...`` from the output's deltas (``outputs`` the output layer's
    activation matrix): their gradient blocks into ``grad``, and the error signals of each layer below down to
    layer ``first - 1``'s, each layer's products shared by ``n_threads`` threads; returns the side of the deltas
    that holds the lowest layer's."""
    cdef LayerPass layer
    cdef Py_ssize_t k, task, n_tasks
    cdef unsigned int kept
    cdef const floating* inputs
    layer.rows, layer.size, layer.side = b, _block_size(b), 0
    for k in range(net.n_layers - 1, first - 1, -1):
        layer.n_in, layer.n_out = net.sizes[k], net.sizes[k + 1]
        layer.activation = net.activations[k - 1] if k > 0 else 0
        inputs = outputs - b * (layer.n_in + 1)
        n_tasks = _blocks(layer.n_out, layer.size) + (_blocks(b, layer.size) if k > 0 else 0)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            kept = fastbp_flush_subnormals()
            _backward_block(weights + net.w_off[k], inputs, grad + net.w_off[k], &layer, scratch, parts, task)
            fastbp_restore_subnormals(kept)
        layer.side = 1 - layer.side
        outputs = inputs
    return layer.side


cdef floating _batch_gradient(
    const Network* net, const floating* weights, const Data* data, const Py_ssize_t* rows, Py_ssize_t b,
    floating* grad, floating* scratch, const BatchScratch* parts, int n_threads,
) noexcept nogil:
    """Mean weighted gradient over the ``b`` rows ``X[rows]`` into ``grad``; returns their weighted loss sum.

    ``scratch`` holds ``parts`` (``_batch_scratch`` from layer 0) for at least
    ``b`` rows, whose products ``n_threads`` threads share.
    """
    cdef const floating* X = <const floating*>data.X
    cdef Py_ssize_t n_in = net.sizes[0]
    cdef Py_ssize_t i, s
    cdef floating* outputs
    cdef floating total_loss
    for s in range(b):  # the input matrix: the rows with their ones
        for i in range(n_in):
            scratch[s * (n_in + 1) + i] = X[rows[s] * n_in + i]
        scratch[s * (n_in + 1) + n_in] = 1.0
    outputs = _forward_layers(net, weights, scratch, parts, b, 0, n_threads)
    total_loss = _output_deltas(net, data, rows, b, outputs, scratch, parts)
    _backward_layers(net, weights, grad, outputs, scratch, parts, b, 0, n_threads)
    return total_loss


cdef void _train_batches(
    const Network* net, floating* weights, floating* state, const Data* data, const Schedule* schedule,
    double* history, floating* scratch, int n_threads, floating* starts,
) noexcept nogil:
    """Mini-batch training for ``schedule.n_epochs`` epochs: one update per ``batch_size`` rows (the last may be
    short).  ``scratch`` holds ``_batch_scratch`` for ``batch_size`` rows from layer 0, then a gradient; each
    epoch's starting weights go to ``starts`` (one row of weights an epoch) unless it is NULL."""
    cdef Py_ssize_t n_rows = schedule.n_visits
    cdef Py_ssize_t batch_size = min(schedule.batch_size, n_rows)
    cdef BatchScratch parts = _batch_scratch(net, batch_size, 0)
    cdef floating* grad = scratch + parts.size
    cdef Py_ssize_t step = schedule.steps_done
    cdef Py_ssize_t n_weights = net.w_off[net.n_layers]
    cdef Py_ssize_t epoch, start
    cdef const Py_ssize_t* order
    cdef floating epoch_loss
    cdef unsigned int kept = fastbp_flush_subnormals()
    for epoch in range(schedule.n_epochs):
        if starts != NULL:
            memcpy(starts + epoch * n_weights, weights, n_weights * sizeof(floating))
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
    fastbp_restore_subnormals(kept)


def train_batches(
    net, floating[::1] weights, floating[::1] optimizer_state, data, schedule, double[::1] history, int n_threads,
    floating[:, ::1] starts,
):
    """Mini-batch training for ``len(history)`` epochs: one update per ``schedule.batch_size`` rows (the last may
    be short), each batch's products shared by up to ``n_threads`` threads; each epoch's starting weights into
    ``starts`` unless it has no rows."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_of(schedule, history.shape[0])
    cdef Py_ssize_t rows = min(c_schedule.batch_size, c_schedule.n_visits)
    cdef Py_ssize_t size = _batch_scratch(&c_net, rows, 0).size + weights.shape[0]
    cdef floating* scratch = <floating*>malloc(size * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_batches(
                &c_net, &weights[0], &optimizer_state[0], &c_data, &c_schedule, &history[0], scratch, n_threads,
                &starts[0, 0] if starts.shape[0] > 0 else NULL,
            )
    finally:
        free(scratch)


def batch_gradient(net, const floating[::1] weights, data, const Py_ssize_t[::1] rows, floating[::1] grad):
    """Mean weighted gradient of the loss over rows ``data.X[rows]``, into ``grad``; returns their loss sum."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef BatchScratch parts = _batch_scratch(&c_net, rows.shape[0], 0)
    cdef floating* scratch = <floating*>malloc(parts.size * sizeof(floating))
    cdef floating total_loss
    cdef unsigned int kept
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            kept = fastbp_flush_subnormals()
            total_loss = _batch_gradient(
                &c_net, &weights[0], &c_data, &rows[0], rows.shape[0], &grad[0], scratch, &parts, 1
            )
            fastbp_restore_subnormals(kept)
    finally:
        free(scratch)
    return total_loss


cdef SparseRows _sparse_rows_of(object X, const void* values) except *:
    """``X`` (a ``fastbp._backends.SparseRows``, which the contract checked) as the kernels' struct, ``values``
    its values' data: pointers into its arrays, which ``X`` keeps alive for the call."""
    cdef const Py_ssize_t[::1] indptr = X.indptr, indices = X.indices
    return SparseRows(indptr=&indptr[0], indices=&indices[0], values=values)


cdef Network _upper_layers(const Network* net) noexcept nogil:
    """The layers of ``net`` above the first, as a network of their own (whose weights' offsets still count from
    the start of the whole buffer)."""
    cdef Network upper = net[0]
    upper.n_layers -= 1
    upper.sizes += 1
    upper.w_off += 1
    upper.o_off += 1
    upper.activations += 1
    upper.kinds += 1
    upper.geometry += net.geometry_stride
    upper.dropout += 1
    return upper


cdef void _transposed(const floating* block, Py_ssize_t n_rows, Py_ssize_t n_cols, floating* out) noexcept nogil:
    """The ``(n_rows, n_cols)`` matrix ``block`` transposed into ``out``, ``(n_cols, n_rows)``."""
    cdef Py_ssize_t i, j
    for i in range(n_rows):
        for j in range(n_cols):
            out[j * n_rows + i] = block[i * n_cols + j]


cdef void _transpose_block(floating* block, Py_ssize_t n_rows, Py_ssize_t n_cols, floating* swap) noexcept nogil:
    """Rewrite the ``(n_rows, n_cols)`` matrix ``block`` as its ``(n_cols, n_rows)`` transpose, in place, through
    ``swap`` (room for the block)."""
    memcpy(swap, block, n_rows * n_cols * sizeof(floating))
    _transposed(swap, n_rows, n_cols, block)


cdef void _sparse_first_layer(
    const Network* net, const floating* first_layer, const SparseRows* X, const Py_ssize_t* rows, Py_ssize_t b,
    floating* outputs,
) noexcept nogil:
    """The first layer's outputs for the ``b`` sparse rows ``X[rows]`` into ``outputs`` (``(b, sizes[1] + 1)``),
    from its input-major weights ``first_layer``: the biases, plus each nonzero times its input's weights, then
    the activation."""
    cdef const floating* values = <const floating*>X.values
    cdef Py_ssize_t n_in = net.sizes[0]
    cdef Py_ssize_t units = net.sizes[1]
    cdef Py_ssize_t code = net.activations[0]
    cdef Py_ssize_t j, p, s
    cdef floating* row
    cdef const floating* weights
    cdef floating value
    for s in range(b):
        row = outputs + s * (units + 1)
        for j in range(units):
            row[j] = first_layer[n_in * units + j]
        for p in range(X.indptr[rows[s]], X.indptr[rows[s] + 1]):
            weights, value = first_layer + X.indices[p] * units, values[p]
            for j in range(units):
                row[j] += value * weights[j]
        if code == ACTIVATION_SOFTMAX:
            softmax(row, units)
        else:
            _activate_row(row, row, units, code)
        row[units] = 1.0


cdef floating* _sparse_forward(
    const Network* net, const floating* first_layer, const floating* weights, const SparseRows* X,
    const Py_ssize_t* rows, Py_ssize_t b, floating* scratch, const BatchScratch* parts,
) noexcept nogil:
    """Every layer's outputs for the ``b`` sparse rows ``X[rows]`` (the first layer's weights input-major), in
    ``scratch`` (``parts``, from layer 1); returns the output layer's activation matrix."""
    _sparse_first_layer(net, first_layer, X, rows, b, scratch)
    return _forward_layers(net, weights, scratch, parts, b, 1, 1)


cdef floating _sparse_gradient(
    const Network* net, const floating* first_layer, const floating* weights, const Data* data,
    const SparseRows* X, const Py_ssize_t* rows, Py_ssize_t b, floating* grad, floating* scratch,
    const BatchScratch* parts, floating** first_deltas,
) noexcept nogil:
    """``_batch_gradient`` for the ``b`` sparse rows ``X[rows]``, but the first layer's gradient: the other
    layers' blocks go into ``grad``, ``first_deltas`` is pointed at the first layer's error signals
    (``(b, sizes[1])``); returns the rows' weighted loss sum."""
    cdef floating* outputs = _sparse_forward(net, first_layer, weights, X, rows, b, scratch, parts)
    cdef floating total_loss = _output_deltas(net, data, rows, b, outputs, scratch, parts)
    cdef Py_ssize_t side = _backward_layers(net, weights, grad, outputs, scratch, parts, b, 1, 1)
    first_deltas[0] = scratch + parts.deltas + side * parts.side_size
    return total_loss


cdef void _scatter_first(
    const Network* net, const SparseRows* X, const Py_ssize_t* rows, Py_ssize_t b, const floating* deltas,
    floating* first, floating factor,
) noexcept nogil:
    """Add ``factor`` times the first layer's gradient terms for the ``b`` sparse rows ``X[rows]`` into ``first``
    (input-major): each nonzero's value times the layer's error signals ``deltas`` into its input's row, the
    signals themselves into the biases' row.  Into zeros with factor 1 it is the gradient; into the weights with
    factor ``-rate``, plain SGD's step, which moves only the rows' inputs' weights and the biases."""
    cdef const floating* values = <const floating*>X.values
    cdef Py_ssize_t n_in = net.sizes[0]
    cdef Py_ssize_t units = net.sizes[1]
    cdef Py_ssize_t j, p, s
    cdef const floating* row_deltas
    cdef floating* target
    cdef floating value
    for s in range(b):
        row_deltas = deltas + s * units
        for p in range(X.indptr[rows[s]], X.indptr[rows[s] + 1]):
            target, value = first + X.indices[p] * units, values[p]
            for j in range(units):
                target[j] += factor * (row_deltas[j] * value)
        for j in range(units):
            first[n_in * units + j] += factor * row_deltas[j]


cdef void _first_gradient(
    const Network* net, const SparseRows* X, const Py_ssize_t* rows, Py_ssize_t b, const floating* deltas,
    floating* first_grad,
) noexcept nogil:
    """The first layer's gradient for the ``b`` sparse rows ``X[rows]``, input-major into ``first_grad``."""
    cdef Py_ssize_t p
    for p in range((net.sizes[0] + 1) * net.sizes[1]):
        first_grad[p] = 0.0
    _scatter_first(net, X, rows, b, deltas, first_grad, 1.0)


cdef void _add_decay(const Network* net, const floating* weights, floating* grad, floating l2) noexcept nogil:
    """Add ``l2`` times each weight, but the biases, to its gradient, the first layer's input-major (its biases
    its last row)."""
    cdef Py_ssize_t i, j, k, p, n_in, n_out, neuron
    for p in range(net.sizes[0] * net.sizes[1]):
        grad[p] += l2 * weights[p]
    for k in range(1, net.n_layers):
        n_in, n_out = net.sizes[k], net.sizes[k + 1]
        for j in range(n_out):
            neuron = net.w_off[k] + j * (n_in + 1)
            for i in range(n_in):
                grad[neuron + i] += l2 * weights[neuron + i]


cdef void _train_sparse(
    const Network* net, floating* weights, floating* state, const Data* data, const SparseRows* X,
    const Schedule* schedule, double* history, floating* scratch,
) noexcept nogil:
    """Training on the sparse rows ``X`` for ``schedule.n_epochs`` epochs: one update per ``batch_size`` rows,
    the first layer's weights (and, but for plain SGD, its optimizer's memory) input-major meanwhile.

    Plain SGD without L2 moves the first layer's weights itself and steps the
    layers above; the other optimizers get the whole gradient, L2 added here, and
    step the transposed first layer elementwise as any other.  ``scratch`` holds
    ``_batch_scratch`` for ``batch_size`` rows from layer 1, then a gradient, then
    room for the first layer's weights.
    """
    cdef Py_ssize_t n_rows = schedule.n_visits
    cdef Py_ssize_t batch_size = min(schedule.batch_size, n_rows)
    cdef BatchScratch parts = _batch_scratch(net, batch_size, 1)
    cdef Py_ssize_t n_w = net.w_off[net.n_layers]
    cdef Py_ssize_t n_in = net.sizes[0]
    cdef Py_ssize_t units = net.sizes[1]
    cdef floating* grad = scratch + parts.size
    cdef floating* swap = grad + n_w
    cdef bint plain = schedule.optimizer == OPTIMIZER_SGD and schedule.l2 == 0.0
    cdef bint stateful = schedule.optimizer != OPTIMIZER_SGD
    cdef Network upper = _upper_layers(net)
    cdef Schedule undecayed = schedule[0]
    cdef Py_ssize_t step = schedule.steps_done
    cdef Py_ssize_t b, epoch, start
    cdef const Py_ssize_t* order
    cdef floating* deltas
    cdef floating epoch_loss
    cdef double rate
    undecayed.l2 = 0.0
    _transpose_block(weights, units, n_in + 1, swap)
    if stateful:
        _transpose_block(state, units, n_in + 1, swap)
        _transpose_block(state + n_w, units, n_in + 1, swap)
    for epoch in range(schedule.n_epochs):
        order = schedule.orders + (epoch % schedule.n_orders) * n_rows
        rate = schedule.rates[epoch]
        epoch_loss = 0.0
        start = 0
        while start < n_rows:
            b = min(batch_size, n_rows - start)
            epoch_loss += _sparse_gradient(
                net, weights, weights, data, X, order + start, b, grad, scratch, &parts, &deltas
            )
            step += 1
            if plain:
                _scatter_first(net, X, order + start, b, deltas, weights, -<floating>rate)
                optimizer_step(&upper, weights, grad, state, schedule, rate, step)
            else:
                _first_gradient(net, X, order + start, b, deltas, grad)
                if schedule.l2 != 0.0:
                    _add_decay(net, weights, grad, <floating>schedule.l2)
                optimizer_step(net, weights, grad, state, &undecayed, rate, step)
            start += batch_size
        history[epoch] = epoch_loss
    _transpose_block(weights, n_in + 1, units, swap)
    if stateful:
        _transpose_block(state, n_in + 1, units, swap)
        _transpose_block(state + n_w, n_in + 1, units, swap)


cdef void _predict_sparse(
    const Network* net, const floating* weights, const SparseRows* X, floating* out, Py_ssize_t n_rows,
    Py_ssize_t* rows, floating* scratch,
) noexcept nogil:
    """The output layer's values for the ``n_rows`` sparse rows of ``X`` into ``out``, as the Numba backend's
    ``predict_sparse``: whole chunks of ``PREDICT_CHUNK_ROWS`` rows above the first layer, the last one filled up
    with copies of its last row's first-layer values.  ``rows`` has room for a chunk's row numbers, ``scratch``
    holds ``_batch_scratch`` for a chunk from layer 1, then room for the first layer's weights."""
    cdef Py_ssize_t chunk = PREDICT_CHUNK_ROWS
    cdef BatchScratch parts = _batch_scratch(net, chunk, 1)
    cdef Py_ssize_t n_in = net.sizes[0]
    cdef Py_ssize_t units = net.sizes[1]
    cdef Py_ssize_t n_out = net.sizes[net.n_layers]
    cdef floating* first_layer = scratch + parts.size
    cdef floating* values = scratch  # the first layer's values, the products' inputs from layer 1
    cdef const floating* outputs
    cdef Py_ssize_t real, j, s, start
    _transposed(weights, units, n_in + 1, first_layer)
    start = 0
    while start < n_rows:
        real = min(chunk, n_rows - start)
        for s in range(real):
            rows[s] = start + s
        _sparse_first_layer(net, first_layer, X, rows, real, values)
        for s in range(real, chunk):
            memcpy(values + s * (units + 1), values + (real - 1) * (units + 1), (units + 1) * sizeof(floating))
        outputs = _forward_layers(net, weights, scratch, &parts, chunk, 1, 1)
        for s in range(real):
            for j in range(n_out):
                out[(start + s) * n_out + j] = outputs[s * (n_out + 1) + j]
        start += chunk


def train_sparse(net, floating[::1] weights, floating[::1] optimizer_state, data, schedule, double[::1] history):
    """Training on sparse rows (``data.X`` a ``SparseRows``) for ``len(history)`` epochs: one update per
    ``schedule.batch_size`` rows, on one thread."""
    cdef Network c_net = network_of(net)
    cdef const floating[::1] values = data.X.values
    cdef SparseRows c_X = _sparse_rows_of(data.X, &values[0])
    cdef const floating[:, ::1] Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=NULL, Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_of(schedule, history.shape[0])
    cdef Py_ssize_t rows = min(c_schedule.batch_size, c_schedule.n_visits)
    cdef Py_ssize_t first_block = (c_net.sizes[0] + 1) * c_net.sizes[1]
    cdef Py_ssize_t size = _batch_scratch(&c_net, rows, 1).size + weights.shape[0] + first_block
    cdef floating* scratch = <floating*>malloc(size * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_sparse(
                &c_net, &weights[0], &optimizer_state[0], &c_data, &c_X, &c_schedule, &history[0], scratch
            )
    finally:
        free(scratch)


def sparse_gradient(net, const floating[::1] weights, data, const Py_ssize_t[::1] rows, floating[::1] grad):
    """``batch_gradient`` for sparse rows (``data.X`` a ``SparseRows``)."""
    cdef Network c_net = network_of(net)
    cdef const floating[::1] values = data.X.values
    cdef SparseRows c_X = _sparse_rows_of(data.X, &values[0])
    cdef const floating[:, ::1] Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=NULL, Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Py_ssize_t n_in = c_net.sizes[0]
    cdef Py_ssize_t units = c_net.sizes[1]
    cdef BatchScratch parts = _batch_scratch(&c_net, rows.shape[0], 1)
    cdef floating* scratch = <floating*>malloc((parts.size + 2 * (n_in + 1) * units) * sizeof(floating))
    cdef floating* first_layer
    cdef floating* first_grad
    cdef floating* deltas
    cdef floating total_loss
    if scratch == NULL:
        raise MemoryError()
    first_layer = scratch + parts.size
    first_grad = first_layer + (n_in + 1) * units
    try:
        with nogil:
            _transposed(&weights[0], units, n_in + 1, first_layer)
            total_loss = _sparse_gradient(
                &c_net, first_layer, &weights[0], &c_data, &c_X, &rows[0], rows.shape[0], &grad[0], scratch,
                &parts, &deltas,
            )
            _first_gradient(&c_net, &c_X, &rows[0], rows.shape[0], deltas, first_grad)
            _transposed(first_grad, n_in + 1, units, &grad[0])
    finally:
        free(scratch)
    return total_loss


def predict_sparse(net, const floating[::1] weights, X, floating[:, ::1] out):
    """The output layer's values for every sparse row of ``X`` (a ``SparseRows``), into ``out``."""
    cdef Network c_net = network_of(net)
    cdef const floating[::1] values = X.values
    cdef SparseRows c_X = _sparse_rows_of(X, &values[0])
    cdef Py_ssize_t n_rows = out.shape[0]
    cdef Py_ssize_t chunk = PREDICT_CHUNK_ROWS
    cdef Py_ssize_t size = _batch_scratch(&c_net, chunk, 1).size + (c_net.sizes[0] + 1) * c_net.sizes[1]
    cdef floating* scratch
    cdef Py_ssize_t* rows
    if n_rows == 0:
        return
    scratch = <floating*>malloc(size * sizeof(floating))
    rows = <Py_ssize_t*>malloc(chunk * sizeof(Py_ssize_t))
    try:
        if scratch == NULL or rows == NULL:
            raise MemoryError()
        with nogil:
            _predict_sparse(&c_net, &weights[0], &c_X, &out[0, 0], n_rows, rows, scratch)
    finally:
        free(rows)
        free(scratch)

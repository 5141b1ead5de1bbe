# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's per-row kernels: the tutorial's steps, online training and prediction.

The same kernels and arithmetic as :mod:`fastbp._kernels_numba.online`, operation
by operation: bias first, then the inputs in ascending order (or the fast mode's
``LANES`` partial sums, here eight accumulators that gcc vectorises), with the same
activations and exp.  The work is done by ``nogil`` helpers over raw pointers; the
kernels only unpack their bundles, allocate their scratch (one block per call) and
release the GIL, so trainings in separate threads run in parallel.
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastbp._kernels_cython.constants cimport (
    ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX, LANES, OPTIMIZER_SGD, PREDICT_ROWS, compiled_constants,
)
from fastbp._kernels_cython.primitives cimport (
    Data, Layer, Network, Schedule, activation, bind_libm_exp, derivative, fast_sigmoid, floating, network_of,
    nth_layer, optimizer_step, output_error, schedule_of, sigmoid, softmax,
)

from fastbp._constants import check_compiled
from fastbp._libm import libm_address

check_compiled(compiled_constants(), __name__)
bind_libm_exp(libm_address("exp"))


cdef inline floating weighted_sum(
    const floating* neuron, Py_ssize_t n_in, const floating* inputs, bint exact
) noexcept nogil:
    """The bias ``neuron[n_in]`` plus the inputs times their weights, as the Numba backend's ``weighted_sum``.

    Exact: bias first, then each input in order.  Fast: eight interleaved partial
    sums (``i % LANES``) combined pairwise, then the bias and the remaining inputs in
    order; below ``LANES`` inputs both orders are the same.
    """
    cdef Py_ssize_t i, n8
    cdef floating total, s0, s1, s2, s3, s4, s5, s6, s7
    if exact or n_in < LANES:
        total = neuron[n_in]
        for i in range(n_in):
            total += neuron[i] * inputs[i]
        return total
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
    n8 = n_in - n_in % LANES
    for i in range(0, n8, 8):  # LANES, a literal: Cython makes a C loop of a range only with a constant step
        s0 += neuron[i] * inputs[i]
        s1 += neuron[i + 1] * inputs[i + 1]
        s2 += neuron[i + 2] * inputs[i + 2]
        s3 += neuron[i + 3] * inputs[i + 3]
        s4 += neuron[i + 4] * inputs[i + 4]
        s5 += neuron[i + 5] * inputs[i + 5]
        s6 += neuron[i + 6] * inputs[i + 6]
        s7 += neuron[i + 7] * inputs[i + 7]
    total = neuron[n_in] + (((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)))
    for i in range(n8, n_in):
        total += neuron[i] * inputs[i]
    return total


cdef extern from *:
    """
    /* The fast mode's partial sums of four rows: lane l of row r adds neuron[i] * inputs[r * stride + i] for
       i % 8 == l, i < n8 (a multiple of 8), in order, from 0, into lanes[r * 8 + l].  GCC's and clang's vector
       extensions keep each row's eight sums in vectors of the build's width (two per row for float64 with AVX2;
       the baseline build's float64 sums take all sixteen of its registers, and a few spill) and load each weight
       once for the four rows; gcc kept the plain loop's 32 sums in memory.  Other compilers take the plain loop,
       the same arithmetic. */
    #if defined(__GNUC__) || defined(__clang__)
    #if defined(__AVX__)
    #define FASTBP_ROW_VECTOR_BYTES 32
    #else
    #define FASTBP_ROW_VECTOR_BYTES 16
    #endif
    #define FASTBP_LANE_SUMS_OF_ROWS(NAME, T)                                                                          \
    static inline void NAME(const T* neuron, const T* inputs, Py_ssize_t stride, Py_ssize_t n8, T* lanes) {           \
        typedef T V __attribute__((vector_size(FASTBP_ROW_VECTOR_BYTES), aligned(sizeof(T)), may_alias));             \
        enum { N = 8 * sizeof(T) / FASTBP_ROW_VECTOR_BYTES };  /* vectors a row's eight sums take */                    \
        V a[N], b[N], c[N], d[N];                                                                                      \
        int v;                                                                                                         \
        for (v = 0; v < N; v++) a[v] = b[v] = c[v] = d[v] = (V){0};                                                    \
        for (Py_ssize_t i = 0; i < n8; i += 8) {                                                                       \
            const V* w = (const V*)(neuron + i);                                                                       \
            const V* x0 = (const V*)(inputs + i);                                                                      \
            const V* x1 = (const V*)(inputs + stride + i);                                                             \
            const V* x2 = (const V*)(inputs + 2 * stride + i);                                                         \
            const V* x3 = (const V*)(inputs + 3 * stride + i);                                                         \
            for (v = 0; v < N; v++) {                                                                                  \
                a[v] = a[v] + w[v] * x0[v];                                                                            \
                b[v] = b[v] + w[v] * x1[v];                                                                            \
                c[v] = c[v] + w[v] * x2[v];                                                                            \
                d[v] = d[v] + w[v] * x3[v];                                                                            \
            }                                                                                                          \
        }                                                                                                              \
        V* to = (V*)lanes;                                                                                             \
        for (v = 0; v < N; v++) {                                                                                      \
            to[v] = a[v]; to[N + v] = b[v]; to[2 * N + v] = c[v]; to[3 * N + v] = d[v];                                \
        }                                                                                                              \
    }
    #else
    #define FASTBP_LANE_SUMS_OF_ROWS(NAME, T)                                                                          \
    static void NAME(const T* neuron, const T* inputs, Py_ssize_t stride, Py_ssize_t n8, T* lanes) {                  \
        Py_ssize_t i, r;                                                                                               \
        for (i = 0; i < 32; i++) lanes[i] = 0;                                                                         \
        for (i = 0; i < n8; i++)                                                                                       \
            for (r = 0; r < 4; r++) lanes[r * 8 + i % 8] = lanes[r * 8 + i % 8] + neuron[i] * inputs[r * stride + i]; \
    }
    #endif
    FASTBP_LANE_SUMS_OF_ROWS(fastbp_lane_sums_of_rows_float, float)
    FASTBP_LANE_SUMS_OF_ROWS(fastbp_lane_sums_of_rows_double, double)
    """
    void fastbp_lane_sums_of_rows_float(
        const float* neuron, const float* inputs, Py_ssize_t stride, Py_ssize_t n8, float* lanes
    ) noexcept nogil
    void fastbp_lane_sums_of_rows_double(
        const double* neuron, const double* inputs, Py_ssize_t stride, Py_ssize_t n8, double* lanes
    ) noexcept nogil

if PREDICT_ROWS != 4 or LANES != 8:
    raise ImportError(f"{__name__}'s partial sums of rows are written for 4 rows of 8 lanes")


cdef inline void weighted_sums_of_rows(
    const floating* neuron, Py_ssize_t n_in, const floating* inputs, Py_ssize_t stride, floating* sums,
    Py_ssize_t sums_stride, Py_ssize_t n_real, bint exact
) noexcept nogil:
    """``weighted_sum`` for ``PREDICT_ROWS`` rows, ``inputs + r * stride``, into ``sums[r * sums_stride]``, as the
    Numba backend's ``weighted_sums_of_rows``: each row's sum in ``weighted_sum``'s order (the same bits); in
    the fast mode the rows' side by side, so that one row's additions run while another's wait, each weight
    loaded once for all; else one row after the other, the first ``n_real`` alone (the others fill a group up)."""
    cdef Py_ssize_t i, r, n8
    cdef floating total
    cdef floating s[PREDICT_ROWS][LANES]
    if exact or n_in < LANES:  # one sum: nothing to share
        for r in range(n_real):
            sums[r * sums_stride] = weighted_sum(neuron, n_in, inputs + r * stride, exact)
        return
    n8 = n_in - n_in % LANES
    if floating is float:
        fastbp_lane_sums_of_rows_float(neuron, inputs, stride, n8, &s[0][0])
    else:
        fastbp_lane_sums_of_rows_double(neuron, inputs, stride, n8, &s[0][0])
    for r in range(PREDICT_ROWS):
        total = neuron[n_in] + (((s[r][0] + s[r][4]) + (s[r][2] + s[r][6])) + ((s[r][1] + s[r][5]) + (s[r][3] + s[r][7])))
        for i in range(n8, n_in):
            total += neuron[i] * inputs[r * stride + i]
        sums[r * sums_stride] = total


cdef inline void activate(floating* outputs, Layer layer, bint exact) noexcept nogil:
    """Replace a layer's weighted sums ``outputs[:layer.n_out]`` by its outputs, as the Numba backend's ``activate``.

    In a loop of its own after the sums: the fast sigmoid's loop vectorises with
    its exp, and the sums' loop runs without calls to libm's exp, around which
    every float register must be saved.
    """
    cdef Py_ssize_t j
    cdef Py_ssize_t code = layer.activation
    if code == ACTIVATION_SOFTMAX:
        softmax(outputs, layer.n_out)
    elif code == ACTIVATION_SIGMOID and not exact:
        for j in range(layer.n_out):
            outputs[j] = fast_sigmoid(outputs[j])
    elif code == ACTIVATION_SIGMOID:
        for j in range(layer.n_out):
            outputs[j] = sigmoid(outputs[j])
    else:
        for j in range(layer.n_out):
            outputs[j] = activation(outputs[j], code)


cdef inline void _activate_layer(
    const floating* block, Layer layer, const floating* inputs, floating* outputs, bint exact
) noexcept nogil:
    """The outputs ``(n_out,)`` of the layer whose weights are ``block``, for ``inputs`` ``(n_in,)``."""
    cdef Py_ssize_t j
    for j in range(layer.n_out):
        outputs[j] = weighted_sum(block + j * (layer.n_in + 1), layer.n_in, inputs, exact)
    activate(outputs, layer, exact)


cdef inline void _forward(
    const Network* net, const floating* weights, floating* outputs, const floating* x
) noexcept nogil:
    """Store every neuron's output for input row ``x`` in ``outputs``."""
    cdef Py_ssize_t k
    _activate_layer(weights + net.w_off[0], nth_layer(net, 0), x, outputs + net.o_off[0], net.exact)
    for k in range(1, net.n_layers):
        _activate_layer(
            weights + net.w_off[k], nth_layer(net, k), outputs + net.o_off[k - 1], outputs + net.o_off[k], net.exact
        )


cdef inline floating _backward(
    const Network* net, const floating* weights, const floating* outputs, floating* deltas, const floating* expected
) noexcept nogil:
    """Store every neuron's error signal in ``deltas``; return the row's loss."""
    cdef Py_ssize_t last = net.n_layers - 1
    cdef Py_ssize_t j, k, m, stride
    cdef Py_ssize_t own = net.o_off[last]
    cdef const floating* block
    cdef const floating* downstream
    cdef const floating* weight
    cdef floating error
    cdef floating row_loss = 0.0
    for j in range(net.sizes[last + 1]):
        row_loss += output_error(
            outputs[own + j], expected[j], net.activations[last], net.loss, &deltas[own + j]
        )
    for k in range(last - 1, -1, -1):
        block = weights + net.w_off[k + 1]
        downstream = deltas + net.o_off[k + 1]
        own = net.o_off[k]
        stride = net.sizes[k + 1] + 1
        for j in range(net.sizes[k + 1]):
            error = 0.0
            # A pointer down column j, one row of block per step: gcc keeps it in a register, where from the
            # index m * stride + j it rebuilt every address from values it had saved on the stack.
            weight = block + j
            for m in range(net.sizes[k + 2]):
                error += weight[0] * downstream[m]
                weight += stride
            deltas[own + j] = error * derivative(outputs[own + j], net.activations[k])
    return row_loss


cdef inline void _update_neuron(
    floating* neuron, Py_ssize_t n_in, floating step, const floating* inputs, floating decay
) noexcept nogil:
    """SGD step for one neuron: ``w -= step * input + decay * w``, its bias ``-= step`` undecayed."""
    cdef Py_ssize_t i
    if decay == 0:  # a loop of its own: without the decay term it is faster on wide layers
        for i in range(n_in):
            neuron[i] -= step * inputs[i]
    else:
        for i in range(n_in):
            neuron[i] -= step * inputs[i] + decay * neuron[i]
    neuron[n_in] -= step


cdef inline void _update_layer(
    floating* block, Layer layer, const floating* inputs, floating l_rate, const floating* deltas, floating decay
) noexcept nogil:
    """SGD step for one layer, each neuron's step ``l_rate * delta``."""
    cdef Py_ssize_t j
    for j in range(layer.n_out):
        _update_neuron(block + j * (layer.n_in + 1), layer.n_in, l_rate * deltas[j], inputs, decay)


cdef inline void _sgd_step(
    const Network* net, floating* weights, const floating* x, const floating* outputs, const floating* deltas,
    floating l_rate, floating decay,
) noexcept nogil:
    """The tutorial's update for input row ``x``, first layer first, plus L2 decay."""
    cdef Py_ssize_t k
    _update_layer(weights + net.w_off[0], nth_layer(net, 0), x, l_rate, deltas + net.o_off[0], decay)
    for k in range(1, net.n_layers):
        _update_layer(
            weights + net.w_off[k], nth_layer(net, k), outputs + net.o_off[k - 1], l_rate, deltas + net.o_off[k],
            decay,
        )


cdef inline floating _stepped_sum(
    floating* neuron, Py_ssize_t n_in, const floating* inputs, floating step, const floating* next_inputs
) noexcept nogil:
    """``_update_neuron`` without decay fused with the exact ``weighted_sum`` of the next row's ``next_inputs``.

    One pass over the weights, each updated and then multiplied: the two loops'
    operations in the same order, with half the loads.
    """
    cdef Py_ssize_t i
    cdef floating weight
    cdef floating total = neuron[n_in] - step
    neuron[n_in] = total
    for i in range(n_in):
        weight = neuron[i] - step * inputs[i]
        neuron[i] = weight
        total += weight * next_inputs[i]
    return total


cdef inline floating _stepped_partial_sums(
    floating* neuron, Py_ssize_t n_in, const floating* inputs, floating step, const floating* next_inputs
) noexcept nogil:
    """``_stepped_sum`` with the fast mode's eight partial sums (``n_in >= LANES``), in ``weighted_sum``'s order.

    gcc runs the eight accumulators as vector code; the Numba backend writes them as
    one LLVM vector of eight (its ``stepped_lane_sums``), with the same bits.
    """
    cdef Py_ssize_t i
    cdef Py_ssize_t n8 = n_in - n_in % LANES
    cdef floating total, s0, s1, s2, s3, s4, s5, s6, s7, w0, w1, w2, w3, w4, w5, w6, w7
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
    for i in range(0, n8, 8):  # LANES (see weighted_sum)
        w0 = neuron[i] - step * inputs[i]
        w1 = neuron[i + 1] - step * inputs[i + 1]
        w2 = neuron[i + 2] - step * inputs[i + 2]
        w3 = neuron[i + 3] - step * inputs[i + 3]
        w4 = neuron[i + 4] - step * inputs[i + 4]
        w5 = neuron[i + 5] - step * inputs[i + 5]
        w6 = neuron[i + 6] - step * inputs[i + 6]
        w7 = neuron[i + 7] - step * inputs[i + 7]
        neuron[i], neuron[i + 1], neuron[i + 2], neuron[i + 3] = w0, w1, w2, w3
        neuron[i + 4], neuron[i + 5], neuron[i + 6], neuron[i + 7] = w4, w5, w6, w7
        s0 += w0 * next_inputs[i]
        s1 += w1 * next_inputs[i + 1]
        s2 += w2 * next_inputs[i + 2]
        s3 += w3 * next_inputs[i + 3]
        s4 += w4 * next_inputs[i + 4]
        s5 += w5 * next_inputs[i + 5]
        s6 += w6 * next_inputs[i + 6]
        s7 += w7 * next_inputs[i + 7]
    total = neuron[n_in] - step
    neuron[n_in] = total
    total = total + (((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)))
    for i in range(n8, n_in):
        w0 = neuron[i] - step * inputs[i]
        neuron[i] = w0
        total += w0 * next_inputs[i]
    return total


cdef inline void _step_layer(
    floating* block, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t code, const floating* inputs,
    const floating* next_inputs, const floating* deltas, floating* next_outputs, floating l_rate, floating decay,
    bint exact,
) noexcept nogil:
    """``_update_layer`` for the layer whose weights are ``block`` and this row's ``inputs``, each neuron then
    activated for the next row's ``next_inputs``.

    ``deltas`` and ``next_outputs`` are the layer's own.  Without decay, each
    neuron's weights are updated and weighed in one pass (``_stepped_sum``, or
    ``_stepped_partial_sums`` in the fast mode's order).  The layer's shape comes as
    scalars, not as a ``Layer``: gcc keeps this function out of line, where a struct
    argument would go through the stack on every call.  For the same reason the
    two inputs, which every neuron's loop reads, come before ``deltas`` and
    ``next_outputs``: x86-64 passes the first six integer arguments in registers.
    """
    cdef Layer layer = Layer(n_in=n_in, n_out=n_out, activation=code)
    cdef floating* neuron
    cdef Py_ssize_t j
    if decay == 0 and (exact or n_in < LANES):  # the exact sum (see weighted_sum)
        for j in range(layer.n_out):
            next_outputs[j] = _stepped_sum(block + j * (n_in + 1), n_in, inputs, l_rate * deltas[j], next_inputs)
    elif decay == 0:
        for j in range(layer.n_out):
            next_outputs[j] = _stepped_partial_sums(
                block + j * (n_in + 1), n_in, inputs, l_rate * deltas[j], next_inputs
            )
    else:
        for j in range(layer.n_out):
            neuron = block + j * (n_in + 1)
            _update_neuron(neuron, n_in, l_rate * deltas[j], inputs, decay)
            next_outputs[j] = weighted_sum(neuron, n_in, next_inputs, exact)
    activate(next_outputs, layer, exact)


cdef inline void _sgd_step_ahead(
    const Network* net, floating* weights, const floating* x, const floating* outputs, const floating* deltas,
    floating l_rate, floating decay, const floating* next_x, floating* next_outputs,
) noexcept nogil:
    """``_sgd_step`` for row ``x`` fused with ``_forward`` for row ``next_x``, whose outputs go to ``next_outputs``.

    Layer by layer, first to last: each neuron's weights are updated with this
    row's inputs (``x`` or ``outputs``), then weigh the next row's, which the layer
    before has just put in ``next_outputs``.  Every weight is updated before it is
    used, so the result is that of ``_sgd_step`` and then ``_forward``, bit for bit.
    """
    cdef Py_ssize_t k
    _step_layer(
        weights + net.w_off[0], net.sizes[0], net.sizes[1], net.activations[0], x, next_x, deltas + net.o_off[0],
        next_outputs + net.o_off[0], l_rate, decay, net.exact,
    )
    for k in range(1, net.n_layers):
        _step_layer(
            weights + net.w_off[k], net.sizes[k], net.sizes[k + 1], net.activations[k], outputs + net.o_off[k - 1],
            next_outputs + net.o_off[k - 1], deltas + net.o_off[k], next_outputs + net.o_off[k], l_rate, decay,
            net.exact,
        )


cdef inline void _row_gradient(
    const Network* net, const floating* x, const floating* outputs, const floating* deltas, floating weight,
    floating* grad,
) noexcept nogil:
    """The gradient of one row's loss, times ``weight``, written into ``grad``."""
    cdef Py_ssize_t i, j, k, n_in
    cdef const floating* inputs
    cdef floating* neuron
    cdef floating delta
    for k in range(net.n_layers):
        n_in = net.sizes[k]
        inputs = x if k == 0 else outputs + net.o_off[k - 1]
        for j in range(net.sizes[k + 1]):
            neuron = grad + net.w_off[k] + j * (n_in + 1)
            delta = weight * deltas[net.o_off[k] + j]
            for i in range(n_in):
                neuron[i] = delta * inputs[i]
            neuron[n_in] = delta


cdef inline Py_ssize_t _online_scratch(const Network* net) noexcept nogil:
    """The values ``_train_online``'s scratch holds: each neuron's delta, its outputs for this row and the next,
    and a gradient."""
    return 3 * net.o_off[net.n_layers] + net.w_off[net.n_layers]


cdef void _train_online(
    const Network* net, floating* weights, floating* state, const Data* data, const Schedule* schedule,
    double* history, floating* scratch,
) noexcept nogil:
    """Online training (batch size 1) for ``schedule.n_epochs`` epochs; plain SGD is the tutorial's update.

    ``scratch`` holds ``_online_scratch(net)`` values.  As the Numba backend's:
    plain SGD runs each row's update fused with the next row's forward pass, whose
    outputs go to ``next_outputs`` while this row's are still read (the two buffers
    swap roles every row); the other optimizers run the forward pass, the backward
    pass and the update one after the other.
    """
    cdef Py_ssize_t n_neurons = net.o_off[net.n_layers]
    # The deltas first, at the block's own address: at an offset, gcc rebuilt their addresses in the backward
    # pass's loops from several values it had saved on the stack.
    cdef floating* deltas = scratch
    cdef floating* outputs = deltas + n_neurons
    cdef floating* next_outputs = outputs + n_neurons
    cdef floating* grad = next_outputs + n_neurons
    cdef const floating* X = <const floating*>data.X
    cdef const floating* Y = <const floating*>data.Y
    cdef const floating* sample_weight = <const floating*>data.sample_weight
    cdef Py_ssize_t n_features = net.sizes[0]
    cdef Py_ssize_t n_outputs = net.sizes[net.n_layers]
    # The schedule's fields in locals, which the compiler keeps in registers: stores through the float
    # buffers could otherwise change them, as far as it knows, and it would load them again at every row.
    cdef const Py_ssize_t* orders = schedule.orders
    cdef const double* rates = schedule.rates
    cdef Py_ssize_t n_orders = schedule.n_orders
    cdef Py_ssize_t n_rows = schedule.n_visits
    cdef Py_ssize_t n_epochs = schedule.n_epochs
    cdef double l2 = schedule.l2
    cdef Py_ssize_t step = schedule.steps_done
    cdef Py_ssize_t epoch, t, r, following, next_first
    cdef const Py_ssize_t* order
    cdef const floating* x
    cdef double rate
    cdef floating decay, epoch_loss
    if schedule.optimizer == OPTIMIZER_SGD:
        # A loop of its own: in one loop with the other optimizers, gcc kept their settings in registers
        # across it, which every row then saved and restored around its calls.
        if n_epochs > 0 and n_rows > 0:  # the first row's outputs; the others' come from the row before
            _forward(net, weights, outputs, X + orders[0] * n_features)
        for epoch in range(n_epochs):
            order = orders + (epoch % n_orders) * n_rows
            next_first = orders[((epoch + 1) % n_orders) * n_rows]  # the next epoch's first row
            rate = rates[epoch]
            decay = <floating>(rate * l2)
            epoch_loss = 0.0
            for t in range(n_rows):
                r = order[t]
                x = X + r * n_features
                epoch_loss += sample_weight[r] * _backward(net, weights, outputs, deltas, Y + r * n_outputs)
                # The row after this one (after the last of the call, a forward pass that goes unused).
                following = order[t + 1] if t + 1 < n_rows else next_first
                _sgd_step_ahead(
                    net, weights, x, outputs, deltas, <floating>rate * sample_weight[r], decay,
                    X + following * n_features, next_outputs,
                )
                outputs, next_outputs = next_outputs, outputs
            history[epoch] = epoch_loss
    else:
        for epoch in range(n_epochs):
            order = orders + (epoch % n_orders) * n_rows
            rate = rates[epoch]
            epoch_loss = 0.0
            for t in range(n_rows):
                r = order[t]
                x = X + r * n_features
                _forward(net, weights, outputs, x)
                epoch_loss += sample_weight[r] * _backward(net, weights, outputs, deltas, Y + r * n_outputs)
                step += 1
                _row_gradient(net, x, outputs, deltas, sample_weight[r], grad)
                optimizer_step(net, weights, grad, state, schedule, rate, step)
            history[epoch] = epoch_loss


def forward_propagate(net, floating[::1] weights, signals, const floating[::1] x):
    """Store every neuron's output for input row ``x`` in ``signals.outputs``."""
    cdef Network c_net = network_of(net)
    cdef floating[::1] outputs = signals.outputs
    with nogil:
        _forward(&c_net, &weights[0], &outputs[0], &x[0])


def backward_propagate_error(net, floating[::1] weights, signals, const floating[::1] expected):
    """Store every neuron's error signal in ``signals.deltas``; return the row's loss."""
    cdef Network c_net = network_of(net)
    cdef const floating[::1] outputs = signals.outputs
    cdef floating[::1] deltas = signals.deltas
    cdef floating row_loss
    with nogil:
        row_loss = _backward(&c_net, &weights[0], &outputs[0], &deltas[0], &expected[0])
    return row_loss


def update_weights(net, floating[::1] weights, signals, const floating[::1] x, double l_rate):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first (``l_rate`` in the weights' type)."""
    cdef Network c_net = network_of(net)
    cdef const floating[::1] outputs = signals.outputs, deltas = signals.deltas
    with nogil:
        _sgd_step(&c_net, &weights[0], &x[0], &outputs[0], &deltas[0], <floating>l_rate, <floating>0.0)


def train_online(net, floating[::1] weights, floating[::1] optimizer_state, data, schedule, double[::1] history):
    """Online training (batch size 1) for ``len(history)`` epochs; plain SGD is the tutorial's update."""
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef Schedule c_schedule = schedule_of(schedule, history.shape[0])
    cdef floating* scratch = <floating*>malloc(_online_scratch(&c_net) * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_online(&c_net, &weights[0], &optimizer_state[0], &c_data, &c_schedule, &history[0], scratch)
    finally:
        free(scratch)


def predict_batch(net, const floating[::1] weights, const floating[:, ::1] X, floating[:, ::1] out):
    """Write the output layer's values for every row of ``X`` into ``out``: ``PREDICT_ROWS`` rows at a time (the
    last ones filled up with copies of the last row), each row's the same bits as ``_forward``'s."""
    cdef Network c_net = network_of(net)
    cdef Py_ssize_t n_outputs_scratch = PREDICT_ROWS * c_net.o_off[c_net.n_layers]
    cdef floating* scratch = <floating*>malloc((n_outputs_scratch + PREDICT_ROWS * c_net.sizes[0]) * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            _predict_rows(
                &c_net, &weights[0], &X[0, 0], X.shape[0], scratch, scratch + n_outputs_scratch, &out[0, 0]
            )
    finally:
        free(scratch)


cdef void _predict_rows(
    const Network* net, const floating* weights, const floating* X, Py_ssize_t n_rows, floating* outputs,
    floating* last_rows, floating* out
) noexcept nogil:
    """``predict_batch`` with its scratch: ``PREDICT_ROWS`` rows' ``outputs``, each row's after the one before,
    and the ``last_rows`` filled up (the copies' sums run only where they run side by side with the real rows)."""
    cdef Py_ssize_t n_neurons = net.o_off[net.n_layers]
    cdef Py_ssize_t n_features = net.sizes[0]
    cdef Py_ssize_t n_outputs = net.sizes[net.n_layers]
    cdef Py_ssize_t last = net.o_off[net.n_layers - 1]
    cdef Py_ssize_t first, real, r, j, k, stride
    cdef const floating* inputs
    cdef const floating* block
    cdef Layer layer
    for first in range(0, n_rows, 4):  # PREDICT_ROWS, a literal (see weighted_sum)
        real = min(PREDICT_ROWS, n_rows - first)
        inputs, stride = X + first * n_features, n_features
        if real < PREDICT_ROWS:  # each row's sums are its own: the copies change nothing in the real rows
            for r in range(PREDICT_ROWS):
                memcpy(last_rows + r * n_features, X + (first + min(r, real - 1)) * n_features,
                       n_features * sizeof(floating))
            inputs = last_rows
        for k in range(net.n_layers):
            layer = nth_layer(net, k)
            block = weights + net.w_off[k]
            for j in range(layer.n_out):
                weighted_sums_of_rows(
                    block + j * (layer.n_in + 1), layer.n_in, inputs, stride, outputs + net.o_off[k] + j, n_neurons,
                    real, net.exact,
                )
            for r in range(real):
                activate(outputs + r * n_neurons + net.o_off[k], layer, net.exact)
            inputs, stride = outputs + net.o_off[k], n_neurons
        for r in range(real):
            for j in range(n_outputs):
                out[(first + r) * n_outputs + j] = outputs[r * n_neurons + last + j]

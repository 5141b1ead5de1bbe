# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython backend: the kernels of the flat-buffer contract, compiled ahead of time.

The same functions, arguments and arithmetic as :mod:`fastbp._kernels_numba`
(whose docstring states the contract), without its JIT start-up:

* ``forward_propagate(weights, w_off, sizes, acts, outputs, o_off, x)``
* ``backward_propagate_error(weights, w_off, sizes, acts, outputs, o_off, deltas, expected) -> float``
* ``update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate)``
* ``train_online(weights, w_off, sizes, acts, outputs, o_off, deltas, grad, state,
  X, Y, sw, orders, rates, hyper, rule, fast, step0, history)``
* ``train_lockstep(weights, w_off, sizes, acts, outputs, o_off, deltas,
  X, Y, sw, orders, lengths, rates, l2, fast, history)``
* ``train_batches(weights, w_off, sizes, acts, grad, state,
  X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history, n_threads)``
* ``batch_gradient(weights, w_off, sizes, acts, X, Y, sw, rows, grad) -> float``
* ``predict_batch(weights, w_off, sizes, acts, outputs, o_off, X, out, fast)``

The float buffers are all float32 or all float64 (one fused type, ``floating``)
and the arithmetic stays in that type; ``rates``, ``hyper`` and ``history`` are
float64, the integer arrays intp, every array C-contiguous.  The activation and
update-rule codes are C enums, checked against :mod:`fastbp._codes` on import.

Non-finite values are handled as the Numba backend's docstring says (saturating
sigmoid and tanh; softmax defined for infinite logits; ``nan`` passed on by every
activation, relu included, for the Python layer to refuse), so the two backends
also agree bit for bit on overflowing inputs.

The work is done by ``nogil`` helpers over raw pointers; the public functions
only unpack their memoryviews and release the GIL, so trainings in separate
threads run in parallel.  Kernels mutate their buffers in place, trust their
inputs (checked by :mod:`fastbp._api`) and allocate at most one scratch block
per call.  The online kernels follow the Numba ones operation by operation
(bias first, then inputs in ascending order; ``max``, ``min`` and ``float **
int`` as Numba computes them; the fast mode's ``_fast_exp`` likewise), and the
extension is built without fast-math and with ``-ffp-contract=off`` (no fused
multiply-adds), so the two agree bit for bit.  The mini-batch kernels make the BLAS ``gemm`` calls (scipy's
``cython_blas``) that Numba's ``np.dot`` makes, block for block, so they agree
with it to rounding: bit for bit, except where ``np.dot`` takes a vector product
instead (a block of one row or of one neuron).  OpenMP threads share a batch's
blocks (``n_threads``; one thread where the extension was built without OpenMP).
"""

from libc.math cimport INFINITY, exp, expf, isinf, log, logf, pow, sqrt, sqrtf, tanh, tanhf
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastbp import _codes
from fastbp._libm import libm_address

ctypedef fused floating:
    float
    double


cdef enum:
    SIGMOID = 0
    TANH = 1
    RELU = 2
    LEAKY_RELU = 3
    IDENTITY = 4
    SOFTMAX = 5

cdef enum:
    SGD = 0
    MOMENTUM = 1
    NESTEROV = 2
    ADAM = 3
    RPROP = 4

cdef enum:
    SMALL_BLOCK = 32
    LARGE_BLOCK = 64

cdef enum:
    H_MOMENTUM = 0
    H_L2 = 1
    H_BETA1 = 2
    H_BETA2 = 3
    H_EPSILON = 4

cdef const double LEAKY_SLOPE = 0.01
cdef const double LOG_FLOOR = 1e-37
cdef const double RPROP_INCREASE = 1.2
cdef const double RPROP_DECREASE = 0.5
cdef const double RPROP_DELTA_MIN = 0.0
cdef const double RPROP_DELTA_MAX = 50.0
cdef const double RPROP_DELTA_ZERO = 0.1
cdef const double EXP_LOG2E = 1.4426950408889634
cdef const double EXP_SHIFT = 6755399441055744.0
cdef const double EXP_LN2_HI = 0.6931471803691238
cdef const double EXP_LN2_LO = 1.9082149292705877e-10
cdef extern from *:
    """
    static const double FASTBP_EXP_TAYLOR[14] = {
        1.0, 1.0, 0.5, 0.16666666666666666, 0.041666666666666664, 0.008333333333333333, 0.001388888888888889,
        0.0001984126984126984, 2.48015873015873e-05, 2.7557319223985893e-06, 2.755731922398589e-07,
        2.505210838544172e-08, 2.08767569878681e-09, 1.6059043836821613e-10,
    };
    """
    const double EXP_TAYLOR "FASTBP_EXP_TAYLOR"[14]  # a C constant, which the compiler folds into the code


def _check_codes():
    """Refuse to import if the C codes above differ from :mod:`fastbp._codes`."""
    compiled = {
        "SIGMOID": SIGMOID, "TANH": TANH, "RELU": RELU, "LEAKY_RELU": LEAKY_RELU,
        "IDENTITY": IDENTITY, "SOFTMAX": SOFTMAX,
        "SGD": SGD, "MOMENTUM": MOMENTUM, "NESTEROV": NESTEROV, "ADAM": ADAM, "RPROP": RPROP,
        "H_MOMENTUM": H_MOMENTUM, "H_L2": H_L2, "H_BETA1": H_BETA1, "H_BETA2": H_BETA2, "H_EPSILON": H_EPSILON,
        "SMALL_BLOCK": SMALL_BLOCK, "LARGE_BLOCK": LARGE_BLOCK, "LEAKY_SLOPE": LEAKY_SLOPE, "LOG_FLOOR": LOG_FLOOR,
        "RPROP_INCREASE": RPROP_INCREASE, "RPROP_DECREASE": RPROP_DECREASE,
        "RPROP_DELTA_MIN": RPROP_DELTA_MIN, "RPROP_DELTA_MAX": RPROP_DELTA_MAX,
        "RPROP_DELTA_ZERO": RPROP_DELTA_ZERO, "EXP_LOG2E": EXP_LOG2E, "EXP_SHIFT": EXP_SHIFT,
        "EXP_LN2_HI": EXP_LN2_HI, "EXP_LN2_LO": EXP_LN2_LO, "EXP_TAYLOR": tuple(EXP_TAYLOR),
    }
    mismatches = [
        f"{name} is {value!r} here, {getattr(_codes, name, None)!r} there"
        for name, value in compiled.items()
        if getattr(_codes, name, None) != value
    ]
    if mismatches:
        raise ImportError(
            "fastbp._kernels_cython was compiled with other codes than fastbp._codes ("
            + "; ".join(mismatches) + "): it is a stale build, rebuild or reinstall fastbp"
        )


_check_codes()


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


cdef struct Network:
    # The integer arrays describing a network (see fastbp._layout), as pointers.
    Py_ssize_t n_layers
    const Py_ssize_t* sizes
    const Py_ssize_t* w_off
    const Py_ssize_t* o_off
    const Py_ssize_t* acts  # o_off and acts are NULL in the kernels that do without them
    bint fast  # the forward pass: exact order and libm's exp, or eight interleaved partial sums and _fast_exp


ctypedef double (*double_function)(double) noexcept nogil
#: libm's exp, or glibc's exp core where it has one (see fastbp._libm); expf has no wrapper to skip.
cdef double_function _exp_double = exp
_address = libm_address("exp")
if _address is not None:
    _exp_double = <double_function><size_t>_address
del _address


cdef inline floating _exp(floating a) noexcept nogil:
    if floating is float:
        return expf(a)
    else:
        return _exp_double(a)


cdef inline floating _tanh(floating a) noexcept nogil:
    if floating is float:
        return tanhf(a)
    else:
        return tanh(a)


cdef inline floating _log(floating a) noexcept nogil:
    if floating is float:
        return logf(a)
    else:
        return log(a)


cdef inline floating _sqrt(floating a) noexcept nogil:
    if floating is float:
        return sqrtf(a)
    else:
        return sqrt(a)


cdef inline floating _max(floating a, floating b) noexcept nogil:
    """Numba's ``max(a, b)``: ``b`` only if it is greater."""
    return b if b > a else a


cdef inline floating _min(floating a, floating b) noexcept nogil:
    """Numba's ``min(a, b)``: ``b`` only if it is smaller."""
    return b if b < a else a


cdef inline double _power(double a, Py_ssize_t n) noexcept nogil:
    """``a ** n`` for ``n >= 0`` as Numba computes a float to an integer power: by squaring, ``pow`` past 65536."""
    cdef double result = 1.0
    if n > 0x10000:
        return pow(a, <double>n)
    while n != 0:
        if n & 1:
            result *= a
        n >>= 1
        a *= a
    return result


cdef inline double _fast_exp(double x) noexcept nogil:
    """fastbp's exp, operation for operation as the Numba backend's ``_fast_exp`` (which says why)."""
    cdef const double* c = EXP_TAYLOR
    cdef double shifted = x * EXP_LOG2E + EXP_SHIFT
    cdef double n = shifted - EXP_SHIFT
    cdef double r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO
    cdef double r2 = r * r
    cdef double r4 = r2 * r2
    cdef double low = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2
    cdef double middle = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2
    cdef double high = ((c[8] + c[9] * r) + (c[10] + c[11] * r) * r2) + (c[12] + c[13] * r) * r4
    cdef double p = (low + middle * r4) + high * (r4 * r4)
    cdef uint64_t bits
    cdef double scale, value
    memcpy(&bits, &shifted, sizeof(double))
    bits = (bits + 1023) << 52  # unsigned, so the shift wraps as Numba's does
    memcpy(&scale, &bits, sizeof(double))
    value = p * scale
    value = 0.0 if x < -708.0 else value
    return INFINITY if x > 709.0 else value


cdef inline floating _fast_sigmoid(floating a) noexcept nogil:
    """The fast mode's sigmoid, with ``_fast_exp``, as the Numba backend's ``_fast_sigmoid``."""
    return <floating>1.0 / (<floating>1.0 + <floating>_fast_exp(-a))


cdef inline floating _sigmoid(floating a) noexcept nogil:
    """The exact sigmoid, with libm's exp: it overflows to inf for a < -709 (float32: -88), giving exactly 0."""
    return <floating>1.0 / (<floating>1.0 + _exp(-a))


cdef inline floating _activation(floating a, Py_ssize_t code) noexcept nogil:
    """A neuron's output for activation ``a`` in the exact arithmetic (softmax is done per layer)."""
    if code == SIGMOID:
        return _sigmoid(a)
    if code == TANH:
        return _tanh(a)
    if code == RELU:
        # Not ``a if a > 0 else 0``, which would turn a nan sum (inf - inf) into a silent 0.
        return <floating>0.0 if a <= <floating>0.0 else a
    if code == LEAKY_RELU:
        return a if a > <floating>0.0 else <floating>LEAKY_SLOPE * a
    return a


cdef inline floating _derivative(floating output, Py_ssize_t code) noexcept nogil:
    """The activation's slope, from the neuron's output (as the tutorial computes it)."""
    if code == SIGMOID:
        return output * (<floating>1.0 - output)
    if code == TANH:
        return <floating>1.0 - output * output
    if code == RELU:
        return <floating>1.0 if output > <floating>0.0 else <floating>0.0
    if code == LEAKY_RELU:
        return <floating>1.0 if output > <floating>0.0 else <floating>LEAKY_SLOPE
    return <floating>1.0


cdef inline void _softmax(floating* values, Py_ssize_t n) noexcept nogil:
    """Replace ``values[:n]`` by their softmax, shifted by the maximum so exp cannot overflow.

    As the Numba backend's ``_softmax``: where the largest logit is infinite, the
    entries equal to it share the probability equally and the others get 0; a
    nan logit gives nan outputs.
    """
    cdef Py_ssize_t j
    cdef floating top = values[0]
    cdef floating total = 0.0
    cdef floating ties = 0.0
    cdef floating e
    for j in range(1, n):
        top = _max(top, values[j])
    if isinf(top):  # values - top would be inf - inf = nan
        for j in range(n):
            ties += <floating>1.0 if values[j] == top else <floating>0.0
        for j in range(n):
            e = values[j]
            values[j] = <floating>1.0 / ties if e == top else (<floating>0.0 if e == e else e)  # nan stays nan
        return
    for j in range(n):
        e = _exp(values[j] - top)
        values[j] = e
        total += e
    for j in range(n):
        values[j] /= total


cdef inline floating _output_error(floating output, floating target, Py_ssize_t code, floating* delta) noexcept nogil:
    """One output neuron's loss (squared error, or cross-entropy for softmax); its delta into ``delta``."""
    cdef floating diff
    if code == SOFTMAX:
        delta[0] = output - target
        return -target * _log(_max(output, <floating>LOG_FLOOR)) if target != <floating>0.0 else <floating>0.0
    diff = target - output
    delta[0] = (output - target) * _derivative(output, code)
    return diff * diff


cdef inline floating _weighted_sum(
    const floating* neuron, Py_ssize_t n_in, const floating* inputs, bint fast
) noexcept nogil:
    """The bias ``neuron[n_in]`` plus the inputs times their weights, as the Numba backend's ``_weighted_sum``.

    Exact: bias first, then each input in order.  Fast: eight interleaved partial
    sums (``i % 8``) combined pairwise, then the bias and the remaining inputs in order.
    """
    cdef Py_ssize_t i, n8
    cdef floating total, s0, s1, s2, s3, s4, s5, s6, s7
    if not fast or n_in < 8:
        total = neuron[n_in]
        for i in range(n_in):
            total += neuron[i] * inputs[i]
        return total
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
    n8 = n_in - n_in % 8
    for i in range(0, n8, 8):
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


cdef inline void _activate(floating* outputs, Py_ssize_t n_out, Py_ssize_t code, bint fast) noexcept nogil:
    """Replace a layer's weighted sums ``outputs[:n_out]`` by its outputs, as the Numba backend's ``_activate``."""
    cdef Py_ssize_t j
    if code == SOFTMAX:
        _softmax(outputs, n_out)
    elif code == SIGMOID and fast:
        for j in range(n_out):
            outputs[j] = _fast_sigmoid(outputs[j])
    elif code == SIGMOID:
        for j in range(n_out):
            outputs[j] = _sigmoid(outputs[j])
    else:
        for j in range(n_out):
            outputs[j] = _activation(outputs[j], code)


cdef inline void _activate_layer(
    const floating* block, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t code,
    const floating* inputs, floating* outputs, bint fast,
) noexcept nogil:
    """Outputs ``(n_out,)`` of the layer block ``block`` for ``inputs`` ``(n_in,)``."""
    cdef Py_ssize_t j
    for j in range(n_out):
        outputs[j] = _weighted_sum(block + j * (n_in + 1), n_in, inputs, fast)
    _activate(outputs, n_out, code, fast)


cdef inline void _forward(
    const floating* weights, const Network* net, floating* outputs, const floating* x
) noexcept nogil:
    """Every neuron's output for input row ``x``, written into ``outputs``."""
    cdef Py_ssize_t k
    _activate_layer(
        weights + net.w_off[0], net.sizes[0], net.sizes[1], net.acts[0], x, outputs + net.o_off[0], net.fast
    )
    for k in range(1, net.n_layers):
        _activate_layer(
            weights + net.w_off[k], net.sizes[k], net.sizes[k + 1], net.acts[k],
            outputs + net.o_off[k - 1], outputs + net.o_off[k], net.fast,
        )


cdef inline floating _backward(
    const floating* weights, const Network* net, const floating* outputs, floating* deltas, const floating* expected
) noexcept nogil:
    """Every neuron's error signal, written into ``deltas``; returns the row's loss."""
    cdef Py_ssize_t last = net.n_layers - 1
    cdef Py_ssize_t j, k, m, stride
    cdef Py_ssize_t own = net.o_off[last]
    cdef const floating* block
    cdef const floating* downstream
    cdef floating error
    cdef floating row_loss = 0.0
    for j in range(net.sizes[last + 1]):
        row_loss += _output_error(outputs[own + j], expected[j], net.acts[last], &deltas[own + j])
    for k in range(last - 1, -1, -1):
        block = weights + net.w_off[k + 1]
        downstream = deltas + net.o_off[k + 1]
        own = net.o_off[k]
        stride = net.sizes[k + 1] + 1
        for j in range(net.sizes[k + 1]):
            error = 0.0
            for m in range(net.sizes[k + 2]):
                error += block[m * stride + j] * downstream[m]
            deltas[own + j] = error * _derivative(outputs[own + j], net.acts[k])
    return row_loss


cdef inline void _update_neuron(
    floating* neuron, Py_ssize_t n_in, const floating* inputs, floating step, floating decay
) noexcept nogil:
    """SGD step for one neuron: ``w -= step * input + decay * w``, its bias ``-= step`` undecayed."""
    cdef Py_ssize_t i
    if decay == 0:  # as the Numba kernel: a loop of its own, faster on wide layers
        for i in range(n_in):
            neuron[i] -= step * inputs[i]
    else:
        for i in range(n_in):
            neuron[i] -= step * inputs[i] + decay * neuron[i]
    neuron[n_in] -= step


cdef inline void _update_layer(
    floating* block, Py_ssize_t n_in, Py_ssize_t n_out, const floating* inputs, const floating* deltas,
    floating l_rate, floating decay,
) noexcept nogil:
    """SGD step for one layer, each neuron's step ``l_rate * delta``."""
    cdef Py_ssize_t j
    for j in range(n_out):
        _update_neuron(block + j * (n_in + 1), n_in, inputs, l_rate * deltas[j], decay)


cdef inline void _sgd_step(
    floating* weights, const Network* net, const floating* outputs, const floating* deltas, const floating* x,
    floating l_rate, floating decay,
) noexcept nogil:
    """The tutorial's update for input row ``x``, first layer first, plus L2 decay."""
    cdef Py_ssize_t k
    _update_layer(weights + net.w_off[0], net.sizes[0], net.sizes[1], x, deltas + net.o_off[0], l_rate, decay)
    for k in range(1, net.n_layers):
        _update_layer(
            weights + net.w_off[k], net.sizes[k], net.sizes[k + 1], outputs + net.o_off[k - 1],
            deltas + net.o_off[k], l_rate, decay,
        )


cdef inline floating _stepped_sum(
    floating* neuron, Py_ssize_t n_in, const floating* inputs, const floating* next_inputs, floating step
) noexcept nogil:
    """``_update_neuron`` without decay fused with the exact ``_weighted_sum`` of the next row's ``next_inputs``.

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
    floating* neuron, Py_ssize_t n_in, const floating* inputs, const floating* next_inputs, floating step
) noexcept nogil:
    """``_stepped_sum`` with the fast mode's eight partial sums (``n_in >= 8``), in ``_weighted_sum``'s order.

    gcc runs the eight accumulators as vector code; the Numba backend writes them as
    one LLVM vector of eight (its ``_stepped_lane_sums``), with the same bits.
    """
    cdef Py_ssize_t i
    cdef Py_ssize_t n8 = n_in - n_in % 8
    cdef floating total, s0, s1, s2, s3, s4, s5, s6, s7, w0, w1, w2, w3, w4, w5, w6, w7
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0
    for i in range(0, n8, 8):
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
    bint fast,
) noexcept nogil:
    """``_update_layer`` for this row's ``inputs``, each neuron then activated for the next row's ``next_inputs``.

    Without decay, each neuron's weights are updated and weighed in one pass.
    """
    cdef Py_ssize_t j
    cdef floating* neuron
    if decay == 0 and (not fast or n_in < 8):  # the exact sum (see _weighted_sum)
        for j in range(n_out):
            next_outputs[j] = _stepped_sum(block + j * (n_in + 1), n_in, inputs, next_inputs, l_rate * deltas[j])
    elif decay == 0:
        for j in range(n_out):
            next_outputs[j] = _stepped_partial_sums(
                block + j * (n_in + 1), n_in, inputs, next_inputs, l_rate * deltas[j]
            )
    else:
        for j in range(n_out):
            neuron = block + j * (n_in + 1)
            _update_neuron(neuron, n_in, inputs, l_rate * deltas[j], decay)
            next_outputs[j] = _weighted_sum(neuron, n_in, next_inputs, fast)
    _activate(next_outputs, n_out, code, fast)


cdef inline void _sgd_step_ahead(
    floating* weights, const Network* net, const floating* outputs, floating* next_outputs, const floating* deltas,
    const floating* x, const floating* next_x, floating l_rate, floating decay,
) noexcept nogil:
    """``_sgd_step`` for row ``x`` fused with ``_forward`` for row ``next_x``, as the Numba backend's."""
    cdef Py_ssize_t k
    _step_layer(
        weights + net.w_off[0], net.sizes[0], net.sizes[1], net.acts[0], x, next_x, deltas + net.o_off[0],
        next_outputs + net.o_off[0], l_rate, decay, net.fast,
    )
    for k in range(1, net.n_layers):
        _step_layer(
            weights + net.w_off[k], net.sizes[k], net.sizes[k + 1], net.acts[k], outputs + net.o_off[k - 1],
            next_outputs + net.o_off[k - 1], deltas + net.o_off[k], next_outputs + net.o_off[k], l_rate, decay,
            net.fast,
        )


cdef inline void _row_gradient(
    const Network* net, const floating* outputs, const floating* deltas, const floating* x, floating weight,
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


cdef void _rule_step(
    floating* weights, Py_ssize_t n_w, const Network* net, const floating* grad, floating* state,
    Py_ssize_t rule, double rate, const double* hyper, Py_ssize_t step,
) noexcept nogil:
    """Apply gradient ``grad`` by update rule ``rule``; ``step`` counts updates from 1.

    The rules, their ``state`` and the L2 decay (biases excepted) are those of
    the Numba backend's ``_rule_step``.  Each rule gets a copy of the loop with its
    code a constant, so the compiler drops the other rules' branches from the loop
    over the weights and vectorises it (one loop for all took a fifth of a float32
    mini-batch epoch of 784-128-10 in batches of 32).
    """
    if rule == SGD:
        _rule_loop(weights, n_w, net, grad, state, SGD, rate, hyper, step)
    elif rule == MOMENTUM:
        _rule_loop(weights, n_w, net, grad, state, MOMENTUM, rate, hyper, step)
    elif rule == NESTEROV:
        _rule_loop(weights, n_w, net, grad, state, NESTEROV, rate, hyper, step)
    elif rule == ADAM:
        _rule_loop(weights, n_w, net, grad, state, ADAM, rate, hyper, step)
    else:
        _rule_loop(weights, n_w, net, grad, state, RPROP, rate, hyper, step)


cdef inline void _rule_loop(
    floating* weights, Py_ssize_t n_w, const Network* net, const floating* grad, floating* state,
    Py_ssize_t rule, double rate, const double* hyper, Py_ssize_t step,
) noexcept nogil:
    """``_rule_step``'s loop for one rule."""
    cdef Py_ssize_t i, j, k, p, n_in, neuron
    cdef floating l2 = <floating>hyper[H_L2]
    cdef floating momentum = <floating>hyper[H_MOMENTUM]
    cdef floating beta1 = <floating>hyper[H_BETA1]
    cdef floating beta2 = <floating>hyper[H_BETA2]
    cdef floating epsilon = <floating>hyper[H_EPSILON]
    cdef floating l_rate = <floating>rate
    cdef floating adam_rate = 0.0
    cdef floating g, velocity, m, v, change
    if rule == ADAM:
        adam_rate = <floating>(rate * sqrt(1.0 - _power(hyper[H_BETA2], step)) / (1.0 - _power(hyper[H_BETA1], step)))
    for k in range(net.n_layers):
        n_in = net.sizes[k]
        for j in range(net.sizes[k + 1]):
            neuron = net.w_off[k] + j * (n_in + 1)
            for i in range(n_in + 1):
                p = neuron + i
                g = grad[p] + l2 * weights[p] if i < n_in else grad[p]
                if rule == SGD:
                    weights[p] -= l_rate * g
                elif rule == MOMENTUM or rule == NESTEROV:
                    velocity = momentum * state[p] - l_rate * g
                    state[p] = velocity
                    weights[p] += velocity if rule == MOMENTUM else momentum * velocity - l_rate * g
                elif rule == ADAM:
                    m = beta1 * state[p] + (<floating>1.0 - beta1) * g
                    v = beta2 * state[n_w + p] + (<floating>1.0 - beta2) * (g * g)
                    state[p] = m
                    state[n_w + p] = v
                    weights[p] -= adam_rate * m / (_sqrt(v) + epsilon)
                else:  # RPROP
                    change = g * state[n_w + p]
                    if change > <floating>0.0:
                        state[p] = _min(state[p] * <floating>RPROP_INCREASE, <floating>RPROP_DELTA_MAX)
                    elif change < <floating>0.0:
                        state[p] = _max(state[p] * <floating>RPROP_DECREASE, <floating>RPROP_DELTA_MIN)
                        g = 0.0
                    if g > <floating>0.0:
                        weights[p] -= state[p]
                    elif g < <floating>0.0:
                        weights[p] += state[p]
                    state[n_w + p] = g


cdef void _train_online(
    floating* weights, Py_ssize_t n_w, const Network* net, floating* outputs, floating* next_outputs,
    floating* deltas, floating* grad, floating* state, const floating* X, Py_ssize_t x_stride, const floating* Y,
    Py_ssize_t y_stride, const floating* sw, const Py_ssize_t* orders, Py_ssize_t n_orders, Py_ssize_t n_rows,
    const double* rates, const double* hyper, Py_ssize_t rule, Py_ssize_t step, double* history, Py_ssize_t n_epochs,
) noexcept nogil:
    """Online training (batch size 1) for ``n_epochs`` epochs; plain SGD is the tutorial's update.

    ``X`` and ``Y`` are C-contiguous matrices whose rows are ``x_stride`` and
    ``y_stride`` values long; ``orders`` holds ``n_orders`` rows of ``n_rows``.  As
    the Numba backend's: plain SGD runs each row's update fused with the next row's
    forward pass, whose outputs go to ``next_outputs`` (the two buffers swap roles
    every row); the other rules run forward, backward and update one after the other.
    """
    cdef Py_ssize_t epoch, t, r, following
    cdef const Py_ssize_t* order
    cdef const floating* x
    cdef double rate
    cdef floating decay, epoch_loss
    for epoch in range(n_epochs):
        order = orders + (epoch % n_orders) * n_rows
        rate = rates[epoch]
        decay = <floating>(rate * hyper[H_L2])
        epoch_loss = 0.0
        for t in range(n_rows):
            r = order[t]
            x = X + r * x_stride
            if rule != SGD or (epoch == 0 and t == 0):  # plain SGD has the other rows' outputs from the row before
                _forward(weights, net, outputs, x)
            epoch_loss += sw[r] * _backward(weights, net, outputs, deltas, Y + r * y_stride)
            if rule == SGD:
                # The row after this one (after the last of the call, a forward pass that goes unused).
                following = order[t + 1] if t + 1 < n_rows else orders[((epoch + 1) % n_orders) * n_rows]
                _sgd_step_ahead(
                    weights, net, outputs, next_outputs, deltas, x, X + following * x_stride, <floating>rate * sw[r],
                    decay,
                )
                outputs, next_outputs = next_outputs, outputs
            else:
                step += 1
                _row_gradient(net, outputs, deltas, x, sw[r], grad)
                _rule_step(weights, n_w, net, grad, state, rule, rate, hyper, step)
        history[epoch] = epoch_loss


cdef enum:
    TILE = 8  # networks whose weighted sums the lockstep kernel keeps in registers at once


cdef inline void _tile_sums(
    floating* out, const floating* bias, const floating* weights, Py_ssize_t w_stride, const floating* values,
    Py_ssize_t n, Py_ssize_t n_nets, Py_ssize_t width,
) noexcept nogil:
    """``out[t] = bias[t] + sum(weights[i * w_stride + t] * values[i * n_nets + t])``, ``i`` ascending, ``t < width``.

    The sum starts from 0.0 where ``bias`` is NULL.  Called with ``width == TILE``,
    the ``width`` sums stay in vector registers for the whole loop over ``i``.
    """
    cdef floating acc[TILE]
    cdef Py_ssize_t i, t
    for t in range(width):
        acc[t] = bias[t] if bias != NULL else <floating>0.0
    for i in range(n):
        for t in range(width):
            acc[t] += weights[i * w_stride + t] * values[i * n_nets + t]
    for t in range(width):
        out[t] = acc[t]


cdef inline void _lockstep_sums(
    floating* out, const floating* bias, const floating* weights, Py_ssize_t w_stride, const floating* values,
    Py_ssize_t n, Py_ssize_t n_nets,
) noexcept nogil:
    """``_tile_sums`` for all ``n_nets`` networks: whole tiles of TILE, then one short tile for the rest."""
    cdef Py_ssize_t tile, k
    for tile in range(n_nets // TILE):
        k = tile * TILE
        _tile_sums(out + k, bias + k if bias != NULL else NULL, weights + k, w_stride, values + k, n, n_nets, TILE)
    k = n_nets - n_nets % TILE
    if k < n_nets:
        _tile_sums(
            out + k, bias + k if bias != NULL else NULL, weights + k, w_stride, values + k, n, n_nets, n_nets - k
        )


cdef inline void _lockstep_layer(
    const floating* block, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t code, const floating* inputs,
    floating* outputs, Py_ssize_t n_nets, floating* partial, floating* column, bint fast,
) noexcept nogil:
    """One layer's outputs ``(n_out, n_nets)`` for every network: ``_activate_layer``'s arithmetic, network by network.

    ``block`` is the layer's weights ``(n_out * (n_in + 1), n_nets)`` and ``inputs``
    its inputs ``(n_in, n_nets)``; ``partial`` ``(8, n_nets)`` holds the fast sums'
    partial sums and ``column`` ``(n_out,)`` one network's softmax.
    """
    cdef Py_ssize_t i, j, k, m, n8
    cdef const floating* neuron
    cdef const floating* bias
    cdef const floating* s  # the partial sums, as in _weighted_sum
    cdef floating* out
    for j in range(n_out):
        neuron = block + j * (n_in + 1) * n_nets
        bias = neuron + n_in * n_nets
        out = outputs + j * n_nets
        if not fast or n_in < 8:
            _lockstep_sums(out, bias, neuron, n_nets, inputs, n_in, n_nets)
        else:
            n8 = n_in - n_in % 8
            for k in range(8 * n_nets):
                partial[k] = 0.0
            for i in range(0, n8, 8):
                for m in range(8):
                    for k in range(n_nets):
                        partial[m * n_nets + k] += neuron[(i + m) * n_nets + k] * inputs[(i + m) * n_nets + k]
            s = partial
            for k in range(n_nets):
                out[k] = bias[k] + (
                    ((s[k] + s[4 * n_nets + k]) + (s[2 * n_nets + k] + s[6 * n_nets + k]))
                    + ((s[n_nets + k] + s[5 * n_nets + k]) + (s[3 * n_nets + k] + s[7 * n_nets + k]))
                )
            for i in range(n8, n_in):
                for k in range(n_nets):
                    out[k] += neuron[i * n_nets + k] * inputs[i * n_nets + k]
        if code == SIGMOID and fast:  # a loop of its own, which vectorises with its exp
            for k in range(n_nets):
                out[k] = _fast_sigmoid(out[k])
        elif code != SOFTMAX:
            for k in range(n_nets):
                out[k] = _activation(out[k], code)
    if code == SOFTMAX:
        for k in range(n_nets):
            for j in range(n_out):
                column[j] = outputs[j * n_nets + k]
            _softmax(column, n_out)
            for j in range(n_out):
                outputs[j * n_nets + k] = column[j]


cdef void _train_lockstep(
    floating* weights, Py_ssize_t n_nets, const Network* net, floating* outputs, floating* deltas,
    const floating* X, Py_ssize_t x_stride, const floating* Y, Py_ssize_t y_stride, const floating* sw,
    const Py_ssize_t* orders, Py_ssize_t n_orders, Py_ssize_t max_len, const Py_ssize_t* lengths,
    const double* rates, double l2, double* history, Py_ssize_t n_epochs, Py_ssize_t* rows, floating* scratch,
) noexcept nogil:
    """Online SGD for ``n_nets`` networks at once, the network index innermost (see ``train_lockstep``).

    ``orders`` holds ``n_orders`` blocks of ``n_nets`` rows of ``max_len`` row indices;
    ``rows`` has room for ``n_nets`` indices and ``scratch`` for
    ``n_nets * (n_features + n_outputs + 13) + n_outputs`` values.
    """
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t last = n_layers - 1
    cdef Py_ssize_t n_features = net.sizes[0]
    cdef Py_ssize_t n_outputs = net.sizes[n_layers]
    cdef floating* inputs = scratch  # (n_features, n_nets): each network's row
    cdef floating* targets = inputs + n_features * n_nets  # (n_outputs, n_nets)
    cdef floating* row_loss = targets + n_outputs * n_nets
    cdef floating* l_rate = row_loss + n_nets
    cdef floating* decay = l_rate + n_nets
    cdef floating* step = decay + n_nets
    cdef floating* epoch_loss = step + n_nets
    cdef floating* partial = epoch_loss + n_nets  # (8, n_nets)
    cdef floating* column = partial + 8 * n_nets  # (n_outputs,)
    cdef Py_ssize_t epoch, t, i, j, k, r, layer, n_in, n_out, n_down, stride, code
    cdef const Py_ssize_t* order
    cdef const floating* src
    cdef const floating* block
    cdef floating* neuron
    cdef floating* own
    cdef const floating* downstream
    cdef const floating* own_out
    for epoch in range(n_epochs):
        order = orders + (epoch % n_orders) * n_nets * max_len
        for k in range(n_nets):
            epoch_loss[k] = 0.0
        for t in range(max_len):
            for k in range(n_nets):
                r = order[k * max_len + t]
                rows[k] = r
                if t < lengths[k]:
                    l_rate[k] = <floating>rates[epoch * n_nets + k] * sw[r]
                    decay[k] = <floating>(rates[epoch * n_nets + k] * l2)
                else:  # sits out: the padding row is computed, its step and decay are zero
                    l_rate[k] = 0.0
                    decay[k] = 0.0
                for i in range(n_features):
                    inputs[i * n_nets + k] = X[r * x_stride + i]
                for j in range(n_outputs):
                    targets[j * n_nets + k] = Y[r * y_stride + j]
            # forward (_forward's arithmetic)
            _lockstep_layer(
                weights + net.w_off[0] * n_nets, net.sizes[0], net.sizes[1], net.acts[0], inputs,
                outputs + net.o_off[0] * n_nets, n_nets, partial, column, net.fast,
            )
            for layer in range(1, n_layers):
                _lockstep_layer(
                    weights + net.w_off[layer] * n_nets, net.sizes[layer], net.sizes[layer + 1], net.acts[layer],
                    outputs + net.o_off[layer - 1] * n_nets, outputs + net.o_off[layer] * n_nets, n_nets,
                    partial, column, net.fast,
                )
            # output errors, then the hidden layers' (_backward's arithmetic)
            own = deltas + net.o_off[last] * n_nets
            own_out = outputs + net.o_off[last] * n_nets
            code = net.acts[last]
            for k in range(n_nets):
                row_loss[k] = 0.0
            for j in range(n_outputs):
                for k in range(n_nets):
                    row_loss[k] += _output_error(
                        own_out[j * n_nets + k], targets[j * n_nets + k], code, &own[j * n_nets + k]
                    )
            for k in range(n_nets):
                if t < lengths[k]:
                    epoch_loss[k] += sw[rows[k]] * row_loss[k]
            for layer in range(last - 1, -1, -1):
                block = weights + net.w_off[layer + 1] * n_nets
                downstream = deltas + net.o_off[layer + 1] * n_nets
                own = deltas + net.o_off[layer] * n_nets
                own_out = outputs + net.o_off[layer] * n_nets
                stride = net.sizes[layer + 1] + 1
                n_down = net.sizes[layer + 2]
                code = net.acts[layer]
                for j in range(net.sizes[layer + 1]):
                    _lockstep_sums(
                        own + j * n_nets, NULL, block + j * n_nets, stride * n_nets, downstream, n_down, n_nets
                    )
                    for k in range(n_nets):
                        own[j * n_nets + k] *= _derivative(own_out[j * n_nets + k], code)
            # the SGD step, first layer first (_sgd_step's arithmetic)
            for layer in range(n_layers):
                n_in, n_out = net.sizes[layer], net.sizes[layer + 1]
                src = inputs if layer == 0 else outputs + net.o_off[layer - 1] * n_nets
                own = deltas + net.o_off[layer] * n_nets
                for j in range(n_out):
                    neuron = weights + (net.w_off[layer] + j * (n_in + 1)) * n_nets
                    for k in range(n_nets):
                        step[k] = l_rate[k] * own[j * n_nets + k]
                    if l2 == 0.0:  # a loop of its own, as _update_layer's
                        for i in range(n_in):
                            for k in range(n_nets):
                                neuron[i * n_nets + k] -= step[k] * src[i * n_nets + k]
                    else:
                        for i in range(n_in):
                            for k in range(n_nets):
                                neuron[i * n_nets + k] -= (
                                    step[k] * src[i * n_nets + k] + decay[k] * neuron[i * n_nets + k]
                                )
                    for k in range(n_nets):
                        neuron[n_in * n_nets + k] -= step[k]
        for k in range(n_nets):
            history[epoch * n_nets + k] = epoch_loss[k]


cdef inline void _matmul(
    char trans_a, char trans_b, int m, int n, int k, const floating* a, int lda, const floating* b, int ldb,
    floating* c,
) noexcept nogil:
    """Row-major ``c (m, n) = op(a) @ op(b)``, ``op`` transposing where ``trans_*`` is ``c'T'``.

    ``lda`` and ``ldb`` are the row lengths of ``a`` and ``b`` as stored.  BLAS
    is column-major, where every row-major matrix reads as its transpose, so
    this computes ``c.T = op(b).T @ op(a).T``: Numba's call for ``np.dot``.
    """
    cdef floating one = 1.0
    cdef floating zero = 0.0
    if floating is float:
        sgemm(&trans_b, &trans_a, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &zero, c, &n)
    else:
        dgemm(&trans_b, &trans_a, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda, &zero, c, &n)


cdef floating* _batch_buffers(
    const Network* net, Py_ssize_t rows, floating** products, floating** deltas, floating** deltas_t,
    Py_ssize_t* side_size,
) except? NULL:
    """One scratch block for batches of up to ``rows`` rows; returns its start (free it after).

    It holds each layer's ``(rows, n + 1)`` activation matrix, inputs first (the
    last column ones); the ``products`` of a layer (its weighted sums, block after
    block of ``_block_size`` columns, or its errors); and two sides of ``deltas`` and
    of ``deltas_t`` (the same transposed), ``side_size`` apart: one for the layer in
    hand, one for the layer below.
    """
    cdef Py_ssize_t k, size
    cdef Py_ssize_t widest = 0
    cdef Py_ssize_t total = 0
    cdef floating* activations
    for k in range(net.n_layers + 1):
        widest = max(widest, net.sizes[k] + 1)
        total += net.sizes[k] + 1
    size = rows * (total + 5 * widest)
    activations = <floating*>malloc(size * sizeof(floating))
    if activations == NULL and size > 0:
        raise MemoryError()
    side_size[0] = rows * widest
    products[0] = activations + rows * total
    deltas[0] = products[0] + side_size[0]
    deltas_t[0] = deltas[0] + 2 * side_size[0]
    return activations


cdef inline Py_ssize_t _blocks(Py_ssize_t n, Py_ssize_t size) noexcept nogil:
    return (n + size - 1) // size


cdef inline Py_ssize_t _block_size(Py_ssize_t batch_rows) noexcept nogil:
    """Neurons or rows per block for a batch of ``batch_rows`` rows: fastbp._codes.block_size."""
    return SMALL_BLOCK if batch_rows <= SMALL_BLOCK else LARGE_BLOCK


cdef void _forward_block(
    const floating* weights, const floating* inputs, floating* outputs, floating* products,
    Py_ssize_t b, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t code, Py_ssize_t size, Py_ssize_t block,
) noexcept nogil:
    """Neurons ``block * size ...`` of a layer: weighted sums for the ``b`` rows, then activations."""
    cdef Py_ssize_t first = block * size
    cdef Py_ssize_t width = min(size, n_out - first)
    cdef floating* sums = products + b * first
    cdef Py_ssize_t s, j
    _matmul(c'N', c'T', b, width, n_in + 1, inputs, n_in + 1, weights + first * (n_in + 1), n_in + 1, sums)
    for s in range(b):
        for j in range(width):
            outputs[s * (n_out + 1) + first + j] = (
                sums[s * width + j] if code == SOFTMAX else _activation(sums[s * width + j], code)
            )


cdef void _backward_block(
    const floating* weights, const floating* inputs, floating* grad, floating* products,
    const floating* deltas, const floating* deltas_t, floating* below, floating* below_t,
    Py_ssize_t b, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t code_below, Py_ssize_t size,
    Py_ssize_t n_grad_blocks, Py_ssize_t task,
) noexcept nogil:
    """One task of a layer's backward pass: the gradient of a block of its neurons (the first
    ``n_grad_blocks`` tasks), or the error signals of a block of rows for the layer below."""
    cdef Py_ssize_t first, width, s, j
    cdef floating value
    if task < n_grad_blocks:
        first = task * size
        width = min(size, n_out - first)
        _matmul(c'N', c'N', width, n_in + 1, b, deltas_t + first * b, b, inputs, n_in + 1, grad + first * (n_in + 1))
        return
    first = (task - n_grad_blocks) * size
    width = min(size, b - first)
    _matmul(
        c'N', c'N', width, n_in + 1, n_out, deltas + first * n_out, n_out, weights, n_in + 1,
        products + first * (n_in + 1),
    )
    for s in range(first, first + width):
        for j in range(n_in):
            value = products[s * (n_in + 1) + j] * _derivative(inputs[s * (n_in + 1) + j], code_below)
            below[s * n_in + j] = value
            below_t[j * b + s] = value


cdef floating _batch_gradient(
    const floating* weights, const Network* net, const floating* X, Py_ssize_t x_stride,
    const floating* Y, Py_ssize_t y_stride, const floating* sw, const Py_ssize_t* rows, Py_ssize_t b,
    floating* grad, floating* activations, floating* products, floating* deltas, floating* deltas_t,
    Py_ssize_t side_size, int n_threads,
) noexcept nogil:
    """Mean weighted gradient over the ``b`` rows ``X[rows]`` into ``grad``; returns their weighted loss sum.

    The scratch buffers come from ``_batch_buffers`` for at least ``b`` rows.  Layer ``k``'s inputs form a
    ``(b, sizes[k] + 1)`` matrix whose last column is ones, so ``inputs @ W.T``
    includes the biases and ``deltas.T @ inputs`` is the whole gradient block, bias
    column included.  The products are split into blocks of
    ``_block_size(b)`` neurons or rows that ``n_threads`` threads share: each block is
    computed the same way whichever thread takes it, so the result does not depend
    on the thread count.
    """
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t size = _block_size(b)
    cdef Py_ssize_t i, j, k, r, s, n_in, n_out, code, task, n_grad_blocks, n_tasks
    cdef floating* inputs
    cdef floating* outputs = activations  # the rows with their ones, then each layer's outputs in turn
    cdef Py_ssize_t side = 0  # which side of deltas and deltas_t holds the layer in hand
    cdef floating total_loss = 0.0
    cdef floating row_loss, scale, delta
    n_in = net.sizes[0]
    for s in range(b):
        for i in range(n_in):
            outputs[s * (n_in + 1) + i] = X[rows[s] * x_stride + i]
        outputs[s * (n_in + 1) + n_in] = 1.0
    for k in range(n_layers):
        n_in, n_out, code = net.sizes[k], net.sizes[k + 1], net.acts[k]
        inputs = outputs
        outputs = inputs + b * (n_in + 1)
        n_tasks = _blocks(n_out, size)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            _forward_block(weights + net.w_off[k], inputs, outputs, products, b, n_in, n_out, code, size, task)
        for s in range(b):
            if code == SOFTMAX:
                _softmax(outputs + s * (n_out + 1), n_out)
            outputs[s * (n_out + 1) + n_out] = 1.0

    n_out, code = net.sizes[n_layers], net.acts[n_layers - 1]
    for s in range(b):
        r = rows[s]
        row_loss = 0.0
        scale = sw[r] / <floating>b
        for j in range(n_out):
            row_loss += _output_error(outputs[s * (n_out + 1) + j], Y[r * y_stride + j], code, &delta)
            deltas[s * n_out + j] = delta * scale
            deltas_t[j * b + s] = delta * scale  # side 0
        total_loss += sw[r] * row_loss
    for k in range(n_layers - 1, -1, -1):
        n_in, n_out = net.sizes[k], net.sizes[k + 1]
        inputs = outputs - b * (n_in + 1)
        n_grad_blocks = _blocks(n_out, size)
        n_tasks = n_grad_blocks + (_blocks(b, size) if k > 0 else 0)
        for task in prange(n_tasks, num_threads=n_threads, use_threads_if=n_threads > 1 and n_tasks > 1):
            _backward_block(
                weights + net.w_off[k], inputs, grad + net.w_off[k], products,
                deltas + side * side_size, deltas_t + side * side_size,
                deltas + (1 - side) * side_size, deltas_t + (1 - side) * side_size,
                b, n_in, n_out, net.acts[k - 1] if k > 0 else 0, size, n_grad_blocks, task,
            )
        side = 1 - side
        outputs = inputs
    return total_loss


cdef void _train_batches(
    floating* weights, Py_ssize_t n_w, const Network* net, floating* grad, floating* state,
    const floating* X, Py_ssize_t x_stride, const floating* Y, Py_ssize_t y_stride, const floating* sw,
    const Py_ssize_t* orders, Py_ssize_t n_orders, Py_ssize_t n_rows, Py_ssize_t batch_size,
    const double* rates, const double* hyper, Py_ssize_t rule, Py_ssize_t step,
    double* history, Py_ssize_t n_epochs, floating* activations, floating* products, floating* deltas,
    floating* deltas_t, Py_ssize_t side_size, int n_threads,
) noexcept nogil:
    """Mini-batch training for ``n_epochs`` epochs: one update per ``batch_size`` rows (the last may be short)."""
    cdef Py_ssize_t epoch, start
    cdef const Py_ssize_t* order
    cdef floating epoch_loss
    for epoch in range(n_epochs):
        order = orders + (epoch % n_orders) * n_rows
        epoch_loss = 0.0
        start = 0
        while start < n_rows:
            epoch_loss += _batch_gradient(
                weights, net, X, x_stride, Y, y_stride, sw, order + start, min(batch_size, n_rows - start),
                grad, activations, products, deltas, deltas_t, side_size, n_threads,
            )
            step += 1
            _rule_step(weights, n_w, net, grad, state, rule, rates[epoch], hyper, step)
            start += batch_size
        history[epoch] = epoch_loss


def forward_propagate(
    const floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const Py_ssize_t[::1] acts, floating[::1] outputs, const Py_ssize_t[::1] o_off, const floating[::1] x,
):
    """Store every neuron's output for input row ``x`` in ``outputs``."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], &acts[0], False)
    with nogil:
        _forward(&weights[0], &net, &outputs[0], &x[0])


def backward_propagate_error(
    const floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const Py_ssize_t[::1] acts, const floating[::1] outputs, const Py_ssize_t[::1] o_off, floating[::1] deltas,
    const floating[::1] expected,
):
    """Store every neuron's error signal in ``deltas``; return the row's loss."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], &acts[0], False)
    cdef floating row_loss
    with nogil:
        row_loss = _backward(&weights[0], &net, &outputs[0], &deltas[0], &expected[0])
    return row_loss


def update_weights(
    floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const floating[::1] outputs, const Py_ssize_t[::1] o_off, const floating[::1] deltas, const floating[::1] x,
    double l_rate,
):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first (``l_rate`` in the buffers' type)."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], NULL, False)
    with nogil:
        _sgd_step(&weights[0], &net, &outputs[0], &deltas[0], &x[0], <floating>l_rate, <floating>0.0)


def train_online(
    floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes, const Py_ssize_t[::1] acts,
    floating[::1] outputs, const Py_ssize_t[::1] o_off, floating[::1] deltas, floating[::1] grad,
    floating[::1] state, const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] sw,
    const Py_ssize_t[:, ::1] orders, const double[::1] rates, const double[::1] hyper, Py_ssize_t rule,
    bint fast, Py_ssize_t step0, double[::1] history,
):
    """Online training (batch size 1) for ``len(history)`` epochs; plain SGD is the tutorial's update."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], &acts[0], fast)
    cdef floating* next_outputs = <floating*>malloc(outputs.shape[0] * sizeof(floating))
    if next_outputs == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_online(
                &weights[0], weights.shape[0], &net, &outputs[0], next_outputs, &deltas[0], &grad[0], &state[0],
                &X[0, 0], X.shape[1], &Y[0, 0], Y.shape[1], &sw[0], &orders[0, 0], orders.shape[0], orders.shape[1],
                &rates[0], &hyper[0], rule, step0, &history[0], history.shape[0],
            )
    finally:
        free(next_outputs)


def train_lockstep(
    floating[:, ::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes, const Py_ssize_t[::1] acts,
    floating[:, ::1] outputs, const Py_ssize_t[::1] o_off, floating[:, ::1] deltas, const floating[:, ::1] X,
    const floating[:, ::1] Y, const floating[::1] sw, const Py_ssize_t[:, :, ::1] orders,
    const Py_ssize_t[::1] lengths, const double[:, ::1] rates, double l2, bint fast, double[:, ::1] history,
):
    """Online SGD for K networks of one architecture at once, the network index innermost in every buffer.

    ``weights`` is ``(n_weights, K)``, ``outputs`` and ``deltas`` ``(n_neurons, K)``;
    network ``k`` trains in epoch ``e`` on rows ``orders[e % len(orders), k, :lengths[k]]``
    at rate ``rates[e, k]`` with L2 factor ``l2``, and its loss goes to ``history[e, k]``:
    the arithmetic of ``train_online`` with plain SGD, network by network, as the
    Numba backend's ``train_lockstep`` (a network with fewer rows than the longest
    sits out the remaining steps with zero step and decay).
    """
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], &acts[0], fast)
    cdef Py_ssize_t n_nets = weights.shape[1]
    cdef Py_ssize_t n_outputs = sizes[net.n_layers]
    cdef Py_ssize_t n_scratch = n_nets * (sizes[0] + n_outputs + 13) + n_outputs
    cdef size_t size = n_nets * sizeof(Py_ssize_t) + n_scratch * sizeof(floating)
    # One block: the row indices, then the float scratch (8-byte aligned after them).
    cdef Py_ssize_t* rows = <Py_ssize_t*>malloc(size)
    if rows == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_lockstep(
                &weights[0, 0], n_nets, &net, &outputs[0, 0], &deltas[0, 0], &X[0, 0], X.shape[1], &Y[0, 0],
                Y.shape[1], &sw[0], &orders[0, 0, 0], orders.shape[0], orders.shape[2], &lengths[0], &rates[0, 0],
                l2, &history[0, 0], history.shape[0], rows, <floating*>(rows + n_nets),
            )
    finally:
        free(rows)


def train_batches(
    floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes, const Py_ssize_t[::1] acts,
    floating[::1] grad, floating[::1] state, const floating[:, ::1] X, const floating[:, ::1] Y,
    const floating[::1] sw, const Py_ssize_t[:, ::1] orders, Py_ssize_t batch_size, const double[::1] rates,
    const double[::1] hyper, Py_ssize_t rule, Py_ssize_t step0, double[::1] history, int n_threads,
):
    """Mini-batch training for ``len(history)`` epochs: one update per ``batch_size`` rows (the last may be short)."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], NULL, &acts[0], False)
    cdef Py_ssize_t n_rows = orders.shape[1]
    cdef floating* products
    cdef floating* deltas
    cdef floating* deltas_t
    cdef Py_ssize_t side_size
    cdef floating* activations = _batch_buffers(
        &net, min(batch_size, n_rows), &products, &deltas, &deltas_t, &side_size
    )
    try:
        with nogil:
            _train_batches(
                &weights[0], weights.shape[0], &net, &grad[0], &state[0], &X[0, 0], X.shape[1], &Y[0, 0],
                Y.shape[1], &sw[0], &orders[0, 0], orders.shape[0], n_rows, min(batch_size, n_rows), &rates[0],
                &hyper[0], rule, step0, &history[0], history.shape[0], activations, products, deltas, deltas_t,
                side_size, n_threads,
            )
    finally:
        free(activations)


def batch_gradient(
    const floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const Py_ssize_t[::1] acts, const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] sw,
    const Py_ssize_t[::1] rows, floating[::1] grad,
):
    """Mean weighted gradient of the loss over rows ``X[rows]``, into ``grad``; returns their loss sum."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], NULL, &acts[0], False)
    cdef floating* products
    cdef floating* deltas
    cdef floating* deltas_t
    cdef Py_ssize_t side_size
    cdef floating* activations = _batch_buffers(&net, rows.shape[0], &products, &deltas, &deltas_t, &side_size)
    cdef floating total_loss
    try:
        with nogil:
            total_loss = _batch_gradient(
                &weights[0], &net, &X[0, 0], X.shape[1], &Y[0, 0], Y.shape[1], &sw[0], &rows[0], rows.shape[0],
                &grad[0], activations, products, deltas, deltas_t, side_size, 1,
            )
    finally:
        free(activations)
    return total_loss


def predict_batch(
    const floating[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const Py_ssize_t[::1] acts, floating[::1] outputs, const Py_ssize_t[::1] o_off, const floating[:, ::1] X,
    floating[:, ::1] out, bint fast,
):
    """Write the output layer's values for every row of ``X`` into ``out``, with exact or fast sums."""
    cdef Network net = Network(sizes.shape[0] - 1, &sizes[0], &w_off[0], &o_off[0], &acts[0], fast)
    cdef Py_ssize_t last = o_off[net.n_layers - 1]
    cdef Py_ssize_t r, j
    with nogil:
        for r in range(X.shape[0]):
            _forward(&weights[0], &net, &outputs[0], &X[r, 0])
            for j in range(out.shape[1]):
                out[r, j] = outputs[last + j]

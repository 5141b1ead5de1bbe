# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
#
# The arithmetic the Cython backend's modules share, as inline functions compiled into each of them:
# the C structs the kernels pass the contract's bundles as, activations and their slopes, exp, softmax,
# the losses' errors and the optimizers' updates.  Each follows the Numba backend's function of the same
# name in fastbp/_kernels_numba/primitives.py operation by operation (whose docstrings say what they do with
# non-finite values), so the two backends agree bit for bit.  The float buffers are all float32 or all
# float64 (the fused type `floating`) and the arithmetic stays in that type.

from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.math cimport INFINITY, expf, isinf, log, logf, pow, sqrt, sqrtf, tanh, tanhf
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from fastbp._kernels_cython.constants cimport (
    ACTIVATION_EXP, ACTIVATION_LEAKY_RELU, ACTIVATION_RELU, ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX,
    ACTIVATION_TANH, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_SHIFT, EXP_TAYLOR, GEOMETRY_FAN_IN,
    LEAKY_SLOPE, LOG_FLOOR, LOSS_MSE, LOSS_POISSON, OPTIMIZER_ADAM, OPTIMIZER_MOMENTUM, OPTIMIZER_NESTEROV,
    OPTIMIZER_RMSPROP, OPTIMIZER_RPROP, OPTIMIZER_SGD, RPROP_DECREASE, RPROP_DELTA_MAX, RPROP_DELTA_MIN, RPROP_INCREASE,
)

ctypedef fused floating:
    float
    double


cdef struct Network:
    # fastbp._backends.Network, its arrays as pointers.
    Py_ssize_t n_layers
    const Py_ssize_t* sizes
    const Py_ssize_t* w_off
    const Py_ssize_t* o_off
    const Py_ssize_t* activations
    const Py_ssize_t* kinds
    # Layer k's row of the geometry (fastbp._constants.GEOMETRY_FIELDS, columns GEOMETRY_...) starts at
    # geometry + k * geometry_stride.
    const Py_ssize_t* geometry
    Py_ssize_t geometry_stride
    const double* dropout  # each layer's dropout rate
    bint exact  # the tutorial's arithmetic (inputs summed in order, libm's exp), or the fast mode
    Py_ssize_t loss  # the loss training takes the gradient of (LOSS_...)


cdef struct Layer:
    # One layer's shape and activation code, named, so that no call passes them as a row of integers.
    Py_ssize_t n_in
    Py_ssize_t n_out
    Py_ssize_t activation


cdef struct Data:
    # fastbp._backends.Data: C-contiguous arrays of the weights' type, which each fused function casts these
    # to (a struct cannot have fused members); X has net.sizes[0] columns, Y net.sizes[net.n_layers].
    const void* X
    const void* Y
    const void* sample_weight


cdef struct Schedule:
    # fastbp._backends.Schedule: epoch e (of n_epochs) visits the n_visits rows that start at
    # orders + (e % n_orders) * n_visits, at rate rates[e] (lockstep: n_nets such rows of orders, and of rates,
    # one per network).
    const Py_ssize_t* orders
    Py_ssize_t n_orders
    Py_ssize_t n_visits
    const double* rates
    Py_ssize_t n_epochs
    Py_ssize_t batch_size
    Py_ssize_t optimizer
    double momentum
    double l2
    double beta1
    double beta2
    double epsilon
    Py_ssize_t steps_done
    uint64_t seed  # keys the dropout masks


cdef inline Network network_of(object net) except *:
    """``net`` (a ``fastbp._backends.Network``, which the contract checked) as the kernels' struct: pointers into
    its arrays, which ``net`` keeps alive for the call."""
    cdef const Py_ssize_t[::1] sizes = net.sizes, w_off = net.w_off, o_off = net.o_off, acts = net.activations
    cdef const Py_ssize_t[::1] kinds = net.kinds
    cdef const Py_ssize_t[:, ::1] geometry = net.geometry
    cdef const double[::1] dropout = net.dropout
    return Network(
        n_layers=sizes.shape[0] - 1, sizes=&sizes[0], w_off=&w_off[0], o_off=&o_off[0], activations=&acts[0],
        kinds=&kinds[0], geometry=&geometry[0, 0], geometry_stride=geometry.shape[1], dropout=&dropout[0],
        exact=net.exact, loss=net.loss,
    )


cdef inline Layer nth_layer(const Network* net, Py_ssize_t k) noexcept nogil:
    """Layer ``k`` of ``net``."""
    return Layer(n_in=net.sizes[k], n_out=net.sizes[k + 1], activation=net.activations[k])


cdef inline Schedule schedule_settings(object schedule) except *:
    """The scalar fields of ``schedule`` (a ``fastbp._backends.Schedule``); the caller points it at the arrays."""
    return Schedule(
        orders=NULL, n_orders=0, n_visits=0, rates=NULL, n_epochs=0, batch_size=schedule.batch_size,
        optimizer=schedule.optimizer, momentum=schedule.momentum, l2=schedule.l2, beta1=schedule.beta1,
        beta2=schedule.beta2, epsilon=schedule.epsilon, steps_done=schedule.steps_done,
        seed=<uint64_t><long long>schedule.seed,  # as Numba's np.uint64 of the int64 seed
    )


cdef inline Schedule schedule_of(object schedule, Py_ssize_t n_epochs) except *:
    """``schedule`` (a ``fastbp._backends.Schedule`` of one row order per epoch) for ``n_epochs`` epochs, as the
    kernels' struct: pointers into its arrays, which ``schedule`` keeps alive for the call."""
    cdef const Py_ssize_t[:, ::1] orders = schedule.orders
    cdef const double[::1] rates = schedule.rates
    cdef Schedule settings = schedule_settings(schedule)
    settings.orders, settings.n_orders, settings.n_visits = &orders[0, 0], orders.shape[0], orders.shape[1]
    settings.rates, settings.n_epochs = &rates[0], n_epochs
    return settings


# libm's exp, or glibc's exp core where it has one (see fastbp._libm): a pointer of each module's own,
# which the module binds on import (bind_libm_exp).  expf has no wrapper to skip.
cdef extern from *:
    """
    #include <math.h>
    typedef double (*fastbp_double_function)(double);
    static fastbp_double_function fastbp_libm_exp = exp;
    static void fastbp_set_libm_exp(size_t address) { fastbp_libm_exp = (fastbp_double_function)address; }
    """
    double libm_exp "fastbp_libm_exp"(double) noexcept nogil
    void _set_libm_exp "fastbp_set_libm_exp"(size_t address) noexcept nogil


cdef extern from *:
    """
    /* The layered and mini-batch kernels run with the x86 processor's flush-to-zero and denormals-are-zero modes
       (MXCSR bits 15 and 6) on each thread that runs their work, as TensorFlow's kernels do: a confident float32
       network's tiny probabilities and errors would otherwise make subnormal numbers, each operation on which
       takes the processor about a hundred cycles. The Numba backend's ``flush_subnormals`` sets the same bits. */
    #if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
    #include <xmmintrin.h>
    static inline unsigned int fastbp_flush_subnormals(void) {
        unsigned int kept = _mm_getcsr();
        _mm_setcsr(kept | 0x8040u);
        return kept;
    }
    static inline void fastbp_restore_subnormals(unsigned int kept) { _mm_setcsr(kept); }
    #else
    static inline unsigned int fastbp_flush_subnormals(void) { return 0; }
    static inline void fastbp_restore_subnormals(unsigned int kept) { (void)kept; }
    #endif
    """
    unsigned int fastbp_flush_subnormals() noexcept nogil
    void fastbp_restore_subnormals(unsigned int kept) noexcept nogil


cdef inline void bind_libm_exp(object address) except *:
    """Point this module's ``libm_exp`` at ``address`` (``fastbp._libm.libm_address("exp")``), unless None."""
    if address is not None:
        _set_libm_exp(<size_t>address)


cdef inline floating _exp(floating a) noexcept nogil:
    if floating is float:
        return expf(a)
    else:
        return libm_exp(a)


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


cdef inline double fast_exp(double x) noexcept nogil:
    """fastbp's exp, operation for operation as the Numba backend's ``fast_exp`` (which says why)."""
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


cdef inline floating fast_sigmoid(floating a) noexcept nogil:
    """The fast mode's sigmoid, ``1 / (1 + exp(-a))`` with ``fast_exp``; run over a whole layer, it vectorises."""
    return <floating>1.0 / (<floating>1.0 + <floating>fast_exp(-a))


cdef inline floating sigmoid(floating a) noexcept nogil:
    """The exact sigmoid, with libm's exp: it overflows to inf for a < -709 (float32: -88), giving exactly 0."""
    return <floating>1.0 / (<floating>1.0 + _exp(-a))


cdef inline floating activation(floating a, Py_ssize_t code) noexcept nogil:
    """A neuron's output for weighted sum ``a``, in the exact arithmetic (softmax is a whole layer's)."""
    if code == ACTIVATION_SIGMOID:
        return sigmoid(a)
    if code == ACTIVATION_TANH:
        return _tanh(a)
    if code == ACTIVATION_RELU:
        # Not ``a if a > 0 else 0``, which would turn a nan sum (inf - inf) into a silent 0.
        return <floating>0.0 if a <= <floating>0.0 else a
    if code == ACTIVATION_LEAKY_RELU:
        return a if a > <floating>0.0 else <floating>LEAKY_SLOPE * a
    if code == ACTIVATION_EXP:
        return _exp(a)
    return a  # identity


cdef inline floating derivative(floating output, Py_ssize_t code) noexcept nogil:
    """The activation's slope, from the neuron's output (as the tutorial computes it)."""
    if code == ACTIVATION_SIGMOID:
        return output * (<floating>1.0 - output)
    if code == ACTIVATION_TANH:
        return <floating>1.0 - output * output
    if code == ACTIVATION_RELU:
        return <floating>1.0 if output > <floating>0.0 else <floating>0.0
    if code == ACTIVATION_LEAKY_RELU:
        return <floating>1.0 if output > <floating>0.0 else <floating>LEAKY_SLOPE
    return <floating>1.0  # identity


cdef inline void softmax(floating* values, Py_ssize_t n) noexcept nogil:
    """Replace ``values[:n]`` by their softmax, shifted by the maximum so exp cannot overflow.

    Where the largest logit is infinite, the entries equal to it share the
    probability equally and the others get 0; a nan logit gives nan outputs.
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


cdef inline floating output_error(
    floating output, floating target, Py_ssize_t code, Py_ssize_t loss_code, floating* delta
) noexcept nogil:
    """One output neuron's loss by ``loss_code``, as the Numba backend's ``output_error``; its delta into
    ``delta``."""
    cdef floating diff, loss, other, p
    cdef floating floor = <floating>LOG_FLOOR
    cdef floating eps = <floating>(FLT_EPSILON if floating is float else DBL_EPSILON)
    if loss_code == LOSS_MSE:
        diff = target - output
        delta[0] = (output - target) * derivative(output, code)
        return diff * diff
    delta[0] = output - target
    if loss_code == LOSS_POISSON:
        loss = target * (_log(target) - _log(_max(output, floor))) if target != <floating>0.0 else <floating>0.0
        return loss - target + output
    if code == ACTIVATION_SOFTMAX:
        return -target * _log(_max(output, floor)) if target != <floating>0.0 else <floating>0.0
    p = _min(_max(output, eps), <floating>1.0 - eps)
    other = <floating>1.0 - target  # the unit's second class
    loss = -target * _log(p) if target != <floating>0.0 else <floating>0.0
    if other != <floating>0.0:
        loss -= other * _log(<floating>1.0 - p)
    return loss


cdef inline void optimizer_step(
    const Network* net, floating* weights, const floating* grad, floating* state, const Schedule* schedule,
    double rate, Py_ssize_t step,
) noexcept nogil:
    """Apply gradient ``grad`` by ``schedule.optimizer`` at learning rate ``rate``; ``step`` counts updates from 1.

    The optimizers, their ``state`` (two buffers of ``len(weights)``) and the L2
    decay (biases excepted) are those of the Numba backend's ``optimizer_step``.
    """
    optimizer_step_over(net, weights, grad, state, schedule, rate, step, 0, net.w_off[net.n_layers])


cdef inline Py_ssize_t row_start(const Network* net, Py_ssize_t at) noexcept nogil:
    """The first weight of the row (a unit's weights, then its bias) that weight ``at`` is in; ``at`` past the
    last row."""
    cdef Py_ssize_t k, width
    for k in range(net.n_layers):
        if at < net.w_off[k + 1]:
            width = net.geometry[k * net.geometry_stride + GEOMETRY_FAN_IN] + 1
            return net.w_off[k] + (at - net.w_off[k]) // width * width
    return at


cdef inline void optimizer_step_over(
    const Network* net, floating* weights, const floating* grad, floating* state, const Schedule* schedule,
    double rate, Py_ssize_t step, Py_ssize_t first, Py_ssize_t last,
) noexcept nogil:
    """``optimizer_step`` on weights ``first`` to ``last`` (exclusive) alone, each at the start of a unit's row
    (``row_start``) or at the end: each weight's update reads only its own gradient and state, so a step shared
    out in ranges gives every weight the same bits.

    Each optimizer gets a copy of the loop with its code a constant, so the
    compiler drops the other optimizers' branches from the loop over the weights
    and vectorises it.
    """
    if schedule.optimizer == OPTIMIZER_SGD:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_SGD)
    elif schedule.optimizer == OPTIMIZER_MOMENTUM:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_MOMENTUM)
    elif schedule.optimizer == OPTIMIZER_NESTEROV:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_NESTEROV)
    elif schedule.optimizer == OPTIMIZER_ADAM:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_ADAM)
    elif schedule.optimizer == OPTIMIZER_RMSPROP:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_RMSPROP)
    else:
        _optimizer_loop(net, weights, grad, state, schedule, rate, step, first, last, OPTIMIZER_RPROP)


cdef inline void _optimizer_loop(
    const Network* net, floating* weights, const floating* grad, floating* state, const Schedule* schedule,
    double rate, Py_ssize_t step, Py_ssize_t first, Py_ssize_t last, Py_ssize_t optimizer,
) noexcept nogil:
    """``optimizer_step_over``'s loop for one optimizer."""
    cdef Py_ssize_t n_w = net.w_off[net.n_layers]
    cdef Py_ssize_t i, j, k, p, n_in, neuron, start, end
    cdef floating l2 = <floating>schedule.l2
    cdef floating momentum = <floating>schedule.momentum
    cdef floating beta1 = <floating>schedule.beta1
    cdef floating beta2 = <floating>schedule.beta2
    cdef floating epsilon = <floating>schedule.epsilon
    cdef floating l_rate = <floating>rate
    cdef floating adam_rate = 0.0
    cdef floating g, velocity, m, v, change
    if optimizer == OPTIMIZER_ADAM:
        adam_rate = <floating>(
            rate * sqrt(1.0 - _power(schedule.beta2, step)) / (1.0 - _power(schedule.beta1, step))
        )
    for k in range(net.n_layers):
        start, end = net.w_off[k], net.w_off[k + 1]
        if end <= first or start >= last:
            continue
        # A layer's weight block: units rows of fan_in weights and a bias (none for a layer without weights); its
        # rows in first to last.
        n_in = net.geometry[k * net.geometry_stride + GEOMETRY_FAN_IN]
        for j in range((max(first, start) - start) // (n_in + 1), (min(last, end) - start) // (n_in + 1)):
            neuron = start + j * (n_in + 1)
            for i in range(n_in + 1):
                p = neuron + i
                g = grad[p] + l2 * weights[p] if i < n_in else grad[p]
                if optimizer == OPTIMIZER_SGD:
                    weights[p] -= l_rate * g
                elif optimizer == OPTIMIZER_MOMENTUM or optimizer == OPTIMIZER_NESTEROV:
                    velocity = momentum * state[p] - l_rate * g
                    state[p] = velocity
                    weights[p] += velocity if optimizer == OPTIMIZER_MOMENTUM else momentum * velocity - l_rate * g
                elif optimizer == OPTIMIZER_ADAM:
                    m = beta1 * state[p] + (<floating>1.0 - beta1) * g
                    v = beta2 * state[n_w + p] + (<floating>1.0 - beta2) * (g * g)
                    state[p] = m
                    state[n_w + p] = v
                    weights[p] -= adam_rate * m / (_sqrt(v) + epsilon)
                elif optimizer == OPTIMIZER_RMSPROP:  # the schedule's beta2 is its rho
                    v = beta2 * state[n_w + p] + (<floating>1.0 - beta2) * (g * g)
                    state[n_w + p] = v
                    weights[p] -= l_rate * g / _sqrt(v + epsilon)
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

"""The Numba kernels' arithmetic on single values, rows and layers: activations and their slopes (of a value,
and a row's in one loop per activation), exp, softmax, the losses' errors, the optimizers' updates, a row's
copy, and BLAS's matrix product (``gemm``), which both the mini-batch and the layered kernels call.

The functions on single values are inlined into the kernels that call them (but ``fast_exp``, which LLVM
inlines); the row loops ``activate_row`` and ``derive_row`` are compiled once on their own and called.  Those
that compute take the buffers' scalar type ``dt``, since a bare ``1.0`` would promote float32 arithmetic to
float64.  Non-finite values follow IEEE arithmetic, with the limits kept where they exist: sigmoid and tanh
saturate (``exp`` overflowing to inf gives exactly 0 or 1), and a softmax whose largest logit is infinite gives
the entries equal to it equal shares of the probability and the others 0; every activation passes ``nan`` on
(relu too), for the Python layer to refuse.
"""

import math

import numpy as np
from numba import njit

from .._concepts import ActivationCode, LossCode, OptimizerCode
from .._constants import (
    EXP_LN2_HI,
    EXP_LN2_LO,
    EXP_LOG2E,
    EXP_SHIFT,
    EXP_TAYLOR,
    LEAKY_SLOPE,
    LOG_FLOOR,
    RPROP_DECREASE,
    RPROP_DELTA_MAX,
    RPROP_DELTA_MIN,
    RPROP_INCREASE,
    Geometry,
)
from .config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS
from .llvm import bits, blas_dgemm, blas_sgemm, from_bits, libm_exp

ONE = np.uintp(1)
#: gemm's ``op``: the matrix as it is stored, or transposed (Fortran's characters). Numba types a Python int
#: constant by its value, and compiles a function once for each value passed: these and ``START`` are NumPy
#: integers, so that ``gemm`` compiles once per dtype.
AS_IS = np.int32(ord("N"))
TRANSPOSED = np.int32(ord("T"))
#: A matrix's start at its buffer's first value.
START = np.intp(0)


@njit(**NUMBA_OPTIONS)  # not inlined by Numba (LLVM inlines it): compiled into every caller, it cost seconds
def fast_exp(x):
    """``exp(x)`` in float64 from additions and multiplications only, so a loop of them vectorises.

    Cody-Waite reduction ``x = n ln2 + r``, ``|r| <= ln2 / 2``; Taylor's series to
    ``r**13 / 13!`` (truncated below 5e-18 of the result) by Estrin's scheme; and
    ``2**n`` made from its bits (constants: :mod:`fastbp._constants`).  Within two
    units in the last place of libm's exp; 0 below -708 and inf above 709, where a
    sigmoid is 1 or 0 to the last bit either way; ``nan`` stays ``nan``.  The Cython
    backend computes it operation for operation alike.
    """
    c = EXP_TAYLOR
    shifted = x * EXP_LOG2E + EXP_SHIFT  # n lands in the low bits of the mantissa
    n = shifted - EXP_SHIFT
    r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO
    r2 = r * r
    r4 = r2 * r2
    low = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2
    middle = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2
    high = ((c[8] + c[9] * r) + (c[10] + c[11] * r) * r2) + (c[12] + c[13] * r) * r4
    p = (low + middle * r4) + high * (r4 * r4)
    value = p * from_bits((bits(shifted) + np.int64(1023)) << np.int64(52))
    value = 0.0 if x < -708.0 else value
    return np.inf if x > 709.0 else value


@njit(**NUMBA_INLINED_OPTIONS)
def fast_sigmoid(a, dt):
    """The fast mode's sigmoid, ``1 / (1 + exp(-a))`` with ``fast_exp``; run over a whole layer, it vectorises."""
    return dt(1.0) / (dt(1.0) + dt(fast_exp(np.float64(-a))))


@njit(**NUMBA_INLINED_OPTIONS)
def sigmoid(a, dt):
    """The exact sigmoid, ``1 / (1 + exp(-a))`` with libm's exp, which overflows to inf below -709 (float32:
    -88), giving exactly 0: no nan."""
    return dt(1.0) / (dt(1.0) + libm_exp(-a))


@njit(**NUMBA_INLINED_OPTIONS)
def activation(a, code, dt):
    """A neuron's output for weighted sum ``a``, in the exact arithmetic (softmax is a whole layer's)."""
    if code == ActivationCode.SIGMOID:
        return sigmoid(a, dt)
    if code == ActivationCode.TANH:
        return math.tanh(a)
    if code == ActivationCode.RELU:
        # Not ``a if a > 0 else 0``, which would turn a nan sum (inf - inf) into a silent 0.
        return dt(0.0) if a <= dt(0.0) else a
    if code == ActivationCode.LEAKY_RELU:
        return a if a > dt(0.0) else dt(LEAKY_SLOPE) * a
    if code == ActivationCode.EXP:
        return libm_exp(a)
    return a  # identity


@njit(**NUMBA_INLINED_OPTIONS)
def derivative(output, code, dt):
    """The activation's slope, from the neuron's output (as the tutorial computes it)."""
    if code == ActivationCode.SIGMOID:
        return output * (dt(1.0) - output)
    if code == ActivationCode.TANH:
        return dt(1.0) - output * output
    if code == ActivationCode.RELU:
        return dt(1.0) if output > dt(0.0) else dt(0.0)
    if code == ActivationCode.LEAKY_RELU:
        return dt(1.0) if output > dt(0.0) else dt(LEAKY_SLOPE)
    return dt(1.0)  # identity


@njit(**NUMBA_INLINED_OPTIONS)
def copy_values(source, to, to_at, n):
    """``to[to_at : to_at + n] = source[:n]`` by a loop: Numba copies a slice one value at a time, testing each
    index (about three times as long for an image's row)."""
    to_at = np.uintp(to_at)
    for i in range(np.uintp(n)):
        to[to_at + i] = source[i]


@njit(**NUMBA_INLINED_OPTIONS)
def _same_place(a, a_at, b, b_at):
    """Whether ``a[a_at:]`` and ``b[b_at:]`` are the same values.  A row loop given one array in place passes it
    twice, as one array: LLVM's check that two arrays do not overlap fails for one array in place, and its
    loops would take their scalar version."""
    return a_at == b_at and a.ctypes.data == b.ctypes.data


@njit(**NUMBA_OPTIONS)
def activate_row(sums, start, values, to, n, code, dt):
    """``values[to : to + n]`` = the activation ``code`` of ``sums[start : start + n]`` (softmax: the sums as
    they are, for ``softmax`` to normalise), which may be where the values go.  One loop per activation, its code
    a constant, so that each compiles to vector instructions without a branch per value; in place, the loops
    read and write ``values`` alone (``_same_place``)."""
    start, to, n = np.uintp(start), np.uintp(to), np.uintp(n)
    if _same_place(values, to, sums, start):
        _activate_loops(values, to, values, to, n, code, dt)
    else:
        _activate_loops(sums, start, values, to, n, code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _activate_loops(sums, start, values, to, n, code, dt):
    """``activate_row``'s loops, one per activation."""
    if code == ActivationCode.RELU:
        for j in range(n):
            values[to + j] = activation(sums[start + j], ActivationCode.RELU, dt)
    elif code == ActivationCode.LEAKY_RELU:
        for j in range(n):
            values[to + j] = activation(sums[start + j], ActivationCode.LEAKY_RELU, dt)
    elif code == ActivationCode.SIGMOID:
        for j in range(n):
            values[to + j] = activation(sums[start + j], ActivationCode.SIGMOID, dt)
    elif code == ActivationCode.TANH:
        for j in range(n):
            values[to + j] = activation(sums[start + j], ActivationCode.TANH, dt)
    elif code == ActivationCode.EXP:
        for j in range(n):
            values[to + j] = activation(sums[start + j], ActivationCode.EXP, dt)
    else:  # identity and softmax
        for j in range(n):
            values[to + j] = sums[start + j]


@njit(**NUMBA_OPTIONS)
def derive_row(to, to_at, errors, start, values, at, n, code, dt):
    """``errors[start : start + n]`` times the slopes of activation ``code`` at the outputs ``values[at:]`` into
    ``to[to_at:]`` (which may be where the errors are), one loop per activation as in ``activate_row``; identity's
    errors as they are.  In place, the loops read and write ``to`` alone (``_same_place``)."""
    to_at, start, at, n = np.uintp(to_at), np.uintp(start), np.uintp(at), np.uintp(n)
    if _same_place(to, to_at, errors, start):
        _derive_loops(to, to_at, to, to_at, values, at, n, code, dt)
    else:
        _derive_loops(to, to_at, errors, start, values, at, n, code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _derive_loops(to, to_at, errors, start, values, at, n, code, dt):
    """``derive_row``'s loops, one per activation."""
    if code == ActivationCode.RELU:
        for j in range(n):
            to[to_at + j] = errors[start + j] * derivative(values[at + j], ActivationCode.RELU, dt)
    elif code == ActivationCode.LEAKY_RELU:
        for j in range(n):
            to[to_at + j] = errors[start + j] * derivative(values[at + j], ActivationCode.LEAKY_RELU, dt)
    elif code == ActivationCode.SIGMOID:
        for j in range(n):
            to[to_at + j] = errors[start + j] * derivative(values[at + j], ActivationCode.SIGMOID, dt)
    elif code == ActivationCode.TANH:
        for j in range(n):
            to[to_at + j] = errors[start + j] * derivative(values[at + j], ActivationCode.TANH, dt)
    else:
        for j in range(n):
            to[to_at + j] = errors[start + j]


@njit(**NUMBA_INLINED_OPTIONS)
def softmax(values, off, n, dt):
    """Replace ``values[off : off + n]`` by their softmax, shifted by the maximum so exp cannot overflow.

    Its limit where the largest logit is infinite (an overflowed weighted sum):
    the entries equal to it share the probability equally, the others get 0
    (all share it when every logit is -inf).  A nan logit gives nan outputs.
    """
    off, n = np.uintp(off), np.uintp(n)
    top = values[off]
    for j in range(ONE, n):
        top = max(top, values[off + j])
    if math.isinf(top):  # values - top would be inf - inf = nan
        ties = dt(0.0)
        for j in range(n):
            ties += dt(1.0) if values[off + j] == top else dt(0.0)
        for j in range(n):
            v = values[off + j]
            values[off + j] = dt(1.0) / ties if v == top else (dt(0.0) if v == v else v)  # nan stays nan
        return
    total = dt(0.0)
    for j in range(n):
        e = libm_exp(values[off + j] - top)
        values[off + j] = e
        total += e
    for j in range(n):
        values[off + j] /= total


@njit(**NUMBA_INLINED_OPTIONS)
def output_error(output, target, code, loss_code, dt):
    """``(loss, delta)`` of one output neuron of activation ``code``, by loss ``loss_code`` (see ``LOSSES``).

    The cross-entropy and the Poisson deviance come with the outputs whose delta is
    ``output - target`` (softmax or sigmoid; exp), and a zero target's term is 0.  A
    softmax's probabilities and exp's rates are floored at ``LOG_FLOOR`` in the
    logarithm; a sigmoid unit's probability is clipped to ``[eps, 1 - eps]`` (the
    dtype's epsilon) as scikit-learn clips it, so a saturated unit's loss stays near
    ``-log(eps)`` rather than jumping to ``-log(LOG_FLOOR)`` once ``1 - p`` rounds to 0.
    """
    if loss_code == LossCode.MSE:
        diff = target - output
        return diff * diff, (output - target) * derivative(output, code, dt)
    floor = dt(LOG_FLOOR)
    if loss_code == LossCode.POISSON:
        loss = target * (math.log(target) - math.log(max(output, floor))) if target != dt(0.0) else dt(0.0)
        return loss - target + output, output - target
    if code == ActivationCode.SOFTMAX:
        return (-target * math.log(max(output, floor)) if target != dt(0.0) else dt(0.0)), output - target
    eps = dt(np.finfo(dt).eps)
    p = min(max(output, eps), dt(1.0) - eps)
    other = dt(1.0) - target  # the unit's second class
    loss = -target * math.log(p) if target != dt(0.0) else dt(0.0)
    if other != dt(0.0):
        loss -= other * math.log(dt(1.0) - p)
    return loss, output - target


@njit(**NUMBA_INLINED_OPTIONS)
def optimizer_step(net, weights, grad, optimizer_state, schedule, rate, step):
    """Apply gradient ``grad`` by ``schedule.optimizer`` at learning rate ``rate``; ``step`` counts updates from 1.

    L2 decay adds ``l2 * w`` to the gradient of every weight but the biases.  The
    optimizers and their state (two buffers of ``len(weights)``): SGD
    ``w -= rate * g``; momentum ``v = momentum * v - rate * g; w += v``; Nesterov
    ``w += momentum * v - rate * g`` with the new ``v``; Adam with scikit-learn's
    bias-corrected rate; iRprop- (``rate`` unused), whose first buffer holds the step
    sizes and second the previous gradient.
    """
    optimizer_step_over(net, weights, grad, optimizer_state, schedule, rate, step, 0, weights.shape[0])


@njit(**NUMBA_INLINED_OPTIONS)
def row_start(net, at):
    """The first weight of the row (a unit's weights, then its bias) that weight ``at`` is in; ``at`` past the
    last row."""
    for k in range(net.sizes.shape[0] - 1):
        if at < net.w_off[k + 1]:
            width = net.geometry[k, Geometry.FAN_IN] + 1
            return net.w_off[k] + (at - net.w_off[k]) // width * width
    return at


@njit(**NUMBA_INLINED_OPTIONS)
def optimizer_step_over(net, weights, grad, optimizer_state, schedule, rate, step, first, last):
    """``optimizer_step`` on weights ``first`` to ``last`` (exclusive) alone, each at the start of a unit's row
    (``row_start``) or at the end: each weight's update reads only its own gradient and state, so a step shared
    out in ranges gives every weight the same bits."""
    dt = weights.dtype.type
    state = optimizer_state
    optimizer = schedule.optimizer
    n_w = np.uintp(weights.shape[0])
    l2, momentum = dt(schedule.l2), dt(schedule.momentum)
    beta1, beta2, epsilon = dt(schedule.beta1), dt(schedule.beta2), dt(schedule.epsilon)
    adam_rate = dt(0.0)
    if optimizer == OptimizerCode.ADAM:
        adam_rate = dt(rate * math.sqrt(1.0 - schedule.beta2**step) / (1.0 - schedule.beta1**step))
    l_rate = dt(rate)
    for k in range(net.sizes.shape[0] - 1):
        start, end = net.w_off[k], net.w_off[k + 1]
        if end <= first or start >= last:
            continue
        # The layer's rows of fan_in weights and a bias in first to last, the indexes unsigned.
        n_in = np.uintp(net.geometry[k, Geometry.FAN_IN])
        width = n_in + ONE
        for j in range(np.uintp(max(first, start) - start) // width, np.uintp(min(last, end) - start) // width):
            neuron = np.uintp(start) + j * width
            for i in range(width):
                p = neuron + i
                weight = weights[p]  # loaded before the bias's test: a select (loaded under it, LLVM branches)
                g = grad[p] + l2 * weight if i < n_in else grad[p]
                if optimizer == OptimizerCode.SGD:
                    weights[p] -= l_rate * g
                elif optimizer == OptimizerCode.MOMENTUM or optimizer == OptimizerCode.NESTEROV:
                    velocity = momentum * state[p] - l_rate * g
                    state[p] = velocity
                    weights[p] += velocity if optimizer == OptimizerCode.MOMENTUM else momentum * velocity - l_rate * g
                elif optimizer == OptimizerCode.ADAM:
                    m = beta1 * state[p] + (dt(1.0) - beta1) * g
                    v = beta2 * state[n_w + p] + (dt(1.0) - beta2) * (g * g)
                    state[p], state[n_w + p] = m, v
                    weights[p] -= adam_rate * m / (math.sqrt(v) + epsilon)
                elif optimizer == OptimizerCode.RMSPROP:  # the schedule's beta2 is its rho
                    v = beta2 * state[n_w + p] + (dt(1.0) - beta2) * (g * g)
                    state[n_w + p] = v
                    weights[p] -= l_rate * g / math.sqrt(v + epsilon)
                else:  # RPROP
                    change = g * state[n_w + p]
                    if change > dt(0.0):
                        state[p] = min(state[p] * dt(RPROP_INCREASE), dt(RPROP_DELTA_MAX))
                    elif change < dt(0.0):
                        state[p] = max(state[p] * dt(RPROP_DECREASE), dt(RPROP_DELTA_MIN))
                        g = dt(0.0)
                    if g > dt(0.0):
                        weights[p] -= state[p]
                    elif g < dt(0.0):
                        weights[p] += state[p]
                    state[n_w + p] = g


@njit(**NUMBA_OPTIONS)
def gemm(op_a, a, op_b, b, c, beta, shape, blas):
    """Row-major ``c = op_a(a) @ op_b(b) + beta * c``, ``shape`` being ``(m, n, k)`` (``c`` is ``m x n``).

    Each matrix is ``(buffer, start, leading dimension)``.  BLAS is column-major,
    where a row-major matrix reads as its transpose, so this computes
    ``c.T = op_b(b).T @ op_a(a).T``.  ``blas`` is the caller's ``(int32[8],
    floats[2])``: Fortran passes every argument by address, and these stay alive
    across the call.  The characters are int32 whose first byte is the character
    (little-endian, as every platform fastbp builds on).
    """
    ints, scalars = blas
    m, n, k = shape
    a_buffer, a_start, lda = a
    b_buffer, b_start, ldb = b
    c_buffer, c_start, ldc = c
    ints[0], ints[1], ints[2] = n, m, k
    ints[3], ints[4], ints[5] = ldb, lda, ldc
    ints[6], ints[7] = op_b, op_a
    scalars[0] = 1.0
    scalars[1] = beta
    size = np.uintp(c_buffer.itemsize)
    at = ints.ctypes.data
    four = np.uintp(4)
    arguments = (
        at + np.uintp(6) * four, at + np.uintp(7) * four, at, at + four, at + np.uintp(2) * four,
        scalars.ctypes.data, b_buffer.ctypes.data + np.uintp(b_start) * size, at + np.uintp(3) * four,
        a_buffer.ctypes.data + np.uintp(a_start) * size, at + np.uintp(4) * four, scalars.ctypes.data + size,
        c_buffer.ctypes.data + np.uintp(c_start) * size, at + np.uintp(5) * four,
    )  # fmt: skip
    if c_buffer.itemsize == 4:
        blas_sgemm(*arguments)
    else:
        blas_dgemm(*arguments)

"""Numba backend: the kernels of the flat-buffer contract, compiled in nopython mode.

Every compiled backend module exposes the same functions with the same
arguments, in the order model, scratch, data, scalars (see :mod:`fastbp._layout`
for the buffers and :mod:`fastbp._codes` for the activation and update-rule
codes); the reference backend provides the three the API drives
(``train_online``, ``train_batches``, ``predict_batch``):

* ``forward_propagate(weights, w_off, sizes, acts, outputs, o_off, x)``
* ``backward_propagate_error(weights, w_off, sizes, acts, outputs, o_off, deltas, expected) -> float``
* ``update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate)``
* ``train_online(weights, w_off, sizes, acts, outputs, o_off, deltas, grad, state,
  X, Y, sw, orders, rates, hyper, rule, fast, step0, history)``
* ``train_batches(weights, w_off, sizes, acts, grad, state,
  X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history, n_threads)``
* ``batch_gradient(weights, w_off, sizes, acts, X, Y, sw, rows, grad) -> float``
* ``predict_batch(weights, w_off, sizes, acts, outputs, o_off, X, out, fast)``

The float buffers (``weights``, ``outputs``, ``deltas``, ``grad``, ``state``,
``X``, ``Y``, ``sw``) share one dtype, float32 or float64, and all arithmetic
stays in it; ``rates``, ``hyper`` and ``history`` are float64, the integer
arrays intp.  Epoch ``e`` visits rows ``orders[e % len(orders)]`` at learning rate
``rates[e]``, and ``history[e]`` receives its loss summed over rows, each row's
weighted by ``sw``: the tutorial's squared error ``sum((target - output)**2)``,
or the cross-entropy ``-sum(target * log(p))`` for a softmax output.  The
gradient is that of ``0.5 * sum((output - target)**2)`` (whose delta is the
tutorial's) or of the cross-entropy, times the row's weight, averaged over the
batch; ``hyper`` holds the update rule's settings (:data:`fastbp._codes.HYPER`),
``state`` its per-weight memory, and ``step0`` the updates done before the call.

Kernels mutate their buffers in place and trust their inputs, checked by
:mod:`fastbp._api`.  With ``fast`` false the online kernels follow
:mod:`fastbp.reference` operation by operation (bias first, then inputs in
ascending order; no fastmath), so with plain SGD they agree with it bit for bit;
``train_online`` runs each row's SGD update in the same pass as the next row's
forward pass (``_sgd_step_ahead``), which reorders loops but no arithmetic.
With ``fast`` true each neuron's weighted sum runs in eight interleaved partial
sums (see ``_weighted_sum``), and the sigmoid takes fastbp's own exp
(``_fast_exp``) in a loop of its own per layer, which both vectorise: a fixed,
documented arithmetic, the same in every backend, so results stay deterministic
and backends still agree.  The mini-batch kernels work on whole
batches with matrix products (BLAS through ``np.dot``); each activation matrix
carries a column of ones so one product also applies the biases.  The products
are cut into blocks of neurons or of rows, whose size depends on the batch's row
count alone (:func:`fastbp._codes.block_size`), that ``n_threads`` threads share,
so the thread count never changes a result.

Non-finite values follow IEEE arithmetic, with the limits kept where they exist:
sigmoid and tanh saturate (``exp`` overflowing to inf gives exactly 0 or 1), and a
softmax whose largest logit is infinite gives the entries equal to it equal
shares of the probability and the others 0.  A weighted sum that overflows into
``inf - inf`` or ``0 * inf`` is ``nan``, and every activation passes ``nan`` on
(relu too: it does not turn it into 0), so it reaches the outputs and the loss.
The kernels do not check for it, to keep the loops lean: the Python layer
refuses non-finite losses, weights and outputs (:mod:`fastbp._training`).  None
of this changes a result computed from finite values.

Offsets and loop counters of the online kernels are cast to unsigned
(``uintp``) before indexing: Numba checks every signed index for Python's
negative wraparound, and those checks (plus the registers they tie up) cost
about 30% of the epoch time.  Mixing signed and unsigned integers would make
Numba compute in float64, so every integer operand of an index expression is
unsigned, constants included.  Float constants are built with the buffers'
scalar type ``dt``, since a bare ``1.0`` would promote float32 arithmetic.
"""

import math
import threading
import types

import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import config, get_num_threads, njit, prange, set_num_threads
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._codes import (
    ADAM,
    EXP_LN2_HI,
    EXP_LN2_LO,
    EXP_LOG2E,
    EXP_SHIFT,
    EXP_TAYLOR,
    H_BETA1,
    H_BETA2,
    H_EPSILON,
    H_L2,
    H_MOMENTUM,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOG_FLOOR,
    MOMENTUM,
    NESTEROV,
    RELU,
    RPROP_DECREASE,
    RPROP_DELTA_MAX,
    RPROP_DELTA_MIN,
    RPROP_INCREASE,
    SGD,
    SIGMOID,
    SOFTMAX,
    TANH,
)
from ._codes import block_size as _block_size
from ._config import NUMBA_INLINED_OPTIONS, NUMBA_NO_REFCOUNT_OPTIONS, NUMBA_OPTIONS
from ._libm import libm_address

ONE = np.uintp(1)
block_size = njit(**NUMBA_INLINED_OPTIONS)(_block_size)
#: The most threads ``train_batches`` may start (Numba's NUMBA_NUM_THREADS, fixed when the process starts).
MAX_THREADS = config.NUMBA_NUM_THREADS
#: Held while ``train_batches`` runs on several threads: Numba's fallback threading layer (workqueue) aborts
#: the process if two threads launch parallel loops at once.
PARALLEL_LOCK = threading.Lock()


@intrinsic
def _bits(typingctx, value):
    """The bits of a float64 as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return numba_types.int64(numba_types.float64), codegen


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose bits are the int64 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return numba_types.float64(numba_types.int64), codegen


#: The fast mode's partial sums (see ``_weighted_sum``).
LANES = 8


def _lane_sums_codegen(update: bool):
    """LLVM code for the fast mode's eight partial sums as one vector of eight: see ``_lane_sums``."""

    def codegen(context, builder, signature, args):
        if update:  # ``weighed``: the inputs the (updated) weights multiply
            weights, neuron, inputs, weighed, in_off, count, step = args
        else:
            weights, neuron, weighed, in_off, count = args
        dtype = signature.args[0].dtype
        scalar, align = context.get_value_type(dtype), dtype.bitwidth // 8
        vector = ir.VectorType(scalar, LANES)

        def base(array_type, array, offset):
            data = context.make_array(array_type)(context, builder, array).data
            return builder.gep(data, [offset])

        def load(pointer, i):
            return builder.load(builder.bitcast(builder.gep(pointer, [i]), vector.as_pointer()), align=align)

        w_base = base(signature.args[0], weights, neuron)
        weighed_base = base(signature.args[3 if update else 2], weighed, in_off)
        if update:
            x_base = base(signature.args[2], inputs, in_off)
            step = context.cast(builder, step, signature.args[6], dtype)
            steps = ir.Constant(vector, ir.Undefined)
            for k in range(LANES):
                steps = builder.insert_element(steps, step, ir.Constant(ir.IntType(32), k))
        total = cgutils.alloca_once_value(builder, ir.Constant(vector, [ir.Constant(scalar, 0.0)] * LANES))
        zero, stride = ir.Constant(count.type, 0), ir.Constant(count.type, LANES)
        with cgutils.for_range_slice(builder, zero, count, stride, inc=True) as (i, _):
            w = load(w_base, i)
            if update:
                w = builder.fsub(w, builder.fmul(steps, load(x_base, i)))
                builder.store(w, builder.bitcast(builder.gep(w_base, [i]), vector.as_pointer()), align=align)
            builder.store(builder.fadd(builder.load(total), builder.fmul(w, load(weighed_base, i))), total)
        value = builder.load(total)
        lanes = [builder.extract_element(value, ir.Constant(ir.IntType(32), k)) for k in range(LANES)]
        return context.make_tuple(builder, signature.return_type, lanes)

    return codegen


@intrinsic
def _lane_sums(typingctx, weights, neuron, inputs, in_off, count):
    """The fast mode's partial sums: lane ``k`` adds ``weights[neuron + i] * inputs[in_off + i]`` for
    ``i % 8 == k``, ``i < count`` (a multiple of 8), in order, from 0.

    Written as LLVM vector code: Numba's LLVM leaves eight scalar accumulators
    scalar (its SLP vectoriser is off), where gcc runs them as vector code.  Each
    lane's additions are the scalar code's, in its order: the same bits.
    """
    return numba_types.UniTuple(weights.dtype, LANES)(weights, neuron, inputs, in_off, count), _lane_sums_codegen(False)


@intrinsic
def _stepped_lane_sums(typingctx, weights, neuron, inputs, next_inputs, in_off, count, step):
    """``_lane_sums`` of ``next_inputs``, each weight first updated in place, ``w -= step * inputs[in_off + i]``."""
    signature = numba_types.UniTuple(weights.dtype, LANES)(weights, neuron, inputs, next_inputs, in_off, count, step)
    return signature, _lane_sums_codegen(True)


def _libm_function(name: str, signature):
    """The C library's ``name`` as a Numba external function (see :mod:`fastbp._libm`), or None."""
    address = libm_address(name)
    if address is None:
        return None
    symbol = f"fastbp_libm_{name}"
    llvmlite.binding.add_symbol(symbol, address)
    return numba_types.ExternalFunction(symbol, signature)


#: The C library's exp per float type (None: Numba's ``math.exp``).
_LIBM_EXP = {
    numba_types.float64: _libm_function("exp", numba_types.float64(numba_types.float64)),
    numba_types.float32: _libm_function("expf", numba_types.float32(numba_types.float32)),
}


def libm_exp(x):
    """``math.exp(x)``, which in compiled code calls the C library's exp directly (see :mod:`fastbp._libm`)."""
    return math.exp(x)


@overload(libm_exp, inline="always")
def _libm_exp(x):
    function = _LIBM_EXP.get(x)
    if function is None:
        return lambda x: math.exp(x)
    return lambda x: function(x)


@njit(**NUMBA_OPTIONS)  # not inlined by Numba (LLVM inlines it): compiling it into every caller took seconds
def _fast_exp(x):
    """``exp(x)`` in float64 from additions and multiplications only, so a loop of them vectorises.

    Cody-Waite reduction ``x = n ln2 + r``, ``|r| <= ln2 / 2``; Taylor's series to
    ``r**13 / 13!`` (truncated below 5e-18 of the result) by Estrin's scheme; and
    ``2**n`` made from its bits (constants: :mod:`fastbp._codes`).  Within two units
    in the last place of libm's exp; 0 below -708 and inf above 709, where a
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
    value = p * _from_bits((_bits(shifted) + np.int64(1023)) << np.int64(52))
    value = 0.0 if x < -708.0 else value
    return np.inf if x > 709.0 else value


@njit(**NUMBA_INLINED_OPTIONS)
def _fast_sigmoid(a, dt):
    """The fast mode's sigmoid, ``1 / (1 + exp(-a))`` with ``_fast_exp``; ``_activation``'s takes libm's exp.

    Only the loops that run it over a whole layer call it, so that it vectorises.
    """
    return dt(1.0) / (dt(1.0) + dt(_fast_exp(np.float64(-a))))


@njit(**NUMBA_INLINED_OPTIONS)
def _sigmoid(a, dt):
    """The exact sigmoid, ``1 / (1 + exp(-a))`` with libm's exp.

    exp overflows to inf for a < -709 (float32: -88), giving exactly 0: no nan.
    """
    return dt(1.0) / (dt(1.0) + libm_exp(-a))


@njit(**NUMBA_INLINED_OPTIONS)
def _activation(a, code, dt):
    """A neuron's output for activation ``a`` in the exact arithmetic (softmax is done per layer)."""
    if code == SIGMOID:
        return _sigmoid(a, dt)
    if code == TANH:
        return math.tanh(a)
    if code == RELU:
        # Not ``a if a > 0 else 0``, which would turn a nan sum (inf - inf) into a silent 0.
        return dt(0.0) if a <= dt(0.0) else a
    if code == LEAKY_RELU:
        return a if a > dt(0.0) else dt(LEAKY_SLOPE) * a
    return a


@njit(**NUMBA_INLINED_OPTIONS)
def _derivative(output, code, dt):
    """The activation's slope, from the neuron's output (as the tutorial computes it)."""
    if code == SIGMOID:
        return output * (dt(1.0) - output)
    if code == TANH:
        return dt(1.0) - output * output
    if code == RELU:
        return dt(1.0) if output > dt(0.0) else dt(0.0)
    if code == LEAKY_RELU:
        return dt(1.0) if output > dt(0.0) else dt(LEAKY_SLOPE)
    return dt(1.0)


@njit(**NUMBA_INLINED_OPTIONS)
def _softmax(values, off, n, dt):
    """Replace ``values[off : off + n]`` by their softmax, shifted by the maximum so exp cannot overflow.

    Its limit where the largest logit is infinite (an overflowed weighted sum):
    the entries equal to it share the probability equally, the others get 0
    (all share it when every logit is -inf).  A nan logit gives nan outputs, for
    the Python layer to refuse.
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
def _output_error(output, target, code, dt):
    """``(loss, delta)`` of one output neuron: squared error, or cross-entropy for softmax."""
    if code == SOFTMAX:
        loss = -target * math.log(max(output, dt(LOG_FLOOR))) if target != dt(0.0) else dt(0.0)
        return loss, output - target
    diff = target - output
    return diff * diff, (output - target) * _derivative(output, code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _weighted_sum(weights, neuron, n_in, inputs, in_off, fast):
    """The bias ``weights[neuron + n_in]`` plus the inputs times their weights.

    Exact: bias first, then each input in order (the tutorial's sum, bit for bit).
    Fast: the inputs in eight interleaved partial sums, ``i % 8``, combined
    pairwise, then the bias and the remaining ``n_in % 8`` inputs in order.  The
    partial sums are independent, so they run as one vector of eight
    (``_lane_sums``); with fewer than eight inputs both orders are the same.
    """
    if not fast or n_in < np.uintp(LANES):
        total = weights[neuron + n_in]
        for i in range(n_in):
            total += weights[neuron + i] * inputs[in_off + i]
        return total
    n8 = n_in - n_in % np.uintp(LANES)
    total = weights[neuron + n_in] + _combined(_lane_sums(weights, neuron, inputs, in_off, n8))
    for i in range(n8, n_in):
        total += weights[neuron + i] * inputs[in_off + i]
    return total


@njit(**NUMBA_INLINED_OPTIONS)
def _combined(lanes):
    """The fast mode's eight partial sums combined pairwise: ``((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))``."""
    return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))


@njit(**NUMBA_INLINED_OPTIONS)
def _activate(outputs, out_off, n_out, code, fast, dt):
    """Replace a layer's weighted sums ``outputs[out_off : out_off + n_out]`` by its outputs.

    A loop of its own after the sums, not each neuron's activation after its sum:
    the fast sigmoid's loop vectorises with its exp, and the sums' loop runs without
    calls to libm's exp, around which every float register must be saved (W1 7%
    faster).  The sigmoid has its own loop rather than ``_activation``'s switch (5%).
    """
    if code == SOFTMAX:
        _softmax(outputs, out_off, n_out, dt)
    elif code == SIGMOID and fast:
        for j in range(n_out):
            outputs[out_off + j] = _fast_sigmoid(outputs[out_off + j], dt)
    elif code == SIGMOID:
        for j in range(n_out):
            outputs[out_off + j] = _sigmoid(outputs[out_off + j], dt)
    else:
        for j in range(n_out):
            outputs[out_off + j] = _activation(outputs[out_off + j], code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _activate_layer(weights, start, n_in, n_out, code, inputs, in_off, outputs, out_off, fast, dt):
    """Outputs of one layer whose inputs are ``inputs[in_off : in_off + n_in]``.

    The layer's inputs are addressed by offset rather than sliced out, because an
    array slice costs a reference count per call in compiled code.
    """
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, out_off = np.uintp(in_off), np.uintp(out_off)
    for j in range(n_out):
        outputs[out_off + j] = _weighted_sum(weights, start + j * (n_in + ONE), n_in, inputs, in_off, fast)
    _activate(outputs, out_off, n_out, code, fast, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def forward_propagate(weights, w_off, sizes, acts, outputs, o_off, x):
    """Store every neuron's output for input row ``x`` in ``outputs`` (exact sums)."""
    _forward(weights, w_off, sizes, acts, outputs, o_off, x, False)


@njit(**NUMBA_INLINED_OPTIONS)
def _forward(weights, w_off, sizes, acts, outputs, o_off, x, fast):
    """Store every neuron's output for input row ``x`` in ``outputs``, in the exact or the fast arithmetic."""
    dt = weights.dtype.type
    for k in range(sizes.shape[0] - 1):
        first = k == 0  # one inlined copy of the layer for all of them (compile time), the inputs chosen here
        _activate_layer(
            weights, w_off[k], sizes[k], sizes[k + 1], acts[k], x if first else outputs, 0 if first else o_off[k - 1],
            outputs, o_off[k], fast, dt,
        )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def backward_propagate_error(weights, w_off, sizes, acts, outputs, o_off, deltas, expected):
    """Store every neuron's error signal in ``deltas``; return the row's loss (see the module docstring)."""
    dt = weights.dtype.type
    last = sizes.shape[0] - 2
    own = np.uintp(o_off[last])
    row_loss = dt(0.0)
    code = acts[last]
    for j in range(np.uintp(sizes[last + 1])):
        loss, deltas[own + j] = _output_error(outputs[own + j], expected[j], code, dt)
        row_loss += loss
    for k in range(last - 1, -1, -1):
        block, own, downstream = np.uintp(w_off[k + 1]), np.uintp(o_off[k]), np.uintp(o_off[k + 1])
        stride, code = np.uintp(sizes[k + 1] + 1), acts[k]
        for j in range(np.uintp(sizes[k + 1])):
            error = dt(0.0)
            for m in range(np.uintp(sizes[k + 2])):
                error += weights[block + m * stride + j] * deltas[downstream + m]
            deltas[own + j] = error * _derivative(outputs[own + j], code, dt)
    return row_loss


@njit(**NUMBA_INLINED_OPTIONS)
def _update_neuron(weights, neuron, n_in, inputs, in_off, step, decay):
    """SGD step for one neuron: ``w -= step * input + decay * w``, its bias ``-= step`` undecayed."""
    if decay == 0:  # a loop of its own: the decay term costs 10% on wide layers
        for i in range(n_in):
            weights[neuron + i] -= step * inputs[in_off + i]
    else:
        for i in range(n_in):
            weights[neuron + i] -= step * inputs[in_off + i] + decay * weights[neuron + i]
    weights[neuron + n_in] -= step


@njit(**NUMBA_INLINED_OPTIONS)
def _update_layer(weights, start, n_in, n_out, inputs, in_off, deltas, d_off, l_rate, decay):
    """SGD step for one layer, each neuron's step ``l_rate * delta``."""
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, d_off = np.uintp(in_off), np.uintp(d_off)
    for j in range(n_out):
        _update_neuron(weights, start + j * (n_in + ONE), n_in, inputs, in_off, l_rate * deltas[d_off + j], decay)


@njit(**NUMBA_INLINED_OPTIONS)
def _sgd_step(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate, decay):
    """The tutorial's update for input row ``x``, first layer first, plus L2 decay."""
    _update_layer(weights, w_off[0], sizes[0], sizes[1], x, 0, deltas, o_off[0], l_rate, decay)
    for k in range(1, sizes.shape[0] - 1):
        _update_layer(weights, w_off[k], sizes[k], sizes[k + 1], outputs, o_off[k - 1], deltas, o_off[k], l_rate, decay)


@njit(**NUMBA_INLINED_OPTIONS)
def _stepped_sum(weights, neuron, n_in, inputs, next_inputs, in_off, step):
    """``_update_neuron`` without decay fused with the exact ``_weighted_sum`` of the next row's ``next_inputs``.

    One pass over the weights, each updated and then multiplied: the two loops'
    operations in the same order, with half the loads.
    """
    total = weights[neuron + n_in] - step
    weights[neuron + n_in] = total
    for i in range(n_in):
        weight = weights[neuron + i] - step * inputs[in_off + i]
        weights[neuron + i] = weight
        total += weight * next_inputs[in_off + i]
    return total


@njit(**NUMBA_INLINED_OPTIONS)
def _stepped_partial_sums(weights, neuron, n_in, inputs, next_inputs, in_off, step):
    """``_stepped_sum`` in the fast mode's order (``n_in >= 8``): ``_weighted_sum``'s partial sums, one pass."""
    n8 = n_in - n_in % np.uintp(LANES)
    lanes = _stepped_lane_sums(weights, neuron, inputs, next_inputs, in_off, n8, step)
    total = weights[neuron + n_in] - step
    weights[neuron + n_in] = total
    total = total + _combined(lanes)
    for i in range(n8, n_in):
        weight = weights[neuron + i] - step * inputs[in_off + i]
        weights[neuron + i] = weight
        total += weight * next_inputs[in_off + i]
    return total


@njit(**NUMBA_INLINED_OPTIONS)
def _step_layer(
    weights, start, n_in, n_out, code, inputs, next_inputs, in_off, deltas, next_outputs, out_off, l_rate, decay,
    fast, dt,
):  # fmt: skip
    """``_update_layer`` for this row's ``inputs``, each neuron then activated for the next row's ``next_inputs``.

    The layer's deltas sit at the offset of its outputs.  Without decay, each
    neuron's weights are updated and weighed in one pass (``_stepped_sum``, or
    ``_stepped_partial_sums`` in the fast mode's order).
    """
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, out_off = np.uintp(in_off), np.uintp(out_off)
    if decay == 0 and (not fast or n_in < np.uintp(LANES)):  # the exact sum (see _weighted_sum)
        for j in range(n_out):
            neuron, step = start + j * (n_in + ONE), l_rate * deltas[out_off + j]
            next_outputs[out_off + j] = _stepped_sum(weights, neuron, n_in, inputs, next_inputs, in_off, step)
    elif decay == 0:
        for j in range(n_out):
            neuron, step = start + j * (n_in + ONE), l_rate * deltas[out_off + j]
            next_outputs[out_off + j] = _stepped_partial_sums(weights, neuron, n_in, inputs, next_inputs, in_off, step)
    else:
        for j in range(n_out):
            neuron = start + j * (n_in + ONE)
            _update_neuron(weights, neuron, n_in, inputs, in_off, l_rate * deltas[out_off + j], decay)
            next_outputs[out_off + j] = _weighted_sum(weights, neuron, n_in, next_inputs, in_off, fast)
    _activate(next_outputs, out_off, n_out, code, fast, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _sgd_step_ahead(weights, w_off, sizes, acts, outputs, next_outputs, o_off, deltas, x, next_x, l_rate, decay, fast):
    """``_sgd_step`` for row ``x`` fused with ``_forward`` for row ``next_x``, whose outputs go to ``next_outputs``.

    Layer by layer, first to last: each neuron's weights are updated with this row's
    inputs (``x`` or ``outputs``), then weigh the next row's, which the layer before
    has just put in ``next_outputs``.  Every weight is updated before it is used, so
    the result is that of ``_sgd_step`` and then ``_forward``, bit for bit.
    """
    dt = weights.dtype.type
    for k in range(sizes.shape[0] - 1):
        first = k == 0  # one inlined copy of the layer for all of them (compile time), the inputs chosen here
        _step_layer(
            weights, w_off[k], sizes[k], sizes[k + 1], acts[k], x if first else outputs,
            next_x if first else next_outputs, 0 if first else o_off[k - 1], deltas, next_outputs, o_off[k],
            l_rate, decay, fast, dt,
        )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first."""
    dt = weights.dtype.type
    _sgd_step(weights, w_off, sizes, outputs, o_off, deltas, x, dt(l_rate), dt(0.0))


@njit(**NUMBA_INLINED_OPTIONS)
def _row_gradient(w_off, sizes, outputs, o_off, deltas, x, weight, grad):
    """The gradient of one row's loss, times ``weight``, written into ``grad``."""
    for k in range(sizes.shape[0] - 1):
        start, n_in, n_out = np.uintp(w_off[k]), np.uintp(sizes[k]), np.uintp(sizes[k + 1])
        in_off, d_off = np.uintp(0 if k == 0 else o_off[k - 1]), np.uintp(o_off[k])
        inputs = x if k == 0 else outputs
        for j in range(n_out):
            neuron = start + j * (n_in + ONE)
            delta = weight * deltas[d_off + j]
            for i in range(n_in):
                grad[neuron + i] = delta * inputs[in_off + i]
            grad[neuron + n_in] = delta


@njit(**NUMBA_INLINED_OPTIONS)
def _rule_step(weights, w_off, sizes, grad, state, rule, rate, hyper, step):
    """Apply gradient ``grad`` by update rule ``rule``; ``step`` counts updates from 1.

    L2 decay adds ``l2 * w`` to the gradient of every weight but the biases.
    Rules and their state (``state`` holds two buffers of ``len(weights)``):
    SGD ``w -= rate * g``; momentum ``v = momentum * v - rate * g; w += v``;
    Nesterov ``w += momentum * v - rate * g`` with the new ``v``; Adam with
    scikit-learn's bias-corrected rate; iRprop- (``rate`` unused), whose first
    buffer holds the step sizes and second the previous gradient.
    """
    dt = weights.dtype.type
    n_w = np.uintp(weights.shape[0])
    l2, momentum = dt(hyper[H_L2]), dt(hyper[H_MOMENTUM])
    beta1, beta2, epsilon = dt(hyper[H_BETA1]), dt(hyper[H_BETA2]), dt(hyper[H_EPSILON])
    adam_rate = dt(0.0)
    if rule == ADAM:
        adam_rate = dt(rate * math.sqrt(1.0 - hyper[H_BETA2] ** step) / (1.0 - hyper[H_BETA1] ** step))
    l_rate = dt(rate)
    for k in range(sizes.shape[0] - 1):
        start, n_in, n_out = np.uintp(w_off[k]), np.uintp(sizes[k]), np.uintp(sizes[k + 1])
        for j in range(n_out):
            neuron = start + j * (n_in + ONE)
            for i in range(n_in + ONE):
                p = neuron + i
                g = grad[p] + l2 * weights[p] if i < n_in else grad[p]
                if rule == SGD:
                    weights[p] -= l_rate * g
                elif rule == MOMENTUM or rule == NESTEROV:
                    velocity = momentum * state[p] - l_rate * g
                    state[p] = velocity
                    weights[p] += velocity if rule == MOMENTUM else momentum * velocity - l_rate * g
                elif rule == ADAM:
                    m = beta1 * state[p] + (dt(1.0) - beta1) * g
                    v = beta2 * state[n_w + p] + (dt(1.0) - beta2) * (g * g)
                    state[p], state[n_w + p] = m, v
                    weights[p] -= adam_rate * m / (math.sqrt(v) + epsilon)
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
def _row_update(weights, w_off, sizes, outputs, o_off, deltas, x, weight, grad, state, rule, rate, hyper, step):
    """A non-SGD update for one row.  A call, not inlined: inlined, it slows the SGD path by 15%."""
    _row_gradient(w_off, sizes, outputs, o_off, deltas, x, weight, grad)
    _rule_step(weights, w_off, sizes, grad, state, rule, rate, hyper, step)


@njit(**NUMBA_OPTIONS)
def train_online(
    weights, w_off, sizes, acts, outputs, o_off, deltas, grad, state, X, Y, sw, orders, rates, hyper, rule, fast,
    step0, history,
):  # fmt: skip
    """Online training (batch size 1) for ``len(history)`` epochs; plain SGD is the tutorial's update."""
    next_outputs = np.empty_like(outputs)
    _train_online(
        weights, w_off, sizes, acts, outputs, next_outputs, o_off, deltas, grad, state, X, Y, sw, orders, rates,
        hyper, rule, fast, step0, history,
    )  # fmt: skip


@njit(**NUMBA_NO_REFCOUNT_OPTIONS)
def _train_online(
    weights, w_off, sizes, acts, outputs, next_outputs, o_off, deltas, grad, state, X, Y, sw, orders, rates, hyper,
    rule, fast, step0, history,
):  # fmt: skip
    """``train_online`` with a second buffer for the outputs, ``next_outputs``.

    Plain SGD runs each row's update fused with the next row's forward pass
    (``_sgd_step_ahead``), which writes the next row's outputs while this row's are
    still read: the two buffers swap roles every row.  The other update rules run
    the forward pass, the backward pass and the update one after the other.
    """
    dt = weights.dtype.type
    n_epochs, n_orders, n_rows, step = history.shape[0], orders.shape[0], orders.shape[1], step0
    for epoch in range(n_epochs):
        order = orders[epoch % n_orders]
        rate = rates[epoch]
        decay = dt(rate * hyper[H_L2])
        epoch_loss = dt(0.0)
        for t in range(n_rows):
            r = np.uintp(order[t])
            if rule != SGD or (epoch == 0 and t == 0):  # plain SGD has the other rows' outputs from the row before
                _forward(weights, w_off, sizes, acts, outputs, o_off, X[r], fast)
            epoch_loss += sw[r] * backward_propagate_error(weights, w_off, sizes, acts, outputs, o_off, deltas, Y[r])
            if rule == SGD:
                # The row after this one (after the last of the call, a forward pass that goes unused).
                following = order[t + 1] if t + 1 < n_rows else orders[(epoch + 1) % n_orders, 0]
                _sgd_step_ahead(
                    weights, w_off, sizes, acts, outputs, next_outputs, o_off, deltas, X[r], X[np.uintp(following)],
                    dt(rate) * sw[r], decay, fast,
                )  # fmt: skip
                outputs, next_outputs = next_outputs, outputs
            else:
                step += 1
                _row_update(
                    weights, w_off, sizes, outputs, o_off, deltas, X[r], sw[r], grad, state, rule, rate, hyper, step
                )
        history[epoch] = epoch_loss


@njit(**NUMBA_INLINED_OPTIONS)
def _lockstep_layer(weights, start, n_in, n_out, code, src, in_off, outputs, out_off, partial, column, fast, dt):
    """One layer's outputs for every network (the last axis): ``_activate_layer``'s arithmetic, network by network.

    ``partial`` (8, K) holds the fast sums' partial sums; ``column`` (n_out,) a softmax's values for one
    network.
    """
    start, n_in, n_out = np.uintp(start), np.uintp(n_in), np.uintp(n_out)
    in_off, out_off = np.uintp(in_off), np.uintp(out_off)
    n_nets = np.uintp(weights.shape[1])
    eight = np.uintp(8)
    for j in range(n_out):
        neuron = start + j * (n_in + ONE)
        out = out_off + j
        if not fast or n_in < eight:
            for k in range(n_nets):
                outputs[out, k] = weights[neuron + n_in, k]
            for i in range(n_in):
                for k in range(n_nets):
                    outputs[out, k] += weights[neuron + i, k] * src[in_off + i, k]
        else:
            n8 = n_in - n_in % eight
            partial[:] = dt(0.0)
            for i in range(np.uintp(0), n8, eight):
                for m in range(eight):
                    for k in range(n_nets):
                        partial[m, k] += weights[neuron + i + m, k] * src[in_off + i + m, k]
            for k in range(n_nets):
                s = partial[:, k]
                outputs[out, k] = weights[neuron + n_in, k] + (
                    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
                )
            for i in range(n8, n_in):
                for k in range(n_nets):
                    outputs[out, k] += weights[neuron + i, k] * src[in_off + i, k]
        if code == SIGMOID and fast:  # a loop of its own, which vectorises with its exp
            for k in range(n_nets):
                outputs[out, k] = _fast_sigmoid(outputs[out, k], dt)
        elif code != SOFTMAX:
            for k in range(n_nets):
                outputs[out, k] = _activation(outputs[out, k], code, dt)
    if code == SOFTMAX:
        for k in range(n_nets):
            for j in range(n_out):
                column[j] = outputs[out_off + j, k]
            _softmax(column, 0, n_out, dt)
            for j in range(n_out):
                outputs[out_off + j, k] = column[j]


@njit(**NUMBA_OPTIONS)
def train_lockstep(weights, w_off, sizes, acts, outputs, o_off, deltas, X, Y, sw, orders, lengths, rates, l2, fast,
                   history):  # fmt: skip
    """Online SGD for K networks of one architecture at once, the network index innermost in every buffer.

    ``weights`` is ``(n_weights, K)``, ``outputs`` and ``deltas`` ``(n_neurons, K)``;
    network ``k`` trains in epoch ``e`` on rows ``orders[e % len(orders), k, :lengths[k]]``
    at rate ``rates[e, k]`` with L2 factor ``l2``, and its loss goes to ``history[e, k]``.
    Every network gets exactly the arithmetic of ``train_online`` with plain SGD, so the
    same bits as trained alone; the loops over networks are what vectorise.  A network
    with fewer rows than the longest sits out the remaining steps: its step and decay
    are zero there, which leaves finite weights as they are (but for a weight of exactly
    -0.0, which may become +0.0); its padding rows, any valid row indices, are computed
    and dropped.
    """
    dt = weights.dtype.type
    n_nets = np.uintp(weights.shape[1])
    n_features, n_outputs = np.uintp(X.shape[1]), np.uintp(Y.shape[1])
    n_layers = sizes.shape[0] - 1
    last = n_layers - 1
    rows = np.empty(n_nets, dtype=np.uintp)
    inputs = np.empty((n_features, n_nets), dtype=weights.dtype)
    targets = np.empty((n_outputs, n_nets), dtype=weights.dtype)
    row_loss = np.empty(n_nets, dtype=weights.dtype)
    l_rate = np.empty(n_nets, dtype=weights.dtype)
    decay = np.empty(n_nets, dtype=weights.dtype)
    step = np.empty(n_nets, dtype=weights.dtype)
    epoch_loss = np.empty(n_nets, dtype=weights.dtype)
    partial = np.empty((8, n_nets), dtype=weights.dtype)
    column = np.empty(n_outputs, dtype=weights.dtype)
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        epoch_loss[:] = dt(0.0)
        for t in range(order.shape[1]):
            for k in range(n_nets):
                rows[k] = np.uintp(order[k, t])
                active = t < lengths[k]
                l_rate[k] = dt(rates[epoch, k]) * sw[rows[k]] if active else dt(0.0)
                decay[k] = dt(rates[epoch, k] * l2) if active else dt(0.0)
                for i in range(n_features):
                    inputs[i, k] = X[rows[k], i]
                for j in range(n_outputs):
                    targets[j, k] = Y[rows[k], j]
            # forward
            _lockstep_layer(
                weights, w_off[0], sizes[0], sizes[1], acts[0], inputs, 0, outputs, o_off[0], partial, column,
                fast, dt,
            )  # fmt: skip
            for layer in range(1, n_layers):
                _lockstep_layer(
                    weights, w_off[layer], sizes[layer], sizes[layer + 1], acts[layer], outputs, o_off[layer - 1],
                    outputs, o_off[layer], partial, column, fast, dt,
                )  # fmt: skip
            # output errors, then the hidden layers' (backward_propagate_error's arithmetic)
            own, code = np.uintp(o_off[last]), acts[last]
            row_loss[:] = dt(0.0)
            for j in range(n_outputs):
                for k in range(n_nets):
                    loss, deltas[own + j, k] = _output_error(outputs[own + j, k], targets[j, k], code, dt)
                    row_loss[k] += loss
            for k in range(n_nets):
                if t < lengths[k]:
                    epoch_loss[k] += sw[rows[k]] * row_loss[k]
            for layer in range(last - 1, -1, -1):
                block, own, downstream = np.uintp(w_off[layer + 1]), np.uintp(o_off[layer]), np.uintp(o_off[layer + 1])
                stride, code = np.uintp(sizes[layer + 1] + 1), acts[layer]
                for j in range(np.uintp(sizes[layer + 1])):
                    for k in range(n_nets):
                        deltas[own + j, k] = dt(0.0)
                    for m in range(np.uintp(sizes[layer + 2])):
                        for k in range(n_nets):
                            deltas[own + j, k] += weights[block + m * stride + j, k] * deltas[downstream + m, k]
                    for k in range(n_nets):
                        deltas[own + j, k] *= _derivative(outputs[own + j, k], code, dt)
            # the SGD step, first layer first (_sgd_step's arithmetic)
            for layer in range(n_layers):
                start, n_in, n_out = np.uintp(w_off[layer]), np.uintp(sizes[layer]), np.uintp(sizes[layer + 1])
                d_off = np.uintp(o_off[layer])
                src = inputs if layer == 0 else outputs
                in_off = np.uintp(0 if layer == 0 else o_off[layer - 1])
                for j in range(n_out):
                    neuron = start + j * (n_in + ONE)
                    for k in range(n_nets):
                        step[k] = l_rate[k] * deltas[d_off + j, k]
                    if l2 == 0.0:
                        for i in range(n_in):
                            for k in range(n_nets):
                                weights[neuron + i, k] -= step[k] * src[in_off + i, k]
                    else:
                        for i in range(n_in):
                            for k in range(n_nets):
                                weights[neuron + i, k] -= (
                                    step[k] * src[in_off + i, k] + decay[k] * weights[neuron + i, k]
                                )
                    for k in range(n_nets):
                        weights[neuron + n_in, k] -= step[k]
        for k in range(n_nets):
            history[epoch, k] = epoch_loss[k]


@njit(**NUMBA_INLINED_OPTIONS)
def _matrix(buffer, start, n_rows, n_cols):
    """A C-ordered ``(n_rows, n_cols)`` view of ``buffer`` from ``start``."""
    return buffer[start : start + n_rows * n_cols].reshape(n_rows, n_cols)


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_buffers(sizes, batch_size, dt):
    """Scratch for batches of up to ``batch_size`` rows: activations and their offsets, products, deltas.

    Layer ``k``'s activation matrix starts at ``a_off[k]`` and has room for
    ``batch_size`` rows (a shorter last batch uses its first rows), its last column
    ones.  ``products`` holds a layer's weighted sums, block after block of
    ``block_size`` columns, or its errors; ``deltas`` and ``deltas_t`` (the same,
    transposed) have two sides: the layer in hand and the layer below.
    """
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
def _forward_block(layer, inputs, outputs, products, b, n_in, n_out, code, size, block, dt):
    """Neurons ``block * size ...`` of a layer: weighted sums for the ``b`` rows, then activations."""
    first = block * size
    width = min(size, n_out - first)
    sums = _matrix(products, b * first, b, width)
    np.dot(inputs, _matrix(layer, first * (n_in + 1), width, n_in + 1).T, sums)
    for s in range(b):
        for j in range(width):
            outputs[s, first + j] = sums[s, j] if code == SOFTMAX else _activation(sums[s, j], code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _backward_block(
    layer, inputs, layer_grad, products, deltas, deltas_t, below, below_t, b, n_in, n_out, code_below, size, n_grad,
    task, dt,
):  # fmt: skip
    """One task of a layer's backward pass: the gradient of a block of its neurons (the first ``n_grad``
    tasks), or the error signals of a block of rows for the layer below."""
    if task < n_grad:
        first = task * size
        width = min(size, n_out - first)
        block_grad = _matrix(layer_grad, first * (n_in + 1), width, n_in + 1)
        np.dot(_matrix(deltas_t, first * b, width, b), inputs, block_grad)
        return
    first = (task - n_grad) * size
    width = min(size, b - first)
    errors = _matrix(products, first * (n_in + 1), width, n_in + 1)
    np.dot(_matrix(deltas, first * n_out, width, n_out), _matrix(layer, 0, n_out, n_in + 1), errors)
    for s in range(width):
        for j in range(n_in):
            value = errors[s, j] * _derivative(inputs[first + s, j], code_below, dt)
            below[(first + s) * n_in + j] = value
            below_t[j * b + first + s] = value


def _forward_tasks(layer, inputs, out, products, b, n_in, n_out, code, size):
    """A layer's forward pass over a batch, block after block of ``size`` neurons (see ``_forward_block``)."""
    for task in prange(-(-n_out // size)):
        _forward_block(layer, inputs, out, products, b, n_in, n_out, code, size, task, products.dtype.type)


def _backward_tasks(
    layer, inputs, layer_grad, products, deltas, deltas_t, side, b, n_in, n_out, code_below, size, n_tasks
):
    """A layer's backward pass over a batch: its gradient blocks and the error blocks of the layer below."""
    n_grad = -(-n_out // size)
    for task in prange(n_tasks):
        _backward_block(
            layer, inputs, layer_grad, products, deltas[side], deltas_t[side], deltas[1 - side], deltas_t[1 - side],
            b, n_in, n_out, code_below, size, n_grad, task, products.dtype.type,
        )  # fmt: skip


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
def _batch_gradient(weights, w_off, sizes, acts, X, Y, sw, rows, grad, activations, a_off, products, deltas, deltas_t):
    """Mean weighted gradient over ``X[rows]`` into ``grad``; returns the rows' weighted loss sum.

    Layer ``k``'s inputs form a ``(b, sizes[k] + 1)`` matrix whose last column is
    ones, so ``inputs @ W.T`` includes the biases and ``deltas.T @ inputs`` is the
    whole gradient block, bias column included.  The products are split into
    blocks of ``block_size(b)`` neurons or rows, which Numba's threads share in the
    ``_on_threads`` variant: each block is computed the same way whichever thread
    takes it, so the result does not depend on the thread count.
    """
    dt = weights.dtype.type
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
            if code == SOFTMAX:
                _softmax(activations, a_off[k + 1] + s * (n_out + 1), n_out, dt)
            out[s, n_out] = dt(1.0)

    n_out, code = sizes[n_layers], acts[n_layers - 1]
    outputs = _matrix(activations, a_off[n_layers], b, n_out + 1)
    total_loss = dt(0.0)
    for s in range(b):
        r = rows[s]
        row_loss = dt(0.0)
        scale = sw[r] / dt(b)
        for j in range(n_out):
            loss, delta = _output_error(outputs[s, j], Y[r, j], code, dt)
            row_loss += loss
            deltas[0, s * n_out + j] = delta * scale
            deltas_t[0, j * b + s] = delta * scale
        total_loss += sw[r] * row_loss
    side = 0
    for k in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[k], sizes[k + 1]
        layer = weights[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        layer_grad = grad[w_off[k] : w_off[k] + n_out * (n_in + 1)]
        inputs = _matrix(activations, a_off[k], b, n_in + 1)
        code_below = acts[k - 1] if k > 0 else 0
        n_tasks = -(-n_out // size) + (-(-b // size) if k > 0 else 0)
        _backward_layer(
            layer, inputs, layer_grad, products, deltas, deltas_t, side, b, n_in, n_out, code_below, size, n_tasks
        )
        side = 1 - side
    return total_loss


@njit(**NUMBA_OPTIONS)
def batch_gradient(weights, w_off, sizes, acts, X, Y, sw, rows, grad):
    """Mean weighted gradient of the loss over rows ``X[rows]``, into ``grad``; returns their loss sum."""
    activations, a_off, products, deltas, deltas_t = _batch_buffers(sizes, rows.shape[0], weights.dtype)
    return _batch_gradient(
        weights, w_off, sizes, acts, X, Y, sw, rows, grad, activations, a_off, products, deltas, deltas_t
    )


def _train_batches(
    weights, w_off, sizes, acts, grad, state, X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history
):
    """Mini-batch training for ``len(history)`` epochs: one update per ``batch_size`` rows (the last may be short)."""
    n_rows = orders.shape[1]
    batch_size = min(batch_size, n_rows)
    activations, a_off, products, deltas, deltas_t = _batch_buffers(sizes, batch_size, weights.dtype)
    step = step0
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        epoch_loss = weights.dtype.type(0.0)
        for start in range(0, n_rows, batch_size):
            rows = order[start : min(start + batch_size, n_rows)]
            epoch_loss += _batch_gradient(
                weights, w_off, sizes, acts, X, Y, sw, rows, grad, activations, a_off, products, deltas, deltas_t
            )
            step += 1
            _rule_step(weights, w_off, sizes, grad, state, rule, rates[epoch], hyper, step)
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


def train_batches(
    weights, w_off, sizes, acts, grad, state, X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history,
    n_threads,
):  # fmt: skip
    """Mini-batch training for ``len(history)`` epochs on up to ``n_threads`` threads (at most MAX_THREADS).

    A Python function, because Numba's thread count is set from Python: a kernel
    that set it could not be cached.
    """
    if n_threads <= 1:
        _train_batches_on_one_thread(
            weights, w_off, sizes, acts, grad, state, X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history
        )
        return
    previous = get_num_threads()  # the calling thread's setting, given back afterwards
    set_num_threads(min(n_threads, MAX_THREADS))
    try:
        _train_batches_on_threads(
            weights, w_off, sizes, acts, grad, state, X, Y, sw, orders, batch_size, rates, hyper, rule, step0, history
        )
    finally:
        set_num_threads(previous)


#: The compiled functions behind ``train_batches``, for fastbp._backends.run_kernel.
train_batches.dispatchers = (_train_batches_on_one_thread, _train_batches_on_threads)


@njit(**NUMBA_NO_REFCOUNT_OPTIONS)
def predict_batch(weights, w_off, sizes, acts, outputs, o_off, X, out, fast):
    """Write the output layer's values for every row of ``X`` into ``out``, in the exact or the fast arithmetic."""
    last = np.uintp(o_off[sizes.shape[0] - 2])
    for r in range(X.shape[0]):
        _forward(weights, w_off, sizes, acts, outputs, o_off, X[r], fast)
        for j in range(np.uintp(out.shape[1])):
            out[r, j] = outputs[last + j]

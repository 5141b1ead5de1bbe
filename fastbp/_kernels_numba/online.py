"""The Numba backend's per-row kernels: the tutorial's steps, online training and prediction.

Layer ``k``'s inputs are addressed by offset into ``x`` or ``outputs`` rather than
sliced out, because a slice costs a reference count per call in compiled code; and
offsets and loop counters are cast to unsigned (``uintp``) before indexing, because
Numba checks every signed index for Python's negative wraparound.  Mixing signed and
unsigned integers would make Numba compute in float64, so every integer operand of
an index expression is unsigned, constants included.
"""

import numpy as np
from numba import njit

from .._concepts import ActivationCode, OptimizerCode
from .._constants import LANES, PREDICT_ROWS
from .config import NUMBA_INLINED_OPTIONS, NUMBA_NO_REFCOUNT_OPTIONS, NUMBA_OPTIONS
from .llvm import lane_sums, lane_sums_of_rows, stepped_lane_sums
from .primitives import ONE, activation, derivative, fast_sigmoid, optimizer_step, output_error, sigmoid, softmax


@njit(**NUMBA_INLINED_OPTIONS)
def weighted_sum(weights, neuron, n_in, inputs, in_off, exact):
    """The bias ``weights[neuron + n_in]`` plus the inputs times their weights.

    Exact: bias first, then each input in order (the tutorial's sum, bit for bit).
    Fast: the inputs in ``LANES`` interleaved partial sums, ``i % LANES``, combined
    pairwise, then the bias and the remaining inputs in order; the partial sums run
    as one vector (``lane_sums``).  Below ``LANES`` inputs both orders are the same.
    """
    if exact or n_in < np.uintp(LANES):
        total = weights[neuron + n_in]
        for i in range(n_in):
            total += weights[neuron + i] * inputs[in_off + i]
        return total
    n8 = n_in - n_in % np.uintp(LANES)
    total = weights[neuron + n_in] + combined(lane_sums(weights, neuron, inputs, in_off, n8))
    for i in range(n8, n_in):
        total += weights[neuron + i] * inputs[in_off + i]
    return total


@njit(**NUMBA_INLINED_OPTIONS)
def weighted_sums_of_rows(weights, neuron, n_in, inputs, in_off, stride, sums, sums_off, sums_stride, n_real, exact):
    """``weighted_sum`` for ``PREDICT_ROWS`` rows, ``inputs[in_off + r * stride ...]``, into
    ``sums[sums_off + r * sums_stride]``: each row's sum in ``weighted_sum``'s order (the same bits); in the fast
    mode the rows' side by side, so that one row's additions run while another's wait, each weight loaded once
    for all; else one row after the other, the first ``n_real`` alone (the others fill a group up)."""
    rows = np.uintp(PREDICT_ROWS)
    if exact or n_in < np.uintp(LANES):  # one sum: nothing to share
        for r in range(n_real):
            sums[sums_off + r * sums_stride] = weighted_sum(weights, neuron, n_in, inputs, in_off + r * stride, exact)
        return
    n8 = n_in - n_in % np.uintp(LANES)
    lanes = lane_sums_of_rows(weights, neuron, inputs, in_off, stride, n8)
    for r in range(rows):
        at = r * np.uintp(LANES)
        total = weights[neuron + n_in] + combined_at(lanes, at)
        for i in range(n8, n_in):
            total += weights[neuron + i] * inputs[in_off + r * stride + i]
        sums[sums_off + r * sums_stride] = total


@njit(**NUMBA_INLINED_OPTIONS)
def combined(lanes):
    """The fast mode's eight partial sums combined pairwise: ``((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))``."""
    return combined_at(lanes, np.uintp(0))


@njit(**NUMBA_INLINED_OPTIONS)
def combined_at(lanes, at):
    """``combined`` of the eight partial sums from ``lanes[at]`` on."""
    s0, s1, s2, s3 = lanes[at], lanes[at + np.uintp(1)], lanes[at + np.uintp(2)], lanes[at + np.uintp(3)]
    s4, s5, s6, s7 = lanes[at + np.uintp(4)], lanes[at + np.uintp(5)], lanes[at + np.uintp(6)], lanes[at + np.uintp(7)]
    return ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))


@njit(**NUMBA_INLINED_OPTIONS)
def activate(outputs, out_off, n_out, code, exact, dt):
    """Replace a layer's weighted sums ``outputs[out_off : out_off + n_out]`` by its outputs.

    In a loop of its own after the sums: the fast sigmoid's loop vectorises with its
    exp, and the sums' loop runs without calls to libm's exp, around which every float
    register must be saved.  The sigmoid has a loop of its own, without the switch.
    """
    if code == ActivationCode.SOFTMAX:
        softmax(outputs, out_off, n_out, dt)
    elif code == ActivationCode.SIGMOID and not exact:
        for j in range(n_out):
            outputs[out_off + j] = fast_sigmoid(outputs[out_off + j], dt)
    elif code == ActivationCode.SIGMOID:
        for j in range(n_out):
            outputs[out_off + j] = sigmoid(outputs[out_off + j], dt)
    else:
        for j in range(n_out):
            outputs[out_off + j] = activation(outputs[out_off + j], code, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _activate_layer(net, k, weights, inputs, in_off, outputs):
    """Layer ``k``'s outputs, into ``outputs``, for its inputs ``inputs[in_off : in_off + sizes[k]]``."""
    start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + 1])
    in_off, out_off = np.uintp(in_off), np.uintp(net.o_off[k])
    for j in range(n_out):
        outputs[out_off + j] = weighted_sum(weights, start + j * (n_in + ONE), n_in, inputs, in_off, net.exact)
    activate(outputs, out_off, n_out, net.activations[k], net.exact, weights.dtype.type)


@njit(**NUMBA_INLINED_OPTIONS)
def _forward(net, weights, outputs, x):
    """Store every neuron's output for input row ``x`` in ``outputs``."""
    for k in range(net.sizes.shape[0] - 1):
        first = k == 0  # one inlined copy of the layer for all of them (compile time), the inputs chosen here
        _activate_layer(net, k, weights, x if first else outputs, 0 if first else net.o_off[k - 1], outputs)


@njit(**NUMBA_INLINED_OPTIONS)
def forward_propagate(net, weights, signals, x):
    """Store every neuron's output for input row ``x`` in ``signals.outputs``."""
    _forward(net, weights, signals.outputs, x)


@njit(**NUMBA_INLINED_OPTIONS)
def _backward(net, weights, outputs, deltas, expected):
    """Store every neuron's error signal in ``deltas``; return the row's loss."""
    dt = weights.dtype.type
    sizes, o_off = net.sizes, net.o_off
    last = sizes.shape[0] - 2
    own = np.uintp(o_off[last])
    row_loss = dt(0.0)
    code = net.activations[last]
    for j in range(np.uintp(sizes[last + 1])):
        loss, deltas[own + j] = output_error(outputs[own + j], expected[j], code, net.loss, dt)
        row_loss += loss
    for k in range(last - 1, -1, -1):
        block, own, downstream = np.uintp(net.w_off[k + 1]), np.uintp(o_off[k]), np.uintp(o_off[k + 1])
        stride, code = np.uintp(sizes[k + 1] + 1), net.activations[k]
        for j in range(np.uintp(sizes[k + 1])):
            error = dt(0.0)
            for m in range(np.uintp(sizes[k + 2])):
                error += weights[block + m * stride + j] * deltas[downstream + m]
            deltas[own + j] = error * derivative(outputs[own + j], code, dt)
    return row_loss


@njit(**NUMBA_INLINED_OPTIONS)
def backward_propagate_error(net, weights, signals, expected):
    """Store every neuron's error signal in ``signals.deltas``; return the row's loss."""
    return _backward(net, weights, signals.outputs, signals.deltas, expected)


@njit(**NUMBA_INLINED_OPTIONS)
def _update_neuron(weights, neuron, n_in, inputs, in_off, step, decay):
    """SGD step for one neuron: ``w -= step * input + decay * w``, its bias ``-= step`` undecayed."""
    if decay == 0:  # a loop of its own: without the decay term it is faster on wide layers
        for i in range(n_in):
            weights[neuron + i] -= step * inputs[in_off + i]
    else:
        for i in range(n_in):
            weights[neuron + i] -= step * inputs[in_off + i] + decay * weights[neuron + i]
    weights[neuron + n_in] -= step


@njit(**NUMBA_INLINED_OPTIONS)
def _update_layer(net, k, weights, inputs, in_off, deltas, l_rate, decay):
    """SGD step for layer ``k``, each neuron's step ``l_rate * delta``."""
    start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + 1])
    in_off, d_off = np.uintp(in_off), np.uintp(net.o_off[k])
    for j in range(n_out):
        _update_neuron(weights, start + j * (n_in + ONE), n_in, inputs, in_off, l_rate * deltas[d_off + j], decay)


@njit(**NUMBA_INLINED_OPTIONS)
def _sgd_step(net, weights, outputs, deltas, x, l_rate, decay):
    """The tutorial's update for input row ``x``, first layer first, plus L2 decay."""
    _update_layer(net, 0, weights, x, 0, deltas, l_rate, decay)
    for k in range(1, net.sizes.shape[0] - 1):
        _update_layer(net, k, weights, outputs, net.o_off[k - 1], deltas, l_rate, decay)


@njit(**NUMBA_INLINED_OPTIONS)
def update_weights(net, weights, signals, x, l_rate):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first."""
    dt = weights.dtype.type
    _sgd_step(net, weights, signals.outputs, signals.deltas, x, dt(l_rate), dt(0.0))


@njit(**NUMBA_INLINED_OPTIONS)
def _stepped_sum(weights, neuron, n_in, inputs, next_inputs, in_off, step):
    """``_update_neuron`` without decay fused with the exact ``weighted_sum`` of the next row's ``next_inputs``.

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
    """``_stepped_sum`` in the fast mode's order (``n_in >= LANES``): ``weighted_sum``'s partial sums, one pass."""
    n8 = n_in - n_in % np.uintp(LANES)
    lanes = stepped_lane_sums(weights, neuron, inputs, next_inputs, in_off, n8, step)
    total = weights[neuron + n_in] - step
    weights[neuron + n_in] = total
    total = total + combined(lanes)
    for i in range(n8, n_in):
        weight = weights[neuron + i] - step * inputs[in_off + i]
        weights[neuron + i] = weight
        total += weight * next_inputs[in_off + i]
    return total


@njit(**NUMBA_INLINED_OPTIONS)
def _step_layer(net, k, weights, inputs, next_inputs, in_off, deltas, next_outputs, l_rate, decay):
    """``_update_layer`` for this row's ``inputs``, each neuron then activated for the next row's ``next_inputs``.

    The layer's deltas sit at the offset of its outputs.  Without decay, each
    neuron's weights are updated and weighed in one pass (``_stepped_sum``, or
    ``_stepped_partial_sums`` in the fast mode's order).
    """
    exact = net.exact
    start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + 1])
    in_off, out_off = np.uintp(in_off), np.uintp(net.o_off[k])
    if decay == 0 and (exact or n_in < np.uintp(LANES)):  # the exact sum (see weighted_sum)
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
            next_outputs[out_off + j] = weighted_sum(weights, neuron, n_in, next_inputs, in_off, exact)
    activate(next_outputs, out_off, n_out, net.activations[k], exact, weights.dtype.type)


@njit(**NUMBA_INLINED_OPTIONS)
def _sgd_step_ahead(net, weights, outputs, next_outputs, deltas, x, next_x, l_rate, decay):
    """``_sgd_step`` for row ``x`` fused with ``_forward`` for row ``next_x``, whose outputs go to ``next_outputs``.

    Layer by layer, first to last: each neuron's weights are updated with this row's
    inputs (``x`` or ``outputs``), then weigh the next row's, which the layer before
    has just put in ``next_outputs``.  Every weight is updated before it is used, so
    the result is that of ``_sgd_step`` and then ``_forward``, bit for bit.
    """
    for k in range(net.sizes.shape[0] - 1):
        first = k == 0  # one inlined copy of the layer for all of them (compile time), the inputs chosen here
        _step_layer(
            net, k, weights, x if first else outputs, next_x if first else next_outputs,
            0 if first else net.o_off[k - 1], deltas, next_outputs, l_rate, decay,
        )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _row_gradient(net, outputs, deltas, x, weight, grad):
    """The gradient of one row's loss, times ``weight``, written into ``grad``."""
    for k in range(net.sizes.shape[0] - 1):
        start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + 1])
        in_off, d_off = np.uintp(0 if k == 0 else net.o_off[k - 1]), np.uintp(net.o_off[k])
        inputs = x if k == 0 else outputs
        for j in range(n_out):
            neuron = start + j * (n_in + ONE)
            delta = weight * deltas[d_off + j]
            for i in range(n_in):
                grad[neuron + i] = delta * inputs[in_off + i]
            grad[neuron + n_in] = delta


@njit(**NUMBA_OPTIONS)  # a call, not inlined: inlined, it slows the plain SGD path
def _row_update(net, weights, optimizer_state, grad, outputs, deltas, x, weight, schedule, rate, step):
    """An update by any optimizer but plain SGD, for one row."""
    _row_gradient(net, outputs, deltas, x, weight, grad)
    optimizer_step(net, weights, grad, optimizer_state, schedule, rate, step)


@njit(**NUMBA_OPTIONS)
def train_online(net, weights, optimizer_state, data, schedule, history):
    """Online training (batch size 1) for ``len(history)`` epochs; plain SGD is the tutorial's update."""
    n_neurons = net.o_off[-1]
    outputs, next_outputs = np.empty(n_neurons, weights.dtype), np.empty(n_neurons, weights.dtype)
    deltas, grad = np.empty(n_neurons, weights.dtype), np.empty_like(weights)
    _train_online(net, weights, optimizer_state, data, schedule, history, outputs, next_outputs, deltas, grad)


@njit(**NUMBA_NO_REFCOUNT_OPTIONS)
def _train_online(net, weights, optimizer_state, data, schedule, history, outputs, next_outputs, deltas, grad):
    """``train_online`` with its scratch: each neuron's ``outputs`` for this row and the next, ``deltas``, ``grad``.

    Plain SGD runs each row's update fused with the next row's forward pass
    (``_sgd_step_ahead``), which writes the next row's outputs while this row's are
    still read: the two buffers swap roles every row.  The other optimizers run the
    forward pass, the backward pass and the update one after the other.
    """
    dt = weights.dtype.type
    X, Y, sample_weight = data.X, data.Y, data.sample_weight
    orders, optimizer, step = schedule.orders, schedule.optimizer, schedule.steps_done
    n_epochs, n_orders, n_rows = history.shape[0], orders.shape[0], orders.shape[1]
    sgd = optimizer == OptimizerCode.SGD
    for epoch in range(n_epochs):
        order = orders[epoch % n_orders]
        rate = schedule.rates[epoch]
        decay = dt(rate * schedule.l2)
        epoch_loss = dt(0.0)
        for t in range(n_rows):
            r = np.uintp(order[t])
            if not sgd or (epoch == 0 and t == 0):  # plain SGD has the other rows' outputs from the row before
                _forward(net, weights, outputs, X[r])
            epoch_loss += sample_weight[r] * _backward(net, weights, outputs, deltas, Y[r])
            if sgd:
                # The row after this one (after the last of the call, a forward pass that goes unused).
                following = order[t + 1] if t + 1 < n_rows else orders[(epoch + 1) % n_orders, 0]
                _sgd_step_ahead(
                    net, weights, outputs, next_outputs, deltas, X[r], X[np.uintp(following)],
                    dt(rate) * sample_weight[r], decay,
                )  # fmt: skip
                outputs, next_outputs = next_outputs, outputs
            else:
                step += 1
                _row_update(
                    net, weights, optimizer_state, grad, outputs, deltas, X[r], sample_weight[r], schedule, rate, step
                )
        history[epoch] = epoch_loss


def predict_batch(net, weights, X, out):
    """Write the output layer's values for every row of ``X`` into ``out``: ``PREDICT_ROWS`` rows at a time (the
    last ones filled up with copies of the last row), each row's the same bits as ``_forward``'s.

    A Python function, which allocates the scratch: compiled, it would be one more
    function to compile at a cold start.
    """
    outputs = np.empty(PREDICT_ROWS * int(net.o_off[-1]), weights.dtype)
    last_rows = np.empty(PREDICT_ROWS * int(net.sizes[0]), weights.dtype)
    _predict_rows(net, weights, outputs, last_rows, X.reshape(-1), X.shape[0], out)


@njit(**NUMBA_NO_REFCOUNT_OPTIONS)
def _predict_rows(net, weights, outputs, last_rows, X, n_rows, out):
    """``predict_batch`` with its scratch: ``PREDICT_ROWS`` rows' ``outputs``, each row's after the one before,
    and the ``last_rows`` filled up (the copies' sums run only where they run side by side with the real rows);
    ``X`` the rows one after the other.  One copy of the layers' code serves
    every group of rows and every layer (it is compiled for each dtype)."""
    n_layers = np.uintp(net.sizes.shape[0] - 1)
    n_neurons, n_features, n_outputs = np.uintp(net.o_off[n_layers]), np.uintp(net.sizes[0]), np.uintp(out.shape[1])
    last, rows = np.uintp(net.o_off[n_layers - ONE]), np.uintp(PREDICT_ROWS)
    dt = weights.dtype.type
    for first in range(np.uintp(0), np.uintp(n_rows), rows):
        real = min(rows, np.uintp(n_rows) - first)
        source, at, stride = X, first * n_features, n_features
        if real < rows:  # each row's sums are its own: the copies change nothing in the real rows
            for r in range(rows):
                row = first + min(r, real - ONE)
                for i in range(n_features):
                    last_rows[r * n_features + i] = X[row * n_features + i]
            source, at = last_rows, np.uintp(0)
        for k in range(n_layers):
            start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + ONE])
            out_off = np.uintp(net.o_off[k])
            for j in range(n_out):
                neuron = start + j * (n_in + ONE)
                weighted_sums_of_rows(
                    weights, neuron, n_in, source, at, stride, outputs, out_off + j, n_neurons, real, net.exact
                )
            for r in range(real):
                activate(outputs, r * n_neurons + out_off, n_out, net.activations[k], net.exact, dt)
            source, at, stride = outputs, out_off, n_neurons
        for r in range(real):
            for j in range(n_outputs):
                out[first + r, j] = outputs[r * n_neurons + last + j]


#: The compiled functions behind each kernel that is a Python function.
DISPATCHERS = {"predict_batch": (_predict_rows,)}

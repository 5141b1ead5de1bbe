"""The Numba backend's lockstep kernel: online plain SGD for many networks of one architecture at once.

The network index is the last axis of every buffer, so each operation of a step
runs for all the networks in a loop that vectorises; each network gets exactly the
arithmetic of ``train_online`` with plain SGD.
"""

import numpy as np
from numba import njit

from .._concepts import ActivationCode
from .._constants import LANES
from .config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS
from .primitives import ONE, activation, derivative, fast_sigmoid, output_error, softmax


@njit(**NUMBA_INLINED_OPTIONS)
def _lockstep_layer(net, k, weights, src, in_off, outputs, partial, column):
    """Layer ``k``'s outputs for every network: ``online._activate_layer``'s arithmetic, network by network.

    ``partial`` (LANES, n_nets) holds the fast sums' partial sums; ``column`` (n_out,) a softmax's values
    for one network.
    """
    dt = weights.dtype.type
    exact, code = net.exact, net.activations[k]
    start, n_in, n_out = np.uintp(net.w_off[k]), np.uintp(net.sizes[k]), np.uintp(net.sizes[k + 1])
    in_off, out_off = np.uintp(in_off), np.uintp(net.o_off[k])
    n_nets = np.uintp(weights.shape[1])
    lanes = np.uintp(LANES)
    for j in range(n_out):
        neuron = start + j * (n_in + ONE)
        out = out_off + j
        if exact or n_in < lanes:
            for m in range(n_nets):
                outputs[out, m] = weights[neuron + n_in, m]
            for i in range(n_in):
                for m in range(n_nets):
                    outputs[out, m] += weights[neuron + i, m] * src[in_off + i, m]
        else:
            n8 = n_in - n_in % lanes
            partial[:] = dt(0.0)
            for i in range(np.uintp(0), n8, lanes):
                for lane in range(lanes):
                    for m in range(n_nets):
                        partial[lane, m] += weights[neuron + i + lane, m] * src[in_off + i + lane, m]
            for m in range(n_nets):
                s = partial[:, m]
                outputs[out, m] = weights[neuron + n_in, m] + (
                    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
                )
            for i in range(n8, n_in):
                for m in range(n_nets):
                    outputs[out, m] += weights[neuron + i, m] * src[in_off + i, m]
        if code == ActivationCode.SIGMOID and not exact:  # a loop of its own, which vectorises with its exp
            for m in range(n_nets):
                outputs[out, m] = fast_sigmoid(outputs[out, m], dt)
        elif code != ActivationCode.SOFTMAX:
            for m in range(n_nets):
                outputs[out, m] = activation(outputs[out, m], code, dt)
    if code == ActivationCode.SOFTMAX:
        for m in range(n_nets):
            for j in range(n_out):
                column[j] = outputs[out_off + j, m]
            softmax(column, 0, n_out, dt)
            for j in range(n_out):
                outputs[out_off + j, m] = column[j]


@njit(**NUMBA_OPTIONS)
def train_lockstep(net, weights, data, schedule, lengths, history):
    """Online SGD for many networks of one architecture at once, the network index innermost in every buffer.

    ``weights`` is ``(n_weights, n_nets)``; network ``m`` trains in epoch ``e`` on rows
    ``schedule.orders[e % n_orders, m, :lengths[m]]`` at rate ``schedule.rates[e, m]``
    with L2 factor ``schedule.l2``, and its loss goes to ``history[e, m]``.  Every
    network gets exactly the arithmetic of ``train_online`` with plain SGD, so the same
    bits as trained alone.  A network with fewer rows than the longest sits out the
    remaining steps: its step and decay are zero there, which leaves finite weights as
    they are (but for a weight of exactly -0.0, which may become +0.0); its padding
    rows, any valid row indices, are computed and dropped.
    """
    dt = weights.dtype.type
    X, Y, sample_weight = data.X, data.Y, data.sample_weight
    orders, rates, l2 = schedule.orders, schedule.rates, schedule.l2
    n_nets = np.uintp(weights.shape[1])
    n_features, n_outputs = np.uintp(X.shape[1]), np.uintp(Y.shape[1])
    n_layers = net.sizes.shape[0] - 1
    last = n_layers - 1
    sizes, w_off, o_off = net.sizes, net.w_off, net.o_off
    outputs = np.empty((o_off[-1], n_nets), dtype=weights.dtype)
    deltas = np.empty((o_off[-1], n_nets), dtype=weights.dtype)
    rows = np.empty(n_nets, dtype=np.uintp)
    inputs = np.empty((n_features, n_nets), dtype=weights.dtype)
    targets = np.empty((n_outputs, n_nets), dtype=weights.dtype)
    row_loss = np.empty(n_nets, dtype=weights.dtype)
    l_rate = np.empty(n_nets, dtype=weights.dtype)
    decay = np.empty(n_nets, dtype=weights.dtype)
    step = np.empty(n_nets, dtype=weights.dtype)
    epoch_loss = np.empty(n_nets, dtype=weights.dtype)
    partial = np.empty((LANES, n_nets), dtype=weights.dtype)
    column = np.empty(n_outputs, dtype=weights.dtype)
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        epoch_loss[:] = dt(0.0)
        for t in range(order.shape[1]):
            for m in range(n_nets):
                rows[m] = np.uintp(order[m, t])
                active = t < lengths[m]
                l_rate[m] = dt(rates[epoch, m]) * sample_weight[rows[m]] if active else dt(0.0)
                decay[m] = dt(rates[epoch, m] * l2) if active else dt(0.0)
                for i in range(n_features):
                    inputs[i, m] = X[rows[m], i]
                for j in range(n_outputs):
                    targets[j, m] = Y[rows[m], j]
            # forward
            _lockstep_layer(net, 0, weights, inputs, 0, outputs, partial, column)
            for layer in range(1, n_layers):
                _lockstep_layer(net, layer, weights, outputs, o_off[layer - 1], outputs, partial, column)
            # output errors, then the hidden layers' (online._backward's arithmetic)
            own, code = np.uintp(o_off[last]), net.activations[last]
            row_loss[:] = dt(0.0)
            for j in range(n_outputs):
                for m in range(n_nets):
                    loss, deltas[own + j, m] = output_error(outputs[own + j, m], targets[j, m], code, net.loss, dt)
                    row_loss[m] += loss
            for m in range(n_nets):
                if t < lengths[m]:
                    epoch_loss[m] += sample_weight[rows[m]] * row_loss[m]
            for layer in range(last - 1, -1, -1):
                block, own, downstream = np.uintp(w_off[layer + 1]), np.uintp(o_off[layer]), np.uintp(o_off[layer + 1])
                stride, code = np.uintp(sizes[layer + 1] + 1), net.activations[layer]
                for j in range(np.uintp(sizes[layer + 1])):
                    for m in range(n_nets):
                        deltas[own + j, m] = dt(0.0)
                    for d in range(np.uintp(sizes[layer + 2])):
                        for m in range(n_nets):
                            deltas[own + j, m] += weights[block + d * stride + j, m] * deltas[downstream + d, m]
                    for m in range(n_nets):
                        deltas[own + j, m] *= derivative(outputs[own + j, m], code, dt)
            # the SGD step, first layer first (online._sgd_step's arithmetic)
            for layer in range(n_layers):
                start, n_in, n_out = np.uintp(w_off[layer]), np.uintp(sizes[layer]), np.uintp(sizes[layer + 1])
                d_off = np.uintp(o_off[layer])
                src = inputs if layer == 0 else outputs
                in_off = np.uintp(0 if layer == 0 else o_off[layer - 1])
                for j in range(n_out):
                    neuron = start + j * (n_in + ONE)
                    for m in range(n_nets):
                        step[m] = l_rate[m] * deltas[d_off + j, m]
                    if l2 == 0.0:
                        for i in range(n_in):
                            for m in range(n_nets):
                                weights[neuron + i, m] -= step[m] * src[in_off + i, m]
                    else:
                        for i in range(n_in):
                            for m in range(n_nets):
                                weights[neuron + i, m] -= (
                                    step[m] * src[in_off + i, m] + decay[m] * weights[neuron + i, m]
                                )
                    for m in range(n_nets):
                        weights[neuron + n_in, m] -= step[m]
        for m in range(n_nets):
            history[epoch, m] = epoch_loss[m]

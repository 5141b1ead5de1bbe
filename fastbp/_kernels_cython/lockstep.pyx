# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's lockstep kernel: online plain SGD for many networks of one architecture at once.

The network index is the last axis of every buffer, so each operation of a step
runs for all the networks in a loop that vectorises; each network gets exactly the
arithmetic of ``train_online`` with plain SGD, as in :mod:`fastbp._kernels_numba.lockstep`.
"""

from libc.stdlib cimport free, malloc

from fastbp._kernels_cython.constants cimport ACTIVATION_SIGMOID, ACTIVATION_SOFTMAX, LANES, compiled_constants
from fastbp._kernels_cython.primitives cimport (
    Data, Layer, Network, Schedule, activation, bind_libm_exp, derivative, fast_sigmoid, floating, network_of,
    nth_layer, output_error, schedule_settings, softmax,
)

from fastbp._constants import check_compiled
from fastbp._libm import libm_address

check_compiled(compiled_constants(), __name__)
bind_libm_exp(libm_address("exp"))


cdef enum:
    TILE = 8  # networks whose weighted sums the lockstep kernel keeps in registers at once


cdef inline void _tile_sums(
    floating* out, Py_ssize_t width, const floating* bias, Py_ssize_t n, const floating* weights,
    Py_ssize_t w_stride, const floating* values, Py_ssize_t v_stride,
) noexcept nogil:
    """``out[t] = bias[t] + sum(weights[i * w_stride + t] * values[i * v_stride + t])``, ``i < n`` ascending,
    for ``t < width``.

    The sum starts from 0.0 where ``bias`` is NULL.  Called with ``width == TILE``,
    the ``width`` sums stay in vector registers for the whole loop over ``i``.
    """
    cdef floating acc[TILE]
    cdef Py_ssize_t i, t
    for t in range(width):
        acc[t] = bias[t] if bias != NULL else <floating>0.0
    for i in range(n):
        for t in range(width):
            acc[t] += weights[i * w_stride + t] * values[i * v_stride + t]
    for t in range(width):
        out[t] = acc[t]


cdef inline void _lockstep_sums(
    floating* out, Py_ssize_t n_nets, const floating* bias, Py_ssize_t n, const floating* weights,
    Py_ssize_t w_stride, const floating* values,
) noexcept nogil:
    """``_tile_sums`` for all ``n_nets`` networks (``values`` is ``(n, n_nets)``): whole tiles of TILE, then one
    short tile for the rest."""
    cdef Py_ssize_t tile, k
    for tile in range(n_nets // TILE):
        k = tile * TILE
        _tile_sums(out + k, TILE, bias + k if bias != NULL else NULL, n, weights + k, w_stride, values + k, n_nets)
    k = n_nets - n_nets % TILE
    if k < n_nets:
        _tile_sums(
            out + k, n_nets - k, bias + k if bias != NULL else NULL, n, weights + k, w_stride, values + k, n_nets
        )


cdef inline void _lockstep_layer(
    const Network* net, Py_ssize_t layer_index, const floating* weights, const floating* inputs, floating* outputs,
    Py_ssize_t n_nets, floating* partial, floating* column,
) noexcept nogil:
    """Layer ``layer_index``'s outputs for every network: ``online._activate_layer``'s arithmetic, network by
    network.

    ``weights`` ``(n_weights, n_nets)`` and ``outputs`` ``(n_neurons, n_nets)`` are
    whole buffers, ``inputs`` ``(n_in, n_nets)`` the layer's own; ``partial``
    ``(LANES, n_nets)`` holds the fast sums' partial sums and ``column`` ``(n_out,)``
    one network's softmax.  The layer comes as ``(net, index)``, not as a ``Layer``:
    where gcc keeps this function out of line, a struct argument would go through
    the stack on every call.
    """
    cdef Layer layer = nth_layer(net, layer_index)
    cdef const floating* block = weights + net.w_off[layer_index] * n_nets
    cdef bint exact = net.exact
    cdef Py_ssize_t n_in = layer.n_in
    cdef Py_ssize_t code = layer.activation
    cdef Py_ssize_t i, j, k, m, n8
    cdef const floating* neuron
    cdef const floating* bias
    cdef const floating* s  # the partial sums, as in online.weighted_sum
    cdef floating* out
    outputs += net.o_off[layer_index] * n_nets
    for j in range(layer.n_out):
        neuron = block + j * (n_in + 1) * n_nets
        bias = neuron + n_in * n_nets
        out = outputs + j * n_nets
        if exact or n_in < LANES:
            _lockstep_sums(out, n_nets, bias, n_in, neuron, n_nets, inputs)
        else:
            n8 = n_in - n_in % LANES
            for k in range(LANES * n_nets):
                partial[k] = 0.0
            for i in range(0, n8, 8):  # LANES, a literal: see online.weighted_sum
                for m in range(LANES):
                    for k in range(n_nets):
                        partial[m * n_nets + k] += neuron[(i + m) * n_nets + k] * inputs[(i + m) * n_nets + k]
            s = partial
            for k in range(n_nets):  # combined as online.weighted_sum's eight accumulators
                out[k] = bias[k] + (
                    ((s[k] + s[4 * n_nets + k]) + (s[2 * n_nets + k] + s[6 * n_nets + k]))
                    + ((s[n_nets + k] + s[5 * n_nets + k]) + (s[3 * n_nets + k] + s[7 * n_nets + k]))
                )
            for i in range(n8, n_in):
                for k in range(n_nets):
                    out[k] += neuron[i * n_nets + k] * inputs[i * n_nets + k]
        if code == ACTIVATION_SIGMOID and not exact:  # a loop of its own, which vectorises with its exp
            for k in range(n_nets):
                out[k] = fast_sigmoid(out[k])
        elif code != ACTIVATION_SOFTMAX:
            for k in range(n_nets):
                out[k] = activation(out[k], code)
    if code == ACTIVATION_SOFTMAX:
        for k in range(n_nets):
            for j in range(layer.n_out):
                column[j] = outputs[j * n_nets + k]
            softmax(column, layer.n_out)
            for j in range(layer.n_out):
                outputs[j * n_nets + k] = column[j]


cdef inline Py_ssize_t _lockstep_scratch(const Network* net, Py_ssize_t n_nets) noexcept nogil:
    """The values ``_train_lockstep``'s scratch holds (see there)."""
    cdef Py_ssize_t n_outputs = net.sizes[net.n_layers]
    return n_nets * (2 * net.o_off[net.n_layers] + net.sizes[0] + n_outputs + 5 + LANES) + n_outputs


cdef void _train_lockstep(
    const Network* net, floating* weights, Py_ssize_t n_nets, const Data* data, const Schedule* schedule,
    const Py_ssize_t* lengths, double* history, Py_ssize_t* rows, floating* scratch,
) noexcept nogil:
    """Online SGD for ``n_nets`` networks at once, the network index innermost (see ``train_lockstep``).

    ``schedule.orders`` holds ``n_orders`` blocks of ``n_nets`` rows of ``n_visits``
    row indices, ``schedule.rates`` ``n_epochs`` rows of ``n_nets`` rates; ``rows``
    has room for ``n_nets`` indices and ``scratch`` for ``_lockstep_scratch`` values.
    """
    cdef Py_ssize_t n_layers = net.n_layers
    cdef Py_ssize_t last = n_layers - 1
    cdef Py_ssize_t n_features = net.sizes[0]
    cdef Py_ssize_t n_outputs = net.sizes[n_layers]
    cdef Py_ssize_t max_len = schedule.n_visits
    cdef const floating* X = <const floating*>data.X
    cdef const floating* Y = <const floating*>data.Y
    cdef const floating* sample_weight = <const floating*>data.sample_weight
    cdef floating* outputs = scratch  # (n_neurons, n_nets)
    cdef floating* deltas = outputs + net.o_off[n_layers] * n_nets  # (n_neurons, n_nets)
    cdef floating* inputs = deltas + net.o_off[n_layers] * n_nets  # (n_features, n_nets): each network's row
    cdef floating* targets = inputs + n_features * n_nets  # (n_outputs, n_nets)
    cdef floating* row_loss = targets + n_outputs * n_nets
    cdef floating* l_rate = row_loss + n_nets
    cdef floating* decay = l_rate + n_nets
    cdef floating* step = decay + n_nets
    cdef floating* epoch_loss = step + n_nets
    cdef floating* partial = epoch_loss + n_nets  # (LANES, n_nets)
    cdef floating* column = partial + LANES * n_nets  # (n_outputs,)
    cdef double l2 = schedule.l2
    cdef double rate
    cdef Py_ssize_t epoch, t, i, j, k, r, layer, n_in, n_out, n_down, stride, code
    cdef const Py_ssize_t* order
    cdef const floating* src
    cdef const floating* block
    cdef floating* neuron
    cdef floating* own
    cdef const floating* downstream
    cdef const floating* own_out
    for epoch in range(schedule.n_epochs):
        order = schedule.orders + (epoch % schedule.n_orders) * n_nets * max_len
        for k in range(n_nets):
            epoch_loss[k] = 0.0
        for t in range(max_len):
            for k in range(n_nets):
                r = order[k * max_len + t]
                rows[k] = r
                rate = schedule.rates[epoch * n_nets + k]
                if t < lengths[k]:
                    l_rate[k] = <floating>rate * sample_weight[r]
                    decay[k] = <floating>(rate * l2)
                else:  # sits out: the padding row is computed, its step and decay are zero
                    l_rate[k] = 0.0
                    decay[k] = 0.0
                for i in range(n_features):
                    inputs[i * n_nets + k] = X[r * n_features + i]
                for j in range(n_outputs):
                    targets[j * n_nets + k] = Y[r * n_outputs + j]
            # forward (online._forward's arithmetic)
            _lockstep_layer(net, 0, weights, inputs, outputs, n_nets, partial, column)
            for layer in range(1, n_layers):
                _lockstep_layer(
                    net, layer, weights, outputs + net.o_off[layer - 1] * n_nets, outputs, n_nets, partial, column
                )
            # output errors, then the hidden layers' (online._backward's arithmetic)
            own = deltas + net.o_off[last] * n_nets
            own_out = outputs + net.o_off[last] * n_nets
            code = net.activations[last]
            for k in range(n_nets):
                row_loss[k] = 0.0
            for j in range(n_outputs):
                for k in range(n_nets):
                    row_loss[k] += output_error(
                        own_out[j * n_nets + k], targets[j * n_nets + k], code, net.loss, &own[j * n_nets + k]
                    )
            for k in range(n_nets):
                if t < lengths[k]:
                    epoch_loss[k] += sample_weight[rows[k]] * row_loss[k]
            for layer in range(last - 1, -1, -1):
                block = weights + net.w_off[layer + 1] * n_nets
                downstream = deltas + net.o_off[layer + 1] * n_nets
                own = deltas + net.o_off[layer] * n_nets
                own_out = outputs + net.o_off[layer] * n_nets
                stride = net.sizes[layer + 1] + 1
                n_down = net.sizes[layer + 2]
                code = net.activations[layer]
                for j in range(net.sizes[layer + 1]):
                    _lockstep_sums(
                        own + j * n_nets, n_nets, NULL, n_down, block + j * n_nets, stride * n_nets, downstream
                    )
                    for k in range(n_nets):
                        own[j * n_nets + k] *= derivative(own_out[j * n_nets + k], code)
            # the SGD step, first layer first (online._sgd_step's arithmetic)
            for layer in range(n_layers):
                n_in, n_out = net.sizes[layer], net.sizes[layer + 1]
                src = inputs if layer == 0 else outputs + net.o_off[layer - 1] * n_nets
                own = deltas + net.o_off[layer] * n_nets
                for j in range(n_out):
                    neuron = weights + (net.w_off[layer] + j * (n_in + 1)) * n_nets
                    for k in range(n_nets):
                        step[k] = l_rate[k] * own[j * n_nets + k]
                    if l2 == 0.0:  # a loop of its own, as online._update_neuron's
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


def train_lockstep(
    net, floating[:, ::1] weights, data, schedule, const Py_ssize_t[::1] lengths, double[:, ::1] history
):
    """Online SGD for many networks of one architecture at once, the network index innermost in every buffer.

    ``weights`` is ``(n_weights, n_nets)``; network ``k`` trains in epoch ``e`` on rows
    ``schedule.orders[e % n_orders, k, :lengths[k]]`` at rate ``schedule.rates[e, k]``
    with L2 factor ``schedule.l2``, and its loss goes to ``history[e, k]``: the
    arithmetic of ``train_online`` with plain SGD, network by network (a network
    with fewer rows than the longest sits out the remaining steps with zero step
    and decay).
    """
    cdef Network c_net = network_of(net)
    cdef const floating[:, ::1] X = data.X, Y = data.Y
    cdef const floating[::1] sample_weight = data.sample_weight
    cdef Data c_data = Data(X=&X[0, 0], Y=&Y[0, 0], sample_weight=&sample_weight[0])
    cdef const Py_ssize_t[:, :, ::1] orders = schedule.orders
    cdef const double[:, ::1] rates = schedule.rates
    cdef Schedule c_schedule = schedule_settings(schedule)
    c_schedule.orders, c_schedule.n_orders, c_schedule.n_visits = &orders[0, 0, 0], orders.shape[0], orders.shape[2]
    c_schedule.rates, c_schedule.n_epochs = &rates[0, 0], history.shape[0]
    cdef Py_ssize_t n_nets = weights.shape[1]
    # One block: the row indices, then the float scratch (8-byte aligned after them).
    cdef Py_ssize_t* rows = <Py_ssize_t*>malloc(
        n_nets * sizeof(Py_ssize_t) + _lockstep_scratch(&c_net, n_nets) * sizeof(floating)
    )
    if rows == NULL:
        raise MemoryError()
    try:
        with nogil:
            _train_lockstep(
                &c_net, &weights[0, 0], n_nets, &c_data, &c_schedule, &lengths[0], &history[0, 0], rows,
                <floating*>(rows + n_nets),
            )
    finally:
        free(rows)

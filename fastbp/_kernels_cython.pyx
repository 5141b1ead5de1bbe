# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython backend: the kernels of the flat-buffer contract, compiled ahead of time.

The same functions, arguments and arithmetic as :mod:`fastbp._kernels_numba`,
without its JIT start-up:

* ``forward_propagate(weights, w_off, sizes, outputs, o_off, x)``
* ``backward_propagate_error(weights, w_off, sizes, outputs, o_off, deltas, expected) -> float``
* ``update_weights(weights, w_off, sizes, outputs, o_off, deltas, x, l_rate)``
* ``train_epoch(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate) -> float``
* ``train_epochs(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate, history)``
* ``predict_batch(weights, w_off, sizes, outputs, o_off, X, out)``

The work is done by ``nogil`` helpers over raw pointers; the public functions
only unpack their memoryviews and release the GIL, so trainings in separate
threads run in parallel.  Kernels mutate their buffers in place, never allocate
and trust their inputs (checked by :mod:`fastbp._api`).  The arithmetic follows
:mod:`fastbp.reference` operation by operation (bias first, then inputs in
ascending order), and the extension is built without fast-math and with
``-ffp-contract=off`` (no fused multiply-adds), so the weights agree with it bit
for bit.
"""

from libc.math cimport exp


cdef inline void _activate_layer(
    const double* weights, Py_ssize_t n_in, Py_ssize_t n_out, const double* inputs, double* outputs
) noexcept nogil:
    """Sigmoid outputs ``(n_out,)`` of the layer block ``weights`` for ``inputs`` ``(n_in,)``."""
    cdef Py_ssize_t i, j
    cdef const double* neuron
    cdef double activation
    for j in range(n_out):
        neuron = weights + j * (n_in + 1)
        activation = neuron[n_in]
        for i in range(n_in):
            activation += neuron[i] * inputs[i]
        outputs[j] = 1.0 / (1.0 + exp(-activation))


cdef inline void _forward(
    const double* weights, const Py_ssize_t* w_off, const Py_ssize_t* sizes, Py_ssize_t n_layers,
    double* outputs, const Py_ssize_t* o_off, const double* x
) noexcept nogil:
    """Every neuron's output for input row ``x``, written into ``outputs``."""
    cdef Py_ssize_t k
    _activate_layer(weights + w_off[0], sizes[0], sizes[1], x, outputs + o_off[0])
    for k in range(1, n_layers):
        _activate_layer(weights + w_off[k], sizes[k], sizes[k + 1], outputs + o_off[k - 1], outputs + o_off[k])


cdef inline double _backward(
    const double* weights, const Py_ssize_t* w_off, const Py_ssize_t* sizes, Py_ssize_t n_layers,
    const double* outputs, const Py_ssize_t* o_off, double* deltas, const double* expected
) noexcept nogil:
    """Every neuron's error signal, written into ``deltas``; returns the row's squared error."""
    cdef Py_ssize_t last = n_layers - 1
    cdef Py_ssize_t j, k, m, n_next, stride
    cdef const double* block
    cdef const double* next_deltas
    cdef double output, diff, error
    cdef double sum_error = 0.0
    for j in range(sizes[last + 1]):
        output = outputs[o_off[last] + j]
        diff = expected[j] - output
        sum_error += diff * diff
        deltas[o_off[last] + j] = (output - expected[j]) * (output * (1.0 - output))
    for k in range(last - 1, -1, -1):
        n_next = sizes[k + 2]
        stride = sizes[k + 1] + 1
        block = weights + w_off[k + 1]
        next_deltas = deltas + o_off[k + 1]
        for j in range(sizes[k + 1]):
            error = 0.0
            for m in range(n_next):
                error += block[m * stride + j] * next_deltas[m]
            output = outputs[o_off[k] + j]
            deltas[o_off[k] + j] = error * (output * (1.0 - output))
    return sum_error


cdef inline void _update_layer(
    double* weights, Py_ssize_t n_in, Py_ssize_t n_out, const double* inputs, const double* deltas, double l_rate
) noexcept nogil:
    """SGD step for the layer block ``weights`` whose inputs are ``inputs`` ``(n_in,)``."""
    cdef Py_ssize_t i, j
    cdef double* neuron
    cdef double step
    for j in range(n_out):
        neuron = weights + j * (n_in + 1)
        # l_rate * delta * input groups as (l_rate * delta) * input, so this is the same product.
        step = l_rate * deltas[j]
        for i in range(n_in):
            neuron[i] -= step * inputs[i]
        neuron[n_in] -= step


cdef inline void _update(
    double* weights, const Py_ssize_t* w_off, const Py_ssize_t* sizes, Py_ssize_t n_layers,
    const double* outputs, const Py_ssize_t* o_off, const double* deltas, const double* x, double l_rate
) noexcept nogil:
    """One SGD step in place for input row ``x``, first layer first."""
    cdef Py_ssize_t k
    _update_layer(weights + w_off[0], sizes[0], sizes[1], x, deltas + o_off[0], l_rate)
    for k in range(1, n_layers):
        _update_layer(weights + w_off[k], sizes[k], sizes[k + 1], outputs + o_off[k - 1], deltas + o_off[k], l_rate)


cdef double _epoch(
    double* weights, const Py_ssize_t* w_off, const Py_ssize_t* sizes, Py_ssize_t n_layers,
    double* outputs, const Py_ssize_t* o_off, double* deltas,
    const double* X, Py_ssize_t x_stride, const double* Y, Py_ssize_t y_stride,
    const Py_ssize_t* order, Py_ssize_t n_rows, double l_rate
) noexcept nogil:
    """Online SGD over rows ``order[:n_rows]`` of ``X`` and ``Y``; returns the epoch's squared error.

    ``X`` and ``Y`` are C-contiguous matrices whose rows are ``x_stride`` and
    ``y_stride`` values long.
    """
    cdef Py_ssize_t t
    cdef const double* x
    cdef double sum_error = 0.0
    for t in range(n_rows):
        x = X + order[t] * x_stride
        _forward(weights, w_off, sizes, n_layers, outputs, o_off, x)
        sum_error += _backward(weights, w_off, sizes, n_layers, outputs, o_off, deltas, Y + order[t] * y_stride)
        _update(weights, w_off, sizes, n_layers, outputs, o_off, deltas, x, l_rate)
    return sum_error


def forward_propagate(
    const double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    double[::1] outputs, const Py_ssize_t[::1] o_off, const double[::1] x,
):
    """Store every neuron's sigmoid output for input row ``x`` in ``outputs``."""
    with nogil:
        _forward(&weights[0], &w_off[0], &sizes[0], sizes.shape[0] - 1, &outputs[0], &o_off[0], &x[0])


def backward_propagate_error(
    const double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const double[::1] outputs, const Py_ssize_t[::1] o_off, double[::1] deltas, const double[::1] expected,
):
    """Store every neuron's error signal in ``deltas``; return the row's squared error."""
    cdef double sum_error
    with nogil:
        sum_error = _backward(
            &weights[0], &w_off[0], &sizes[0], sizes.shape[0] - 1, &outputs[0], &o_off[0], &deltas[0], &expected[0]
        )
    return sum_error


def update_weights(
    double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    const double[::1] outputs, const Py_ssize_t[::1] o_off, const double[::1] deltas, const double[::1] x,
    double l_rate,
):
    """One SGD step in place: ``w -= l_rate * delta * input``, first layer first."""
    with nogil:
        _update(&weights[0], &w_off[0], &sizes[0], sizes.shape[0] - 1, &outputs[0], &o_off[0], &deltas[0], &x[0], l_rate)


def train_epoch(
    double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    double[::1] outputs, const Py_ssize_t[::1] o_off, double[::1] deltas,
    const double[:, ::1] X, const double[:, ::1] Y, const Py_ssize_t[::1] order, double l_rate,
):
    """Online SGD over the rows of ``X`` in ``order``; return the epoch's squared error."""
    cdef double sum_error
    with nogil:
        sum_error = _epoch(
            &weights[0], &w_off[0], &sizes[0], sizes.shape[0] - 1, &outputs[0], &o_off[0], &deltas[0],
            &X[0, 0], X.shape[1], &Y[0, 0], Y.shape[1], &order[0], order.shape[0], l_rate,
        )
    return sum_error


def train_epochs(
    double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    double[::1] outputs, const Py_ssize_t[::1] o_off, double[::1] deltas,
    const double[:, ::1] X, const double[:, ::1] Y, const Py_ssize_t[::1] order, double l_rate,
    double[::1] history,
):
    """Run ``len(history)`` epochs, writing each epoch's squared error into ``history``."""
    cdef Py_ssize_t epoch
    with nogil:
        for epoch in range(history.shape[0]):
            history[epoch] = _epoch(
                &weights[0], &w_off[0], &sizes[0], sizes.shape[0] - 1, &outputs[0], &o_off[0], &deltas[0],
                &X[0, 0], X.shape[1], &Y[0, 0], Y.shape[1], &order[0], order.shape[0], l_rate,
            )


def predict_batch(
    const double[::1] weights, const Py_ssize_t[::1] w_off, const Py_ssize_t[::1] sizes,
    double[::1] outputs, const Py_ssize_t[::1] o_off, const double[:, ::1] X, double[:, ::1] out,
):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    cdef Py_ssize_t n_layers = sizes.shape[0] - 1
    cdef Py_ssize_t last = o_off[n_layers - 1]
    cdef Py_ssize_t r, j
    with nogil:
        for r in range(X.shape[0]):
            _forward(&weights[0], &w_off[0], &sizes[0], n_layers, &outputs[0], &o_off[0], &X[r, 0])
            for j in range(out.shape[1]):
                out[r, j] = outputs[last + j]

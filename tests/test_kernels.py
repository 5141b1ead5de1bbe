"""Every compiled backend's kernels, one by one, against the pure-Python reference, central differences and the
optimizers' formulas."""

import platform
import random

import numpy as np
import pytest
from kernel_bundles import schedule, signals
from scipy.special import xlogy

import fastbp
from fastbp import reference
from fastbp._backends import COMPILED, Data, available_backends, get_backend
from fastbp._concepts import HIDDEN_ACTIVATIONS, OPTIMIZERS, OUTPUTS
from fastbp._layout import Layout

COMPILED = [name for name in COMPILED if name in available_backends()]
# One hidden layer (the tutorial's shapes) and deeper networks.
SIZES = [(2, 1, 2), (7, 5, 3), (3, 4, 6, 2), (5, 3, 4, 3, 4)]


@pytest.fixture
def kernels(compiled_backend):
    return get_backend(compiled_backend)


def make_case(sizes, seed=0, n_rows=6):
    """Random weights, rows and one-hot targets."""
    rng = np.random.default_rng(seed)
    layout = Layout.from_sizes(sizes)
    weights = rng.uniform(-1, 1, layout.n_weights)
    X = rng.uniform(-2, 2, (n_rows, sizes[0]))
    Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n_rows)]
    return layout, weights, X, Y


def central_differences(loss, weights, step=1e-6):
    """The gradient of ``loss`` at ``weights`` by central differences, one weight at a time."""
    numeric = np.empty_like(weights)
    for i in range(len(weights)):
        plus, minus = weights.copy(), weights.copy()
        plus[i] += step
        minus[i] -= step
        numeric[i] = (loss(plus) - loss(minus)) / (2 * step)
    return numeric


def reference_rows(X, Y):
    return [[*x, int(np.argmax(t))] for x, t in zip(X.tolist(), Y)]


def test_forward_propagate_reproduces_figure_1(kernels):
    layout = Layout.from_sizes((2, 1, 2))
    weights = np.array([0.13436424411240122, 0.8474337369372327, 0.763774618976614,
                        0.2550690257394217, 0.49543508709194095, 0.4494910647887381, 0.651592972722763])  # fmt: skip
    row = signals(layout)
    kernels.forward_propagate(layout.network(exact=True), weights, row, np.array([1.0, 0.0]))
    assert row.outputs[1:].tolist() == [0.6629970129852887, 0.7253160725279748]


def test_backward_propagate_error_reproduces_figure_2(kernels):
    layout = Layout.from_sizes((2, 1, 2))
    weights = np.array([0.13436424411240122, 0.8474337369372327, 0.763774618976614,
                        0.2550690257394217, 0.49543508709194095, 0.4494910647887381, 0.651592972722763])  # fmt: skip
    row = signals(layout)
    row.outputs[:] = [0.7105668883115941, 0.6213859615555266, 0.6573693455986976]
    error = kernels.backward_propagate_error(layout.network(exact=True), weights, row, np.array([0.0, 1.0]))
    assert row.deltas.tolist() == [0.0005348048046610517, 0.14619064683582808, -0.0771723774346327]
    assert error == (0 - 0.6213859615555266) ** 2 + (1 - 0.6573693455986976) ** 2


@pytest.mark.parametrize("sizes", SIZES)
def test_one_sample_step_equals_reference(kernels, sizes):
    layout, weights, X, Y = make_case(sizes)
    net, row = layout.network(exact=True), signals(layout)
    network = reference.unpack(weights, sizes)
    tutorial_row = reference_rows(X, Y)[0]

    kernels.forward_propagate(net, weights, row, X[0])
    expected_outputs = reference.forward_propagate(network, tutorial_row)
    assert row.outputs.tolist() == [neuron["output"] for layer in network for neuron in layer]
    assert row.outputs[-sizes[-1] :].tolist() == expected_outputs

    error = kernels.backward_propagate_error(net, weights, row, Y[0])
    reference.backward_propagate_error(network, Y[0].tolist())
    assert row.deltas.tolist() == [neuron["delta"] for layer in network for neuron in layer]
    assert error == sum((t - o) ** 2 for t, o in zip(Y[0].tolist(), expected_outputs))

    kernels.update_weights(net, weights, row, X[0], 0.25)
    reference.update_weights(network, tutorial_row, 0.25)
    np.testing.assert_array_equal(weights, reference.pack(network))


def train_online(kernels, layout, weights, X, Y, orders, rates, history):
    """Plain online SGD through the kernel the API drives."""
    data = Data(X, Y, np.ones(len(X)))
    state = np.zeros(2 * layout.n_weights)
    kernels.train_online(layout.network(exact=True), weights, state, data, schedule(orders, rates), history)


@pytest.mark.parametrize("sizes", SIZES)
def test_train_online_equals_reference_train_network(kernels, sizes):
    layout, weights, X, Y = make_case(sizes, seed=1, n_rows=9)
    network = reference.unpack(weights, sizes)
    order = np.array([3, 1, 4, 1, 5, 0, 2, 6, 8, 7], dtype=np.intp)  # any order, repeats allowed
    history = np.zeros(4)
    train_online(kernels, layout, weights, X, Y, order[None], np.full(4, 0.3), history)
    rows = reference_rows(X, Y)
    expected = reference.train_network(network, [rows[r] for r in order], 0.3, 4, sizes[-1])
    assert history.tolist() == expected
    np.testing.assert_array_equal(weights, reference.pack(network))


def test_train_online_cycles_through_row_orders_and_rates(kernels):
    """Epoch e uses orders[e % len(orders)] at rates[e]: the same as one epoch per call."""
    layout, weights, X, Y = make_case((4, 3, 2), seed=2)
    orders = np.array([np.arange(len(X)), np.arange(len(X))[::-1]], dtype=np.intp)
    rates = np.array([0.1, 0.2, 0.05])
    twin, history, twin_history = weights.copy(), np.zeros(3), np.zeros(3)
    train_online(kernels, layout, weights, X, Y, orders, rates, history)
    for epoch in range(3):
        one = twin_history[epoch : epoch + 1]
        train_online(kernels, layout, twin, X, Y, orders[epoch % 2][None], rates[epoch : epoch + 1], one)
    np.testing.assert_array_equal(weights, twin)
    np.testing.assert_array_equal(history, twin_history)


@pytest.mark.parametrize("sizes", SIZES)
def test_predict_batch_equals_reference_forward_pass(kernels, sizes):
    layout, weights, X, Y = make_case(sizes, seed=3, n_rows=11)
    out = np.zeros((len(X), sizes[-1]))
    kernels.predict_batch(layout.network(exact=True), weights, X, out)
    network = reference.unpack(weights, sizes)
    assert out.tolist() == [reference.forward_propagate(network, row) for row in X.tolist()]


@pytest.mark.parametrize("sizes", SIZES[1:])
def test_update_is_minus_lr_times_the_gradient_of_half_the_squared_error(kernels, sizes):
    """Central differences of E = 0.5 * sum((target - output)^2) against one SGD step."""
    layout, weights, X, Y = make_case(sizes, seed=4)
    net, row = layout.network(exact=True), signals(layout)
    x, target = X[0], Y[0]

    def loss(w):
        kernels.forward_propagate(net, w, row, x)
        return 0.5 * np.sum((target - row.outputs[-sizes[-1] :]) ** 2)

    numeric = central_differences(loss, weights)
    updated = weights.copy()
    kernels.forward_propagate(net, updated, row, x)
    kernels.backward_propagate_error(net, updated, row, target)
    kernels.update_weights(net, updated, row, x, 1.0)
    np.testing.assert_allclose(weights - updated, numeric, rtol=1e-5, atol=1e-9)


def test_flat_random_fill_is_the_tutorial_initialisation():
    layout = Layout.from_sizes((7, 5, 3))
    rng = random.Random(1)
    flat = np.array([rng.random() for _ in range(layout.n_weights)])
    np.testing.assert_array_equal(flat, reference.pack(reference.initialize_network(7, 5, 3, random.Random(1))))
    assert [view.shape for view in layout.layer_views(flat)] == [(5, 8), (3, 6)]


# General networks: every activation and output/loss pair, 1 to 3 hidden layers.
DEPTHS = [(3, 4, 3), (4, 5, 3, 3), (3, 4, 5, 3, 2)]


#: Every output with each of its losses.
OUTPUT_LOSSES = [(output, loss) for output in OUTPUTS for loss in OUTPUTS[output].losses]


def general_case(sizes, hidden, output, seed=0, n_rows=7, dtype=np.float64):
    """A random network with the given activations, rows, targets fitting the output and sample weights."""
    rng = np.random.default_rng(seed)
    layout = Layout.from_sizes(sizes, [hidden] * (len(sizes) - 2) + [output])
    weights = rng.uniform(-1, 1, layout.n_weights).astype(dtype)
    X = rng.uniform(-1, 1, (n_rows, sizes[0])).astype(dtype)
    if output == "identity":
        Y = rng.normal(size=(n_rows, sizes[-1])).astype(dtype)
    elif output == "exp":
        Y = rng.poisson(1.5, size=(n_rows, sizes[-1])).astype(dtype)  # counts, zeros among them
    else:
        Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n_rows)]
    return layout, weights, X, Y, rng.uniform(0.5, 2.0, n_rows).astype(dtype)


def mean_loss(kernels, layout, weights, X, Y, sample_weight, loss="mse"):
    """The documented loss, computed in numpy from the forward pass alone."""
    out = np.zeros(Y.shape, dtype=weights.dtype)
    kernels.predict_batch(layout.network(exact=True), weights, X, out)
    if loss == "poisson":
        per_row = np.sum(xlogy(Y, Y) - xlogy(Y, out) - Y + out, axis=1)
    elif loss == "cross_entropy" and layout.activations[-1] == "sigmoid":
        per_row = -np.sum(Y * np.log(out) + (1 - Y) * np.log(1 - out), axis=1)
    elif loss == "cross_entropy":
        per_row = -np.sum(Y * np.log(out), axis=1)
    else:
        per_row = 0.5 * np.sum((out - Y) ** 2, axis=1)
    return np.sum(sample_weight * per_row) / len(X)


def batch_gradient(kernels, layout, weights, X, Y, sample_weight, loss=None):
    grad = np.zeros(layout.n_weights, dtype=weights.dtype)
    rows = np.arange(len(X), dtype=np.intp)
    net = layout.network(exact=True, loss=loss)
    return grad, kernels.batch_gradient(net, weights, Data(X, Y, sample_weight), rows, grad)


@pytest.mark.parametrize("sizes", DEPTHS, ids=["1-hidden", "2-hidden", "3-hidden"])
@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSSES)
@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_batch_gradient_equals_central_differences(kernels, sizes, hidden, output, loss):
    layout, weights, X, Y, sample_weight = general_case(sizes, hidden, output)
    grad, summed = batch_gradient(kernels, layout, weights, X, Y, sample_weight, loss)
    numeric = central_differences(lambda w: mean_loss(kernels, layout, w, X, Y, sample_weight, loss), weights)
    assert np.linalg.norm(grad - numeric) / np.linalg.norm(numeric) < 1e-6
    # The returned loss is the history's: twice the mean loss for squared error, per row, summed.
    factor = 2.0 if loss == "mse" else 1.0
    expected = factor * len(X) * mean_loss(kernels, layout, weights, X, Y, sample_weight, loss)
    assert summed == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_saturated_sigmoid_units_cross_entropy_is_clipped_as_scikit_learns(kernels, dtype):
    """The probability is clipped to [eps, 1 - eps]: a unit certain and wrong costs -log(eps), the same at any
    larger weighted sum, rather than jumping once 1 - p rounds to 0."""
    from sklearn.neural_network._base import binary_log_loss

    layout = Layout.from_sizes((1, 1), ["sigmoid"])
    net = layout.network(exact=True, loss="cross_entropy")
    X, Y, rows = np.ones((1, 1), dtype), np.zeros((1, 1), dtype), np.zeros(1, dtype=np.intp)
    for weight in (10.0, 17.0, 40.0, 800.0):
        weights = np.array([weight, 0.0], dtype)
        out = np.zeros((1, 1), dtype)
        kernels.predict_batch(net, weights, X, out)
        loss = kernels.batch_gradient(net, weights, Data(X, Y, np.ones(1, dtype)), rows, np.zeros(2, dtype))
        assert loss == pytest.approx(binary_log_loss(Y, out), rel=1e-5)
        assert loss <= -np.log(np.finfo(dtype).eps) * (1 + 1e-6)


@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSSES)
@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_online_updates_follow_the_batch_gradient_of_one_row(kernels, hidden, output, loss):
    """Plain SGD (the tutorial's fused update) and the general update path both step by -rate * gradient."""
    layout, weights, X, Y, sample_weight = general_case((4, 5, 3, 3), hidden, output)
    grad, _ = batch_gradient(kernels, layout, weights, X[:1], Y[:1], sample_weight[:1], loss)
    # Momentum 0: the momentum optimizer is plain SGD through the general path.
    for optimizer in ("sgd", "momentum"):
        updated, state = weights.copy(), np.zeros(2 * layout.n_weights)
        one_row = schedule([[0]], [0.1], optimizer=optimizer)
        kernels.train_online(
            layout.network(exact=True, loss=loss), updated, state, Data(X, Y, sample_weight), one_row, np.zeros(1)
        )
        np.testing.assert_allclose((weights - updated) / 0.1, grad, rtol=1e-9, atol=1e-12)


def reference_optimizer(name, weights, grad, state, step, rate, momentum, l2, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """The optimizers as their papers (and scikit-learn) write them, in numpy; biases are masked out of L2."""
    g = grad + l2 * weights * state["decayed"]
    if name == "sgd":
        return weights - rate * g
    if name in ("momentum", "nesterov"):
        state["v"] = momentum * state["v"] - rate * g
        return weights + (state["v"] if name == "momentum" else momentum * state["v"] - rate * g)
    if name == "adam":
        state["m"] = beta1 * state["m"] + (1 - beta1) * g
        state["s"] = beta2 * state["s"] + (1 - beta2) * g**2
        adam_rate = rate * np.sqrt(1 - beta2**step) / (1 - beta1**step)
        return weights - adam_rate * state["m"] / (np.sqrt(state["s"]) + epsilon)
    if name == "rmsprop":  # Keras's, its rho the schedule's beta2
        state["s"] = beta2 * state["s"] + (1 - beta2) * g**2
        return weights - rate * g / np.sqrt(state["s"] + epsilon)
    # iRprop- (Igel & Huesken 2000): grow the step while the sign holds, shrink and skip once it flips.
    sign_change = g * state["previous"]
    state["delta"] = np.where(sign_change > 0, np.minimum(state["delta"] * 1.2, 50.0), state["delta"])
    state["delta"] = np.where(sign_change < 0, np.maximum(state["delta"] * 0.5, 0.0), state["delta"])
    g = np.where(sign_change < 0, 0.0, g)
    state["previous"] = g
    return weights - np.sign(g) * state["delta"]


@pytest.mark.parametrize("optimizer", [name for name, optimizer in OPTIMIZERS.items() if optimizer.in_kernels])
def test_full_batch_training_follows_the_optimizers(kernels, optimizer):
    layout, weights, X, Y, sample_weight = general_case((4, 5, 3), "tanh", "softmax", n_rows=9)
    momentum, l2, rate, epochs = 0.8, 0.01, 0.2, 6
    state = np.zeros(2 * layout.n_weights)
    if optimizer == "rprop":
        state[: layout.n_weights] = 0.1
    trained, history = weights.copy(), np.zeros(epochs)
    plan = schedule(
        [np.arange(len(X))], np.full(epochs, rate), batch_size=len(X), optimizer=optimizer, momentum=momentum, l2=l2
    )
    kernels.train_batches(layout.network(exact=True), trained, state, Data(X, Y, sample_weight), plan, history, 1)

    expected = weights.copy()
    decayed = np.ones(layout.n_weights)
    for block in layout.layer_views(decayed):
        block[:, -1] = 0.0
    memory = {
        "decayed": decayed,
        "v": 0.0,
        "m": 0.0,
        "s": 0.0,
        "delta": np.full(layout.n_weights, 0.1),
        "previous": 0.0,
    }
    for step in range(1, epochs + 1):
        grad, _ = batch_gradient(kernels, layout, expected, X, Y, sample_weight)
        expected = reference_optimizer(optimizer, expected, grad, memory, step, rate, momentum, l2)
    np.testing.assert_allclose(trained, expected, rtol=1e-10, atol=1e-12)


def test_softmax_and_sigmoid_stay_finite_at_extreme_activations(kernels):
    for output in ("sigmoid", "softmax"):
        layout, weights, X, Y, sample_weight = general_case((3, 4, 3), "identity", output)
        out = np.zeros((2, 3))
        extreme = np.array([[1e300, -1e300, 1e300], [-1e300, 1e300, -1e300]]) / 1e10
        kernels.predict_batch(layout.network(exact=True), weights, extreme, out)
        assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))


def documented_fast_sum(weights_row, inputs):
    """The fast weighted sum as documented: eight interleaved partial sums combined pairwise, then the
    bias, then the remaining inputs in order (written here in plain Python floats)."""
    n_in = len(inputs)
    n8 = n_in - n_in % 8
    lanes = [0.0] * 8
    for i in range(n8):
        lanes[i % 8] += weights_row[i] * inputs[i]
    total = weights_row[n_in] + (
        ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    )
    for i in range(n8, n_in):
        total += weights_row[i] * inputs[i]
    return total


@pytest.mark.parametrize("n_in", [3, 8, 13, 64])
def test_fast_sums_follow_the_documented_order(kernels, n_in):
    layout = Layout.from_sizes((n_in, 5, 2), ["identity", "identity"])
    rng = np.random.default_rng(n_in)
    weights, X = rng.normal(size=layout.n_weights), rng.normal(size=(4, n_in))
    row_signals = signals(layout)
    for row in X:
        kernels.forward_propagate(layout.network(exact=False), weights, row_signals, row)
        block = layout.layer_views(weights)[0]
        expected = [documented_fast_sum(block[j].tolist(), row.tolist()) for j in range(5)]
        assert row_signals.outputs[:5].tolist() == expected
    exact, fast = np.zeros((4, 2)), np.zeros((4, 2))
    for out, flag in ((exact, True), (fast, False)):
        kernels.predict_batch(layout.network(exact=flag), weights, X, out)
    if n_in < 8:
        np.testing.assert_array_equal(fast, exact)  # below 8 inputs the two orders are one
    else:
        np.testing.assert_allclose(fast, exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", [(3, 9, 2), (8, 5, 3), (13, 17, 9, 4), (64, 32, 10)])
@pytest.mark.parametrize("n_rows", [1, 4, 7, 13])
def test_predict_batch_gives_each_row_its_forward_pass_bits(kernels, sizes, n_rows, dtype):
    """Prediction runs several rows through a neuron at once (the rest one by one): each row's outputs are the
    bits of its own forward pass, every activation and output among them."""
    rng = np.random.default_rng(n_rows)
    for hidden, output in (("relu", "softmax"), ("tanh", "sigmoid"), ("sigmoid", "identity")):
        layout = Layout.from_sizes(sizes, [hidden] * (len(sizes) - 2) + [output])
        weights = rng.normal(size=layout.n_weights).astype(dtype)
        X = rng.normal(size=(n_rows, sizes[0])).astype(dtype)
        for exact in (False, True):
            net, row_signals = layout.network(exact), signals(layout, dtype)
            out = np.zeros((n_rows, sizes[-1]), dtype)
            kernels.predict_batch(net, weights, X, out)
            for row, predicted in zip(X, out, strict=True):
                kernels.forward_propagate(net, weights, row_signals, row)
                assert predicted.tobytes() == row_signals.outputs[-sizes[-1] :].tobytes()


def _sigmoid_of(kernels, activations, exact):
    """The kernels' sigmoid of each activation: a one-input neuron with weight 1 and bias 0."""
    layout = Layout.from_sizes((1, 1))
    out = np.zeros((len(activations), 1))
    kernels.predict_batch(layout.network(exact), np.array([1.0, 0.0]), activations[:, None].copy(), out)
    return out[:, 0]


def test_the_fast_sigmoid_is_within_a_few_ulps_of_the_exact_one(kernels):
    """The fast mode's sigmoid takes fastbp's own exp (vectorisable), the exact mode libm's."""
    a = np.concatenate([np.linspace(-700, 700, 140_001), np.random.default_rng(0).normal(0, 5, 100_000)])
    fast, exact = _sigmoid_of(kernels, a, False), _sigmoid_of(kernels, a, True)
    assert (np.abs(fast - exact) <= 4 * np.spacing(exact)).all()
    limits = np.array([-1e300, -800.0, -710.0, 710.0, 800.0, 1e300, np.nan])
    fast, exact = _sigmoid_of(kernels, limits, False), _sigmoid_of(kernels, limits, True)
    np.testing.assert_array_equal(fast, exact)  # saturated at 0 and 1 alike; nan stays nan


def test_fastbps_exp_is_within_two_ulps_of_numpys():
    from numba import njit

    from fastbp._kernels_numba.primitives import fast_exp

    @njit
    def exp_of(values, out):
        for i in range(values.size):
            out[i] = fast_exp(values[i])

    x = np.concatenate([np.linspace(-708, 709, 200_001), np.random.default_rng(1).uniform(-3, 3, 100_000)])
    out = np.empty_like(x)
    exp_of(x, out)
    assert (np.abs(out - np.exp(x)) <= 2 * np.spacing(np.exp(x))).all()
    special = np.array([np.nan, np.inf, -np.inf, 709.5, -708.5, 0.0])
    exp_of(special, out[:6])
    np.testing.assert_array_equal(out[:6], [np.nan, np.inf, 0.0, np.inf, 0.0, 1.0])


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
def test_backends_agree_bit_for_bit_on_the_fast_sigmoid():
    a = np.concatenate([np.linspace(-1000, 1000, 200_001), [np.nan, np.inf, -np.inf]])
    outputs = [_sigmoid_of(get_backend(name), a, False) for name in COMPILED]
    assert outputs[0][:-3].tobytes() == outputs[1][:-3].tobytes()
    np.testing.assert_array_equal(outputs[0][-3:], [np.nan, 1.0, 0.0])  # nan's sign bit may differ
    np.testing.assert_array_equal(outputs[1][-3:], [np.nan, 1.0, 0.0])


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("l2", [0.0, 1e-3], ids=["fused pass", "with decay"])
def test_backends_train_the_same_bits_in_the_fast_mode_on_wide_layers(dtype, l2):
    """Layers of 21, 13 and 9 inputs: eight partial sums and a remainder, updated in the same pass as the next
    row's sums (Numba's LLVM vector lanes, Cython's eight accumulators) or, with L2, in two passes."""
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(30, 21)), rng.integers(0, 3, 30)
    options = dict(hidden=(13, 9), output="softmax", epochs=4, seed=2, exact=False, l2=l2, dtype=dtype, shuffle=True)
    models = [fastbp.train(X, y, backend=name, lr=0.1, **options) for name in COMPILED]
    assert models[0].weights.tobytes() == models[1].weights.tobytes()
    assert models[0].history.tobytes() == models[1].history.tobytes()


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="flush-to-zero is set on x86 processors only"
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_the_mini_batch_kernels_flush_subnormal_numbers_to_zero_and_leave_the_callers_mode_alone(kernels, n_threads):
    """The mini-batch kernels (BLAS's sums, in either arithmetic) run in flush-to-zero and denormals-are-zero modes,
    as the layered kernels do: a hidden unit's error of -1e-30 times inputs of 1e-10 makes no subnormal step (1e-40
    unflushed), on any number of threads; the calling thread keeps its own mode."""
    layout = Layout.from_sizes((4, 2, 1), ["identity", "identity"])
    weights = np.array([0] * 10 + [1e-30, 1e-30, 0], np.float32)  # two hidden units (4 weights, bias), the output
    X, Y = np.full((256, 4), 1e-10, np.float32), np.ones((256, 1), np.float32)
    data, rows = Data(X, Y, np.ones(256, np.float32)), np.arange(256, dtype=np.intp)
    grad = np.zeros_like(weights)
    kernels.batch_gradient(layout.network(exact=False), weights, data, rows, grad)
    assert not grad[:4].any() and grad[4] != 0.0  # the first unit's weights flushed, its bias's (-1e-30) kept
    trained, state, history = weights.copy(), np.zeros(2 * len(weights), np.float32), np.zeros(1)
    plan = schedule(rows[np.newaxis], [0.5], batch_size=256)
    kernels.train_batches(layout.network(exact=False), trained, state, data, plan, history, n_threads)
    assert not trained[:4].any() and trained[4] != 0.0
    assert np.float32(1e-30) * np.float32(1e-10) != 0.0  # this thread's mode is as it was

"""fastbp.train beyond the tutorial: depth, activations, outputs, optimizers, schedules, weights, precision."""

import random

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastbp
from fastbp import _backends, data
from fastbp._api import _prepared
from fastbp._layout import Layout, initial_weights

COMPILED = [name for name in fastbp.available_backends() if name != "reference"]

# One configuration per training mode, each on a small network for a few epochs.
MODES = {
    "online-sgd-tanh-softmax": {"activation": "tanh", "output": "softmax"},
    "online-relu-l2-weights": {"activation": "relu", "l2": 1e-3, "sample_weight": "varied"},
    "online-momentum": {"momentum": 0.9, "lr": 0.05},
    "online-nesterov-shuffle": {"momentum": 0.9, "nesterov": True, "lr": 0.05, "shuffle": True},
    "online-adam-leaky": {"optimizer": "adam", "lr": 0.01, "activation": "leaky_relu", "output": "softmax"},
    "online-invscaling-deep": {"hidden": (6, 5, 4), "lr_schedule": "invscaling", "lr": 0.5},
    "batch-8-sgd": {"batch_size": 8, "lr": 0.5},
    "batch-5-momentum-shuffle": {"batch_size": 5, "momentum": 0.9, "shuffle": True, "output": "softmax"},
    "batch-16-adam-l2": {"batch_size": 16, "optimizer": "adam", "lr": 0.01, "l2": 1e-2, "activation": "relu"},
    "batch-12-nesterov-tanh": {"batch_size": 12, "momentum": 0.8, "nesterov": True, "activation": "tanh"},
    "batch-9-leaky-invscaling": {"batch_size": 9, "activation": "leaky_relu", "lr_schedule": "invscaling"},
    "rprop-identity-weights": {"optimizer": "rprop", "activation": "identity", "sample_weight": "varied"},
    "regression": {"output": "identity", "activation": "tanh", "lr": 0.05},
    "regression-batch-adam": {"output": "identity", "batch_size": 10, "optimizer": "adam", "lr": 0.01},
    "lbfgs-relu-l2-weights": {"optimizer": "lbfgs", "activation": "relu", "l2": 1e-3, "sample_weight": "varied"},
    "lbfgs-tanh-softmax": {"optimizer": "lbfgs", "output": "softmax", "activation": "tanh"},
}


def _initial_network(X, y, **options) -> np.ndarray:
    """The weights training starts from: what ``fastbp.train`` draws before its first epoch."""
    return _prepared(X, y, **options).trainer.weights


def mode_data(options, wheat, dtype=np.float64):
    """Wheat seeds (classification) or a smooth function of its features (regression) for ``options``."""
    X, y = wheat
    options = dict(options)
    if options.get("sample_weight") == "varied":
        options["sample_weight"] = np.linspace(0.2, 2.0, len(X))
    if options.get("output") == "identity":
        y = np.column_stack([np.sin(3 * X[:, 0]) + X[:, 1], X[:, 2] * X[:, 3]])
    return X, y, {"hidden": 4, "epochs": 6, "seed": 3, "dtype": dtype, **options}


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES)
def test_numba_and_cython_agree_bit_for_bit_in_every_mode(wheat, mode, dtype):
    X, y, options = mode_data(MODES[mode], wheat, dtype)
    numba, cython = (fastbp.train(X, y, backend=name, **options) for name in ("numba", "cython"))
    assert cython.weights.tobytes() == numba.weights.tobytes()
    assert cython.history.tobytes() == numba.history.tobytes()
    assert cython.forward(X).tobytes() == numba.forward(X).tobytes()


@pytest.mark.parametrize("mode", MODES)
def test_float32_trains_the_float64_network_to_float32_precision(compiled_backend, wheat, mode):
    X, y, options = mode_data(MODES[mode], wheat)
    double = fastbp.train(X, y, backend=compiled_backend, **options)
    single = fastbp.train(X, y, backend=compiled_backend, **{**options, "dtype": np.float32})
    assert single.dtype == np.float32 and single.weights.dtype == np.float32
    assert single.forward(X).dtype == np.float32
    # A few epochs amplify rounding only mildly: the float32 network is the float64 one to ~1e-4.
    np.testing.assert_allclose(single.weights, double.weights, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(single.history, double.history, rtol=2e-3)


def test_two_hidden_relu_layers_with_softmax_learn_handwritten_digits(compiled_backend):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    model = fastbp.train(
        X_train, y_train, hidden=(64, 32), activation="relu", output="softmax", lr=0.02, epochs=15, seed=0,
        backend=compiled_backend,
    )  # fmt: skip
    assert model.activations == ("relu", "relu", "softmax")
    assert data.accuracy(y_test, model.predict(X_test)) >= 95.0
    np.testing.assert_allclose(model.predict_proba(X_test).sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict_proba(X_test), model.forward(X_test))


@pytest.mark.parametrize("options", [{}, {"batch_size": 16, "optimizer": "adam", "lr": 0.01, "shuffle": True}])
def test_regression_fits_a_smooth_function(compiled_backend, options):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (400, 2))
    y = np.sin(2 * X[:, 0]) * X[:, 1] + 0.5 * X[:, 0]
    settings = {"hidden": (16, 16), "activation": "tanh", "output": "identity", "lr": 0.05, "epochs": 200, "seed": 1}
    model = fastbp.train(X, y, backend=compiled_backend, **{**settings, **options})
    assert model.classes is None
    predicted = model.predict(X)
    assert predicted.shape == (400,)
    assert np.mean((predicted - y) ** 2) < 0.01 * np.var(y)
    two_targets = fastbp.train(X, np.column_stack([y, -y]), backend=compiled_backend, **{**settings, "epochs": 2})
    assert two_targets.predict(X).shape == (400, 2)
    with pytest.raises(TypeError, match="no class probabilities"):
        model.predict_proba(X)


def test_zero_sample_weights_drop_rows_and_uniform_weights_scale_the_rate(compiled_backend, wheat):
    X, y = wheat
    options = {"hidden": 3, "epochs": 4, "seed": 2, "backend": compiled_backend}
    keep = np.arange(len(X)) % 3 != 0
    weighted = fastbp.train(X, y, sample_weight=keep.astype(float), classes=np.unique(y), **options)
    dropped = fastbp.train(X[keep], y[keep], classes=np.unique(y), **options)
    np.testing.assert_array_equal(weighted.weights, dropped.weights)
    np.testing.assert_array_equal(weighted.history, dropped.history)
    doubled = fastbp.train(X, y, sample_weight=np.full(len(X), 2.0), lr=0.1, **options)
    faster = fastbp.train(X, y, lr=0.2, **options)
    np.testing.assert_array_equal(doubled.weights, faster.weights)


class Recorder:
    """Wraps a backend and keeps the rates and row orders each training call's schedule held."""

    def __init__(self, backend):
        self.backend, self.rates, self.orders = backend, [], []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def record(self, name):
        def call(net, weights, optimizer_state, data, schedule, *rest, **options):
            self.orders.append(schedule.orders.copy())
            self.rates.append(schedule.rates.copy())
            return getattr(self.backend, name)(net, weights, optimizer_state, data, schedule, *rest, **options)

        return call


@pytest.fixture
def recorder(monkeypatch):
    spy = Recorder(_backends.get_backend("numba"))
    spy.train_online, spy.train_batches = spy.record("train_online"), spy.record("train_batches")
    monkeypatch.setattr(fastbp._training, "get_backend", lambda name: spy)
    return spy


def test_invscaling_divides_the_rate_by_rows_seen_to_the_power_t(recorder, wheat):
    X, y = wheat
    fastbp.train(X, y, epochs=4, lr=0.4, lr_schedule="invscaling", power_t=0.25)
    expected = [0.4 / (epoch * len(X) + 1) ** 0.25 for epoch in range(4)]
    np.testing.assert_allclose(np.concatenate(recorder.rates), expected, rtol=1e-15)
    fastbp.train(X, y, epochs=3, lr=0.4)
    np.testing.assert_array_equal(recorder.rates[-1], [0.4] * 3)


def test_shuffle_draws_a_fresh_permutation_each_epoch_from_the_seed(recorder, wheat):
    X, y = wheat
    fastbp.train(X, y, epochs=3, shuffle=True, seed=5, batch_size=7)
    fastbp.train(X, y, epochs=3, shuffle=True, seed=5, batch_size=7)
    first, again = recorder.orders
    assert first.shape == (3, len(X))
    assert all(sorted(order.tolist()) == list(range(len(X))) for order in first)
    assert len({tuple(order) for order in first}) == 3
    np.testing.assert_array_equal(first, again)
    fastbp.train(X, y, epochs=3, seed=5)
    np.testing.assert_array_equal(recorder.orders[-1], [np.arange(len(X))])


@pytest.mark.parametrize("mode", ["batch-5-momentum-shuffle", "online-adam-leaky", "online-invscaling-deep"])
def test_training_in_chunks_equals_one_call_with_state_shuffles_and_schedules(compiled_backend, wheat, mode,
                                                                               monkeypatch):  # fmt: skip
    X, y, options = mode_data(MODES[mode], wheat)
    options = {**options, "epochs": 7, "backend": compiled_backend}
    whole = fastbp.train(X, y, **options)
    monkeypatch.setattr(fastbp._training, "CHUNK_WORK", 2 * len(X) * whole.weights.size)  # two epochs a call
    chunked = fastbp.train(X, y, **options)
    np.testing.assert_array_equal(chunked.weights, whole.weights)
    np.testing.assert_array_equal(chunked.history, whole.history)


def test_default_init_is_he_or_glorot_from_a_numpy_generator(wheat):
    X, y = wheat
    model = _initial_network(X, y, hidden=(6, 4), activation="relu", output="softmax", seed=11)
    layout = Layout.from_sizes((7, 6, 4, 3), ["relu", "relu", "softmax"])
    np.testing.assert_array_equal(model, initial_weights(layout, None, np.random.default_rng(11)))
    tutorial = _initial_network(X, y, hidden=5, seed=11, init="tutorial")
    np.testing.assert_array_equal(tutorial, initial_weights(Layout.from_sizes((7, 5, 3)), "tutorial",
                                                                    random.Random(11)))  # fmt: skip
    generator = fastbp.train(X, y, epochs=2, seed=np.random.default_rng(11))
    np.testing.assert_array_equal(generator.weights, fastbp.train(X, y, epochs=2, seed=11).weights)


def test_evaluate_runs_modern_networks_deterministically(compiled_backend, wheat):
    X, y = wheat
    options = {"hidden": 8, "activation": "relu", "output": "softmax", "epochs": 30, "lr": 0.1, "shuffle": True}
    first = fastbp.evaluate(X, y, seed=4, backend=compiled_backend, **options)
    assert first == fastbp.evaluate(X, y, seed=4, backend=compiled_backend, **options)
    assert first.mean > 85.0
    with pytest.raises(ValueError, match="evaluate scores classifiers"):
        fastbp.evaluate(X, y, output="identity")


@pytest.mark.parametrize(
    "options",
    [{"activation": "relu"}, {"output": "softmax"}, {"batch_size": 4}, {"momentum": 0.5}, {"optimizer": "adam"},
     {"l2": 0.1}, {"dtype": np.float32}, {"sample_weight": np.ones(10) * 2}],
)  # fmt: skip
def test_the_reference_backend_refuses_what_the_tutorial_does_not_do(options):
    X, y = data.tutorial_toy()
    with pytest.raises(ValueError, match="reference backend"):
        fastbp.train(X, y, epochs=1, backend="reference", **options)


def test_the_reference_backend_shuffles_and_schedules_like_the_kernels(compiled_backend, wheat):
    X, y = wheat
    options = {"hidden": (4, 3), "epochs": 5, "seed": 8, "shuffle": True, "lr_schedule": "invscaling", "lr": 0.9}
    options["exact"] = True  # the reference backend's arithmetic (the default for it, not for the others)
    compiled = fastbp.train(X, y, backend=compiled_backend, **options)
    expected = fastbp.train(X, y, backend="reference", **options)
    np.testing.assert_array_equal(compiled.weights, expected.weights)
    np.testing.assert_array_equal(compiled.history, expected.history)


@pytest.mark.parametrize("init", ["glorot", "he", None])
def test_init_schemes_through_train(wheat, init):
    """Explicit schemes apply to every layer; the default gives leaky relu layers He and the output Glorot."""
    X, y = wheat
    model = _initial_network(X, y, hidden=(6, 4), activation="leaky_relu", init=init, seed=4)
    layout = Layout.from_sizes((7, 6, 4, 3), ["leaky_relu", "leaky_relu", "sigmoid"])
    np.testing.assert_array_equal(model, initial_weights(layout, init, np.random.default_rng(4)))
    if init is None:
        he = initial_weights(layout, "he", np.random.default_rng(4))
        np.testing.assert_array_equal(layout.layer_views(model)[0], layout.layer_views(he)[0])


def test_classes_give_outputs_for_labels_the_data_lacks(compiled_backend, wheat):
    X, y = wheat
    model = fastbp.train(X, y, classes=["0", "1", "2", "3"], hidden=4, epochs=20, seed=1, backend=compiled_backend)
    assert model.sizes[-1] == 4 and model.classes.tolist() == ["0", "1", "2", "3"]
    assert "0" not in set(model.predict(X).tolist())  # never trained towards the absent class
    assert model.forward(X)[:, 0].max() < 0.5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_training_through_saturated_units_stays_finite(compiled_backend, dtype, output):
    """Activations far past exp's overflow point (float32: 88, float64: 709) saturate instead of giving NaN."""
    X, y = data.tutorial_toy()
    X = np.vstack([X, -X]) * 1e4
    y = np.concatenate([y, 1 - y])
    for batch_size in (1, 5):
        model = fastbp.train(X, y, hidden=3, output=output, lr=0.1, epochs=5, seed=2, dtype=dtype,
                             batch_size=batch_size, backend=compiled_backend)  # fmt: skip
        assert np.isfinite(model.history).all() and np.isfinite(model.weights).all()
        assert np.isfinite(model.forward(X)).all()


def test_evaluate_refuses_what_it_cannot_follow_into_the_folds(wheat):
    X, y = wheat
    with pytest.raises(ValueError, match="does not take sample_weight"):
        fastbp.evaluate(X, y, sample_weight=np.ones(len(X)))
    with pytest.raises(TypeError, match="tutorial's stream"):
        fastbp.evaluate(X, y, seed=np.random.default_rng(0))
    assert fastbp.evaluate(X, y, sample_weight=None, layers=None, epochs=1).scores  # their defaults


def test_exact_sums_by_default_only_where_the_tutorial_needs_them(wheat):
    X, y = wheat
    assert fastbp.train(X, y, epochs=1, init="tutorial").options["exact"] is True
    assert fastbp.train(X, y, epochs=1, backend="reference").options["exact"] is True
    assert fastbp.train(X, y, epochs=1).options["exact"] is False
    assert fastbp.train(X, y, epochs=1, exact=True).options["exact"] is True
    with pytest.raises(TypeError, match="exact"):
        fastbp.train(X, y, epochs=1, exact="yes")


def test_fast_sums_agree_across_backends_and_stay_close_to_exact_ones(compiled_backend):
    X, y = load_digits(return_X_y=True)
    options = {"hidden": (16,), "activation": "tanh", "output": "softmax", "lr": 0.05, "epochs": 3, "seed": 6}
    fast = fastbp.train(X / 16, y, exact=False, backend=compiled_backend, **options)
    exact = fastbp.train(X / 16, y, exact=True, backend=compiled_backend, **options)
    assert not np.array_equal(fast.weights, exact.weights)  # 64 inputs: the orders differ...
    np.testing.assert_allclose(fast.weights, exact.weights, rtol=1e-7, atol=1e-9)  # ...only in rounding
    if len(COMPILED) == 2:
        other = fastbp.train(X / 16, y, exact=False, backend=next(b for b in COMPILED if b != compiled_backend),
                             **options)  # fmt: skip
        np.testing.assert_array_equal(other.weights, fast.weights)
        np.testing.assert_array_equal(other.forward(X / 16), fast.forward(X / 16))


def test_the_reference_backend_refuses_the_fast_mode():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="pass exact=True"):
        fastbp.train(X[:20], y[:20], epochs=1, init="tutorial", exact=False, backend="reference")
    X, y = data.tutorial_toy()  # two inputs: the sums' order is the same, the sigmoid's exp is not
    with pytest.raises(ValueError, match="libm's exp"):
        fastbp.train(X, y, epochs=1, exact=False, backend="reference")


def penalised_mean_loss(model: fastbp.Model, X, Y, l2: float) -> float:
    """L-BFGS's objective from the model's predictions alone: the mean cross-entropy (softmax) or half squared
    error (otherwise) over the rows, plus ``0.5 * l2`` times the squared weights but the biases."""
    outputs = model.forward(X)
    if model.activations[-1] == "softmax":
        losses = -np.log(outputs[Y == 1])
    else:
        losses = 0.5 * np.square(outputs - Y).sum(axis=1)
    return losses.mean() + 0.5 * l2 * sum(np.square(block[:, :-1]).sum() for block in model.layers)


@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_lbfgs_stops_where_the_penalised_mean_loss_is_flat(compiled_backend, wheat, output):
    """Central differences of the objective, computed from predictions, vanish where L-BFGS says it converged;
    and each iteration's history entry is the kernels' summed loss of the network at that point."""
    X, labels = wheat
    classes = np.unique(labels)
    Y = (labels[:, None] == classes).astype(float) if output == "softmax" else np.c_[np.sin(3 * X[:, 0]), X[:, 1]]
    l2 = 1e-2
    options = {"hidden": 3, "activation": "tanh", "output": output, "optimizer": "lbfgs", "l2": l2, "seed": 2,
               "backend": compiled_backend}  # fmt: skip
    model = fastbp.train(X, labels if output == "softmax" else Y, epochs=3000, **options)
    assert 10 < len(model.history) < 3000  # converged before the iteration limit
    scale = 1.0 if output == "softmax" else 2.0  # the kernels report the squared error's sum, not its half
    objective = penalised_mean_loss(model, X, Y, l2)
    penalty = 0.5 * l2 * sum(np.square(block[:, :-1]).sum() for block in model.layers)
    assert model.history[-1] == pytest.approx(scale * len(X) * (objective - penalty), rel=1e-9)
    layout = Layout.from_sizes(model.sizes, model.activations)
    weights, step = model.weights.copy(), 1e-6
    gradient = np.empty_like(weights)
    for i in range(len(weights)):
        probes = []
        for sign in (1, -1):
            moved = weights.copy()
            moved[i] += sign * step
            probe = fastbp.Model(layout, moved, model.classes, model.history, compiled_backend)
            probes.append(penalised_mean_loss(probe, X, Y, l2))
        gradient[i] = (probes[0] - probes[1]) / (2 * step)
    assert np.abs(gradient).max() < 1e-3


def test_lbfgs_through_train_is_deterministic_and_stops_at_a_callback(compiled_backend, wheat):
    X, y = wheat
    options = {"hidden": 4, "output": "softmax", "optimizer": "lbfgs", "epochs": 40, "seed": 7,
               "backend": compiled_backend}  # fmt: skip
    first, second = fastbp.train(X, y, **options), fastbp.train(X, y, **options)
    np.testing.assert_array_equal(first.weights, second.weights)
    seen = []
    stopped = fastbp.train(X, y, callback=lambda epoch, loss: seen.append((epoch, loss)) or epoch == 4, **options)
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3, 4] and len(stopped.history) == 5
    np.testing.assert_array_equal(stopped.history, first.history[:5])
    assert [loss for _, loss in seen] == stopped.history.tolist()
    np.testing.assert_array_equal(  # the initial network, as any optimizer's
        _initial_network(X, y, **options), _initial_network(X, y, **{**options, "optimizer": "sgd"})
    )


def test_many_lbfgs_trainings_run_one_by_one(wheat):
    """train_many and evaluate group trainings in lockstep only for online plain SGD: L-BFGS ones run alone."""
    X, y = wheat
    options = {"hidden": 3, "output": "softmax", "optimizer": "lbfgs", "epochs": 5}
    models = fastbp.train_many(X, y, seeds=range(8), **options)
    for seed, model in zip(range(8), models):
        np.testing.assert_array_equal(model.weights, fastbp.train(X, y, seed=seed, **options).weights)


def test_lbfgs_refuses_layered_networks():
    with pytest.raises(ValueError, match="lbfgs trains on all the rows at once"):
        fastbp.train(np.zeros((4, 6, 6)), [0, 1, 0, 1], optimizer="lbfgs", layers=[fastbp.layers.Flatten()])


def test_layered_networks_refuse_exact_and_record_their_one_arithmetic(wheat):
    """exact=True is the tutorial's arithmetic, of dense layers alone: a network with other layers refuses it (it
    would change nothing), and records itself as not exact, init="tutorial" too; layers of Dense alone are the
    network of hidden=, in either arithmetic."""
    X, y, layers = np.zeros((4, 6, 6)), [0, 1, 0, 1], [fastbp.layers.Flatten()]
    with pytest.raises(ValueError, match="exact=True is the tutorial's arithmetic, which networks of dense layers"):
        fastbp.train(X, y, layers=layers, exact=True)
    for settings in ({"exact": False}, {"init": "tutorial"}, {"init": "tutorial", "exact": None}):
        assert fastbp.train(X, y, layers=layers, epochs=1, **settings).options["exact"] is False
    X, y = wheat
    for settings in ({"init": "tutorial"}, {"exact": True}, {"exact": False}, {"backend": "reference"}):
        dense = fastbp.train(X, y, layers=[fastbp.layers.Dense(3, "sigmoid")], epochs=2, seed=1, **settings)
        hidden = fastbp.train(X, y, hidden=[3], epochs=2, seed=1, **settings)
        assert dense.options["exact"] == hidden.options["exact"] == (settings.get("exact") is not False)
        np.testing.assert_array_equal(dense.weights, hidden.weights)


@pytest.mark.parametrize("optimizer", [fastbp.optimizers.Adam(), ["adam"]])
def test_an_optimizer_not_named_is_refused_by_name_with_layers_too(optimizer):
    for layers in (None, [fastbp.layers.Flatten()]):
        with pytest.raises(ValueError, match=r"optimizer must be one of \('sgd', 'adam'"):
            fastbp.train(np.zeros((4, 6, 6)), [0, 1, 0, 1], optimizer=optimizer, layers=layers)

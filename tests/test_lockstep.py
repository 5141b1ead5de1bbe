"""Many networks in lockstep: each gets exactly the bits it gets trained alone.

The kernels are checked against ``train_online`` network by network, then the API
that uses them: ``train_many`` against ``train``, ``evaluate`` in lockstep against
its one-job-per-fold path, ``search`` against ``evaluate`` point by point.
"""

import random
import warnings

import numpy as np
import pytest
from kernel_bundles import schedule

import fastbp
import fastbp._lockstep
from fastbp import _backends
from fastbp._backends import Data
from fastbp._layout import Layout, initial_weights

NETWORK_COUNTS = (1, 2, 5, 8, 13)  # 13: not a multiple of any vector width
NETWORKS = {
    "the tutorial's": ((7, 5, 3), ("sigmoid", "sigmoid")),
    "deep softmax": ((12, 20, 9, 4), ("tanh", "relu", "softmax")),
    "regression": ((20, 3, 2), ("leaky_relu", "identity")),
}


@pytest.fixture(autouse=True)
def always_lockstep(monkeypatch):
    """Lockstep for any number of networks: by default fewer than MIN_NETWORKS train one at a time."""
    monkeypatch.setattr(fastbp._lockstep, "MIN_NETWORKS", 1)


def _kernel_case(sizes, activations, n_nets, dtype, seed=0, n_rows=40):
    """A shared data set, K networks with their own weights, row sequences of their own lengths, and rates."""
    rng = np.random.default_rng(seed)
    layout = Layout.from_sizes(sizes, activations)
    X = rng.normal(size=(n_rows, sizes[0])).astype(dtype)
    Y = np.zeros((n_rows, sizes[-1]), dtype=dtype)
    Y[np.arange(n_rows), rng.integers(0, sizes[-1], n_rows)] = 1.0
    sample_weight = rng.uniform(0.5, 1.5, n_rows).astype(dtype)
    weights = [initial_weights(layout, None, np.random.default_rng(seed + k), dtype) for k in range(n_nets)]
    lengths = rng.integers(n_rows // 2, n_rows + 1, n_nets).astype(np.intp)
    orders = np.zeros((2, n_nets, lengths.max()), dtype=np.intp)
    for epoch in range(2):
        for k in range(n_nets):
            orders[epoch, k, : lengths[k]] = rng.permutation(n_rows)[: lengths[k]]
    return layout, X, Y, sample_weight, weights, lengths, orders


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("n_nets", NETWORK_COUNTS)
def test_lockstep_kernel_gives_each_network_its_bits_alone(compiled_backend, n_nets, network, dtype, exact):
    kernels = _backends.get_backend(compiled_backend)
    layout, X, Y, sample_weight, weights, lengths, orders = _kernel_case(*NETWORKS[network], n_nets, dtype)
    epochs, l2 = 5, 0.01
    rates = np.random.default_rng(1).uniform(0.005, 0.05, (epochs, n_nets))  # one per network and epoch
    together = np.ascontiguousarray(np.stack(weights, axis=1))
    history = np.zeros((epochs, n_nets))
    net, data = layout.network(exact), Data(X, Y, sample_weight)
    kernels.train_lockstep(net, together, data, schedule(orders, rates, l2=l2), lengths, history)
    assert np.isfinite(together).all()
    for k in range(n_nets):
        alone, alone_history = weights[k].copy(), np.zeros(epochs)
        for epoch in range(epochs):
            one_epoch = schedule([orders[epoch % 2, k, : lengths[k]]], rates[epoch : epoch + 1, k], l2=l2)
            state = np.zeros(2 * layout.n_weights, dtype=dtype)
            kernels.train_online(net, alone, state, data, one_epoch, alone_history[epoch : epoch + 1])
        assert together[:, k].tobytes() == alone.tobytes(), k
        assert history[:, k].tobytes() == alone_history.tobytes(), k


def test_backends_agree_in_lockstep():
    if "cython" not in fastbp.available_backends():
        pytest.skip("the Cython extension is not built")
    results = []
    for name in ("cython", "numba"):
        kernels = _backends.get_backend(name)
        layout, X, Y, sample_weight, weights, lengths, orders = _kernel_case(*NETWORKS["deep softmax"], 8, np.float64)
        together, history = np.ascontiguousarray(np.stack(weights, axis=1)), np.zeros((3, 8))
        plan = schedule(orders, np.full((3, 8), 0.1))
        kernels.train_lockstep(layout.network(exact=False), together, Data(X, Y, sample_weight), plan, lengths, history)
        results.append((together, history))
    assert results[0][0].tobytes() == results[1][0].tobytes()
    assert results[0][1].tobytes() == results[1][1].tobytes()


TRAIN_OPTIONS = {
    "the tutorial's": {"init": "tutorial"},
    "fast sums, shuffled, L2": {"hidden": 9, "shuffle": True, "l2": 0.001},
    "invscaling, softmax": {"hidden": (6, 4), "activation": "tanh", "output": "softmax", "lr_schedule": "invscaling"},
    "adam (one at a time)": {"optimizer": "adam", "lr": None},
}


@pytest.mark.parametrize("options", TRAIN_OPTIONS)
def test_train_many_equals_training_each_network_alone(compiled_backend, wheat, options):
    X, y = wheat
    rng = np.random.default_rng(0)
    row_orders = [rng.permutation(len(X))[: rng.integers(100, 200)] for _ in range(5)]
    rates = [0.01, 0.05, 0.1, 0.3, 0.5]
    settings = {k: v for k, v in TRAIN_OPTIONS[options].items() if k != "lr"}
    if "lr" in TRAIN_OPTIONS[options]:
        rates = [0.001, 0.002, 0.003, 0.004, 0.005]
    models = fastbp.train_many(
        X, y, seeds=range(5), lr=rates, row_orders=row_orders, epochs=15, backend=compiled_backend, **settings
    )
    for k, (model, rows) in enumerate(zip(models, row_orders, strict=True)):
        alone = fastbp.train(
            X[rows], y[rows], seed=k, lr=rates[k], classes=np.unique(y), epochs=15, backend=compiled_backend, **settings
        )
        assert model.weights.tobytes() == alone.weights.tobytes(), k
        assert model.history.tobytes() == alone.history.tobytes(), k
        np.testing.assert_array_equal(model.classes, alone.classes)


def test_train_many_defaults_to_every_row_in_order_and_one_rate():
    X, y = fastbp.data.tutorial_toy()
    models = fastbp.train_many(X, y, seeds=[random.Random(1), 2], epochs=20, init="tutorial")
    alone = [fastbp.train(X, y, seed=seed, epochs=20, init="tutorial") for seed in (random.Random(1), 2)]
    for model, expected in zip(models, alone, strict=True):
        assert model.weights.tobytes() == expected.weights.tobytes()


def test_train_many_names_the_network_that_diverged(wheat):
    X, y = wheat
    with pytest.raises(fastbp.NonFiniteError, match="network 1: training diverged at epoch 0"):
        fastbp.train_many(X, y, seeds=[1, 2], lr=[0.1, 1e30], epochs=3, output="softmax", activation="identity")


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"seeds": []}, ValueError, "seeds must be a non-empty"),
        ({"seeds": 3}, ValueError, "seeds must be a non-empty"),
        ({"seeds": [1, 2], "lr": [0.1]}, ValueError, "lr must be a number, None or a sequence of 2"),
        ({"seeds": [1, 2], "lr": [0.1, -1.0]}, ValueError, "lr must be positive"),
        ({"seeds": [1], "row_orders": [[0, 1], [2]]}, ValueError, "row_orders must be a sequence of 1"),
        ({"seeds": [1], "row_orders": [[]]}, ValueError, r"row_orders\[0\] must be a non-empty"),
        ({"seeds": [1], "row_orders": [[0.5]]}, ValueError, r"row_orders\[0\] must be a non-empty 1-D array of row"),
        ({"seeds": [1], "row_orders": [[0, 10]]}, ValueError, r"row_orders\[0\] has row indices outside the 10"),
        ({"seeds": [1], "seed": 2}, TypeError, "give seeds"),
        ({"seeds": [1], "callback": print}, TypeError, "train_many got unexpected option 'callback'"),
        ({"seeds": [1], "foo": 1}, TypeError, "train_many got unexpected option 'foo'"),
        ({"seeds": [1, 2], "lr": "ab"}, ValueError, "lr must be a number, None or a sequence of 2"),
        ({"seeds": [np.random.default_rng(1)] * 2}, ValueError, "one numpy Generator more than once"),
    ],
)
def test_train_many_refuses_bad_arguments(arguments, error, match):
    X, y = fastbp.data.tutorial_toy()
    with pytest.raises(error, match=match):
        fastbp.train_many(X, y, epochs=1, **arguments)


@pytest.mark.parametrize("init", ["tutorial", None])
def test_evaluate_in_lockstep_equals_one_network_per_job(compiled_backend, wheat, init):
    from joblib import parallel_config

    X, y = wheat
    options = dict(folds=5, seed=1, epochs=30, init=init, backend=compiled_backend)
    in_lockstep = fastbp.evaluate(X, y, **options)
    with parallel_config(backend="threading"):
        one_per_job = fastbp.evaluate(X, y, n_jobs=2, **options)
    assert in_lockstep.scores == one_per_job.scores
    assert in_lockstep.baseline_scores == one_per_job.baseline_scores


def test_the_tutorial_protocol_in_lockstep_gives_the_tutorials_scores(wheat):
    """TUTORIAL.md: five folds of the wheat seeds, 500 epochs at lr 0.3, seed 1: mean accuracy 93.333%."""
    X, y = wheat
    evaluation = fastbp.evaluate(X, y, folds=5, seed=1, epochs=500, lr=0.3, hidden=5, init="tutorial")
    assert evaluation.mean == pytest.approx(93.333, abs=1e-3)


def test_search_equals_evaluate_at_every_point(compiled_backend, wheat):
    X, y = wheat
    grid = {"hidden": [3, 5], "lr": [0.1, 0.3, 0.5], "shuffle": [False, True]}
    result = fastbp.search(X, y, grid, folds=4, seed=3, epochs=25, backend=compiled_backend)
    assert len(result.params) == 12
    assert result.params[1] == {"hidden": 3, "lr": 0.1, "shuffle": True}  # the last name varies fastest
    for params, evaluation in zip(result.params, result.evaluations, strict=True):
        expected = fastbp.evaluate(X, y, folds=4, seed=3, epochs=25, backend=compiled_backend, **params)
        assert evaluation.scores == expected.scores
        assert evaluation.baseline_scores == expected.baseline_scores
    assert result.best_score == max(result.means)
    assert result.best_params == result.params[result.means.index(max(result.means))]


def test_search_takes_a_list_of_points():
    X, y = fastbp.data.tutorial_toy()
    points = [{"lr": 0.3}, {"lr": 0.1, "hidden": 2}]
    result = fastbp.search(X, y, points, folds=2, epochs=5)
    assert result.params == points
    assert len(result.evaluations) == 2


def test_a_grid_tries_layer_sizes_and_activations_given_as_tuples(wheat):
    X, y = wheat
    grid = {"hidden": [(4, 3), (5, 3)], "activation": [("relu", "tanh"), "sigmoid"]}
    result = fastbp.search(X, y, grid, folds=2, seed=3, epochs=3)
    assert result.params[1] == {"hidden": (4, 3), "activation": "sigmoid"}
    for params, evaluation in zip(result.params, result.evaluations, strict=True):
        assert evaluation.scores == fastbp.evaluate(X, y, folds=2, seed=3, epochs=3, **params).scores
    assert len(set(result.means)) > 1


def test_equal_fold_scores_in_any_order_have_equal_means_and_the_first_point_wins():
    scores = [93.80952380952381, 92.85714285714286, 95.23809523809524, 90.47619047619048, 100.0]
    evaluations = [fastbp.Evaluation(order, order) for order in (scores, scores[::-1], sorted(scores))]
    assert len({evaluation.mean for evaluation in evaluations}) == 1
    assert fastbp.SearchResult([{"lr": 0.1}, {"lr": 0.3}, {"lr": 0.5}], evaluations).best_index == 0


def test_a_diverged_grid_point_scores_nan_and_the_others_still_count(wheat):
    X, y = wheat
    options = dict(folds=2, epochs=3, output="softmax", activation="identity")
    with pytest.warns(RuntimeWarning, match=r"grid point \{'lr': 1e\+30\}: fold 0: training diverged"):
        result = fastbp.search(X, y, {"lr": [0.1, 1e30]}, **options)
    assert np.isnan(result.means[1])
    assert result.best_index == 0


@pytest.mark.parametrize(
    "grid, error, match",
    [
        ({"lr": []}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({"lr": np.array(0.1)}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({"lr": np.array([[0.1]])}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({"lr": b"ab"}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({}, TypeError, "not be empty"),
        ({"folds": [2, 3]}, TypeError, "search's grid got unexpected option 'folds'"),
        ({"lr": 0.3}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({"lr": "0.3"}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ([], TypeError, "grid must map option names"),
        ({"lr": [0.3, -1.0]}, ValueError, "lr must be positive"),
        ({"nonsense": [1]}, TypeError, "unexpected option 'nonsense'"),
    ],
)
def test_search_refuses_bad_grids(grid, error, match):
    X, y = fastbp.data.tutorial_toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=match):
            fastbp.search(X, y, grid, folds=2, epochs=1)


def test_train_many_trains_regressions_and_checks_their_targets():
    X, _ = fastbp.data.tutorial_toy()
    targets = X[:, :1] * 0.5
    models = fastbp.train_many(X, targets[:, 0], seeds=[3, 4], lr=[0.01, 0.02], output="identity", epochs=10)
    for seed, rate, model in zip((3, 4), (0.01, 0.02), models, strict=True):
        alone = fastbp.train(X, targets[:, 0], seed=seed, lr=rate, output="identity", epochs=10)
        assert model.weights.tobytes() == alone.weights.tobytes()
        assert model.predict(X).shape == (len(X),)
    with pytest.raises(ValueError, match="X has 10 rows but y has 3"):
        fastbp.train_many(X, targets[:3], seeds=[1], output="identity")


@pytest.mark.parametrize("n_nets, kernel", [(7, "train_online"), (8, "train_lockstep")])
def test_lockstep_starts_at_eight_networks(monkeypatch, n_nets, kernel):
    """Below MIN_NETWORKS networks lockstep costs more than it saves (benches/bench_lockstep.py)."""
    monkeypatch.setattr(fastbp._lockstep, "MIN_NETWORKS", 8)
    called = set()
    backend = _backends.get_backend("auto")
    original = backend._run
    monkeypatch.setattr(backend, "_run", lambda name, *args: (called.add(name), original(name, *args))[1])
    X, y = fastbp.data.tutorial_toy()
    fastbp.train_many(X, y, seeds=range(n_nets), epochs=2)
    assert called - {"predict_batch"} == {kernel}  # predictions check each network for saturation


def test_train_many_takes_sample_weight_per_row_of_x_and_follows_the_row_orders(wheat):
    X, y = wheat
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    rows = [np.arange(30), np.random.default_rng(1).permutation(len(X))]
    models = fastbp.train_many(X, y, seeds=[1, 2], row_orders=rows, sample_weight=weights, epochs=5)
    for seed, order, model in zip((1, 2), rows, models, strict=True):
        alone = fastbp.train(
            X[order], y[order], seed=seed, sample_weight=weights[order], classes=np.unique(y), epochs=5
        )
        assert model.weights.tobytes() == alone.weights.tobytes()


def test_search_takes_numpy_integer_seeds_and_names_itself_in_errors(wheat):
    X, y = wheat
    result = fastbp.search(X, y, {"lr": [0.3]}, folds=2, seed=np.int64(3), epochs=2)
    assert result.evaluations[0].scores == fastbp.evaluate(X, y, folds=2, seed=3, epochs=2).scores
    for function in (fastbp.evaluate, lambda *data, **options: fastbp.search(*data, {"lr": [0.3]}, **options)):
        with pytest.raises(ValueError, match="does not take sample_weight: it could not follow the rows into the"):
            function(X, y, folds=2, epochs=1, sample_weight=np.ones(len(X)))
    many = fastbp.train_many(X, y, seeds=[1, 2], lr=np.array(0.3), epochs=2)  # a 0-d array is one number
    assert [model.weights.tobytes() for model in many] == [
        model.weights.tobytes() for model in fastbp.train_many(X, y, seeds=[1, 2], lr=0.3, epochs=2)
    ]
    assert fastbp.train(X, y, seed=1, lr=np.array(0.3), epochs=2).weights.tobytes() == many[0].weights.tobytes()
    with pytest.raises(TypeError, match="evaluate got unexpected option 'n_threads'"):
        fastbp.evaluate(X, y, folds=2, epochs=1, n_threads=2)


def test_regression_targets_must_be_real():
    X, _ = fastbp.data.tutorial_toy()
    with pytest.raises(ValueError, match="y has complex numbers: a regression's targets must be real"):
        fastbp.train(X, X[:, 0] * 1j, output="identity", epochs=1)

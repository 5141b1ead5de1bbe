"""fastbp.train and fastbp.evaluate, for every backend, against the tutorial's figures."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from test_reference import TOY_EPOCH_ERRORS

import fastbp
from fastbp import data, reference
from fastbp._api import _prepared
from fastbp.layers import Flatten

SORTED_SCORES = [90.47619047619048, 92.85714285714286, 97.61904761904762, 92.85714285714286, 92.85714285714286]
PUBLISHED_SCORES = [92.85714285714286, 92.85714285714286, 97.61904761904762, 92.85714285714286, 90.47619047619048]
WHEAT = {"hidden": 5, "lr": 0.3, "epochs": 500, "init": "tutorial"}


def toy_model(backend, **options):
    X, y = data.tutorial_toy()
    options = {"hidden": 2, "epochs": 20, "lr": 0.5, "seed": 1, "init": "tutorial", "backend": backend, **options}
    return fastbp.train(X, y, **options)


def test_toy_training_reproduces_figure_3(backend):
    model = toy_model(backend)
    assert [round(error, 3) for error in model.history] == TOY_EPOCH_ERRORS
    assert model.layers[0][0].tolist() == [-1.4688375095432327, 1.850887325439514, 1.0858178629550297]


def test_trained_weights_equal_the_tutorial_code_bit_for_bit(backend):
    X, y = data.tutorial_toy()
    network = reference.initialize_network(2, 2, 2, random.Random(1))
    rows = [[*x, int(label)] for x, label in zip(X.tolist(), y.tolist())]
    history = reference.train_network(network, rows, 0.5, 20, 2)
    model = toy_model(backend)
    np.testing.assert_array_equal(model.weights, reference.pack(network))
    assert model.history.tolist() == history


def test_deep_network_weights_equal_the_reference_backend(compiled_backend, wheat):
    X, y = wheat
    options = {"hidden": (6, 4), "epochs": 15, "lr": 0.2, "seed": 5, "exact": True}
    compiled = fastbp.train(X, y, backend=compiled_backend, **options)
    expected = fastbp.train(X, y, backend="reference", **options)
    np.testing.assert_array_equal(compiled.weights, expected.weights)
    np.testing.assert_array_equal(compiled.history, expected.history)


@pytest.mark.parametrize("classes, scores", [(None, SORTED_SCORES), (["2", "1", "3"], PUBLISHED_SCORES)])
def test_wheat_seeds_cross_validation_reproduces_the_tutorial(backend, wheat, classes, scores):
    X, y = wheat
    result = fastbp.evaluate(X, y, folds=5, seed=1, protocol="tutorial", classes=classes, backend=backend, **WHEAT)
    assert result.scores == scores
    assert f"{result.mean:.3f}" == "93.333"
    assert f"{result.baseline_mean:.3f}" == "28.095"


def test_model_reports_layers_history_and_labels(backend, wheat):
    X, y = wheat
    model = fastbp.train(X, y, hidden=(4, 3), epochs=7, seed=2, backend=backend)
    assert model.sizes == (7, 4, 3, 3)
    assert model.backend == backend
    assert [layer.shape for layer in model.layers] == [(4, 8), (3, 5), (3, 4)]
    assert np.concatenate([layer.ravel() for layer in model.layers]).tolist() == model.weights.tolist()
    with pytest.raises(ValueError, match="read-only"):
        model.layers[0][0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        model.weights[0] = 1.0
    with pytest.raises(AttributeError):
        model.weights = np.zeros(3)  # the kernels trust the buffer's size
    assert model.history.shape == (7,)
    assert model.classes.tolist() == ["1", "2", "3"]
    assert set(model.predict(X).tolist()) <= {"1", "2", "3"}
    assert "sizes=(7, 4, 3, 3)" in repr(model)


def test_predict_proba_normalises_the_outputs_and_agrees_with_predict(backend, wheat):
    X, y = wheat
    model = fastbp.train(X, y, epochs=100, seed=1, backend=backend)
    outputs, proba = model.forward(X), model.predict_proba(X)
    assert np.all((outputs > 0) & (outputs < 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes[proba.argmax(axis=1)], model.predict(X))
    assert data.accuracy(y, model.predict(X)) > 80.0


def test_same_seed_same_weights_and_no_global_random_state_touched(backend, wheat):
    X, y = wheat
    state, np_state = random.getstate(), np.random.get_state()
    first, second = (fastbp.train(X, y, epochs=5, seed=9, backend=backend) for _ in range(2))
    np.testing.assert_array_equal(first.weights, second.weights)
    numpy_seed = fastbp.train(X, y, epochs=5, seed=np.int64(9), backend=backend)
    np.testing.assert_array_equal(first.weights, numpy_seed.weights)
    assert not np.array_equal(first.weights, fastbp.train(X, y, epochs=5, seed=10, backend=backend).weights)
    assert random.getstate() == state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_training_in_chunks_equals_training_in_one_call(backend, wheat, monkeypatch):
    X, y = wheat
    whole = fastbp.train(X, y, epochs=7, seed=3, backend=backend)
    monkeypatch.setattr(fastbp._training, "CHUNK_WORK", 2 * len(X) * whole.weights.size)  # two epochs a call
    chunked = fastbp.train(X, y, epochs=7, seed=3, backend=backend)
    np.testing.assert_array_equal(chunked.weights, whole.weights)
    np.testing.assert_array_equal(chunked.history, whole.history)


def test_options_record_the_epochs_and_seed_that_train_the_model_again(compiled_backend, wheat):
    X, y = wheat
    model = fastbp.train(X, y, hidden=(4, 3), output="softmax", optimizer="adam", batch_size=8, lr=0.01, epochs=6,
                         seed=np.int64(5), backend=compiled_backend)  # fmt: skip
    assert (model.options["epochs"], model.options["seed"]) == (6, 5)
    again = fastbp.train(X, y, **json.loads(json.dumps(model.options)))  # as a model file keeps them
    np.testing.assert_array_equal(again.weights, model.weights)
    stopped = fastbp.train(X, y, epochs=6, seed=np.random.default_rng(5), callback=lambda epoch, loss: epoch == 1)
    assert (stopped.options["epochs"], stopped.options["seed"], len(stopped.history)) == (6, None, 2)
    many = fastbp.train_many(X, y, seeds=[3, 4], epochs=2)
    assert [network.options["seed"] for network in many] == [3, 4]


def test_training_starts_from_the_tutorials_initial_network(backend):
    X, y = data.tutorial_toy()
    initial = _prepared(X, y, hidden=1, seed=1, init="tutorial", backend=backend).trainer.weights
    assert initial.tolist() == [
        *[0.13436424411240122, 0.8474337369372327, 0.763774618976614],  # the tutorial's hidden neuron
        *[0.2550690257394217, 0.49543508709194095, 0.4494910647887381, 0.651592972722763],  # its outputs
    ]


def read_only(array):
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.tolist(),
        lambda X: np.asfortranarray(X),
        lambda X: X.astype(np.float32),  # values exactly representable: the same network
        lambda X: X.astype(">f8"),
        lambda X: np.repeat(X, 2, axis=1)[:, ::2],
        lambda X: read_only(X.copy()),
    ],
    ids=["list", "fortran", "float32", "big-endian", "strided", "read-only"],
)
def test_safe_conversions_train_the_same_network(backend, convert):
    X, y = data.tutorial_toy()
    X = X.astype(np.float32).astype(np.float64)
    expected = fastbp.train(X, y, hidden=2, epochs=3, seed=1, backend=backend)
    converted = fastbp.train(convert(X), y, hidden=2, epochs=3, seed=1, backend=backend)
    np.testing.assert_array_equal(converted.weights, expected.weights)
    np.testing.assert_array_equal(expected.forward(convert(X)), expected.forward(X))


GOOD_X, GOOD_Y = data.tutorial_toy()
BAD_INPUTS = [
    (GOOD_X[:, 0], GOOD_Y, {}, ValueError, "X must be 2-D"),
    (GOOD_X[None], GOOD_Y, {}, ValueError, "X must be 2-D"),
    (np.empty((0, 2)), [], {}, ValueError, "at least one row"),
    (GOOD_X, GOOD_Y[:-1], {}, ValueError, "10 rows but y has 9"),
    (GOOD_X, GOOD_Y[:, None], {}, ValueError, "y must be 1-D"),
    (np.where(GOOD_X > 7, np.nan, GOOD_X), GOOD_Y, {}, ValueError, "NaN or infinity"),
    (np.where(GOOD_X > 7, np.inf, GOOD_X), GOOD_Y, {}, ValueError, "NaN or infinity"),
    ([["a", "b"]] * 10, GOOD_Y, {}, ValueError, "X must be numeric"),
    (GOOD_X.astype(str), GOOD_Y, {}, ValueError, "X must be numeric"),
    (GOOD_X + 1j, GOOD_Y, {}, ValueError, "Complex data not supported: X must be real numbers"),
    (GOOD_X, [0, 1, "a", 0, 1, 0, 1, 0, 1, 0], {}, ValueError, "mixes strings"),
    (
        GOOD_X,
        np.array([0, 1, "a", 0, 1, 0, 1, 0, 1, None], dtype=object),
        {},
        ValueError,
        r"missing label .NaN. at row 9",
    ),
    (GOOD_X, np.array([0, 1, "a", 0, 1, 0, 1, 0, 1, 0], dtype=object), {}, ValueError, "cannot be sorted"),
    (GOOD_X, GOOD_Y + 0.5, {}, ValueError, "non-integer"),
    (GOOD_X, GOOD_Y, {"hidden": 0}, ValueError, "hidden"),
    (GOOD_X, GOOD_Y, {"hidden": (3, -1)}, ValueError, "hidden"),
    (GOOD_X, GOOD_Y, {"hidden": ()}, ValueError, "hidden"),
    (GOOD_X, GOOD_Y, {"hidden": 5.0}, ValueError, "hidden"),
    (GOOD_X, GOOD_Y, {"hidden": "5"}, ValueError, "hidden"),
    (GOOD_X, GOOD_Y, {"epochs": -1}, ValueError, "epochs"),
    (GOOD_X, GOOD_Y, {"epochs": 2.5}, ValueError, "epochs"),
    (GOOD_X, GOOD_Y, {"lr": 0}, ValueError, "lr"),
    (GOOD_X, GOOD_Y, {"lr": float("nan")}, ValueError, "lr"),
    (GOOD_X, GOOD_Y, {"lr": "0.1"}, ValueError, "lr"),
    (GOOD_X, GOOD_Y, {"init": "glorot?"}, ValueError, "init"),
    (GOOD_X, GOOD_Y, {"backend": "cuda"}, ValueError, "backend"),
    (GOOD_X, GOOD_Y, {"backend": ["numba"]}, TypeError, "backend must be a string"),
    (GOOD_X, GOOD_Y, {"seed": "1"}, TypeError, "seed"),
    (GOOD_X, GOOD_Y, {"classes": [0]}, ValueError, "not in classes"),
    (GOOD_X, GOOD_Y, {"activation": "softplus"}, ValueError, "activation must be one of"),
    (GOOD_X, GOOD_Y, {"activation": ("relu", "tanh")}, ValueError, "one name per hidden layer"),
    (GOOD_X, GOOD_Y, {"activation": "softmax"}, ValueError, "activation must be one of"),
    (GOOD_X, GOOD_Y, {"output": "tanh"}, ValueError, "output must be one of"),
    (GOOD_X, GOOD_Y, {"output": "softmax", "loss": "mse"}, ValueError, "loss must be one of .* with output='softmax'"),
    (GOOD_X, GOOD_Y, {"loss": "hinge"}, ValueError, "loss must be one of"),
    (GOOD_X, GOOD_Y, {"batch_size": 0}, ValueError, "batch_size"),
    (GOOD_X, GOOD_Y, {"batch_size": 2.0}, ValueError, "batch_size"),
    (GOOD_X, GOOD_Y, {"optimizer": "newton"}, ValueError, "optimizer must be one of"),
    (GOOD_X, GOOD_Y, {"optimizer": "rprop", "batch_size": 4}, ValueError, "full-batch"),
    (GOOD_X, GOOD_Y, {"optimizer": "lbfgs", "batch_size": 4}, ValueError, "lbfgs is a full-batch"),
    (GOOD_X, GOOD_Y, {"optimizer": "lbfgs", "shuffle": True}, ValueError, "shuffle would change nothing"),
    (GOOD_X, GOOD_Y, {"optimizer": "lbfgs", "backend": "reference"}, ValueError, "no batch_gradient kernel"),
    (GOOD_X, GOOD_Y, {"momentum": 1.0}, ValueError, "momentum"),
    (GOOD_X, GOOD_Y, {"momentum": -0.5}, ValueError, "momentum"),
    (GOOD_X, GOOD_Y, {"nesterov": "yes"}, TypeError, "nesterov"),
    (GOOD_X, GOOD_Y, {"shuffle": 1}, TypeError, "shuffle"),
    (GOOD_X, GOOD_Y, {"l2": -1e-3}, ValueError, "l2"),
    (GOOD_X, GOOD_Y, {"lr_schedule": "adaptive"}, ValueError, "lr_schedule"),
    (GOOD_X, GOOD_Y, {"beta2": 1.0}, ValueError, "beta2"),
    (GOOD_X, GOOD_Y, {"optimizer": "rmsprop", "rho": 1.5}, ValueError, "rho"),
    (GOOD_X, GOOD_Y, {"optimizer": "adam", "rho": 0.5}, ValueError, "rho applies to optimizer='rmsprop'"),
    (GOOD_X, GOOD_Y, {"optimizer": "rmsprop", "beta2": 0.5}, ValueError, "beta1 and beta2 are Adam's"),
    (GOOD_X, GOOD_Y, {"epsilon": 0.0}, ValueError, "epsilon"),
    (GOOD_X, GOOD_Y, {"dtype": np.float16}, ValueError, "dtype must be float64 or float32"),
    (GOOD_X, GOOD_Y, {"dtype": "double precision"}, ValueError, "dtype"),
    (GOOD_X * 1e300, GOOD_Y, {"dtype": np.float32}, ValueError, "too large for float32"),
    (GOOD_X, GOOD_Y, {"sample_weight": np.ones(9)}, ValueError, "sample_weight must have shape"),
    (GOOD_X, GOOD_Y, {"sample_weight": -np.ones(10)}, ValueError, "non-negative"),
    (GOOD_X, GOOD_Y, {"sample_weight": np.zeros(10)}, ValueError, "not all zero"),
    (GOOD_X, GOOD_Y, {"output": "identity", "classes": [0, 1]}, ValueError, "classes applies to classifiers"),
    (GOOD_X, np.array(["a"] * 10), {"output": "identity"}, ValueError, "y must be numeric"),
    (GOOD_X, np.full(10, np.nan), {"output": "identity"}, ValueError, "y contains NaN"),
    (GOOD_X, GOOD_Y, {"seed": np.random.RandomState(0)}, TypeError, "seed"),
    (GOOD_X, GOOD_Y, {"seed": -1}, ValueError, "seed must be a non-negative integer"),
    (GOOD_X, GOOD_Y, {"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
    (GOOD_X, GOOD_Y, {"callback": "print"}, TypeError, "callback must be a function"),
    (GOOD_X, GOOD_Y, {"hidden": 10**11}, ValueError, "more than fastbp's"),
    (GOOD_X, GOOD_Y, {"nesterov": True}, ValueError, "nesterov=True needs a momentum"),
    (GOOD_X, GOOD_Y, {"optimizer": "adam", "momentum": 0.9}, ValueError, "momentum and nesterov apply to"),
    (GOOD_X, GOOD_Y, {"optimizer": "adam", "lr_schedule": "invscaling"}, ValueError, "lr_schedule applies to"),
    (GOOD_X, GOOD_Y, {"optimizer": "rprop", "shuffle": True}, ValueError, "shuffle would change nothing"),
    (GOOD_X, GOOD_Y * 1e300, {"output": "identity", "dtype": np.float32}, ValueError, "y has values too large"),
    (GOOD_X, GOOD_Y, {"sample_weight": np.full(10, 1e300), "dtype": np.float32}, ValueError, "sample_weight has"),
    (GOOD_X, np.zeros(10, dtype=int), {}, ValueError, r"y has one class only \(0\)"),
    (GOOD_X, np.array([0, 1, float("nan"), *[0, 1] * 3, 0], dtype=object), {}, ValueError, "missing label.*row 2"),
    (GOOD_X, np.array(["a", "b", None, *["a", "b"] * 3, "a"], dtype=object), {}, ValueError, "missing label.*row 2"),
    (GOOD_X.tolist()[:9] + [[10**400, 1]], GOOD_Y, {}, ValueError, "X has numbers too large for float64"),
    (GOOD_X, [*GOOD_Y[:9].tolist(), 10**400], {"output": "identity"}, ValueError, "y has numbers too large"),
    (GOOD_X, GOOD_Y, {"sample_weight": [10**400] + [1] * 9}, ValueError, "within the float64 range"),
]


@pytest.mark.parametrize(
    "X, y, options, error, message", BAD_INPUTS, ids=[f"case{i:02d}" for i in range(len(BAD_INPUTS))]
)
def test_bad_input_raises_a_clear_error(backend, X, y, options, error, message):
    with pytest.raises(error, match=message):
        fastbp.train(X, y, **{"backend": backend, **options})


def test_one_class_trains_where_classes_names_more(backend):
    X, y = data.tutorial_toy()
    model = fastbp.train(X, np.zeros(len(X), dtype=int), classes=[0, 1], epochs=2, seed=0, backend=backend)
    assert model.classes.tolist() == [0, 1] and model.sizes[-1] == 2


def test_the_history_grows_with_the_epochs_a_callback_lets_run(compiled_backend):
    """Epochs far beyond memory, stopped by the callback: no history is allocated for the epochs never run."""
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, epochs=10**12, callback=lambda epoch, loss: epoch == 2, backend=compiled_backend)
    assert model.history.shape == (3,)


def test_prediction_checks_its_input(backend):
    model = toy_model(backend)
    with pytest.raises(ValueError, match="3 features, the model expects 2"):
        model.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict([[np.nan, 1.0]])


def test_a_model_is_never_built_around_a_wrong_buffer():
    model = toy_model("auto")
    layout, weights = model._layout, np.array(model.weights)
    with pytest.raises(ValueError, match="12 values"):
        fastbp.Model(layout, weights[:-1], model.classes, model.history, "numba")
    with pytest.raises(ValueError, match="contiguous float64 or float32"):
        fastbp.Model(layout, weights.astype(np.float16), model.classes, model.history, "numba")
    with pytest.raises(ValueError, match="2 outputs"):
        fastbp.Model(layout, weights, model.classes[:1], model.history, "numba")
    with pytest.raises(ValueError, match="backend"):
        fastbp.Model(layout, weights, model.classes, model.history, "auto")


def test_evaluate_rejects_bad_options(backend, wheat):
    X, y = wheat
    with pytest.raises(ValueError, match="protocol"):
        fastbp.evaluate(X, y, protocol="stratified", backend=backend)
    with pytest.raises(ValueError, match="evaluate does not take layers: it trains networks of dense layers"):
        fastbp.evaluate(X, y, epochs=1, layers=[Flatten()], backend=backend)
    with pytest.raises(ValueError, match="train_many does not take layers"):
        fastbp.train_many(X, y, seeds=[1], layers=[Flatten()], backend=backend)
    with pytest.raises(ValueError, match="search does not take layers"):
        fastbp.search(X, y, {"lr": [0.1]}, layers=[Flatten()], backend=backend)
    with pytest.raises(ValueError, match="folds"):
        fastbp.evaluate(X, y, folds=1, backend=backend)


def test_a_diverged_run_is_refused_naming_the_epoch(backend, monkeypatch):
    def diverging(net, weights, state, data, schedule, history, right=None):
        history[:] = [1.0, np.inf, np.nan]

    monkeypatch.setattr(fastbp._backends.get_backend(backend), "train_online", diverging)
    X, y = data.tutorial_toy()
    with pytest.raises(FloatingPointError, match="diverged at epoch 1") as raised:
        fastbp.train(X, y, epochs=3, backend=backend)
    assert isinstance(raised.value, fastbp.NonFiniteError) and isinstance(raised.value, ValueError)


def test_reference_overflow_is_reported_while_compiled_backends_saturate(backend):
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, hidden=2, epochs=1, seed=1, backend=backend)
    extreme = -X * 1e300  # activations far below the point where exp(-a) overflows
    if backend == "reference":
        with pytest.raises(FloatingPointError, match="sigmoid overflowed"):
            model.forward(extreme)
    else:
        assert np.all(np.isfinite(model.forward(extreme)))


@pytest.mark.slow
def test_numba_kernels_are_cached_on_disk_for_the_next_process(tmp_path):
    script = (
        "import fastbp, fastbp._kernels_numba as k;"
        "X, y = fastbp.data.tutorial_toy();"
        "fastbp.train(X, y, hidden=2, epochs=2, seed=1, backend='numba').predict(X);"
        "s = k.train_online.stats;"
        "print(sum(s.cache_misses.values()), sum(s.cache_hits.values()))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run():
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return done.stdout.split()[-2:]

    misses, _ = run()
    assert int(misses) >= 1
    assert run() == ["0", "1"]


def test_every_public_name_is_listed_by_dir_the_estimators_too():
    """The estimators load on first use (they import scikit-learn); an interactive session still completes them."""
    assert set(fastbp.__all__) <= set(dir(fastbp))

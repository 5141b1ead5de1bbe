"""fastbp.train and fastbp.evaluate, for every backend, against the tutorial's figures."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
from test_reference import TOY_EPOCH_ERRORS

import fastbp
from fastbp import data, reference

SORTED_SCORES = [90.47619047619048, 92.85714285714286, 97.61904761904762, 92.85714285714286, 92.85714285714286]
PUBLISHED_SCORES = [92.85714285714286, 92.85714285714286, 97.61904761904762, 92.85714285714286, 90.47619047619048]
WHEAT = {"hidden": 5, "lr": 0.3, "epochs": 500}


def toy_model(backend, **options):
    X, y = data.tutorial_toy()
    return fastbp.train(X, y, **{"hidden": 2, "epochs": 20, "lr": 0.5, "seed": 1, "backend": backend, **options})


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
    options = {"hidden": (6, 4), "epochs": 15, "lr": 0.2, "seed": 5}
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


def test_model_reports_layers_history_and_labels(wheat):
    X, y = wheat
    model = fastbp.train(X, y, hidden=(4, 3), epochs=7, seed=2)
    assert model.sizes == (7, 4, 3, 3)
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


def test_predict_proba_normalises_the_outputs_and_agrees_with_predict(wheat):
    X, y = wheat
    model = fastbp.train(X, y, epochs=100, seed=1)
    outputs, proba = model.forward(X), model.predict_proba(X)
    assert np.all((outputs > 0) & (outputs < 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes[proba.argmax(axis=1)], model.predict(X))
    assert data.accuracy(y, model.predict(X)) > 80.0


def test_same_seed_same_weights_and_no_global_random_state_touched(wheat):
    X, y = wheat
    state, np_state = random.getstate(), np.random.get_state()
    first, second = (fastbp.train(X, y, epochs=5, seed=9) for _ in range(2))
    np.testing.assert_array_equal(first.weights, second.weights)
    assert not np.array_equal(first.weights, fastbp.train(X, y, epochs=5, seed=10).weights)
    assert random.getstate() == state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_zero_epochs_returns_the_initial_network():
    X, y = data.tutorial_toy()
    model = fastbp.train(X, y, hidden=1, epochs=0, seed=1)
    assert model.history.shape == (0,)
    assert model.weights.tolist() == [
        *[0.13436424411240122, 0.8474337369372327, 0.763774618976614],  # the tutorial's hidden neuron
        *[0.2550690257394217, 0.49543508709194095, 0.4494910647887381, 0.651592972722763],  # its outputs
    ]


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.tolist(),
        lambda X: np.asfortranarray(X),
        lambda X: X.astype(np.float32).astype(np.float64),  # exactly representable: same network
        lambda X: X.astype(">f8"),
        lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    ],
    ids=["list", "fortran", "float32-values", "big-endian", "strided"],
)
def test_safe_conversions_train_the_same_network(convert):
    X, y = data.tutorial_toy()
    X = X.astype(np.float32).astype(np.float64)
    expected = fastbp.train(X, y, hidden=2, epochs=3, seed=1).weights
    np.testing.assert_array_equal(fastbp.train(convert(X), y, hidden=2, epochs=3, seed=1).weights, expected)


GOOD_X, GOOD_Y = data.tutorial_toy()


@pytest.mark.parametrize(
    "X, y, options, error, message",
    [
        (GOOD_X[:, 0], GOOD_Y, {}, ValueError, "X must be 2-D"),
        (GOOD_X[None], GOOD_Y, {}, ValueError, "X must be 2-D"),
        (np.empty((0, 2)), [], {}, ValueError, "at least one row"),
        (GOOD_X, GOOD_Y[:-1], {}, ValueError, "10 rows but y has 9"),
        (np.where(GOOD_X > 7, np.nan, GOOD_X), GOOD_Y, {}, ValueError, "NaN or infinity"),
        (np.where(GOOD_X > 7, np.inf, GOOD_X), GOOD_Y, {}, ValueError, "NaN or infinity"),
        ([["a", "b"]] * 10, GOOD_Y, {}, ValueError, "X must be numeric"),
        (GOOD_X, GOOD_Y, {"hidden": 0}, ValueError, "hidden"),
        (GOOD_X, GOOD_Y, {"hidden": (3, -1)}, ValueError, "hidden"),
        (GOOD_X, GOOD_Y, {"hidden": ()}, ValueError, "hidden"),
        (GOOD_X, GOOD_Y, {"epochs": -1}, ValueError, "epochs"),
        (GOOD_X, GOOD_Y, {"epochs": 2.5}, ValueError, "epochs"),
        (GOOD_X, GOOD_Y, {"lr": 0}, ValueError, "lr"),
        (GOOD_X, GOOD_Y, {"lr": float("nan")}, ValueError, "lr"),
        (GOOD_X, GOOD_Y, {"lr": "0.1"}, ValueError, "lr"),
        (GOOD_X, GOOD_Y, {"init": "glorot?"}, ValueError, "init"),
        (GOOD_X, GOOD_Y, {"backend": "cuda"}, ValueError, "backend"),
        (GOOD_X, GOOD_Y, {"seed": "1"}, TypeError, "seed"),
        (GOOD_X, GOOD_Y, {"classes": [0]}, ValueError, "not in classes"),
    ],
)
def test_bad_input_raises_a_clear_error(X, y, options, error, message):
    with pytest.raises(error, match=message):
        fastbp.train(X, y, **options)


def test_prediction_checks_its_input():
    model = toy_model("auto")
    with pytest.raises(ValueError, match="3 features, the model expects 2"):
        model.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict([[np.nan, 1.0]])


def test_evaluate_rejects_bad_options(wheat):
    X, y = wheat
    with pytest.raises(ValueError, match="protocol"):
        fastbp.evaluate(X, y, protocol="stratified")
    with pytest.raises(TypeError, match="unexpected keyword"):
        fastbp.evaluate(X, y, epochs=1, layers=3)
    with pytest.raises(ValueError, match="folds"):
        fastbp.evaluate(X, y, folds=1)


def test_a_diverged_run_is_refused_naming_the_epoch(monkeypatch):
    kernels = fastbp._backends.get_backend("numba")

    def diverging(*args):
        args[-1][:] = [1.0, np.inf, np.nan]

    monkeypatch.setattr(kernels, "train_epochs", diverging)
    X, y = data.tutorial_toy()
    with pytest.raises(FloatingPointError, match="diverged at epoch 1"):
        fastbp.train(X, y, epochs=3, backend="numba")


def test_numba_kernels_are_cached_on_disk_for_the_next_process(tmp_path):
    script = (
        "import fastbp, fastbp._kernels_numba as k;"
        "X, y = fastbp.data.tutorial_toy();"
        "fastbp.train(X, y, hidden=2, epochs=2, seed=1, backend='numba').predict(X);"
        "s = k.train_epochs.stats;"
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

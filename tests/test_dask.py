"""fastbp on many machines: a real Dask cluster of two worker processes, through joblib and by hand.

What runs on the workers must give the serial run's results bit for bit (a grid search,
:func:`fastbp.evaluate`'s folds), load the Numba kernels the client compiled instead of
compiling them again, and travel small: a model or an estimator pickles to its arrays
and names, never to compiled code.

The tests skip with a reason where ``distributed`` is not installed
(``pip install 'fastbp[dask]'``), except under ``CI``, which must run them.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import subprocess
import sys
import warnings
from types import ModuleType

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

import fastbp
from fastbp._kernels_numba.config import NUMBA_OPTIONS
from fastbp.estimators import MLPClassifier

pytestmark = pytest.mark.slow  # a cluster of worker processes

#: What the grid search varies: 2 learning rates x 2 hidden sizes.
GRID = {"learning_rate_init": [0.01, 0.05], "hidden_layer_sizes": [(4,), (8,)]}
#: Modules that would mean a pickle carries compiled code, or asks for it when loaded.
COMPILED_MODULES = ("numba", "llvmlite", "fastbp._kernels_")


def require_dask(module: str = "distributed") -> ModuleType:
    """Import ``module`` (``"distributed"``, ``"dask.array"``), or skip saying why; under ``CI`` fail instead."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        reason = f"{module} cannot be imported ({error}); install it with pip install 'fastbp[dask]'"
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must run the Dask tests")
        pytest.skip(reason)


def warm_numba_cache() -> None:
    """Compile (or load) here every Numba kernel the workers will call, so that Numba's disk cache holds them.

    Online and mini-batch training and prediction, in float64 from C-contiguous
    writeable arrays: the one specialisation fastbp ever asks for in float64.
    """
    X, y = fastbp.data.tutorial_toy()
    fastbp.train(X, y, hidden=2, epochs=1, seed=1, backend="numba").predict(X)
    fastbp.train(X, y, hidden=2, epochs=1, seed=1, batch_size=4, backend="numba")


@pytest.fixture(scope="module")
def client():
    """A Dask client of a local cluster of two single-threaded worker processes, closed after the module."""
    distributed = require_dask("distributed")
    warm_numba_cache()  # before the workers start, whatever order the tests run in
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def tasks_run(client) -> dict[str, int]:
    """Tasks each worker has finished so far."""
    return client.run(lambda dask_worker: len(dask_worker.state.log))


def standardized_iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_the_cluster_equals_the_serial_search(client, compiled_backend):
    """12 fits (4 settings x 3 folds) of 20 epochs each, on the workers and here: the same scores, bit for bit."""
    X, y = standardized_iris()
    estimator = MLPClassifier(max_iter=20, random_state=0, backend=compiled_backend)
    serial = GridSearchCV(estimator, GRID, cv=3).fit(X, y)
    before = tasks_run(client)
    with joblib.parallel_config(backend="dask"):
        distributed = GridSearchCV(estimator, GRID, cv=3, n_jobs=-1).fit(X, y)
    assert sum(tasks_run(client).values()) > sum(before.values())  # the fits did run on the cluster
    assert distributed.best_params_ == serial.best_params_
    names = ["mean_test_score", "rank_test_score", *(f"split{k}_test_score" for k in range(3))]
    for name in names:
        assert np.array_equal(distributed.cv_results_[name], serial.cv_results_[name]), name
    assert distributed.cv_results_["params"] == serial.cv_results_["params"]
    assert len(set(serial.cv_results_["mean_test_score"])) > 1  # the settings do differ, so the order is checked
    for a, b in zip(distributed.best_estimator_.coefs_, serial.best_estimator_.coefs_):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("init", ["tutorial", None])
def test_evaluate_on_the_cluster_equals_the_serial_run(client, compiled_backend, wheat, init):
    """The tutorial's cross-validation of the wheat seeds, each fold's network trained on a worker."""
    X, y = wheat
    options = {"folds": 5, "seed": 1, "hidden": 5, "lr": 0.3, "epochs": 100, "init": init, "backend": compiled_backend}
    serial = fastbp.evaluate(X, y, n_jobs=None, **options)
    before = tasks_run(client)
    with joblib.parallel_config(backend="dask"):
        distributed = fastbp.evaluate(X, y, n_jobs=-1, **options)
    assert sum(tasks_run(client).values()) > sum(before.values())
    assert distributed.scores == serial.scores
    assert distributed.baseline_scores == serial.baseline_scores
    assert serial.mean > 80  # trained networks, not the 28% of the Zero Rule


def train_and_count_compilations(backend: str, **options) -> dict:
    """On a worker: train a tiny network, and report what Numba loaded from its cache or compiled there."""
    from fastbp._kernels_numba import batches, online

    X, y = fastbp.data.tutorial_toy()
    model = fastbp.train(X, y, hidden=2, epochs=5, seed=1, backend=backend, **options)
    modules = (online, batches)
    dispatchers = {name: value for module in modules for name, value in vars(module).items() if hasattr(value, "stats")}
    return {
        "pid": os.getpid(),
        "weights": model.weights.copy(),
        "kernels": sorted(name for name in sys.modules if name.startswith("fastbp._kernels_")),
        "hits": {name: sum(d.stats.cache_hits.values()) for name, d in dispatchers.items()},
        "misses": {name: sum(d.stats.cache_misses.values()) for name, d in dispatchers.items()},
    }


@pytest.mark.skipif(not NUMBA_OPTIONS["cache"], reason="FASTBP_NUMBA_CACHE=0 turns Numba's disk cache off")
def test_workers_load_the_numba_kernels_instead_of_compiling_them(client):
    """The client compiled the kernels into Numba's disk cache (the fixture); each worker loads them from there.

    Every worker trains once with backend="numba", online and in mini-batches; no kernel
    of ``fastbp._kernels_numba`` may have missed the cache in any worker, whatever the
    earlier tests ran there.
    """
    X, y = fastbp.data.tutorial_toy()
    here = fastbp.train(X, y, hidden=2, epochs=5, seed=1, backend="numba")
    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 2
    for options in ({}, {"batch_size": 4}):
        futures = [
            client.submit(train_and_count_compilations, "numba", workers=[worker], pure=False, **options)
            for worker in workers
        ]
        reports = client.gather(futures)
        assert len({report["pid"] for report in reports} | {os.getpid()}) == 3  # two other processes
        kernel = "train_batches" if options else "train_online"
        for report in reports:
            assert report["misses"] == dict.fromkeys(report["misses"], 0), report["misses"]
            # The kernel, or a compiled function behind a Python wrapper of that name (``_train_batches_on_...``),
            # came from the cache.
            behind = [hits for name, hits in report["hits"].items() if name == kernel or name.startswith(f"_{kernel}")]
            assert any(behind), report["hits"]
            if not options:
                assert np.array_equal(report["weights"], here.weights)


def test_workers_train_with_the_cython_backend(client):
    X, y = fastbp.data.tutorial_toy()
    here = fastbp.train(X, y, hidden=2, epochs=5, seed=1, backend="cython")
    workers = list(client.scheduler_info()["workers"])
    futures = [
        client.submit(train_and_count_compilations, "cython", workers=[worker], pure=False) for worker in workers
    ]
    for report in client.gather(futures):
        assert "fastbp._kernels_cython" in report["kernels"]
        assert np.array_equal(report["weights"], here.weights)


# --- what travels: pickles of models and estimators ----------------------------------------------------------------


class _RecordingUnpickler(pickle.Unpickler):
    """Records every ``module.name`` global that a pickle asks for."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.globals: set[str] = set()

    def find_class(self, module, name):
        self.globals.add(f"{module}.{name}")
        return super().find_class(module, name)


def assert_no_compiled_code(data: bytes) -> None:
    """Neither compiled code nor a reference to a kernel module: the backend travels as its name only."""
    unpickler = _RecordingUnpickler(data)
    unpickler.load()
    assert unpickler.globals, "the recording unpickler saw no globals at all"
    assert not [name for name in unpickler.globals if name.startswith(COMPILED_MODULES)], unpickler.globals
    for marker in (b"CPUDispatcher", b"numba.core", b"llvmlite", b"fastbp._kernels_"):
        assert marker not in data, marker


UNPICKLE_AND_PREDICT = """
import pickle, sys
import numpy as np
X = np.load("X.npy")
for name in sys.argv[1:]:
    with open(f"{name}.pkl", "rb") as file:
        model = pickle.load(file)
    np.save(f"{name}-predictions.npy", model.predict(X))
    np.save(f"{name}-probabilities.npy", model.predict_proba(X))
print(sorted(name for name in sys.modules if name.split(".")[0] in ("numba", "llvmlite")))
"""


def predicted_in_a_fresh_process(tmp_path, pickles: dict[str, bytes], X: np.ndarray) -> tuple[dict, list[str]]:
    """Unpickle each of ``pickles`` in one new Python process and predict ``X`` there.

    Returns each one's ``(predictions, probabilities)`` by name, and the Numba modules the process imported.
    """
    for name, data in pickles.items():
        (tmp_path / f"{name}.pkl").write_bytes(data)
    np.save(tmp_path / "X.npy", X)
    done = subprocess.run(
        [sys.executable, "-c", UNPICKLE_AND_PREDICT, *pickles],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = {
        name: (np.load(tmp_path / f"{name}-predictions.npy"), np.load(tmp_path / f"{name}-probabilities.npy"))
        for name in pickles
    }
    return results, done.stdout.strip()


def test_models_and_estimators_pickle_small_and_predict_the_same_elsewhere(compiled_backend, tmp_path):
    """A pickled model is its weights plus a few KB of names and layout, and no kernel or compiled code.

    A fitted MLPClassifier holds five copies' worth of weights: ``model_``, ``coefs_`` with
    ``intercepts_``, and the trainer's weights with the two optimizer-state arrays (Adam's
    moments) that ``partial_fit`` continues from (the best weights are kept only with early
    stopping).
    Both unpickle in a fresh process, which predicts what this one does, bit for bit.
    """
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    model = fastbp.train(X, y, hidden=(32,), output="softmax", epochs=5, seed=0, backend=compiled_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = MLPClassifier((32,), max_iter=5, random_state=0, backend=compiled_backend).fit(X, y)
    pickles = {"model": pickle.dumps(model), "estimator": pickle.dumps(estimator)}
    size = model.weights.nbytes
    assert size == estimator.model_.weights.nbytes > 16_000  # large enough for the bounds to mean something
    assert len(pickles["model"]) <= size + model.history.nbytes + 4096
    assert len(pickles["estimator"]) <= 5 * size + 8192
    for data in pickles.values():
        assert_no_compiled_code(data)
    elsewhere, numba_modules = predicted_in_a_fresh_process(tmp_path, pickles, X)
    for name, original in (("model", model), ("estimator", estimator)):
        predictions, probabilities = elsewhere[name]
        assert np.array_equal(predictions, original.predict(X)), name
        assert np.array_equal(probabilities, original.predict_proba(X)), name
    if compiled_backend == "cython":
        assert numba_modules == "[]"  # unpickling what Cython trained does not bring Numba in

"""W1: the tutorial's wheat seeds experiment (5 folds x 500 epochs, 7-5-3 sigmoid,
squared error, online SGD), per backend: the reference, Numba and Cython, and the
tutorial's loop written by hand in C (``tutorial.c``, compiled here at -O3), the yardstick
of fastbp's W1 target.

Run: ``python benches/report.py`` (or ``pytest benches --benchmark-enable -k wheat``);
the ``W1-wheat-seeds`` group gives each compiled backend's speed-up over the reference.
All of them compute in the tutorial's exact order, so they must return the same per-fold
accuracies.

``W1-wheat-estimator``: the same data and hidden layer through scikit-learn's
``MLPClassifier`` and fastbp's, from the same initial weights, for a fixed number of
epochs: what a search or cross-validation over thousands of small networks pays per fit.
"""

import ctypes
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import COMPILED

import fastbp
from fastbp import data

TUTORIAL = {"seed": 1, "init": "tutorial", "hidden": 5, "lr": 0.3}
#: Per-fold accuracies (labels mapped in sorted order) after so many epochs, as the reference computes them.
SORTED_SCORES = {
    500: [90.47619047619048, 92.85714285714286, 97.61904761904762, 92.85714285714286, 92.85714285714286],
    100: [90.47619047619048, 90.47619047619048, 97.61904761904762, 92.85714285714286, 88.09523809523809],
    10: [78.57142857142857, 88.09523809523809, 90.47619047619048, 73.80952380952381, 92.85714285714286],
}
FOLDS = 5


def tutorial_folds(n_rows):
    """The tutorial's protocol: a fresh ``random.Random(1)`` draws the split, then yields, in fold order, that
    stream (which goes on to draw each fold's initial network), the fold's training rows and its held-out rows."""
    rng = random.Random(TUTORIAL["seed"])
    split = data.cross_validation_split(n_rows, FOLDS, rng)
    for k, test in enumerate(split):
        yield rng, np.concatenate([fold for j, fold in enumerate(split) if j != k]), test


def one_at_a_time(X, y, rates, epochs, backend, **options):
    """The tutorial's protocol run one network at a time: per learning rate, a fresh ``random.Random(1)``
    draws the split, then each fold's network is trained alone by ``fastbp.train`` and scores its
    held-out fold.  Returns the per-rate scores and every network, in rate then fold order."""
    classes = np.unique(y)
    scores, models = [], []
    for lr in rates:
        point = []
        for rng, fit, test in tutorial_folds(len(X)):
            model = fastbp.train(
                X[fit], y[fit], seed=rng, lr=lr, classes=classes, epochs=epochs, backend=backend, n_threads=1,
                **options,
            )  # fmt: skip
            point.append(data.accuracy(y[test], model.predict(X[test], n_threads=1)))
            models.append(model)
        scores.append(point)
    return scores, models


@pytest.mark.benchmark(group="W1-wheat-seeds")
@pytest.mark.parametrize("backend", fastbp.available_backends())
def bench_wheat_seeds_experiment(timed, size, wheat, backend):
    X, y = wheat
    fastbp.train(X[::70], y[::70], epochs=1, backend=backend)  # warm up on one seed of each kind: load the kernels
    result = timed(
        lambda: fastbp.evaluate(X, y, folds=FOLDS, protocol="tutorial", epochs=size.epochs, backend=backend,
                                **TUTORIAL),
        samples=len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS,
        slow=backend == "reference",
        library="reference" if backend == "reference" else "fastbp",
        implementation="reference (pure Python)" if backend == "reference" else f"fastbp {backend} float64",
        path="the tutorial's code" if backend == "reference" else "online kernel (exact tutorial order)",
    )  # fmt: skip
    assert result.scores == SORTED_SCORES[size.epochs]


C_SOURCE = Path(__file__).with_name("tutorial.c")
#: fastbp's extension's optimisation flags (setup.py): no fused multiply-adds, no -march.
C_FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-shared", "-fPIC"]


@pytest.fixture(scope="session")
def hand_written_c(tmp_path_factory):
    """``tutorial.c`` compiled by the C compiler (``$CC``, else ``cc``) and loaded with ctypes."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (set CC) to build the hand-written C peer")
    library = tmp_path_factory.mktemp("hand-written-c") / "tutorial.so"
    build = subprocess.run([compiler, *C_FLAGS, "-o", str(library), str(C_SOURCE), "-lm"], capture_output=True)
    if build.returncode != 0:
        pytest.skip(f"{compiler} could not build {C_SOURCE.name}: {build.stderr.decode(errors='replace')[-500:]}")
    c = ctypes.CDLL(str(library))
    floats = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    ints = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    size = ctypes.c_int64
    c.train.argtypes = [floats, floats, ints, size, size, size, size, ctypes.c_double, size]
    c.predict.argtypes = [floats, floats, size, size, size, size, ints]
    c.train.restype = c.predict.restype = ctypes.c_int
    return c


def c_experiment(c, X, labels, epochs):
    """The tutorial's protocol around the C loop: one ``random.Random(1)`` stream draws the split, then each
    fold's weights in fastbp's layout order (the tutorial's ``initialize_network``).  Returns the per-fold
    accuracies and trained weights."""
    n_in, n_hidden = X.shape[1], TUTORIAL["hidden"]
    scores, networks = [], []
    for rng, fit, test in tutorial_folds(len(X)):
        n_out = len(np.unique(labels[fit]))  # the tutorial's: the classes seen in the training rows
        weights = np.array([rng.random() for _ in range(n_hidden * (n_in + 1) + n_out * (n_hidden + 1))])
        X_fit, X_test = np.ascontiguousarray(X[fit]), np.ascontiguousarray(X[test])
        assert c.train(weights, X_fit, labels[fit], len(fit), n_in, n_hidden, n_out, TUTORIAL["lr"], epochs) == 0
        predicted = np.empty(len(test), dtype=np.int64)
        assert c.predict(weights, X_test, len(test), n_in, n_hidden, n_out, predicted) == 0
        scores.append(data.accuracy(labels[test], predicted))
        networks.append(weights)
    return scores, networks


@pytest.mark.benchmark(group="W1-wheat-seeds")
def bench_wheat_seeds_hand_written_c(timed, size, wheat, hand_written_c):
    X, y = wheat
    labels = np.unique(y, return_inverse=True)[1].astype(np.int64)  # sorted, as fastbp maps them
    scores, networks = timed(
        lambda: c_experiment(hand_written_c, X, labels, size.epochs),
        samples=len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS,
        library="hand-written C",
        implementation="hand-written C (tutorial.c), -O3",
        path="the tutorial's loop in C, sizes at run time",
    )
    assert scores == SORTED_SCORES[size.epochs]
    # The same arithmetic as fastbp's exact kernels, so the same weights to the last bit.
    options = {key: value for key, value in TUTORIAL.items() if key not in ("seed", "lr")}
    _, models = one_at_a_time(X, y, [TUTORIAL["lr"]], size.epochs, fastbp.available_backends()[0], **options)
    for k, (weights, model) in enumerate(zip(networks, models, strict=True)):
        assert weights.tobytes() == model.weights.tobytes(), f"fold {k}: the C's weights differ from fastbp's"


@pytest.mark.benchmark(group="W1-wheat-estimator")
@pytest.mark.parametrize("library", [*COMPILED, "scikit-learn"])
def bench_wheat_estimator(bench_estimator, wheat, library):
    """The tutorial's network as scikit-learn's estimator: its defaults (Adam, batches of up to 200 rows: here one
    of all 210), but a rate of 0.01 to learn within the epochs, every one run.  A small network's fit, where the
    Python around the kernel calls weighed as much as the kernel when it ran an epoch a call."""
    X, y = wheat
    settings = {"hidden_layer_sizes": (5,), "learning_rate_init": 0.01, "tol": 0.0, "n_iter_no_change": 10**6}
    bench_estimator(library, X, y, {**settings, "random_state": 0}, "train_batches kernel, several epochs a call")

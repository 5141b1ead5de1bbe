"""Parallel speed-ups: the same work on one thread (or job) and on every core, side by side.

Each workload is one benchmark group holding both runs per compiled backend, so
``benches/report.py`` divides their times within one run:

- ``parallel-predict``: ``Model.predict`` on a large batch (100,000 rows in full) through
  an MNIST-sized network (784-128-10, sigmoid hidden units, softmax), ``n_threads=1``
  against every core: the rows are split into one chunk per thread (``fastbp/_parallel.py``).
- ``parallel-W3-batch128`` and ``parallel-W3-batch32``: W3's mini-batch training
  (``bench_mnist_shape.py``'s network and data) with ``fastbp.train(n_threads=...)``.
- ``parallel-cv-wheat`` (the tutorial's wheat seeds experiment, 5 folds x 500 epochs) and
  ``parallel-cv-digits`` (5 folds of W2's network): ``fastbp.evaluate`` with ``n_jobs=1``
  and ``n_jobs=-1``, whose folds train on threads, one network per job.
- ``parallel-grid-wheat``: ``fastbp.search`` over 8 learning rates x 5 folds of the wheat
  seeds (40 networks in lockstep), ``n_jobs=1`` and ``-1``: the lockstep group cut into
  one part per thread (on up to 5 cores: each part needs 8 networks).

Every parallel run must give the bits of the one-thread run: the same predictions,
the same weights, the same scores.
"""

import numpy as np
import pytest
from bench_lockstep import RATES
from bench_train import FOLDS, SORTED_SCORES, TUTORIAL

import fastbp
from fastbp._parallel import usable_cores

#: "Every core": the cores this process may run on.
CORES = usable_cores()
NETWORK = {"hidden": 128, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
LR = {32: 0.5, 128: 0.5}
DIGITS_NETWORK = {"hidden": 32, "activation": "sigmoid", "output": "softmax", "init": "glorot", "lr": 0.3}


def workers(name):
    """Parametrize ``name`` over one worker and every core."""
    return pytest.mark.parametrize(name, [1, CORES], ids=["one", f"all{CORES}"])


#: ``n_jobs`` of evaluate and search: one job, and joblib's every core.
JOBS = pytest.mark.parametrize("n_jobs", [1, -1], ids=["one", f"all{CORES}"])


def describe(backend, count, kind, workload):
    """The ``timed`` info of a run on ``count`` threads or jobs (``kind``)."""
    plural = "" if count == 1 else "s"
    return {
        "library": "fastbp",
        "implementation": f"fastbp {backend}, {count} {kind[:-1]}{plural}",
        "backend": backend,
        "workers": count,
        "parallelism": kind,
        "workload": workload,
        "dtype": "float64",
    }


@pytest.fixture(scope="module")
def large_batch(mnist_shape):
    """``large_batch(rows)``: so many rows drawn with replacement from the MNIST-shaped data, and their
    labels; the last batch is kept for the next benchmark (100,000 rows of 784 features are 630 MB)."""
    kept = {}

    def draw(rows):
        if rows not in kept:
            kept.clear()
            X, y = mnist_shape
            picks = np.random.default_rng(0).integers(0, len(X), rows)
            kept[rows] = X[picks], y[picks]
        return kept[rows]

    return draw


@pytest.mark.benchmark(group="parallel-predict")
@workers("n_threads")
def bench_parallel_predict(timed, size, mnist_shape, large_batch, assert_learned, compiled_backend, n_threads):
    model = fastbp.train(*mnist_shape, **NETWORK, lr=LR[128], batch_size=128, epochs=1, backend=compiled_backend)
    rows, labels = large_batch(size.rows)
    model.predict(rows[:100], n_threads=n_threads)  # warm up: load or compile the kernel
    info = describe(compiled_backend, n_threads, "threads", f"predict {len(rows):,} rows, 784-128-10")
    info["path"] = "predict_batch kernel, one chunk of rows per thread"
    predicted = timed(lambda: model.predict(rows, n_threads=n_threads), samples=len(rows), **info)
    assert_learned(predicted, labels)
    if n_threads > 1:  # rows are independent: any chunking gives the one-thread bits
        head = min(len(rows), 5000)
        assert np.array_equal(model.forward(rows[:head], n_threads=1), model.forward(rows, n_threads=n_threads)[:head])


def train_w3(X, y, backend, batch_size, epochs, n_threads):
    return fastbp.train(
        X, y, **NETWORK, lr=LR[batch_size], batch_size=batch_size, epochs=epochs, backend=backend,
        classes=np.arange(10), n_threads=n_threads,
    )  # fmt: skip


@pytest.mark.parametrize(
    "batch_size",
    [pytest.param(b, marks=pytest.mark.benchmark(group=f"parallel-W3-batch{b}"), id=f"batch{b}") for b in (128, 32)],
)
@workers("n_threads")
def bench_parallel_train(timed, size, mnist_shape, assert_learned, compiled_backend, batch_size, n_threads):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    train_w3(X[:256], y[:256], compiled_backend, batch_size, 1, n_threads)  # warm up: load or compile
    info = describe(
        compiled_backend, n_threads, "threads", f"train 784-128-10, batches of {batch_size}, {len(X):,} rows"
    )
    info.update(path="mini-batch kernel", batch_size=batch_size)
    model = timed(
        lambda: train_w3(X, y, compiled_backend, batch_size, size.epochs, n_threads),
        samples=len(X) * size.epochs,
        **info,
    )
    assert_learned(model.predict(X), y)
    if n_threads > 1:
        serial = train_w3(X, y, compiled_backend, batch_size, size.epochs, 1)
        assert np.array_equal(model.weights, serial.weights), "threads changed the trained weights"


def timed_evaluate(timed, X, y, backend, n_jobs, workload, samples, **options):
    """Time ``fastbp.evaluate`` on ``n_jobs`` jobs after a warm-up that loads the kernels; return its result."""
    every = max(1, len(X) // 50)  # a few rows of every class
    fastbp.evaluate(X[::every], y[::every], folds=FOLDS, epochs=1, backend=backend, n_jobs=n_jobs)
    info = describe(backend, CORES if n_jobs == -1 else n_jobs, "jobs", workload)
    info["path"] = "evaluate: folds on threads, one per job" if n_jobs != 1 else "evaluate: folds in turn"
    return timed(
        lambda: fastbp.evaluate(X, y, folds=FOLDS, backend=backend, n_jobs=n_jobs, **options),
        samples=samples,
        **info,
    )


@pytest.mark.benchmark(group="parallel-cv-wheat")
@JOBS
def bench_parallel_cv_wheat(timed, size, wheat, compiled_backend, n_jobs):
    X, y = wheat
    workload = f"wheat seeds CV, 7-5-3, {FOLDS} folds x {size.epochs} epochs"
    samples = len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS
    result = timed_evaluate(
        timed, X, y, compiled_backend, n_jobs, workload, samples, protocol="tutorial", epochs=size.epochs, **TUTORIAL
    )
    assert result.scores == SORTED_SCORES[size.epochs]


@pytest.mark.benchmark(group="parallel-cv-digits")
@JOBS
def bench_parallel_cv_digits(timed, size, digits, compiled_backend, n_jobs):
    X, y = digits[0][: size.rows], digits[1][: size.rows]
    workload = f"digits CV, 64-32-10 online, {FOLDS} folds x {size.epochs} epochs"
    samples = len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS
    options = {**DIGITS_NETWORK, "epochs": size.epochs, "seed": 1}
    result = timed_evaluate(timed, X, y, compiled_backend, n_jobs, workload, samples, **options)
    assert result.mean >= 50, f"cross-validated accuracy {result.mean:.1f}% on ten classes"
    if n_jobs != 1:
        serial = fastbp.evaluate(X, y, folds=FOLDS, backend=compiled_backend, n_jobs=1, **options)
        assert result.scores == serial.scores, "jobs changed the scores"


@pytest.mark.benchmark(group="parallel-grid-wheat")
@JOBS
def bench_parallel_grid_wheat(timed, size, wheat, compiled_backend, n_jobs):
    X, y = wheat
    grid, options = {"lr": RATES}, {"folds": FOLDS, "seed": TUTORIAL["seed"], "hidden": 5, "backend": compiled_backend}
    fastbp.search(X, y, grid, epochs=1, n_jobs=n_jobs, **options)  # warm up: load the kernels
    workload = f"wheat seeds grid, 7-5-3, {len(RATES)} learning rates x {FOLDS} folds x {size.epochs} epochs"
    info = describe(compiled_backend, CORES if n_jobs == -1 else n_jobs, "jobs", workload)
    info["path"] = "search: jobs on threads" if n_jobs != 1 else "search: lockstep on one thread"
    samples = len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS * len(RATES)
    result = timed(
        lambda: fastbp.search(X, y, grid, epochs=size.epochs, n_jobs=n_jobs, **options), samples=samples, **info
    )
    assert max(result.means) > 80, f"the best point's cross-validated accuracy is {max(result.means):.1f}%"
    if n_jobs != 1:
        serial = fastbp.search(X, y, grid, epochs=size.epochs, n_jobs=1, **options)
        assert result == serial, "jobs changed the scores"

"""W1: the tutorial's wheat seeds experiment (5 folds x 500 epochs, 7-5-3 sigmoid,
squared error, online SGD), per backend: the reference, Numba and Cython.

Run: ``python benches/report.py`` (or ``pytest benches --benchmark-enable -k wheat``);
the ``W1-wheat-seeds`` group gives each compiled backend's speed-up over the reference.
All three run the online kernels in the tutorial's exact order, so they must return the
same per-fold accuracies.
"""

import pytest

import fastbp

TUTORIAL = {"seed": 1, "init": "tutorial", "hidden": 5, "lr": 0.3}
#: Per-fold accuracies (labels mapped in sorted order) after so many epochs, as the reference computes them.
SORTED_SCORES = {
    500: [90.47619047619048, 92.85714285714286, 97.61904761904762, 92.85714285714286, 92.85714285714286],
    100: [90.47619047619048, 90.47619047619048, 97.61904761904762, 92.85714285714286, 88.09523809523809],
    10: [78.57142857142857, 88.09523809523809, 90.47619047619048, 73.80952380952381, 92.85714285714286],
}
FOLDS = 5


@pytest.mark.benchmark(group="W1-wheat-seeds")
@pytest.mark.parametrize("backend", fastbp.available_backends())
def bench_wheat_seeds_experiment(timed, size, wheat, backend):
    X, y = wheat
    fastbp.train(X[:4], y[:4], epochs=1, backend=backend)  # warm up: load or compile the kernels
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

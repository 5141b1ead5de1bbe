"""The tutorial's wheat seeds experiment (5 folds x 500 epochs, 7-5-3), per backend.

Run: ``pytest benches --benchmark-only``; compare the ``train-wheat-seeds`` group's
means for the speed-up of each compiled backend over the reference.
"""

import pytest

import fastbp

TUTORIAL = {"seed": 1, "init": "tutorial", "hidden": 5, "lr": 0.3, "epochs": 500}
SORTED_SCORES = [90.47619047619048, 92.85714285714286, 97.61904761904762, 92.85714285714286, 92.85714285714286]


@pytest.mark.benchmark(group="train-wheat-seeds")
@pytest.mark.parametrize("backend", fastbp.available_backends())
def bench_wheat_seeds_experiment(benchmark, wheat, backend):
    X, y = wheat
    fastbp.train(X[:4], y[:4], epochs=1, backend=backend)  # warm up: load or compile the kernels
    rounds = 1 if backend == "reference" else 10
    result = benchmark.pedantic(
        fastbp.evaluate, args=(X, y), kwargs={**TUTORIAL, "backend": backend},
        rounds=rounds, iterations=1,
    )  # fmt: skip
    assert result.scores == SORTED_SCORES

"""Many networks at once: lockstep training against one network at a time, on one core.

Each workload is one benchmark group holding, per compiled backend, the same networks
trained two ways, so ``benches/report.py`` divides their times within one run:

- ``lockstep-wheat-cv``: the tutorial's wheat seeds experiment (5 folds x 500 epochs,
  7-5-3 sigmoid, lr 0.3, ``init="tutorial"``): ``fastbp.evaluate`` with its folds forced
  into lockstep (by default it trains fewer than ``fastbp._lockstep.MIN_NETWORKS``
  networks one at a time) against the five folds trained one after the other by
  ``fastbp.train``.
- ``lockstep-wheat-grid`` and ``lockstep-wheat-grid-tutorial``: a 5-fold x 8-point
  learning-rate grid on the same data and network, with the default initialisation
  and with the tutorial's: ``fastbp.search`` (40 networks in lockstep) against 40
  separate ``fastbp.train`` calls.

Both ways follow the tutorial's protocol (one ``random.Random(1)`` stream draws the
split, then each fold's initial network), predict the held-out fold and score it.
Every run is checked: the same scores per fold and grid point, and outside the timing
the same weights bit for bit (``fastbp.train_many`` against ``fastbp.train``), and that
the one-at-a-time way runs the single-network kernel ``train_online`` while the other
runs ``train_lockstep``.  Online training is single-threaded; predictions are asked
for on one thread, so everything here runs on one core.
"""

import numpy as np
import pytest
from bench_train import FOLDS, SORTED_SCORES, TUTORIAL, one_at_a_time, tutorial_folds

import fastbp
import fastbp._lockstep
from fastbp._backends import get_backend

#: The grid's learning rates.
RATES = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0]
NETWORK = {"hidden": 5}
#: Per grid group: the initialisation.
INITS = {"lockstep-wheat-grid": None, "lockstep-wheat-grid-tutorial": "tutorial"}


def describe(backend, way, networks, workload):
    """The ``timed`` info of one way (``"lockstep"`` or ``"one at a time"``) of training ``networks`` networks."""
    return {
        "library": "fastbp",
        "implementation": f"fastbp {backend}, {way}",
        "path": "train_lockstep kernel, all networks together" if way == "lockstep" else "train_online, in turn",
        "backend": backend,
        "way": way,
        "networks": networks,
        "workload": workload,
        "dtype": "float64",
    }


def in_lockstep(X, y, rates, epochs, backend, **options):
    """The same networks by ``fastbp.train_many`` (for the weights check): one call, every rate and fold."""
    seeds, rows, lrs = [], [], []
    for lr in rates:
        for rng, fit, _ in tutorial_folds(len(X)):
            rows.append(fit)
            seeds.append(rng)  # one stream, which the folds continue in fold order, as evaluate's do
            lrs.append(lr)
    return fastbp.train_many(X, y, seeds=seeds, lr=lrs, row_orders=rows, epochs=epochs, backend=backend, **options)


def kernels_called(monkeypatch, target):
    """Run ``target()`` and return the names of the training kernels it called (on every backend)."""
    called = set()
    with monkeypatch.context() as patch:  # undone on leaving: the timed runs call the kernels directly
        for name in fastbp.available_backends():
            backend = get_backend(name)
            run = backend._run
            patch.setattr(backend, "_run", lambda kernel, *args, run=run: (called.add(kernel), run(kernel, *args))[1])
        target()
    return called - {"predict_batch"}


def check_same_networks(X, y, rates, epochs, backend, alone, **options):
    """Outside the timing: lockstep's networks are bit for bit the ones trained alone."""
    together = in_lockstep(X, y, rates, epochs, backend, **options)
    assert len(together) == len(alone)
    for k, (mine, theirs) in enumerate(zip(together, alone, strict=True)):
        assert mine.weights.tobytes() == theirs.weights.tobytes(), f"network {k}: lockstep changed the weights"
        assert mine.history.tobytes() == theirs.history.tobytes(), f"network {k}: lockstep changed the losses"


WAYS = pytest.mark.parametrize("way", ["one at a time", "lockstep"], ids=["alone", "lockstep"])


@pytest.mark.benchmark(group="lockstep-wheat-cv")
@WAYS
def bench_lockstep_cv(timed, size, wheat, compiled_backend, monkeypatch, way):
    X, y = wheat
    options = {key: value for key, value in TUTORIAL.items() if key not in ("seed", "lr")}
    if way == "lockstep":
        # Forced: evaluate trains 5 folds one at a time, since lockstep pays only from MIN_NETWORKS networks;
        # this row shows why.
        monkeypatch.setattr(fastbp._lockstep, "MIN_NETWORKS", 1)

        def target():
            result = fastbp.evaluate(
                X, y, folds=FOLDS, seed=TUTORIAL["seed"], lr=TUTORIAL["lr"], epochs=size.epochs,
                backend=compiled_backend, **options,
            )  # fmt: skip
            return result.scores

        kernel = "train_lockstep"
    else:

        def target():
            return one_at_a_time(X, y, [TUTORIAL["lr"]], size.epochs, compiled_backend, **options)[0][0]

        kernel = "train_online"
    workload = f"wheat seeds CV, 7-5-3, {FOLDS} folds x {size.epochs} epochs, tutorial init"
    assert kernels_called(monkeypatch, target) == {kernel}  # also the warm-up: loads or compiles the kernels
    samples = len(X) * (FOLDS - 1) // FOLDS * size.epochs * FOLDS
    scores = timed(target, samples=samples, **describe(compiled_backend, way, FOLDS, workload))
    assert scores == SORTED_SCORES[size.epochs]
    if way == "lockstep":
        _, alone = one_at_a_time(X, y, [TUTORIAL["lr"]], size.epochs, compiled_backend, **options)
        check_same_networks(X, y, [TUTORIAL["lr"]], size.epochs, compiled_backend, alone, **options)


@pytest.mark.parametrize(
    "group", [pytest.param(group, marks=pytest.mark.benchmark(group=group), id=group) for group in INITS]
)
@WAYS
def bench_lockstep_grid(timed, size, wheat, compiled_backend, monkeypatch, group, way):
    X, y = wheat
    options = {**NETWORK, "init": INITS[group]}
    if way == "lockstep":

        def target():
            result = fastbp.search(
                X, y, {"lr": RATES}, folds=FOLDS, seed=TUTORIAL["seed"], epochs=size.epochs, backend=compiled_backend,
                **options,
            )  # fmt: skip
            assert [point["lr"] for point in result.params] == RATES
            return [evaluation.scores for evaluation in result.evaluations]

        kernel = "train_lockstep"
    else:

        def target():
            return one_at_a_time(X, y, RATES, size.epochs, compiled_backend, **options)[0]

        kernel = "train_online"
    init = "tutorial init" if INITS[group] == "tutorial" else "default init"
    networks = FOLDS * len(RATES)
    workload = f"wheat seeds, {FOLDS} folds x {len(RATES)} learning rates x {size.epochs} epochs, 7-5-3, {init}"
    assert kernels_called(monkeypatch, target) == {kernel}  # also the warm-up
    samples = len(X) * (FOLDS - 1) // FOLDS * size.epochs * networks
    scores = timed(target, samples=samples, **describe(compiled_backend, way, networks, workload))
    if INITS[group] == "tutorial":  # lr 0.3 is the tutorial's own experiment
        assert scores[RATES.index(TUTORIAL["lr"])] == SORTED_SCORES[size.epochs]
    assert max(np.mean(point) for point in scores) > 80, "no learning rate learned the seeds"
    if way == "lockstep":  # the same scores and networks as one at a time, computed here untimed
        alone_scores, alone = one_at_a_time(X, y, RATES, size.epochs, compiled_backend, **options)
        assert scores == alone_scores
        check_same_networks(X, y, RATES, size.epochs, compiled_backend, alone, **options)

"""``python -m fastbp``: the tutorial's toy run, then a timed cross-validation.

Needs no download: the second part uses the wine data that scikit-learn ships.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import __version__, data
from ._api import evaluate, train
from ._backends import BACKENDS, COMPILED, backend_name, get_backend

CV_OPTIONS = {"hidden": (5,), "lr": 0.3, "epochs": 500, "init": "tutorial"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastbp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS], help="kernels to run (default: auto)")
    parser.add_argument("--skip-reference", action="store_true", help="do not time the pure-Python reference")
    args = parser.parse_args(argv)
    backend = backend_name(get_backend(args.backend))
    if args.backend == "auto" and backend != COMPILED[0]:
        try:
            get_backend(COMPILED[0])
        except ImportError as error:
            print(f"note: {error}; using {backend}")

    X, y = data.tutorial_toy()
    print(f"fastbp {__version__}: the tutorial's toy data, 2-2-2 network, lr 0.5, 20 epochs, seed 1")
    model = train(X, y, hidden=2, epochs=20, lr=0.5, seed=1, init="tutorial", backend=backend)
    for epoch, error in enumerate(model.history):
        print(">epoch=%d, lrate=%.3f, error=%.3f" % (epoch, 0.5, error))
    correct = int(np.count_nonzero(model.predict(X) == y))
    print(f"predicts {correct} of {len(y)} rows correctly\n")

    from sklearn.datasets import load_wine

    wine = load_wine()
    X, y = data.minmax_normalize(wine.data), wine.target
    print(
        f"scikit-learn's wine data ({X.shape[0]} rows, {X.shape[1]} features, {len(np.unique(y))} classes), "
        "min-max normalised; 5-fold cross-validation, hidden 5, lr 0.3, 500 epochs, seed 1"
    )
    result, seconds = _timed(evaluate, X, y, seed=1, backend=backend, **CV_OPTIONS)
    scores = ", ".join(f"{score:.2f}" for score in result.scores)
    print(f"fold accuracies (%): {scores}")
    print(f"mean accuracy: {result.mean:.3f}% (Zero Rule baseline: {result.baseline_mean:.3f}%)")
    # The toy run above already loaded (or compiled) the kernels: this times training alone.
    print(f"{backend} backend: {seconds:.3f} s")
    if not args.skip_reference and backend != "reference":
        reference, reference_seconds = _timed(evaluate, X, y, seed=1, backend="reference", **CV_OPTIONS)
        agree = "same scores" if reference.scores == result.scores else "DIFFERENT scores"
        print(f"reference (pure Python): {reference_seconds:.2f} s, {agree}")
        print(f"speed-up over the reference: {reference_seconds / seconds:.0f}x")
    return 0


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())

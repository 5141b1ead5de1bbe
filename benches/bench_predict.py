"""Prediction throughput: a large batch of rows (100,000 digits drawn with replacement)
through a trained W2-sized network (64-32-10, sigmoid hidden units, softmax), as labels.

fastbp's ``Model.predict`` runs each backend's ``predict_batch`` kernel (one row at a
time, in the arithmetic the model trained with: the fast mode here); scikit-learn's ``predict`` multiplies the
whole batch by BLAS.  Both include their input checks and the label lookup.
"""

import numpy as np
import pytest

import fastbp

NETWORK = {"hidden": 32, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
TRAINING = {"lr": 1.0, "batch_size": 32, "epochs": 5}


@pytest.fixture
def batch(digits, size):
    """``size.rows`` digits drawn with replacement, and their labels."""
    X, y = digits
    picks = np.random.default_rng(0).integers(0, len(X), size.rows)
    return X[picks], y[picks]


@pytest.mark.benchmark(group="predict")
def bench_predict_fastbp(timed, digits, batch, assert_learned, describe_fastbp, compiled_backend):
    model = fastbp.train(*digits, **NETWORK, **TRAINING, backend=compiled_backend)
    X, y = batch
    model.predict(X[:10])  # warm up: load or compile the kernel
    info = describe_fastbp(compiled_backend, exact=model.options["exact"])  # it predicts as it trained
    info["path"] = "predict_batch kernel (per row, " + ("exact" if model.options["exact"] else "fast mode") + ")"
    predicted = timed(lambda: model.predict(X), samples=len(X), **info)
    assert_learned(predicted, y)


@pytest.mark.benchmark(group="predict")
def bench_predict_sklearn(timed, digits, batch, assert_learned, fit_sklearn):
    model = fit_sklearn(*digits, hidden=NETWORK["hidden"], **TRAINING)
    X, y = batch
    predicted = timed(
        lambda: model.predict(X), samples=len(X), library="scikit-learn",
        implementation="scikit-learn MLPClassifier.predict float64", path="BLAS over the batch", dtype="float64",
    )  # fmt: skip
    assert_learned(predicted, y)

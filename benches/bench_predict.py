"""Prediction through a trained W2-sized network (64-32-10, sigmoid hidden units, softmax),
as labels: throughput over a large batch (100,000 digits drawn with replacement), and the
latency of single-row calls, as a service gets its requests.

fastbp's ``Model.predict`` runs each backend's ``predict_batch`` kernel (one row at a
time, in the arithmetic the model trained with: the fast mode here); scikit-learn's ``predict`` multiplies the
whole batch by BLAS.  Both include their input checks and the label lookup.
"""

from functools import partial

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


@pytest.fixture
def single_rows(digits, size):
    """``size.rows`` digits drawn with replacement, each a batch of one row, and their labels."""
    X, y = digits
    picks = np.random.default_rng(0).integers(0, len(X), size.rows)
    return [X[pick : pick + 1] for pick in picks], y[picks]


def predict_each(predict, rows) -> np.ndarray:
    return np.concatenate([predict(row) for row in rows])


@pytest.mark.benchmark(group="predict-one-row")
@pytest.mark.parametrize("api", ["MLPClassifier", "Model"])
def bench_predict_one_row_fastbp(timed, digits, single_rows, assert_learned, fit_sklearn, api, compiled_backend):
    from fastbp.estimators import MLPClassifier

    drop_in = partial(MLPClassifier, backend=compiled_backend)
    estimator = fit_sklearn(*digits, hidden=NETWORK["hidden"], **TRAINING, estimator=drop_in)
    predict = estimator.predict if api == "MLPClassifier" else estimator.model_.predict
    rows, y = single_rows
    predicted = timed(
        lambda: predict_each(predict, rows), samples=len(rows), library="fastbp",
        implementation=f"fastbp {compiled_backend} {api}.predict float64", path="one row a call", dtype="float64",
    )  # fmt: skip
    assert_learned(predicted, y)


@pytest.mark.benchmark(group="predict-one-row")
def bench_predict_one_row_sklearn(timed, digits, single_rows, assert_learned, fit_sklearn):
    model = fit_sklearn(*digits, hidden=NETWORK["hidden"], **TRAINING)
    rows, y = single_rows
    predicted = timed(
        lambda: predict_each(model.predict, rows), samples=len(rows), library="scikit-learn",
        implementation="scikit-learn MLPClassifier.predict float64", path="one row a call", dtype="float64",
    )  # fmt: skip
    assert_learned(predicted, y)

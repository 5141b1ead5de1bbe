"""Prediction through trained networks, as labels: throughput over a large batch of rows
drawn with replacement, through a W2-sized network (64-32-10 on the digits, sigmoid
hidden units, softmax) and a W3-sized one (784-128-10 on MNIST-shaped rows); and the
latency of single-row calls through the W2-sized one, as a service gets its requests.

fastbp's ``Model.predict`` runs each backend's ``predict_batch`` kernel, in the fast
mode here: the W2-sized network row by row (four rows at a time), the W3-sized one by BLAS's products over
chunks of 16 rows (from 4,096 weights); scikit-learn's ``predict`` multiplies the whole
batch by BLAS.  Both include their input checks and the label lookup.
"""

from functools import partial

import numpy as np
import pytest

import fastbp

NETWORK = {"hidden": 32, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
TRAINING = {"lr": 1.0, "batch_size": 32, "epochs": 5}
#: Each batch workload's data (a fixture), hidden units and how fastbp predicts it.
WORKLOADS = {
    "predict": ("digits", 32, "predict_batch kernel, row by row"),
    "predict-mnist-shape": ("mnist_shape", 128, "BLAS's products, chunks of 16 rows"),
}
workloads = pytest.mark.parametrize(
    "workload", [pytest.param(group, marks=pytest.mark.benchmark(group=group), id=group) for group in WORKLOADS]
)


@pytest.fixture
def training(request, workload):
    """The workload's training rows and labels."""
    return request.getfixturevalue(WORKLOADS[workload][0])


@pytest.fixture
def batch(training, size):
    """``size.rows`` rows drawn with replacement from the training rows, and their labels."""
    X, y = training
    picks = np.random.default_rng(0).integers(0, len(X), size.rows)
    return X[picks], y[picks]


@workloads
def bench_predict_fastbp(timed, training, batch, assert_learned, describe_fastbp, compiled_backend, workload):
    _, hidden, path = WORKLOADS[workload]
    model = fastbp.train(*training, **{**NETWORK, "hidden": hidden}, **TRAINING, backend=compiled_backend)
    X, y = batch
    model.predict(X[:10])  # warm up: load or compile the kernel
    info = describe_fastbp(compiled_backend, exact=model.options["exact"])
    info["path"] = path
    predicted = timed(lambda: model.predict(X), samples=len(X), **info)
    assert_learned(predicted, y)


@workloads
def bench_predict_sklearn(timed, training, batch, assert_learned, fit_sklearn, workload):
    model = fit_sklearn(*training, hidden=WORKLOADS[workload][1], **TRAINING)
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

"""Reliability: the bad-input matrix, inputs never modified, determinism and concurrency.

The matrix runs every case against every backend and entry point (``fastbp.train``,
``fastbp.evaluate``, the estimators' ``fit`` and ``predict``, ``Model.predict``, the
command line), with hypothesis drawing the data.  Each case either works, giving the
result the same data gives as a plain float64 array, or raises ``ValueError`` or
``TypeError`` whose message names what is wrong.  Test ids number the cases
(``case07-nan-features-train-numba``) so that the matrix reads off the test list.
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastbp
from fastbp._concepts import HIDDEN_ACTIVATIONS

BACKENDS = fastbp.available_backends()
COMPILED = [name for name in BACKENDS if name != "reference"]

#: Few examples per property: each case is cheap, but the matrix holds hundreds of them (about 550 properties).
settings.register_profile(
    "reliability",
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MATRIX = settings.get_profile("reliability")

#: A network that trains in well under a millisecond.
SMALL = {"hidden": 3, "epochs": 3, "seed": 0}
#: The estimators' names for fastbp's options.
ESTIMATOR_NAMES = {"lr": "learning_rate_init", "epochs": "max_iter", "hidden": "hidden_layer_sizes"}


# --- the data hypothesis draws ---------------------------------------------------------------------------------


@st.composite
def datasets(draw, min_rows=4, max_rows=12, n_classes=3):
    """A finite feature matrix of moderate values and integer class labels, one per row, of two classes at least
    (training refuses one)."""
    n_rows = draw(st.integers(min_rows, max_rows))
    n_features = draw(st.integers(1, 4))
    X = draw(arrays(np.float64, (n_rows, n_features), elements=st.floats(-4, 4, width=32)))
    y = draw(arrays(np.int64, n_rows, elements=st.integers(0, n_classes - 1)))
    y[:2] = (0, 1)
    return X, y


def _estimator(kind: str, backend: str, **params):
    from fastbp import MLPClassifier, MLPRegressor

    # float64 whatever the features' type, so that every layout of them trains the same network (dtype=None would
    # train float32 features in float32: test_estimators checks that).
    base = {"hidden_layer_sizes": (3,), "max_iter": 3, "random_state": 0, "backend": backend, "dtype": np.float64}
    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    return cls(**{**base, **params})


def _estimator_params(options: dict) -> dict:
    return {ESTIMATOR_NAMES.get(name, name): value for name, value in options.items()}


# --- the entry points: each trains on (X, y) with some options and returns what can be compared ---------------


def fit_train(X, y, backend, **options):
    return fastbp.train(X, y, backend=backend, **{**SMALL, **options}).weights.copy()


def fit_evaluate(X, y, backend, **options):
    evaluation = fastbp.evaluate(X, y, folds=2, backend=backend, **{**SMALL, **options})
    assert all(0 <= score <= 100 for score in evaluation.scores)
    return np.array(evaluation.scores)


def fit_classifier(X, y, backend, **options):
    estimator = _estimator("classifier", backend, **_estimator_params(options)).fit(X, y)
    predictions = estimator.predict(X)
    assert set(predictions.tolist()) <= set(estimator.classes_.tolist())
    return estimator.model_.weights.copy()


def fit_regressor(X, y, backend, **options):
    estimator = _estimator("regressor", backend, **_estimator_params(options)).fit(X, np.asarray(y, dtype=float))
    assert np.isfinite(estimator.predict(X)).all()
    return estimator.model_.weights.copy()


FITS = {"train": fit_train, "evaluate": fit_evaluate, "classifier": fit_classifier, "regressor": fit_regressor}


def _backends_for(entry: str) -> list[str]:
    # The estimators train only with the compiled kernels (the reference runs only the tutorial's network).
    return COMPILED if entry.startswith(("classifier", "regressor")) else BACKENDS


def _matrix(cases, entries_of) -> list:
    """``pytest.param``s for every case, entry point and backend, with numbered ids."""
    params = []
    for number, (name, case) in enumerate(cases.items(), start=1):
        for entry in entries_of(case):
            for backend in _backends_for(entry):
                params.append(pytest.param(case, entry, backend, id=f"case{number:02d}-{name}-{entry}-{backend}"))
    return params


# --- 1. the bad-input matrix: data given to training ------------------------------------------------------------

#: name -> (what it does to the drawn (X, y), {entry: the error message's pattern, or None where it must work}).
#: The estimators' messages are scikit-learn's own (from its input checks), which its estimator checks expect.
DATA_CASES = {
    "nan-features": (
        lambda data, X, y: _poison(data, X, np.nan),
        dict.fromkeys(FITS, r"X.*NaN"),
    ),
    "inf-features": (
        lambda data, X, y: _poison(data, X, data.draw(st.sampled_from([np.inf, -np.inf]))),
        dict.fromkeys(FITS, r"X.*infinity"),
    ),
    "empty-data": (
        lambda data, X, y: (X[:0], y[:0]),
        {
            "train": r"X must have at least one row",
            "evaluate": r"X must have at least one row",
            "classifier": r"0 sample\(s\)",
            "regressor": r"0 sample\(s\)",
        },
    ),
    "no-features": (
        lambda data, X, y: (X[:, :0], y),
        {
            "train": r"X must have at least one row and one feature",
            "evaluate": r"X must have at least one row and one feature",
            "classifier": r"0 feature\(s\)",
            "regressor": r"0 feature\(s\)",
        },
    ),
    "single-row": (
        lambda data, X, y: (X[:1], y[:1]),
        {"train": r"one class", "evaluate": r"folds=2 is more than the 1 rows", "classifier": None, "regressor": None},
    ),
    "1d-features": (
        lambda data, X, y: (X[:, 0], y),
        {**dict.fromkeys(("train", "evaluate"), r"X must be 2-D"), **dict.fromkeys(("classifier", "regressor"), "2D")},
    ),
    "3d-features": (
        lambda data, X, y: (X[:, :, np.newaxis], y),
        {
            **dict.fromkeys(("train", "evaluate"), r"X must be 2-D"),
            **dict.fromkeys(("classifier", "regressor"), "dim 3"),
        },
    ),
    "length-mismatch": (
        lambda data, X, y: (X, y[: data.draw(st.integers(1, len(y) - 1))]),
        {
            **dict.fromkeys(("train", "evaluate"), r"X has \d+ rows but y has \d+ labels"),
            **dict.fromkeys(("classifier", "regressor"), r"inconsistent numbers of samples"),
        },
    ),
    "text-features": (
        lambda data, X, y: (np.where(X > 0, "yes", "no"), y),
        dict.fromkeys(FITS, r"(X must be numeric|could not convert string to float)"),
    ),
    "numeric-text-features": (  # numbers written as text are refused everywhere, as scikit-learn's MLPs do
        lambda data, X, y: (X.astype(str), y),
        dict.fromkeys(FITS, r"X must be numeric, got an array of dtype <U"),
    ),
    "object-features": (
        lambda data, X, y: (_with_text(data, X), y),
        dict.fromkeys(FITS, r"(X must be numeric|could not convert string to float)"),
    ),
    "complex-features": (
        lambda data, X, y: (X + 1j, y),
        dict.fromkeys(FITS, r"(X must be numeric|[Cc]omplex)"),
    ),
    "complex-features-listed": (
        lambda data, X, y: ((X + 1j).tolist(), y),
        dict.fromkeys(FITS, r"Complex data not supported: X must be real numbers"),
    ),
    "datetime-columns": (
        lambda data, X, y: (_dated_columns(X), y),
        dict.fromkeys(FITS, r"X must be numeric, got values of dtype datetime64"),
    ),
    "datetime-features": (
        lambda data, X, y: (np.round(X).astype("datetime64[D]"), y),
        dict.fromkeys(FITS, r"(X must be numeric|datetime)"),
    ),
    "masked-features": (
        lambda data, X, y: (np.ma.masked_array(X, mask=_poison(data, np.zeros(X.shape), 1)[0] > 0), y),
        dict.fromkeys(FITS, r"(X is a masked array|masked)"),
    ),
    "sparse-features": (
        lambda data, X, y: (pytest.importorskip("scipy.sparse").csr_matrix(X), y),
        dict.fromkeys(FITS),
    ),
    "single-class": (  # refused as scikit-learn's classifiers refuse it, but by its MLPs (which fastbp's follow)
        lambda data, X, y: (X, np.full_like(y, data.draw(st.integers(0, 5)))),
        {"train": r"one class only", "evaluate": r"one class only", "classifier": None, "regressor": None},
    ),
    "2d-labels": (  # of three labels or more: not a multilabel indicator matrix, which the classifier takes
        lambda data, X, y: (X, np.stack([y, y + 2, y + 4], axis=1)),
        {
            "train": r"y must be 1-D",
            "evaluate": r"y must be 1-D",
            "classifier": r"Multioutput target data is not supported",
            "regressor": None,
        },
    ),
    "nan-labels": (
        lambda data, X, y: (X, np.where(np.arange(len(y)) == 0, np.nan, y)),
        {
            "train": r"y has a missing label \(NaN\) at row",
            "evaluate": r"y has a missing label \(NaN\) at row",
            **dict.fromkeys(("classifier", "regressor"), r"y contains NaN"),
        },
    ),
}


def _poison(data, X, value):
    X = X.copy()
    X[data.draw(st.integers(0, X.shape[0] - 1)), data.draw(st.integers(0, X.shape[1] - 1))] = value
    return X, None  # y filled in by the caller


def _with_text(data, X):
    X = X.astype(object)
    X[data.draw(st.integers(0, X.shape[0] - 1)), 0] = data.draw(st.sampled_from(["a", "1,5", "x1", ""]))
    return X


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataConversionWarning")
@pytest.mark.parametrize(("case", "entry", "backend"), _matrix(DATA_CASES, lambda case: case[1]))
@MATRIX
@given(data=st.data())
def test_bad_training_data(case, entry, backend, data):
    transform, expectations = case
    X, y = data.draw(datasets())
    X, new_y = transform(data, X, y)
    y = y if new_y is None else new_y
    expected = expectations[entry]
    if expected is None:
        _assert_finite(FITS[entry](X, y, backend))
    else:
        with pytest.raises((ValueError, TypeError), match=expected):
            FITS[entry](X, y, backend)


def _assert_finite(result):
    assert np.isfinite(np.asarray(result, dtype=float)).all(), "silent garbage: non-finite result"


# --- the bad-input matrix: options ------------------------------------------------------------------------------

FLOAT_OPTION_ENTRIES = ("train", "evaluate", "classifier", "regressor")

#: name -> (option, a strategy for bad values, the entries it applies to, the pattern of the message).
OPTION_CASES = {
    "lr-not-positive": ("lr", st.floats(max_value=0, allow_infinity=False), FLOAT_OPTION_ENTRIES, r"(positive|range)"),
    "lr-not-finite": (
        "lr",
        st.sampled_from([math.nan, math.inf, -math.inf]),
        FLOAT_OPTION_ENTRIES,
        r"(finite|range)",
    ),
    "lr-not-a-number": ("lr", st.sampled_from(["0.1", [0.1]]), FLOAT_OPTION_ENTRIES, r"(number|float)"),
    "epochs-not-positive": ("epochs", st.integers(max_value=0), FLOAT_OPTION_ENTRIES, r"(positive|range)"),
    "epochs-not-integer": ("epochs", st.sampled_from([2.5, "3", None]), FLOAT_OPTION_ENTRIES, r"int"),
    "hidden-not-positive": ("hidden", st.integers(max_value=0), FLOAT_OPTION_ENTRIES, r"(positive|range|> 0)"),
    "hidden-layer-not-positive": (
        "hidden",
        st.lists(st.integers(-3, 3), min_size=1, max_size=3).filter(lambda sizes: min(sizes) < 1).map(tuple),
        FLOAT_OPTION_ENTRIES,
        r"(positive|range|> 0)",
    ),
    "hidden-empty": ("hidden", st.just(()), FLOAT_OPTION_ENTRIES, r"(positive|range|> 0)"),
    "activation-unknown": (
        "activation",
        st.text(max_size=8).filter(lambda name: name not in (*HIDDEN_ACTIVATIONS, "logistic")),
        FLOAT_OPTION_ENTRIES,
        r"(one of|among)",
    ),
    "loss-unknown": ("loss", st.text(max_size=8).filter(lambda name: name != "mse"), ("train", "evaluate"), r"one of"),
    "backend-unknown": (
        "backend",
        st.text(max_size=8).filter(lambda name: name not in ("auto", "cython", "numba", "reference")),
        FLOAT_OPTION_ENTRIES,
        r"(one of|among)",
    ),
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("case", "entry", "backend"), _matrix(OPTION_CASES, lambda case: case[2]))
@MATRIX
@given(data=st.data())
def test_bad_options(case, entry, backend, data):
    option, values, _, expected = case
    X, y = data.draw(datasets())
    value = data.draw(values)
    if option == "backend":
        backend = value
    # The message names the parameter as the entry point calls it (``learning_rate_init`` for an estimator).
    name = ESTIMATOR_NAMES.get(option, option) if entry in ("classifier", "regressor") else option
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b.*{expected}"):
        FITS[entry](X, y, backend, **({} if option == "backend" else {option: value}))


def test_regressor_rejects_an_unknown_loss():
    X, y = np.eye(4), np.arange(4.0)
    with pytest.raises(ValueError, match="loss"):
        _estimator("regressor", "auto", loss="absolute_error").fit(X, y)


# --- the bad-input matrix: predicting with a trained model ------------------------------------------------------


def _dated_columns(X):
    """The features as a DataFrame of dates (pandas gives each column its dtype: no array's dtype shows them)."""
    import pandas as pd

    return pd.DataFrame({f"f{k}": pd.to_datetime(np.round(X[:, k]), unit="D") for k in range(X.shape[1])})


#: name -> (what it does to the features of a trained model, {entry: pattern, or None where it must work}).
PREDICT_CASES = {
    "nan-features": (lambda data, X: _poison(data, X, np.nan)[0], r"X.*NaN"),
    "inf-features": (lambda data, X: _poison(data, X, np.inf)[0], r"X.*infinity"),
    "empty-data": (lambda data, X: X[:0], r"(X must have at least one row|0 sample\(s\))"),
    "single-row": (lambda data, X: X[:1], None),
    "1d-features": (lambda data, X: X[0], r"(X must be 2-D|2D)"),
    "3d-features": (lambda data, X: X[:, :, np.newaxis], r"(X must be 2-D|dim 3)"),
    "too-few-features": (lambda data, X: X[:, :-1], r"X has \d+ features.*expect"),
    "too-many-features": (lambda data, X: np.hstack([X, X]), r"X has \d+ features.*expect"),
    "text-features": (lambda data, X: np.where(X > 0, "yes", "no"), r"(X must be numeric|could not convert string)"),
    "numeric-text-features": (lambda data, X: X.astype(str), r"X must be numeric, got an array of dtype <U"),
    "object-features": (lambda data, X: _with_text(data, X), r"(X must be numeric|could not convert string)"),
    "datetime-features": (lambda data, X: np.round(X).astype("datetime64[s]"), r"X must be numeric"),
    "datetime-columns": (lambda data, X: _dated_columns(X), r"X must be numeric, got values of dtype datetime64"),
    "complex-features-listed": (
        lambda data, X: (X + 1j).tolist(),
        r"Complex data not supported: X must be real numbers",
    ),
    "masked-features": (
        lambda data, X: np.ma.masked_array(X, mask=_poison(data, np.zeros(X.shape), 1)[0] > 0),
        r"X is a masked array",
    ),
}
PREDICTORS = ("model", "classifier", "regressor")


def _predictor(entry: str, backend: str, X, y):
    if entry == "model":
        return fastbp.train(X, y, backend=backend, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _estimator(entry, backend).fit(X, y if entry == "classifier" else y.astype(float))


@pytest.mark.slow
@pytest.mark.parametrize(("case", "entry", "backend"), _matrix(PREDICT_CASES, lambda case: PREDICTORS))
@MATRIX
@given(data=st.data())
def test_bad_data_to_predict(case, entry, backend, data):
    transform, expected = case
    X, y = data.draw(datasets(min_rows=2))
    X = np.hstack([X, X[:, :1]])  # two features at least, so one can be missing
    predictor = _predictor(entry, backend, X, y)
    new_X = transform(data, X)
    if expected is None:
        predictions = predictor.predict(new_X)
        assert len(predictions) == len(new_X)
        if entry == "regressor":
            assert np.isfinite(predictions).all()
        else:
            assert set(predictions.tolist()) <= set(np.unique(y).tolist())
    else:
        with pytest.raises((ValueError, TypeError), match=expected):
            predictor.predict(new_X)


# --- the bad-input matrix: labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@MATRIX
@given(data=st.data())
def test_case_labels_missing_from_classes_are_refused(backend, data):
    X, y = data.draw(datasets())
    classes = sorted(set(y.tolist()))[:-1] or [99]
    with pytest.raises(ValueError, match=r"(label|class)"):
        fastbp.train(X, y, classes=classes, backend=backend, **SMALL)


@pytest.mark.parametrize("backend", COMPILED)
@MATRIX
@given(data=st.data())
def test_case_partial_fit_refuses_labels_it_never_saw(backend, data):
    X, y = data.draw(datasets())
    estimator = _estimator("classifier", backend).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"classes"):
        estimator.partial_fit(X, y + 3)


@pytest.mark.parametrize("backend", COMPILED)
@MATRIX
@given(data=st.data())
def test_case_scoring_labels_the_model_never_saw_counts_them_wrong(backend, data):
    X, y = data.draw(datasets())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = _estimator("classifier", backend).fit(X, y)
    assert estimator.score(X, y + 10) == 0.0


# --- the bad-input matrix: array layouts that must work, exactly as the plain float64 array -------------------


def _non_contiguous(X):
    wide = np.repeat(X, 2, axis=1)[::-1][::-1]
    return wide[:, ::2], X


def _read_only(X):
    X = X.copy()
    X.flags.writeable = False
    return X, X.copy()


def _pandas(X):
    pandas = pytest.importorskip("pandas")
    return pandas.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]), X


#: name -> features -> (the features in another layout or type, the same values as a plain float64 array).
LAYOUT_CASES = {
    "non-contiguous": _non_contiguous,
    "fortran-order": lambda X: (np.asfortranarray(X), X),
    "read-only": _read_only,
    "integer": lambda X: (np.round(X).astype(np.int64), np.round(X)),
    "int8": lambda X: (np.round(X).astype(np.int8), np.round(X)),
    "bool": lambda X: (X > 0, (X > 0).astype(np.float64)),
    "float32": lambda X: (X.astype(np.float32), X.astype(np.float32).astype(np.float64)),
    "big-endian": lambda X: (X.astype(">f8"), X),
    "big-endian-float32": lambda X: (X.astype(">f4"), X.astype(np.float32).astype(np.float64)),
    "nested-lists": lambda X: (X.tolist(), X),
    "masked-array-nothing-masked": lambda X: (np.ma.masked_array(X, mask=False), X),
    "pandas": _pandas,
}
LAYOUT_ENTRIES = ("train", "evaluate", "classifier", "regressor", "model-predict", "classifier-predict")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")  # scikit-learn's, for the pandas case
@pytest.mark.parametrize(("case", "entry", "backend"), _matrix(LAYOUT_CASES, lambda case: LAYOUT_ENTRIES))
@MATRIX
@given(data=st.data())
def test_other_layouts_work_as_the_plain_array(case, entry, backend, data):
    X, y = data.draw(datasets())
    other, plain = case(X)
    if entry == "model-predict":
        model = fastbp.train(plain, y, backend=backend, **SMALL)
        results = model.forward(other), model.forward(plain)
    elif entry == "classifier-predict":
        estimator = _estimator("classifier", backend).fit(plain, y)
        results = estimator.predict_proba(other), estimator.predict_proba(plain)
    else:
        results = FITS[entry](other, y, backend), FITS[entry](plain, y, backend)
    np.testing.assert_array_equal(*results)
    _assert_finite(results[0])


# --- the bad-input matrix: the command line ---------------------------------------------------------------------

TOY_ROWS = ["2.78,2.55,0", "1.47,2.36,0", "3.40,4.40,0", "7.63,2.76,1", "5.33,2.09,1", "6.92,1.77,1"]

#: name -> (CSV lines, extra arguments to ``fastbp train``, the pattern of the one-line error, exit status).
CLI_CASES = {
    "nan-features": ([*TOY_ROWS, "nan,1.0,1"], [], r"line 7: feature 'nan' in column 1 is not a finite number", 1),
    "inf-features": ([*TOY_ROWS, "1.0,1e400,1"], [], r"line 7: feature '1e400' in column 2 is not a finite", 1),
    "text-features": ([*TOY_ROWS, "abc,1.0,1"], [], r"line 7", 1),
    "empty-data": ([], [], r"no data rows", 1),
    "ragged-rows": ([*TOY_ROWS, "1.0,1"], [], r"line 7.*fields", 1),
    "lr-not-positive": (TOY_ROWS, ["--lr", "0"], r"error: --lr must be positive", 1),
    "lr-not-finite": (TOY_ROWS, ["--lr", "nan"], r"error: --lr must be a finite number", 1),
    "epochs-not-positive": (TOY_ROWS, ["--epochs", "0"], r"argument --epochs: not a positive integer", 2),
    "hidden-not-positive": (TOY_ROWS, ["--hidden", "3,0"], r"argument --hidden: not .* positive integers", 2),
    "activation-unknown": (TOY_ROWS, ["--activation", "no_such_activation"], r"error: --activation must be one of", 1),
    "backend-unknown": (TOY_ROWS, ["--backend", "fortran"], r"--backend.*invalid choice", 2),
}


def _fastbp(*args, cwd):
    command = [sys.executable, "-m", "fastbp", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [pytest.param(case, id=f"case{n:02d}-{name}-cli") for n, (name, case) in enumerate(CLI_CASES.items(), 1)]
)
def test_bad_input_to_the_command_line(case, tmp_path):
    lines, args, expected, status = case
    (tmp_path / "data.csv").write_text("".join(line + "\n" for line in lines))
    finished = _fastbp("train", "data.csv", "--folds", "2", "--epochs", "3", *args, "--quiet", cwd=tmp_path)
    assert finished.returncode == status, finished.stderr
    assert "Traceback" not in finished.stderr
    (line,) = finished.stderr.strip().splitlines()[-1:]
    assert line.startswith("fastbp: error:")
    assert re.search(expected, line), line


@pytest.mark.slow
def test_bad_input_to_cli_predict(tmp_path):
    (tmp_path / "data.csv").write_text("".join(line + "\n" for line in TOY_ROWS))
    saved = _fastbp("train", "data.csv", "--folds", "2", "--epochs", "3", "--save", "model.npz", cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    for name, rows, expected in [
        ("too-many-features", ["1,2,3,4"], r"fields"),
        ("nan-features", ["nan,1"], r"line 1: feature 'nan' in column 1 is not a finite number"),
        ("text-features", ["0.5,1", "a,1"], r"line 2"),
        ("header-only", ["a,1"], r"a header row and no data rows"),
    ]:
        (tmp_path / f"{name}.csv").write_text("".join(row + "\n" for row in rows))
        finished = _fastbp("predict", "model.npz", f"{name}.csv", cwd=tmp_path)
        assert finished.returncode == 1, (name, finished.stdout)
        assert "Traceback" not in finished.stderr
        assert re.search(rf"fastbp: error: .*{expected}", finished.stderr), (name, finished.stderr)


# --- 2. inputs are never modified -------------------------------------------------------------------------------


def _containers(X, y, weights):
    """The same data as numpy arrays (C and Fortran order), lists, and pandas objects."""
    yield "numpy", X.copy(), y.copy(), weights.copy()
    yield "fortran", np.asfortranarray(X), y.copy(), weights.copy()
    yield "lists", X.tolist(), y.tolist(), weights.tolist()
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    yield "pandas", frame, pandas.Series(y, name="label"), pandas.Series(weights)


def _assert_same(before, after):
    if hasattr(before, "equals"):  # pandas
        assert before.equals(after)
        assert list(before.index) == list(after.index)
    elif isinstance(before, np.ndarray):
        assert before.dtype == after.dtype and before.flags.f_contiguous == after.flags.f_contiguous
        np.testing.assert_array_equal(before, after)
    else:
        assert before == after


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@settings(MATRIX, max_examples=5)  # each example makes a dozen calls, four times over
@given(data=st.data())
def test_inputs_are_never_modified(backend, data):
    X, y = data.draw(datasets())
    weights = data.draw(arrays(np.float64, len(y), elements=st.floats(0.5, 2)))
    shuffle = backend != "reference"  # the reference runs the tutorial's training only, unweighted
    for _, X_in, y_in, weights_in in _containers(X, y, weights):
        given_ = copy.deepcopy((X_in, y_in, weights_in))
        row_weights = weights_in if shuffle else None
        model = fastbp.train(X_in, y_in, sample_weight=row_weights, shuffle=shuffle, backend=backend, **SMALL)
        model.predict(X_in)
        model.predict_proba(X_in)
        fastbp.evaluate(X_in, y_in, folds=2, backend=backend, **SMALL)
        if backend != "reference":
            regression = fastbp.train(X_in, weights_in, output="identity", backend=backend, **SMALL)
            regression.predict(X_in)
            classifier = _estimator("classifier", backend, class_weight="balanced")
            classifier.fit(X_in, y_in, sample_weight=weights_in).predict_proba(X_in)
            classifier.score(X_in, y_in, sample_weight=weights_in)
            _estimator("classifier", backend).partial_fit(X_in, y_in, classes=[0, 1, 2], sample_weight=weights_in)
            regressor = _estimator("regressor", backend, early_stopping=len(y) >= 10, validation_fraction=0.3)
            regressor.fit(X_in, weights_in, sample_weight=weights_in).predict(X_in)
            _estimator("regressor", backend).partial_fit(X_in, y_in, sample_weight=weights_in)
        for before, after in zip(given_, (X_in, y_in, weights_in)):
            _assert_same(before, after)


# --- 3. determinism ---------------------------------------------------------------------------------------------

#: Option sets that reach different kernels: online exact and fast sums, BLAS mini-batches, Adam, rprop, float32.
DETERMINISM_OPTIONS = {
    "tutorial": {"init": "tutorial"},
    "online-fast": {"hidden": (9, 4), "activation": "tanh", "exact": False},
    "adam-batches": {"hidden": (16,), "activation": "relu", "output": "softmax", "optimizer": "adam",
                     "batch_size": 8, "shuffle": True, "lr": 0.01},
    "rprop": {"optimizer": "rprop", "hidden": (6,)},
    "float32-momentum": {"dtype": "float32", "momentum": 0.9, "batch_size": 4, "shuffle": True},
}  # fmt: skip


def _determinism_data():
    rng = np.random.default_rng(12345)
    X = rng.uniform(-1, 1, (60, 12))
    return X, (X[:, 0] + X[:, 1] ** 2 > 0.3).astype(int) + (X[:, 2] > 0.5)


def _trained_weights(backend: str, seed=7) -> dict[str, np.ndarray]:
    X, y = _determinism_data()
    return {
        name: fastbp.train(X, y, backend=backend, seed=seed, epochs=15, **options).weights.copy()
        for name, options in DETERMINISM_OPTIONS.items()
    }


#: A script that trains as :func:`_trained_weights` does and saves the weights to ``weights-<backend>.npz``.
DETERMINISM_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_reliability import _trained_weights
for backend in {backends!r}:
    np.savez(f"weights-{{backend}}.npz", **_trained_weights(backend))
"""


def _weights_from_processes(tmp_path: Path, runs: int, env: dict | None = None) -> list[dict[str, dict]]:
    script = DETERMINISM_SCRIPT.format(tests=str(Path(__file__).parent), backends=COMPILED)
    results = []
    for run in range(runs):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        environment = {**os.environ, **(env or {})}
        finished = subprocess.run(
            [sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=300, env=environment
        )
        assert finished.returncode == 0, finished.stderr
        results.append({b: dict(np.load(folder / f"weights-{b}.npz")) for b in COMPILED})
    return results


def _assert_identical(first: dict, second: dict):
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype
        assert first[name].tobytes() == second[name].tobytes(), f"{name}: the weights differ"


@pytest.mark.parametrize("backend", COMPILED)
def test_the_same_seed_gives_bit_identical_weights_run_after_run(backend):
    first = _trained_weights(backend)
    for _ in range(2):
        _assert_identical(first, _trained_weights(backend))


@pytest.mark.parametrize("backend", BACKENDS)
@MATRIX
@given(data=st.data(), seed=st.integers(0, 2**63))
def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights(backend, data, seed):
    X, y = data.draw(datasets())
    shuffle = backend != "reference"
    train = lambda seed: fastbp.train(X, y, shuffle=shuffle, backend=backend, **{**SMALL, "seed": seed})  # noqa: E731
    first = train(seed).weights
    assert first.tobytes() == train(seed).weights.tobytes()
    assert first.tobytes() != train(seed + 1).weights.tobytes()


@pytest.mark.slow
def test_the_same_seed_gives_bit_identical_weights_across_processes(tmp_path):
    first, second = _weights_from_processes(tmp_path, runs=2)
    for backend in COMPILED:
        _assert_identical(first[backend], second[backend])
        _assert_identical(first[backend], _trained_weights(backend))


@pytest.mark.slow
def test_weights_do_not_depend_on_numba_threads(tmp_path):
    (single,) = _weights_from_processes(tmp_path, runs=1, env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    for backend in COMPILED:
        _assert_identical(single[backend], _trained_weights(backend))


@pytest.mark.parametrize("backend", COMPILED)
def test_weights_do_not_depend_on_blas_threads(backend):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    unlimited = _trained_weights(backend)
    with threadpoolctl.threadpool_limits(1):
        _assert_identical(unlimited, _trained_weights(backend))
    with threadpoolctl.threadpool_limits(2):
        _assert_identical(unlimited, _trained_weights(backend))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_call_touches_the_global_random_state(backend):
    X, y = _determinism_data()
    random.seed(3)
    np.random.seed(3)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    compiled = backend != "reference"
    for seed in (None, 1, random.Random(2), *([np.random.default_rng(3)] if compiled else [])):
        fastbp.train(X, y, shuffle=compiled, backend=backend, **{**SMALL, "seed": seed}).predict(X)
    fastbp.evaluate(X, y, folds=3, backend=backend, **{**SMALL, "seed": None})
    fastbp.evaluate(X, y, folds=3, backend=backend, hidden=3, epochs=3)
    if compiled:  # random_state=None draws from numpy's global RandomState, by scikit-learn's convention
        _estimator("classifier", backend, random_state=4, early_stopping=True).fit(X, y).predict(X)
        _estimator("regressor", backend, random_state=np.random.RandomState(5)).partial_fit(X, y.astype(float))
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", COMPILED)
def test_estimators_without_random_state_follow_numpys_global_seed_as_scikit_learns_do(backend):
    X, y = _determinism_data()
    fits = []
    for _ in range(2):
        np.random.seed(11)
        fits.append(_estimator("classifier", backend, random_state=None, shuffle=True).fit(X, y).model_.weights)
    assert fits[0].tobytes() == fits[1].tobytes()


# --- 4. concurrency ---------------------------------------------------------------------------------------------


def _concurrency_jobs():
    """Trainings long enough for threads to overlap inside the kernels, each different from the others."""
    rng = np.random.default_rng(99)
    X = rng.uniform(-1, 1, (300, 10))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    return [
        (X, y, {"hidden": (12,), "epochs": 150, "seed": 1}),
        (X, y, {"hidden": (8, 8), "activation": "tanh", "epochs": 150, "seed": 2, "shuffle": True}),
        (X, y, {"hidden": (16,), "optimizer": "adam", "batch_size": 16, "lr": 0.01, "epochs": 150, "seed": 3}),
        (X, y, {"hidden": (6,), "dtype": np.float32, "epochs": 150, "seed": 4, "momentum": 0.5}),
    ]


def _train_job(job, backend):
    X, y, options = job
    return fastbp.train(X, y, backend=backend, **options).weights.copy()


@pytest.mark.parametrize("backend", COMPILED)
def test_trainings_in_threads_equal_the_same_trainings_one_after_another(backend):
    jobs = _concurrency_jobs() * 2
    one_by_one = [_train_job(job, backend) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        in_threads = list(pool.map(lambda job: _train_job(job, backend), jobs))
    for sequential, threaded in zip(one_by_one, in_threads):
        assert sequential.tobytes() == threaded.tobytes()


def test_both_backends_train_in_threads_at_once():
    jobs = [(job, backend) for job in _concurrency_jobs() for backend in COMPILED]
    one_by_one = [_train_job(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        in_threads = list(pool.map(lambda job: _train_job(*job), jobs))
    for sequential, threaded in zip(one_by_one, in_threads):
        assert sequential.tobytes() == threaded.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("backend", COMPILED)
def test_training_works_in_joblib_process_workers(backend):
    joblib = pytest.importorskip("joblib")
    jobs = _concurrency_jobs()
    in_workers = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_train_job)(job, backend) for job in jobs)
    for job, weights in zip(jobs, in_workers):
        assert _train_job(job, backend).tobytes() == weights.tobytes()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX systems only")
@pytest.mark.parametrize("backend", COMPILED)
def test_training_works_after_fork(backend, tmp_path):
    jobs = _concurrency_jobs()
    expected = [_train_job(job, backend) for job in jobs]  # the parent has compiled and run the kernels
    path = tmp_path / "child.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12 warns about fork in threaded processes
        pid = os.fork()
    if pid == 0:  # the child: train, save, and leave without running the parent's cleanup
        status = 1
        try:
            np.savez(path, *[_train_job(job, backend) for job in jobs])
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with np.load(path) as child:
        for k, weights in enumerate(expected):
            assert child[f"arr_{k}"].tobytes() == weights.tobytes()


#: Trains with the Numba kernels (compiling them, or loading them from NUMBA_CACHE_DIR) and saves the weights.
CACHE_SCRIPT = """
import sys
import numpy as np
import fastbp
X = np.linspace(-1, 1, 60).reshape(20, 3)
y = (X[:, 0] > 0).astype(int)
model = fastbp.train(X, y, backend="numba", hidden=3, epochs=5, seed=0)
np.save(sys.argv[1], model.weights)
"""


def _start_cached(cache: Path, out: Path) -> subprocess.Popen:
    """A process that trains with Numba's cache in ``cache`` and saves its weights to ``out``, its error output
    into a file beside them (``_finish``): a pipe that nobody reads while several run could fill and stall it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("FASTBP_NUMBA_CACHE", None)
    with out.with_suffix(".stderr").open("w") as stderr:
        return subprocess.Popen([sys.executable, "-c", CACHE_SCRIPT, str(out)], cwd=out.parent, env=env, stderr=stderr)


def _finish(process: subprocess.Popen, out: Path) -> tuple[int, str]:
    """The exit status and error output of ``_start_cached``'s process that saves to ``out``, once it ends."""
    process.wait(timeout=300)
    return process.returncode, out.with_suffix(".stderr").read_text()


@pytest.fixture(scope="module")
def populated_cache(tmp_path_factory):
    """A Numba cache that several processes filled at once, compiling for the first time, and their weights."""
    folder = tmp_path_factory.mktemp("numba-cache")
    cache = folder / "cache"
    outs = [folder / f"weights{k}.npy" for k in range(3)]
    for process, out in [(_start_cached(cache, out), out) for out in outs]:
        returncode, stderr = _finish(process, out)
        assert returncode == 0, stderr
    return cache, [np.load(folder / f"weights{k}.npy") for k in range(3)]


@pytest.mark.slow
def test_processes_compiling_into_one_empty_cache_at_once_all_succeed_and_agree(populated_cache):
    cache, weights = populated_cache
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))
    assert weights[0].tobytes() == weights[1].tobytes() == weights[2].tobytes()


CACHE_DAMAGES = ("truncate", "garble", "empty", "garble-nbc-only")


def _damage(cache: Path, damage: str) -> None:
    damaged = [*cache.rglob("*.nbc")] if damage == "garble-nbc-only" else [*cache.rglob("*.nbi"), *cache.rglob("*.nbc")]
    for path in damaged:
        content = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(content[: len(content) // 2])
        elif damage.startswith("garble"):
            path.write_bytes(bytes(b ^ 0x5A for b in content))
        else:
            path.write_bytes(b"")


@pytest.fixture(scope="module")
def runs_on_damaged_caches(populated_cache, tmp_path_factory):
    """For each damage, a process run on a copy of the populated cache so damaged: its exit status, its error output
    and where it saved its weights.  The processes run at once, each compiling afresh."""
    source, _ = populated_cache
    started = {}
    for damage in CACHE_DAMAGES:
        folder = tmp_path_factory.mktemp(f"damaged-{damage}")
        shutil.copytree(source, folder / "cache")
        _damage(folder / "cache", damage)
        started[damage] = (_start_cached(folder / "cache", folder / "weights.npy"), folder / "weights.npy")
    runs = {}
    for damage, (process, weights) in started.items():
        runs[damage] = (*_finish(process, weights), weights)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("damage", CACHE_DAMAGES)
def test_a_corrupt_cache_is_recompiled_instead_of_failing(populated_cache, runs_on_damaged_caches, damage):
    """Numba unpickles its cache without catching errors; fastbp clears an unreadable one and compiles afresh."""
    _, weights = populated_cache
    returncode, stderr, saved = runs_on_damaged_caches[damage]
    assert returncode == 0, stderr
    assert np.load(saved).tobytes() == weights[0].tobytes()


@pytest.mark.slow
def test_a_read_only_cache_directory_runs_uncached_instead_of_failing(populated_cache, tmp_path):
    _, weights = populated_cache
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Permissions do not stop root: block the directory's path with a file instead.
        cache = tmp_path / "not-a-directory"
        cache.write_text("a file where the cache directory would be")
    else:
        cache = tmp_path / "read-only"
        cache.mkdir(mode=0o555)
    returncode, stderr = _finish(_start_cached(cache, tmp_path / "weights.npy"), tmp_path / "weights.npy")
    assert returncode == 0, stderr
    assert np.load(tmp_path / "weights.npy").tobytes() == weights[0].tobytes()


def test_missing_values_and_complex_labels_get_clear_errors(backend):
    pandas = pytest.importorskip("pandas")
    X = pandas.DataFrame({"a": pandas.array([1, None, 3, 4], dtype="Int64"), "b": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=r"X has missing values \(None or pandas' NA\)"):
        fastbp.train(X, [0, 1, 0, 1], epochs=1, backend=backend)
    with pytest.raises(ValueError, match="X has missing values"):
        fastbp.train(np.array([[1.0, pandas.NA], [2.0, 3.0]], dtype=object), [0, 1], epochs=1, backend=backend)
    with pytest.raises(ValueError, match="y has complex numbers"):
        fastbp.train(np.ones((4, 2)), np.array([1j, 2j, 1j, 2j]), epochs=1, backend=backend)
    with pytest.raises(ValueError, match="y has complex numbers"):
        fastbp.evaluate(np.ones((4, 2)), np.array([1j, 2j, 1j, 2j]), folds=2, epochs=1, backend=backend)

"""The tutorial's data protocol: read a CSV, encode labels, normalise, split, score.

Each helper follows the tutorial's procedure so that fastbp reproduces its
published figures, with the gaps a real user would hit filled in: blank lines
and padded fields are tolerated, label order is explicit, constant columns do
not divide by zero, and bad input raises an error that says what is wrong.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from numbers import Integral
from os import PathLike

import numpy as np
from numpy.typing import ArrayLike


def load_csv(path: str | PathLike, *, delimiter: str | None = ",") -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV whose last column is the class label.

    Blank lines are skipped, spaces around fields are ignored, and a UTF-8 byte
    order mark is tolerated.  ``delimiter=None`` splits each line on runs of
    whitespace instead, as UCI's tab-separated files need (some of their rows
    have repeated tabs).

    Returns
    -------
    X : ndarray of float64, shape (n_rows, n_features)
    y : ndarray of str, shape (n_rows,)
        The labels as written in the file.
    """
    features, labels = [], []
    for line_number, fields in _csv_rows(path, delimiter):
        if len(fields) < 2:
            raise ValueError(f"{path}, line {line_number}: need at least one feature and a label")
        if features and len(fields) != len(features[0]) + 1:
            raise ValueError(f"{path}, line {line_number}: {len(fields)} fields, expected {len(features[0]) + 1}")
        features.append(_numbers(fields[:-1], path, line_number))
        if not fields[-1]:
            raise ValueError(f"{path}, line {line_number}: the label (last field) is empty")
        labels.append(fields[-1])
    if not features:
        raise ValueError(f"{path}: no data rows")
    return np.array(features, dtype=np.float64), np.array(labels)


def load_features(path: str | PathLike, n_features: int, *, delimiter: str | None = ",") -> np.ndarray:
    """Read the rows a model with ``n_features`` inputs is to predict, with or without their labels.

    The first row decides: ``n_features`` fields are all features; ``n_features + 1``
    end with a label, as in :func:`load_csv`, which is ignored.  The file is read as
    :func:`load_csv` reads it.

    Returns
    -------
    X : ndarray of float64, shape (n_rows, n_features)
    """
    if not isinstance(n_features, Integral) or isinstance(n_features, bool) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    features, n_fields = [], None
    for line_number, fields in _csv_rows(path, delimiter):
        if n_fields is None:
            if len(fields) not in (n_features, n_features + 1):
                raise ValueError(
                    f"{path}, line {line_number}: {len(fields)} fields, expected {n_features} features "
                    f"(or {n_features + 1} fields, the last a label)"
                )
            n_fields = len(fields)
        elif len(fields) != n_fields:
            raise ValueError(f"{path}, line {line_number}: {len(fields)} fields, expected {n_fields}")
        features.append(_numbers(fields[:n_features], path, line_number))
    if not features:
        raise ValueError(f"{path}: no data rows")
    return np.array(features, dtype=np.float64)


def _csv_rows(path: str | PathLike, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row's number and its fields, stripped of surrounding spaces.

    A file that is not UTF-8 text, or whose fields break the CSV rules, raises
    ``ValueError`` naming the file (and the line, where there is one).
    """
    line_number = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = _bounded_lines(handle, path)
            lines = csv.reader(text, delimiter=delimiter) if delimiter is not None else map(str.split, text)
            for line_number, row in enumerate(lines, start=1):
                fields = [field.strip() for field in row]
                if any(fields):
                    yield line_number, fields
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ValueError(f"{path}, line {line_number + 1}: {error}") from None


#: Longer lines are refused: reading a file without line breaks (a device such as /dev/zero, a binary
#: file) as lines would otherwise never end, or fill the memory.
MAX_LINE = 2**24


def _bounded_lines(handle, path: str | PathLike) -> Iterator[str]:
    for line_number in itertools.count(1):
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ValueError(f"{path}, line {line_number}: longer than {MAX_LINE} characters, so not a CSV file")
        yield line


def _numbers(fields: list[str], path: str | PathLike, line_number: int) -> list[float]:
    try:
        return [float(field) for field in fields]
    except ValueError as error:
        raise ValueError(f"{path}, line {line_number}: non-numeric feature ({error})") from None


def encode_labels(y: Sequence, classes: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to integer codes ``0 .. n_classes - 1``.

    By default the classes are the sorted distinct labels.  ``classes`` gives the
    mapping explicitly, in output-neuron order: ``classes=['2', '1', '3']`` maps
    ``'2'`` to 0, ``'1'`` to 1 and ``'3'`` to 2 (the tutorial's published run).

    Returns
    -------
    codes : ndarray of intp, shape (n_rows,)
    classes : ndarray, shape (n_classes,)
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
    if classes is None:
        try:
            classes = np.unique(y)
        except TypeError:
            raise ValueError("y mixes labels that cannot be sorted; pass classes= to give their order") from None
    else:
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(classes) == 0:
            raise ValueError("classes must be a non-empty list of labels")
        if len(np.unique(classes)) != len(classes):
            raise ValueError(f"classes has repeated labels: {classes.tolist()}")
    index = {label: code for code, label in enumerate(classes.tolist())}
    try:
        codes = np.array([index[label] for label in y.tolist()], dtype=np.intp)
    except KeyError as missing:
        raise ValueError(f"label {missing.args[0]!r} is not in classes {classes.tolist()}") from None
    return codes, classes


def minmax_bounds(X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Each column's minimum and maximum: the bounds :func:`minmax_normalize` scales by."""
    X = _finite_matrix(X)
    return X.min(axis=0), X.max(axis=0)


def minmax_normalize(X: ArrayLike, bounds: tuple[ArrayLike, ArrayLike] | None = None) -> np.ndarray:
    """Scale every column to [0, 1] by its minimum and maximum over all rows.

    Uses the tutorial's ``(x - min) / (max - min)``; a constant column becomes 0.
    ``bounds=(min, max)`` scales by other per-column bounds instead, such as the
    training rows' (:func:`minmax_bounds`), so that held-out rows are scaled without
    being looked at (they may then fall outside [0, 1]).
    """
    X = _finite_matrix(X)
    low, high = minmax_bounds(X) if bounds is None else _as_bounds(bounds, X.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        span = high - low
        scaled = (X - low) / np.where(span == 0.0, 1.0, span)
        # Differences beyond the float range (values near ±1.8e308) overflow above; halving
        # every term first keeps those columns finite (the others keep the tutorial's bits).
        huge = ~np.isfinite(scaled).all(axis=0)
        if huge.any():
            half_span = high[huge] / 2 - low[huge] / 2
            scaled[:, huge] = (X[:, huge] / 2 - low[huge] / 2) / np.where(half_span == 0.0, 1.0, half_span)
    return scaled


def _as_bounds(bounds: tuple[ArrayLike, ArrayLike], n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = (np.asarray(bound, dtype=np.float64) for bound in bounds)
    if low.shape != (n_columns,) or high.shape != (n_columns,):
        raise ValueError(
            f"bounds must be {n_columns} minimums and {n_columns} maximums, got shapes {low.shape}, {high.shape}"
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError("bounds contain NaN or infinity")
    return low, high


def _finite_matrix(X: ArrayLike) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a 2-D array with at least one row, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    return X


def cross_validation_split(n_rows: int, folds: int, rng: random.Random) -> list[np.ndarray]:
    """The tutorial's k-fold split, as row indices.

    Each fold takes ``int(n_rows / folds)`` rows, drawn by ``rng.randrange`` and
    popped from what is left; rows left over after the last full fold are dropped.
    """
    if not isinstance(folds, Integral) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {rng!r}")
    if folds > n_rows:
        raise ValueError(f"folds={folds} is more than the {n_rows} rows")
    remaining = list(range(n_rows))
    fold_size = int(n_rows / folds)
    split = []
    for _ in range(folds):
        fold = [remaining.pop(rng.randrange(len(remaining))) for _ in range(fold_size)]
        split.append(np.array(fold, dtype=np.intp))
    return split


def accuracy(actual: Sequence, predicted: Sequence) -> float:
    """Percentage of predictions equal to the actual labels."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    if actual.shape != predicted.shape or actual.ndim != 1 or len(actual) == 0:
        raise ValueError(
            f"actual and predicted must be non-empty and of one length, got {actual.shape} and {predicted.shape}"
        )
    if (actual.dtype.kind in "US") != (predicted.dtype.kind in "US"):
        raise TypeError(f"actual and predicted hold different kinds of labels: {actual.dtype} and {predicted.dtype}")
    correct = int(np.count_nonzero(actual == predicted))
    return correct / float(len(actual)) * 100.0


def zero_rule(y_train: Sequence, n_predictions: int) -> np.ndarray:
    """The Zero Rule baseline: predict the most common training label every time.

    Ties go to the label seen first in ``y_train``.
    """
    if not isinstance(n_predictions, Integral) or n_predictions < 0:
        raise ValueError(f"n_predictions must be a non-negative integer, got {n_predictions!r}")
    counts = Counter(np.asarray(y_train).tolist())
    if not counts:
        raise ValueError("y_train is empty")
    most_common = counts.most_common(1)[0][0]
    return np.full(n_predictions, most_common, dtype=np.asarray(y_train).dtype)


def tutorial_toy() -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's 10-row, two-feature, two-class toy dataset.

    Source: "How to Code a Neural Network with Backpropagation In Python (from
    scratch)", section 4.2.

    Returns
    -------
    X : ndarray of float64, shape (10, 2)
    y : ndarray of int, shape (10,)
        The classes, 0 and 1.
    """
    rows = [
        [2.7810836, 2.550537003, 0],
        [1.465489372, 2.362125076, 0],
        [3.396561688, 4.400293529, 0],
        [1.38807019, 1.850220317, 0],
        [3.06407232, 3.005305973, 0],
        [7.627531214, 2.759262235, 1],
        [5.332441248, 2.088626775, 1],
        [6.922596716, 1.77106367, 1],
        [8.675418651, -0.242068655, 1],
        [7.673756466, 3.508563011, 1],
    ]
    return np.array([row[:2] for row in rows]), np.array([row[2] for row in rows])

"""The tutorial's data protocol: read a CSV, encode labels, normalise, split, score.

Each helper follows the tutorial's procedure so that fastbp reproduces its
published figures, with the gaps a real user would hit filled in: blank lines
and padded fields are tolerated, label order is explicit, constant columns do
not divide by zero, and bad input raises an error that says what is wrong.
:func:`load_csv` reads the tutorial's files (no header, commas, the label last);
:func:`read_table` reads CSV files as people write them (a header row or not, any
delimiter, quoted fields, the label in any column), as the command line does.
Every reader refuses a feature that is not a finite number (text, an empty field,
NaN, infinity), naming its line and column: no network trains on one.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from os import PathLike

import numpy as np
from numpy.typing import ArrayLike

from ._validate import refuse_non_finite_classes


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
        features.append(_numbers(fields[:-1], path, line_number, delimiter))
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
    _check_n_features(n_features)
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
        features.append(_numbers(fields[:n_features], path, line_number, delimiter))
    if not features:
        raise ValueError(f"{path}: no data rows")
    return np.array(features, dtype=np.float64)


def _check_n_features(n_features: int) -> None:
    if not isinstance(n_features, Integral) or isinstance(n_features, bool) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")


def read_table(
    path: str | PathLike, *, label: int | str = -1, header: bool | None = None, delimiter: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV file as people write them: numeric features and a class label, in any column, with or
    without a header row, with any delimiter, quoted fields or not.

    What is not given is detected (see Notes).  As in :func:`load_csv`, blank lines are
    skipped, spaces around fields are ignored, and a UTF-8 byte order mark is tolerated.

    Parameters
    ----------
    path : str or path-like
        The file.
    label : int or str
        The label's column: its index (from 0; negative ones count from the end, so the
        default -1 is the last column) or its name in the header row.
    header : bool or None
        Whether the first row names the columns; None detects it.  A label given by
        name means there is one.
    delimiter : str or None
        The one character between fields; None detects it among ``,``, ``;``, tab and ``|``.

    Returns
    -------
    X : ndarray of float64, shape (n_rows, n_features)
        The other columns, in the file's order.
    y : ndarray of str, shape (n_rows,)
        The labels as written in the file.

    Notes
    -----
    Detection reads the first lines (:data:`SNIFF_CHARS` characters) with the standard
    library's :class:`csv.Sniffer`: ``sniff`` finds the delimiter and the quoting, and a
    file it cannot tell (one column, say) is read as comma-separated.  The first row is a
    header when none of its feature fields is a number, data when all of them are (so a
    data row is never dropped), and otherwise what ``Sniffer.has_header`` judges from
    the first rows' column types.
    """
    return _read_table(path, label, header, delimiter, n_features=None)


def read_table_features(
    path: str | PathLike,
    n_features: int,
    *,
    label: int | str = -1,
    header: bool | None = None,
    delimiter: str | None = None,
    feature_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Read the rows a model with ``n_features`` inputs is to predict from a file :func:`read_table` reads.

    The first row decides, as in :func:`load_features`: ``n_features`` fields are all
    features; ``n_features + 1`` hold a label too, in the column ``label`` names, which
    is ignored.  ``header`` and ``delimiter`` are detected as :func:`read_table` does.
    Where the file has a header and ``feature_names`` are given (a model's), its
    features' columns must be those, in that order: columns in another order would be
    predicted as garbage.  A first row that gives those names is the header, though
    they look like numbers (``2019,2020``).

    Returns
    -------
    X : ndarray of float64, shape (n_rows, n_features)
    """
    _check_n_features(n_features)
    X, _ = _read_table(path, label, header, delimiter, n_features=n_features, feature_names=_stripped(feature_names))
    return X


#: The delimiters :func:`read_table` tells apart when it is not given one.
DELIMITERS = ",;\t|"
#: How much of a file :class:`csv.Sniffer` reads to detect the delimiter and a header: whole lines, up to this
#: many characters (the first line, whatever its length).
SNIFF_CHARS = 2**16
#: A number written with a decimal comma (``3,14``), which Python's ``float`` does not read.
DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


def _read_table(
    path, label, header, delimiter, n_features: int | None, feature_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_table`, whose rows always hold a label, and :func:`read_table_features`, whose rows hold one
    when they have ``n_features + 1`` fields (y is then None without one), checked against ``feature_names``
    (stripped, as the fields are read) where the file has a header."""
    if isinstance(label, bool) or not isinstance(label, (Integral, str)):
        raise TypeError(f"label must be a column's index or name, got {label!r}")
    if header is not None and not isinstance(header, bool):
        raise TypeError(f"header must be True, False or None (detect it), got {header!r}")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ValueError(f"delimiter must be one character, not a quote or a line break, got {delimiter!r}")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        lines = _bounded_lines(handle, path)
        sample = _sample(lines)
        dialect = _dialect("".join(sample), delimiter)
        # Fields are stripped anyway; skipping the spaces first also reads a quoted field after ", ".
        rows = _fields(path, csv.reader(itertools.chain(sample, lines), dialect, skipinitialspace=True))
        first = next(rows, None)
        if first is None:
            raise ValueError(f"{path}: no data rows (the file is empty)")
        line_number, fields = first
        width = len(fields)
        if n_features is None and width < 2:
            raise ValueError(f"{path}, line {line_number}: need at least one feature and a label")
        if n_features is not None and width not in (n_features, n_features + 1):
            raise ValueError(
                f"{path}, line {line_number}: {width} fields, expected {n_features} features "
                f"(or {n_features + 1} fields, one a label)"
            )
        labelled = n_features is None or width == n_features + 1
        if header is None:
            header = _starts_with_header(fields, label if labelled else None, "".join(sample), dialect, feature_names)
        names = fields if header else None
        columns = [f"column {name!r}" for name in names] if names else [f"column {k + 1}" for k in range(width)]
        column = _label_column(label, names, width, path) if labelled else None
        label_column = columns.pop(column) if column is not None else None
        if names and feature_names is not None:
            _check_feature_names([name for k, name in enumerate(names) if k != column], feature_names, path)
        features, labels = [], []
        for line_number, fields in rows if header else itertools.chain([first], rows):
            if len(fields) != width:
                raise ValueError(f"{path}, line {line_number}: {len(fields)} fields, expected {width}")
            if column is not None:
                labels.append(fields.pop(column))
                if not labels[-1]:
                    raise ValueError(f"{path}, line {line_number}: the label ({label_column}) is empty")
            features.append(_numbers(fields, path, line_number, dialect.delimiter, columns))
    if not features:
        raise ValueError(f"{path}: a header row and no data rows")
    return np.array(features, dtype=np.float64), np.array(labels) if column is not None else None


def _stripped(feature_names: Sequence[str] | None) -> list[str] | None:
    """A model's feature names as a header's fields are read: stripped of spaces."""
    return None if feature_names is None else [str(name).strip() for name in feature_names]


def _check_feature_names(header: list[str], feature_names: list[str], path: str | PathLike) -> None:
    if header != feature_names:
        raise ValueError(
            f"{path}: its header names the features {header}, but the model was trained on {list(feature_names)}: "
            "select and order the columns as in training"
        )


def _sample(lines: Iterator[str]) -> list[str]:
    """The first lines, whole, up to :data:`SNIFF_CHARS` characters (the first one at least)."""
    sample, size = [], 0
    for line in lines:
        sample.append(line)
        size += len(line)
        if size >= SNIFF_CHARS:
            break
    return sample


def _dialect(sample: str, delimiter: str | None) -> type[csv.Dialect]:
    """The CSV dialect with ``delimiter``, or the one :class:`csv.Sniffer` finds in ``sample``."""
    if delimiter is None:
        try:
            return csv.Sniffer().sniff(sample, DELIMITERS)
        except csv.Error:  # one column, or no delimiter used consistently: the ragged rows are reported later
            delimiter = ","
    return type("given", (csv.excel,), {"delimiter": delimiter})


class _KnownDialectSniffer(csv.Sniffer):
    """A :class:`csv.Sniffer` whose ``has_header`` reads the sample in a dialect already decided: it would
    otherwise sniff one of its own, ignoring a delimiter the caller gave."""

    def __init__(self, dialect: type[csv.Dialect]):
        super().__init__()
        self.dialect = dialect

    def sniff(self, sample: str, delimiters: str | None = None) -> type[csv.Dialect]:
        return self.dialect


def _starts_with_header(
    fields: list[str],
    label: int | str | None,
    sample: str,
    dialect: type[csv.Dialect],
    feature_names: list[str] | None = None,
) -> bool:
    """Whether the first row (``fields``) names the columns, the label being in column ``label`` (None: none).
    A row that gives a model's ``feature_names`` is its header, though the names look like numbers (``2019``)."""
    if isinstance(label, str):
        return True  # only a header has names
    if label is not None:
        k = label % len(fields)  # an index out of range is refused once the header is known
        fields = fields[:k] + fields[k + 1 :]
    if fields == feature_names:
        return True
    numbers = [_is_number(field) for field in fields]
    if all(numbers):
        return False  # has_header calls a single row of numbers a header
    if not any(numbers):
        return True
    try:
        return _KnownDialectSniffer(dialect).has_header(sample)
    except csv.Error:  # a sample that breaks the CSV rules: reading it will say where
        return False


def _label_column(label: int | str, names: list[str] | None, width: int, path: str | PathLike) -> int:
    """The index of the label's column in rows of ``width`` fields, whose header is ``names`` (None: none)."""
    if isinstance(label, str):
        if names is None:
            raise ValueError(
                f"{path}: the label column is given by name, {label!r}, but the file is to be read without a header "
                "row, as asked"
            )
        if names.count(label) != 1:
            header = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
            several = "more than one column" if label in names else "no column"
            raise ValueError(f"{path}: the header names {several} {label!r} (it has {header})")
        return names.index(label)
    if not -width <= label < width:
        raise ValueError(
            f"{path}: label column {label} is out of range: the rows have {width} fields "
            f"(columns 0 to {width - 1}, or -{width} to -1 from the end)"
        )
    return int(label) % width


def _csv_rows(path: str | PathLike, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row's number and its fields, split as :func:`load_csv` says ``delimiter`` splits them."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        lines = _bounded_lines(handle, path)
        yield from _fields(
            path, csv.reader(lines, delimiter=delimiter) if delimiter is not None else map(str.split, lines)
        )


def _fields(path: str | PathLike, rows: Iterable[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row's number and its fields, stripped of surrounding spaces.

    A row that breaks the CSV rules raises ``ValueError`` naming the file and the line.
    """
    line_number = 0
    try:
        for line_number, row in enumerate(rows, start=1):
            fields = [field.strip() for field in row]
            if any(fields):
                yield line_number, fields
    except csv.Error as error:
        raise ValueError(f"{path}, line {line_number + 1}: {error}") from None


#: Longer lines are refused: reading a file without line breaks (a device such as /dev/zero, a binary
#: file) as lines would otherwise never end, or fill the memory.
MAX_LINE = 2**24


def _bounded_lines(handle, path: str | PathLike) -> Iterator[str]:
    """The lines of the text file ``handle``; ``ValueError`` naming the file for one that is not UTF-8 text."""
    for line_number in itertools.count(1):
        try:
            line = handle.readline(MAX_LINE + 1)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ValueError(f"{path}, line {line_number}: longer than {MAX_LINE} characters, so not a CSV file")
        yield line


def _numbers(
    fields: list[str],
    path: str | PathLike,
    line_number: int,
    delimiter: str | None,
    columns: Sequence[str] | None = None,
) -> list[float]:
    """The fields as floats; ``ValueError`` naming the line and the column of the first that is not a finite
    number (``columns[k]`` describes field k's; by default it is ``column k + 1``): no network trains on NaN or
    infinity, so they are refused where the file shows them."""

    def column(k: int) -> str:
        return columns[k] if columns is not None else f"column {k + 1}"

    try:
        numbers = [float(field) for field in fields]
    except ValueError:
        k = next(k for k, field in enumerate(fields) if not _is_number(field))
        raise ValueError(
            f"{path}, line {line_number}: non-numeric feature {fields[k]!r} in {column(k)}"
            f"{_misread(fields[k], delimiter)}"
        ) from None
    if not all(map(math.isfinite, numbers)):
        k = next(k for k, number in enumerate(numbers) if not math.isfinite(number))
        raise ValueError(f"{path}, line {line_number}: feature {fields[k]!r} in {column(k)} is not a finite number")
    return numbers


def _misread(field: str, delimiter: str | None) -> str:
    """What a non-numeric field may show of a file read otherwise than written: decimal commas, or another
    delimiter than the one read by (None: whitespace), as a file of decimal commas between semicolons is taken
    for commas."""
    if DECIMAL_COMMA.fullmatch(field.strip()):
        return " (numbers are read with a decimal point, not a comma)"
    other = next((other for other in DELIMITERS if other in field and other != delimiter), None)
    if other is None:
        return ""
    # Read by commas, the commas may be decimal ones, which a file's other delimiter would only show next.
    decimals = "; numbers are read with a decimal point, not a comma" if delimiter == "," else ""
    return f" (if {other!r} separates the fields, give it as the delimiter{decimals})"


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


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
        refuse_non_finite_classes(classes)  # as y's labels
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
    if huge.any() and not np.isfinite(scaled).all():  # rows far outside a tiny span given as bounds
        k = int(np.flatnonzero(~np.isfinite(scaled).all(axis=0))[0])
        raise ValueError(
            f"column {k} has values too far outside the bounds it is scaled by (from {float(low[k])!r} to "
            f"{float(high[k])!r}): scaled, they overflow the float range"
        )
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

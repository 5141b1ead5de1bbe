"""Input validation shared by every entry point: each helper returns its input in
the form the kernels trust, or raises ``ValueError``/``TypeError`` naming the problem.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from numbers import Integral, Real

import numpy as np

from ._sparse import SparseFeatures, check_structure, is_sparse

DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class RandomSource:
    """The random streams a training draws from, both made from one ``seed``.

    The tutorial's initialisation draws from ``random.Random``; the modern ones and
    shuffling from ``numpy.random.Generator``.  Each stream is made on first use, so
    a tutorial run draws nothing but the tutorial's numbers from a shared ``Random``.
    """

    def __init__(self, seed):
        if seed is not None and not isinstance(seed, random.Random | np.random.Generator):
            if not isinstance(seed, Integral) or isinstance(seed, bool):
                raise TypeError(f"seed must be an integer, a random.Random, a numpy Generator or None, got {seed!r}")
            seed = int(seed)
        self._seed = seed
        self._python = seed if isinstance(seed, random.Random) else None
        self._numpy = seed if isinstance(seed, np.random.Generator) else None

    def python(self) -> random.Random:
        if self._python is None:
            if isinstance(self._seed, np.random.Generator):
                self._python = random.Random(int(self._seed.integers(2**63)))
            else:
                self._python = random.Random(self._seed)
        return self._python

    def numpy(self) -> np.random.Generator:
        if self._numpy is None:
            if isinstance(self._seed, int) and self._seed < 0:  # random.Random takes any integer; numpy does not
                raise ValueError(f"seed must be a non-negative integer (as numpy's generators take), got {self._seed}")
            if isinstance(self._seed, random.Random):
                self._numpy = np.random.default_rng(self._seed.getrandbits(128))
            else:
                self._numpy = np.random.default_rng(self._seed)
        return self._numpy


def as_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) is float64
    except TypeError:
        resolved = None
    if resolved is None or resolved not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return resolved


def as_features(X, n_features: int | None = None, dtype: np.dtype = DTYPES[0]) -> np.ndarray | SparseFeatures:
    """``X`` as a finite, C-contiguous matrix of ``dtype`` (sparse input: as :class:`SparseFeatures`), or a clear
    error."""
    if is_sparse(X) or isinstance(X, SparseFeatures):
        return SparseFeatures.of(X, dtype, n_features)
    _refuse_masked(X)
    try:
        X = np.asarray(X)
    except (TypeError, ValueError, OverflowError) as error:
        raise _not_numbers(X, error) from None
    _refuse_unreal_features(X)
    if X.dtype not in DTYPES:  # float64 and float32 stay as they are, and are not copied
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as error:
            raise _not_numbers(X, error) from None
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have at least one row and one feature, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the model expects {n_features}")
    if not all_finite(X):
        raise ValueError("X contains NaN or infinity")
    return kernel_array(X, dtype, "X")


def _not_numbers(X, error: Exception) -> ValueError:
    """Why ``X`` could not be converted to floats, given what numpy raised."""
    if isinstance(error, OverflowError):  # Python integers beyond the float range
        return ValueError("X has numbers too large for float64")
    if _has_missing(X):
        return ValueError("X has missing values (None or pandas' NA): fill them or drop those rows")
    return ValueError(f"X must be numeric: {error}")


def as_inputs(X, input_shape: tuple[int, ...], dtype: np.dtype = DTYPES[0]) -> np.ndarray:
    """Rows of ``input_shape`` as the kernels' ``(n_rows, n_values)`` matrix (:func:`as_features`' checks).

    An image shape ``(height, width, channels)`` takes ``(n, height, width, channels)``
    arrays, ``(n, height, width)`` ones for one channel, or rows already flattened
    channels-last ``(n, height * width * channels)``.
    """
    if len(input_shape) == 1 or is_sparse(X) or isinstance(X, SparseFeatures):  # rows already flat
        return as_features(X, n_features=math.prod(input_shape), dtype=dtype)
    batch = f"(n_images, {', '.join(map(str, input_shape))})"
    try:
        shape = np.shape(X)
    except ValueError:  # numpy's "inhomogeneous shape"
        raise ValueError(f"X's images are not all of one shape: pass one array {batch}") from None
    if not shape:
        raise TypeError(f"X must be an array of images {batch}, got {type(X).__name__}")
    if shape[0] == 0:
        raise ValueError(f"X must have at least one row, got shape {shape}")
    flat = (math.prod(input_shape),)
    one_channel = input_shape[:2] if input_shape[2] == 1 else None
    if len(shape) < 2 or tuple(shape[1:]) not in (input_shape, one_channel, flat):
        if tuple(shape) in (input_shape, one_channel):
            raise ValueError(
                f"X is one image of shape {shape}, but the first layer takes images of shape {input_shape} in a "
                f"batch: pass an array {batch}, such as X[np.newaxis] for one image"
            )
        raise ValueError(
            f"X has shape {shape}, but the first layer takes images of shape {input_shape}: pass an array {batch}"
        )
    return as_features(_small_integers_as(np.asarray(X), dtype).reshape(shape[0], -1), dtype=dtype)


def image_shape_of(X) -> tuple[int, int, int]:
    """The shape of one image of ``X``: ``(n, height, width, channels)``, or ``(n, height, width)`` for one
    channel."""
    if is_sparse(X) or isinstance(X, SparseFeatures):
        raise ValueError(
            f"the first layer takes images, but X is a sparse matrix of shape {X.shape}: give the first layer "
            "input_shape=(height, width, channels) to read its rows as images"
        )
    shape = np.shape(X)
    if len(shape) == 4:
        return tuple(shape[1:])
    if len(shape) == 3:
        return (*shape[1:], 1)
    raise ValueError(
        f"the first layer takes images, so X must be (n_images, height, width, channels) or (n_images, height, "
        f"width), got shape {shape}"
    )


def _small_integers_as(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Pixels of 8 or 16 bits converted straight to ``dtype`` (every such integer is exact in float32), not
    through float64: an image data set is large."""
    return values.astype(dtype) if values.dtype.kind in "iu" and values.dtype.itemsize <= 2 else values


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite: its minimum and maximum are (both are NaN where any value is),
    two passes without the temporary array of ``np.isfinite``."""
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def feature_names_of(X) -> tuple[str, ...] | None:
    """A DataFrame's column names, as strings (None for other inputs, or columns not all named by strings)."""
    columns = getattr(X, "columns", None)
    if columns is None or not all(isinstance(name, str) for name in columns):
        return None
    return tuple(columns)


def _has_missing(values) -> bool:
    """Whether ``values`` holds None or pandas' NA, which numpy cannot make a number of."""
    try:
        cells = np.asarray(values, dtype=object).ravel()
    except (TypeError, ValueError):
        return False
    return any(cell is None or type(cell).__name__ == "NAType" for cell in cells)


def refuse_unsafe_features(X) -> None:
    """Refuse features that numpy, and so scikit-learn's checks too, would silently turn into wrong numbers
    (:func:`refuse_unreal`, and masked values), whether in an array, a DataFrame's columns or a list; and a sparse
    matrix whose structure points outside it, which converting it would follow (:func:`check_structure`)."""
    if is_sparse(X):
        check_structure(X)
        return
    _refuse_masked(X)
    if hasattr(X, "dtypes") and not isinstance(X, np.ndarray):  # pandas: a Series of a DataFrame's, or one
        dtypes = X.dtypes
        for dtype in list(dtypes) if isinstance(dtypes, Iterable) else [dtypes]:
            _refuse_unreal_kind(dtype, "X")
    elif hasattr(X, "dtype") or isinstance(X, list | tuple):
        try:
            values = np.asarray(X)
        except (TypeError, ValueError, OverflowError):  # ragged, or not numbers: the conversion says so later
            return
        _refuse_unreal_features(values)


def _refuse_unreal_features(X: np.ndarray) -> None:
    """:func:`refuse_unreal`, and text: an array of strings is no features, even of numbers (as scikit-learn's
    checks and a model's take it)."""
    refuse_unreal(X, "X")
    if X.dtype.kind in "US":
        raise ValueError(f"X must be numeric, got an array of dtype {X.dtype}")


def _refuse_masked(X) -> None:
    if np.ma.isMaskedArray(X) and np.ma.getmaskarray(X).any():  # the mask would be dropped, its values trained on
        raise ValueError("X is a masked array with masked values: fill them (X.filled(...)) or drop those rows")


def refuse_unreal(values: np.ndarray, name: str) -> None:
    """Refuse (``ValueError`` naming ``name``) values that numpy converts to floats wrongly without a word: dates
    and durations (counts of their unit) and complex numbers (their real part), also as objects in an array."""
    _refuse_unreal_kind(values.dtype, name)
    if values.dtype == object:
        unreal = (complex, np.complexfloating, np.datetime64, np.timedelta64)
        found = next((value for value in values.flat if isinstance(value, unreal)), None)
        if found is not None:
            _refuse_unreal_kind(np.asarray(found).dtype, name)


def _refuse_unreal_kind(dtype, name: str) -> None:
    kind = getattr(dtype, "kind", "O")
    if kind in "mM":
        raise ValueError(f"{name} must be numeric, got values of dtype {dtype}: convert dates to numbers first")
    if kind == "c":  # scikit-learn's words, which its estimator checks look for
        raise ValueError(f"Complex data not supported: {name} must be real numbers, got dtype {dtype}")


def finite_in(values: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``values`` in ``dtype``, refused (``ValueError`` naming ``name``) unless every one is finite there: a
    float64 value beyond float32's range would become infinity."""
    with np.errstate(over="ignore"):
        converted = values.astype(dtype)
    if not np.isfinite(converted).all():
        raise ValueError(f"{name} must be finite numbers within the {np.dtype(dtype).name} range")
    return converted


def real_numbers(values, name: str) -> np.ndarray:
    """``values`` as a float64 array, refused (``ValueError`` naming ``name``) where numpy would convert them
    wrongly without a word: complex numbers would lose their imaginary parts, dates become counts of their unit."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be numeric and within the float64 range") from None
    refuse_unreal(array, name)
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be numeric and within the float64 range") from None


def kernel_array(values: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Finite float64 or float32 ``values`` as the C-contiguous, writeable array of ``dtype`` the kernels take.

    Writeable too: Numba types read-only arrays apart, which would compile the kernels again.
    """
    narrowed = values.dtype.itemsize > dtype.itemsize
    if narrowed and values.size and max(-values.min(), values.max()) > np.finfo(dtype).max:
        raise ValueError(f"{name} has values too large for {dtype.name}")
    return np.require(values.astype(dtype, copy=False), requirements=["C", "W"])


def refuse_non_finite_classes(classes: np.ndarray) -> None:
    """Refuse classes holding NaN or infinity (as floats or as objects), which no label of ``y`` may be."""
    if any(isinstance(label, Real) and not math.isfinite(label) for label in classes.tolist()):
        raise ValueError(f"classes must be labels, not NaN or infinity: {classes.tolist()}")


def as_labels(y, n_rows: int) -> np.ndarray:
    """``y`` as a 1-D array of class labels, one per row."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {labels.shape}")
    if labels.dtype.kind == "c":
        raise ValueError("y has complex numbers: class labels must be integers, strings or booleans")
    if len(labels) != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {len(labels)} labels")
    if labels.dtype.kind in "US" and not isinstance(y, np.ndarray) and not all(isinstance(v, str) for v in y):
        raise ValueError("y mixes strings with other labels; give labels of one type")
    missing = _missing_labels(labels)
    if missing.any():
        raise ValueError(f"y has a missing label (NaN) at row {int(np.flatnonzero(missing)[0])}")
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
        raise ValueError(
            "y has non-integer numbers: a classifier needs class labels (use output='identity' for regression)"
        )
    return labels


def _missing_labels(labels: np.ndarray) -> np.ndarray:
    """Which labels are missing: NaN (of any float type, in an array of objects too), None or pandas' NA."""
    if labels.dtype.kind == "f":
        return np.isnan(labels)
    if labels.dtype.kind != "O":
        return np.zeros(len(labels), dtype=bool)
    return np.array(
        [label is None or type(label).__name__ == "NAType" or (isinstance(label, Real) and label != label)
         for label in labels.tolist()],
        dtype=bool,
    )  # fmt: skip


def as_targets(y, n_rows: int, dtype: np.dtype) -> np.ndarray:
    """Regression targets ``y`` as a finite ``(n_rows, n_targets)`` matrix of ``dtype``."""
    if np.asarray(y).dtype.kind == "c":
        raise ValueError("y has complex numbers: a regression's targets must be real")
    try:
        targets = np.asarray(y, dtype=np.float64)
    except OverflowError:
        raise ValueError("y has numbers too large for float64") from None
    except (TypeError, ValueError):
        raise ValueError("y must be numeric for a regression (output='identity' or 'exp')") from None
    if targets.ndim not in (1, 2) or len(targets) != n_rows or targets.size == 0:
        raise ValueError(f"y must have shape ({n_rows},) or ({n_rows}, n_targets), got {targets.shape}")
    if not np.isfinite(targets).all():
        raise ValueError("y contains NaN or infinity")
    return kernel_array(targets.reshape(n_rows, -1), dtype, "y")


def as_rates(targets: np.ndarray) -> np.ndarray:
    """The Poisson loss's targets, checked: counts or rates, none negative (its logarithm needs them so)."""
    if (targets < 0).any():
        raise ValueError("y has negative values: the Poisson loss takes counts or rates, 0 or more")
    return targets


def one_hot(codes: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    """The ``(len(codes), n_classes)`` target matrix of class indices ``codes``: a 1 in each row's class."""
    targets = np.zeros((len(codes), n_classes), dtype=dtype)
    targets[np.arange(len(codes)), codes] = 1.0
    return targets


def as_sample_weight(sample_weight, n_rows: int, dtype: np.dtype) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n_rows, dtype=dtype)
    weights = real_numbers(sample_weight, "sample_weight")
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.any():
        raise ValueError("sample_weight must be finite, non-negative and not all zero")
    return kernel_array(weights, dtype, "sample_weight")


def as_count(value, name: str, *, positive: bool = False) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < int(positive):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} integer, got {value!r}")
    return int(value)


def as_layer_sizes(hidden) -> tuple[int, ...]:
    if isinstance(hidden, np.ndarray) and hidden.ndim == 0:
        hidden = hidden.item()  # np.array(3) means 3
    sizes = (hidden,) if isinstance(hidden, Integral) else hidden
    if (
        not isinstance(sizes, Sequence | np.ndarray)
        or len(sizes) == 0
        or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in sizes)
    ):
        raise ValueError(f"hidden must be a positive integer or a non-empty sequence of them, got {hidden!r}")
    return tuple(int(n) for n in sizes)


def as_choice(value, name: str, choices: Sequence[str], context: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}{' ' + context if context else ''}, got {value!r}")
    return value


def as_finite(value, name: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()  # np.array(0.3) means 0.3
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def as_positive(value, name: str) -> float:
    if as_finite(value, name) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def as_non_negative(value, name: str) -> float:
    if as_finite(value, name) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return float(value)


def as_fraction(value, name: str) -> float:
    if not 0 <= as_finite(value, name) < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def as_progress(value):
    """``progress``: a flag, or a progress bar of the caller's (anything with ``update(n)``, such as tqdm's)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if callable(getattr(value, "update", None)):
        return value
    raise TypeError(f"progress must be True, False or a progress bar with an update(n) method, got {value!r}")


def as_flag(value, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)

"""The public API: validate inputs, allocate buffers once, run a backend's kernels.

Compiled kernels trust their inputs, so everything is checked and converted to
C-contiguous float64 here, before any kernel runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike

from . import data
from ._backends import BACKENDS, backend_name, get_backend
from ._layout import Layout, initial_weights

#: Weight updates per kernel call when training: tens of milliseconds of compiled work.
CHUNK_WORK = 10_000_000


class Model:
    """A trained network.

    Attributes
    ----------
    classes : ndarray
        The label of each output neuron, in order.
    history : ndarray of float64, shape (epochs,)
        Each epoch's sum of squared errors over the training rows.
    backend : str
        The backend that trained the model, also used to predict.
    """

    def __init__(self, layout: Layout, weights: np.ndarray, classes: np.ndarray, history: np.ndarray, backend: str):
        # The kernels trust the buffer, so a model is never built around a wrong one.
        if not (
            isinstance(weights, np.ndarray)
            and weights.dtype == np.float64
            and weights.shape == (layout.n_weights,)
            and weights.flags.c_contiguous
        ):
            raise ValueError(
                f"weights must be a contiguous float64 array of {layout.n_weights} values "
                f"for layer sizes {tuple(layout.sizes.tolist())}"
            )
        if len(classes) != layout.sizes[-1]:
            raise ValueError(f"classes has {len(classes)} labels for {layout.sizes[-1]} outputs")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
        self._layout = layout
        self._weights = weights
        self.classes = classes
        self.history = history
        self.backend = backend

    def __repr__(self) -> str:
        return f"Model(sizes={self.sizes}, classes={self.classes.tolist()}, backend={self.backend!r})"

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes: inputs, each hidden layer, outputs."""
        return tuple(self._layout.sizes.tolist())

    @property
    def weights(self) -> np.ndarray:
        """Every parameter in one flat float64 buffer (read-only; see :mod:`fastbp._layout`).

        Read-only because the compiled kernels trust its size and layout.
        """
        view = self._weights.view()
        view.flags.writeable = False
        return view

    @property
    def layers(self) -> list[np.ndarray]:
        """One read-only array per layer, shape ``(n_neurons, n_inputs + 1)``, bias last."""
        return self._layout.layer_views(self.weights)

    def forward(self, X: ArrayLike) -> np.ndarray:
        """The output neurons' values for each row, shape ``(n_rows, n_classes)``."""
        X = _as_features(X, n_features=self.sizes[0])
        layout = self._layout
        out = np.empty((X.shape[0], self.sizes[-1]))
        scratch = np.empty(layout.n_neurons)
        kernels = get_backend(self.backend)
        kernels.predict_batch(self._weights, layout.w_off, layout.sizes, scratch, layout.o_off, X, out)
        return out

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Output values scaled to sum to one per row (the tutorial's outputs as probabilities).

        A row whose outputs all underflow to zero gets equal probabilities.
        """
        outputs = self.forward(X)
        total = outputs.sum(axis=1, keepdims=True)
        positive = total > 0
        return np.where(positive, outputs / np.where(positive, total, 1.0), 1.0 / outputs.shape[1])

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The label of the largest output for each row (the first on ties)."""
        return self.classes[np.argmax(self.forward(X), axis=1)]


@dataclass(frozen=True)
class Evaluation:
    """Cross-validation result: per-fold accuracies in percent."""

    scores: list[float]
    #: The Zero Rule baseline (most common training label) on the same folds.
    baseline_scores: list[float]

    @property
    def mean(self) -> float:
        return sum(self.scores) / float(len(self.scores))

    @property
    def baseline_mean(self) -> float:
        return sum(self.baseline_scores) / float(len(self.baseline_scores))


def train(
    X: ArrayLike,
    y: ArrayLike,
    *,
    hidden: int | Sequence[int] = (5,),
    epochs: int = 500,
    lr: float = 0.3,
    seed: int | random.Random | None = None,
    init: str = "tutorial",
    classes: Sequence | None = None,
    backend: str = "auto",
) -> Model:
    """Train a sigmoid network by online backpropagation (the tutorial's algorithm).

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features)
        Numeric features; converted to C-contiguous float64.
    y : array-like, shape (n_rows,)
        Class labels of any type.
    hidden : int or sequence of int
        Neurons in each hidden layer.
    epochs : int
        Passes over the training rows (0 returns the initial network).
    lr : float
        Learning rate, positive.
    seed : int, random.Random or None
        Seeds ``random.Random`` for the initial weights; a ``Random`` instance is
        used as it is, continuing its stream (the tutorial's protocol).
    init : {"tutorial"}
        ``"tutorial"``: uniform [0, 1) draws in the tutorial's order.
    classes : sequence, optional
        Labels in the order of the output neurons (default: sorted labels of ``y``).
    backend : {"auto", "cython", "numba", "reference"}
        Which kernels run: ``"auto"`` picks the fastest compiled backend that is
        available; ``"reference"`` is the tutorial's pure-Python code.
    """
    X = _as_features(X)
    codes, classes = data.encode_labels(_as_labels(y, len(X)), classes)
    hidden = _as_layer_sizes(hidden)
    epochs = _as_count(epochs, "epochs")
    lr = _as_learning_rate(lr)
    rng = _as_rng(seed)
    kernels = get_backend(backend)

    layout = Layout.from_sizes((X.shape[1], *hidden, len(classes)))
    weights = initial_weights(layout, init, rng)
    targets = np.zeros((len(codes), len(classes)))
    targets[np.arange(len(codes)), codes] = 1.0
    outputs, deltas = np.empty(layout.n_neurons), np.empty(layout.n_neurons)
    order = np.arange(len(codes), dtype=np.intp)
    history = np.zeros(epochs)
    # Epochs run in chunks of about CHUNK_WORK weight updates (tens of milliseconds), so
    # Ctrl-C is honoured between chunks and a diverged run stops at the chunk it broke in.
    chunk = max(1, CHUNK_WORK // (len(order) * layout.n_weights))
    for start in range(0, epochs, chunk):
        part = history[start : start + chunk]
        kernels.train_epochs(
            weights, layout.w_off, layout.sizes, outputs, layout.o_off, deltas, X, targets, order, lr, part
        )
        _check_finite(part, weights, start)
    return Model(layout, weights, classes, history, backend_name(kernels))


def evaluate(
    X: ArrayLike,
    y: ArrayLike,
    *,
    folds: int = 5,
    seed: int | random.Random | None = 1,
    protocol: str = "tutorial",
    classes: Sequence | None = None,
    **train_options,
) -> Evaluation:
    """Cross-validate :func:`train` with the tutorial's protocol.

    One ``random.Random(seed)`` stream draws the fold split
    (:func:`fastbp.data.cross_validation_split`) and then, fold after fold, each
    network's initial weights.  Each fold is predicted by a network trained on the
    other folds concatenated in fold order.  Unlike the tutorial, every network has
    one output per class of ``y`` (or ``classes``), even if a training set lacks one.
    ``train_options`` are passed to :func:`train`.
    """
    if protocol != "tutorial":
        raise ValueError(f"protocol must be 'tutorial', got {protocol!r}")
    X = _as_features(X)
    y = _as_labels(y, len(X))
    _, classes = data.encode_labels(y, classes)
    rng = _as_rng(seed)
    split = data.cross_validation_split(len(X), folds, rng)
    scores, baseline_scores = [], []
    for k, test in enumerate(split):
        fit = np.concatenate([fold for j, fold in enumerate(split) if j != k])
        model = train(X[fit], y[fit], seed=rng, classes=classes, **train_options)
        scores.append(data.accuracy(y[test], model.predict(X[test])))
        baseline_scores.append(data.accuracy(y[test], data.zero_rule(y[fit], len(test))))
    return Evaluation(scores, baseline_scores)


def _as_features(X, n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite, C-contiguous float64 matrix, or a clear error."""
    kind = getattr(X, "dtype", np.dtype(float)).kind
    if kind in "cUS":  # complex would lose its imaginary part; text is not a feature
        raise ValueError(f"X must be numeric, got an array of dtype {X.dtype}")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"X must be numeric: {error}") from None
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have at least one row and one feature, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the model expects {n_features}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    # Writeable too: Numba types read-only arrays apart, which would compile the kernels twice.
    return np.require(X, requirements=["C", "W"])


def _as_labels(y, n_rows: int) -> np.ndarray:
    """``y`` as a 1-D array of class labels, one per row."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {labels.shape}")
    if len(labels) != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {len(labels)} labels")
    if labels.dtype.kind in "US" and not isinstance(y, np.ndarray) and not all(isinstance(v, str) for v in y):
        raise ValueError("y mixes strings with other labels; give labels of one type")
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
        raise ValueError("y has non-integer numbers: fastbp.train classifies, so y must hold class labels")
    return labels


def _as_count(value, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _as_layer_sizes(hidden) -> tuple[int, ...]:
    sizes = (hidden,) if isinstance(hidden, Integral) else hidden
    if (
        not isinstance(sizes, Sequence | np.ndarray)
        or len(sizes) == 0
        or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in sizes)
    ):
        raise ValueError(f"hidden must be a positive integer or a non-empty sequence of them, got {hidden!r}")
    return tuple(int(n) for n in sizes)


def _as_learning_rate(lr) -> float:
    if not isinstance(lr, Real) or isinstance(lr, bool) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    return float(lr)


def _as_rng(seed) -> random.Random:
    if isinstance(seed, random.Random):
        return seed
    if seed is None:
        return random.Random()
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        return random.Random(int(seed))
    raise TypeError(f"seed must be an integer, a random.Random or None, got {seed!r}")


def _check_finite(history: np.ndarray, weights: np.ndarray, first_epoch: int) -> None:
    """Refuse to return a diverged network as if it were trained."""
    bad = np.flatnonzero(~np.isfinite(history))
    if len(bad):
        raise FloatingPointError(
            f"training diverged at epoch {first_epoch + bad[0]}: the squared error became {history[bad[0]]}; "
            "try a smaller lr"
        )
    if not np.isfinite(weights).all():
        raise FloatingPointError(
            f"training diverged by epoch {first_epoch + len(history) - 1}: "
            "some weights are not finite; try a smaller lr"
        )

"""The public API: validate inputs, allocate buffers once, run a backend's kernels.

Compiled kernels trust their inputs, so everything is checked and converted to
C-contiguous arrays of the network's dtype here, before any kernel runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import data
from ._backends import BACKENDS, backend_name, get_backend
from ._codes import ADAM, HYPER, MOMENTUM, NESTEROV, RPROP, RPROP_DELTA_ZERO, SGD
from ._layout import Layout, initial_weights

#: Weight updates per kernel call when training: tens of milliseconds of compiled work.
CHUNK_WORK = 10_000_000

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
OUTPUTS = ("sigmoid", "softmax", "identity")
#: The losses each output unit is trained with (the first is the default).
LOSSES = {"sigmoid": ("mse",), "softmax": ("cross_entropy",), "identity": ("mse",)}
OPTIMIZERS = ("sgd", "adam", "rprop")
LR_SCHEDULES = ("constant", "invscaling")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class Model:
    """A trained network.

    Attributes
    ----------
    classes : ndarray or None
        The label of each output neuron, in order; ``None`` for a regression
        network (``output="identity"``), which predicts the outputs themselves.
    history : ndarray of float64, shape (epochs,)
        Each epoch's loss summed over the training rows (each weighted by its
        sample weight): the tutorial's sum of squared errors
        ``sum((target - output)**2)`` for ``"mse"``, the cross-entropy
        ``-sum(target * log(p))`` for ``"cross_entropy"``.
    backend : str
        The backend that trained the model, also used to predict.
    """

    def __init__(
        self,
        layout: Layout,
        weights: np.ndarray,
        classes: np.ndarray | None,
        history: np.ndarray,
        backend: str,
        *,
        flat_targets: bool = False,
    ):
        # The kernels trust the buffer, so a model is never built around a wrong one.
        if not (
            isinstance(weights, np.ndarray)
            and weights.dtype in DTYPES
            and weights.shape == (layout.n_weights,)
            and weights.flags.c_contiguous
        ):
            raise ValueError(
                f"weights must be a contiguous float64 or float32 array of {layout.n_weights} values "
                f"for layer sizes {tuple(layout.sizes.tolist())}"
            )
        if classes is not None and len(classes) != layout.sizes[-1]:
            raise ValueError(f"classes has {len(classes)} labels for {layout.sizes[-1]} outputs")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
        self._layout = layout
        self._weights = weights
        self._flat_targets = flat_targets
        self.classes = classes
        self.history = history
        self.backend = backend

    def __repr__(self) -> str:
        labels = "regression" if self.classes is None else f"classes={self.classes.tolist()}"
        return (
            f"Model(sizes={self.sizes}, activations={self.activations}, {labels}, "
            f"dtype={self.dtype.name}, backend={self.backend!r})"
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes: inputs, each hidden layer, outputs."""
        return tuple(self._layout.sizes.tolist())

    @property
    def activations(self) -> tuple[str, ...]:
        """Each layer's activation, the output layer's last."""
        return self._layout.activations

    @property
    def dtype(self) -> np.dtype:
        """The precision of the weights and of every computation (float64 or float32)."""
        return self._weights.dtype

    @property
    def weights(self) -> np.ndarray:
        """Every parameter in one flat buffer (read-only; see :mod:`fastbp._layout`).

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
        """The output neurons' values for each row, shape ``(n_rows, n_outputs)``."""
        X = _as_features(X, n_features=self.sizes[0], dtype=self.dtype)
        layout = self._layout
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        scratch = np.empty(layout.n_neurons, dtype=self.dtype)
        kernels = get_backend(self.backend)
        kernels.predict_batch(self._weights, layout.w_off, layout.sizes, layout.acts, scratch, layout.o_off, X, out)
        return out

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, shape ``(n_rows, n_classes)``.

        A softmax output is returned as it is; sigmoid outputs (the tutorial's) are
        scaled to sum to one per row, and a row whose outputs all underflow to zero
        gets equal probabilities.
        """
        if self.classes is None:
            raise TypeError("a regression model (output='identity') has no class probabilities; use predict")
        outputs = self.forward(X)
        if self.activations[-1] == "softmax":
            return outputs
        total = outputs.sum(axis=1, keepdims=True)
        positive = total > 0
        return np.where(positive, outputs / np.where(positive, total, 1.0), 1.0 / outputs.shape[1])

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Classifiers: the label of the largest output per row (the first on ties).
        Regression: the outputs, shaped like the training targets."""
        outputs = self.forward(X)
        if self.classes is None:
            return outputs[:, 0] if self._flat_targets else outputs
        return self.classes[np.argmax(outputs, axis=1)]


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
    activation: str | Sequence[str] = "sigmoid",
    output: str = "sigmoid",
    loss: str | None = None,
    epochs: int = 500,
    lr: float = 0.3,
    batch_size: int | None = None,
    shuffle: bool = False,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    nesterov: bool = False,
    l2: float = 0.0,
    lr_schedule: str = "constant",
    power_t: float = 0.5,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    init: str | None = None,
    dtype: DTypeLike = np.float64,
    sample_weight: ArrayLike | None = None,
    seed: int | random.Random | np.random.Generator | None = None,
    classes: ArrayLike | None = None,
    backend: str = "auto",
) -> Model:
    """Train a network by backpropagation.

    The defaults are the tutorial's network and training (one hidden sigmoid layer,
    sigmoid outputs, squared error, online SGD at ``lr=0.3``), except ``init``:
    pass ``init="tutorial"`` to reproduce the tutorial's weights exactly.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features)
        Numeric features; converted to a C-contiguous array of ``dtype``.
    y : array-like, shape (n_rows,) or (n_rows, n_targets)
        Class labels of any type, or for ``output="identity"`` (regression) the
        numeric targets.
    hidden : int or sequence of int
        Neurons in each hidden layer.
    activation : str or sequence of str
        Hidden layers' activation, one name for all or one per layer:
        ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"leaky_relu"`` (slope 0.01) or
        ``"identity"``.
    output : {"sigmoid", "softmax", "identity"}
        Output units: the tutorial's sigmoids, a softmax over the classes, or
        identity units for regression.
    loss : {"mse", "cross_entropy"} or None
        Squared error ``0.5 * sum((output - target)**2)`` per row (for sigmoid and
        identity outputs) or cross-entropy ``-sum(target * log(p))`` (softmax);
        ``None`` picks the one that fits ``output``.
    epochs : int
        Passes over the training rows (0 returns the initial network).
    lr : float
        Learning rate, positive (unused by ``"rprop"``).
    batch_size : int or None
        Rows per update, the gradient being their mean.  ``None``: 1 (online, the
        tutorial's) for ``"sgd"`` and ``"adam"``, every row for ``"rprop"``, a
        full-batch method.  Larger than the data means the whole data.
    shuffle : bool
        Visit the rows in a fresh random order each epoch (from ``seed``) instead
        of in the order given.
    optimizer : {"sgd", "adam", "rprop"}
        Plain or momentum SGD; Adam as scikit-learn implements it (with ``beta1``,
        ``beta2``, ``epsilon``); iRprop- with FANN's constants.
    momentum : float in [0, 1)
        SGD momentum (``v = momentum * v - lr * g; w += v``); for ``"sgd"`` only.
    nesterov : bool
        Nesterov's momentum instead (``w += momentum * v - lr * g`` with the new ``v``).
    l2 : float
        Weight decay: ``l2 * w`` is added to the gradient of every weight but the
        biases, at every update (scikit-learn's ``alpha`` is ``l2 * batch_size``).
    lr_schedule : {"constant", "invscaling"}
        ``"invscaling"``: epoch ``e`` runs at ``lr / (e * n_rows + 1) ** power_t``
        (scikit-learn's schedule, which counts rows seen); for ``"sgd"`` only.
    init : {None, "tutorial", "glorot", "he"}
        ``"tutorial"``: uniform [0, 1) draws from ``random.Random`` in the
        tutorial's order.  ``"glorot"`` (uniform in ``±sqrt(6 / (n_in + n_out))``,
        the bound for tanh, used for every activation) and ``"he"`` (normal,
        ``sqrt(2 / n_in)``) scale each layer's weights, biases zero, drawn from
        ``numpy.random.Generator``; ``None`` (the default) uses He for relu layers
        and Glorot for the others.
    dtype : float64 or float32
        Precision of the weights and of all the arithmetic.
    sample_weight : array-like, shape (n_rows,), optional
        Non-negative weights that scale each row's gradient (and its loss in
        ``history``) as given: unlike scikit-learn, which divides by their sum, so
        weights of 2 train like a doubled ``lr``.  A row of weight 0 contributes no
        gradient, but in online training its update still applies momentum, Adam's
        moments and L2 decay.
    seed : int, random.Random, numpy.random.Generator or None
        Seeds the initial weights and the shuffling.  An integer seeds
        ``random.Random`` for ``init="tutorial"`` and ``numpy.random.default_rng``
        otherwise.  A ``Random`` instance is used as it is, continuing its stream
        (the tutorial's protocol); a ``Generator`` likewise.
    classes : sequence, optional
        Labels in the order of the output neurons (default: sorted labels of
        ``y``), for example to include classes that ``y`` lacks.
    backend : {"auto", "cython", "numba", "reference"}
        Which kernels run: ``"auto"`` picks the fastest compiled backend that is
        available; ``"reference"`` is the tutorial's pure-Python code, which runs
        only the tutorial's training (sigmoid units, squared error, online SGD).
    """
    dtype = _as_dtype(dtype)
    X = _as_features(X, dtype=dtype)
    hidden = _as_layer_sizes(hidden)
    activations = _as_activations(activation, len(hidden))
    output = _as_choice(output, "output", OUTPUTS)
    loss = LOSSES[output][0] if loss is None else _as_choice(loss, "loss", LOSSES[output], f"with output={output!r}")
    if output == "identity":
        if classes is not None:
            raise ValueError("classes applies to classifiers; output='identity' trains a regression on numeric y")
        targets = _as_targets(y, len(X), dtype)
        classes_out = None
    else:
        codes, classes_out = data.encode_labels(_as_labels(y, len(X)), classes)
        targets = np.zeros((len(codes), len(classes_out)), dtype=dtype)
        targets[np.arange(len(codes)), codes] = 1.0
    epochs = _as_count(epochs, "epochs")
    lr = _as_positive(lr, "lr")
    optimizer = _as_choice(optimizer, "optimizer", OPTIMIZERS)
    batch_size = _as_batch_size(batch_size, optimizer, len(X))
    momentum, nesterov = _as_fraction(momentum, "momentum"), _as_flag(nesterov, "nesterov")
    lr_schedule = _as_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    shuffle = _as_flag(shuffle, "shuffle")
    _check_optimizer_options(optimizer, momentum, nesterov, lr_schedule, shuffle)
    rule = _update_rule(optimizer, momentum, nesterov)
    settings = {
        "momentum": momentum,
        "l2": _as_non_negative(l2, "l2"),
        "beta1": _as_fraction(beta1, "beta1"),
        "beta2": _as_fraction(beta2, "beta2"),
        "epsilon": _as_positive(epsilon, "epsilon"),
    }
    hyper = np.array([settings[name] for name in HYPER], dtype=np.float64)
    power_t = _as_non_negative(power_t, "power_t")
    weights_per_row = _as_sample_weight(sample_weight, len(X), dtype)
    randomness = _RandomSource(seed)
    kernels = get_backend(backend)

    layout = Layout.from_sizes((X.shape[1], *hidden, targets.shape[1]), (*activations, output))
    weights = initial_weights(layout, init, randomness.python() if init == "tutorial" else randomness.numpy(), dtype)
    history = np.zeros(epochs)
    _run_epochs(
        kernels, layout, weights, X, targets, weights_per_row, history,
        batch_size=batch_size, rule=rule, hyper=hyper, lr=lr, lr_schedule=lr_schedule, power_t=power_t,
        shuffle=randomness.numpy() if shuffle else None,
    )  # fmt: skip
    flat_targets = classes_out is None and np.ndim(y) == 1
    return Model(layout, weights, classes_out, history, backend_name(kernels), flat_targets=flat_targets)


def _run_epochs(kernels, layout, weights, X, Y, sw, history, *, batch_size, rule, hyper, lr, lr_schedule, power_t,
                shuffle):  # fmt: skip
    """Run ``len(history)`` epochs, in chunks of about CHUNK_WORK weight updates (tens of milliseconds).

    Between chunks Ctrl-C is honoured, a diverged run stops at the chunk it broke
    in, and a fresh row order is drawn per epoch when ``shuffle`` is a generator.
    """
    n_rows, dtype = len(X), weights.dtype
    grad = np.zeros(layout.n_weights, dtype=dtype)
    state = np.zeros(2 * layout.n_weights, dtype=dtype)
    if rule == RPROP:
        state[: layout.n_weights] = RPROP_DELTA_ZERO
    steps_per_epoch = -(-n_rows // batch_size)
    chunk = max(1, CHUNK_WORK // (n_rows * layout.n_weights))
    in_order = np.arange(n_rows, dtype=np.intp)[np.newaxis]
    for start in range(0, len(history), chunk):
        part = history[start : start + chunk]
        epoch = np.arange(start, start + len(part), dtype=np.float64)
        with np.errstate(over="ignore"):  # a huge power_t makes the rate underflow to 0, as it should
            rates = np.full(len(part), lr) if lr_schedule == "constant" else lr / (epoch * n_rows + 1.0) ** power_t
        orders = in_order if shuffle is None else shuffle.permuted(np.repeat(in_order, len(part), axis=0), axis=1)
        step0 = start * steps_per_epoch
        if batch_size == 1:
            outputs, deltas = np.empty(layout.n_neurons, dtype=dtype), np.empty(layout.n_neurons, dtype=dtype)
            kernels.train_online(
                weights, layout.w_off, layout.sizes, layout.acts, outputs, layout.o_off, deltas, grad, state,
                X, Y, sw, orders, rates, hyper, rule, step0, part,
            )  # fmt: skip
        else:
            kernels.train_batches(
                weights, layout.w_off, layout.sizes, layout.acts, grad, state,
                X, Y, sw, orders, batch_size, rates, hyper, rule, step0, part,
            )  # fmt: skip
        _check_finite(part, weights, start)


def evaluate(
    X: ArrayLike,
    y: ArrayLike,
    *,
    folds: int = 5,
    seed: int | random.Random | None = 1,
    protocol: str = "tutorial",
    classes: ArrayLike | None = None,
    **train_options,
) -> Evaluation:
    """Cross-validate a classifier trained by :func:`train` with the tutorial's protocol.

    One ``random.Random(seed)`` stream draws the fold split
    (:func:`fastbp.data.cross_validation_split`) and then, fold after fold, what
    each network's training draws (its initial weights for ``init="tutorial"``, or
    the seed of its ``numpy`` generator otherwise).  Each fold is predicted by a
    network trained on the other folds concatenated in fold order.  Unlike the
    tutorial, every network has one output per class of ``y`` (or ``classes``),
    even if a training set lacks one.  ``train_options`` are passed to :func:`train`.
    """
    if protocol != "tutorial":
        raise ValueError(f"protocol must be 'tutorial', got {protocol!r}")
    if train_options.get("output") == "identity":
        raise ValueError("evaluate scores classifiers by accuracy; output='identity' trains a regression")
    if train_options.get("sample_weight") is not None:
        raise ValueError("evaluate does not take sample_weight: it could not follow the rows into the folds")
    X = _as_features(X)
    y = _as_labels(y, len(X))
    _, classes = data.encode_labels(y, classes)
    if isinstance(seed, np.random.Generator):
        raise TypeError("evaluate's seed must be an integer, a random.Random or None (the tutorial's stream)")
    rng = _RandomSource(seed).python()
    split = data.cross_validation_split(len(X), folds, rng)
    scores, baseline_scores = [], []
    for k, test in enumerate(split):
        fit = np.concatenate([fold for j, fold in enumerate(split) if j != k])
        model = train(X[fit], y[fit], seed=rng, classes=classes, **train_options)
        scores.append(data.accuracy(y[test], model.predict(X[test])))
        baseline_scores.append(data.accuracy(y[test], data.zero_rule(y[fit], len(test))))
    return Evaluation(scores, baseline_scores)


class _RandomSource:
    """The random streams a training draws from, both made from one ``seed``.

    The tutorial's initialisation draws from ``random.Random``; the modern ones and
    shuffling from ``numpy.random.Generator``.  Each stream is made on first use, so
    a tutorial run draws nothing but the tutorial's numbers from a shared ``Random``.
    """

    def __init__(self, seed):
        if seed is not None and not isinstance(seed, random.Random | np.random.Generator):
            if not isinstance(seed, Integral) or isinstance(seed, bool):
                raise TypeError(f"seed must be an integer, a random.Random, a numpy Generator or None, got {seed!r}")
            if seed < 0:
                raise ValueError(f"seed must be a non-negative integer (as numpy's generators take), got {seed}")
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
            if isinstance(self._seed, random.Random):
                self._numpy = np.random.default_rng(self._seed.getrandbits(128))
            else:
                self._numpy = np.random.default_rng(self._seed)
        return self._numpy


def _as_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) is float64
    except TypeError:
        resolved = None
    if resolved is None or resolved not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return resolved


def _as_features(X, n_features: int | None = None, dtype: np.dtype = DTYPES[0]) -> np.ndarray:
    """``X`` as a finite, C-contiguous matrix of ``dtype``, or a clear error."""
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
    return _kernel_array(X, dtype, "X")


def _kernel_array(values: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Finite float64 ``values`` as the C-contiguous, writeable array of ``dtype`` the kernels take.

    Writeable too: Numba types read-only arrays apart, which would compile the kernels again.
    """
    if dtype != values.dtype and values.size and np.abs(values).max() > np.finfo(dtype).max:
        raise ValueError(f"{name} has values too large for {dtype.name}")
    return np.require(values.astype(dtype, copy=False), requirements=["C", "W"])


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
        raise ValueError(
            "y has non-integer numbers: a classifier needs class labels (use output='identity' for regression)"
        )
    return labels


def _as_targets(y, n_rows: int, dtype: np.dtype) -> np.ndarray:
    """Regression targets ``y`` as a finite ``(n_rows, n_targets)`` matrix of ``dtype``."""
    try:
        targets = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("y must be numeric for output='identity' (regression)") from None
    if targets.ndim not in (1, 2) or len(targets) != n_rows or targets.size == 0:
        raise ValueError(f"y must have shape ({n_rows},) or ({n_rows}, n_targets), got {targets.shape}")
    if not np.isfinite(targets).all():
        raise ValueError("y contains NaN or infinity")
    return _kernel_array(targets.reshape(n_rows, -1), dtype, "y")


def _as_sample_weight(sample_weight, n_rows: int, dtype: np.dtype) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n_rows, dtype=dtype)
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numeric") from None
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.any():
        raise ValueError("sample_weight must be finite, non-negative and not all zero")
    return _kernel_array(weights, dtype, "sample_weight")


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


def _as_activations(activation, n_hidden: int) -> tuple[str, ...]:
    names = (activation,) * n_hidden if isinstance(activation, str) else activation
    if not isinstance(names, Sequence | np.ndarray) or len(names) != n_hidden:
        raise ValueError(f"activation must be a name or one name per hidden layer ({n_hidden}), got {activation!r}")
    return tuple(_as_choice(str(name), "activation", HIDDEN_ACTIVATIONS) for name in names)


def _as_choice(value, name: str, choices: Sequence[str], context: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}{' ' + context if context else ''}, got {value!r}")
    return value


def _as_batch_size(batch_size, optimizer: str, n_rows: int) -> int:
    if batch_size is None:
        return n_rows if optimizer == "rprop" else 1
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if optimizer == "rprop" and batch_size < n_rows:
        raise ValueError(f"rprop is a full-batch method: leave batch_size=None, not {batch_size} for {n_rows} rows")
    return min(int(batch_size), n_rows)


def _check_optimizer_options(optimizer: str, momentum: float, nesterov: bool, lr_schedule: str, shuffle: bool) -> None:
    """Refuse settings the chosen optimizer would silently ignore."""
    if optimizer != "sgd" and (momentum or nesterov):
        raise ValueError(f"momentum and nesterov apply to optimizer='sgd', not {optimizer!r}")
    if nesterov and not momentum:
        raise ValueError("nesterov=True needs a momentum above 0")
    if optimizer != "sgd" and lr_schedule != "constant":
        raise ValueError(f"lr_schedule applies to optimizer='sgd' (as in scikit-learn), not {optimizer!r}")
    if optimizer == "rprop" and shuffle:
        raise ValueError("rprop trains on the whole data at once, so shuffle would change nothing")


def _update_rule(optimizer: str, momentum: float, nesterov: bool) -> int:
    """The kernels' update rule code for an optimizer and its momentum settings."""
    if optimizer == "adam":
        return ADAM
    if optimizer == "rprop":
        return RPROP
    if momentum == 0.0:
        return SGD
    return NESTEROV if nesterov else MOMENTUM


def _real(value, name: str) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _as_positive(value, name: str) -> float:
    if _real(value, name) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def _as_non_negative(value, name: str) -> float:
    if _real(value, name) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return float(value)


def _as_fraction(value, name: str) -> float:
    if not 0 <= _real(value, name) < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _as_flag(value, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_finite(history: np.ndarray, weights: np.ndarray, first_epoch: int) -> None:
    """Refuse to return a diverged network as if it were trained."""
    bad = np.flatnonzero(~np.isfinite(history))
    if len(bad):
        raise FloatingPointError(
            f"training diverged at epoch {first_epoch + bad[0]}: the loss became {history[bad[0]]}; try a smaller lr"
        )
    if not np.isfinite(weights).all():
        raise FloatingPointError(
            f"training diverged by epoch {first_epoch + len(history) - 1}: "
            "some weights are not finite; try a smaller lr"
        )

"""The public API: validate inputs, train through a :class:`~fastbp._training.Trainer`, evaluate.

Compiled kernels trust their inputs, so everything is checked and converted to
C-contiguous arrays of the network's dtype (:mod:`fastbp._validate`) before any
kernel runs.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import data
from ._layout import initial_weights
from ._model import Model
from ._parallel import as_threads
from ._training import Callback, Options, Trainer
from ._validate import (
    RandomSource,
    as_count,
    as_features,
    as_flag,
    as_labels,
    as_sample_weight,
    as_targets,
)


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
    exact: bool | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    n_threads: int | None = None,
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
    exact : bool or None
        How the online kernels sum each neuron's inputs.  True: in the tutorial's
        order, bit for bit the reference's results.  False: in eight interleaved
        partial sums that run as vector instructions (faster on layers of 8 inputs or
        more; the same bits below that), a fixed order that every backend follows.
        None: exact for ``init="tutorial"`` or ``backend="reference"``, else fast.
        Mini-batches use BLAS either way.
    callback : callable, optional
        ``callback(epoch, loss)`` after every epoch (counted from 0); returning True
        stops training there, and ``history`` ends with that epoch.  Without one,
        epochs run in compiled chunks that never return to Python in between.
    progress : bool
        Show a progress bar over the epochs (tqdm).
    n_threads : int or None
        Threads for mini-batch training and for the forward pass that checks the
        trained network: ``None`` is every core, or ``FASTBP_NUM_THREADS`` /
        ``OMP_NUM_THREADS`` when set.  The weights are the same whatever the count.
        Online training (``batch_size=1``) is sequential; to use several cores, train
        several networks at once (:func:`evaluate` with ``n_jobs``).
    """
    return _prepared(
        X, y, epochs=epochs, sample_weight=sample_weight, seed=seed, classes=classes, callback=callback,
        progress=progress, hidden=hidden, activation=activation, output=output, loss=loss, lr=lr,
        batch_size=batch_size, shuffle=shuffle, optimizer=optimizer, momentum=momentum, nesterov=nesterov, l2=l2,
        lr_schedule=lr_schedule, power_t=power_t, beta1=beta1, beta2=beta2, epsilon=epsilon, init=init, dtype=dtype,
        backend=backend, exact=exact,
    ).run(n_threads)  # fmt: skip


@dataclass
class _Training:
    """A training whose arguments are checked and whose network is initialised: what :func:`train` runs.

    It holds only arrays, names and the trainer, so it pickles to another process.
    """

    trainer: Trainer
    X: np.ndarray
    targets: np.ndarray
    sample_weight: np.ndarray
    epochs: int
    classes: np.ndarray | None
    flat_targets: bool
    callback: Callback | None
    progress: bool

    def run(self, n_threads: int | None = None) -> Model:
        trainer = self.trainer
        n_threads = as_threads(n_threads)
        history = trainer.run(
            self.X, self.targets, self.sample_weight, self.epochs,
            callback=self.callback, progress=self.progress, n_threads=n_threads,
        )  # fmt: skip
        model = Model(
            trainer.layout, trainer.weights, self.classes, history, trainer.backend,
            flat_targets=self.flat_targets, options=trainer.options.to_dict(),
        )  # fmt: skip
        if len(history):
            _warn_if_saturated(model, self.X, self.targets, n_threads)
        return model


def _prepared(
    X, y, *, epochs=500, sample_weight=None, seed=None, classes=None, callback=None, progress=False, **options
) -> _Training:
    """Check :func:`train`'s arguments and initialise the network, drawing from ``seed`` as ``train`` does."""
    options = Options.create(**options)
    X, targets, labels = as_training_data(X, y, options, classes)
    weights_per_row = as_sample_weight(sample_weight, len(X), X.dtype)
    epochs = as_count(epochs, "epochs")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of (epoch, loss), got {callback!r}")
    trainer = new_trainer(options, X.shape[1], targets.shape[1], RandomSource(seed))
    flat_targets = labels is None and np.ndim(y) == 1
    return _Training(
        trainer, X, targets, weights_per_row, epochs, labels, flat_targets, callback, as_flag(progress, "progress")
    )


def _warn_if_saturated(model: Model, X: np.ndarray, targets: np.ndarray, n_threads: int) -> None:
    """Warn when training ended stuck: every sigmoid or softmax output saturated at 0 or 1 for every row.

    Saturated means the slope ``o * (1 - o)``, which scales every sigmoid output's
    delta, is below the dtype's epsilon: the gradient has vanished (about
    ``|a| > 36`` in float64, ``|a| > 16`` in float32) and the network no longer
    learns, which is how a sigmoid network ends when ``lr`` is far too large.  A
    softmax still passes ``p - t`` back, so it counts as stuck only when it is also
    certain and wrong about some row (weights blown up by a huge ``lr``), not when
    it is merely confident.  The check costs one forward pass over the training rows.
    """
    output = model.activations[-1]
    if output not in ("sigmoid", "softmax"):
        return
    out = model.forward(X, n_threads=n_threads)
    epsilon = np.finfo(model.dtype).eps
    stuck = (out * (1 - out) < epsilon).all()
    if output == "softmax":
        stuck = stuck and ((out * targets).sum(axis=1) < epsilon).any()
    if stuck:
        warnings.warn(
            f"training ended at epoch {len(model.history) - 1} with every {output} output saturated at 0 or 1 "
            f"for every training row: its slope fell below the {model.dtype} epsilon, so the gradient vanished "
            "or blew up and the network stopped learning; try a smaller lr, or scale the features",
            RuntimeWarning,
            stacklevel=4,  # the caller of train, through _Training.run
        )


def as_training_data(X, y, options: Options, classes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, the target matrix the kernels fit, and the class labels (None for regression)."""
    dtype = np.dtype(options.dtype)
    X = as_features(X, dtype=dtype)
    if options.output == "identity":
        if classes is not None:
            raise ValueError("classes applies to classifiers; output='identity' trains a regression on numeric y")
        return X, as_targets(y, len(X), dtype), None
    codes, classes = data.encode_labels(as_labels(y, len(X)), classes)
    targets = np.zeros((len(codes), len(classes)), dtype=dtype)
    targets[np.arange(len(codes)), codes] = 1.0
    return X, targets, classes


def new_trainer(options: Options, n_features: int, n_outputs: int, randomness: RandomSource) -> Trainer:
    """A trainer for a freshly initialised network: the tutorial's init draws from the
    ``random.Random`` stream, the others and shuffling from the ``numpy`` one."""
    layout = options.layout(n_features, n_outputs)
    draws = randomness.python() if options.init == "tutorial" else randomness.numpy()
    weights = initial_weights(layout, options.init, draws, options.dtype)
    return Trainer(options, layout, weights, randomness.numpy() if options.shuffle else None)


def evaluate(
    X: ArrayLike,
    y: ArrayLike,
    *,
    folds: int = 5,
    seed: int | random.Random | None = 1,
    protocol: str = "tutorial",
    classes: ArrayLike | None = None,
    n_jobs: int | None = None,
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

    ``n_jobs`` trains the folds in parallel through joblib, with joblib's meaning:
    ``None`` is one at a time unless a ``joblib.parallel_config`` context (a Dask
    cluster, say) says otherwise, ``-1`` is every core.  Every fold's network is
    initialised here, in fold order, before any trains, so the scores are those of
    the serial run; warnings raised while training are re-raised here.
    """
    from joblib import Parallel, delayed

    if protocol != "tutorial":
        raise ValueError(f"protocol must be 'tutorial', got {protocol!r}")
    if train_options.get("output") == "identity":
        raise ValueError("evaluate scores classifiers by accuracy; output='identity' trains a regression")
    if train_options.get("sample_weight") is not None:
        raise ValueError("evaluate does not take sample_weight: it could not follow the rows into the folds")
    if n_jobs is not None and (not isinstance(n_jobs, Integral) or isinstance(n_jobs, bool) or n_jobs == 0):
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core) or None, got {n_jobs!r}")
    X = as_features(X)
    y = as_labels(y, len(X))
    _, classes = data.encode_labels(y, classes)
    if isinstance(seed, np.random.Generator):
        raise TypeError("evaluate's seed must be an integer, a random.Random or None (the tutorial's stream)")
    rng = RandomSource(seed).python()
    split = data.cross_validation_split(len(X), folds, rng)
    trainings = (
        _prepared(X[fit], y[fit], seed=rng, classes=classes, **train_options)
        for fit in (np.concatenate([fold for j, fold in enumerate(split) if j != k]) for k in range(len(split)))
    )  # a generator: joblib draws each fold's network in fold order, as it dispatches them
    results = Parallel(n_jobs=n_jobs)(delayed(_run_keeping_warnings)(training) for training in trainings)
    scores, baseline_scores = [], []
    for k, (test, (model, caught)) in enumerate(zip(split, results, strict=True)):
        for category, message in caught:
            warnings.warn(f"fold {k}: {message}", category, stacklevel=2)
        fit_labels = np.concatenate([y[fold] for j, fold in enumerate(split) if j != k])
        scores.append(data.accuracy(y[test], model.predict(X[test])))
        baseline_scores.append(data.accuracy(y[test], data.zero_rule(fit_labels, len(test))))
    return Evaluation(scores, baseline_scores)


def _run_keeping_warnings(training: _Training) -> tuple[Model, list[tuple[type[Warning], str]]]:
    """Run a training and return its warnings with the model: a worker process would otherwise lose them.

    Each fold is one network in one job, so it trains on one thread: the jobs are the parallelism.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = training.run(n_threads=1)
    return model, [(warning.category, str(warning.message)) for warning in caught]

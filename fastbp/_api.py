"""The public API: validate inputs, train through a :class:`~fastbp._training.Trainer`, evaluate.

Compiled kernels trust their inputs, so everything is checked and converted to
C-contiguous arrays of the network's dtype (:mod:`fastbp._validate`) before any
kernel runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import random
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _lockstep as lockstep
from . import data
from ._concepts import OUTPUTS, documented
from ._layout import initial_weights
from ._model import Model
from ._parallel import as_threads, job_workers, run_jobs
from ._sparse import SparseFeatures
from ._training import Callback, NonFiniteError, Options, ProgressBar, Shuffling, Trainer, check_finite
from ._validate import (
    RandomSource,
    as_count,
    as_features,
    as_inputs,
    as_labels,
    as_progress,
    as_rates,
    as_sample_weight,
    as_targets,
    feature_names_of,
    one_hot,
)
from .layers import Activation, Dense, LayerSpec, activation_name, input_shape_of


@dataclass(frozen=True)
class Evaluation:
    """A cross-validation's result, from :func:`evaluate`: each fold's accuracy in percent.

    Attributes
    ----------
    scores : list of float
        Each fold's accuracy, in fold order.
    baseline_scores : list of float
        The Zero Rule baseline's (the most common training label) on the same folds.
    mean : float
        The mean of ``scores``.
    baseline_mean : float
        The mean of ``baseline_scores``.
    """

    scores: list[float]
    #: The Zero Rule baseline (most common training label) on the same folds.
    baseline_scores: list[float]

    @property
    def mean(self) -> float:
        """The mean of ``scores``."""
        return math.fsum(self.scores) / len(self.scores)  # exactly rounded: equal scores give equal means

    @property
    def baseline_mean(self) -> float:
        """The mean of ``baseline_scores``."""
        return math.fsum(self.baseline_scores) / len(self.baseline_scores)


@documented
def train(
    X: ArrayLike,
    y: ArrayLike,
    *,
    hidden: int | Sequence[int] | None = None,
    activation: str | Sequence[str] | None = None,
    output: str = "sigmoid",
    loss: str | None = None,
    epochs: int = 500,
    lr: float | None = None,
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
    rho: float = 0.9,
    init: str | None = None,
    dtype: DTypeLike = np.float64,
    sample_weight: ArrayLike | None = None,
    seed: int | random.Random | np.random.Generator | None = None,
    classes: ArrayLike | None = None,
    backend: str = "auto",
    exact: bool | None = None,
    callback: Callback | None = None,
    progress: bool | ProgressBar = False,
    n_threads: int | None = None,
    layers: Sequence[LayerSpec] | None = None,
) -> Model:
    """Train a network by backpropagation.

    The defaults are the tutorial's network and training (one hidden sigmoid layer,
    sigmoid outputs, squared error, online SGD at ``lr=0.3``), except ``init``:
    pass ``init="tutorial"`` to reproduce the tutorial's weights exactly.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features) or (n_rows, height, width[, channels])
        Numeric features, or channels-last images for ``layers`` that start with a
        convolution or pooling; converted to a C-contiguous array of ``dtype``.
    y : array-like, shape (n_rows,) or (n_rows, n_targets)
        Class labels of any type, or for ``output="identity"`` or ``"exp"``
        (regression) the numeric targets.
    hidden : int or sequence of int, optional
        Neurons in each hidden layer (default: one layer of 5, the tutorial's).
        Not with ``layers``.
    activation : str or sequence of str, optional
        Hidden layers' activation, one name for all or one per layer (default
        ``"sigmoid"``): <<hidden_activations>>.  Not with ``layers``.
    output : <<output_names>>
        Output units: <<outputs>>.
    loss : <<loss_names>> or None
        <<losses>>.  ``None`` picks the first that fits ``output``: the squared
        error for sigmoid and identity outputs (sigmoid ones take the
        cross-entropy too), the cross-entropy for softmax ones, the Poisson
        deviance for exp ones.
    epochs : int
        Passes over the training rows, at least one.  For
        ``"lbfgs"``, the most iterations (each evaluating the loss over every row
        once or more), which end sooner once it converges: no gradient component
        above 1e-4, or the loss no longer falling.
    lr : float or None
        Learning rate, positive (unused by ``"rprop"`` and ``"lbfgs"``).  ``None``: the
        optimizer's default, 0.3 for ``"sgd"`` (the tutorial's) and 0.001 for ``"adam"``
        and ``"rmsprop"`` (Keras's and scikit-learn's).
    batch_size : int or None
        Rows per update, the gradient being their mean.  ``None``: 1 (online, the
        tutorial's) for ``"sgd"``, ``"adam"`` and ``"rmsprop"``, every row for
        ``"rprop"`` and ``"lbfgs"``, full-batch methods.  Larger than the data means the whole data.
    shuffle : bool
        Visit the rows in a fresh random order each epoch (from ``seed``) instead
        of in the order given.
    optimizer : <<optimizer_names>>
        <<optimizers>>; ``"sgd"`` takes ``momentum`` and ``nesterov``.
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
    power_t : float
        The exponent of the ``"invscaling"`` schedule.
    beta1, beta2, epsilon : float
        Adam's decay rates of the first and second moments, and the term that keeps
        its division finite (``epsilon`` RMSprop's too).
    rho : float in [0, 1)
        RMSprop's decay rate of its average of squared gradients; for ``"rmsprop"`` only.
    init : <<init_names>> or None
        <<inits>>.  All but ``"tutorial"`` draw from a ``numpy.random.Generator``.
        ``None`` (the default) gives each layer its activation's: He for relu
        layers, Glorot for the others.
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
        The online kernels' arithmetic.  True: the tutorial's, bit for bit the
        reference's results (each neuron's inputs summed in order, libm's ``exp``).
        False, the fast mode: eight interleaved partial sums (from 8 inputs; the same
        order below that), and a sigmoid whose ``exp`` is fastbp's own (within 2 units
        in the last place of libm's), computed a layer at a time as vector
        instructions; the same operations in every backend, so the same bits.
        None: exact for ``init="tutorial"`` or ``backend="reference"``, else fast.
        Mini-batches use BLAS and libm either way.  Networks with convolution,
        pooling, dropout or ``Flatten`` layers have one arithmetic, BLAS's and
        libm's: they refuse ``exact=True``.
    callback : callable, optional
        ``callback(epoch, loss)`` after every epoch (counted from 0); returning True
        stops training there, and ``history`` ends with that epoch.  Without one,
        epochs run in compiled chunks that never return to Python in between.
    progress : bool or progress bar
        Show a progress bar over the epochs (tqdm), or advance one of the
        caller's by the epochs as they run (anything with ``update(n)``, such as
        a ``tqdm`` shared by several trainings).  Either moves with each call into
        the kernels, tens of milliseconds of work, not with each epoch.
    n_threads : int or None
        Threads for mini-batch training and for the forward pass that checks the
        trained network: ``None`` is every core, or ``FASTBP_NUM_THREADS`` /
        ``OMP_NUM_THREADS`` when set.  The weights are the same whatever the count.
        Online training (``batch_size=1``) is sequential; to use several cores, train
        several networks at once (:func:`evaluate` with ``n_jobs``).
    layers : list of fastbp.layers layers, optional
        The hidden layers, by Keras's names (:mod:`fastbp.layers`: ``Conv2D``,
        ``MaxPooling2D``, ``Dropout``, ``Flatten``, ``Dense``, ``Activation``), instead
        of ``hidden`` and ``activation``; the output layer follows from ``output``.  A
        layer may also be given as its config, as ``model.options`` keeps it
        (:func:`fastbp.layers.layer_config`).  Such networks train by mini-batches
        (``batch_size=1`` included), cut into chunks of rows whose gradients are summed
        in a fixed order, so the weights do not depend on ``n_threads``; dropout's
        masks are drawn from ``seed``.

    Returns
    -------
    Model
        The trained network; ``model.history`` holds each epoch's summed loss.

    Raises
    ------
    ValueError, TypeError
        An input or option is invalid (checked before any kernel runs; the message
        names it).
    NonFiniteError
        The loss or the weights became infinite or NaN (the message names the
        epoch), or a layer's weighted sums overflowed: a ``FloatingPointError``,
        and a ``ValueError`` too.

    Warns
    -----
    RuntimeWarning
        Training ended with every sigmoid or softmax output saturated at 0 or 1 (the
        gradient vanished; typically ``lr`` is far too large).

    See Also
    --------
    train_many : many networks of one architecture at once.
    evaluate : cross-validate the network ``train`` makes.
    MLPClassifier, MLPRegressor : the same training behind scikit-learn's API.
    """
    return _prepared(
        X, y, epochs=epochs, sample_weight=sample_weight, seed=seed, classes=classes, callback=callback,
        progress=progress, hidden=hidden, activation=activation, output=output, loss=loss, lr=lr,
        batch_size=batch_size, shuffle=shuffle, optimizer=optimizer, momentum=momentum, nesterov=nesterov, l2=l2,
        lr_schedule=lr_schedule, power_t=power_t, beta1=beta1, beta2=beta2, epsilon=epsilon, rho=rho, init=init,
        dtype=dtype, backend=backend, exact=exact, layers=layers,
    ).run(n_threads)  # fmt: skip


@dataclass
class _Training:
    """A training whose arguments are checked and whose network is initialised: what :func:`train` runs.

    It holds only arrays, names and the trainer, so it pickles to another process.
    ``rows`` (intp indices) trains on those rows of the arrays only, in that order:
    the folds and networks of one data set share its arrays instead of copying them.
    """

    trainer: Trainer
    X: np.ndarray
    targets: np.ndarray
    sample_weight: np.ndarray
    epochs: int
    classes: np.ndarray | None
    flat_targets: bool
    callback: Callback | None
    progress: bool | ProgressBar
    feature_names: tuple[str, ...] | None = None
    rows: np.ndarray | None = None
    seed: int | None = None  # the integer seed the network was drawn from; None when none was, or a generator

    def run(self, n_threads: int | None = None) -> Model:
        n_threads = as_threads(n_threads)
        history = self.trainer.run(
            self.X, self.targets, self.sample_weight, self.epochs,
            callback=self.callback, progress=self.progress, n_threads=n_threads, rows=self.rows,
        )  # fmt: skip
        return self.finish(history, n_threads)

    def trained_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The features, targets and sample weights of the rows it trains on (copies where ``rows`` picks them)."""
        if self.rows is None:
            return self.X, self.targets, self.sample_weight
        return self.X[self.rows], self.targets[self.rows], self.sample_weight[self.rows]

    def sibling(self, trainer: Trainer, rows: np.ndarray | None, seed=None) -> _Training:
        """The same data and settings for another network (drawn from ``seed``), on ``rows`` of the shared arrays."""
        return dataclasses.replace(self, trainer=trainer, rows=rows, seed=_integer_seed(seed))

    def finish(self, history: np.ndarray, n_threads: int = 1) -> Model:
        """The trained model, once the trainer has run: refused if it diverged, with a warning if it is stuck."""
        trainer = self.trainer
        check_finite(history, trainer.weights, 0)
        model = Model(
            trainer.layout, trainer.weights, self.classes, history, trainer.backend,
            flat_targets=self.flat_targets, options={**trainer.options.to_dict(), "epochs": self.epochs,
            "seed": self.seed}, feature_names=self.feature_names,
        )  # fmt: skip
        if len(history):
            X, targets, _ = self.trained_rows()
            _warn_if_saturated(model, X, targets, n_threads)
        return model


#: A training's end: its model, or the divergence that stopped it; and the warnings it raised.
_Outcome = tuple["Model | FloatingPointError", list[tuple[type[Warning], str]]]
#: A training run by a job: its trainer (whose weights it trained, sent back from a worker process) and its
#: history, or the divergence that stopped it.
_Trained = tuple[Trainer, "np.ndarray | FloatingPointError"]

#: Held while a training's warnings are recorded: ``warnings.catch_warnings`` swaps process-wide state, which
#: two threads recording at once would leave crossed (the one that leaves last putting back the other's record).
#: The record is brief (a forward pass over a few rows), and still takes what other threads warn meanwhile.
_RECORDING = threading.Lock()


def _outcome(training: _Training, history: np.ndarray | FloatingPointError) -> _Outcome:
    """Finish a training from its ``history``, keeping its warnings and its divergence to pass on: a grid
    search scores a diverged network instead of stopping."""
    if isinstance(history, FloatingPointError):
        return history, []
    with _RECORDING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = training.finish(history)
        except FloatingPointError as error:
            model = error
    return model, [(warning.category, str(warning.message)) for warning in caught]


def _models(outcomes: list[_Outcome], label: str, stacklevel: int = 3) -> list[Model]:
    """The models, after re-raising each one's warnings and its divergence with ``label`` and its index
    (the warnings point ``stacklevel`` frames up: the caller of the public function)."""
    models = []
    for k, (model, caught) in enumerate(outcomes):
        for category, message in caught:
            warnings.warn(f"{label} {k}: {message}", category, stacklevel=stacklevel)
        if isinstance(model, FloatingPointError):
            raise NonFiniteError(f"{label} {k}: {model}")
        models.append(model)
    return models


def _run_together(trainings: list[_Training], n_jobs: int | None = None) -> list[_Outcome]:
    """Run the trainings, in lockstep where they allow it (:func:`_together`), and finish them here, in order.

    ``n_jobs`` None or 1: on this thread.  Otherwise as joblib's jobs
    (:func:`fastbp._parallel.run_jobs`), on threads unless a ``joblib.parallel_config``
    names processes or a Dask cluster (the kernels release the GIL; processes would be
    started and sent the data).  Each job is a part of a lockstep group or one
    training (:func:`_jobs`), every network on one kernel thread: the jobs are the
    parallelism.  The jobs send back trainers and histories, and the models are
    finished here, where their warnings are recorded (a job on a thread could not
    record its own: the record is process-wide).  Each network gets the bits it would
    get alone either way.
    """
    if n_jobs is None or n_jobs == 1:
        jobs = _jobs(trainings, 1)
        done = [_trained([trainings[k] for k in job]) for job in jobs]
    else:
        jobs = _jobs(trainings, job_workers(n_jobs))
        done = run_jobs(_trained, [[trainings[k] for k in job] for job in jobs], n_jobs)
    outcomes: list = [None] * len(trainings)
    for job, results in zip(jobs, done, strict=True):
        for position, (trainer, history) in zip(job, results, strict=True):
            outcomes[position] = _outcome(dataclasses.replace(trainings[position], trainer=trainer), history)
    return outcomes


def _jobs(trainings: list[_Training], workers: int) -> list[list[int]]:
    """Positions of the trainings that each job runs.

    A lockstep group (:func:`_lockstep_groups`) large enough to give every worker
    ``lockstep.MIN_NETWORKS`` networks or more is cut into one part per worker; any
    other training is a job of its own, which keeps every worker busy: lockstep gains
    1.2 to 1.9x over one network at a time (docs' performance page), two workers up to 2x.
    """
    jobs = []
    for group in _lockstep_groups(trainings):
        if len(group) >= workers * lockstep.MIN_NETWORKS and _together([trainings[k] for k in group]):
            bounds = [len(group) * part // workers for part in range(workers + 1)]
            jobs += [group[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            jobs += [[position] for position in group]
    return jobs


def _together(trainings: list[_Training]) -> bool:
    """Whether the trainings run in lockstep: enough networks to pay (``lockstep.MIN_NETWORKS``), online plain
    SGD, the same settings but the learning rate, the same epochs, dense rows, and no callback or progress bar."""
    first = trainings[0]
    return (
        not isinstance(first.X, SparseFeatures)  # the lockstep kernels take dense rows
        and lockstep.can_run([training.trainer for training in trainings])
        and all(training.epochs == first.epochs for training in trainings)
        and not any(training.callback or training.progress for training in trainings)
    )


def _trained(trainings: list[_Training]) -> list[_Trained]:
    """Train, in one lockstep kernel call where :func:`_together` allows, else one after the other: what a job runs.

    Trainings on one data set share its arrays (each network its rows); separate
    arrays are concatenated into one.
    """
    if not _together(trainings):
        return [(training.trainer, _history(training)) for training in trainings]
    first = trainings[0]
    shared = all(
        training.X is first.X and training.targets is first.targets and training.sample_weight is first.sample_weight
        for training in trainings
    )
    if shared:  # one data set: its arrays, each network's rows
        X, targets, sample_weight = first.X, first.targets, first.sample_weight
        rows = [np.arange(len(X), dtype=np.intp) if t.rows is None else t.rows for t in trainings]
    else:  # separate arrays: concatenated
        parts = [training.trained_rows() for training in trainings]
        X, targets, sample_weight = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
        bounds = np.cumsum([0] + [len(part[0]) for part in parts])
        rows = [np.arange(start, stop, dtype=np.intp) for start, stop in zip(bounds[:-1], bounds[1:])]
    trainers = [training.trainer for training in trainings]
    histories = lockstep.run(trainers, X, targets, sample_weight, rows, first.epochs)
    return list(zip(trainers, histories, strict=True))


def _history(training: _Training) -> np.ndarray | FloatingPointError:
    """Run one training on one kernel thread: its history, or the divergence that stopped it."""
    try:
        return training.trainer.run(
            training.X, training.targets, training.sample_weight, training.epochs,
            callback=training.callback, progress=training.progress, rows=training.rows,
        )  # fmt: skip
    except FloatingPointError as error:
        return error


def _prepared(
    X, y, *, epochs=500, sample_weight=None, seed=None, classes=None, callback=None, progress=False, **options
) -> _Training:
    """Check :func:`train`'s arguments and initialise the network, drawing from ``seed`` as ``train`` does."""
    options = Options.create(**options)
    last = options.layers[-1] if options.layers else None
    if isinstance(last, Dense | Activation) and activation_name(last.activation, type(last).__name__) == "softmax":
        raise ValueError(
            f"layers end in a softmax ({type(last).__name__}), an output layer's: fastbp.train makes the output layer "
            "from output= (as many units as y has classes), so list only the hidden layers"
        )
    feature_names = feature_names_of(X)
    X, targets, labels, input_shape = as_training_data(X, y, options, classes)
    weights_per_row = as_sample_weight(sample_weight, len(X), X.dtype)
    epochs = as_count(epochs, "epochs", positive=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of (epoch, loss), got {callback!r}")
    trainer = new_trainer(options, input_shape, targets.shape[1], RandomSource(seed))
    flat_targets = labels is None and np.ndim(y) == 1
    return _Training(
        trainer, X, targets, weights_per_row, epochs, labels, flat_targets, callback, as_progress(progress),
        feature_names, seed=_integer_seed(seed),
    )  # fmt: skip


def _integer_seed(seed) -> int | None:
    """``seed`` as a model's options record it: an integer, or None for no seed or a generator's state."""
    return int(seed) if isinstance(seed, Integral) and not isinstance(seed, bool) else None


#: How many rows, spread over the data, clear a network of being stuck before all rows are checked.
SATURATION_PROBE_ROWS = 16


def _warn_if_saturated(model: Model, X: np.ndarray, targets: np.ndarray, n_threads: int) -> None:
    """Warn when training ended stuck: every sigmoid or softmax output saturated at 0 or 1 for every row.

    Saturated means the slope ``o * (1 - o)``, which scales every sigmoid output's
    delta, is below the dtype's epsilon: the gradient has vanished (about
    ``|a| > 36`` in float64, ``|a| > 16`` in float32) and the network no longer
    learns, which is how a sigmoid network ends when ``lr`` is far too large.  The
    cross-entropy still passes ``p - t`` back, so such outputs count as stuck only
    when they are also certain and wrong about some row (weights blown up by a huge
    ``lr``), not when they are merely confident.

    A few rows spread over the data are checked first, and the rest only when all of
    those are saturated: a healthy network is cleared at almost no cost, where a
    forward pass over every row would add a third of an epoch to each training (and
    more than a whole epoch of mini-batches).
    """
    output = model.activations[-1]
    if output not in ("sigmoid", "softmax"):
        return
    epsilon = np.finfo(model.dtype).eps
    probe = np.unique(np.linspace(0, len(X) - 1, num=min(len(X), SATURATION_PROBE_ROWS)).astype(np.intp))
    sample = model.forward(X[probe], n_threads=1)
    if not (sample * (1 - sample) < epsilon).all():
        return
    out = model.forward(X, n_threads=n_threads)
    stuck = (out * (1 - out) < epsilon).all()
    if model.options["loss"] == "cross_entropy":
        stuck = stuck and (np.abs(out - targets) > 1 - epsilon).any()
    if stuck:
        warnings.warn(
            f"training ended at epoch {len(model.history) - 1} with every {output} output saturated at 0 or 1 "
            f"for every training row: its slope fell below the {model.dtype} epsilon, so the gradient vanished "
            "or blew up and the network stopped learning; try a smaller lr, or scale the features",
            RuntimeWarning,
            stacklevel=5,  # the caller of train, through _Training.run and finish
        )


def as_training_data(
    X, y, options: Options, classes=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """The kernels' feature matrix (images flattened), the target matrix they fit, the class labels (None for
    regression), and the shape of one row of ``X`` (the network's input)."""
    dtype = np.dtype(options.dtype)
    if options.layers is None:
        X = as_features(X, dtype=dtype)
        input_shape = (X.shape[1],)
    else:
        input_shape = input_shape_of(options.layers, X)
        X = as_inputs(X, input_shape, dtype)
    if not OUTPUTS[options.output].classifies:
        if classes is not None:
            raise ValueError(
                f"classes applies to classifiers; output={options.output!r} trains a regression on numeric y"
            )
        targets = as_targets(y, len(X), dtype)
        return X, as_rates(targets) if options.loss == "poisson" else targets, None, input_shape
    codes, classes = data.encode_labels(as_labels(y, len(X)), classes)
    if len(classes) < 2:
        raise ValueError(
            f"y has one class only ({classes.tolist()[0]!r}): a classifier needs samples of at least 2 classes, "
            "or classes= naming the others"
        )
    return X, one_hot(codes, len(classes), dtype), classes, input_shape


def new_trainer(
    options: Options,
    input_shape: int | tuple[int, ...],
    n_outputs: int,
    randomness: RandomSource,
    weights: np.ndarray | None = None,
    initializers: Sequence[tuple[str | None, str | None]] | None = None,
    shuffling: Shuffling | None = None,
) -> Trainer:
    """A trainer for a freshly initialised network on rows of ``input_shape``: the tutorial's init draws from
    the ``random.Random`` stream, the others, the dropout seed and shuffling from the ``numpy`` one; or, given
    ``weights`` (drawn elsewhere, as the estimators draw scikit-learn's), from those.  ``initializers``: the
    Keras initializers of the layers with weights (``initial_weights``'), by default those of the options'
    layers; ``shuffling`` draws the row orders instead (where the options shuffle)."""
    layout = options.layout(input_shape, n_outputs)
    if weights is None:
        draws = randomness.python() if options.init == "tutorial" else randomness.numpy()
        if initializers is None:
            initializers = options.layer_initializers()
        weights = initial_weights(layout, options.init, draws, options.dtype, initializers)
    dropout_seed = int(randomness.numpy().integers(2**63)) if layout.dropout.any() else 0
    if options.shuffle and shuffling is None:
        shuffling = Shuffling(randomness.numpy())
    return Trainer(options, layout, weights, shuffling if options.shuffle else None, dropout_seed)


def train_many(
    X: ArrayLike,
    y: ArrayLike,
    *,
    seeds: Sequence,
    lr: float | Sequence[float] | None = None,
    row_orders: Sequence[ArrayLike] | None = None,
    classes: ArrayLike | None = None,
    n_jobs: int | None = None,
    **train_options,
) -> list[Model]:
    """Train one network per seed, all of one architecture, in lockstep where the options allow.

    Network ``k`` is exactly ``train(X[row_orders[k]], y[row_orders[k]],
    seed=seeds[k], lr=lr[k], classes=..., **train_options)``: its own initial
    weights, learning rate and rows (all of them in order when ``row_orders`` is
    None), and every network has one output per class of ``y`` (or ``classes``).
    With online plain SGD (the tutorial's training, with or without L2, shuffling or
    the invscaling schedule) on a compiled backend, the networks train side by side,
    the loops over them running as vector instructions; other options train them one
    after the other.  Made for grids of learning rates, ensembles and random restarts.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features)
        Numeric features, shared by every network.
    y : array-like, shape (n_rows,) or (n_rows, n_targets)
        Labels, or regression targets, as :func:`train` takes them.
    seeds : sequence
        One seed per network (anything :func:`train` takes as ``seed``).
    lr : float, sequence of float, or None
        One learning rate for all, or one per network; ``None``: the optimizer's
        default, as for :func:`train`.
    row_orders : sequence of 1-D integer arrays, optional
        The rows each network trains on, in the order it visits them each epoch
        (before any shuffling), as indices into ``X``; ``sample_weight``, one per row
        of ``X``, follows them.
    classes : sequence, optional
        Labels in output-neuron order, the same for every network.
    n_jobs : int or None
        ``None`` or 1: one core; otherwise joblib's count (``-1``: every core), the
        networks shared out as :func:`evaluate` shares its folds, each with the same
        bits.
    **train_options
        :func:`train`'s other options, the same for every network.

    Returns
    -------
    list of Model
        One trained network per seed, in order.
    """
    _check_n_jobs(n_jobs)
    seeds = list(seeds) if isinstance(seeds, Sequence | np.ndarray) else None
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence, one seed per network")
    generators = [id(seed) for seed in seeds if isinstance(seed, np.random.Generator)]
    if len(set(generators)) != len(generators):
        raise ValueError(
            "seeds holds one numpy Generator more than once: the networks would share its stream in another order "
            "than trained one by one; give each its own (rng.spawn(n))"
        )
    one = lr is None or np.ndim(lr) == 0 and not isinstance(lr, str | bytes)  # checked as train checks it
    rates = [lr] * len(seeds) if one else lr
    if isinstance(rates, str | bytes) or not isinstance(rates, Sequence | np.ndarray) or len(rates) != len(seeds):
        raise ValueError(f"lr must be a number, None or a sequence of {len(seeds)} numbers (one per seed), got {lr!r}")
    if "seed" in train_options:
        raise TypeError("train_many does not take 'seed': give seeds, one per network")
    _check_option_names(train_options, "train_many", extra=("epochs", "sample_weight"))
    feature_names = feature_names_of(X)
    X = as_features(X)
    sample_weight = train_options.pop("sample_weight", None)
    if row_orders is None:
        row_orders = [np.arange(len(X))] * len(seeds)
    if not isinstance(row_orders, Sequence | np.ndarray) or len(row_orders) != len(seeds):
        raise ValueError(f"row_orders must be a sequence of {len(seeds)} index arrays (one per seed)")
    row_orders = [_as_row_order(rows, len(X), k) for k, rows in enumerate(row_orders)]
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {y.size if y.ndim == 0 else len(y)}")
    first = _prepared(X, y, seed=seeds[0], lr=rates[0], classes=classes, sample_weight=sample_weight, **train_options)
    first.feature_names = feature_names
    trainings = [first.sibling(first.trainer, row_orders[0], seeds[0])]
    settings = {name: value for name, value in train_options.items() if name != "epochs"}
    for seed, rate, rows in zip(seeds[1:], rates[1:], row_orders[1:], strict=True):
        options = Options.create(**{**settings, "lr": rate})
        trainer = new_trainer(options, X.shape[1], first.targets.shape[1], RandomSource(seed))
        trainings.append(first.sibling(trainer, rows, seed))
    return _models(_run_together(trainings, n_jobs), "network")


def _as_row_order(rows, n_rows: int, k: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or len(rows) == 0 or rows.dtype.kind not in "iu":
        raise ValueError(f"row_orders[{k}] must be a non-empty 1-D array of row indices")
    if rows.min() < -n_rows or rows.max() >= n_rows:
        raise ValueError(f"row_orders[{k}] has row indices outside the {n_rows} rows of X")
    return np.where(rows < 0, rows + n_rows, rows).astype(np.intp)  # the kernels take indices as they are


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

    ``n_jobs=None`` (or 1) trains the folds on one core, in lockstep where the
    options allow and there are enough of them (as :func:`train_many`).  Otherwise the
    folds train in parallel through joblib, with its meaning of ``n_jobs`` (``-1`` is
    every core): on threads of this process (the kernels release the GIL), unless a
    ``joblib.parallel_config`` context names a backend of processes (``"loky"``) or a
    Dask cluster (``"dask"``).  Every fold's network is initialised here, in fold
    order, before any trains, so every way gives the same scores; the trained
    networks' warnings are re-raised here.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features)
        Numeric features.
    y : array-like, shape (n_rows,)
        Class labels.
    folds : int
        Number of folds, at least 2; rows left over after equal folds are dropped
        (the tutorial's split).
    seed : int, random.Random or None
        Seeds the stream that draws the split and every fold's network.
    protocol : {"tutorial"}
        The cross-validation protocol; the tutorial's is the only one.
    classes : sequence, optional
        Labels in output-neuron order (default: the sorted labels of ``y``).
    n_jobs : int or None
        ``None`` or 1: one core; otherwise joblib's count (``-1``: every core).
    **train_options
        :func:`train`'s other options, but ``sample_weight`` and ``n_threads`` (each
        fold trains on one thread); a ``callback`` runs on the thread of its fold's job.

    Returns
    -------
    Evaluation
        Each fold's accuracy, and the Zero Rule baseline's.
    """
    _check_n_jobs(n_jobs)
    _check_option_names(train_options, "evaluate", extra=("epochs", "callback", "progress"), refused=_NOT_IN_FOLDS)
    X, y, classes, rng = _evaluation_data(X, y, seed, protocol, classes, train_options)
    split, trainings = _fold_trainings(X, y, folds, rng, classes, train_options)
    return _scored(X, y, split, _models(_run_together(trainings, n_jobs), "fold"))


def _check_n_jobs(n_jobs) -> None:
    if n_jobs is not None and (not isinstance(n_jobs, Integral) or isinstance(n_jobs, bool) or n_jobs == 0):
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core) or None, got {n_jobs!r}")


#: The options of the functions that train many networks (train_many, evaluate, search): those of networks of
#: dense layers; layered networks (``layers``) train by :func:`train` and :class:`fastbp.Sequential`.
_OPTION_NAMES = tuple(name for name in inspect.signature(Options.create).parameters if name != "layers")


#: fastbp.train's options that the functions training many networks refuse, and why.
_NOT_FOR_MANY = {
    "layers": "it trains networks of dense layers (train one with layers by fastbp.train or fastbp.Sequential)",
}


#: fastbp.train's options that cross-validation (evaluate, search) refuses, and why.
_NOT_IN_FOLDS = {"sample_weight": "it could not follow the rows into the folds"}


def _check_option_names(
    options: dict, function: str, extra: tuple[str, ...], refused: dict[str, str] | None = None
) -> None:
    """Refuse names that are not training options here, naming the public function rather than an inner one;
    ``refused``: more of :func:`train`'s options that it takes as None only (their default), with why."""
    refused = {**_NOT_FOR_MANY, **(refused or {})}
    for name, why in refused.items():
        if options.get(name) is not None:
            raise ValueError(f"{function} does not take {name}: {why}")
    unknown = [name for name in options if name not in _OPTION_NAMES and name not in extra and name not in refused]
    if unknown:
        raise TypeError(
            f"{function} got unexpected option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"it takes fastbp.train's options {', '.join((*_OPTION_NAMES, *extra))}"
        )


def _evaluation_data(X, y, seed, protocol: str, classes, train_options: dict):
    """evaluate's checks: its features, labels, classes and the ``random.Random`` stream of the protocol."""
    _check_evaluation_options(protocol, train_options)
    X = as_features(X)
    y = as_labels(y, len(X))
    _, classes = data.encode_labels(y, classes)
    if isinstance(seed, np.random.Generator):
        raise TypeError("evaluate's seed must be an integer, a random.Random or None (the tutorial's stream)")
    return X, y, classes, RandomSource(seed).python()


def _check_evaluation_options(protocol: str, train_options: dict) -> None:
    if protocol != "tutorial":
        raise ValueError(f"protocol must be 'tutorial', got {protocol!r}")
    output = train_options.get("output", "sigmoid")
    if output in OUTPUTS and not OUTPUTS[output].classifies:
        raise ValueError(f"evaluate scores classifiers by accuracy; output={output!r} trains a regression")


def _fold_trainings(X, y, folds: int, rng: random.Random, classes, train_options: dict):
    """The fold split and each fold's training, drawn from ``rng`` in fold order."""
    split = data.cross_validation_split(len(X), folds, rng)
    fits = [np.concatenate([fold for j, fold in enumerate(split) if j != k]).astype(np.intp) for k in range(len(split))]
    first = _prepared(X, y, seed=rng, classes=classes, **train_options)  # checks and converts the data once
    trainings = [first.sibling(first.trainer, fits[0])]
    for fit in fits[1:]:  # each fold's network drawn in fold order; the arrays shared
        trainer = new_trainer(first.trainer.options, X.shape[1], first.targets.shape[1], RandomSource(rng))
        trainings.append(first.sibling(trainer, fit))
    return split, trainings


def _scored(X, y, split, models: list[Model]) -> Evaluation:
    """Each fold's accuracy, and the Zero Rule's."""
    scores, baseline_scores = [], []
    for k, (test, model) in enumerate(zip(split, models, strict=True)):
        fit_labels = np.concatenate([y[fold] for j, fold in enumerate(split) if j != k])
        scores.append(data.accuracy(y[test], model.predict(X[test])))
        baseline_scores.append(data.accuracy(y[test], data.zero_rule(fit_labels, len(test))))
    return Evaluation(scores, baseline_scores)


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` found: every grid point's options and cross-validation, in grid order.

    Attributes
    ----------
    params : list of dict
        Each grid point's options.
    evaluations : list of Evaluation
        Each grid point's cross-validation.
    means : list of float
        Each grid point's mean accuracy in percent (nan where a network diverged).
    best_index : int
        The grid point with the best mean accuracy (the first on ties).
    best_params : dict
        That point's options.
    best_score : float
        That point's mean accuracy.
    """

    params: list[dict]
    evaluations: list[Evaluation]

    @property
    def means(self) -> list[float]:
        """Each grid point's mean accuracy in percent (nan where a network diverged)."""
        return [evaluation.mean for evaluation in self.evaluations]

    @property
    def best_index(self) -> int:
        """The grid point with the best mean accuracy (the first on ties).  Diverged points win only
        when every point diverged: then it is 0, and ``best_score`` is nan."""
        means = np.array(self.means)
        return int(np.argmax(np.where(np.isnan(means), -np.inf, means)))

    @property
    def best_params(self) -> dict:
        """The options of the point at ``best_index``."""
        return self.params[self.best_index]

    @property
    def best_score(self) -> float:
        """The mean accuracy of the point at ``best_index``."""
        return self.means[self.best_index]


def search(
    X: ArrayLike,
    y: ArrayLike,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, object]],
    *,
    folds: int = 5,
    seed: int = 1,
    classes: ArrayLike | None = None,
    n_jobs: int | None = None,
    **train_options,
) -> SearchResult:
    """Cross-validate every point of a grid of :func:`train` options, training whole groups of networks at once.

    ``grid`` maps option names to the values to try (every combination is a point,
    the last name varying fastest) or is a list of option dicts.  Each point gets
    exactly :func:`evaluate`'s result for ``evaluate(X, y, folds=folds, seed=seed,
    **train_options, **point)``: the same split and the same initial networks for
    every point.  The networks of all points that differ only in ``lr`` (and all
    their folds) train together in lockstep where the options allow it (see
    :func:`train_many`).  ``n_jobs`` shares the networks between joblib's jobs as
    :func:`evaluate` shares its folds (threads by default), a large lockstep group
    cut into one part per job, with the same results.  A point whose network
    diverges scores nan, with a warning.

    Parameters
    ----------
    X : array-like, shape (n_rows, n_features)
        Numeric features.
    y : array-like, shape (n_rows,)
        Class labels.
    grid : dict of lists, or list of dicts
        The option values to try: ``{"lr": [0.1, 0.3], "hidden": [5, 10]}`` (four
        points), or ``[{"lr": 0.1}, {"lr": 0.3, "epochs": 100}]``.
    folds : int
        Number of folds, as :func:`evaluate` takes it.
    seed : int
        Seeds the split and the initial networks, the same for every point.
    classes : sequence, optional
        Labels in output-neuron order (default: the sorted labels of ``y``).
    n_jobs : int or None
        ``None`` or 1: one core; otherwise joblib's count (``-1``: every core).
    **train_options
        :func:`train`'s other options (but ``sample_weight`` and ``n_threads``),
        shared by every point; a point's own override them.

    Returns
    -------
    SearchResult
        Every point's options and cross-validation, and the best of them.
    """
    points = _grid_points(grid)
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"search's seed must be an integer (every grid point uses the same split), got {seed!r}")
    seed = int(seed)
    _check_n_jobs(n_jobs)
    _check_option_names(train_options, "search", extra=("epochs", "callback", "progress"), refused=_NOT_IN_FOLDS)
    X, y, classes, _ = _evaluation_data(X, y, seed, "tutorial", classes, train_options)
    splits, trainings, owners, data_by_dtype = [], [], [], {}
    for index, point in enumerate(points):
        _check_option_names(point, "search's grid", extra=("epochs",))
        options = {**train_options, **point}
        _check_evaluation_options("tutorial", options)  # the point's own options, as evaluate checks them
        split, point_trainings = _fold_trainings(X, y, folds, random.Random(seed), classes, options)
        for training in point_trainings:  # the same rows, labels and dtype make the same arrays: keep one
            arrays = data_by_dtype.setdefault(training.X.dtype, (training.X, training.targets, training.sample_weight))
            training.X, training.targets, training.sample_weight = arrays
        splits.append(split)
        trainings += point_trainings
        owners += [(index, fold) for fold in range(len(point_trainings))]
    outcomes = _run_together(trainings, n_jobs)
    evaluations = []
    for index, (point, split) in enumerate(zip(points, splits, strict=True)):
        mine = [outcome for outcome, (owner, _) in zip(outcomes, owners, strict=True) if owner == index]
        evaluations.append(_point_evaluation(X, y, split, mine, point))
    return SearchResult([dict(point) for point in points], evaluations)


def _grid_points(grid) -> list[dict]:
    if isinstance(grid, Mapping) and grid:
        for name, values in grid.items():
            # A list's values may be tuples (``hidden``'s layer sizes, an ``activation`` per layer); an array's are
            # its entries.
            if (
                isinstance(values, str | bytes)
                or not isinstance(values, Sequence | np.ndarray)
                or (isinstance(values, np.ndarray) and values.ndim != 1)
                or len(values) == 0
            ):
                raise ValueError(f"grid[{name!r}] must be a non-empty list of values to try, got {values!r}")
        return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if isinstance(grid, Sequence) and grid and all(isinstance(point, Mapping) for point in grid):
        return [dict(point) for point in grid]
    raise TypeError("grid must map option names to lists of values, or be a list of option dicts, and not be empty")


def _lockstep_groups(trainings: list[_Training]) -> list[list[int]]:
    """Positions of the trainings that can run together: the same options but ``lr``, the same epochs."""
    groups: dict = {}
    for position, training in enumerate(trainings):
        key = (dataclasses.replace(training.trainer.options, lr=1.0), training.epochs, training.X.shape[1])
        groups.setdefault(key, []).append(position)
    return list(groups.values())


def _point_evaluation(X, y, split, outcomes: list[_Outcome], point: dict) -> Evaluation:
    """A grid point's cross-validation; nan scores, with a warning, if one of its networks diverged."""
    diverged = [(k, model) for k, (model, _) in enumerate(outcomes) if isinstance(model, FloatingPointError)]
    if diverged:
        k, error = diverged[0]
        warnings.warn(f"grid point {point}: fold {k}: {error}; it scores nan", RuntimeWarning, stacklevel=3)
        nan = [float("nan")] * len(split)
        return Evaluation(nan, nan)
    return _scored(X, y, split, _models(outcomes, f"grid point {point}: fold", stacklevel=4))

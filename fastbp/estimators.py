"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor` over fastbp's compiled training.

They are drop-in replacements for :mod:`sklearn.neural_network`'s estimators of the
same names: the same parameters with the same defaults, the same fitted attributes,
and the same training loop as scikit-learn's stochastic solvers (``loss_curve_``,
stopping after ``n_iter_no_change`` epochs without improvement, early stopping on a
validation split, the ``"adaptive"`` learning rate) and its L-BFGS, while every epoch,
and every evaluation of the loss, runs in fastbp's kernels.  Where they differ from
scikit-learn, the class docstrings say so.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import warnings
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._param_validation import Options as OneOf
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from ._api import new_trainer
from ._backends import COMPILED
from ._concepts import HIDDEN_ACTIVATIONS, INITS, OPTIMIZER_OPTIONS, OPTIMIZERS
from ._layout import Layout, initial_weights
from ._model import Model, two_classes
from ._parallel import as_threads, one_blas_thread
from ._sparse import SparseFeatures
from ._training import NonFiniteError, Options, Trainer
from ._validate import (
    DTYPES,
    RandomSource,
    all_finite,
    as_dtype,
    as_features,
    as_rates,
    finite_in,
    kernel_array,
    real_numbers,
    refuse_unsafe_features,
)

#: The hidden activations by the names scikit-learn gives them (its "logistic" is the sigmoid), and fastbp's own.
ACTIVATIONS = {"logistic" if name == "sigmoid" else name: name for name in HIDDEN_ACTIVATIONS}
#: The kinds of targets scikit-learn's classifiers take (``check_classification_targets`` refuses the others).
CLASSIFICATION_TARGETS = (
    "binary",
    "multiclass",
    "multiclass-multioutput",
    "multilabel-indicator",
    "multilabel-sequences",
)
#: fastbp's options that a continued network keeps, and the parameters that set them (the solver only where its
#: memory is kept: across ``partial_fit`` calls; a ``warm_start`` fit starts a new one).
FIXED_WHEN_CONTINUING = {
    "hidden": "hidden_layer_sizes",
    "activation": "activation",
    "loss": "loss",
    "dtype": "dtype",
}
#: The precisions the estimators train in, the first for features of any other type.
FLOAT_DTYPES = (np.float64, np.float32)
#: The scipy.sparse formats taken as they are (others are converted to the first): rows of either train with
#: the first layer's work following the nonzeros.
SPARSE_FORMATS = ("csr", "csc")
#: scikit-learn's message for a network whose weights stopped being finite.
NON_FINITE_WEIGHTS = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)
#: The regressor's losses by scikit-learn's names: the output units and the loss they train with, fastbp's.
REGRESSION_LOSSES = {"squared_error": ("identity", "mse"), "poisson": ("exp", "poisson")}
#: scikit-learn's names of output units where they differ from fastbp's (``out_activation_``).
SCIKIT_LEARN_OUTPUTS = {"sigmoid": "logistic"}
#: scikit-learn's "adaptive" schedule stops dividing the learning rate by 5 once it is this small.
SMALLEST_ADAPTIVE_RATE = 1e-6


class _MultilayerPerceptron(BaseEstimator):
    """What both estimators share: parameter checks, the epoch loop, and the fitted attributes."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions(set(OPTIMIZER_OPTIONS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), OneOf(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # The reference backend trains only the tutorial's sigmoid network, never these outputs.
        "backend": [StrOptions({"auto", *COMPILED})],
        "init": [StrOptions(set(INITS)), None],
        "dtype": "no_validation",  # None, or checked by fastbp.train's rules (float64 or float32)
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    #: The score that early stopping watches, and scikit-learn's checks of ``y``; set by each estimator.
    _score_function: staticmethod
    _y_checks: dict
    #: The output units and their loss, fastbp's names, as ``_targets`` sets them for the targets of a fit.
    _output: str
    _loss: str

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> _MultilayerPerceptron:
        """Train the network on ``X`` and ``y`` for up to ``max_iter`` epochs (continuing it with ``warm_start``).

        ``sample_weight`` (times ``class_weight``) is rescaled to mean 1 over the rows
        trained on, because fastbp scales each row's gradient by its weight as given:
        so the weights set how much rows count against each other and leave the
        learning rate alone.  ``alpha`` is weighed against the weights' total, as in
        scikit-learn, where a row of weight 2 counts as that row twice.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)
            Numeric features, trained on in ``dtype`` (``None``: float32 stays float32, others become float64).
        y : array-like, shape (n_rows,) or (n_rows, n_targets)
            Class labels, or regression targets.
        sample_weight : array-like, shape (n_rows,), optional
            Non-negative weight of each row.

        Returns
        -------
        self
        """
        self._check_params()
        return self._fit(X, y, sample_weight, incremental=False)

    def _check_params(self, *, partial_fit: bool = False) -> None:
        """Refuse parameters out of their ranges; a ``partial_fit`` of a fitted estimator checks them only where
        one was set since they were last checked (scikit-learn's checks none then; each check would cost more
        than a small chunk's epoch): set anew, not changed in place (a ``class_weight`` dict's entries)."""
        params = [getattr(self, name) for name in _param_names(type(self))]
        checked = getattr(self, "_checked_params", None)
        if partial_fit and hasattr(self, "_trainer") and checked and all(map(operator.is_, params, checked)):
            return
        self._validate_params()
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        # Checked here so that the messages name this parameter, not fastbp.train's ``hidden``.
        if not sizes or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in sizes):
            why = "" if sizes else ", one at least (fastbp trains networks with a hidden layer)"
            raise ValueError(f"hidden_layer_sizes must be positive integers{why}, got {self.hidden_layer_sizes!r}")
        self._checked_params = params

    def _fit(self, X, y, sample_weight, *, incremental: bool):
        """Fit, or go on fitting; a fit that raises (a network that diverged, bad input) leaves the estimator as
        it was before, fitted or not, rather than half-fitted or with weights that are not finite."""
        before = self._copies(vars(self))
        trainer = getattr(self, "_trainer", None)
        snapshot = None if trainer is None else trainer.snapshot()  # continued trainers share its arrays
        try:
            return self._fit_network(X, y, sample_weight, incremental=incremental)
        except Exception:
            vars(self).clear()
            vars(self).update(before)
            if trainer is not None:
                trainer.restore(snapshot)
            raise

    def _fit_network(self, X, y, sample_weight, *, incremental: bool):
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        # A network goes on from the last fit's, or from coefs_ and intercepts_ assigned before any (as
        # scikit-learn's own tests set one up).
        assigned = not hasattr(self, "_trainer") and hasattr(self, "coefs_")
        continuing = (hasattr(self, "_trainer") or assigned) and (incremental or self.warm_start)
        dtype = self._dtype(continuing and not assigned)
        refuse_unsafe_features(X)
        X, y = validate_data(self, X, y, reset=not continuing, dtype=dtype or FLOAT_DTYPES, multi_output=True,
                             accept_sparse=SPARSE_FORMATS, **self._y_checks)  # fmt: skip
        if sparse.issparse(y) and not is_classifier(self):  # a classifier's stays, to predict sparse labels as given
            y = y.toarray()  # a regression's targets: dense, as they train
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        dtype = dtype or X.dtype
        X = as_features(X, dtype=dtype)
        targets = self._targets(y, dtype, continuing=continuing, incremental=incremental)
        if continuing and assigned:
            self._trainer = self._assigned_network(X.shape[1], targets.shape[1], dtype)
        elif continuing:
            self._read_back_weights()
        if sample_weight is not None and not isinstance(sample_weight, Real):  # dates would count their unit
            sample_weight = real_numbers(sample_weight, "sample_weight")
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        weights = self._weigh_classes(sample_weight, y, targets, incremental)
        # scikit-learn's draws from random_state, in its order: the initial weights, the validation split, then
        # each epoch's order of the rows (the tutorial's init draws from its own stream, seeded first).
        random_state = check_random_state(self.random_state)
        initial = None if continuing else self._initial_weights(X.shape[1], targets.shape[1], dtype, random_state)
        tutorial_seed = int(random_state.randint(np.iinfo(np.int32).max)) if initial is None and not continuing else 0
        X, targets, weights, validation = self._split(X, y, targets, weights, sample_weight, random_state)
        shuffling = _ScikitLearnShuffling(random_state)
        if not weights.any():
            raise ValueError("the sample weights of the rows trained on are all zero")
        weight_mean = weights.mean()
        options = self._options(len(X), weight_mean, dtype)
        weights = kernel_array(weights / weight_mean, dtype, "sample_weight")
        if continuing:
            keep_rate = incremental and self.solver == "sgd" and self.learning_rate == "adaptive"
            trainer = _continued(
                self._trainer, options, targets.shape[1], shuffling, incremental=incremental, keep_rate=keep_rate
            )
        else:
            randomness = RandomSource(tutorial_seed)
            trainer = new_trainer(options, X.shape[1], targets.shape[1], randomness, initial, shuffling=shuffling)
        if not continuing or assigned:
            self._start_counters(trainer)
        elif self._early_stopping != (self.validation_scores_ is not None):  # set_params changed the rule
            self._start_stopping_rule(trainer)
        self._trainer = trainer
        if self.solver == "lbfgs":
            self._train_lbfgs(trainer, X, targets, weights)
        else:
            self._train_epochs(trainer, X, targets, weights, validation, incremental=incremental)
        if self._early_stopping:
            trainer.weights[:] = self._best_weights
        # Each fit shuffles anew from random_state (scikit-learn's): the order kept would only make pickles larger
        # (a position a row), and restoring it after a failed fit would rewind the caller's random state.
        trainer.shuffle = None
        self._publish(trainer)
        return self

    def _initial_weights(self, n_features: int, n_outputs: int, dtype: np.dtype, random_state) -> np.ndarray | None:
        """A new network's weights, drawn from ``random_state`` before anything else, as scikit-learn's
        ``_initialize`` draws them: with ``init="sklearn"`` its very numbers.  (``"tutorial"`` draws from
        ``random.Random``, in ``new_trainer``.)"""
        if self.init == "tutorial":
            return None
        return initial_weights(self._architecture(dtype).layout(n_features, n_outputs), self.init, random_state, dtype)

    def _architecture(self, dtype: np.dtype) -> Options:
        """The network these parameters describe (its layers, output units and loss) and its solver, with
        fastbp's other options at their defaults."""
        return Options.create(optimizer=self.solver, **self._network_settings(dtype))

    def _network_settings(self, dtype: np.dtype) -> dict:
        """fastbp's options that describe the network: its layers, output units, loss, precision and kernels."""
        return {
            "hidden": self.hidden_layer_sizes, "activation": ACTIVATIONS[self.activation], "output": self._output,
            "loss": self._loss, "dtype": dtype, "backend": self.backend,
        }  # fmt: skip

    def _assigned_network(self, n_features: int, n_outputs: int, dtype: np.dtype) -> Trainer:
        """A network of the weights assigned to ``coefs_`` and ``intercepts_``, for the architecture the
        parameters and the data give."""
        options = self._architecture(dtype)
        layout = options.layout(n_features, n_outputs)
        trainer = Trainer(options, layout, np.zeros(layout.n_weights, dtype=dtype), None)
        self._read_back_weights(trainer)
        return trainer

    def _read_back_weights(self, trainer: Trainer | None = None) -> None:
        """Copy into the network's weights every array of ``coefs_`` and ``intercepts_`` that is not a view of
        them (one assigned, or unpickled); the next fit makes them views again.

        So assigning them (or writing into them) changes predictions and further
        training, as in scikit-learn, whose weights are those arrays.
        """
        trainer = trainer or self._trainer
        coefs, intercepts = self._views_of(trainer)
        for name, current, views in (("coefs_", self.coefs_, coefs), ("intercepts_", self.intercepts_, intercepts)):
            if len(current) != len(views):
                raise ValueError(f"{name} has {len(current)} arrays, for a network of {len(views)} layers")
            for layer, (array, view) in enumerate(zip(current, views)):
                if array is view:  # as published: the weights themselves
                    continue
                array = real_numbers(array, f"{name}[{layer}]")
                if array.shape != view.shape:
                    raise ValueError(f"{name}[{layer}] has shape {array.shape}, where the network takes {view.shape}")
                view[...] = finite_in(array, view.dtype, f"{name}[{layer}]")

    def _views_of(self, trainer: Trainer) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``coefs_`` and ``intercepts_`` as views of ``trainer``'s weights: the very arrays published, so that
        telling them from assigned ones takes an identity check, or new views of another trainer's."""
        published = vars(self).get("_views")
        if published is not None and published[0] is trainer.weights:
            return published[1], published[2]
        return _weight_views(trainer)

    def _published_views(self, trainer: Trainer) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """New views of ``trainer``'s weights as ``coefs_`` and ``intercepts_``, kept for :meth:`_views_of`."""
        coefs, intercepts = _weight_views(trainer)
        self._views = (trainer.weights, coefs, intercepts)
        return coefs, intercepts

    def _relink_views(self, trainer: Trainer) -> None:
        """Publish views of ``trainer``'s weights again, and put them in ``coefs_`` and ``intercepts_`` in place of
        the arrays that hold their very bytes (pickle copies views: unpickled, they would be read back at every
        prediction)."""
        coefs, intercepts = self._published_views(trainer)
        self.coefs_, self.intercepts_ = (
            [view if _same_bytes(array, view) else array for array, view in zip(current, views)]
            if isinstance(current, list) and len(current) == len(views)
            else current
            for current, views in ((self.coefs_, coefs), (self.intercepts_, intercepts))
        )  # new lists: a shallow copy's, or another object's, stay as they are

    def _dtype(self, continuing: bool) -> np.dtype | None:
        """The precision to train in: ``dtype``'s; else a continued network's; else ``None``, for the input's
        (float32 stays float32, anything else becomes float64, as scikit-learn's parameters follow ``X``)."""
        if self.dtype is not None:
            return as_dtype(self.dtype)
        return np.dtype(self._trainer.options.dtype) if continuing else None

    def _options(self, n_rows: int, weight_mean: float, dtype: np.dtype) -> Options:
        """fastbp's training options for these parameters, on ``n_rows`` rows of mean sample weight ``weight_mean``,
        in ``dtype``.

        scikit-learn adds ``alpha * w`` to the batch's gradient summed over rows (times
        their weights) and divides both by the batch's total weight; fastbp divides the
        summed gradient by the batch's size, after the weights are scaled to mean 1,
        and adds ``l2 * w``.  So ``l2`` is ``alpha`` over the batch's expected total
        weight: exactly scikit-learn's update when the batch is all the rows, or the
        weights are all equal.  Momentum and the learning-rate schedule apply to
        ``"sgd"`` only, as there.
        """
        full_batch, sgd = OPTIMIZERS[self.solver].full_batch, self.solver == "sgd"
        batch_size = n_rows if full_batch else self._batch_size(n_rows)
        return Options.create(
            **self._network_settings(dtype),
            lr=self.learning_rate_init,
            batch_size=None if full_batch else batch_size,
            shuffle=self.shuffle and not full_batch,  # a full batch has no order to shuffle
            optimizer=self.solver,
            momentum=self.momentum if sgd else 0.0,
            nesterov=sgd and self.nesterovs_momentum and self.momentum > 0,
            l2=self.alpha / (batch_size * weight_mean),
            lr_schedule="invscaling" if sgd and self.learning_rate == "invscaling" else "constant",
            power_t=self.power_t,
            beta1=self.beta_1,
            beta2=self.beta_2,
            epsilon=self.epsilon,
            init=self.init,
        )

    def _batch_size(self, n_rows: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_rows)
        if self.batch_size > n_rows:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=5
            )
        return min(self.batch_size, n_rows)

    def _split(self, X, y, targets, weights, sample_weight, random_state):
        """The rows to train on, their targets and ``weights``, and with ``early_stopping`` the held-out ``(X, y,
        sample_weight)`` it scores (weighed by ``sample_weight`` alone: the class weights weigh the training
        loss, as scikit-learn's ``SGDClassifier`` keeps them)."""
        if not self._early_stopping:
            return X, targets, weights, None
        # As scikit-learn: classifiers of one output only (binary problems), by whether each label is the second
        # class (its messages name the classes True and False).
        stratify = targets > 0.5 if is_classifier(self) and targets.shape[1] == 1 else None
        if self.validation_fraction == 0:
            raise ValueError("validation_fraction=0.0 holds out no rows for early_stopping=True to validate on")
        train, held_out = train_test_split(
            np.arange(len(X)), test_size=self.validation_fraction, random_state=random_state, stratify=stratify
        )
        if len(held_out) < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        return X[train], targets[train], weights[train], (X[held_out], y[held_out], sample_weight[held_out])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_views", None)  # made again when unpickled: joblib would store the weights twice more
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "model_" in vars(self):  # pickled before model_ read coefs_ back: the same model
            self._model = vars(self).pop("model_")
        # One weight buffer for model_ and the trainer, as fitted: unpickled from a memory map (joblib's), each
        # took a copy of its own.
        trainer, model = vars(self).get("_trainer"), vars(self).get("_model")
        if trainer is not None and model is not None and model._weights is not trainer.weights:
            model._weights = trainer.weights
        vars(self).pop("_views", None)  # any pickled are copies now, not views: made anew below
        if trainer is not None and "coefs_" in vars(self):
            self._relink_views(trainer)

    @property
    def model_(self) -> Model:
        """The trained network as a :class:`fastbp.Model` (for ``model_.save(path)``), sharing the estimator's
        weights: arrays assigned to ``coefs_`` or ``intercepts_`` are read into them first."""
        if "_model" not in vars(self):
            raise AttributeError(f"{type(self).__name__} has no model_ until it is fitted")
        self._read_back_weights()
        return self._model

    @property
    def _early_stopping(self) -> bool:
        """Whether a validation split stops training: ``early_stopping`` applies to the stochastic solvers only,
        as in scikit-learn."""
        return self.early_stopping and self.solver != "lbfgs"

    def _start_counters(self, trainer: Trainer) -> None:
        """Fresh loss curve and stopping state, as scikit-learn's ``_initialize``."""
        self.loss_curve_ = []
        self._summed_losses = []
        self._start_stopping_rule(trainer)

    def _start_stopping_rule(self, trainer: Trainer) -> None:
        """Fresh state for the rule that stops training: the validation score with early stopping, else the
        loss (also where a continued fit's ``early_stopping`` changed, which scikit-learn cannot follow)."""
        self._no_improvement_count = 0
        # Only early stopping returns to the best weights; otherwise a copy would only make pickles larger.
        self._best_weights = trainer.weights.copy() if self._early_stopping else None
        if self._early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _train_epochs(self, trainer: Trainer, X, targets, weights, validation, *, incremental: bool) -> None:
        """scikit-learn's ``_fit_stochastic`` loop: fastbp's epochs, then each one's bookkeeping (``partial_fit``
        trains one epoch).

        Mini-batches of dense rows train several epochs a kernel call: as many as can pass
        before the stopping rule may act (each epoch adds one at most to the count of
        epochs without progress), so every stop, and every lowered adaptive rate, falls
        where it would one epoch a call; at most about ``CHUNK_WORK`` weight updates
        (``EpochRunner.most_epochs``), so Ctrl-C is honoured as often as in
        :func:`fastbp.train`.  The kernel hands back the weights each epoch starts from,
        which give the epoch before its end weights, for early stopping's validation
        score, and its start's, for the ``alpha`` penalty.  A call that diverges is taken
        again one epoch at a time, to name the epoch.
        """
        batch_size = trainer.options.batch_size or len(X)
        n_batches = -(-len(X) // batch_size)
        # scikit-learn's loss_ adds 0.5 * alpha * sum(coefs**2) over each batch's total weight, times the batch's
        # rows, and averages over the epoch's rows; alpha over a batch's total weight is l2 (see _options).
        penalty_scale = 0.5 * trainer.options.l2 * batch_size * n_batches / len(X)
        threads = as_threads(self.n_threads)
        train_epochs = trainer.epoch_runner(X, targets, weights, n_threads=threads)
        held_out = None if validation is None else _HeldOut.scoring(trainer, *validation, n_threads=threads)
        several = True
        max_epochs = 1 if incremental else self.max_iter
        self.n_iter_ = 0
        epoch_start = None  # the bookkeeping and weights an unfinished call began from
        try:
            with one_blas_thread():  # set once for every epoch, where each kernel call would set it and give it back
                while self.n_iter_ < max_epochs:
                    n_epochs = 1
                    if several:
                        before_rule = self.n_iter_no_change + 1 - self._no_improvement_count
                        n_epochs = max(1, min(before_rule, max_epochs - self.n_iter_, train_epochs.most_epochs))
                    # Ctrl-C may land anywhere in a call: the estimator then goes back to where the call began.
                    epoch_start = self._bookkeeping(), trainer.snapshot()
                    try:
                        keep_starts = penalty_scale != 0 or (held_out is not None and n_epochs > 1)
                        summed_losses, starts = train_epochs(n_epochs, keep_starts=keep_starts)
                    except NonFiniteError:
                        if n_epochs > 1:  # again one epoch a call, to find the one that diverged
                            trainer.restore(epoch_start[1])
                            several = False
                            continue
                        if not self.early_stopping:
                            raise _diverged(self.n_iter_ + 1, "a smaller learning_rate_init") from None
                        self._record_divergence()  # the best weights so far are the result, as in scikit-learn
                        break
                    for epoch, summed_loss in enumerate(summed_losses.tolist()):
                        # At the weights each batch starts from; the epoch's first stand in for all (exact for one
                        # batch).
                        penalty = (
                            0.0
                            if penalty_scale == 0
                            else penalty_scale * _squared_coefficients(trainer.layout, starts[epoch])
                        )
                        self.n_iter_ += 1
                        self._summed_losses.append(summed_loss)
                        self.loss_ = self._mean_loss(summed_loss, targets.shape) + penalty
                        self.loss_curve_.append(self.loss_)
                        if self.verbose:
                            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                        ended = None
                        if held_out is not None:  # the epoch's end weights: the next one's start, or the weights now
                            ended = starts[epoch + 1] if epoch + 1 < len(summed_losses) else trainer.weights
                        self._count_no_improvement(held_out, ended)
                    self.t_ = trainer.rows_seen
                    epoch_start = None  # the call's epochs are complete: a Ctrl-C from here on keeps them
                    if self._no_improvement_count > self.n_iter_no_change and not self._lower_rate(trainer):
                        break
                    if self.n_iter_ == self.max_iter and not incremental:
                        warnings.warn(
                            f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                            "hasn't converged yet.",
                            ConvergenceWarning,
                            stacklevel=4,
                        )
        except KeyboardInterrupt:
            if epoch_start is not None:
                bookkeeping, snapshot = epoch_start
                trainer.restore(snapshot)
                self._go_back(*bookkeeping)
            warnings.warn(
                "Training interrupted by user: the fit is the one of the epochs in loss_curve_.", stacklevel=4
            )

    #: The attributes an epoch's bookkeeping changes (with the trainer's weights, memory and counters).
    _EPOCH_ATTRIBUTES = (
        "n_iter_", "t_", "loss_", "loss_curve_", "_summed_losses", "validation_scores_", "best_validation_score_",
        "best_loss_", "_no_improvement_count", "_best_weights",
    )  # fmt: skip

    def _bookkeeping(self) -> tuple[dict, dict]:
        """The attributes an epoch changes, to go back to: the values it replaces, and the lengths of the lists
        it appends to (copies would cost each epoch as much as the epochs before it)."""
        present = {name: getattr(self, name) for name in self._EPOCH_ATTRIBUTES if hasattr(self, name)}
        values = {name: value for name, value in present.items() if not isinstance(value, list)}
        return values, {name: len(value) for name, value in present.items() if isinstance(value, list)}

    def _go_back(self, values: dict, lengths: dict) -> None:
        """Back to the attributes of :meth:`_bookkeeping`."""
        self.__dict__.update(values)
        for name, length in lengths.items():
            del getattr(self, name)[length:]

    def _copies(self, names) -> dict:
        """The attributes of ``names`` that the estimator has, as they are now: lists and arrays copied (a fit
        appends to the lists), other values as they are (a fit replaces them)."""
        saved = {name: getattr(self, name) for name in names if hasattr(self, name)}
        return {name: value.copy() if isinstance(value, list | np.ndarray) else value for name, value in saved.items()}

    def _train_lbfgs(self, trainer: Trainer, X, targets, weights) -> None:
        """scikit-learn's ``_fit_lbfgs``: L-BFGS over all the rows, for up to ``max_iter`` iterations and
        ``max_fun`` evaluations of the loss, until no gradient component exceeds ``tol``.

        ``loss_curve_`` gets the loss after each iteration (scikit-learn keeps none for
        this solver), ``loss_`` the final one; both add ``alpha``'s penalty, which over
        all the rows is ``0.5 * l2 * sum(coefs**2)`` (see ``_options``).
        """
        first = len(self.loss_curve_)  # a warm_start fit's curve goes on
        self.t_ = trainer.rows_seen  # L-BFGS counts no rows (scikit-learn's stays 0)

        def iteration_done(_iteration: int, summed_loss: float) -> None:
            self._summed_losses.append(summed_loss)
            self.loss_curve_.append(self._lbfgs_loss(trainer, summed_loss, targets.shape))
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {self.loss_curve_[-1]:.8f}")

        try:
            result = trainer.minimize(
                X, targets, weights, self.max_iter, max_fun=self.max_fun, tol=self.tol, callback=iteration_done
            )
        except NonFiniteError:
            raise _diverged(len(self.loss_curve_) - first + 1, "another solver") from None
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
            self.n_iter_ = len(self.loss_curve_) - first
            self.loss_ = self.loss_curve_[-1] if self.n_iter_ else np.nan
            return
        self.n_iter_ = min(result.iterations, self.max_iter)
        self.loss_ = self._lbfgs_loss(trainer, result.loss, targets.shape)
        if not result.converged:
            advice = ""
            if self.n_iter_ == self.max_iter:
                advice = f"\nIncrease the number of iterations to improve the convergence (max_iter={self.max_iter})."
            warnings.warn(
                f"lbfgs failed to converge after {self.n_iter_} iteration(s): {result.message}{advice}",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _lbfgs_loss(self, trainer: Trainer, summed_loss: float, targets_shape: tuple[int, int]) -> float:
        """scikit-learn's ``loss_`` at the trainer's weights, from the kernels' summed loss there."""
        penalty = 0.5 * trainer.options.l2 * _squared_coefficients(trainer.layout, trainer.weights)
        return self._mean_loss(summed_loss, targets_shape) + penalty

    def _record_divergence(self) -> None:
        """With early stopping, an epoch whose weights stopped being finite: a ``nan`` loss and validation score,
        and no more epochs (scikit-learn trains on with ``nan`` weights until ``max_iter``, to the same end)."""
        self.n_iter_ += 1
        self.loss_ = np.nan
        self.loss_curve_.append(self.loss_)
        self._summed_losses.append(np.nan)
        self.validation_scores_.append(np.nan)

    def _count_no_improvement(self, held_out: _HeldOut | None, weights: np.ndarray | None) -> None:
        """Count epochs without progress by ``tol``: with early stopping in the validation score of the epoch's
        end ``weights``, else (``held_out`` and ``weights`` None) in the loss."""
        if held_out is None:
            if self.loss_ > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, self.loss_)
            return
        try:
            outputs = held_out.outputs(weights)
        except NonFiniteError:  # outputs past the float range: no score, as scikit-learn's nan
            score = np.nan
        else:
            predictions = self._predictions(outputs)
            score = float(self._score_function(held_out.y, predictions, sample_weight=held_out.sample_weight))
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_weights = weights.copy()

    def _lower_rate(self, trainer: Trainer) -> bool:
        """After too many epochs without progress: divide an adaptive rate by 5 and go on, or say stop."""
        subject = "Validation score" if self.early_stopping else "Training loss"
        patience = f"tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs"
        message = f"{subject} did not improve more than {patience}."
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        if adaptive and trainer.options.lr > SMALLEST_ADAPTIVE_RATE:
            trainer.options = dataclasses.replace(trainer.options, lr=trainer.options.lr / 5.0)
            self._no_improvement_count = 0
            if self.verbose:
                print(f"{message} Setting learning rate to {trainer.options.lr:f}")
            return True
        if self.verbose:
            print(f"{message}{' Learning rate too small.' if adaptive else ''} Stopping.")
        return False

    def _publish(self, trainer: Trainer) -> None:
        """The fitted attributes, all over the trainer's weights: ``coefs_`` and ``intercepts_`` are views of
        them, and ``model_`` shares them."""
        self._model = Model(
            trainer.layout,
            trainer.weights,
            self._model_classes(),
            np.array(self._summed_losses),
            trainer.backend,
            flat_targets=trainer.layout.sizes[-1] == 1,
            options=trainer.options.to_dict(),
            feature_names=getattr(self, "feature_names_in_", None),
        )
        coefs, intercepts = self._published_views(trainer)
        self.coefs_, self.intercepts_ = list(coefs), list(intercepts)
        self.n_layers_ = len(self._model.sizes)
        self.n_outputs_ = self._model.sizes[-1]
        self.out_activation_ = SCIKIT_LEARN_OUTPUTS.get(self._output, self._output)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row, or the predicted targets.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)

        Returns
        -------
        ndarray, shape (n_rows,) or (n_rows, n_targets)
            Labels; or targets, 1-D for a single output.
        """
        return self._predictions(self._outputs(X))

    def _outputs(self, X) -> np.ndarray:
        """The output units' values for each row of ``X``, after scikit-learn's input checks."""
        if "_model" not in vars(self):
            check_is_fitted(self)
        if not self._passes_as_is(X):
            refuse_unsafe_features(X)
            X = validate_data(self, X, reset=False, dtype=FLOAT_DTYPES, accept_sparse=SPARSE_FORMATS)
        return self.model_.forward(X, n_threads=self.n_threads)

    def _passes_as_is(self, X) -> bool:
        """Whether scikit-learn's input checks would pass ``X`` as it is: a finite float64 or float32 array of the
        fitted width, for an estimator fitted without column names.  They take about 100 us a call, more than the
        network takes for a few rows; anything else goes through them, and gets their errors and warnings."""
        return (
            type(X) is np.ndarray
            and X.dtype in DTYPES
            and X.ndim == 2
            and len(X) > 0
            and X.shape[1] == getattr(self, "n_features_in_", None)
            and "feature_names_in_" not in vars(self)
            and all_finite(X)
        )


class _ScikitLearnShuffling:
    """scikit-learn's order of the rows in each epoch of a fit: its ``random_state`` shuffles the positions (as
    ``sklearn.utils.shuffle`` does), then takes the last epoch's order in that order, so the same
    ``random_state`` gives scikit-learn's mini-batches.  A fit's first epoch shuffles the rows in order, as each
    of scikit-learn's ``fit`` and ``partial_fit`` calls starts from them."""

    def __init__(self, random_state: np.random.RandomState):
        self.random_state = random_state
        self.order: np.ndarray | None = None

    def orders(self, n_epochs: int, n_rows: int) -> np.ndarray:
        """The next ``n_epochs`` epochs' orders, one row of positions each."""
        order = np.arange(n_rows, dtype=np.intp) if self.order is None else self.order
        orders = np.empty((n_epochs, n_rows), dtype=np.intp)
        for epoch in range(n_epochs):
            positions = np.arange(n_rows)
            self.random_state.shuffle(positions)
            order = orders[epoch] = order[positions]
        self.order = order.copy()
        return orders

    @property
    def state(self) -> tuple:
        """Where the draws stand, to go back to (``Trainer.snapshot``)."""
        return self.random_state.get_state(), self.order

    @state.setter
    def state(self, state: tuple) -> None:
        random_state, self.order = state
        self.random_state.set_state(random_state)


@dataclasses.dataclass(frozen=True)
class _HeldOut:
    """Early stopping's held-out rows (``X``, checked), their labels or targets ``y`` and ``sample_weight``, and a
    network built once to score each epoch's weights on them: the weights are copied into its buffer."""

    X: np.ndarray | SparseFeatures
    y: np.ndarray
    sample_weight: np.ndarray
    network: Model
    n_threads: int

    @classmethod
    def scoring(cls, trainer: Trainer, X, y, sample_weight, *, n_threads: int) -> _HeldOut:
        """The rows, scored by ``trainer``'s network on ``n_threads`` threads in the arithmetic the estimator
        will predict with (its options' ``exact``), as ``predict`` and ``score`` do."""
        options = trainer.options.to_dict()
        network = Model(trainer.layout, trainer.weights.copy(), None, np.empty(0), trainer.backend, options=options)
        return cls(X, y, sample_weight, network, n_threads)

    def outputs(self, weights: np.ndarray) -> np.ndarray:
        """The network's outputs on the rows with ``weights``."""
        self.network._weights[:] = weights
        return self.network._forward_checked(self.X, self.n_threads)


@functools.cache
def _param_names(estimator_class: type) -> list[str]:
    """An estimator class's parameters, as ``get_params`` names them (found by inspecting its constructor)."""
    return estimator_class._get_param_names()


def _stochastic_solver(estimator: _MultilayerPerceptron) -> bool:
    """``partial_fit`` exists for the solvers that train epoch by epoch, as in scikit-learn (not for its
    ``"lbfgs"``)."""
    if estimator.solver == "lbfgs":
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. {estimator.solver} is not stochastic."
        )
    return True


def _accuracy(y_true, y_pred, *, sample_weight: np.ndarray | None = None) -> float:
    """``accuracy_score``'s value: for one label per row, of the predictions' type, the weighted share predicted
    right, computed as it computes it (numpy's ``average``), without its input checks, which take about 1 ms,
    longer than a small network's epoch (early stopping scores every epoch)."""
    if _checked_already(y_true, y_pred, sample_weight) and y_true.ndim == 1 and y_true.dtype == y_pred.dtype:
        return float(np.average(y_true == y_pred, weights=sample_weight))
    return accuracy_score(y_true, y_pred, sample_weight=sample_weight)


def _r2(y_true, y_pred, *, sample_weight: np.ndarray | None = None) -> float:
    """``r2_score``'s value (averaged over the outputs, 1 for a perfect fit and 0 for a constant target missed):
    for arrays of numbers, computed in float64 as it computes it, without its input checks (see
    :func:`_accuracy`)."""
    if not (_checked_already(y_true, y_pred, sample_weight) and y_true.dtype.kind in "fiu" and len(y_true) > 1):
        return r2_score(y_true, y_pred, sample_weight=sample_weight)
    truth, predicted = (np.asarray(values, dtype=np.float64).reshape(len(y_true), -1) for values in (y_true, y_pred))
    weight = 1.0 if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[:, None]
    numerator = np.sum(weight * (truth - predicted) ** 2, axis=0)
    denominator = np.sum(weight * (truth - np.average(truth, axis=0, weights=sample_weight)) ** 2, axis=0)
    scores = np.ones(truth.shape[1])
    fitted = (numerator != 0) & (denominator != 0)
    scores[fitted] = 1 - numerator[fitted] / denominator[fitted]
    scores[(numerator != 0) & (denominator == 0)] = 0.0
    return float(np.average(scores))


def _checked_already(y_true, y_pred, sample_weight) -> bool:
    """Whether a score's inputs are what scikit-learn's checks would pass unchanged: arrays of one shape (one or two
    axes), finite where they are floats, and no sample weights or a finite float weight per row."""
    arrays = (y_true, y_pred) if sample_weight is None else (y_true, y_pred, sample_weight)
    return (
        all(type(array) is np.ndarray and (array.dtype.kind != "f" or all_finite(array)) for array in arrays)
        and y_true.ndim in (1, 2) and y_pred.shape == y_true.shape
        and (sample_weight is None or sample_weight.dtype.kind == "f" and sample_weight.shape == y_true.shape[:1])
    )  # fmt: skip


def _weight_views(trainer: Trainer) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """scikit-learn's ``coefs_`` (``(n_in, n_out)`` per layer) and ``intercepts_`` as views of the trainer's
    weights."""
    blocks = trainer.layout.layer_views(trainer.weights)
    return [block[:, :-1].T for block in blocks], [block[:, -1] for block in blocks]


def _same_bytes(array, view: np.ndarray) -> bool:
    """Whether ``array`` is a plain or memory-mapped array of ``view``'s type and shape holding its very bytes."""
    return (
        type(array) in (np.ndarray, np.memmap)
        and array.dtype == view.dtype
        and array.shape == view.shape
        and array.tobytes() == view.tobytes()
    )


def _squared_coefficients(layout: Layout, weights: np.ndarray) -> float:
    """The sum of the squared weights, biases excepted: what L2 regularisation penalises.

    Infinite, without numpy's overflow warnings, for weights past 1e154: a training that
    large diverges, and the epoch's check says so in one clear error.
    """
    with np.errstate(over="ignore"):
        return sum(float(np.square(block[:, :-1]).sum()) for block in layout.layer_views(weights))


def _diverged(iteration: int, remedy: str) -> NonFiniteError:
    """scikit-learn's error for a fit whose weights stopped being finite, naming the fit's iteration, and
    another ``remedy`` than scaling the features."""
    return NonFiniteError(
        f"{NON_FINITE_WEIGHTS} (in iteration {iteration} of this fit: scale the features, or try {remedy})"
    )


def _continued(
    previous: Trainer,
    options: Options,
    n_outputs: int,
    shuffling: _ScikitLearnShuffling,
    *,
    incremental: bool,
    keep_rate: bool,
) -> Trainer:
    """A trainer that goes on from ``previous``: its weights and counters, and with ``incremental``
    (``partial_fit``) its optimizer's memory, else a fresh optimizer (``warm_start``), as in scikit-learn; the rows'
    orders from ``shuffling``, this fit's.

    The parameters may have changed since (``set_params``), but not the network, nor
    the optimizer whose memory is kept.  ``keep_rate`` keeps a rate the adaptive
    schedule lowered, as scikit-learn's ``partial_fit`` does.
    """
    fixed = {**FIXED_WHEN_CONTINUING, "optimizer": "solver"} if incremental else FIXED_WHEN_CONTINUING
    changed = [param for name, param in fixed.items() if getattr(options, name) != getattr(previous.options, name)]
    if changed:
        continuing, advice = ("partial_fit", "clone the estimator") if incremental else ("warm_start", "set "
                              "warm_start=False, or clone the estimator,")  # fmt: skip
        raise ValueError(
            f"{continuing} continues the network trained before, so {', '.join(changed)} cannot change; {advice} to "
            "train a new network"
        )
    if n_outputs != previous.layout.sizes[-1]:
        raise ValueError(f"y has {n_outputs} targets, the network being continued has {previous.layout.sizes[-1]}")
    if keep_rate:
        options = dataclasses.replace(options, lr=previous.options.lr)
    shuffle = shuffling if options.shuffle else None
    return previous.continued(options, shuffle) if incremental else previous.restarted(options, shuffle)


def _store_params(estimator: BaseEstimator, params: dict) -> None:
    """Keep every constructor argument as given: scikit-learn checks them in ``fit``, not before."""
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


class MLPClassifier(ClassifierMixin, _MultilayerPerceptron):
    """A multi-layer perceptron classifier trained by fastbp: logistic output units for two classes or multilabel
    targets, a softmax for more classes, with the cross-entropy.

    A drop-in replacement for :class:`sklearn.neural_network.MLPClassifier`, with its
    parameters, defaults and fitted attributes: see it for those not listed here.  The
    differences are under Notes.

    Parameters
    ----------
    activation : {"relu", "identity", "logistic", "tanh", "leaky_relu"}
        scikit-learn's, and fastbp's ``"leaky_relu"`` (slope 0.01).
    solver : {"adam", "sgd", "lbfgs", "rprop", "rmsprop"}
        scikit-learn's solvers, and fastbp's ``"rprop"`` (iRprop-) and ``"rmsprop"``
        (Keras's RMSprop, ``rho`` 0.9, with ``epsilon``).  ``"lbfgs"`` is SciPy's
        L-BFGS-B, as in scikit-learn, each evaluation of the loss and its gradient one
        call into the compiled kernels.  It and ``"rprop"`` are full-batch methods:
        ``batch_size``, ``shuffle`` and ``learning_rate_init`` do not apply.
    class_weight : dict, "balanced" or None
        Weights of the classes, as in :class:`sklearn.linear_model.LogisticRegression`: they weigh the
        training loss; early stopping scores its held-out rows by ``sample_weight`` alone.
    backend : {"auto", "cython", "numba"}
        The compiled kernels that train and predict.
    init : {"sklearn", None, "glorot", "he", "tutorial"}
        The initial weights: ``"sklearn"`` draws scikit-learn's (uniform, Glorot's
        bound; for the same ``random_state``, the same numbers); the others as
        :func:`fastbp.train` does.
    dtype : np.float64, np.float32 or None
        The precision of training and predicting; ``None``: the features', as in
        scikit-learn (float32 ``X`` trains in float32, any other in float64; a
        continued network keeps its own).
    n_threads : int or None
        Threads for mini-batch training and prediction (``"lbfgs"`` computes its
        gradients on one); ``None``: every core, or
        ``FASTBP_NUM_THREADS``/``OMP_NUM_THREADS``.  The results are the same for any
        count.

    Attributes
    ----------
    model_ : Model
        The fitted network, as :func:`fastbp.train` returns one (e.g. to
        ``model_.save(path)``), sharing the estimator's weights.
    coefs_, intercepts_ : list of ndarray
        As in scikit-learn, the network's weights themselves: writing into them, or
        assigning new arrays of their shapes, changes the predictions and the training
        that follows.  They are views of fastbp's one weight buffer, strided (not
        C-contiguous: ``np.ascontiguousarray`` gives a copy that is).
    classes_, loss_, loss_curve_, n_iter_, t_ : various
        As in scikit-learn, with ``best_loss_``, ``validation_scores_``,
        ``best_validation_score_``, ``n_features_in_``, ``feature_names_in_``,
        ``n_layers_``, ``n_outputs_`` and ``out_activation_``.

    Notes
    -----
    Where it differs from scikit-learn:

    - ``model_`` of a multilabel classifier puts out each label's probability (its
      ``classes`` is ``None``); ``predict`` gives the indicator matrix.
    - ``sample_weight`` (times ``class_weight``) is rescaled to mean 1 over the rows
      trained on, and each batch's gradient is the mean of the rows' weighted gradients:
      scikit-learn divides their sum by the batch's total weight instead, which is the
      same for a single batch and on average for mini-batches.
    - ``momentum`` is below 1, and ``hidden_layer_sizes`` names one hidden layer at least.
    - ``alpha`` is divided by ``batch_size`` (times the mean sample weight) in every batch, a
      shorter last one too, where scikit-learn divides it by that batch's total sample
      weight (the same where ``batch_size`` divides the number of rows and the weights are
      equal).
    - A run whose weights stop being finite raises :class:`fastbp.NonFiniteError` (a
      ``ValueError``) with scikit-learn's message, naming the fit's iteration, and leaves
      the estimator as it was before that ``fit`` or ``partial_fit`` (unfitted, or as the
      fit before left it), where scikit-learn keeps the ``nan`` weights; so does any fit
      that raises.  With ``early_stopping=True`` it ends at that epoch with the best
      weights so far and ``nan`` for the epoch's loss and validation score, where
      scikit-learn trains on with ``nan`` weights until ``max_iter`` (to the same weights).
    - A ``warm_start`` fit with ``early_stopping=True`` that validates no better than the
      best score before it ends with the weights of that score: scikit-learn's best
      weights are its live ones once restored, which its next fit trains on.
    - The predictions are in the precision trained in (float32 for float32 ``X``), whatever
      ``X``'s precision at prediction.
    - ``loss_curve_``'s L2 term uses the weights each epoch starts from for all its batches;
      with ``"lbfgs"``, ``loss_curve_`` holds each iteration's loss (scikit-learn keeps none),
      and ``best_loss_``, ``validation_scores_`` and ``best_validation_score_`` are
      ``inf``, ``None`` and ``None`` (scikit-learn sets none of them).
    """

    _parameter_constraints: dict = {
        **_MultilayerPerceptron._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }
    _score_function = staticmethod(_accuracy)
    _y_checks: dict = {}

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        class_weight=None,
        backend="auto",
        init="sklearn",
        dtype=None,
        n_threads=None,
    ):
        _store_params(self, locals())

    @available_if(_stochastic_solver)
    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        classes: ArrayLike | None = None,
    ) -> MLPClassifier:
        """Train one epoch on the chunk ``X``, ``y``, continuing the network.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)
            The chunk's features.
        y : array-like, shape (n_rows,)
            The chunk's labels.
        sample_weight : array-like, shape (n_rows,), optional
            Non-negative weight of each row.
        classes : array-like, optional
            Every label the network will see; required on the first call.

        Returns
        -------
        self
        """
        self._check_params(partial_fit=True)
        _check_partial_fit_first_call(self, classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """The accuracy of :meth:`predict` on ``X`` against ``y``, weighted by ``sample_weight``: scikit-learn's,
        the same value, without its checks of arrays that need none (see ``_accuracy``)."""
        return _accuracy(y, self.predict(X), sample_weight=sample_weight)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_`` (multilabel: each label's own).

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)

        Returns
        -------
        ndarray, shape (n_rows, n_classes)
        """
        outputs = self._outputs(X)
        return two_classes(outputs) if self._label_binarizer.y_type_ == "binary" else outputs

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        """The labels the outputs stand for, as the label binarizer's inverse gives them: taken here for two
        classes (one output, above 0.5 or not) and for more (the largest output), where the binarizer's own
        input checks take longer than the network on a few rows."""
        binarizer = self._label_binarizer
        if binarizer.y_type_ == "multiclass":
            return binarizer.classes_.take(outputs.argmax(axis=1))
        if binarizer.y_type_ == "binary" and outputs.shape[1] == 1 and len(binarizer.classes_) == 2:
            return binarizer.classes_[(outputs[:, 0] > 0.5).astype(np.intp)]
        return binarizer.inverse_transform(outputs)

    @staticmethod
    def _mean_loss(summed_loss: float, targets_shape: tuple[int, int]) -> float:
        """scikit-learn's log loss, the mean cross-entropy per row (summed over a multilabel problem's labels),
        from fastbp's (weighted) sum."""
        return summed_loss / targets_shape[0]

    def _targets(self, y, dtype, *, continuing: bool, incremental: bool) -> np.ndarray:
        """scikit-learn's binarized targets (``LabelBinarizer``'s: a column of whether each label is the second
        class for two classes, a column per class for more, a multilabel problem's indicator matrix as it
        is), after setting ``classes_`` (a new network) or checking ``y`` against them (continuing).

        Two classes and multilabel targets train logistic output units with the binary
        cross-entropy, more classes a softmax, as in scikit-learn.
        """
        kind = type_of_target(y, input_name="y")  # once: each call checks y anew
        if kind not in CLASSIFICATION_TARGETS:
            check_classification_targets(y)  # raises, in scikit-learn's words
        if kind == "multiclass-multioutput":
            raise ValueError(
                "Multioutput target data is not supported: y must hold one label per row, or be a multilabel "
                "indicator matrix of 0s and 1s"
            )
        if incremental and not hasattr(self, "_label_binarizer"):  # the first partial_fit: classes_ are `classes`
            self._label_binarizer = LabelBinarizer().fit(y if kind.startswith("multilabel") else self.classes_)
        if not hasattr(self, "classes_") or not (self.warm_start or incremental):  # scikit-learn's rule
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        elif incremental:
            # One array of one kind of labels: unique_labels' labels, without its second type_of_target.
            labels = np.unique(y) if kind in ("binary", "multiclass") and y.dtype != object else unique_labels(y)
            unseen = np.setdiff1d(labels, self.classes_)
            if len(unseen):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`: {unseen}; `self.classes_` has {self.classes_}"
                )
        elif set(labels := unique_labels(y)) != set(self.classes_):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as in the previous call to fit. "
                f"Previously got {self.classes_}, `y` has {labels}"
            )
        self._output = "softmax" if self._label_binarizer.y_type_ == "multiclass" else "sigmoid"
        self._loss = "cross_entropy"
        return kernel_array(self._binarized(y), dtype, "y")

    def _binarized(self, y) -> np.ndarray:
        """``LabelBinarizer.transform(y)`` for labels among ``classes_``: for two classes or more, by comparing each
        label with the classes, where the binarizer's own input checks take longer than a small network's fit."""
        binarizer = self._label_binarizer
        if isinstance(y, np.ndarray) and y.ndim == 1 and binarizer.y_type_ in ("binary", "multiclass"):
            one_hot = y[:, np.newaxis] == binarizer.classes_
            if binarizer.y_type_ == "multiclass":
                return one_hot
            if len(binarizer.classes_) == 2:
                return one_hot[:, 1:]  # one column: whether each label is the second class
        return binarizer.transform(y)

    def _weigh_classes(self, weights, y, targets, incremental: bool) -> np.ndarray:
        if self.class_weight is None:
            return weights
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            raise ValueError("class_weight is not supported for multilabel targets: use sample_weight")
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: one chunk does not show the classes' "
                "frequencies. Pass compute_class_weight('balanced', classes=classes, y=y) of a large enough "
                "sample of y as class_weight instead."
            )
        class_weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        if not (np.isfinite(class_weights) & (class_weights >= 0)).all():
            raise ValueError(f"class_weight must be finite and non-negative, got {self.class_weight!r}")
        return weights * class_weights[np.searchsorted(self.classes_, y)]

    def _model_classes(self) -> np.ndarray | None:
        """``model_``'s labels, as plain numbers or strings (model files hold no objects): every class, for a
        softmax or one logistic unit; ``None`` for a multilabel problem's units, which ``model_`` puts out as
        they are (each label's probability)."""
        multilabel = self._label_binarizer.y_type_ == "multilabel-indicator"
        return None if multilabel else np.array(self.classes_.tolist())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MultilayerPerceptron):
    """A multi-layer perceptron regressor trained by fastbp: identity outputs and squared error, or exponential
    outputs and half the Poisson deviance (``loss="poisson"``, for counts or rates).

    A drop-in replacement for :class:`sklearn.neural_network.MLPRegressor` (see it for
    the parameters and attributes), with fastbp's parameters and the differences that
    :class:`MLPClassifier` lists, where they concern regression.  One output per column
    of ``y``: a 1-D ``y`` (or one column) gives 1-D predictions, several columns give
    2-D ones.  With several targets, ``"lbfgs"`` minimises the squared error summed
    over them (scikit-learn's gradient, while its objective divides by their number).
    ``loss="poisson"`` refuses negative targets, where scikit-learn's loss turns ``nan``.

    Attributes
    ----------
    model_ : Model
        The fitted network, as :func:`fastbp.train` returns one.
    """

    _parameter_constraints: dict = {
        **_MultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
    }
    _score_function = staticmethod(_r2)
    _y_checks = {"y_numeric": True}

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        init="sklearn",
        dtype=None,
        n_threads=None,
    ):
        _store_params(self, locals())

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """R^2 of :meth:`predict` on ``X`` against ``y``, weighted by ``sample_weight``: scikit-learn's, the same value,
        without its checks of arrays that need none (see ``_r2``)."""
        return _r2(y, self.predict(X), sample_weight=sample_weight)

    @available_if(_stochastic_solver)
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> MLPRegressor:
        """Train one epoch on the chunk ``X``, ``y``, continuing the network.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)
            The chunk's features.
        y : array-like, shape (n_rows,) or (n_rows, n_targets)
            The chunk's targets.
        sample_weight : array-like, shape (n_rows,), optional
            Non-negative weight of each row.

        Returns
        -------
        self
        """
        self._check_params(partial_fit=True)
        return self._fit(X, y, sample_weight, incremental=True)

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs

    def _mean_loss(self, summed_loss: float, targets_shape: tuple[int, int]) -> float:
        """scikit-learn's loss from fastbp's (weighted) sum: the squared loss is half the mean over rows and
        outputs of the squares, the Poisson loss the mean over rows of the half deviances summed over outputs."""
        if self.loss == "poisson":
            return summed_loss / targets_shape[0]
        return summed_loss / (2 * targets_shape[0] * targets_shape[1])

    def _targets(self, y, dtype, *, continuing: bool, incremental: bool) -> np.ndarray:
        """The targets as a matrix of ``dtype``; with the Poisson loss, counts or rates (no negative ones)."""
        self._output, self._loss = REGRESSION_LOSSES[self.loss]
        targets = kernel_array(np.asarray(y, dtype=np.float64).reshape(len(y), -1), dtype, "y")
        return as_rates(targets) if self._loss == "poisson" else targets

    def _weigh_classes(self, weights, y, targets, incremental: bool) -> np.ndarray:
        return weights

    def _model_classes(self) -> None:
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

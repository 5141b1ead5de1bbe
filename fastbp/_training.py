"""Training: the validated options of a network, and the loop that drives a backend's kernels.

:class:`Options` holds what :func:`fastbp.train` and the estimators accept, checked
once.  A :class:`Trainer` owns a network's weights and its optimizer's memory and
counters, so training can continue where it stopped (``warm_start``, ``partial_fit``).
Epochs run inside the kernels, in chunks of about :data:`CHUNK_WORK` weight updates
(tens of milliseconds): between chunks Ctrl-C is honoured, a diverged run stops, the
progress bar moves, and shuffled row orders for the next chunk are drawn.  A layered
network (convolutions, pooling, dropout) runs each epoch in parts of whole batches of
about :data:`LAYERED_CALL_WORK` multiply-adds (calls about as long), which give the same
updates as one call; where a caller's hooks run around each batch (``Sequential.fit``'s
per-batch callbacks), every network's parts are single batches.  L-BFGS
(:meth:`Trainer.minimize`) is SciPy's, driving the kernels' full-batch gradient.

Numerical faults are reported, never returned as results.  The kernels compute in
IEEE arithmetic and keep the limits where they exist: sigmoid and tanh saturate,
and a softmax whose largest logit is infinite gives that entry (or the tied ones)
all the probability.  Where a layer's weighted sum overflows into ``inf - inf``
or ``0 * inf`` the value is ``nan`` (relu passes it on rather than hiding it as
0), and the Python layer refuses it: a training whose loss or weights stop being
finite raises :class:`NonFiniteError` naming the epoch (:func:`check_finite`,
after every chunk), and :func:`check_outputs` does the same for predictions.
:func:`fastbp.train` warns (``_warn_if_saturated``: a forward pass over a few rows,
and over every row only if those are all stuck) when training ends with every
sigmoid or softmax output saturated for every training row: finite, but stuck,
typically from a huge ``lr``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Protocol

import numpy as np
from numpy.typing import DTypeLike

from ._backends import Backend, Data, Network, Schedule, SparseRows, get_backend
from ._concepts import HIDDEN_ACTIVATIONS, INITS, LOSSES, OPTIMIZER_OPTIONS, OPTIMIZERS, OUTPUTS, OptimizerCode
from ._constants import RPROP_DELTA_ZERO
from ._layout import Layer, Layout
from ._parallel import MIN_BATCH_WORK_FOR_THREADS, kernel_threads, one_blas_thread
from ._sparse import SparseFeatures, kernel_rows
from ._validate import (
    all_finite,
    as_choice,
    as_dtype,
    as_flag,
    as_fraction,
    as_layer_sizes,
    as_non_negative,
    as_positive,
)
from .layers import (
    LayerSpec,
    WeightedLayer,
    all_dense,
    build_layers,
    from_config,
    layer_config,
    layer_list,
    not_a_layer,
)

#: Weight updates per kernel call when training: tens of milliseconds of compiled work.
CHUNK_WORK = 10_000_000
#: Multiply-adds (``work_per_row``) per kernel call of a layered network, in whole batches.  Its convolutions get
#: through dozens of times as many a second as a dense network's updates (Winograd's products, computed only where
#: the pooling reads, by BLAS), so this too is tens of milliseconds: five batches of 128 of the notebook's network.
#: Each call starts the threads that share its batches (which then meet at a barrier that spins briefly); with a
#: call per batch, those starts cost two threads 8% of their speed.
LAYERED_CALL_WORK = 1_000_000_000

LR_SCHEDULES = ("constant", "invscaling")

#: L-BFGS's limits when :func:`fastbp.train` runs it: the most evaluations of the loss, and the gradient
#: component below which it has converged (scikit-learn's defaults of ``max_fun`` and ``tol``).
LBFGS_MAX_FUN = 15000
LBFGS_TOL = 1e-4

#: Called after each epoch with its index and loss; returning True stops training.
Callback = Callable[[int, float], "bool | None"]


@dataclass(frozen=True)
class Options:
    """A network's architecture and training settings, validated (see :func:`fastbp.train`)."""

    hidden: tuple[int, ...] = (5,)
    activation: tuple[str, ...] = ("sigmoid",)
    output: str = "sigmoid"
    loss: str = "mse"
    lr: float = OPTIMIZERS["sgd"].default_lr
    batch_size: int | None = None
    shuffle: bool = False
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    l2: float = 0.0
    lr_schedule: str = "constant"
    power_t: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    rho: float = 0.9
    init: str | None = None
    dtype: str = "float64"
    backend: str = "auto"
    exact: bool = True
    #: The hidden layers as :mod:`fastbp.layers` describes them, instead of ``hidden`` and ``activation``.
    layers: tuple[LayerSpec, ...] | None = None

    @classmethod
    def create(
        cls,
        *,
        hidden: int | Sequence[int] | None = None,
        activation: str | Sequence[str] | None = None,
        output: str = "sigmoid",
        loss: str | None = None,
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
        backend: str = "auto",
        exact: bool | None = None,
        layers: Sequence[LayerSpec] | None = None,
    ) -> Options:
        """Check every setting, and refuse combinations whose parts would be silently ignored.  ``hidden`` and
        ``activation`` default to the tutorial's hidden layer (the class's defaults)."""
        optimizer = as_choice(optimizer, "optimizer", OPTIMIZER_OPTIONS)
        if layers is not None:
            given = [name for name, value in (("hidden", hidden), ("activation", activation)) if value is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} dense hidden layers: with "
                    "layers, list them there"
                )
            layers = [_as_layer(position, spec) for position, spec in enumerate(layer_list(layers))]
            if OPTIMIZERS[optimizer].full_batch:
                raise ValueError(
                    f"{optimizer} trains on all the rows at once, and a network with layers trains by mini-batches "
                    "(a gradient kept for every 32 rows of a batch): use optimizer='adam' or 'sgd' with a batch_size"
                )
            if exact is not None and as_flag(exact, "exact") and not all_dense(layers):
                raise ValueError(
                    "exact=True is the tutorial's arithmetic, which networks of dense layers alone have: one with "
                    "convolution, pooling, dropout or Flatten layers computes one way (BLAS's sums and libm's exp); "
                    "leave exact out"
                )
            layers, hidden, activation = tuple(layers), (), ()
        hidden = as_layer_sizes(cls.hidden if hidden is None else hidden) if layers is None else ()
        activation = cls.activation[0] if activation is None else activation
        output = as_choice(output, "output", tuple(OUTPUTS))
        losses = OUTPUTS[output].losses
        loss = losses[0] if loss is None else as_choice(loss, "loss", losses, f"with {output=}")
        full_batch = OPTIMIZERS[optimizer].full_batch
        if batch_size is not None:
            if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
            if full_batch:
                raise ValueError(f"{optimizer} is a full-batch method: it takes no batch_size")
        momentum, nesterov = as_fraction(momentum, "momentum"), as_flag(nesterov, "nesterov")
        lr_schedule = as_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
        shuffle = as_flag(shuffle, "shuffle")
        if optimizer != "sgd" and (momentum or nesterov):
            raise ValueError(f"momentum and nesterov apply to optimizer='sgd', not {optimizer!r}")
        if nesterov and not momentum:
            raise ValueError("nesterov=True needs a momentum above 0")
        if optimizer != "rmsprop" and rho != 0.9:
            raise ValueError(f"rho applies to optimizer='rmsprop', not {optimizer!r}")
        if optimizer == "rmsprop" and (beta1, beta2) != (0.9, 0.999):
            raise ValueError("beta1 and beta2 are Adam's: RMSprop's decay rate is rho")
        if optimizer != "sgd" and lr_schedule != "constant":
            raise ValueError(f"lr_schedule applies to optimizer='sgd' (as in scikit-learn), not {optimizer!r}")
        if full_batch and shuffle:
            raise ValueError(f"{optimizer} trains on the whole data at once, so shuffle would change nothing")
        if init is not None and init not in INITS:
            raise ValueError(f"init must be None or one of {tuple(INITS)}, got {init!r}")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string, got {backend!r}")
        if exact is None:  # the tutorial's numbers need its order; elsewhere speed wins
            exact = (layers is None or all_dense(layers)) and (init == "tutorial" or backend == "reference")
        return cls(
            hidden=hidden,
            activation=() if layers is not None else _as_activations(activation, len(hidden)),
            output=output,
            loss=loss,
            lr=OPTIMIZERS[optimizer].default_lr if lr is None else as_positive(lr, "lr"),
            batch_size=None if batch_size is None else int(batch_size),
            shuffle=shuffle,
            optimizer=optimizer,
            momentum=momentum,
            nesterov=nesterov,
            l2=as_non_negative(l2, "l2"),
            lr_schedule=lr_schedule,
            power_t=as_non_negative(power_t, "power_t"),
            beta1=as_fraction(beta1, "beta1"),
            beta2=as_fraction(beta2, "beta2"),
            epsilon=as_positive(epsilon, "epsilon"),
            rho=as_fraction(rho, "rho"),
            init=init,
            dtype=as_dtype(dtype).name,
            backend=backend,
            exact=as_flag(exact, "exact"),
            layers=layers,
        )

    def to_dict(self) -> dict:
        """The options as plain JSON values: a shallow copy, since every field is immutable (``asdict``'s deep
        copy is a noticeable part of a small network's ``train``)."""
        options = {**vars(self), "hidden": list(self.hidden), "activation": list(self.activation)}
        if self.layers is None:
            del options["layers"]
        else:  # the layers replace hidden and activation, which train would refuse beside them
            del options["hidden"], options["activation"]
            options["layers"] = [layer_config(spec) for spec in self.layers]
        return options

    def layer_initializers(self) -> list[tuple[str | None, str | None]]:
        """The Keras initializers of the hidden layers with weights, in order (none without ``layers``)."""
        return [spec.initializers for spec in self.layers or () if isinstance(spec, WeightedLayer)]

    def layout(self, input_shape: int | tuple[int, ...], n_outputs: int) -> Layout:
        """The network for rows of ``input_shape`` (a number of features, or an image's shape) and ``n_outputs``."""
        if self.layers is None:
            n_features = input_shape if isinstance(input_shape, int) else math.prod(input_shape)
            return Layout.from_sizes((n_features, *self.hidden, n_outputs), (*self.activation, self.output))
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        hidden = build_layers(self.layers, shape)
        last = hidden[-1].out_shape if hidden else shape
        if len(last) != 1:
            what = "the last hidden layer puts out" if hidden else "the input is"
            raise ValueError(
                f"{what} images of shape {last}, and the output layer (a Dense) takes vectors: put a Flatten before it"
            )
        return Layout.from_layers([*hidden, Layer.dense(last[0], n_outputs, self.output)])

    @property
    def optimizer_code(self) -> OptimizerCode:
        """The kernels' optimizer: ``"sgd"`` with momentum is momentum's, or Nesterov's."""
        if not OPTIMIZERS[self.optimizer].in_kernels:
            raise ValueError(f"{self.optimizer} is driven from Python: the kernels have no code for it")
        if self.optimizer == "sgd" and self.momentum:
            return OptimizerCode.NESTEROV if self.nesterov else OptimizerCode.MOMENTUM
        return OptimizerCode[self.optimizer.upper()]

    def schedule(
        self, orders: np.ndarray, rates: np.ndarray, batch_size: int, steps_done: int, seed: int = 0
    ) -> Schedule:
        """The kernels' schedule: rows ``orders``, rates ``rates``, and these options' optimizer (RMSprop's ``rho``
        in the schedule's ``beta2``, the same decay of the squared gradients' average as Adam's)."""
        decay = self.rho if self.optimizer == "rmsprop" else self.beta2
        return Schedule(
            orders, rates, int(batch_size), int(self.optimizer_code), self.momentum, self.l2, self.beta1, decay,
            self.epsilon, int(steps_done), int(seed),
        )  # fmt: skip


def _as_layer(position: int, spec) -> LayerSpec:
    """A layer of ``layers``: a ``fastbp.layers`` layer, or its config as ``model.options`` keeps it."""
    if isinstance(spec, Mapping):
        try:
            return from_config(spec)
        except (TypeError, ValueError) as error:
            raise type(error)(f"layer {position}: {error}") from None
    if not isinstance(spec, LayerSpec):
        raise TypeError(f"layer {position}: {not_a_layer(spec)} (nor a layer's config)")
    return spec


def _as_activations(activation, n_hidden: int) -> tuple[str, ...]:
    names = (activation,) * n_hidden if isinstance(activation, str) else activation
    if not isinstance(names, Sequence | np.ndarray) or len(names) != n_hidden:
        raise ValueError(f"activation must be a name or one name per hidden layer ({n_hidden}), got {activation!r}")
    return tuple(as_choice(str(name), "activation", HIDDEN_ACTIVATIONS) for name in names)


class Trainer:
    """A network in training: its weights, the optimizer's memory, and the counters schedules need.

    ``backend`` is resolved once (``"auto"`` becomes a name), and only names and
    arrays are kept, so a trainer pickles.
    """

    #: The rows seen when the optimizer started (a ``restarted`` trainer's), whose first epoch runs at the full
    #: rate, as scikit-learn's new optimizer of a ``warm_start`` fit does.
    schedule_start = 0

    def __init__(
        self,
        options: Options,
        layout: Layout,
        weights: np.ndarray,
        shuffle: Shuffling | None,
        dropout_seed: int = 0,
    ):
        self.options = options
        self.layout = layout
        self.weights = weights
        self.backend = get_backend(options.backend).name
        self.state = np.zeros(2 * layout.n_weights, dtype=weights.dtype)
        if options.optimizer == "rprop":
            self.state[: layout.n_weights] = RPROP_DELTA_ZERO
        self.shuffle = shuffle
        self.dropout_seed = dropout_seed  # keys the dropout masks, with each update's number and each row
        self.steps = 0  # updates so far: Adam's bias correction and the dropout masks count them
        self.rows_seen = 0  # rows trained so far: the invscaling schedule counts them

    def __setstate__(self, state: dict) -> None:
        # Unpickled from a read-only memory map (joblib's), the buffers are copied: training writes to them.
        self.__dict__.update(state)
        self.weights = np.require(self.weights, requirements=["C", "W"])
        self.state = np.require(self.state, requirements=["C", "W"])
        if isinstance(self.shuffle, np.random.Generator):  # pickled by a fastbp that kept the Generator itself
            self.shuffle = Shuffling(self.shuffle)

    def snapshot(self) -> tuple:
        """Copies of what training changes (weights, optimizer memory, counters, options, the shuffling
        stream's state), for :meth:`restore`."""
        shuffling = None if self.shuffle is None else self.shuffle.state
        return self.weights.copy(), self.state.copy(), self.steps, self.rows_seen, self.options, shuffling

    def restore(self, snapshot: tuple) -> None:
        """Go back to a :meth:`snapshot`, in place (arrays that share the weights see them)."""
        weights, state, self.steps, self.rows_seen, self.options, shuffling = snapshot
        self.weights[:] = weights
        self.state[:] = state
        if shuffling is not None:
            self.shuffle.state = shuffling

    def continued(self, options: Options, shuffle: Shuffling | None) -> Trainer:
        """A trainer that goes on from this one under new settings: the same weights, memory and counters.

        The network, its dtype and the optimizer (whose memory is kept) must not change.
        """
        trainer = self.restarted(options, shuffle, fixed=("optimizer",))
        trainer.state, trainer.steps, trainer.schedule_start = self.state, self.steps, self.schedule_start
        return trainer

    def restarted(self, options: Options, shuffle: Shuffling | None, *, fixed: tuple[str, ...] = ()) -> Trainer:
        """A trainer that goes on from this one's weights and rows seen with a fresh optimizer (its memory and
        update count anew, as scikit-learn's ``warm_start`` fit does), which may be another one.

        The network and its dtype (and the options named in ``fixed``) must not change.
        """
        network = ("hidden", "activation", "layers", "output", "loss", "dtype", *fixed)
        changed = [name for name in network if getattr(options, name) != getattr(self.options, name)]
        if changed:
            raise ValueError(f"continuing a training cannot change {', '.join(changed)}")
        trainer = Trainer(options, self.layout, self.weights, shuffle, self.dropout_seed)
        trainer.rows_seen = trainer.schedule_start = self.rows_seen
        return trainer

    def run(
        self,
        X: np.ndarray | SparseFeatures,
        Y: np.ndarray,
        sample_weight: np.ndarray,
        epochs: int,
        *,
        callback: Callback | None = None,
        progress: bool | ProgressBar = False,
        n_threads: int = 1,
        rows: np.ndarray | None = None,
        right: list[int] | None = None,
        batches: BatchHooks | None = None,
        first_epoch: int = 0,
    ) -> np.ndarray:
        """Train ``epochs`` epochs on validated arrays; return each epoch's loss.

        ``first_epoch`` numbers the first epoch in the error of a training that diverges.

        ``right``, for a layered network: a list to which each epoch's count of rows
        that its training passes classed right is appended (each row's outputs as the
        batch trained on them, dropout and all, before its update: Keras's training
        accuracy).

        ``rows`` (intp indices) trains on those rows of the arrays only, as if they had
        been copied out in that order: many trainings on parts of one data set share it.

        Mini-batches use up to ``n_threads`` threads; the result is the same for any count.

        With a ``callback`` the kernels return to Python after every epoch, so it
        sees each epoch's weights and may stop training by returning True; the
        history then ends at that epoch.  With ``batches`` each kernel call trains
        one batch, and its hooks run around each (the same updates as whole epochs
        per call); one that stops training ends the epoch after that batch, whose
        loss then sums the rows trained.
        """
        if not OPTIMIZERS[self.options.optimizer].in_kernels:
            if epochs == 0:  # SciPy's L-BFGS-B takes a step even with maxiter=0
                return np.zeros(0)
            return self.minimize(X, Y, sample_weight, epochs, callback=callback, progress=progress, rows=rows).history
        layout = self.layout
        n_rows = len(X) if rows is None else len(rows)
        train = self._kernel_call(X, Y, sample_weight, n_rows, n_threads)
        work = layout.work_per_row
        # Networks of dense layers run chunks of epochs; a layered network's epoch runs in parts of whole batches.
        by_epochs = layout.dense_only and batches is None
        chunk = max(1, CHUNK_WORK // (n_rows * work)) if by_epochs and callback is None else 1
        parts = []  # each chunk's losses: the history grows with the epochs that run, which a callback may cut short
        done = 0
        with _progress_bar(epochs, progress) as bar:
            while done < epochs:
                n_epochs = min(chunk, epochs - done)
                stopped = False
                if by_epochs:
                    part = self._dense_epochs(train, n_epochs, n_rows, rows, first_epoch + done)
                    bar.update(n_epochs)
                else:
                    part = np.zeros(n_epochs)
                    rates, orders = self._rates_and_orders(n_epochs, n_rows, rows)
                    call_rows = train.batch_size if batches is not None else max(1, LAYERED_CALL_WORK // work)
                    part[0], counted, stopped = self._epoch_in_parts(train, orders, rates, call_rows, bar, batches)
                    if right is not None and not layout.dense_only:
                        right.append(counted)
                    check_finite(part, self.weights, first_epoch + done)
                parts.append(part)
                done += n_epochs
                if stopped or callback is not None and _asks_to_stop(callback, done - 1, float(part[-1])):
                    break
        return np.concatenate(parts) if parts else np.zeros(0)

    def epoch_runner(
        self, X: np.ndarray | SparseFeatures, Y: np.ndarray, sample_weight: np.ndarray, *, n_threads: int = 1
    ) -> EpochRunner:
        """An :class:`EpochRunner` of a network of dense layers on these validated arrays: its kernel call set up
        once, for loops that keep their own books between epochs (scikit-learn's), where on small data that
        setup costs more than an epoch."""
        if not (self.layout.dense_only and OPTIMIZERS[self.options.optimizer].in_kernels):
            raise ValueError("epoch_runner trains networks of dense layers by an optimizer the kernels run")
        return EpochRunner(self, self._kernel_call(X, Y, sample_weight, len(X), n_threads), len(X))

    def _kernel_call(
        self, X: np.ndarray | SparseFeatures, Y: np.ndarray, sample_weight: np.ndarray, n_rows: int, n_threads: int
    ) -> _KernelCall:
        """The training kernel's call on these arrays, in batches of the options' size over ``n_rows`` rows."""
        backend, options, layout = get_backend(self.backend), self.options, self.layout
        batch_size = n_rows if OPTIMIZERS[options.optimizer].full_batch else min(options.batch_size or 1, n_rows)
        # Threads share a batch's products only where a step has enough arithmetic to be worth it.
        threads = kernel_threads(n_threads) if batch_size * layout.work_per_row >= MIN_BATCH_WORK_FOR_THREADS else 1
        return _KernelCall(
            backend, layout.network(options.exact, options.loss), self.weights, self.state,
            Data(kernel_rows(X, backend, layout.dense_only), Y, sample_weight),
            batch_size,
            min(threads, backend.capabilities.max_threads),
        )  # fmt: skip

    def _dense_epochs(
        self, train: _KernelCall, n_epochs: int, n_rows: int, rows: np.ndarray | None, first_epoch: int,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Train a network of dense layers ``n_epochs`` epochs over ``n_rows`` rows (those of ``rows``, if given)
        in one kernel call, each epoch's starting weights into ``starts`` if given (mini-batches of dense rows
        only); return their losses.  ``first_epoch`` numbers the first in a divergence's error."""
        losses = np.zeros(n_epochs)
        rates, orders = self._rates_and_orders(n_epochs, n_rows, rows)
        batch_size = train.batch_size
        train(self.options.schedule(orders, rates, batch_size, self.steps, self.dropout_seed), losses, starts=starts)
        self.advance(n_epochs, n_rows, -(-n_rows // batch_size))
        check_finite(losses, self.weights, first_epoch)
        return losses

    def minimize(
        self,
        X: np.ndarray | SparseFeatures,
        Y: np.ndarray,
        sample_weight: np.ndarray,
        max_iter: int,
        *,
        max_fun: int = LBFGS_MAX_FUN,
        tol: float = LBFGS_TOL,
        callback: Callback | None = None,
        progress: bool | ProgressBar = False,
        rows: np.ndarray | None = None,
    ) -> Minimized:
        """Train by L-BFGS (SciPy's L-BFGS-B over the flat weights) for up to ``max_iter`` iterations and
        ``max_fun`` evaluations, stopping sooner once no projected gradient component exceeds ``tol``.

        The objective is the mean over the rows of their weighted losses (the loss whose
        gradient the kernels take, see ``LOSSES``) plus ``0.5 * l2 * sum(w**2)`` over
        the weights but the biases: its gradient is the one a full batch's update
        would apply.  Each evaluation is one call of the backend's ``batch_gradient``
        kernel over all the rows; L-BFGS's own arithmetic, on vectors of the weights'
        length, is SciPy's, in float64 whatever the network's dtype.  ``callback``,
        ``progress`` and ``rows`` are those of :meth:`run`, an iteration counting as
        an epoch, whose loss (the kernels' weighted sum) goes to the history.
        """
        from scipy.optimize import minimize

        backend = get_backend(self.backend)
        if not backend.capabilities.steps:
            raise ValueError(f"the {backend.name!r} backend has no batch_gradient kernel for L-BFGS")
        data = Data(kernel_rows(X, backend, self.layout.dense_only), Y, sample_weight)
        objective = _Objective(self, backend, data, rows)
        accepted = self.weights.astype(np.float64)
        history = []

        def iteration_done(intermediate_result) -> None:
            nonlocal accepted
            accepted = intermediate_result.x.copy()
            history.append(objective.summed_loss(accepted))
            bar.update(1)
            if callback is not None and _asks_to_stop(callback, len(history) - 1, history[-1]):
                raise StopIteration

        options = {"maxiter": max_iter, "maxfun": max_fun, "gtol": tol}
        try:
            with _progress_bar(max_iter, progress) as bar, one_blas_thread():
                result = minimize(objective, accepted, jac=True, method="L-BFGS-B", callback=iteration_done,
                                  options=options)  # fmt: skip
            accepted = result.x
            loss = objective.summed_loss(accepted)
        finally:  # an interrupted run keeps the last iteration's weights, not those a line search was trying
            self.weights[:] = accepted
        history = np.array(history, dtype=np.float64)
        check_finite(np.append(history, loss), self.weights, 0)
        return Minimized(history, int(result.nit), result.status == 0, str(result.message), loss)

    def _epoch_in_parts(
        self, train: _KernelCall, orders: np.ndarray, rates: np.ndarray, rows: int, bar, hooks: BatchHooks | None
    ) -> tuple[float, int, bool]:
        """One epoch in kernel calls of whole batches, of about ``rows`` rows: the same batches and updates as one
        call, and between calls Ctrl-C is honoured, the progress bar moves and ``hooks`` (given calls of one
        batch) run.  Returns the loss of the rows trained, how many of them a layered network's training passes
        classed right, and whether a hook stopped the training."""
        n_rows, batch_size = orders.shape[1], train.batch_size
        part_rows = max(1, rows // batch_size) * batch_size
        loss = np.zeros(1)
        right = None if self.layout.dense_only else np.zeros(1)
        total, total_right = 0.0, 0
        for start in range(0, n_rows, part_rows):
            if hooks is not None:
                hooks.begin(start // batch_size)
            visits = np.ascontiguousarray(orders[:, start : start + part_rows])
            train(self.options.schedule(visits, rates, batch_size, self.steps, self.dropout_seed), loss, right)
            self.steps += -(-visits.shape[1] // batch_size)
            self.rows_seen += visits.shape[1]
            total += loss[0]
            total_right += 0 if right is None else int(right[0])
            bar.update(visits.shape[1] / n_rows)
            trained = start + visits.shape[1]
            if hooks is not None and hooks.end(start // batch_size, trained, total, total_right):
                return total, total_right, True
        return total, total_right, False

    def _rates_and_orders(self, n_epochs: int, n_rows: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n_epochs`` epochs' learning rates and orders of the rows (of ``rows``, if given)."""
        orders = self.epoch_orders(n_epochs, n_rows)
        return self.epoch_rates(n_epochs, n_rows), orders if rows is None else rows[orders]

    def epoch_rates(self, n_epochs: int, n_rows: int) -> np.ndarray:
        """The learning rate of each of the next ``n_epochs`` epochs over ``n_rows`` rows (float64): with the
        invscaling schedule, ``lr / (rows_seen + 1) ** power_t``, but the optimizer's first epoch's ``lr``."""
        options = self.options
        if options.lr_schedule == "constant":
            return np.full(n_epochs, options.lr, dtype=np.float64)
        rows_seen = self.rows_seen + n_rows * np.arange(n_epochs, dtype=np.float64)
        with np.errstate(over="ignore"):  # a huge power_t makes the rate underflow to 0, as it should
            scale = (rows_seen + 1.0) ** options.power_t
        return options.lr / np.where(rows_seen == self.schedule_start, 1.0, scale)

    def epoch_orders(self, n_epochs: int, n_rows: int) -> np.ndarray:
        """The order of the rows in each of the next ``n_epochs`` epochs: one row of positions per epoch
        when shuffling, else one row for all."""
        if self.shuffle is None:
            return np.arange(n_rows, dtype=np.intp)[np.newaxis]
        return self.shuffle.orders(n_epochs, n_rows)

    def advance(self, n_epochs: int, n_rows: int, steps_per_epoch: int) -> None:
        """Count ``n_epochs`` epochs trained, for the schedules and Adam's bias correction."""
        self.steps += n_epochs * steps_per_epoch
        self.rows_seen += n_epochs * n_rows


class Shuffling:
    """Each epoch's order of the rows, drawn from a numpy ``Generator``: fastbp's shuffling (a trainer's
    ``shuffle``; the estimators draw scikit-learn's instead)."""

    def __init__(self, generator: np.random.Generator):
        self.generator = generator

    def orders(self, n_epochs: int, n_rows: int) -> np.ndarray:
        """The next ``n_epochs`` epochs' orders, one row of positions each."""
        in_order = np.arange(n_rows, dtype=np.intp)[np.newaxis]
        return self.generator.permuted(np.repeat(in_order, n_epochs, axis=0), axis=1)

    @property
    def state(self) -> object:
        """Where the draws stand, to go back to (``Trainer.snapshot``)."""
        return self.generator.bit_generator.state

    @state.setter
    def state(self, state: object) -> None:
        self.generator.bit_generator.state = state


@dataclass(frozen=True)
class Minimized:
    """How an L-BFGS training (:meth:`Trainer.minimize`) ended."""

    #: The loss after each iteration: the rows' weighted sum that the kernels report, as an epoch's.
    history: np.ndarray
    #: Iterations run (a callback that stops training counts the iteration it stopped after).
    iterations: int
    #: Whether the gradient fell below the tolerance, or the objective stopped changing (SciPy's status 0).
    converged: bool
    #: SciPy's reason for stopping.
    message: str
    #: The loss at the final weights, as ``history``'s.
    loss: float


class _Objective:
    """A trainer's L-BFGS objective and its gradient at float64 weights ``w``, from one ``batch_gradient`` call.

    Evaluating writes ``w`` into the trainer's weights.  The last evaluation is kept,
    so the loss of the point L-BFGS accepts is not computed twice.
    """

    def __init__(self, trainer: Trainer, backend: Backend, data: Data, rows: np.ndarray | None):
        self.trainer, self.backend, self.data = trainer, backend, data
        self.net = trainer.layout.network(trainer.options.exact, trainer.options.loss)
        self.rows = np.arange(len(data.Y), dtype=np.intp) if rows is None else rows
        self.grad = np.empty_like(trainer.weights)
        self.decayed = np.zeros(trainer.layout.n_weights, dtype=bool)  # the weights L2 decays: all but biases
        for block in trainer.layout.layer_views(self.decayed):
            block[:, :-1] = True
        self.l2 = trainer.options.l2
        self.scale = 1.0 / (LOSSES[trainer.options.loss].reported_scale * len(self.rows))
        self.last_w: np.ndarray | None = None
        self.last_loss = np.nan

    def __call__(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        weights = self.trainer.weights
        weights[:] = w
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging step gives inf, which L-BFGS backs off
            loss = float(self.backend.batch_gradient(self.net, weights, self.data, self.rows, self.grad))
            grad = self.grad.astype(np.float64)
            decayed = w[self.decayed]
            grad[self.decayed] += self.l2 * decayed
            value = loss * self.scale + 0.5 * self.l2 * float(decayed @ decayed)
        self.last_w, self.last_loss = w.copy(), loss
        return value, grad

    def summed_loss(self, w: np.ndarray) -> float:
        """The rows' weighted loss sum, as the kernels report it, at ``w``."""
        if self.last_w is None or not np.array_equal(w, self.last_w):
            self(w)
        return self.last_loss


@dataclass(frozen=True)
class _KernelCall:
    """One network's training kernel, its data and threads: called with a schedule and the history to fill
    (and, for a layered network, each epoch's rows classed right)."""

    backend: Backend
    net: Network
    weights: np.ndarray
    state: np.ndarray
    data: Data
    batch_size: int
    threads: int

    def __call__(
        self, schedule: Schedule, history: np.ndarray, right: np.ndarray | None = None, starts: np.ndarray | None = None
    ) -> None:
        """Train; ``right`` (layered networks only) receives each epoch's rows classed right, ``starts``
        (mini-batches of dense rows only) each epoch's starting weights."""
        backend, net, weights, state, data = self.backend, self.net, self.weights, self.state, self.data
        if self.batch_size == 1:
            backend.train_online(net, weights, state, data, schedule, history, right=right)
        else:
            with one_blas_thread(), _parallel_lock(backend, self.threads):
                backend.train_batches(
                    net, weights, state, data, schedule, history, self.threads, right=right, starts=starts
                )

    @property
    def keeps_starts(self) -> bool:
        """Whether the kernel can hand back each epoch's starting weights: mini-batches of dense rows."""
        return self.batch_size > 1 and not isinstance(self.data.X, SparseRows)


@dataclass(frozen=True)
class EpochRunner:
    """Trains a network of dense layers more epochs on arrays checked once (``Trainer.epoch_runner``).

    ``runner(n_epochs, keep_starts)`` returns the epochs' losses and, with
    ``keep_starts``, the weights each epoch started from, one row an epoch (else None).
    A call runs up to ``most_epochs`` epochs: where the kernel hands the starting weights
    back (mini-batches of dense rows), as many as make about :data:`CHUNK_WORK` weight
    updates, so that Ctrl-C is honoured as often as in :meth:`Trainer.run`; else one.
    """

    trainer: Trainer
    train: _KernelCall
    n_rows: int

    @property
    def most_epochs(self) -> int:
        """The most epochs one call may run."""
        if not self.train.keeps_starts:
            return 1
        return max(1, CHUNK_WORK // (self.n_rows * self.trainer.layout.work_per_row))

    def __call__(self, n_epochs: int = 1, keep_starts: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        if not 1 <= n_epochs <= self.most_epochs:
            raise ValueError(f"a call runs 1 to {self.most_epochs} epochs of this network here, not {n_epochs}")
        weights, starts = self.trainer.weights, None
        if keep_starts and self.train.keeps_starts:
            starts = np.empty((n_epochs, len(weights)), weights.dtype)
        elif keep_starts:
            starts = weights[np.newaxis].copy()
        kept = starts if self.train.keeps_starts else None
        return self.trainer._dense_epochs(self.train, n_epochs, self.n_rows, None, 0, kept), starts


def _parallel_lock(backend, threads: int) -> contextlib.AbstractContextManager:
    """The lock a backend needs held while its kernels run on several threads, if any."""
    lock = backend.capabilities.parallel_lock
    return lock if lock is not None and threads > 1 else contextlib.nullcontext()


class BatchHooks(Protocol):
    """What a caller runs around each batch of a training (``Sequential.fit``'s per-batch callbacks)."""

    def begin(self, batch: int) -> None:
        """Before batch ``batch`` (counted from 0 in its epoch) trains."""

    def end(self, batch: int, rows: int, loss: float, right: int) -> bool:
        """After batch ``batch``, given the epoch's rows trained so far, their loss sum and how many of them
        were classed right (0 for a network of dense layers alone); True stops training after it."""


class ProgressBar(Protocol):
    """A progress bar of the caller's that training advances by the epochs it runs (tqdm's has this): whole
    epochs for a network of dense layers, each kernel call's share of an epoch for a network with layers."""

    def update(self, n: float) -> object: ...


def _progress_bar(epochs: int, progress: bool | ProgressBar):
    """A tqdm bar over epochs, the caller's bar (left open: it may count other work too), or a stand-in that
    does nothing when ``progress`` is False."""
    if progress is False:
        return _NoBar()
    if progress is not True:
        return contextlib.nullcontext(progress)
    from tqdm.auto import tqdm

    # The count as a number, not tqdm's float: "2.5/3" within a layered network's epoch, "3/3" at its end.
    counted = "{l_bar}{bar}| {n:g}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
    return tqdm(total=epochs, unit="epoch", bar_format=counted)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


class NonFiniteError(FloatingPointError, ValueError):
    """A training or prediction whose numbers left the float range (``inf`` or ``nan``).

    A ``FloatingPointError``, and a ``ValueError`` as well, which is what scikit-learn
    raises for a diverged network and what code written for it catches.
    """


#: What to do about a training whose numbers left the float range.
_DIVERGED_ADVICE = "try a smaller lr, or scale the features (a layer's weighted sums may overflow)"


def check_finite(history: np.ndarray, weights: np.ndarray, first_epoch: int) -> None:
    """Refuse to return a diverged network as if it were trained.

    Raises :class:`NonFiniteError` naming the first epoch (counted from 0 in this
    run) whose loss is ``nan`` or infinite, or the chunk's last epoch when only
    the weights stopped being finite.
    """
    finite = np.isfinite(history)
    if finite.all() and all_finite(weights):
        return
    bad = np.flatnonzero(~finite)
    if len(bad):
        raise NonFiniteError(
            f"training diverged at epoch {first_epoch + bad[0]}: the loss became {history[bad[0]]}; {_DIVERGED_ADVICE}"
        )
    if not np.isfinite(weights).all():
        raise NonFiniteError(
            f"training diverged by epoch {first_epoch + len(history) - 1}: some weights are not finite; "
            f"{_DIVERGED_ADVICE}"
        )


def _asks_to_stop(callback: Callback, epoch: int, loss: float) -> bool:
    """Whether ``callback(epoch, loss)`` asks training to stop, by a true value (None, the usual return, goes on);
    one of no single truth value (an array) is refused, naming the callback rather than numpy's ``bool``."""
    answer = callback(epoch, loss)
    try:
        return bool(answer)
    except (TypeError, ValueError):
        raise TypeError(
            f"callback must return True to stop training, or False or None to go on; it returned {answer!r}"
        ) from None


def check_outputs(outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the kernels' ``(n_rows, n_outputs)`` outputs of a network of ``weights``, or raise if any is not
    finite.

    The features are finite (they are checked), and so are the weights unless written
    into a model's arrays: otherwise a ``nan`` or infinite output means a layer's
    weighted sums overflowed the float range (features around 1e300, or 1e38 in
    float32). :class:`NonFiniteError` says which, and names the first such row,
    instead of returning meaningless numbers.
    """
    finite = np.isfinite(outputs)
    if not finite.all():
        if not np.isfinite(weights).all():
            raise NonFiniteError(
                "the network's outputs are not finite: some of its weights are not (written into them)"
            )
        rows = np.flatnonzero(~finite.all(axis=1))
        limit = np.finfo(outputs.dtype).max
        raise NonFiniteError(
            f"the network's outputs are not finite for {len(rows)} of {len(outputs)} rows (the first is row "
            f"{rows[0]}): a layer's weighted sums overflowed the {outputs.dtype} range (about {limit:.1e}); "
            "scale the features"
        )
    return outputs

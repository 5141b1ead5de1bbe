"""A Keras-style model: ``Sequential`` layers, ``compile``, ``fit``, ``evaluate``, ``predict`` and ``summary``.

It is a thin shell over fastbp's one training engine (:class:`fastbp._training.Trainer`,
the same as :func:`fastbp.train`'s): the last ``Dense`` layer (with the ``Activation``
after it, if any) becomes the output layer, the others the hidden layers, and each
``fit`` continues the same trainer, its optimizer's memory and its counters.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy

from ._api import new_trainer
from ._backends import get_backend
from ._concepts import LOSSES as KERNEL_LOSSES
from ._concepts import OUTPUTS
from ._constants import LOG_FLOOR
from ._files import read_keras_weights, write_keras_weights
from ._layout import as_image
from ._model import Model
from ._parallel import as_threads
from ._sparse import is_sparse
from ._training import NonFiniteError, Options, Shuffling, Trainer
from ._validate import (
    RandomSource,
    as_count,
    as_finite,
    as_flag,
    as_inputs,
    as_sample_weight,
    finite_in,
    one_hot,
    real_numbers,
)
from .layers import (
    Activation,
    Dense,
    Input,
    LayerSpec,
    WeightedLayer,
    activation_name,
    as_row_shape,
    build_layers,
    declared_input_shape,
    from_config,
    input_shape_of,
    layer_config,
    layer_list,
    layer_named,
    not_a_layer,
)
from .optimizers import BY_CLASS_NAME, OPTIMIZERS, SGD, Adam, RMSprop, from_keras

#: Keras's names of the share of rows classed right, each the name of its entry in the logs and the history.
ACCURACY_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")

#: Keras's loss names, as fastbp's losses.
LOSSES = {
    "categorical_crossentropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "binary_crossentropy": "cross_entropy",
    "mse": "mse",
    "mean_squared_error": "mse",
}
#: Keras's other names for those losses: its classes' (``compile`` takes an object of the class too) and an alias.
LOSS_ALIASES = {
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "MeanSquaredError": "mse",
    "MSE": "mse",
}
#: The output activation each of Keras's cross-entropies takes (fastbp's is the categorical one over a softmax,
#: each unit's binary one over sigmoid units).
CROSS_ENTROPY_OUTPUTS = {
    "categorical_crossentropy": "softmax",
    "sparse_categorical_crossentropy": "softmax",
    "binary_crossentropy": "sigmoid",
}
#: How a model comes to know its input shape, for the messages that say it does not.
GIVE_INPUT_SHAPE = "give the first layer input_shape=, call build(input_shape), or fit it"
#: The output activations fastbp trains, by Keras's names.
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "identity")


def _fits(loss: str, output: str) -> bool:
    """Whether Keras's ``loss`` trains an output layer of activation ``output`` in fastbp."""
    return LOSSES[loss] in OUTPUTS[output].losses and CROSS_ENTROPY_OUTPUTS.get(loss, output) == output


def _refuse_misfits(loss: str, metrics: Sequence[str], output: str) -> None:
    """Refuse Keras's ``loss``, or an accuracy among ``metrics``, for an output layer of activation ``output``
    (fastbp's name) that they do not fit, in Keras's terms."""
    if metrics and output == "identity":
        raise ValueError("accuracy needs a softmax or sigmoid output layer: a linear one has no classes")
    if not _fits(loss, output):
        fits = [name for name in LOSSES if _fits(name, output)]
        keras_name = "linear" if output == "identity" else output
        raise ValueError(f"loss {loss!r} does not fit a {keras_name} output layer: use {' or '.join(map(repr, fits))}")


@dataclass
class History:
    """What ``fit`` returns, as Keras's: ``history`` maps each metric to its value per epoch; ``model`` is the
    model that trained."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    model: Sequential | None = field(default=None, repr=False, compare=False)


class Sequential:
    """A stack of :mod:`fastbp.layers` layers, trained with Keras's methods by fastbp's kernels.

    Parameters
    ----------
    layers : list of fastbp.layers layers, optional
        The layers in order; the last ``Dense`` (with an ``Activation`` after it, if
        any) is the output layer: softmax, sigmoid or linear.
    seed : int or None
        Seeds the initial weights (each layer's initializers: Keras's ``glorot_uniform``
        kernels and zero biases where it names none), the shuffling and the dropout
        masks: the same seed gives the same weights, on any number of threads.  (Keras
        seeds these with ``keras.utils.set_random_seed``.)
    name : str
        Shown by ``summary``.
    """

    def __init__(self, layers: Sequence[LayerSpec] | None = None, *, seed: int | None = None, name: str = "sequential"):
        self._layers: list[LayerSpec] = []  # as added, an Input among them
        self.name = name
        self._random = RandomSource(seed)
        self._compiled: dict | None = None
        self._trainer: Trainer | None = None
        #: Set by a callback during ``fit`` to stop training after the epoch, as in Keras.
        self.stop_training = False
        #: The last ``fit``'s :class:`History`, as Keras keeps it (None before any).
        self.history: History | None = None
        for layer in () if layers is None else layer_list(layers):
            self.add(layer)

    @property
    def trainable(self) -> bool:
        """True: fastbp trains every weight of a model (Keras's ``trainable = False``, freezing, is not offered)."""
        return True

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not value:
            raise ValueError("fastbp trains every weight of a model: trainable=False (freezing) is not supported")

    def add(self, layer: LayerSpec) -> None:
        """Append ``layer`` (before the model is built); one without a name is named after its class, as Keras
        names it (``conv2d``, ``conv2d_1``, ...: ``model.layers`` holds that named copy)."""
        if not isinstance(layer, LayerSpec):
            raise TypeError(not_a_layer(layer))
        if self._trainer is not None:
            raise ValueError("the model is built: layers cannot be added any more")
        names = {spec.name for spec in self._layers}
        if layer.name in names:
            raise ValueError(f"the model has a layer named {layer.name!r} already: layer names must be unique")
        if isinstance(layer, Input) and self._layers:
            raise ValueError(f"only the first layer may be an Input, and this model has {len(self._layers)} already")
        if layer.name is None:
            base = "input_layer" if isinstance(layer, Input) else _snake_case(type(layer).__name__)
            layer = replace(layer, name=next(name for name in _numbered(base) if name not in names))
        self._layers.append(layer)

    @property
    def layers(self) -> list[LayerSpec]:
        """The layers, named, as Keras lists them: without an ``Input``."""
        return [spec for spec in self._layers if not isinstance(spec, Input)]

    def get_layer(self, name: str | None = None, index: int | None = None) -> LayerSpec:
        """The layer named ``name``, or at ``index`` of :attr:`layers` (one of the two), as Keras's ``get_layer``."""
        layers = self.layers
        if (name is None) == (index is None):
            raise ValueError(f"give get_layer a layer's name or its index, not both or neither (name={name!r}, "
                             f"index={index!r})")  # fmt: skip
        if index is not None:
            if not isinstance(index, Integral) or isinstance(index, bool) or not -len(layers) <= index < len(layers):
                raise ValueError(f"index must be an integer in [{-len(layers)}, {len(layers)}), got {index!r}")
            return layers[index]
        found = next((spec for spec in layers if spec.name == name), None)
        if found is None:
            raise ValueError(f"no layer is named {name!r}; the layers are {[spec.name for spec in layers]}")
        return found

    @property
    def optimizer(self) -> Adam | SGD | RMSprop | None:
        """The compiled optimizer (None before ``compile``; a copy of the one given), as Keras's
        ``model.optimizer``: a callback may set its ``learning_rate`` (as Keras's ``LearningRateScheduler`` and
        ``ReduceLROnPlateau`` do), which ``fit`` applies from the next epoch to start."""
        return None if self._compiled is None else self._compiled["optimizer"]

    def compile(
        self,
        optimizer: str | Adam | SGD | RMSprop | object = "rmsprop",
        loss: str = "categorical_crossentropy",
        metrics: Sequence[str] | None = None,
        *,
        dtype: str = "float32",
        backend: str = "auto",
    ) -> None:
        """Choose the optimizer (``"rmsprop"``, Keras's default; ``"adam"``; ``"sgd"``; or an ``RMSprop``,
        ``Adam`` or ``SGD`` with settings, fastbp's or Keras's own), the loss (``"categorical_crossentropy"`` or
        ``"sparse_categorical_crossentropy"`` for a softmax output, which both take integer or one-hot labels;
        ``"binary_crossentropy"`` for sigmoid units; ``"mse"``), the metrics (the accuracy, by any of Keras's
        names for it, which name its logs), and fastbp's precision (float32, Keras's, by default) and backend.
        Compiling a built model keeps its weights (converted to ``dtype``, where that changes) and starts a fresh
        optimizer."""
        if isinstance(optimizer, str):
            if optimizer.lower() not in OPTIMIZERS:  # Keras's names in any case: "adam", "Adam"
                raise ValueError(f"unknown optimizer {optimizer!r}: fastbp offers {tuple(OPTIMIZERS)}")
            optimizer = OPTIMIZERS[optimizer.lower()]()
        # A copy, which this model's callbacks may change without changing another model's.
        optimizer = replace(optimizer) if isinstance(optimizer, tuple(OPTIMIZERS.values())) else from_keras(optimizer)
        loss = _loss_name(loss)
        metrics = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics or []))
        hidden, _, output = self._output_layer()
        for metric in metrics:
            if not isinstance(metric, str) or metric not in ACCURACY_NAMES:
                raise ValueError(f"unknown metric {metric!r}: fastbp offers the accuracy, as {ACCURACY_NAMES}")
        _refuse_misfits(loss, metrics, output)
        get_backend(backend)  # an unknown or missing backend is refused now, not at the first fit
        options = Options.create(layers=hidden, output=output, loss=LOSSES[loss], dtype=dtype, backend=backend,
                                 **optimizer.options())  # fmt: skip
        if self._trainer is not None:
            # Compiling a built model again, as in Keras, keeps its weights and starts a fresh optimizer.
            trainer = self._trainer
            weights = trainer.weights.astype(options.dtype, copy=False)
            self._trainer = Trainer(options, trainer.layout, weights, trainer.shuffle, trainer.dropout_seed)
        self._compiled = {
            "optimizer": optimizer, "loss": loss, "metrics": metrics, "dtype": options.dtype, "backend": backend,
        }  # fmt: skip

    def _output_layer(self) -> tuple[list[LayerSpec], int, str]:
        """The hidden layers, and the output layer's units and activation (fastbp's name)."""
        specs = list(self._layers)
        activation = None
        if specs and isinstance(specs[-1], Activation):
            activation = specs.pop().activation
            if activation_name(activation, "Activation") == "identity":  # Keras's linear changes nothing
                activation = None
        if not specs or not isinstance(specs[-1], Dense):
            raise ValueError("the last layer must be a Dense layer (with its activation, or an Activation after it)")
        last = specs.pop()
        if activation is not None and last.activation not in (None, "linear"):
            raise ValueError(f"the last Dense layer has activation {last.activation!r} and an Activation after it")
        name = activation_name(activation if activation is not None else last.activation, "the output layer")
        if name not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"the output layer's activation must be softmax, sigmoid or linear, got {name!r}")
        if name == "softmax" and last.units == 1:
            raise ValueError(
                "the output layer is a softmax over 1 unit, which always puts out 1: for two classes, use Dense(1, "
                "activation='sigmoid') with loss='binary_crossentropy', or Dense(2, activation='softmax')"
            )
        return specs, last.units, name

    def _check_output_layer(self, input_shape: tuple[int, ...]) -> None:
        """Refuse the output layer (its Dense, and the Activation after it) for rows of ``input_shape`` as
        ``build_layers`` refuses the others, naming it: a declared input shape that is not its input's, or images
        where it takes vectors."""
        hidden, units, _ = self._output_layer()
        built = build_layers(hidden, input_shape)
        shape = built[-1].out_shape if built else input_shape
        specs = self.layers
        at = max(i for i, spec in enumerate(specs) if isinstance(spec, Dense))  # an Activation may follow it
        for position, its_input in ((at, shape), (at + 1, (units,))):
            spec = specs[position] if position < len(specs) else None
            if spec is not None and spec.input_shape is not None and spec.input_shape != its_input:
                raise ValueError(f"{layer_named(spec, position)}: it declares input_shape {spec.input_shape}, but its "
                                 f"input has shape {its_input}")  # fmt: skip
        if len(shape) != 1:
            raise ValueError(f"{layer_named(specs[at], at)}: Dense takes vectors, but its input is an image of shape "
                             f"{shape}: put a Flatten first")  # fmt: skip

    def _options(self, batch_size: int | None = None, shuffle: bool = False, *, training: bool = True) -> Options:
        """The options of the compiled model; one not compiled is refused for ``training``, and otherwise (to
        be built, or to predict) takes Keras's float32 and the first loss that fits its output layer."""
        if self._compiled is None and training:
            raise RuntimeError("compile the model before training or evaluating it: model.compile(...)")
        hidden, _, output = self._output_layer()
        settings = self._compiled or {"optimizer": RMSprop(), "loss": None, "dtype": "float32", "backend": "auto"}
        loss = settings["loss"]
        if training and loss is not None:  # layers added since compile may have changed the output layer
            _refuse_misfits(loss, settings["metrics"], output)
        elif loss is not None and not _fits(loss, output):
            loss = None  # predicting needs no loss
        # init "glorot" is Keras's defaults: glorot_uniform kernels, zero biases (a layer's initializers win).
        return Options.create(
            layers=hidden, output=output, loss=LOSSES.get(loss), dtype=settings["dtype"],
            backend=settings["backend"], batch_size=batch_size, shuffle=shuffle, init="glorot",
            **settings["optimizer"].options(),
        )  # fmt: skip

    @property
    def built(self) -> bool:
        """Whether the weights exist: after ``build``, the first ``fit``, or anything that needs them (``predict``,
        ``get_weights``, ``set_weights``, ``save``) where the layers declare their input shape."""
        return self._trainer is not None

    def build(self, input_shape: Sequence[int] | None = None) -> None:
        """Initialise the weights for input rows of ``input_shape``, or the shape the first layer declares;
        before ``compile``, in float32 (Keras's).  Keras's batch axis first is taken too: ``None``, or a batch
        size before an image's three axes (``(32, 28, 28, 1)``; a row's shape has at most three)."""
        if input_shape is not None:
            shape = tuple(input_shape)
            batch_axis = bool(shape) and (shape[0] is None or len(shape) == 4)
            input_shape = as_row_shape(shape[1:] if batch_axis else shape, "build")
            built = self._trainer.layout.input_shape if self._trainer is not None else None
            if built is not None and input_shape != built:
                raise ValueError(f"the model is built for inputs of shape {(None, *built)}: it cannot be built for "
                                 f"{(None, *input_shape)}")  # fmt: skip
        self._ensure_built(input_shape, self._options(training=False))

    def _ensure_built(self, input_shape, options: Options) -> None:
        if self._trainer is not None:
            return
        shape = input_shape or self._known_input_shape()
        if shape is None:
            raise ValueError(f"the model is not built and does not know its input shape: {GIVE_INPUT_SHAPE}")
        _, units, _ = self._output_layer()
        self._check_output_layer(tuple(shape))
        # Every layer's initializers, the output layer's too; unset, the options' init: Keras's defaults.
        initializers = [spec.initializers for spec in self._layers if isinstance(spec, WeightedLayer)]
        self._trainer = new_trainer(options, tuple(shape), units, self._random, initializers=initializers)

    def _known_input_shape(self) -> tuple[int, ...] | None:
        """The built network's input shape, else the one its first layer declares (None where neither)."""
        return self._trainer.layout.input_shape if self._trainer is not None else declared_input_shape(self._layers)

    def _input_shape_of(self, x) -> tuple[int, ...]:
        return self._trainer.layout.input_shape if self._trainer is not None else input_shape_of(self._layers, x)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike | None = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: Sequence[object] | None = None,
        validation_split: float = 0.0,
        validation_data: tuple[ArrayLike, ...] | None = None,
        shuffle: bool = True,
        class_weight: dict[int, float] | None = None,
        sample_weight: ArrayLike | None = None,
        initial_epoch: int = 0,
        *,
        validation_batch_size: int | None = None,
        validation_freq: int | Sequence[int] = 1,
        n_threads: int | None = None,
    ) -> History:
        """Train for ``epochs`` epochs of batches of ``batch_size`` rows (Keras's default 32), in a fresh order
        each epoch when ``shuffle``; report each epoch's mean loss and accuracy over its batches as they
        trained (with dropout, each batch before its update, as Keras does; a network of dense layers alone
        measures its accuracy over the training data after the epoch), and the loss and metrics on
        ``validation_data`` after each epoch (or, without it, on the last ``validation_split`` of the rows, which
        then do not train, as Keras takes them: before any shuffling).

        ``verbose``: 0 silent, 1 (``"auto"``) a progress bar over each epoch's steps (its batches, as Keras counts them)
        and a line per epoch, 2 the lines only.  ``callbacks``: objects with any of Keras's training callback methods,
        called as Keras calls them (``set_model``, ``set_params``, ``on_train_begin``, ``on_epoch_begin``,
        ``on_train_batch_begin``, ``on_train_batch_end`` with the epoch's loss and accuracy so far, ``on_epoch_end``
        with the epoch's logs, ``on_train_end``); one that sets the model's ``stop_training`` stops training after that
        batch or epoch, as Keras's ``EarlyStopping`` does (Keras checks it after every batch: set before an epoch, the
        epoch trains one batch).  Per-batch callbacks make each kernel call train one batch (the same weights; slower,
        most for small dense networks, which otherwise train many epochs per call).  ``sample_weight`` (one per row, or
        a column) or ``class_weight`` (by class label, 1 for the classes it leaves out; not both, as in Keras) scales
        each training row's loss and gradient; the reported loss is the weighted sum over the rows' count, the training
        accuracy unweighted.  The validation is weighted as ``evaluate`` weighs rows by ``validation_data``'s third
        entry, or by the split-off rows' ``sample_weight``, as Keras's; ``validation_freq`` validates every that many
        epochs, or after the epochs listed (counted from 1), as Keras's (``validation_batch_size`` is accepted for
        Keras's sake).  ``initial_epoch``: the number of the first epoch, as Keras's (resuming a training: epochs
        ``initial_epoch`` to ``epochs - 1`` run).  ``x`` and ``y`` are arrays (``y`` defaults to None, as Keras's,
        whose generators and datasets carry their targets: fastbp refuses those, saying so).  Returns a
        :class:`History`.
        """
        _arrays_only(x)
        batch_size = 32 if batch_size is None else batch_size
        epochs = as_count(epochs, "epochs")
        initial_epoch = as_count(initial_epoch, "initial_epoch")
        verbose = 1 if verbose == "auto" else verbose
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        callbacks = _callbacks(callbacks)
        validates = _validation_epochs(validation_freq)
        if validation_batch_size is not None:
            as_count(validation_batch_size, "validation_batch_size", positive=True)
        if isinstance(shuffle, Integral) and not isinstance(shuffle, bool):
            shuffle = bool(shuffle)  # as Keras, which shuffles for any true value
        options = self._options(batch_size, shuffle)
        shape = self._input_shape_of(x)
        X, targets = self._data(x, y, shape, options)
        weighted = sample_weight is not None  # the split-off rows' weights validate, as in Keras (class weights not)
        sample_weight = self._row_weights(targets, sample_weight, class_weight)
        validation = None
        if validation_data is not None:  # checked before anything trains
            if not isinstance(validation_data, tuple | list) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, weights)")
            try:
                validation = (*self._data(*validation_data[:2], shape, options), None)
            except (ValueError, TypeError) as error:  # said of validation_data, not of the rows that train
                raise type(error)(f"validation_data: {error}") from None
            if len(validation_data) == 3 and validation_data[2] is not None:
                weights = _scoring_weights(validation_data[2], len(validation[0]), "validation_data's sample_weight")
                validation = (*validation[:2], weights)
        elif as_finite(validation_split, "validation_split"):
            X, targets, sample_weight, validation = _split(X, targets, sample_weight, validation_split, weighted)
        self._ensure_built(shape, options)
        shuffling = self._trainer.shuffle or (Shuffling(self._random.numpy()) if shuffle else None)
        self._trainer = self._trainer.continued(options, shuffling if shuffle else None)
        gradient_scale = self._kernel_loss_scale() / self._keras_loss_terms()
        training_weights = sample_weight * gradient_scale if gradient_scale != 1 else sample_weight
        history = History(params={"epochs": epochs, "steps": -(-len(X) // batch_size), "verbose": verbose}, model=self)
        self.history = history  # as Keras's, each epoch's logs are there as it ends, whatever ends the fit
        threads = as_threads(n_threads)
        counted = [] if self._trainer.layout.dense_only else self._compiled["metrics"]
        batch_callbacks = _BatchCallbacks(self, callbacks, counted)
        self.stop_training = False
        _call(callbacks, "set_model", self)
        _call(callbacks, "set_params", dict(history.params))
        _call(callbacks, "on_train_begin", {})
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            _call(callbacks, "on_epoch_begin", epoch, {})
            rate = self.optimizer.learning_rate  # checked when set
            if rate != self._trainer.options.lr:  # set by a callback, as Keras's LearningRateScheduler sets it
                self._trainer.options = replace(self._trainer.options, lr=rate)
            # Keras checks stop_training after every batch: set already, the epoch trains one batch.
            batches = batch_callbacks if self.stop_training or _has_batch_hooks(callbacks) else None
            started = time.perf_counter()
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            right: list[int] = []
            before = self._trainer.snapshot()
            try:
                with _StepBar(history.params["steps"]) if verbose == 1 else contextlib.nullcontext(False) as bar:
                    losses = self._trainer.run(
                        X,
                        targets,
                        training_weights,
                        1,
                        n_threads=threads,
                        progress=bar,
                        right=right,
                        batches=batches,
                        first_epoch=epoch + 1,  # as the epoch lines count
                    )
            except NonFiniteError as error:  # the model goes on from where the epoch began, not from NaN weights
                self._trainer.restore(before)
                raise NonFiniteError(f"{error}; the model keeps its weights from before that epoch") from None
            trained = len(X) if batches is None else batches.rows  # fewer where a callback stopped the epoch
            logs = {"loss": self._reported_loss(losses[0], trained)}
            if self._compiled["metrics"]:  # as Keras: over the epoch's training passes (a dense network's: after)
                accuracy = right[0] / trained if right else self._accuracy(self._forward(X, threads), targets)
                logs.update(dict.fromkeys(self._compiled["metrics"], accuracy))
            if validation is not None and validates(epoch + 1):
                val = self._scores(*validation, threads)
                logs.update({f"val_{name}": value for name, value in val.items()})
            seconds = time.perf_counter() - started
            # The callbacks first, which may add to the logs (Keras's LearningRateScheduler adds the rate), as
            # Keras's history and progress bar come after them.
            _call(callbacks, "on_epoch_end", epoch, logs)
            for name, value in logs.items():
                history.history.setdefault(name, []).append(value)
            history.epoch.append(epoch)
            if verbose:
                print(_epoch_line(history.params["steps"], seconds, logs), flush=True)
            if self.stop_training:
                break
        _call(callbacks, "on_train_end", dict(logs))
        return history

    def _row_weights(self, targets: np.ndarray, sample_weight, class_weight) -> np.ndarray:
        """Each row's weight in training (of the targets' dtype): ``sample_weight``, or by the row's class from
        ``class_weight`` as Keras maps them, or 1."""
        if class_weight is None:
            return as_sample_weight(_one_per_row(sample_weight), len(targets), targets.dtype)
        if sample_weight is not None:
            raise ValueError("give fit sample_weight or class_weight, not both (as Keras)")
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be a dict of labels to weights, got {type(class_weight).__name__}")
        _, units, output = self._output_layer()
        if output == "identity":
            raise ValueError("class_weight needs a softmax or sigmoid output, which classes; this one is linear")
        n_classes = 2 if units == 1 else units
        weights = np.ones(n_classes)
        for label, weight in class_weight.items():
            if not isinstance(label, Integral) or isinstance(label, bool) or not 0 <= label < n_classes:
                raise ValueError(f"class_weight's classes must be labels in [0, {n_classes}), got {label!r}")
            weights[label] = as_finite(weight, f"class_weight[{label}]")
            if weights[label] < 0:
                raise ValueError(f"class_weight[{label}] must be non-negative, got {weight!r}")
        row_weights = weights[_classes(targets)]
        if not row_weights.any():
            raise ValueError("class_weight gives every row of y a weight of 0: nothing would train")
        return as_sample_weight(row_weights, len(targets), targets.dtype)

    def _data(self, x, y, shape: tuple[int, ...], options: Options) -> tuple[np.ndarray, np.ndarray]:
        """``x`` as the kernels' rows of ``shape``, and ``y`` as their targets (:meth:`_targets`)."""
        X = as_inputs(x, shape, np.dtype(options.dtype))
        return X, self._targets(y, len(X), options)

    def _targets(self, y, n_rows: int, options: Options) -> np.ndarray:
        """The target matrix of ``y``: integer class labels or one-hot rows for a softmax; 0/1 values for one
        sigmoid unit (a binary classifier), else class labels; values for a linear output."""
        _, units, output = self._output_layer()
        dtype = np.dtype(options.dtype)
        values = np.asarray(y)
        if values.ndim == 0:  # None, a dict, a dataset: fit takes arrays
            raise TypeError(f"y must be an array of one target per row of x, got {type(y).__name__}")
        if values.dtype == object and all(isinstance(value, Real) for value in values.ravel().tolist()):
            values = values.astype(np.float64)  # numbers held as objects (a pandas Series of them): as numbers
        if len(values) != n_rows:
            raise ValueError(f"y has {len(values)} rows, x has {n_rows}")
        if output == "sigmoid" and units == 1:
            flat = values.reshape(n_rows, -1)
            if flat.shape[1] != 1:
                raise ValueError(f"y must be one 0 or 1 per row for one sigmoid output unit, got shape {values.shape}")
            if values.dtype.kind not in "biuf" or not np.isin(flat, (0, 1)).all():
                raise ValueError(f"y must be 0 or 1 for one sigmoid output unit, got {_first_other(flat, (0, 1))}")
            return np.require(flat.astype(dtype), requirements=["C", "W"])
        if output == "identity":
            values = values.reshape(n_rows, -1) if values.ndim == 1 else values
            if values.shape != (n_rows, units):
                raise ValueError(f"y must be {units} number(s) per row, got shape {values.shape}")
            if values.dtype.kind not in "biuf" or not np.isfinite(values).all():
                raise ValueError(f"y must be finite numbers, got {_first_other(values, whole=False)}")
            return np.require(values.astype(dtype), requirements=["C", "W"])
        labels = _labels(values, units)
        return one_hot(labels, units, dtype)

    def _forward(self, X: np.ndarray, n_threads: int) -> np.ndarray:
        return self._model().forward(X, n_threads=n_threads)

    def _model(self) -> Model:
        """The network as a :class:`fastbp.Model`, sharing the trainer's weights."""
        self._built_layout()
        trainer = self._trainer
        _, units, output = self._output_layer()
        # One sigmoid unit classifies two classes, 0 and 1 (the unit's probability is the second's).
        classes = None if output == "identity" else np.arange(2 if units == 1 else units)
        options = {**trainer.options.to_dict(), "sequential": self.get_config()}
        return Model(trainer.layout, trainer.weights, classes, np.zeros(0), trainer.backend, options=options)

    def _keras_loss_terms(self) -> int:
        """The terms Keras's loss averages each row's over: the outputs for its squared error and binary
        cross-entropy (whose terms fastbp's losses sum), one for its categorical cross-entropy."""
        options = self._trainer.options
        return self._trainer.layout.layers[-1].n_out if options.loss == "mse" or options.output == "sigmoid" else 1

    def _kernel_loss_scale(self) -> float:
        """The loss the kernels report over the one whose gradient they take (2 for the squared error, whose
        gradient they take of the half): training rows weighted by this over :meth:`_keras_loss_terms` take the
        steps of Keras's loss."""
        return KERNEL_LOSSES[self._trainer.options.loss].reported_scale

    def _reported_loss(self, summed: float, rows: int) -> float:
        """Keras's loss of ``rows`` training rows, from the kernels' ``summed`` over them (the rows weighted as
        ``fit`` weighs them)."""
        return float(summed) / (rows * self._kernel_loss_scale())

    @staticmethod
    def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
        """The share of rows whose class is right (:func:`_classes`)."""
        return float(np.mean(_classes(outputs) == _classes(targets)))

    def _scores(
        self, X: np.ndarray, targets: np.ndarray, weights: np.ndarray | None, n_threads: int
    ) -> dict[str, float]:
        """The loss and the metrics on checked rows ``X`` and their ``targets``, as Keras's with ``weights`` (None:
        each 1): the loss's weighted sum over the rows' count; the accuracy unweighted (Keras weighs only its
        ``weighted_metrics``)."""
        outputs = self._model().forward(X, n_threads=n_threads).astype(np.float64)
        if self._trainer.options.loss == "cross_entropy":
            if self._trainer.options.output == "sigmoid":  # each unit's binary one, clipped as the kernels clip it
                eps = np.finfo(self._trainer.options.dtype).eps
                p = np.clip(outputs, eps, 1 - eps)
                losses = -np.sum(xlogy(targets, p) + xlogy(1 - targets, 1 - p), axis=1)
            else:
                losses = -np.sum(targets * np.log(np.maximum(outputs, LOG_FLOOR)), axis=1)
        else:
            losses = np.sum((targets - outputs) ** 2, axis=1)
        losses /= self._keras_loss_terms()
        scores = {"loss": float((losses if weights is None else weights * losses).sum() / len(X))}
        if self._compiled["metrics"]:
            scores.update(dict.fromkeys(self._compiled["metrics"], self._accuracy(outputs, targets)))
        return scores

    def evaluate(
        self, x: ArrayLike, y: ArrayLike | None = None, batch_size: int | None = None, verbose: int | str = "auto",
        sample_weight: ArrayLike | None = None, *, return_dict: bool = False, n_threads: int | None = None,
    ) -> float | list[float] | dict[str, float]:  # fmt: skip
        """The loss on ``x`` and ``y`` (the mean over rows), then each metric: a list when there are metrics,
        as Keras returns, or with ``return_dict`` a dict by their names (``loss``, then the metrics' as
        ``compile`` named them).  With
        ``sample_weight`` (one per row, or a column), as Keras: the loss is the rows' weighted sum over their count, the
        accuracy the share of rows classed right, unweighted; ``verbose`` prints them.  ``batch_size`` is checked
        as Keras checks it and changes nothing (the rows run in the kernels' own chunks)."""
        if self._compiled is None:
            raise RuntimeError("compile the model before evaluating it: model.compile(...)")
        self._options()  # refuses a loss or metrics that layers added since compile no longer fit
        _arrays_only(x)
        _check_keras_only(batch_size, verbose)
        layout = self._built_layout()
        X, targets = self._data(x, y, layout.input_shape, self._trainer.options)
        weights = None if sample_weight is None else _scoring_weights(sample_weight, len(X), "sample_weight")
        scores = self._scores(X, targets, weights, as_threads(n_threads))
        if verbose:
            print(" - ".join(f"{name}: {value:.4f}" for name, value in sorted(scores.items())))
        return _as_keras_returns(scores, return_dict)

    def predict(
        self, x: ArrayLike, batch_size: int | None = None, verbose: int | str = 0, *, n_threads: int | None = None
    ) -> np.ndarray:
        """The output layer's values for each row of ``x`` (class probabilities for a softmax); the predicted
        classes are ``predict(x).argmax(axis=1)``.  ``x`` is a batch of rows, each of the input shape (an image
        ``(height, width, channels)``) or flattened.  ``batch_size`` and ``verbose`` are checked as Keras checks
        them and change nothing (the rows run in the kernels' own chunks, silently)."""
        _arrays_only(x)
        _check_keras_only(batch_size, verbose)
        return self._forward(x, as_threads(n_threads))

    def __call__(self, x: ArrayLike, training: bool | None = None) -> np.ndarray:
        """``predict(x)``, as calling a Keras model gives its outputs (here an array, not a tensor); fastbp
        applies dropout inside ``fit`` only, so ``training=True`` is refused."""
        if training:
            raise ValueError("fastbp applies dropout inside fit only: call the model with training=False")
        return self.predict(x)

    def predict_on_batch(self, x: ArrayLike) -> np.ndarray:
        """``predict(x)``, as Keras's ``predict_on_batch``."""
        return self.predict(x)

    def test_on_batch(
        self, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """``evaluate`` on the rows given, as Keras's ``test_on_batch``."""
        return self.evaluate(x, y, verbose=0, sample_weight=sample_weight, return_dict=return_dict)

    def train_on_batch(
        self,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        class_weight: dict[int, float] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """One update on the rows given, as one batch (Keras's ``train_on_batch``): a ``fit`` of one epoch of one
        batch, in order, that leaves ``model.history`` and ``stop_training`` as they were.  Returns the batch's
        loss and metrics as it trained (before the update; a network of dense layers alone counts its accuracy
        after it, as ``fit`` does), as ``evaluate`` returns them."""
        shape = getattr(x, "shape", None)  # arrays, sparse matrices and DataFrames; len() for lists
        try:
            rows = shape[0] if shape else len(x)
        except TypeError:  # fit refuses such an x, naming what it is
            rows = 1
        kept, stopping = self.history, self.stop_training
        try:
            history = self.fit(x, y, batch_size=max(rows, 1), epochs=1, verbose=0, shuffle=False,
                               sample_weight=sample_weight, class_weight=class_weight)  # fmt: skip
        finally:
            self.history, self.stop_training = kept, stopping
        return _as_keras_returns({name: values[0] for name, values in history.history.items()}, return_dict)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The shape of the input, ``(None, *row_shape)`` as Keras gives it; an AttributeError (as Keras's) where
        the model does not know it yet."""
        shape = self._known_input_shape()
        if shape is None:
            raise AttributeError(f"the model has no input shape yet: {GIVE_INPUT_SHAPE}")
        return (None, *shape)

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """The shape of the output, ``(None, units)`` of the output layer, as Keras gives it; an AttributeError
        (as Keras's) where the model has no output layer yet."""
        try:
            return (None, self._output_layer()[1])
        except ValueError as error:
            raise AttributeError(f"the model has no output shape yet: {error}") from None

    def count_params(self) -> int:
        """The number of weights and biases (known once the input shape is)."""
        return self._trainer.layout.n_weights if self._trainer is not None else sum(p for _, _, p in self._rows())

    def _rows(self) -> list[tuple[str, tuple[int, ...], int]]:
        """Each layer's name and class, output shape and parameter count, of a network ``fit`` would take (or of
        the layers so far, where the model has no output layer yet)."""
        shape = self._known_input_shape()
        if shape is None:
            raise ValueError(f"the model does not know its input shape: {GIVE_INPUT_SHAPE}")
        if self._trainer is None:  # refused as fit would refuse it, the layer and the shapes named
            try:
                _, units, _ = self._output_layer()
            except ValueError:  # a model still being put together: its layers so far
                build_layers(self._layers, shape)
            else:
                self._check_output_layer(shape)
                self._options(training=False).layout(shape, units)
        rows = []
        for spec in self.layers:
            layer = spec.build(shape) if not isinstance(spec, Activation) else None
            shape = layer.out_shape if layer is not None else shape
            rows.append((f"{spec.name} ({type(spec).__name__})", shape, layer.n_weights if layer is not None else 0))
        return rows

    def summary(self, print_fn=None) -> None:
        """Print each layer's name, output shape and parameter count, and the total, as Keras's summary."""
        rows = self._rows()
        total = sum(params for _, _, params in rows)
        width = max(32, *(len(name) + 2 for name, _, _ in rows))
        rule = width + 36
        lines = [
            f'Model: "{self.name}"',
            "_" * rule,
            f" {'Layer (type)':<{width}}{'Output Shape':<26}Param #",
            "=" * rule,
        ]
        for name, shape, params in rows:
            lines.append(f" {name:<{width}}{str((None, *shape)):<26}{params:,}")
        lines += ["=" * rule, f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0",
                  "_" * rule]  # fmt: skip
        (print_fn or print)("\n".join(lines))

    def get_weights(self) -> list[np.ndarray]:
        """Each layer's weights as Keras orders them: a convolution's kernel ``(kh, kw, c_in, c_out)`` and bias,
        a dense layer's kernel ``(n_in, n_out)`` and bias (copies)."""
        layout, weights = self._built_layout(), []
        for layer, block in zip(
            [layer for layer in layout.layers if layer.units], layout.layer_views(self._trainer.weights)
        ):
            kernel = block[:, :-1].T
            if layer.kind == "conv2d":
                kernel = kernel.reshape(*layer.kernel, as_image(layer.in_shape)[2], layer.units)
            weights += [kernel.copy(), block[:, -1].copy()]
        return weights

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Set every layer's weights from arrays in ``get_weights``' order and shapes (Keras's)."""
        layout = self._built_layout()
        current = self.get_weights()
        if len(weights) != len(current):
            raise ValueError(f"{len(weights)} arrays given, the model has {len(current)}")
        dtype = self._trainer.weights.dtype
        arrays = []
        for given, expected in zip(weights, current):
            if np.shape(given) != expected.shape:
                raise ValueError(f"an array of shape {np.shape(given)} given where {expected.shape} is expected")
            arrays.append(finite_in(real_numbers(given, "the weights"), dtype, "the weights"))
        blocks = layout.layer_views(self._trainer.weights)
        for k, block in enumerate(blocks):
            kernel, bias = arrays[2 * k], arrays[2 * k + 1]
            block[:, :-1] = kernel.reshape(-1, block.shape[0]).T
            block[:, -1] = bias

    def save_weights(self, filepath: str | os.PathLike, overwrite: bool = True) -> None:
        """Write the layers' weights to a Keras 3 weights file (``*.weights.h5``), which Keras's ``load_weights``
        reads into a model of the same layers, as :meth:`load_weights` reads Keras's.

        Each layer's arrays (``get_weights``' kernel and bias) go where Keras keeps
        them: under its class's name, numbered among the model's layers of that class
        (``layers/conv2d``, ``layers/conv2d_1``...), whatever the layer's own name.  The
        optimizer's state is not written.  ``overwrite=False`` refuses an existing file
        (``FileExistsError``).  Needs h5py (``pip install "fastbp[keras]"``).
        """
        path = _weights_file(filepath)
        if not as_flag(overwrite, "overwrite") and os.path.lexists(path):
            raise FileExistsError(f"{os.fspath(path)} exists, and overwrite=False")
        layers = [(place, spec.name, arrays) for place, spec, arrays in self._keras_places()]
        write_keras_weights(path, self.name, layers)

    def load_weights(self, filepath: str | os.PathLike, skip_mismatch: bool = False) -> None:
        """Set the layers' weights from a Keras 3 weights file (``*.weights.h5``: Keras's ``save_weights``, or
        :meth:`save_weights`), each layer's from Keras's place for it (see there).

        A layer whose arrays in the file are missing or of other shapes is named in a
        ``ValueError`` and nothing is set; with ``skip_mismatch=True`` it keeps its
        weights, with a warning, and the others are set.  An optimizer's state in the
        file is not read.  Needs h5py.
        """
        path, skip_mismatch = _weights_file(filepath), as_flag(skip_mismatch, "skip_mismatch")
        places = self._keras_places()
        found = read_keras_weights(path, [(place, [array.shape for array in arrays]) for place, _, arrays in places])
        weights, mismatched = [], []
        for position, ((_place, spec, current), arrays) in enumerate(zip(places, found)):
            if not isinstance(arrays, list):
                mismatched.append(f"{layer_named(spec, position)}: {arrays}")
                arrays = current
            weights += arrays
        if mismatched and not skip_mismatch:
            raise ValueError(f"cannot load the weights in {os.fspath(path)}: {'; '.join(mismatched)}")
        if mismatched:
            warnings.warn(f"{os.fspath(path)}: kept the weights of {'; '.join(mismatched)}", UserWarning, stacklevel=2)
        self.set_weights(weights)

    def _keras_places(self) -> list[tuple[str, LayerSpec, list[np.ndarray]]]:
        """Each layer, where Keras's weights files keep its arrays (``layers/`` and its class's name, numbered among
        the model's layers of that class, as Keras numbers them in its files), and its arrays (``get_weights``')."""
        weights, numbering, places = iter(self.get_weights()), {}, []
        for spec in self.layers:
            base = _snake_case(type(spec).__name__)
            arrays = [next(weights), next(weights)] if isinstance(spec, WeightedLayer) else []
            places.append((f"layers/{next(numbering.setdefault(base, _numbered(base)))}", spec, arrays))
        return places

    def _built_layout(self):
        """The network's layout, building the model first (as Keras builds one whose input shape it knows)."""
        if self._trainer is None:
            self._ensure_built(None, self._options(training=False))
        return self._trainer.layout

    def get_config(self) -> dict:
        """The layers' settings and the compile settings, as JSON values (kept in model files)."""
        compiled = None
        if self._compiled is not None:
            optimizer = self._compiled["optimizer"]
            compiled = {**self._compiled, "optimizer": {"class_name": type(optimizer).__name__, **vars(optimizer)}}
        return {
            "name": self.name,
            "layers": [layer_config(spec) for spec in self._layers],
            "compile": compiled,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> Sequential:
        """A new model of ``config``'s layers (:meth:`get_config`'s), compiled as it says, as Keras's: its
        weights drawn anew (``set_weights`` gives it another model's)."""
        return _from_config(config)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write the model to ``path`` in fastbp's model-file format; ``fastbp.load`` gives back a ``Sequential``
        that predicts the same and can be trained further (with a fresh optimizer).  Keras's own file names
        (``.keras``, ``.h5``) are refused: Keras could not read the file.  ``overwrite=False`` refuses an
        existing file (``FileExistsError``), where Keras would ask."""
        if os.fspath(path).lower().endswith((".keras", ".h5", ".hdf5")):
            raise ValueError(
                f"{os.fspath(path)!r} names a Keras file, but fastbp writes its own model file, which Keras cannot "
                "read: save to another name (such as model.npz); get_weights() gives the weights in Keras's shapes"
            )
        if not as_flag(overwrite, "overwrite") and os.path.lexists(path):
            raise FileExistsError(f"{os.fspath(path)} exists, and overwrite=False")
        self._model().save(path)


def _weights_file(filepath: str | os.PathLike) -> str | os.PathLike:
    """``filepath``, a Keras 3 weights file's name (``*.weights.h5``, as Keras requires), or a ValueError."""
    name = os.fspath(filepath) if isinstance(filepath, str | os.PathLike) else None
    if not isinstance(name, str) or not name.endswith(".weights.h5"):
        raise ValueError(
            f"a weights file's name must end in .weights.h5 (Keras 3's HDF5 weights file), got {filepath!r}; "
            "the whole model goes to fastbp's own file by model.save and comes back by fastbp.load"
        )
    return filepath


def _loss_name(loss) -> str:
    """Keras's loss by its name (``LOSSES``), its class's name, or an object of its class (Keras's own, whose
    settings must be its defaults: ``from_logits`` and the others fastbp lacks are refused by name)."""
    if isinstance(loss, str):
        name = LOSS_ALIASES.get(loss, loss)
        if name not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: fastbp offers {(*LOSSES, *LOSS_ALIASES)}")
        return name
    name = LOSS_ALIASES.get(type(loss).__name__)
    config = loss.get_config() if name is not None and callable(getattr(loss, "get_config", None)) else None
    if not isinstance(config, dict):
        raise TypeError(f"loss must be a name or one of Keras's loss objects {tuple(LOSS_ALIASES)[:4]}, got {loss!r}")
    defaults = {
        "from_logits": False, "label_smoothing": 0.0, "ignore_class": None, "reduction": "sum_over_batch_size",
        "axis": -1,
    }  # fmt: skip
    unsupported = [f"{key}={config[key]!r}" for key, value in defaults.items() if config.get(key, value) != value]
    if unsupported:
        raise ValueError(f"fastbp's {name} has no {', '.join(unsupported)} (Keras's {type(loss).__name__} setting)")
    return name


def _as_keras_returns(scores: dict[str, float], return_dict: bool) -> float | list[float] | dict[str, float]:
    """Scores as Keras's ``evaluate`` and ``*_on_batch`` return them: the loss alone, a list of the loss and the
    metrics, or with ``return_dict`` a dict by their names."""
    if as_flag(return_dict, "return_dict"):
        return scores
    return list(scores.values()) if len(scores) > 1 else scores["loss"]


def _arrays_only(x) -> None:
    """Refuse, with what to do instead, rows that are not an array: a generator, a dataset or another iterable,
    which Keras's ``fit`` takes and fastbp's does not (the kernels train on all the rows at once)."""
    if isinstance(x, Iterable) and not isinstance(x, Sequence) and not hasattr(x, "__array__") and not is_sparse(x):
        raise TypeError(
            f"x must be an array of rows, got {type(x).__name__}: fastbp takes arrays, not generators or datasets "
            "(gather their batches into one array first, as np.concatenate does)"
        )


def _check_keras_only(batch_size, verbose) -> None:
    """Refuse ``predict``'s and ``evaluate``'s Keras arguments where Keras would: they change nothing here."""
    if batch_size is not None:
        as_count(batch_size, "batch_size", positive=True)
    if verbose not in (0, "auto", 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def _epoch_line(steps: int, seconds: float, logs: dict) -> str:
    """The line Keras prints after an epoch: its steps, seconds, time per step (in ms, or us below one) and
    logs."""
    per_step = seconds / steps
    pace = f"{1e3 * per_step:.0f}ms/step" if per_step >= 1e-3 else f"{1e6 * per_step:.0f}us/step"
    shown = {name: f"{value:.4f}" if isinstance(value, Real) else value for name, value in logs.items()}
    line = " - ".join(f"{name}: {value}" for name, value in sorted(shown.items()))
    return f"{steps}/{steps} - {seconds:.0f}s - {pace} - {line}"


def _classes(values: np.ndarray) -> np.ndarray:
    """Each row's class from a classifier's outputs or targets: the largest column's, or, in one sigmoid unit's
    single column, 1 above 0.5."""
    return (values[:, 0] > 0.5).astype(np.intp) if values.shape[1] == 1 else np.argmax(values, axis=1)


def _snake_case(class_name: str) -> str:
    """A layer class's name as Keras names its layers: ``MaxPooling2D`` as ``max_pooling2d``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in class_name).lstrip("_").replace("2_d", "2d")


def _numbered(base: str):
    """``base``, then ``base_1``, ``base_2``, ...: the names Keras gives layers of one class in turn."""
    yield base
    yield from (f"{base}_{k}" for k in itertools.count(1))


#: The methods of Keras's training callbacks that ``fit`` calls (a callback has any of them).
CALLBACK_METHODS = (
    "set_model", "set_params", "on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
    "on_epoch_end", "on_train_end",
)  # fmt: skip


def _callbacks(callbacks) -> list:
    """``fit``'s ``callbacks`` as a list, refused unless a list or tuple of them (or None), each with one of
    Keras's callback methods at least (a function would never be called)."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        raise TypeError(f"callbacks must be a list of callback objects, got {type(callbacks).__name__}")
    for callback in callbacks:
        if not any(callable(getattr(callback, method, None)) for method in CALLBACK_METHODS):
            raise TypeError(
                f"callbacks must be objects with Keras's training callback methods (on_epoch_end, ...), got "
                f"{callback!r}: "
                "wrap a function in keras.callbacks.LambdaCallback, or a class with such a method"
            )
    return list(callbacks)


def _call(callbacks: list, method: str, *args) -> None:
    """Each callback's ``method`` with ``args``, where it has one (Keras's callbacks have all of them)."""
    for callback in callbacks:
        function = getattr(callback, method, None)
        if callable(function):
            function(*args)


def _has_batch_hooks(callbacks: list) -> bool:
    """Whether a callback acts on training batches: Keras's base class marks the methods it leaves empty
    (``_is_default``), and its ``on_train_batch_*`` call the older ``on_batch_*``, which a subclass may define."""
    for callback in callbacks:
        for method, older in (("on_train_batch_begin", "on_batch_begin"), ("on_train_batch_end", "on_batch_end")):
            method, older = getattr(callback, method, None), getattr(callback, older, None)
            if callable(method) and not getattr(method, "_is_default", False):
                return True
            if callable(method) and callable(older) and not getattr(older, "_is_default", False):
                return True
    return False


class _BatchCallbacks:
    """``fit``'s callbacks around each training batch (the trainer's ``BatchHooks``): ``on_train_batch_begin``,
    and ``on_train_batch_end`` with the epoch's loss and accuracy over its batches so far, as Keras's logs."""

    def __init__(self, model: Sequential, callbacks: list, counted: list[str]):
        """``counted``: the names of the metrics the training passes count (none for dense layers alone)."""
        self.model, self.callbacks, self.counted = model, callbacks, counted
        #: The current epoch's rows trained so far.
        self.rows = 0

    def begin(self, batch: int) -> None:
        _call(self.callbacks, "on_train_batch_begin", batch, {})

    def end(self, batch: int, rows: int, loss: float, right: int) -> bool:
        self.rows = rows
        logs = {
            "loss": self.model._reported_loss(loss, rows),
            **dict.fromkeys(self.counted, right / rows),
        }
        _call(self.callbacks, "on_train_batch_end", batch, logs)
        return self.model.stop_training


def _validation_epochs(frequency) -> Callable[[int], bool]:
    """Whether ``fit`` validates after an epoch (counted from 1), by Keras's ``validation_freq``: every that many
    epochs, or those listed."""
    if isinstance(frequency, np.ndarray) and frequency.ndim == 0:
        frequency = frequency.item()
    if isinstance(frequency, Integral) and not isinstance(frequency, bool) and frequency >= 1:
        return lambda epoch: epoch % frequency == 0
    listed = list(frequency) if isinstance(frequency, Sequence | set | frozenset | np.ndarray) else None
    if not listed or any(not isinstance(n, Integral) or isinstance(n, bool) or n < 1 for n in listed):
        raise ValueError(f"validation_freq must be a positive integer or epochs counted from 1, got {frequency!r}")
    return lambda epoch: epoch in listed


def _one_per_row(weights):
    """Rows' weights given as a column, ``(n, 1)``, as the ``(n,)`` they stand for (Keras takes both); anything
    else as it is, for its checks."""
    try:
        values = np.asarray(weights)
    except (TypeError, ValueError):
        return weights
    return values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else weights


def _scoring_weights(weights, n_rows: int, where: str) -> np.ndarray:
    """Weights of rows that are scored (``where`` names them): one finite, non-negative number per row; all zero
    is allowed, as in Keras (a loss of 0, an accuracy of 0)."""
    values = real_numbers(_one_per_row(weights), where)
    if values.shape != (n_rows,):
        raise ValueError(f"{where} must have shape ({n_rows},), got {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{where} must be finite and non-negative")
    return values


def _split(X: np.ndarray, targets: np.ndarray, weights: np.ndarray, fraction: float, weighted: bool):
    """The rows before the last ``fraction`` of them, their targets and weights, and those last rows with their
    targets and (where ``weighted``) weights, as Keras's ``validation_split`` takes them (the first
    ``floor(n * (1 - fraction))`` rows train)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {fraction!r}")
    split_at = math.floor(len(X) * (1.0 - fraction))
    if split_at in (0, len(X)):
        raise ValueError(
            f"{len(X)} rows cannot be split into training and validation rows by validation_split={fraction!r}: "
            "give more rows or another fraction"
        )
    validation = (X[split_at:], targets[split_at:], weights[split_at:].astype(np.float64) if weighted else None)
    return X[:split_at], targets[:split_at], weights[:split_at], validation


class _StepBar:
    """A progress bar over one epoch's ``steps`` batches, which training advances in epochs (its
    ``ProgressBar``); it leaves nothing behind once closed, where the epoch's line follows."""

    def __init__(self, steps: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=steps, unit="step", leave=False)
        self._epochs = 0.0

    def update(self, epochs: float) -> None:
        self._epochs += epochs
        self._bar.update(min(round(self._epochs * self._bar.total), self._bar.total) - self._bar.n)

    def __enter__(self) -> _StepBar:
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()


def _labels(values: np.ndarray, units: int) -> np.ndarray:
    """Class indices from integer labels in ``[0, units)`` or one-hot rows of ``units`` columns."""
    if values.ndim == 2 and values.shape[1] == units and units > 1:
        one_hot = values.dtype.kind in "biuf" and np.isin(values, (0, 1)).all() and (values.sum(axis=1) == 1).all()
        if not one_hot:
            raise ValueError("y's rows must be one-hot (a single 1, the rest 0), or pass integer labels")
        return np.argmax(values, axis=1)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"y must be integer class labels or one-hot rows of {units} columns, got shape {values.shape}")
    if values.dtype.kind not in "iub" and not (
        values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all()
    ):
        raise ValueError(f"y must be integer class labels, from 0 to {units - 1}, got {_first_other(values)}")
    labels = values.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= units):
        raise ValueError(f"y's labels must be in [0, {units}) for an output layer of {units} units, got "
                         f"{labels.min()} to {labels.max()}")  # fmt: skip
    return labels


def _first_other(values: np.ndarray, allowed: tuple | None = None, *, whole: bool = True) -> str:
    """The first of ``values`` not among ``allowed`` (by default: not a finite number, or with ``whole`` not a
    whole one), for an error."""

    def fits(value) -> bool:
        if not isinstance(value, Real):
            return False
        if allowed is not None:
            return value in allowed
        return math.isfinite(value) and (not whole or value == round(value))

    other = next((value for value in values.ravel().tolist() if not fits(value)), None)
    return repr(other) if isinstance(other, Real) else f"{other!r}, not a number"


def _from_config(config: Mapping, backend: str | None = None) -> Sequential:
    """The model ``config`` describes (``Sequential.get_config``'s), compiled for ``backend`` (None: the
    config's)."""
    if not isinstance(config, Mapping) or not isinstance(config.get("layers"), list):
        raise TypeError(f"config must be a Sequential's get_config(), a dict with its layers, got {config!r}")
    sequential = Sequential([from_config(entry) for entry in config["layers"]], name=config.get("name", "sequential"))
    compiled = config.get("compile")
    if compiled:
        optimizer = dict(compiled["optimizer"])
        optimizer_class = BY_CLASS_NAME.get(optimizer.pop("class_name", None))
        if optimizer_class is None:
            raise ValueError(f"the optimizer {compiled['optimizer']!r} is not one fastbp has")
        sequential.compile(optimizer_class(**optimizer), compiled["loss"], compiled["metrics"],
                           dtype=compiled["dtype"], backend=backend or compiled["backend"])  # fmt: skip
    return sequential


def from_model(model: Model) -> Sequential:
    """The ``Sequential`` a model file saved from one describes, with the file's weights."""
    # The backend that load chose predicts (the one that trained it may be missing here).
    sequential = _from_config(model.options["sequential"], model.backend)
    options = replace(sequential._options(training=False), backend=model.backend)  # compiled or not
    _, units, _ = sequential._output_layer()
    if options.dtype != model.dtype.name or options.layout(model.input_shape, units) != model._layout:
        raise ValueError("its Sequential settings do not describe its network")
    sequential._trainer = Trainer(options, model._layout, np.array(model.weights), None)
    return sequential

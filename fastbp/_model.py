"""A trained network, and the file format that keeps it.

Model files are ``.npz`` archives.  They are read without unpickling, so a file from
an untrusted source can never run code, and each field is read only once its size is
known to be within its cap (``FIELD_BYTES`` and those beside it), so a hostile file
cannot exhaust memory either.  Format ``fastbp.model`` holds:

=================  ================================================================
``format``         the string ``"fastbp.model"``
``version``        1 for networks of dense layers, 2 for networks with other kinds of
                   layer; a file from a newer fastbp is refused with a clear message
``sizes``          (version 1) int64 layer sizes: inputs, hidden layers (if any), outputs
``activations``    (version 1) each layer's activation name, the output layer's last
``input_shape``    (version 2) int64, the shape of one input row
``layers``         (version 2) each layer's settings as JSON (``Layer.config``), the
                   output layer's last
``weights``        the flat parameter buffer (float64 or float32, see :mod:`fastbp._layout`)
``classes``        the label of each output (numbers, strings or booleans); absent for regression
``flat_targets``   whether a regression was trained on 1-D ``y`` (``predict`` returns 1-D)
``feature_names``  the training data's column names, where it had them (optional)
``history``        float64 loss per epoch
``backend``        the backend that trained it
``options``        the training options, as JSON
=================  ================================================================
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._backends import BACKENDS, get_backend, is_available
from ._concepts import HIDDEN_ACTIVATIONS, OUTPUTS
from ._files import NpzArchive, open_regular, replaced_atomically
from ._layout import Layer, Layout
from ._parallel import as_threads, one_blas_thread, row_chunks, run_chunks
from ._sparse import SparseFeatures, kernel_rows
from ._training import check_outputs
from ._validate import DTYPES, as_inputs, as_sample_weight, feature_names_of, refuse_non_finite_classes

FORMAT = "fastbp.model"
#: The versions this fastbp reads, and writes: 1 where every layer is dense (so older fastbp reads those).
VERSIONS = (1, 2)
#: The most bytes :func:`load` reads for a field whose size does not grow with the network (its format, version,
#: description, backend, flat_targets): room for the settings of thousands of layers.
FIELD_BYTES = 2**24
#: The most bytes of ``history``: 2**24 epochs.
HISTORY_BYTES = 2**27
#: Bytes per input and per output that ``classes``, ``feature_names`` and ``options`` (which may keep a
#: per-feature scaling) may take on top of :data:`FIELD_BYTES`: a name or label of a thousand characters each.
UNIT_BYTES = 2**12


class Model:
    """A trained network: what :func:`fastbp.train`, :func:`fastbp.train_many` and
    :func:`fastbp.load` return, and the estimators' ``model_``.

    Predicting never changes it; its weights are read-only.

    Attributes
    ----------
    classes : ndarray or None
        The label of each output neuron, in order, or two labels for a single
        sigmoid unit (the probability of the second, as a binary classifier of
        scikit-learn's has); ``None`` for a regression network (``output="identity"``
        or ``"exp"``, or logistic units of a multilabel classifier), which predicts
        the outputs themselves.
    history : ndarray of float64, shape (epochs,)
        Each epoch's loss summed over the training rows (each weighted by its
        sample weight): the tutorial's sum of squared errors
        ``sum((target - output)**2)`` for ``"mse"``, the cross-entropy for
        ``"cross_entropy"`` (of a softmax, or each sigmoid unit's binary one),
        half the Poisson deviance for ``"poisson"``; with L-BFGS, one per iteration.
    backend : str
        The backend that trained the model, also used to predict.
    options : dict
        The training options, as :func:`fastbp.train` names them (kept in model files),
        with the ``epochs`` asked for (``history`` has those that ran) and the ``seed``:
        the integer the weights were drawn from, or None when there was none or it was
        a random generator (whose state is not recorded).
    feature_names : tuple of str or None
        The columns of the DataFrame the model was trained on: data to predict that
        has columns must have these, in this order.
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
        options: dict | None = None,
        feature_names: Sequence[str] | None = None,
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
        if classes is not None and len(classes) != layout.sizes[-1] and not _binary(layout, classes):
            raise ValueError(f"classes has {len(classes)} labels for {layout.sizes[-1]} outputs")
        output = layout.activations[-1]
        if classes is not None:
            if not OUTPUTS[output].classifies:
                raise ValueError(f"classes given for a network whose {output!r} output does not classify")
            refuse_non_finite_classes(classes)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
        self._layout = layout
        self._weights = weights
        self._flat_targets = flat_targets
        if feature_names is not None and len(feature_names) != layout.sizes[0]:
            raise ValueError(f"{len(feature_names)} feature names given for {layout.sizes[0]} inputs")
        self.feature_names = None if feature_names is None else tuple(str(name) for name in feature_names)
        self.options = dict(options or {})
        self.classes = classes
        self.history = history
        self.backend = backend

    def __setstate__(self, state: dict) -> None:
        # Unpickled from a read-only memory map (joblib's), the buffer is copied: the kernels write to what they
        # are given, so they take writeable arrays only.
        self.__dict__.update(state)
        self._weights = np.require(self._weights, requirements=["C", "W"])

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
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one row it takes: ``(n_features,)``, or an image's ``(height, width, channels)``."""
        return self._layout.input_shape

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
        """One read-only array per layer with weights (dense or convolution; pooling, dropout and flatten have
        none), shape ``(n_neurons, n_inputs + 1)``, bias last; a convolution's neurons are its filters and its
        inputs one window over every input channel (``kh * kw * c_in``, channels-last)."""
        return self._layout.layer_views(self.weights)

    def forward(self, X: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """The output neurons' values for each row.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features) or (n_rows, height, width[, channels])
            Numeric features, converted as :func:`fastbp.train` converts them; a
            DataFrame must have the training's columns, in order.  A network with
            layers takes rows of its ``input_shape`` (images ``(height, width,
            channels)``, or ``(height, width)`` for one channel) or those rows
            flattened channels-last.
        n_threads : int or None
            Threads that share a large batch's rows (default: every core, or
            ``FASTBP_NUM_THREADS``/``OMP_NUM_THREADS``); each row gets the same bits
            whatever the count.

        Returns
        -------
        ndarray of the model's dtype, shape (n_rows, n_outputs)
        """
        n_threads = as_threads(n_threads)
        self._check_feature_names(X)
        return self._forward_checked(as_inputs(X, self.input_shape, dtype=self.dtype), n_threads)

    def _forward_checked(self, X: np.ndarray | SparseFeatures, n_threads: int) -> np.ndarray:
        """:meth:`forward` of rows already checked and converted (:func:`fastbp._validate.as_inputs`'), on
        ``n_threads`` threads: for a caller that scores the same rows many times (early stopping, each epoch)."""
        layout = self._layout
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        backend = get_backend(self.backend)
        net = layout.network(self.options.get("exact", True))  # predict with the arithmetic it was trained with
        if not backend.capabilities.releases_gil:
            n_threads = 1  # threads would only take turns

        def predict_rows(rows: slice) -> None:
            backend.predict_batch(net, self._weights, kernel_rows(X[rows], backend, layout.dense_only), out[rows])

        # BLAS's products on one thread, as in training: the rows are already shared between threads.
        blas = isinstance(X, SparseFeatures) or backend.predicts_by_products(net)
        with one_blas_thread() if blas else contextlib.nullcontext():
            run_chunks(predict_rows, row_chunks(len(X), layout.work_per_row, n_threads))
        return check_outputs(out, self._weights)

    def _check_feature_names(self, X) -> None:
        """Refuse a DataFrame whose columns are not the training's, in order: its values would be misread."""
        columns = feature_names_of(X)
        if self.feature_names is None or columns is None or columns == self.feature_names:
            return
        raise ValueError(
            f"X's columns {list(columns)} are not the ones the model was trained on, {list(self.feature_names)}: "
            "select and order them as in training"
        )

    def predict_proba(self, X: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes``.

        A softmax output is returned as it is; sigmoid outputs (the tutorial's) are
        scaled to sum to one per row, and a row whose outputs all underflow to zero
        gets equal probabilities; a single sigmoid unit for two classes gives
        ``1 - p`` and ``p``.  ``X`` and ``n_threads`` as for :meth:`forward`.

        Returns
        -------
        ndarray, shape (n_rows, n_classes)

        Raises
        ------
        TypeError
            For a regression model, which has no classes.
        """
        if self.classes is None:
            raise TypeError(
                "this model has no classes (a regression, or a multilabel classifier's units), so no class "
                "probabilities: use predict"
            )
        outputs = self.forward(X, n_threads=n_threads)
        if self.activations[-1] == "softmax":
            return outputs
        if _binary(self._layout, self.classes):
            return two_classes(outputs)
        total = outputs.sum(axis=1, keepdims=True)
        positive = total > 0
        return np.where(positive, outputs / np.where(positive, total, 1.0), 1.0 / outputs.shape[1])

    def predict(self, X: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """Each row's prediction.

        ``X`` and ``n_threads`` as for :meth:`forward`.

        Returns
        -------
        ndarray, shape (n_rows,) or (n_rows, n_targets)
            Classifiers: the label of the largest output per row (the first on ties);
            for a single sigmoid unit, the second label where it is above 0.5.
            Regression: the outputs, shaped like the training targets.
        """
        outputs = self.forward(X, n_threads=n_threads)
        if self.classes is None:
            return outputs[:, 0] if self._flat_targets else outputs
        if _binary(self._layout, self.classes):
            return self.classes[(outputs[:, 0] > 0.5).astype(np.intp)]
        return self.classes[np.argmax(outputs, axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """How well the model predicts ``y`` from ``X``, as scikit-learn's estimators score.

        A classifier's accuracy (the fraction of rows whose label it predicts; for a
        multilabel classifier's units, of rows whose every label it predicts, each
        unit above 0.5 meaning yes); a regression's coefficient of determination R²
        (averaged over the targets).  ``sample_weight`` weights each row: finite,
        non-negative and not all zero, as :func:`fastbp.train` takes it; ``y`` has a
        target for each row of ``X`` (else a ValueError).
        """
        from sklearn.metrics import accuracy_score, r2_score

        self._check_feature_names(X)
        X = as_inputs(X, self.input_shape, dtype=self.dtype)
        try:
            n_targets = len(y)
        except TypeError:
            raise TypeError(f"y must be an array of one target per row, got {type(y).__name__}") from None
        if n_targets != len(X):  # before the forward pass, which would be wasted
            raise ValueError(f"y has {n_targets} rows, X has {len(X)}")
        outputs = self.predict(X)
        if sample_weight is not None:  # the checks of train's, not scikit-learn's (which takes negative weights)
            sample_weight = as_sample_weight(sample_weight, n_targets, np.dtype(np.float64))
        if self.classes is not None:
            return float(accuracy_score(y, outputs, sample_weight=sample_weight))
        if self.activations[-1] == "sigmoid" and self.options.get("loss") == "cross_entropy":
            return float(accuracy_score(y, (outputs > 0.5).astype(np.asarray(y).dtype), sample_weight=sample_weight))
        return float(r2_score(y, outputs, sample_weight=sample_weight))

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path``, an ``.npz`` archive that :func:`fastbp.load` reads.

        The file appears whole or not at all: it is written under a temporary name
        beside ``path``, ``.NAME.XXXXXXXXXXXX.tmp``, and then renamed over it.  A save
        that fails or is interrupted removes that file; only one killed outright
        (``kill -9``, a power cut) leaves it behind, safe to delete.

        Parameters
        ----------
        path : str or path-like
            The file to write (replaced if it exists).

        Raises
        ------
        IsADirectoryError, ValueError
            ``path`` is a folder, or a device, a FIFO or a socket, which are never replaced; or some weights
            are not finite (written into the model's arrays), or its ``history`` is longer than model files
            hold (:data:`HISTORY_BYTES`), which :func:`fastbp.load` would refuse.
        FileNotFoundError
            ``path``'s folder does not exist.
        """
        if not np.isfinite(self._weights).all():
            raise ValueError(f"the model's weights are not all finite: {path} would not load, so it is not written")
        history = np.asarray(self.history, dtype=np.float64)
        if history.nbytes > HISTORY_BYTES:
            most = HISTORY_BYTES // history.itemsize
            raise ValueError(
                f"the model's history of {len(history)} epochs is longer than model files hold ({most}): {path} "
                f"would not load, so it is not written; keep its last epochs (model.history = model.history[-{most}:])"
            )
        layout = self._layout
        if layout.dense_only:
            network = {"sizes": np.array(self.sizes, dtype=np.int64), "activations": np.array(self.activations)}
        else:
            network = {
                "input_shape": np.array(self.input_shape, dtype=np.int64),
                "layers": np.array(json.dumps([layer.config() for layer in layout.layers])),
            }
        arrays = {
            "format": np.array(FORMAT),
            "version": np.array(1 if layout.dense_only else 2),
            **network,
            "weights": self._weights,
            "flat_targets": np.array(self._flat_targets),
            "history": history,
            "backend": np.array(self.backend),
            "options": np.array(json.dumps(self.options)),
        }
        if self.feature_names is not None:
            arrays["feature_names"] = np.array(self.feature_names, dtype=str)
        if self.classes is not None:
            classes = self.classes
            if classes.dtype == object and len(kinds := {type(label) for label in classes.tolist()}) == 1:
                if kinds <= {str, int, float, bool}:  # pandas' labels: strings (or numbers) of one type, as values
                    classes = np.array(classes.tolist())
            if classes.dtype.kind not in "biufUS":
                raise ValueError(
                    f"labels {self.classes.tolist()} cannot be saved: a model file keeps numbers or strings, all of "
                    "one type"
                )
            arrays["classes"] = classes
        with replaced_atomically(path) as file:
            np.savez(file, **arrays)


def load(path: str | os.PathLike, *, backend: str | None = None, as_model: bool = False) -> Model:
    """Read a model written by :meth:`Model.save`, or by :meth:`fastbp.Sequential.save`, which gives a
    :class:`fastbp.Sequential` back (unless ``as_model``).

    The archive is read without unpickling, so a file from an untrusted source cannot
    run code; only a regular file is read, each field's size is checked against what
    its network needs before it is read, and every field is checked before the model
    is built, so a hostile file cannot exhaust memory or time either.

    Parameters
    ----------
    path : str or path-like
        The model file.
    backend : str, optional
        The kernels that predict (default: the one that trained it, or the fastest
        available if that one is missing here); every backend computes the same
        outputs (``"reference"`` runs the tutorial's networks only, and refuses others
        when asked to predict).
    as_model : bool
        Give a file saved by a ``Sequential`` back as a :class:`Model` (whose
        ``predict`` gives labels and ``predict_proba`` probabilities), as the command
        line reads it.

    Returns
    -------
    Model or fastbp.Sequential
        A ``Sequential`` (with a fresh optimizer, and unseeded shuffling and dropout
        should it be trained further) for a file it saved, unless ``as_model``.

    Raises
    ------
    ValueError
        ``path`` is not a valid fastbp model file: truncated, damaged, tampered, too
        large for its network, foreign, from a newer fastbp, or a device or a FIFO
        (the message names the file and says which).
    FileNotFoundError, IsADirectoryError
        There is no file at ``path``.
    """
    if backend is not None:
        get_backend(backend)  # an unknown name is the caller's mistake, not the file's
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such model file") from None
    with file:
        try:
            archive = NpzArchive(file)
        except ValueError as error:
            raise ValueError(f"{path} is not a fastbp model file: {error}") from error
        with archive:
            try:
                return _model_from_archive(archive, backend, as_model)
            except KeyError as missing:
                raise ValueError(
                    f"{path} is not a valid fastbp model file: it has no {missing.args[0]!r} field"
                ) from missing
            except (TypeError, ValueError, RecursionError, AttributeError, IndexError, OverflowError) as error:
                raise ValueError(f"{path} is not a valid fastbp model file: {error}") from error


def _layout_of(archive: NpzArchive) -> Layout:
    """A version 1 file's network: dense layers of ``sizes``."""
    sizes = archive.read("sizes", FIELD_BYTES)
    if sizes.ndim != 1 or len(sizes) < 2 or sizes.dtype.kind != "i":
        raise ValueError(f"layer sizes {sizes.tolist()} are not a network's")
    activations = archive.read("activations", FIELD_BYTES)
    names = [str(name) for name in activations.tolist()] if activations.ndim == 1 else []
    if not names or any(name not in HIDDEN_ACTIVATIONS for name in names[:-1]) or names[-1] not in OUTPUTS:
        raise ValueError(f"activations {activations.tolist()} are not a network's")
    return Layout.from_sizes(sizes.tolist(), names)


def _layered_layout_of(archive: NpzArchive) -> Layout:
    """A version 2 file's network: each layer rebuilt from its settings and checked as it was when trained."""
    shape = archive.read("input_shape", FIELD_BYTES)
    if shape.ndim != 1 or len(shape) not in (1, 3) or shape.dtype.kind != "i" or (shape < 1).any():
        raise ValueError(f"its input shape {shape.tolist()} is not a row's")
    configs = json.loads(str(archive.read("layers", FIELD_BYTES)))
    if not isinstance(configs, list) or not configs:
        raise ValueError("its layers are not a list of layers")
    layers, shape = [], tuple(shape.tolist())
    for config in configs:
        layers.append(Layer.from_config(shape, config))
        shape = layers[-1].out_shape
    *hidden, last = layers
    if last.kind != "dense" or last.activation not in OUTPUTS:
        raise ValueError("its last layer is not an output layer")
    if any(layer.activation not in HIDDEN_ACTIVATIONS for layer in hidden):
        raise ValueError("a hidden layer has an output layer's activation")
    return Layout.from_layers(layers)


def _model_from_archive(archive: NpzArchive, backend: str | None, as_model: bool) -> Model:
    """The model the archive describes, every field checked (the kernels trust what they are given).

    The fields that describe the network are read first, so that the others are refused unread when they
    take more than that network needs.
    """
    if "format" not in archive or str(archive.read("format", FIELD_BYTES)) != FORMAT:
        raise ValueError(f"its format is not {FORMAT!r}")
    version = archive.read("version", FIELD_BYTES)
    if version.dtype.kind != "i" or version.shape != ():
        raise ValueError(f"its version {version!r} is not a whole number")
    version = int(version)
    if version not in VERSIONS:
        newer = " (written by a newer fastbp: upgrade fastbp to read it)" if version > max(VERSIONS) else ""
        raise ValueError(f"format version {version} is not one of {VERSIONS}{newer}")
    layout = _layout_of(archive) if version == 1 else _layered_layout_of(archive)
    per_unit_bytes = FIELD_BYTES + UNIT_BYTES * (int(layout.sizes[0]) + int(layout.sizes[-1]))
    weights = archive.read("weights", layout.n_weights * np.dtype(np.float64).itemsize)
    if weights.dtype.newbyteorder("=") not in DTYPES or not np.isfinite(weights).all():
        raise ValueError("its weights are not finite float64 or float32 numbers")
    weights = np.require(weights.astype(weights.dtype.newbyteorder("="), copy=False), requirements=["C", "W"])
    classes = archive.read("classes", per_unit_bytes) if "classes" in archive else None
    if classes is not None and (classes.ndim != 1 or classes.dtype.kind not in "biufUS"):
        raise ValueError("its classes are not a list of numbers, strings or booleans")
    if classes is not None and len(np.unique(classes)) != len(classes):
        raise ValueError("its classes are not distinct labels")
    flat_targets = archive.read("flat_targets", FIELD_BYTES)
    if flat_targets.dtype != bool or flat_targets.shape != ():
        raise ValueError("its flat_targets is not a boolean")
    options = json.loads(str(archive.read("options", per_unit_bytes)))
    if not isinstance(options, dict):
        raise ValueError("its options are not a JSON object")
    feature_names = archive.read("feature_names", per_unit_bytes) if "feature_names" in archive else None
    if feature_names is not None and (feature_names.ndim != 1 or feature_names.dtype.kind != "U"):
        raise ValueError("its feature_names are not a list of strings")
    history = archive.read("history", HISTORY_BYTES)
    if history.ndim != 1 or history.dtype.kind not in "iuf":
        raise ValueError("its history is not a list of numbers")
    trained_by = str(archive.read("backend", FIELD_BYTES))
    if backend is None:
        backend = trained_by if is_available(trained_by) else "auto"
    model = Model(
        layout,
        weights,
        classes,
        history.astype(np.float64, copy=False),
        get_backend(backend).name,
        flat_targets=bool(flat_targets),
        options=options,
        feature_names=None if feature_names is None else feature_names.tolist(),
    )
    if "sequential" not in options or as_model:
        return model
    from ._sequential import from_model  # saved by a fastbp.Sequential: it is one again

    try:
        return from_model(model)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"its Sequential settings are not valid: {error}") from error


def _binary(layout: Layout, classes: np.ndarray | None) -> bool:
    """Whether the network is one sigmoid unit for two ``classes``: the probability of the second."""
    return classes is not None and len(classes) == 2 and layout.sizes[-1] == 1 and layout.activations[-1] == "sigmoid"


def two_classes(outputs: np.ndarray) -> np.ndarray:
    """The probabilities of two classes from one sigmoid unit's outputs, the second class's."""
    return np.hstack([1 - outputs, outputs])

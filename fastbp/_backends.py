"""The kernel contract and the backend registry.

A backend is a module of kernels that train and run networks laid out in one flat
buffer (:mod:`fastbp._layout`).  Every backend provides :data:`KERNELS`, and
declares in its ``CAPABILITIES`` (a :class:`Capabilities`) what else it provides
and how it may be run.  The kernels take their arguments as a few named bundles,
checked here to fit together before any kernel runs:

* :class:`Network`: the layers (kinds, activations, sizes, offsets) and the arithmetic;
* ``weights``: the flat parameter buffer, float64 or float32, whose dtype every float
  array of a call shares (and all the arithmetic stays in), but the float64 ``rates``
  and ``history``;
* ``optimizer_state``: the optimizer's memory, two buffers of ``len(weights)`` one after
  the other (momentum's velocities; Adam's moments; iRprop-'s step sizes, then the
  previous gradient);
* :class:`Data`: the rows trained on;
* :class:`Schedule`: which rows each epoch visits, at which rate, by which optimizer;
* ``history``: float64, one loss per epoch, written by the kernel.

The kernels (model, then data, then schedule, then outputs):

* ``train_online(net, weights, optimizer_state, data, schedule, history)``: epochs of
  one update per row;
* ``train_batches(net, weights, optimizer_state, data, schedule, history, n_threads,
  starts)``: epochs of one update per ``schedule.batch_size`` rows, the batch's products
  shared by up to ``n_threads`` threads (at most ``max_threads``); ``starts[e]`` receives
  the weights epoch ``e`` starts from, unless ``starts`` has no rows (:class:`Backend`
  passes such an array unless its caller asks for them, with dense rows only);
* ``predict_batch(net, weights, X, out)``: the output layer's values for every row of
  ``X``, into ``out``;
* with ``steps``, the tutorial's steps for one row and one batch's gradient, which the
  tests check against the reference and against central differences:
  ``forward_propagate(net, weights, signals, x)``,
  ``backward_propagate_error(net, weights, signals, expected) -> loss``,
  ``update_weights(net, weights, signals, x, l_rate)`` and
  ``batch_gradient(net, weights, data, rows, grad) -> loss``;
* with ``sparse``, :data:`SPARSE_KERNELS` for rows given as :class:`SparseRows` (CSR),
  networks of dense layers only: ``train_sparse(net, weights, optimizer_state, data,
  schedule, history)`` (epochs of ``batch_size`` rows, 1 included, on one thread),
  ``predict_sparse(net, weights, X, out)`` and ``sparse_gradient(net, weights, data,
  rows, grad) -> loss``; the first layer's work follows the nonzeros, and plain SGD
  without L2 moves only the weights of a batch's nonzero inputs (and the biases).
  :class:`Backend` sends sparse rows there from ``train_online``, ``train_batches``,
  ``predict_batch`` and ``batch_gradient``;
* for networks with layers beyond dense ones (a backend whose ``layer_kinds`` has
  them), :data:`LAYERED_KERNELS`: ``train_layered(net, weights, optimizer_state, data,
  schedule, history, right, n_threads)`` (epochs of mini-batches, ``batch_size`` 1 included,
  each batch cut into chunks of ``chunk_rows(batch_size)`` rows that threads share, the chunks'
  gradients summed in order; ``right[e]`` receives how many rows of epoch ``e`` the
  training passes classed right, as ``Sequential``'s accuracy counts),
  ``predict_layered(net, weights, X, out)``, and
  ``layered_gradient(net, weights, data, schedule, rows, grad) -> loss`` (one batch, as
  update ``schedule.steps_done + 1``); :class:`Backend` sends such networks there from
  ``train_online``, ``train_batches`` and ``predict_batch``, and from ``predict_batch``
  networks of dense layers in the fast mode from ``PRODUCTS_MIN_WEIGHTS`` weights;
* with ``lockstep``, ``train_lockstep(net, weights, data, schedule, lengths, history)``:
  online plain SGD of many networks of one architecture at once, the network index the
  last axis of ``weights`` ``(n_weights, n_nets)``; network ``k`` visits rows
  ``schedule.orders[e % n_orders, k, :lengths[k]]`` in epoch ``e`` at rate
  ``schedule.rates[e, k]``, and its loss goes to ``history[e, k]``.

Epoch ``e`` of a call visits rows ``schedule.orders[e % len(orders)]`` at rate
``schedule.rates[e]``, and ``history[e]`` receives its loss summed over the rows,
each row's weighted by its sample weight, by ``net.loss`` (``LOSSES``): the squared
error ``sum((target - output)**2)`` (the tutorial's), the cross-entropy
(``-sum(target * log(p))`` over a softmax, each unit's binary cross-entropy over
sigmoid units) or half the Poisson deviance.  The gradient is that of
``0.5 * sum((output - target)**2)`` (whose delta is the tutorial's) or of the other
losses as they are, whose delta paired with their output units (softmax or sigmoid,
exp) is ``output - target``, times the row's weight, averaged over the batch.

Kernels mutate their buffers in place and trust their inputs' values, which
:mod:`fastbp._validate` checks; the checks here only make sure the bundles fit
together (shapes, dtypes, layouts), so two arguments swapped are refused rather than
read out of bounds.  With ``net.exact`` the online kernels follow
:mod:`fastbp.reference` operation by operation, so they agree with it bit for bit;
otherwise (the fast mode) each weighted sum runs in ``LANES`` interleaved partial sums
and the sigmoid takes fastbp's own exp, the same operations in every backend.  The
mini-batch kernels multiply whole batches by BLAS, in blocks whose size depends on the
batch's row count alone, so the thread count never changes a result.

Compiled backends are imported on first use, so a broken one does not stop the
others from working, and asking for it raises an error that says why.  Where
``"auto"`` passes over one, or a backend declares a ``first_use_warning`` (the
Numba backend, where it cannot cache its kernels on disk), an
:class:`InstallWarning` says so, once per process.
"""

from __future__ import annotations

import importlib
import pickle
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np

from ._concepts import LayerKindCode, LossCode
from ._constants import GEOMETRY_FIELDS

#: Backend names, fastest first, and the module holding each one's kernels.
BACKENDS = {
    "cython": "fastbp._kernels_cython",
    "numba": "fastbp._kernels_numba",
    "reference": "fastbp._kernels_reference",
}
#: Backends that ``"auto"`` may pick, in order of preference.
COMPILED = ("cython", "numba")
#: Backends built as C extensions at install time rather than compiled on import.
_EXTENSIONS = ("cython",)

#: The kernels every backend provides.
KERNELS = ("train_online", "train_batches", "predict_batch")
#: The kernels a backend with ``steps`` provides as well.
STEP_KERNELS = ("forward_propagate", "backward_propagate_error", "update_weights", "batch_gradient")
#: The kernel a backend with ``lockstep`` provides as well.
LOCKSTEP_KERNEL = "train_lockstep"
#: The kernels of sparse rows, which a backend with ``sparse`` provides.
SPARSE_KERNELS = ("train_sparse", "predict_sparse", "sparse_gradient")
#: The kernels of networks with layers beyond dense ones, which a backend whose ``layer_kinds`` has them provides.
LAYERED_KERNELS = ("train_layered", "predict_layered", "layered_gradient")
#: From this many weights a network of dense layers in the fast mode predicts by ``predict_layered``'s products,
#: which run many rows faster than ``predict_batch`` row by row, and a single row slower (a whole chunk of rows is
#: computed for it); below, the products gain less, or lose with Numba, and a single row costs two to three times
#: as much (the docs' performance page).
PRODUCTS_MIN_WEIGHTS = 4096


class Network(NamedTuple):
    """A network as the kernels read it: per layer, intp arrays; and the arithmetic.

    Layer ``k`` takes the ``sizes[k]`` values that layer ``k - 1`` puts out (the
    features for ``k == 0``) and puts out ``sizes[k + 1]``; its weights start at
    ``w_off[k]`` in the flat buffer, its outputs (and their error signals) at
    ``o_off[k]`` in the scratch buffers; ``w_off`` and ``o_off`` end with the totals.
    """

    kinds: np.ndarray  # (n_layers,): LayerKindCode
    activations: np.ndarray  # (n_layers,): ActivationCode
    sizes: np.ndarray  # (n_layers + 1,)
    w_off: np.ndarray  # (n_layers + 1,)
    o_off: np.ndarray  # (n_layers + 1,)
    geometry: np.ndarray  # (n_layers, len(GEOMETRY_FIELDS)): shapes and windows
    dropout: np.ndarray  # float64 (n_layers,): each layer's dropout rate (0 but in dropout layers)
    #: True: the tutorial's arithmetic (inputs summed in order, libm's exp); False: the fast mode.
    exact: bool
    #: The loss training takes the gradient of (a ``LossCode``); prediction does not read it.
    loss: int


class SparseRows(NamedTuple):
    """Rows of features in compressed sparse row form (CSR): row ``r``'s nonzero values are
    ``values[indptr[r] : indptr[r + 1]]``, in the columns ``indices[indptr[r] : indptr[r + 1]]``."""

    indptr: np.ndarray  # intp (n_rows + 1,), non-decreasing
    indices: np.ndarray  # intp (indptr[-1],): each in [0, n_features)
    values: np.ndarray  # (indptr[-1],): the weights' dtype


class Data(NamedTuple):
    """The rows a kernel trains on, all of the weights' dtype."""

    X: np.ndarray | SparseRows  # (n_rows, n_features), dense or sparse
    Y: np.ndarray  # (n_rows, n_outputs): one-hot labels, or regression targets
    sample_weight: np.ndarray  # (n_rows,)


class Schedule(NamedTuple):
    """Which rows each epoch of a call visits, at which rate, and how the weights are updated."""

    orders: np.ndarray  # intp (n_orders, n_visits): epoch e visits rows orders[e % n_orders]
    rates: np.ndarray  # float64 (n_epochs,): epoch e's learning rate
    batch_size: int  # rows per update
    optimizer: int  # OptimizerCode
    momentum: float
    l2: float  # added times each weight, but the biases, to its gradient
    beta1: float
    beta2: float  # Adam's decay of the squared gradients' average, or RMSprop's (its rho)
    epsilon: float
    steps_done: int  # updates made before this call: Adam's bias correction counts them
    seed: int = 0  # in [0, 2**63): keys the dropout masks, with the update's number and the row


class Signals(NamedTuple):
    """Each neuron's output and error signal for one row (buffers of ``o_off[-1]`` values)."""

    outputs: np.ndarray
    deltas: np.ndarray


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares about itself beyond :data:`KERNELS`."""

    #: The layer kinds its kernels run (names of :data:`fastbp._concepts.LAYER_KINDS`).
    layer_kinds: tuple[str, ...]
    #: Provides :data:`STEP_KERNELS`.
    steps: bool
    #: Provides :data:`LOCKSTEP_KERNEL`.
    lockstep: bool
    #: Provides :data:`SPARSE_KERNELS`.
    sparse: bool
    #: Its kernels release the GIL, so Python threads running them share the cores.
    releases_gil: bool
    #: The most threads ``train_batches`` shares a batch between.
    max_threads: int
    #: Held while ``train_batches`` runs on several threads, where the threading layer needs it.
    parallel_lock: threading.Lock | None = None
    #: Compiled kernels cached on disk: clears that cache, when it cannot be read.
    clear_disk_cache: Callable[[], None] | None = None
    #: With ``clear_disk_cache``: whether the kernel of that name has not run yet in this process (so it may be
    #: reading the cache now).
    not_yet_run: Callable[[str], bool] | None = None
    #: What its install costs (kernels that cannot be cached, say): given once, the first time it is used.
    first_use_warning: str | None = None


class InstallWarning(RuntimeWarning):
    """fastbp works, but its install costs time: the Cython extension is missing, or the Numba kernels cannot
    be cached on disk."""


def get_backend(name: str) -> Backend:
    """Backend ``name`` (``"auto"``: the fastest that imports)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {name!r}")
    if name == "auto":
        return _loaded(_auto())
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {tuple(BACKENDS)}, got {name!r}")
    try:
        importlib.import_module(BACKENDS[name])
    except ImportError as error:
        raise ImportError(f"the {name!r} backend is not available: {_why(name, error)}") from error
    return _loaded(name)


def available_backends() -> list[str]:
    """Names of the backends whose kernels import on this machine."""
    return [name for name in BACKENDS if is_available(name)]


def is_available(name: str) -> bool:
    """Whether ``name`` is a backend whose kernels import on this machine (importing only that one)."""
    try:
        importlib.import_module(BACKENDS[name])
    except (ImportError, KeyError):
        return False
    return True


def _auto() -> str:
    """The first of :data:`COMPILED` that imports; passing over a faster one warns, once per process, since
    the next one costs a compile on first use."""
    passed_over = []
    for candidate in COMPILED:
        try:
            importlib.import_module(BACKENDS[candidate])
        except ImportError as error:
            passed_over.append(f"the {candidate!r} backend is not available: {_why(candidate, error)}")
            continue
        if passed_over:
            _warn_once(
                "auto",
                f"{'; '.join(passed_over)}.  backend='auto' uses the {candidate!r} backend instead, which compiles its "
                "kernels on first use (10-17 s; then cached on disk where Numba can write).",
            )
        return candidate
    raise ImportError(f"no compiled backend could be imported (tried {', '.join(COMPILED)})")


def _why(name: str, error: ImportError) -> str:
    """Why backend ``name`` did not import, and the fix where its compiled extension is missing."""
    module_name = BACKENDS[name]
    if name in _EXTENSIONS and error.name is not None and error.name.startswith(module_name):
        return (
            f"the compiled extension {module_name} is missing from {Path(__file__).parent} (install a C compiler, "
            "then reinstall fastbp: 'pip install --force-reinstall --no-cache-dir --no-deps fastbp', or "
            "'pip install -e .' in a source checkout)"
        )
    return str(error)


_LOADED: dict[str, Backend] = {}
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _loaded(name: str) -> Backend:
    """The one :class:`Backend` of ``name`` (imported), which every caller shares; the first call gives the
    capabilities' ``first_use_warning``, if any."""
    if name not in _LOADED:
        backend = _LOADED.setdefault(name, Backend(name, importlib.import_module(BACKENDS[name])))
        if backend.capabilities.first_use_warning is not None:
            _warn_once(name, backend.capabilities.first_use_warning)
    return _LOADED[name]


def _warn_once(key: str, message: str) -> None:
    """Give an :class:`InstallWarning` unless one of ``key`` was given in this process, pointing at the caller of
    :func:`get_backend`."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(message, InstallWarning, stacklevel=4)


#: What a damaged Numba cache file raises when the dispatcher unpickles it (Numba 0.68 does not catch it).
_UNREADABLE_CACHE = (EOFError, pickle.UnpicklingError, ImportError, AttributeError, IndexError, ValueError)


class Backend:
    """A backend's kernels behind the contract: each call's bundles are checked to fit together first."""

    def __init__(self, name: str, module: ModuleType):
        self.name = name
        self.module = module
        self.capabilities: Capabilities = module.CAPABILITIES
        self._kind_codes = frozenset(int(LayerKindCode[kind.upper()]) for kind in self.capabilities.layer_kinds)
        self._layered_kernels = set(self.capabilities.layer_kinds) != {"dense"}  # it provides LAYERED_KERNELS
        # The network last checked and whether it is layered, in one tuple that threads replace whole: a model's
        # calls pass the same network.
        self._checked: tuple[Network | None, bool] = (None, False)

    def __repr__(self) -> str:
        return f"<fastbp backend {self.name!r}>"

    def train_online(
        self, net: Network, weights, optimizer_state, data: Data, schedule: Schedule, history, right=None
    ) -> None:
        if self._check_training(net, weights, optimizer_state, data, schedule, history, right):
            right = np.zeros(len(history)) if right is None else right
            self._run("train_layered", net, weights, optimizer_state, data, _typed(schedule), history, right, 1)
        elif isinstance(data.X, SparseRows):
            self._run("train_sparse", net, weights, optimizer_state, data, _typed(schedule), history)
        else:
            self._run("train_online", net, weights, optimizer_state, data, _typed(schedule), history)

    def train_batches(
        self, net: Network, weights, optimizer_state, data: Data, schedule: Schedule, history, n_threads: int,
        right=None, starts=None,
    ) -> None:  # fmt: skip
        layered = self._check_training(net, weights, optimizer_state, data, schedule, history, right)
        if starts is not None and (layered or isinstance(data.X, SparseRows)):
            raise ValueError("starts is kept by the dense-row kernels of networks of dense layers alone")
        if starts is not None:
            _expect(starts, weights.dtype, (len(history), len(weights)), "starts")
        if isinstance(data.X, SparseRows):
            self._run("train_sparse", net, weights, optimizer_state, data, _typed(schedule), history)
        elif layered:
            right = np.zeros(len(history)) if right is None else right
            self._run("train_layered", net, weights, optimizer_state, data, _typed(schedule), history, right,
                      int(n_threads))  # fmt: skip
        else:
            starts = np.empty((0, len(weights)), weights.dtype) if starts is None else starts
            self._run(
                "train_batches", net, weights, optimizer_state, data, _typed(schedule), history, int(n_threads), starts
            )

    def train_lockstep(self, net: Network, weights, data: Data, schedule: Schedule, lengths, history) -> None:
        self._check_dense(net)
        if isinstance(data.X, SparseRows):
            raise ValueError("the lockstep kernels take dense rows only: train networks on sparse rows one by one")
        n_nets = weights.shape[1] if isinstance(weights, np.ndarray) and weights.ndim == 2 else 0
        _expect(weights, weights.dtype, (int(net.w_off[-1]), n_nets), "weights")
        self._check_data(net, data, weights.dtype, False)
        _expect(lengths, np.intp, (n_nets,), "lengths")
        _expect(history, np.float64, (len(history), n_nets), "history")
        orders = schedule.orders
        _expect(orders, np.intp, (len(orders), n_nets, orders.shape[-1]), "orders")
        _expect(schedule.rates, np.float64, history.shape, "rates")
        self._run("train_lockstep", net, weights, data, _typed(schedule), lengths, history)

    def predict_batch(self, net: Network, weights, X, out) -> None:
        layered = self._check_weights(net, weights)
        n_rows = self._check_features(net, X, weights.dtype, layered)
        _expect(out, weights.dtype, (n_rows, int(net.sizes[-1])), "out")
        if isinstance(X, SparseRows):
            kernel = "predict_sparse"
        elif self.predicts_by_products(net):
            kernel = "predict_layered"
        else:
            kernel = "predict_batch"
        self._run(kernel, net, weights, X, out)

    def predicts_by_products(self, net: Network) -> bool:
        """Whether ``predict_batch`` runs dense rows through BLAS's products (the layered kernels', in whole chunks
        of rows): for a network with layers beyond dense ones, or one of dense layers in the fast mode from
        ``PRODUCTS_MIN_WEIGHTS`` weights.  Smaller networks, and the exact arithmetic, predict row by row."""
        if self._check_network(net):
            return True
        return not net.exact and self._layered_kernels and int(net.w_off[-1]) >= PRODUCTS_MIN_WEIGHTS

    def layered_gradient(self, net: Network, weights, data: Data, schedule: Schedule, rows, grad) -> float:
        self._check_weights(net, weights)
        self._check_data(net, data, weights.dtype, True)
        if len(rows) == 0:
            raise ValueError("kernel arguments do not fit together: rows is empty")
        _expect(rows, np.intp, (len(rows),), "rows")
        _expect(grad, weights.dtype, weights.shape, "grad")
        _check_seed(schedule)
        return self._run("layered_gradient", net, weights, data, _typed(schedule), rows, grad)

    def forward_propagate(self, net: Network, weights, signals: Signals, x) -> None:
        self._check_dense(net)
        self._check_signals(net, weights, signals)
        _expect(x, weights.dtype, (int(net.sizes[0]),), "x")
        self._run("forward_propagate", net, weights, signals, x)

    def backward_propagate_error(self, net: Network, weights, signals: Signals, expected) -> float:
        self._check_dense(net)
        self._check_signals(net, weights, signals)
        _expect(expected, weights.dtype, (int(net.sizes[-1]),), "expected")
        return self._run("backward_propagate_error", net, weights, signals, expected)

    def update_weights(self, net: Network, weights, signals: Signals, x, l_rate: float) -> None:
        self._check_dense(net)
        self._check_signals(net, weights, signals)
        _expect(x, weights.dtype, (int(net.sizes[0]),), "x")
        self._run("update_weights", net, weights, signals, x, float(l_rate))

    def batch_gradient(self, net: Network, weights, data: Data, rows, grad) -> float:
        self._check_dense(net)
        self._check_weights(net, weights)
        self._check_data(net, data, weights.dtype, False)
        if len(rows) == 0:
            raise ValueError("kernel arguments do not fit together: rows is empty")
        _expect(rows, np.intp, (len(rows),), "rows")
        _expect(grad, weights.dtype, weights.shape, "grad")
        kernel = "sparse_gradient" if isinstance(data.X, SparseRows) else "batch_gradient"
        return self._run(kernel, net, weights, data, rows, grad)

    def _check_network(self, net: Network) -> bool:
        """Its arrays intp and of one length, its sizes positive, its layers of kinds this backend runs, ``exact`` a
        bool; returns whether it has layers beyond dense ones (which run the layered kernels)."""
        checked, layered = self._checked
        if net is checked:
            return layered
        n_layers = len(net.kinds)
        for field in ("kinds", "activations"):
            _expect(getattr(net, field), np.intp, (n_layers,), f"net.{field}")
        for field in ("sizes", "w_off", "o_off"):
            _expect(getattr(net, field), np.intp, (n_layers + 1,), f"net.{field}")
        _expect(net.geometry, np.intp, (n_layers, len(GEOMETRY_FIELDS)), "net.geometry")
        _expect(net.dropout, np.float64, (n_layers,), "net.dropout")
        if (net.sizes < 1).any():  # a layer of no values would reach BLAS as a matrix of no rows, which it refuses
            raise ValueError(f"net.sizes must all be positive, got {net.sizes.tolist()}")
        if type(net.exact) is not bool:  # another type would make Numba compile the kernels again
            raise TypeError(f"net.exact must be True or False, got {net.exact!r}")
        if type(net.loss) is not int or net.loss not in set(LossCode):
            raise ValueError(f"net.loss must be a LossCode, got {net.loss!r}")
        unknown = set(net.kinds.tolist()) - self._kind_codes
        if unknown:
            names = {int(code): code.name.lower() for code in LayerKindCode}
            kinds = ", ".join(names.get(code, f"code {code}") for code in sorted(unknown))
            raise ValueError(f"the {self.name!r} backend does not run layers of kind {kinds}")
        layered = bool((net.kinds != LayerKindCode.DENSE).any())
        self._checked = (net, layered)
        return layered

    def _check_dense(self, net: Network) -> None:
        """Refuse a network with layers beyond dense ones, for the kernels that run dense layers only."""
        if self._check_network(net):
            raise ValueError("these kernels run dense layers only: train layered networks by train_batches")

    def _check_weights(self, net: Network, weights) -> bool:
        layered = self._check_network(net)
        dtype = getattr(weights, "dtype", None)
        if dtype not in (np.float64, np.float32):
            raise ValueError(f"kernel arguments do not fit together: weights must be float64 or float32, not {dtype}")
        _expect(weights, dtype, (int(net.w_off[-1]),), "weights")
        return layered

    def _check_signals(self, net: Network, weights, signals: Signals) -> None:
        self._check_weights(net, weights)
        for field in ("outputs", "deltas"):
            _expect(getattr(signals, field), weights.dtype, (int(net.o_off[-1]),), field)

    def _check_training(
        self, net: Network, weights, optimizer_state, data: Data, schedule: Schedule, history, right=None
    ) -> bool:
        """Check a training call's arguments; returns whether the network is layered.  ``right`` (each epoch's
        rows classed right) is counted by the layered kernels only."""
        layered = self._check_weights(net, weights)
        self._check_data(net, data, weights.dtype, layered)
        _expect(optimizer_state, weights.dtype, (2 * len(weights),), "optimizer_state")
        _expect(history, np.float64, (len(history),), "history")
        if right is not None:
            if not layered or isinstance(data.X, SparseRows):
                raise ValueError("kernel arguments do not fit together: only layered networks count rows right")
            _expect(right, np.float64, history.shape, "right")
        orders = schedule.orders
        _expect(orders, np.intp, (len(orders), orders.shape[-1] if orders.ndim == 2 else -1), "orders")
        _expect(schedule.rates, np.float64, history.shape, "rates")
        if not schedule.batch_size >= 1 or orders.size == 0:
            raise ValueError("kernel arguments do not fit together: the schedule has no rows or no batch size")
        _check_seed(schedule)
        return layered

    def _check_features(self, net: Network, X, dtype, layered: bool) -> int:
        """Dense rows of the network's inputs, or sparse rows for a backend with ``sparse`` and a network of
        dense layers (their columns in range is :mod:`fastbp._validate`'s to check); returns the row count."""
        if not isinstance(X, SparseRows):
            n_rows = len(X) if isinstance(X, np.ndarray) else 0
            _expect(X, dtype, (n_rows, int(net.sizes[0])), "X")
            return n_rows
        if not self.capabilities.sparse:
            raise ValueError(f"the {self.name!r} backend has no kernels for sparse rows")
        if layered:
            raise ValueError("sparse rows train and run networks of dense layers only")
        n_rows = len(X.indptr) - 1 if isinstance(X.indptr, np.ndarray) else -1
        _expect(X.indptr, np.intp, (max(n_rows, 0) + 1,), "X.indptr")
        n_values = len(X.indices) if isinstance(X.indices, np.ndarray) else 0
        _expect(X.indices, np.intp, (n_values,), "X.indices")
        _expect(X.values, dtype, (n_values,), "X.values")
        if not 0 <= X.indptr[0] <= X.indptr[-1] <= n_values:
            raise ValueError("kernel arguments do not fit together: X.indptr points outside X.indices")
        return n_rows

    def _check_data(self, net: Network, data: Data, dtype, layered: bool) -> None:
        n_rows = self._check_features(net, data.X, dtype, layered)
        _expect(data.Y, dtype, (n_rows, int(net.sizes[-1])), "Y")
        _expect(data.sample_weight, dtype, (n_rows,), "sample_weight")

    def _run(self, name: str, *args):
        """Call kernel ``name``, compiling it afresh if its disk cache cannot be read.

        Numba loads a kernel (and the kernels it calls) from its cache on the first
        call in a process; a truncated or garbled cache file then raises from inside
        Numba before any work is done.  The cache is cleared, with a warning, and the
        kernel compiled afresh, once.
        """
        kernel = getattr(self.module, name)
        try:
            return kernel(*args)
        except _UNREADABLE_CACHE as error:
            capabilities = self.capabilities
            if capabilities.not_yet_run is None or not capabilities.not_yet_run(name):
                raise
            warnings.warn(
                f"fastbp's Numba cache could not be read ({type(error).__name__}: {error}); "
                "compiling the kernels afresh",
                RuntimeWarning,
                stacklevel=4,
            )
            capabilities.clear_disk_cache()
            return kernel(*args)


#: The schedule's numbers and the Python type the kernels take each as: another type (an IntEnum code, an int
#: ``l2``) would make Numba compile the kernels again.
_SCHEDULE_TYPES = {
    "batch_size": int, "optimizer": int, "momentum": float, "l2": float, "beta1": float, "beta2": float,
    "epsilon": float, "steps_done": int, "seed": int,
}  # fmt: skip


def _typed(schedule: Schedule) -> Schedule:
    """``schedule`` with its numbers of the types the kernels take."""
    if all(type(getattr(schedule, name)) is kind for name, kind in _SCHEDULE_TYPES.items()):
        return schedule
    return schedule._replace(**{name: kind(getattr(schedule, name)) for name, kind in _SCHEDULE_TYPES.items()})


def _expect(array, dtype, shape: tuple, name: str) -> None:
    """Refuse ``array`` unless it is a C-contiguous, writeable ndarray of ``dtype`` and ``shape``."""
    if (
        isinstance(array, np.ndarray)
        and array.dtype == dtype
        and array.shape == shape
        and array.flags.c_contiguous
        and array.flags.writeable
    ):
        return
    got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
    raise ValueError(
        f"kernel arguments do not fit together: {name} must be a C-contiguous, writeable {np.dtype(dtype).name} "
        f"array of shape {shape}, got {got}"
    )


def _check_seed(schedule: Schedule) -> None:
    """The dropout seed is a non-negative int64: another would make Numba compile the kernels again."""
    if not 0 <= schedule.seed < 2**63:
        raise ValueError(f"kernel arguments do not fit together: the seed {schedule.seed} is not in [0, 2**63)")

"""Reference backend: the tutorial's pure-Python code behind the kernel contract.

Only the entry points the API drives are provided; each converts the flat
buffers to the tutorial's list-of-dicts network, runs :mod:`fastbp.reference`
and writes the result back.  ``backend="reference"`` therefore trains through the
same API as the compiled backends, so they are compared and timed on equal terms.
It runs only what the tutorial runs: sigmoid layers, squared error, online plain
SGD, in float64; each epoch may have its own row order and learning rate.

Where it differs from the compiled backends: the tutorial's sigmoid,
``1.0 / (1.0 + math.exp(-activation))``, raises ``OverflowError`` for an
activation below about -709 (``exp`` of more than about 709.78), where the
compiled kernels' ``exp`` overflows to inf and the sigmoid saturates to 0.0.
Training and prediction report it as a ``NonFiniteError`` (a ``FloatingPointError``) that says so
(scale the features, lower ``lr``, or use a compiled backend).  Activations
above that point give the same results bit for bit.
"""

from contextlib import contextmanager

import numpy as np

from . import reference
from ._backends import Capabilities
from ._concepts import ActivationCode, LossCode, OptimizerCode
from ._training import NonFiniteError

CAPABILITIES = Capabilities(
    layer_kinds=("dense",), steps=False, lockstep=False, sparse=False, releases_gil=False, max_threads=1
)
#: What the reference's refusals advise.
USE_COMPILED = "use backend='cython' or backend='numba'"
#: Why the reference refuses a training other than the tutorial's.
TUTORIAL_TRAINING_ONLY = (
    "the reference backend runs only the tutorial's training (online plain SGD, batch_size=1, without l2 or sample "
    f"weights); {USE_COMPILED}"
)


@contextmanager
def _exp_overflow_as_non_finite_error():
    """The tutorial's ``math.exp`` overflows below an activation of about -709, where the
    compiled kernels saturate to 0; report it as the numerical failure it is."""
    try:
        yield
    except OverflowError as error:
        raise NonFiniteError(
            f"the reference backend's sigmoid overflowed ({error}): an activation fell below about -709; "
            "scale the features or lower lr, or use a compiled backend, which saturates instead"
        ) from None


def _require_tutorial_network(net, weights) -> None:
    """The tutorial's network: sigmoid layers in float64, computed in its exact arithmetic."""
    if weights.dtype != np.float64 or (net.activations != ActivationCode.SIGMOID).any() or net.loss != LossCode.MSE:
        raise ValueError(
            f"the reference backend runs only the tutorial's network (sigmoid layers, squared error, float64); "
            f"{USE_COMPILED}"
        )
    if not net.exact:  # the fast mode's sums (from 8 inputs) and its sigmoid's exp are not the tutorial's
        raise ValueError(
            "the reference backend computes the tutorial's exact arithmetic only (its summation order, libm's exp): "
            "pass exact=True"
        )


def train_online(net, weights, optimizer_state, data, schedule, history):
    """Run ``len(history)`` epochs of the tutorial's ``train_network``, one call per epoch for its rows and rate."""
    _require_tutorial_network(net, weights)
    if schedule.optimizer != OptimizerCode.SGD or schedule.l2 != 0 or (data.sample_weight != 1).any():
        raise ValueError(TUTORIAL_TRAINING_ONLY)
    sizes = tuple(net.sizes.tolist())
    network = reference.unpack(weights, sizes)
    labels = np.argmax(data.Y, axis=1).tolist()
    rows = [features + [label] for features, label in zip(data.X.tolist(), labels)]
    epoch_rows = [[rows[r] for r in order] for order in schedule.orders.tolist()]
    with _exp_overflow_as_non_finite_error():
        for epoch in range(len(history)):
            train = epoch_rows[epoch % len(epoch_rows)]
            history[epoch] = reference.train_network(network, train, float(schedule.rates[epoch]), 1, sizes[-1])[0]
    weights[:] = reference.pack(network)


def train_batches(net, weights, optimizer_state, data, schedule, history, n_threads, starts):
    """The tutorial trains one row at a time only."""
    raise ValueError(TUTORIAL_TRAINING_ONLY)


def predict_batch(net, weights, X, out):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    _require_tutorial_network(net, weights)
    network = reference.unpack(weights, tuple(net.sizes.tolist()))
    with _exp_overflow_as_non_finite_error():
        for r, row in enumerate(X.tolist()):
            out[r] = reference.forward_propagate(network, row)

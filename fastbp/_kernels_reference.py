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
Training and prediction report it as a ``FloatingPointError`` that says so
(scale the features, lower ``lr``, or use a compiled backend).  Activations
above that point give the same results bit for bit.
"""

from contextlib import contextmanager

import numpy as np

from . import reference
from ._codes import H_L2, SGD, SIGMOID


@contextmanager
def _exp_overflow_as_floating_point_error():
    """The tutorial's ``math.exp`` overflows below an activation of about -709, where the
    compiled kernels saturate to 0; report it as the numerical failure it is."""
    try:
        yield
    except OverflowError as error:
        raise FloatingPointError(
            f"the reference backend's sigmoid overflowed ({error}): an activation fell below about -709; "
            "scale the features or lower lr, or use a compiled backend, which saturates instead"
        ) from None


def _require_tutorial_network(weights, acts) -> None:
    if weights.dtype != np.float64 or (acts != SIGMOID).any():
        raise ValueError(
            "the reference backend runs only the tutorial's network (sigmoid layers, float64); "
            "use backend='cython' or 'numba'"
        )


def _require_exact(fast) -> None:
    """The fast mode's sums (from 8 inputs) and its sigmoid's exp are not the tutorial's: its code cannot follow."""
    if fast:
        raise ValueError(
            "the reference backend computes the tutorial's exact arithmetic only (its summation order, libm's exp): "
            "pass exact=True"
        )


def train_online(
    weights,
    w_off,
    sizes,
    acts,
    outputs,
    o_off,
    deltas,
    grad,
    state,
    X,
    Y,
    sw,
    orders,
    rates,
    hyper,
    rule,
    fast,
    step0,
    history,
):
    """Run ``len(history)`` epochs of the tutorial's ``train_network``, one call per epoch for its rows and rate."""
    _require_tutorial_network(weights, acts)
    _require_exact(fast)
    if rule != SGD or hyper[H_L2] != 0 or (sw != 1).any():
        raise ValueError(
            "the reference backend runs only the tutorial's training (online plain SGD without l2 or sample "
            "weights); use backend='cython' or 'numba'"
        )
    network = reference.unpack(weights, tuple(sizes.tolist()))
    rows = [features + [int(label)] for features, label in zip(X.tolist(), np.argmax(Y, axis=1).tolist())]
    epoch_rows = [[rows[r] for r in order] for order in orders.tolist()]
    with _exp_overflow_as_floating_point_error():
        for epoch in range(len(history)):
            train = epoch_rows[epoch % len(epoch_rows)]
            history[epoch] = reference.train_network(network, train, float(rates[epoch]), 1, Y.shape[1])[0]
    weights[:] = reference.pack(network)


def train_batches(
    weights,
    w_off,
    sizes,
    acts,
    grad,
    state,
    X,
    Y,
    sw,
    orders,
    batch_size,
    rates,
    hyper,
    rule,
    step0,
    history,
    n_threads,
):
    """The tutorial trains one row at a time only."""
    raise ValueError("the reference backend trains online only (batch_size=1); use backend='cython' or 'numba'")


def predict_batch(weights, w_off, sizes, acts, outputs, o_off, X, out, fast):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    _require_tutorial_network(weights, acts)
    _require_exact(fast)
    network = reference.unpack(weights, tuple(sizes.tolist()))
    with _exp_overflow_as_floating_point_error():
        for r, row in enumerate(X.tolist()):
            out[r] = reference.forward_propagate(network, row)

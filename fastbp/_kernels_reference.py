"""Reference backend: the tutorial's pure-Python code behind the kernel contract.

Only the two entry points the API drives are provided; each converts the flat
buffers to the tutorial's list-of-dicts network, runs :mod:`fastbp.reference`
and writes the result back.  ``backend="reference"`` therefore trains through the
same API as the compiled backends, so they are compared and timed on equal terms.
"""

from contextlib import contextmanager

import numpy as np

from . import reference


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


def train_epochs(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate, history):
    """Run ``len(history)`` epochs of the tutorial's ``train_network`` on the rows in ``order``."""
    network = reference.unpack(weights, tuple(sizes.tolist()))
    train = [X[r].tolist() + [int(np.argmax(Y[r]))] for r in order]
    with _exp_overflow_as_floating_point_error():
        history[:] = reference.train_network(network, train, float(l_rate), len(history), Y.shape[1])
    weights[:] = reference.pack(network)


def predict_batch(weights, w_off, sizes, outputs, o_off, X, out):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    network = reference.unpack(weights, tuple(sizes.tolist()))
    with _exp_overflow_as_floating_point_error():
        for r, row in enumerate(X.tolist()):
            out[r] = reference.forward_propagate(network, row)

"""Reference backend: the tutorial's pure-Python code behind the kernel contract.

Only the two entry points the API drives are provided; each converts the flat
buffers to the tutorial's list-of-dicts network, runs :mod:`fastbp.reference`
and writes the result back.  ``backend="reference"`` therefore trains through the
same API as the compiled backends, so they are compared and timed on equal terms.
"""

import numpy as np

from . import reference


def train_epochs(weights, w_off, sizes, outputs, o_off, deltas, X, Y, order, l_rate, history):
    """Run ``len(history)`` epochs of the tutorial's ``train_network`` on the rows in ``order``."""
    network = reference.unpack(weights, tuple(sizes.tolist()))
    train = [X[r].tolist() + [int(np.argmax(Y[r]))] for r in order]
    history[:] = reference.train_network(network, train, float(l_rate), len(history), Y.shape[1])
    weights[:] = reference.pack(network)


def predict_batch(weights, w_off, sizes, outputs, o_off, X, out):
    """Write the output layer's values for every row of ``X`` into ``out``."""
    network = reference.unpack(weights, tuple(sizes.tolist()))
    for r, row in enumerate(X.tolist()):
        out[r] = reference.forward_propagate(network, row)

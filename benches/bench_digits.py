"""W2: a mid-size network on scikit-learn's handwritten digits (64-32-10).

Sigmoid hidden units (scikit-learn's "logistic"), a softmax output with cross-entropy,
plain SGD at a constant rate, rows in the order given, no L2: the same network,
data and epochs for fastbp (Numba, Cython), scikit-learn's ``MLPClassifier`` and,
where it is installed, PyTorch on the CPU.  Online (batch size 1, scikit-learn's
``batch_size=1``, PyTorch's per-sample loop) and mini-batches of 32.

fastbp's online runs use the online kernel, in both arithmetics (``exact``: the
tutorial's, bit for bit; the fast mode: eight interleaved partial sums and fastbp's
own exp for the sigmoid, which vectorise), its
mini-batches the BLAS kernel.  Initial weights differ between libraries (each draws
its own), so the checks are on learning, not on equal weights.

``W2-digits-lbfgs`` and ``W2-digits-adam``: the scikit-learn estimators, fastbp's
against scikit-learn's own, from the same initial weights (``random_state``), so both
take the same steps, as far as rounding lets them: ``solver="lbfgs"`` (SciPy's
L-BFGS-B, its loss and gradient over all rows per evaluation), and scikit-learn's
default Adam on batches of 200 for a fixed number of epochs (its loss curve and
stopping rule kept after each, which fastbp's estimators run one kernel call an epoch
for).
"""

import numpy as np
import pytest
from conftest import COMPILED, fastbp_modes

import fastbp

NETWORK = {"hidden": 32, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
LR = {1: 0.3, 32: 1.0}
#: Online and mini-batch training, each its own workload.
GROUPS = {1: "W2-digits-online", 32: "W2-digits-batch32"}
BATCH_SIZES = pytest.mark.parametrize(
    "batch_size",
    [pytest.param(b, marks=pytest.mark.benchmark(group=g), id=g.split("-")[-1]) for b, g in GROUPS.items()],
)


def rows(data, size):
    X, y = data
    return X[: size.rows], y[: size.rows]


def train_fastbp(X, y, backend, batch_size, epochs, exact):
    return fastbp.train(
        X, y, **NETWORK, lr=LR[batch_size], batch_size=batch_size, epochs=epochs, backend=backend, exact=exact
    )


@fastbp_modes(GROUPS)
def bench_digits_fastbp(timed, size, digits, assert_learned, describe_fastbp, compiled_backend, batch_size, exact):
    X, y = rows(digits, size)
    train_fastbp(X[:64], y[:64], compiled_backend, batch_size, 1, exact)  # warm up: load or compile the kernels
    model = timed(
        lambda: train_fastbp(X, y, compiled_backend, batch_size, size.epochs, exact),
        samples=len(X) * size.epochs,
        **describe_fastbp(compiled_backend, np.float64, batch_size, exact),
    )
    assert_learned(model.predict(X), y)


@BATCH_SIZES
@pytest.mark.parametrize("library", ["scikit-learn", "PyTorch"])
def bench_digits_peer(bench_peer, size, digits, batch_size, library):
    X, y = rows(digits, size)
    bench_peer(library, X, y, hidden=NETWORK["hidden"], lr=LR[batch_size], batch_size=batch_size, epochs=size.epochs)


ESTIMATOR = {"hidden_layer_sizes": (32,), "activation": "logistic", "random_state": 0}
#: Each solver's settings (Adam runs every epoch: no tolerance stops it) and the kernels fastbp runs it with.
SOLVERS = {
    "lbfgs": ({"solver": "lbfgs"}, "batch_gradient kernel"),
    "adam": ({"solver": "adam", "tol": 0.0, "n_iter_no_change": 10**6}, "train_batches kernel, several epochs a call"),
}


@pytest.mark.parametrize(
    "solver", [pytest.param(name, marks=pytest.mark.benchmark(group=f"W2-digits-{name}"), id=name) for name in SOLVERS]
)
@pytest.mark.parametrize("library", [*COMPILED, "scikit-learn"])
def bench_digits_estimator(bench_estimator, size, digits, library, solver):
    X, y = rows(digits, size)
    settings, path = SOLVERS[solver]
    bench_estimator(library, X, y, {**ESTIMATOR, **settings}, path)

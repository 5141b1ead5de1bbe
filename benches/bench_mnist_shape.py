"""W3: an MNIST-sized network (784-128-10) on generated data of MNIST's shape.

The W2 setup (sigmoid hidden units, softmax and cross-entropy, plain constant-rate
SGD, rows in order) at MNIST's width: online, and mini-batches of 32 and 128.
fastbp trains in float64 and float32; scikit-learn in float64 (as users call it);
PyTorch, where installed, in float32 (its native precision).

fastbp's online runs use the online kernel in both arithmetics: exact (the
tutorial's, one term after another: no SIMD over a 784-wide dot product) and the
fast mode (eight interleaved partial sums and fastbp's own exp for the sigmoid, which
vectorise); its mini-batches use the BLAS
kernel.  scikit-learn's online SGD costs milliseconds per row at this width, hence
few rows in the online workload.
"""

import numpy as np
import pytest
from conftest import fastbp_modes

import fastbp

NETWORK = {"hidden": 128, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
LR = {1: 0.1, 32: 0.5, 128: 0.5}
#: Online and mini-batch training, each its own workload.
GROUPS = {1: "W3-mnist-online", 32: "W3-mnist-batch32", 128: "W3-mnist-batch128"}
BATCH_SIZES = pytest.mark.parametrize(
    "batch_size",
    [pytest.param(b, marks=pytest.mark.benchmark(group=g), id=g.split("-")[-1]) for b, g in GROUPS.items()],
)


def train_fastbp(X, y, backend, dtype, batch_size, epochs, exact):
    return fastbp.train(
        X, y, **NETWORK, lr=LR[batch_size], batch_size=batch_size, epochs=epochs, backend=backend, dtype=dtype,
        classes=np.arange(10), exact=exact,
    )  # fmt: skip


@fastbp_modes(GROUPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def bench_mnist_fastbp(
    timed, size, mnist_shape, assert_learned, describe_fastbp, compiled_backend, dtype, batch_size, exact
):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    train_fastbp(X[:64], y[:64], compiled_backend, dtype, batch_size, 1, exact)  # warm up: load or compile
    model = timed(
        lambda: train_fastbp(X, y, compiled_backend, dtype, batch_size, size.epochs, exact),
        samples=len(X) * size.epochs,
        **describe_fastbp(compiled_backend, dtype, batch_size, exact),
    )
    assert_learned(model.predict(X), y)


@BATCH_SIZES
@pytest.mark.parametrize("library", ["scikit-learn", "PyTorch"])
def bench_mnist_peer(bench_peer, size, mnist_shape, batch_size, library):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    bench_peer(library, X, y, hidden=NETWORK["hidden"], lr=LR[batch_size], batch_size=batch_size, epochs=size.epochs)

"""W3: an MNIST-sized network (784-128-10) on generated data of MNIST's shape.

The W2 setup (sigmoid hidden units, softmax and cross-entropy, plain constant-rate
SGD, rows in order) at MNIST's width: online, and mini-batches of 32 and 128.
fastbp trains in float64 and float32; scikit-learn in float64 (as users call it);
PyTorch, where installed, in float32 (its native precision).

fastbp's online runs use the online kernel, whose sums keep the tutorial's exact
order (one row at a time, no SIMD reduction over a 784-wide dot product); its
mini-batches use the BLAS kernel.  scikit-learn's online SGD costs milliseconds per
row at this width, hence few rows in the online workload.
"""

import numpy as np
import pytest

import fastbp

NETWORK = {"hidden": 128, "activation": "sigmoid", "output": "softmax", "init": "glorot", "seed": 0}
LR = {1: 0.1, 32: 0.5, 128: 0.5}
#: Online and mini-batch training, each its own workload.
BATCH_SIZES = pytest.mark.parametrize(
    "batch_size", [pytest.param(1, marks=pytest.mark.benchmark(group="W3-mnist-online"), id="online"),
                   pytest.param(32, marks=pytest.mark.benchmark(group="W3-mnist-batch32"), id="batch32"),
                   pytest.param(128, marks=pytest.mark.benchmark(group="W3-mnist-batch128"), id="batch128")],
)  # fmt: skip


def train_fastbp(X, y, backend, dtype, batch_size, epochs):
    return fastbp.train(
        X, y, **NETWORK, lr=LR[batch_size], batch_size=batch_size, epochs=epochs, backend=backend, dtype=dtype,
        classes=np.arange(10),
    )  # fmt: skip


@BATCH_SIZES
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def bench_mnist_fastbp(timed, size, mnist_shape, assert_learned, describe_fastbp, compiled_backend, dtype, batch_size):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    train_fastbp(X[:64], y[:64], compiled_backend, dtype, batch_size, 1)  # warm up: load or compile the kernels
    model = timed(
        lambda: train_fastbp(X, y, compiled_backend, dtype, batch_size, size.epochs),
        samples=len(X) * size.epochs,
        **describe_fastbp(compiled_backend, dtype, batch_size),
    )
    assert_learned(model.predict(X), y)


@BATCH_SIZES
def bench_mnist_sklearn(timed, size, mnist_shape, assert_learned, fit_sklearn, batch_size):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    model = timed(
        lambda: fit_sklearn(X, y, hidden=NETWORK["hidden"], lr=LR[batch_size], batch_size=batch_size,
                            epochs=size.epochs),
        samples=len(X) * size.epochs,
        slow=batch_size == 1,
        library="scikit-learn",
        implementation=f"scikit-learn MLPClassifier batch_size={batch_size} float64",
        path="MLPClassifier(solver='sgd')",
        dtype="float64",
        batch_size=batch_size,
    )  # fmt: skip
    assert_learned(model.predict(X), y)


@BATCH_SIZES
def bench_mnist_torch(fit_torch, timed, size, mnist_shape, assert_learned, batch_size):
    X, y = mnist_shape[0][: size.rows], mnist_shape[1][: size.rows]
    fit_torch(X[:64], y[:64], hidden=NETWORK["hidden"], lr=LR[batch_size], batch_size=batch_size, epochs=1)  # warm up
    model = timed(
        lambda: fit_torch(X, y, hidden=NETWORK["hidden"], lr=LR[batch_size], batch_size=batch_size,
                          epochs=size.epochs),
        samples=len(X) * size.epochs,
        slow=batch_size == 1,
        library="PyTorch",
        implementation=f"PyTorch CPU {'per-sample' if batch_size == 1 else f'batch {batch_size}'} float32",
        path="torch.optim.SGD loop",
        dtype="float32",
        batch_size=batch_size,
    )  # fmt: skip
    assert_learned(model.predict(X), y)

"""The kernels of layered networks (convolutions, max pooling, dropout, flatten beside dense layers), through the
contract's :class:`fastbp._backends.Backend`: the compiled backends agree bit for bit, the gradient is the loss's
(central differences), the thread count and the dropout seed do what they say."""

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from fastbp._backends import COMPILED, Data, Schedule, available_backends, get_backend
from fastbp._concepts import LOSSES, OUTPUTS, OptimizerCode
from fastbp._constants import GEOMETRY_FIELDS, chunk_rows
from fastbp._layout import Layer, Layout

COMPILED = [name for name in COMPILED if name in available_backends()]
N_ROWS = 23  # batches of 17 leave a chunk of one row and a batch of 6; of 40, one batch of 23


def conv(in_shape, filters, kernel, strides=(1, 1), padding="valid", activation="tanh"):
    return Layer.conv2d(in_shape, filters, kernel, strides, padding, activation)


def stack(first, *makers):
    """``first`` and the layers ``makers`` make, each from the shape the one before puts out."""
    layers = [first]
    for make in makers:
        layers.append(make(layers[-1].out_shape))
    return Layout.from_layers(layers)


def flatten(shape):
    return Layer.flatten(shape)


def pool(size):
    return lambda shape: Layer.max_pool2d(shape, size)


def dropout(rate):
    return lambda shape: Layer.dropout(shape, rate)


def dense(n_out, activation):
    return lambda shape: Layer.dense(math.prod(shape), n_out, activation)


def convolve(*args, **kwargs):
    return lambda shape: conv(shape, *args, **kwargs)


# Small networks covering each layer kind, padding, stride, kernel shape, channel count, pool, dropout rate and
# activation (each hidden one on a convolution), and each output.
NETWORKS = {
    "valid-k3x2-c2-pool2x2-softmax": lambda: stack(
        conv((6, 5, 2), 3, (3, 2)), pool((2, 2)), flatten, dense(3, "softmax")
    ),
    "same-s2-k3-c1-relu-sigmoid": lambda: stack(
        conv((7, 6, 1), 2, (3, 3), (2, 2), "same", "relu"), flatten, dense(2, "sigmoid")
    ),
    "k1-c3-leaky-pool3x2-dropout-identity": lambda: stack(
        conv((6, 6, 3), 2, (1, 1), activation="leaky_relu"),
        pool((3, 2)),
        flatten,
        dropout(0.5),
        dense(2, "identity"),
    ),
    "same-k2x3-sigmoid-then-s2-identity-dropout-softmax": lambda: stack(
        conv((5, 7, 2), 3, (2, 3), padding="same", activation="sigmoid"),
        convolve(2, (2, 2), (2, 2), "valid", "identity"),
        flatten,
        dense(4, "tanh"),
        dropout(0.5),
        dense(3, "softmax"),
    ),
    "pool-first-image-dropout-same-s2x1": lambda: stack(
        Layer.max_pool2d((6, 4, 2), (2, 2)),
        dropout(0.5),
        convolve(2, (2, 2), (2, 1), "same", "tanh"),
        flatten,
        dense(2, "softmax"),
    ),
    "flatten-dense-dropout-softmax": lambda: stack(
        Layer.flatten((4, 3, 2)), dense(8, "relu"), dropout(0.5), dense(3, "softmax")
    ),
    # A relu dense layer whose chunk has few nonzero errors (here under a dropout of 0.8) passes its errors down and
    # takes its gradient by their terms alone (more units than a block of terms); a relu output layer's, about
    # half nonzero, by the gemms.
    "relu-dense-wide-dropout-relu-output": lambda: stack(
        conv((4, 4, 2), 3, (2, 2), activation="relu"), flatten, dense(70, "relu"), dropout(0.8), dense(3, "relu")
    ),
    "conv-softmax-output": lambda: stack(conv((4, 4, 1), 3, (4, 4), activation="softmax")),
    "conv-sigmoid-output-s2": lambda: stack(
        conv((5, 5, 2), 2, (2, 2), (1, 1), "same", "relu"), convolve(1, (3, 3), (2, 2), "valid", "sigmoid")
    ),
    "dropout-zero-rate-last": lambda: stack(
        conv((4, 5, 1), 2, (2, 2), activation="tanh"), flatten, dense(3, "tanh"), dropout(0.0)
    ),
    "dense-then-dropout-last": lambda: stack(Layer.dense(6, 5, "sigmoid"), dropout(0.5)),
    "relu-dense-first-dropout-softmax": lambda: stack(Layer.dense(6, 9, "relu"), dropout(0.8), dense(2, "softmax")),
    "relu-dense-on-relu-dense": lambda: stack(
        Layer.dense(7, 100, "relu"), dropout(0.8), dense(130, "relu"), dropout(0.8), dense(3, "softmax")
    ),
    "conv-pool-exp-output": lambda: stack(
        conv((5, 5, 1), 2, (2, 2), activation="relu"), pool((2, 2)), flatten, dense(2, "exp")
    ),  # fmt: skip
    # The founding notebook's first layer (one channel, 3x3 kernels, relu, then pooling), which the kernels
    # compute fused with its pooling: pooled 2x2 over an odd width; under a second convolution (whose backward
    # pass the Cython kernels run with the first two layers', row by row), pooled 2x2 over more filters than a
    # vector holds and rows of more windows than the Cython kernels' gradient lays out at a time (16), and 3x2.
    "first-k3-c1-relu-pool2x2-softmax": lambda: stack(
        conv((8, 9, 1), 5, (3, 3), activation="relu"), pool((2, 2)), flatten, dense(3, "softmax")
    ),
    "first-k3-c1-f11-relu-pool2x2-wide-conv-relu-pool-softmax": lambda: stack(
        conv((8, 37, 1), 11, (3, 3), activation="relu"),
        pool((2, 2)),
        convolve(3, (2, 2), activation="relu"),
        pool((2, 2)),
        flatten,
        dense(2, "softmax"),
    ),
    "first-k3-c1-relu-pool3x2-conv-relu-pool-dropout-sigmoid": lambda: stack(
        conv((11, 8, 1), 4, (3, 3), activation="relu"),
        pool((3, 2)),
        convolve(3, (2, 2), activation="relu"),
        pool((2, 2)),
        flatten,
        dropout(0.5),
        dense(2, "sigmoid"),
    ),
    # 3x3 kernels, stride 1, no padding, outputs in whole 2x2 tiles: computed by Winograd's F(2x2, 3x3), pooled
    # (the notebook's second layer), over one channel, and over more channels and filters than the Cython
    # kernels' transforms take at a time (16).
    "winograd-k3-c3-tanh-pool2x2-softmax": lambda: stack(
        conv((8, 7, 3), 4, (3, 3)), pool((2, 2)), flatten, dense(3, "softmax")
    ),  # fmt: skip
    "winograd-k3-c1-sigmoid-then-c18-relu-sigmoid": lambda: stack(
        conv((8, 8, 1), 18, (3, 3), activation="sigmoid"),
        convolve(17, (3, 3), activation="relu"),
        flatten,
        dense(2, "sigmoid"),
    ),
    # More channels than a pooling's window takes at a time in the Cython kernels (64): a pooled convolution's and
    # a pooling's poolings.
    "conv-c70-relu-pool2x2-pool2x2-softmax": lambda: stack(
        conv((5, 5, 2), 70, (1, 1), activation="relu"), pool((2, 2)), pool((2, 2)), flatten, dense(2, "softmax")
    ),
    # A pooled convolution of more filters than its backward pass groups at a time (64): its errors go into its
    # inputs in two blocks of filters.
    "c2-then-c70-k2-relu-pool2x2-softmax": lambda: stack(
        conv((4, 4, 2), 3, (1, 1)), convolve(70, (2, 2), activation="relu"), pool((2, 2)), flatten, dense(2, "softmax")
    ),
    # A pooled convolution over 45 channels: kernel rows of 135 values, so that the Cython kernels' backward pass
    # adds errors in its registers six vectors at a time, two at a time and one value at a time (in float32 and
    # float64, 16 bytes to 64 a vector); with its windows inside the image, and overhanging it.
    "c45-then-k3-relu-pool2x2-softmax": lambda: stack(
        conv((6, 6, 2), 45, (1, 1)),
        convolve(4, (3, 3), activation="relu"),
        pool((2, 2)),
        flatten,
        dense(3, "softmax"),
    ),
    "c45-then-same-k3-relu-pool2x2-sigmoid": lambda: stack(
        conv((5, 5, 2), 45, (1, 1)),
        convolve(3, (3, 3), padding="same", activation="relu"),
        pool((2, 2)),
        flatten,
        dense(2, "sigmoid"),
    ),
}

# (network, dtype, optimizer, batch size, threads, l2, sample weights): every network, optimizer, dtype, batch
# size and thread count at least once.
CASES = [
    ("valid-k3x2-c2-pool2x2-softmax", np.float64, "sgd", 5, 1, 0.0, False),
    ("valid-k3x2-c2-pool2x2-softmax", np.float32, "adam", 17, 2, 0.01, True),
    ("same-s2-k3-c1-relu-sigmoid", np.float32, "momentum", 17, 2, 0.01, False),
    ("same-s2-k3-c1-relu-sigmoid", np.float64, "rprop", 40, 1, 0.0, True),
    ("k1-c3-leaky-pool3x2-dropout-identity", np.float64, "nesterov", 40, 2, 0.0, True),
    ("k1-c3-leaky-pool3x2-dropout-identity", np.float32, "sgd", 1, 1, 0.01, False),
    ("same-k2x3-sigmoid-then-s2-identity-dropout-softmax", np.float32, "adam", 1, 1, 0.0, True),
    ("same-k2x3-sigmoid-then-s2-identity-dropout-softmax", np.float64, "momentum", 17, 2, 0.01, True),
    ("pool-first-image-dropout-same-s2x1", np.float64, "rprop", 17, 2, 0.01, False),
    ("pool-first-image-dropout-same-s2x1", np.float32, "nesterov", 5, 1, 0.0, True),
    ("flatten-dense-dropout-softmax", np.float32, "sgd", 40, 2, 0.01, True),
    ("flatten-dense-dropout-softmax", np.float64, "adam", 5, 2, 0.0, False),
    ("relu-dense-wide-dropout-relu-output", np.float32, "adam", 40, 2, 0.01, True),
    ("relu-dense-wide-dropout-relu-output", np.float64, "sgd", 17, 1, 0.0, False),
    ("conv-softmax-output", np.float64, "momentum", 1, 2, 0.0, True),
    ("conv-sigmoid-output-s2", np.float32, "rprop", 5, 2, 0.01, True),
    ("conv-sigmoid-output-s2", np.float64, "sgd", 17, 1, 0.0, False),
    ("conv-pool-exp-output", np.float64, "adam", 17, 2, 0.0, True),
    ("dropout-zero-rate-last", np.float32, "rmsprop", 40, 1, 0.01, True),
    ("dense-then-dropout-last", np.float64, "nesterov", 17, 2, 0.01, True),
    ("relu-dense-first-dropout-softmax", np.float32, "rmsprop", 17, 2, 0.0, False),
    ("relu-dense-first-dropout-softmax", np.float64, "sgd", 5, 1, 0.01, True),
    ("relu-dense-on-relu-dense", np.float64, "adam", 17, 2, 0.0, True),
    ("first-k3-c1-relu-pool2x2-softmax", np.float32, "adam", 17, 2, 0.01, True),
    ("first-k3-c1-relu-pool2x2-softmax", np.float64, "sgd", 5, 1, 0.0, False),
    ("first-k3-c1-f11-relu-pool2x2-wide-conv-relu-pool-softmax", np.float32, "sgd", 17, 2, 0.0, False),
    ("first-k3-c1-f11-relu-pool2x2-wide-conv-relu-pool-softmax", np.float64, "nesterov", 5, 1, 0.01, True),
    ("first-k3-c1-relu-pool3x2-conv-relu-pool-dropout-sigmoid", np.float32, "momentum", 40, 2, 0.0, True),
    ("first-k3-c1-relu-pool3x2-conv-relu-pool-dropout-sigmoid", np.float64, "adam", 17, 1, 0.01, False),
    ("winograd-k3-c3-tanh-pool2x2-softmax", np.float32, "adam", 17, 2, 0.01, True),
    ("winograd-k3-c3-tanh-pool2x2-softmax", np.float64, "momentum", 5, 1, 0.0, False),
    ("winograd-k3-c1-sigmoid-then-c18-relu-sigmoid", np.float32, "sgd", 40, 2, 0.0, False),
    ("winograd-k3-c1-sigmoid-then-c18-relu-sigmoid", np.float64, "rmsprop", 17, 1, 0.01, True),
    ("conv-c70-relu-pool2x2-pool2x2-softmax", np.float32, "adam", 17, 2, 0.0, True),
    ("conv-c70-relu-pool2x2-pool2x2-softmax", np.float64, "sgd", 5, 1, 0.01, False),
    ("c2-then-c70-k2-relu-pool2x2-softmax", np.float32, "adam", 17, 2, 0.01, True),
    ("c2-then-c70-k2-relu-pool2x2-softmax", np.float64, "sgd", 5, 1, 0.0, False),
    ("c45-then-k3-relu-pool2x2-softmax", np.float32, "adam", 17, 2, 0.0, True),
    ("c45-then-k3-relu-pool2x2-softmax", np.float64, "momentum", 5, 1, 0.01, False),
    ("c45-then-same-k3-relu-pool2x2-sigmoid", np.float32, "sgd", 40, 1, 0.01, False),
    ("c45-then-same-k3-relu-pool2x2-sigmoid", np.float64, "adam", 17, 2, 0.0, True),
]


def case_data(layout, dtype, weighted, seed=0, n_rows=N_ROWS):
    """Small random weights (biases included), rows, targets (one-hot for a softmax output) and sample weights."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(-0.6, 0.6, layout.n_weights).astype(dtype)
    X = rng.uniform(-1.0, 1.0, (n_rows, int(layout.sizes[0]))).astype(dtype)
    n_outputs = int(layout.sizes[-1])
    if layout.activations[-1] == "softmax":
        Y = np.eye(n_outputs, dtype=dtype)[rng.integers(0, n_outputs, n_rows)]
    else:
        Y = rng.uniform(0.0, 1.0, (n_rows, n_outputs)).astype(dtype)
    sample_weight = rng.uniform(0.5, 2.0, n_rows).astype(dtype) if weighted else np.ones(n_rows, dtype)
    return weights, Data(X, Y, sample_weight)


def make_schedule(n_rows, n_epochs=2, *, batch_size=5, optimizer="sgd", l2=0.0, steps_done=0, seed=7, rate=0.05):
    """Each epoch's rows in an order of its own, at ``rate`` (rprop ignores it), by ``optimizer``."""
    rng = np.random.default_rng(seed + 1000)
    orders = np.array([rng.permutation(n_rows) for _ in range(n_epochs)], dtype=np.intp)
    momentum = 0.9 if optimizer in ("momentum", "nesterov") else 0.0
    return Schedule(
        orders, np.full(n_epochs, rate), batch_size, int(OptimizerCode[optimizer.upper()]), momentum, l2, 0.9, 0.999,
        1e-8, steps_done, seed,
    )  # fmt: skip


def train(backend, layout, weights, data, schedule, n_threads, batches=True):
    """The trained weights, optimizer state, history and rows classed right in each of ``len(schedule.rates)``
    epochs from ``weights``."""
    weights = weights.copy()
    state = np.zeros(2 * len(weights), weights.dtype)
    if schedule.optimizer == OptimizerCode.RPROP:
        state[: len(weights)] = 0.01  # iRprop-'s initial step sizes
    history, right = np.zeros(len(schedule.rates)), np.full(len(schedule.rates), np.nan)
    net = layout.network(False)
    if batches:
        get_backend(backend).train_batches(net, weights, state, data, schedule, history, n_threads, right)
    else:
        get_backend(backend).train_online(net, weights, state, data, schedule, history, right)
    return weights, state, history, right


def gradient(backend, layout, weights, data, schedule, rows):
    grad = np.full_like(weights, np.nan)
    loss = get_backend(backend).layered_gradient(layout.network(False), weights, data, schedule, rows, grad)
    return loss, grad


def predict(backend, layout, weights, X):
    out = np.full((len(X), int(layout.sizes[-1])), np.nan, weights.dtype)
    get_backend(backend).predict_batch(layout.network(False), weights, X, out)
    return out


def assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"differ at {np.flatnonzero(a.ravel() != b.ravel())[:10]}"


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize(
    ("network", "dtype", "optimizer", "batch_size", "n_threads", "l2", "weighted"),
    CASES,
    ids=[f"{case[0]}-{case[1].__name__}-{case[2]}-b{case[3]}-t{case[4]}" for case in CASES],
)
def test_numba_and_cython_agree_bit_for_bit(network, dtype, optimizer, batch_size, n_threads, l2, weighted):
    layout = NETWORKS[network]()
    weights, data = case_data(layout, dtype, weighted)
    schedule = make_schedule(N_ROWS, batch_size=batch_size, optimizer=optimizer, l2=l2, steps_done=3)
    rows = np.array([4, 0, 22, 4, *range(5, 18)], dtype=np.intp)  # 17 rows, one twice: a chunk of 16 and of 1
    results = {}
    for backend in ("numba", "cython"):
        loss, grad = gradient(backend, layout, weights, data, schedule, rows)
        single = gradient(backend, layout, weights, data, schedule, rows[:1])
        results[backend] = (
            np.float64(loss), grad, np.float64(single[0]), single[1],
            predict(backend, layout, weights, data.X), *train(backend, layout, weights, data, schedule, n_threads),
        )  # fmt: skip
    for numba_result, cython_result in zip(results["numba"], results["cython"]):
        assert_same_bits(numba_result, cython_result)
    trained = results["numba"][5]
    assert np.all(np.isfinite(trained)) and not np.array_equal(trained, weights)


@pytest.mark.skipif("numba" not in available_backends(), reason="needs the Numba backend")
def test_numba_compiles_each_function_of_the_layered_kernels_once_per_dtype():
    """Numba compiles a function once for each set of argument types it is called with, a Python int or bool
    constant being a type of its own, and each compilation costs seconds on first use: training on one thread or
    several, the gradient and prediction call every function behind them with one set of types per dtype.

    A function lists the types it was called with only where its callers were compiled in this process: with an
    empty disk cache (CI's), not where they were loaded from it.
    """
    from numba.core.registry import CPUDispatcher

    from fastbp._kernels_numba import layered

    layout = NETWORKS["first-k3-c1-relu-pool3x2-conv-relu-pool-dropout-sigmoid"]()
    weights, data = case_data(layout, np.float32, weighted=False)
    schedule = make_schedule(N_ROWS, batch_size=17, optimizer="adam")
    for n_threads in (1, 2):
        train("numba", layout, weights, data, schedule, n_threads)
    gradient("numba", layout, weights, data, schedule, np.arange(17, dtype=np.intp))
    predict("numba", layout, weights, data.X)
    compiled = {name: value for name, value in vars(layered).items() if isinstance(value, CPUDispatcher)}
    float32 = {
        name: [sig for sig in dispatcher.signatures if "float32" in str(sig)] for name, dispatcher in compiled.items()
    }
    if not float32["_backward"]:
        pytest.skip("the layered kernels were loaded from Numba's disk cache: the functions they call list no types")
    assert {name: len(sigs) for name, sigs in float32.items() if len(sigs) > 1} == {}


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ties_in_a_pooling_window_go_to_the_first_largest_value_in_both_backends(dtype):
    """A filter of zero weights puts out its bias everywhere: which value of each window takes the error then
    changes the filter's gradient."""
    layout = stack(conv((6, 6, 2), 3, (2, 2)), pool((2, 2)), flatten, dense(3, "softmax"))
    weights, data = case_data(layout, dtype, weighted=True)
    filters = layout.layer_views(weights)[0]
    filters[1, :-1] = 0.0
    schedule = make_schedule(N_ROWS, batch_size=17)
    rows = np.arange(N_ROWS, dtype=np.intp)
    numba, cython = (gradient(backend, layout, weights, data, schedule, rows) for backend in ("numba", "cython"))
    assert_same_bits(numba[1], cython[1])
    assert np.abs(numba[1]).max() > 0


def fd_gradient(backend, layout, weights, data, schedule, rows, indices, step=1e-6):
    """Central differences of the batch's mean loss (half the squared error, the cross-entropy or the Poisson
    deviance: the output's first loss) at ``weights[indices]``, the dropout masks those of update
    ``steps_done + 1``."""
    factor = 1.0 / (LOSSES[OUTPUTS[layout.layers[-1].activation].losses[0]].reported_scale * len(rows))
    numeric = []
    for i in indices:
        plus, minus = weights.copy(), weights.copy()
        plus[i] += step
        minus[i] -= step
        difference = gradient(backend, layout, plus, data, schedule, rows)[0]
        difference -= gradient(backend, layout, minus, data, schedule, rows)[0]
        numeric.append(factor * difference / (2 * step))
    return np.array(numeric)


# A network per layer kind (each has dense or convolution layers around it, whose weights' gradients go through it).
GRADIENT_NETWORKS = {
    "conv2d": lambda: stack(
        conv((5, 4, 2), 2, (2, 3), (1, 1), "same", "tanh"),
        convolve(3, (2, 2), (2, 1), "valid", "sigmoid"),
        flatten,
        dense(3, "softmax"),
    ),
    "max_pool2d": lambda: stack(conv((6, 5, 1), 2, (2, 2)), pool((2, 2)), pool((2, 1)), flatten, dense(2, "sigmoid")),
    "conv2d-by-winograd": NETWORKS["winograd-k3-c3-tanh-pool2x2-softmax"],
    "conv2d-by-winograd-unpooled": NETWORKS["winograd-k3-c1-sigmoid-then-c18-relu-sigmoid"],
    "max_pool2d-over-70-channels": NETWORKS["conv-c70-relu-pool2x2-pool2x2-softmax"],
    "conv2d-pooled-with-70-filters": NETWORKS["c2-then-c70-k2-relu-pool2x2-softmax"],
    "max_pool2d-over-the-first-relu-convolution": lambda: stack(
        conv((7, 8, 1), 3, (3, 3), activation="relu"), pool((2, 2)), flatten, dense(2, "softmax")
    ),
    "conv2d-over-the-first-relu-convolutions-pooling": NETWORKS[
        "first-k3-c1-f11-relu-pool2x2-wide-conv-relu-pool-softmax"
    ],
    "dropout": lambda: stack(
        conv((4, 4, 2), 2, (3, 3), padding="same", activation="sigmoid"),
        dropout(0.5),
        flatten,
        dense(4, "tanh"),
        dropout(0.3),
        dense(3, "softmax"),
    ),
    "flatten": lambda: stack(conv((3, 4, 3), 2, (1, 2), activation="leaky_relu"), flatten, dense(2, "exp")),
    "dense": lambda: stack(Layer.dense(5, 4, "tanh"), dense(3, "sigmoid"), dropout(0.25), dense(2, "softmax")),
    "dense-relu": lambda: stack(Layer.dense(5, 40, "tanh"), dense(70, "relu"), dropout(0.8), dense(2, "softmax")),
    "dense-relu-first": lambda: stack(Layer.dense(5, 70, "relu"), dropout(0.8), dense(4, "relu"), dense(2, "softmax")),
}


@pytest.mark.parametrize("kind", GRADIENT_NETWORKS)
def test_the_gradient_matches_central_differences(compiled_backend, kind):
    layout = GRADIENT_NETWORKS[kind]()
    assert kind.split("-")[0] in {layer.kind for layer in layout.layers}
    weights, data = case_data(layout, np.float64, weighted=True, seed=3)
    schedule = make_schedule(N_ROWS, steps_done=5, seed=11)
    rows = np.arange(N_ROWS - 3, dtype=np.intp)[::-1].copy()  # 20 rows: chunks of 16 and 4
    loss, grad = gradient(compiled_backend, layout, weights, data, schedule, rows)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    rng = np.random.default_rng(0)
    indices = np.concatenate(  # a few weights of every layer with weights, its bias among them
        [
            [start + layer.n_weights - 1, *rng.choice(np.arange(start, start + layer.n_weights), 4, replace=False)]
            for layer, start in zip(layout.layers, layout.w_off.tolist())
            if layer.units
        ]
    )
    numeric = fd_gradient(compiled_backend, layout, weights, data, schedule, rows, indices)
    scale = np.abs(grad).max()
    assert scale > 0
    np.testing.assert_allclose(grad[indices], numeric, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("network", ["valid-k3x2-c2-pool2x2-softmax", "same-s2-k3-c1-relu-sigmoid"])
def test_the_rows_classed_right_are_counted_at_the_weights_before_each_update(compiled_backend, network):
    """One batch an epoch, no dropout: epoch ``e`` counts the rows whose largest output, predicted at the
    weights after ``e`` updates, is where their target's largest is (two sigmoid units as a softmax's)."""
    layout = NETWORKS[network]()
    weights, data = case_data(layout, np.float64, weighted=False)
    schedule = make_schedule(N_ROWS, n_epochs=3, batch_size=N_ROWS, optimizer="adam", rate=0.05)
    truth = data.Y.argmax(axis=1)
    expected = []
    for epoch in range(3):
        stepped = make_schedule(N_ROWS, n_epochs=epoch, batch_size=N_ROWS, optimizer="adam", rate=0.05)
        at = train(compiled_backend, layout, weights, data, stepped, 1)[0] if epoch else weights
        expected.append(np.sum(predict(compiled_backend, layout, at, data.X).argmax(axis=1) == truth))
    right = train(compiled_backend, layout, weights, data, schedule, 1)[3]
    np.testing.assert_array_equal(right, expected)
    assert 0 < right.sum() < 3 * N_ROWS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_trained_weights_do_not_depend_on_the_thread_count(compiled_backend, dtype):
    layout = NETWORKS["same-k2x3-sigmoid-then-s2-identity-dropout-softmax"]()
    weights, data = case_data(layout, dtype, weighted=True, n_rows=70)
    schedule = make_schedule(70, batch_size=50, optimizer="adam")  # 4 chunks, then 2 (the last of 4 rows)
    one = train(compiled_backend, layout, weights, data, schedule, 1)
    for n_threads in (2, 3):
        for a, b in zip(one, train(compiled_backend, layout, weights, data, schedule, n_threads)):
            assert_same_bits(a, b)


TEAM_SCRIPT = """
import sys
import numpy as np
import fastbp
from fastbp.layers import Conv2D, Dropout, Flatten, MaxPooling2D
fastbp._training.MIN_BATCH_WORK_FOR_THREADS = 0  # threads for this small network's batches too
rng = np.random.default_rng(0)
images, y = rng.random((300, 8, 8, 1)), rng.integers(0, 3, 300)
layers = [Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.25)]
model = fastbp.train(
    images, y, layers=layers, output="softmax", optimizer="adam", batch_size=128, epochs=2, seed=0,
    backend=sys.argv[1], n_threads=int(sys.argv[2]),
)
sys.stdout.write(model.weights.tobytes().hex())
"""


def test_a_training_on_fewer_threads_than_asked_for_gives_the_same_weights(compiled_backend, tmp_path):
    """Where the OpenMP runtime starts fewer threads than asked for (here ``OMP_THREAD_LIMIT=1``), the threads
    that do start share the chunks and the step among themselves: no thread waits for one that never came."""

    def weights_in_a_process(n_threads, **environment):
        finished = subprocess.run(  # outside the checkout, whose fastbp may lack the installed one's extensions
            [sys.executable, "-c", TEAM_SCRIPT, compiled_backend, str(n_threads)],
            capture_output=True, text=True, timeout=300, env={**os.environ, **environment}, cwd=tmp_path,
        )  # fmt: skip
        assert finished.returncode == 0, finished.stderr
        return finished.stdout

    assert weights_in_a_process(2, OMP_THREAD_LIMIT="1") == weights_in_a_process(1)


LARGE_BATCH_NETWORKS = [
    "first-k3-c1-relu-pool3x2-conv-relu-pool-dropout-sigmoid",
    "winograd-k3-c3-tanh-pool2x2-softmax",
    "relu-dense-on-relu-dense",
]


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("network", LARGE_BATCH_NETWORKS)
def test_batches_of_large_chunks_agree_bit_for_bit_at_any_thread_count(network):
    """Batches of 150 rows are cut into chunks of 32 (``chunk_rows``), the last of 22; an epoch of 170 rows ends
    with a batch of 20, one chunk."""
    assert chunk_rows(150) == 32 and chunk_rows(127) == 16
    layout = NETWORKS[network]()
    weights, data = case_data(layout, np.float32, weighted=True, n_rows=170)
    schedule = make_schedule(170, batch_size=150, optimizer="adam", steps_done=2)
    rows = np.arange(150, dtype=np.intp)[::-1].copy()
    results = [
        (*gradient(backend, layout, weights, data, schedule, rows), *train(backend, layout, weights, data, schedule, n))
        for backend in ("numba", "cython")
        for n in (1, 2)
    ]
    for result in results[1:]:
        for a, b in zip(results[0], result):
            assert_same_bits(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("network", LARGE_BATCH_NETWORKS)
def test_a_batch_of_large_chunks_has_the_mean_of_its_rows_gradients(compiled_backend, network):
    """Every row of every chunk counts once, with its own dropout: the batch's gradient is the mean of the
    gradients of its rows taken one at a time (in float64, up to rounding)."""
    layout = NETWORKS[network]()
    weights, data = case_data(layout, np.float64, weighted=True, n_rows=140)
    schedule = make_schedule(140, steps_done=4)
    rows = np.random.default_rng(5).choice(140, 130, replace=False)  # chunks of 32, the last of 2
    _, grad = gradient(compiled_backend, layout, weights, data, schedule, rows)
    singles = [gradient(compiled_backend, layout, weights, data, schedule, rows[i : i + 1])[1] for i in range(130)]
    np.testing.assert_allclose(grad, np.mean(singles, axis=0), rtol=1e-9, atol=1e-12 * np.abs(grad).max())


def test_train_online_trains_a_layered_network_by_its_batches_on_one_thread(compiled_backend):
    layout = NETWORKS["pool-first-image-dropout-same-s2x1"]()
    weights, data = case_data(layout, np.float64, weighted=True)
    schedule = make_schedule(N_ROWS, batch_size=1, optimizer="momentum")
    by_batches = train(compiled_backend, layout, weights, data, schedule, 2)
    online = train(compiled_backend, layout, weights, data, schedule, 1, batches=False)
    for a, b in zip(by_batches, online):
        assert_same_bits(a, b)


def test_the_seed_keys_the_dropout_masks(compiled_backend):
    layout = NETWORKS["flatten-dense-dropout-softmax"]()
    weights, data = case_data(layout, np.float32, weighted=False)
    schedule = make_schedule(N_ROWS, batch_size=5, seed=1)
    first, again = (train(compiled_backend, layout, weights, data, schedule, 2) for _ in range(2))
    for a, b in zip(first, again):
        assert_same_bits(a, b)
    other = train(compiled_backend, layout, weights, data, schedule._replace(seed=2), 2)
    assert not np.array_equal(first[0], other[0])
    # The row orders alone, with no dropout, do not depend on the seed.
    no_dropout = Layout.from_layers([layer for layer in layout.layers if layer.kind != "dropout"])
    plain = [train(compiled_backend, no_dropout, weights, data, schedule._replace(seed=seed), 2) for seed in (1, 2)]
    assert_same_bits(plain[0][0], plain[1][0])


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_a_seed_outside_int64s_non_negative_range_is_refused_by_every_layered_kernel(compiled_backend, seed):
    layout = NETWORKS["flatten-dense-dropout-softmax"]()
    weights, data = case_data(layout, np.float64, weighted=False)
    schedule = make_schedule(N_ROWS, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        train(compiled_backend, layout, weights, data, schedule, 1)
    with pytest.raises(ValueError, match="seed"):
        gradient(compiled_backend, layout, weights, data, schedule, np.arange(N_ROWS, dtype=np.intp))


def dropout_mask(backend, n_units, rate, *, row=0, seed=5, steps_done=0):
    """The units that dropout keeps of ``row`` in update ``steps_done + 1`` of ``seed``: a dropout layer on the
    inputs (all ones) of a dense layer, whose weights' gradient is each kept input, scaled, times the error."""
    layout = Layout.from_layers([Layer.dropout((n_units,), rate), Layer.dense(n_units, 1, "identity")])
    n_rows = row + 1
    data = Data(np.ones((n_rows, n_units)), np.zeros((n_rows, 1)), np.ones(n_rows))
    weights = np.zeros(layout.n_weights)
    weights[-1] = 1.0  # the bias: every row's output 1, its error 1
    schedule = make_schedule(n_rows, steps_done=steps_done, seed=seed)
    _, grad = gradient(backend, layout, weights, data, schedule, np.array([row], dtype=np.intp))
    kept = grad[:n_units]
    assert set(np.unique(kept).tolist()) <= {0.0, 1.0 / (1.0 - rate)}
    return kept != 0.0


@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_dropout_keeps_about_one_minus_the_rate_and_each_update_row_and_seed_draws_anew(compiled_backend, rate):
    n_units = 4000
    mask = dropout_mask(compiled_backend, n_units, rate)
    assert abs(mask.mean() - (1.0 - rate)) < 4 * math.sqrt(rate * (1.0 - rate) / n_units)
    assert np.array_equal(mask, dropout_mask(compiled_backend, n_units, rate))
    for other in (
        dropout_mask(compiled_backend, n_units, rate, seed=6),
        dropout_mask(compiled_backend, n_units, rate, steps_done=1),
        dropout_mask(compiled_backend, n_units, rate, row=1),
    ):
        assert 0.3 < np.mean(mask == other) < 0.9  # about rate**2 + (1 - rate)**2 alike, as independent draws


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prediction_passes_dropouts_values_on(compiled_backend, dtype):
    layout = NETWORKS["same-k2x3-sigmoid-then-s2-identity-dropout-softmax"]()
    without = Layout.from_layers([layer for layer in layout.layers if layer.kind != "dropout"])
    weights, data = case_data(layout, dtype, weighted=False, n_rows=35)
    assert_same_bits(
        predict(compiled_backend, layout, weights, data.X), predict(compiled_backend, without, weights, data.X)
    )
    schedule = make_schedule(35, batch_size=17)
    zero_rates = [Layer.dropout(layer.in_shape, 0.0) if layer.kind == "dropout" else layer for layer in layout.layers]
    with_zero_rate = Layout.from_layers(zero_rates)
    for a, b in zip(
        train(compiled_backend, with_zero_rate, weights, data, schedule, 2),
        train(compiled_backend, without, weights, data, schedule, 2),
    ):
        assert_same_bits(a, b)


def softmax(a):
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_forward(layout, weights, X):
    """The network's outputs by NumPy, layer by layer, from the layers' definitions (dropout passes values on)."""
    functions = {
        "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)), "tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0),
        "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a), "identity": lambda a: a, "softmax": softmax,
        "exp": np.exp,
    }  # fmt: skip
    values = X.reshape(len(X), *layout.layers[0].in_shape)
    for layer, start in zip(layout.layers, layout.w_off.tolist()):
        block = weights[start : start + layer.n_weights].reshape(layer.units, layer.fan_in + 1)
        if layer.kind == "dense":
            values = values @ block[:, :-1].T + block[:, -1]
        elif layer.kind == "conv2d":
            geometry = dict(zip(GEOMETRY_FIELDS, layer.geometry))
            (kh, kw), (sh, sw), top, left = layer.kernel, layer.strides, geometry["pad_top"], geometry["pad_left"]
            out_h, out_w, _ = layer.out_shape
            in_h, in_w, _ = layer.in_shape
            padded = np.zeros((len(X), in_h + kh + sh * out_h, in_w + kw + sw * out_w, layer.in_shape[2]))
            padded[:, top : top + in_h, left : left + in_w] = values
            sums = np.empty((len(X), out_h, out_w, layer.units))
            for oy in range(out_h):
                for ox in range(out_w):
                    window = padded[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw].reshape(len(X), -1)
                    sums[:, oy, ox] = window @ block[:, :-1].T + block[:, -1]
            values = sums
        elif layer.kind == "max_pool2d":
            (kh, kw), (out_h, out_w, channels) = layer.kernel, layer.out_shape
            values = values[:, : out_h * kh, : out_w * kw].reshape(len(X), out_h, kh, out_w, kw, channels).max((2, 4))
        elif layer.kind == "flatten":
            values = values.reshape(len(X), -1)
        shape = values.shape
        values = functions[layer.activation](values.reshape(len(X), -1)).reshape(shape)
    return values.reshape(len(X), -1)


@pytest.mark.parametrize("network", NETWORKS)
def test_predictions_are_the_layers_definitions(compiled_backend, network):
    layout = NETWORKS[network]()
    weights, data = case_data(layout, np.float64, weighted=False)
    expected = numpy_forward(layout, weights, data.X)
    np.testing.assert_allclose(predict(compiled_backend, layout, weights, data.X), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="flush-to-zero is set on x86 processors only"
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_the_kernels_flush_subnormal_numbers_to_zero_and_leave_the_callers_mode_alone(compiled_backend, n_threads):
    """The layered kernels run in flush-to-zero and denormals-are-zero modes, as TensorFlow's: a product below
    float32's smallest normal number is 0 (without them 1e-30 * 1e-10 is 1e-40, a subnormal number, on which the
    processor works a hundred times slower), forward and backward, in training on any number of threads; the
    calling thread keeps its own mode."""
    layout = stack(conv((2, 2, 1), 1, (1, 1), activation="identity"), flatten, dense(1, "identity"))
    X = np.full((3, 4), 1e-10, np.float32)
    filter_then_dense = np.array([1e-30, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0], np.float32)  # filter, bias; 4 weights, bias
    assert predict(compiled_backend, layout, filter_then_dense, X).tolist() == [[0.0]] * 3  # 4e-40 unflushed
    filter_then_dense[0], filter_then_dense[2:6] = 0.0, 1e-30  # errors of -1e-30 at the filter, times 1e-10
    X = np.full((64, 4), 1e-10, np.float32)  # a batch of four chunks: two threads share it
    data = Data(X, np.ones((64, 1), np.float32), np.ones(64, np.float32))
    _, grad = gradient(compiled_backend, layout, filter_then_dense, data, make_schedule(64), np.arange(64))
    assert grad[0] == 0.0 and grad[1] != 0.0  # the filter's gradient flushed, its bias's (-1e-30 a row) kept
    schedule = make_schedule(64, batch_size=64)
    weights, *_ = train(compiled_backend, layout, filter_then_dense, data, schedule, n_threads)
    assert weights[0] == 0.0 and weights[1] != 0.0  # a subnormal step, unflushed
    assert np.float32(1e-30) * np.float32(1e-10) != 0.0  # this thread's mode is as it was

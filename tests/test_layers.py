"""Layered networks (convolution, max pooling, dropout, flatten) through the public API.

Their forward values and gradients are checked against plain NumPy loops written here,
against central differences of the loss that ``fit`` reports, and against PyTorch
where it is installed; then determinism, dropout, input checks, both precisions, and
a digit classifier learned from the MNIST subset.
"""

import re

import numpy as np
import pytest
import scipy.sparse

import fastbp
from fastbp._backends import Backend, get_backend
from fastbp._parallel import MIN_BATCH_WORK_FOR_THREADS
from fastbp._sequential import SGD, Adam
from fastbp.layers import Activation, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D

#: The compiled backends, each of which should run every layer kind.
LAYERED_BACKENDS = ("numba", "cython")
#: The kinds beyond dense layers that these tests need a backend to run.
LAYER_KINDS = ("conv2d", "max_pool2d", "dropout", "flatten")


def require_layered(name: str) -> str:
    """``name``, or a skip where that backend is missing here or does not run layered networks yet (the skip
    disappears once its capabilities list every layer kind)."""
    if name not in fastbp.available_backends():
        pytest.skip(f"the {name!r} backend is not available here")
    missing = [kind for kind in LAYER_KINDS if kind not in get_backend(name).capabilities.layer_kinds]
    if missing:
        pytest.skip(f"the {name!r} backend does not run layers of kind {', '.join(missing)} yet")
    return name


@pytest.fixture(params=LAYERED_BACKENDS)
def layered_backend(request):
    """Every compiled backend, skipped where it does not run layered networks (yet)."""
    return require_layered(request.param)


# --------------------------------------------------------------------------------------------------------------
# A plain NumPy implementation, loop by loop: channels-last images (n, h, w, c), Keras's kernels (kh, kw, c_in,
# c_out), TensorFlow's "same" padding (the odd zero after the image), floor-mode max pooling of stride = pool.


def out_size_and_pad(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """The output size along one axis and the zeros padded before the image."""
    if padding == "valid":
        return (size - k) // stride + 1, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + k - size, 0) // 2


def conv_taps(image_hw, kernel_hw, strides, padding):
    """Every (output pixel, kernel offset, input pixel) that a convolution multiplies: the input pixel inside
    the image (padding zeros contribute nothing)."""
    (h, w), (kh, kw), (sh, sw) = image_hw, kernel_hw, strides
    oh, top = out_size_and_pad(h, kh, sh, padding)
    ow, left = out_size_and_pad(w, kw, sw, padding)
    taps = []
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    y, x = i * sh + di - top, j * sw + dj - left
                    if 0 <= y < h and 0 <= x < w:
                        taps.append((i, j, di, dj, y, x))
    return (oh, ow), taps


def np_conv2d(x, kernel, bias, strides=(1, 1), padding="valid"):
    """The convolution of every image of ``x``: ``out[n, i, j, o] = b[o] + sum x[n, y, x, c] * K[di, dj, c, o]``."""
    n, h, w, channels = x.shape
    kh, kw, _, filters = kernel.shape
    (oh, ow), taps = conv_taps((h, w), (kh, kw), strides, padding)
    out = np.zeros((n, oh, ow, filters))
    out += bias
    for i, j, di, dj, y, xx in taps:
        for o in range(filters):
            for c in range(channels):
                out[:, i, j, o] += x[:, y, xx, c] * kernel[di, dj, c, o]
    return out


def np_conv2d_backward(x, kernel, d_out, strides=(1, 1), padding="valid"):
    """The gradients of a convolution with respect to its input, kernel and bias, given ``d_out``."""
    n, h, w, channels = x.shape
    kh, kw, _, filters = kernel.shape
    _, taps = conv_taps((h, w), (kh, kw), strides, padding)
    d_x, d_kernel = np.zeros_like(x), np.zeros_like(kernel)
    for i, j, di, dj, y, xx in taps:
        for o in range(filters):
            for c in range(channels):
                d_x[:, y, xx, c] += kernel[di, dj, c, o] * d_out[:, i, j, o]
                d_kernel[di, dj, c, o] += np.sum(x[:, y, xx, c] * d_out[:, i, j, o])
    return d_x, d_kernel, d_out.sum(axis=(0, 1, 2))


def np_max_pool(x, pool):
    """Floor-mode max pooling of stride ``pool``, and where each window's maximum is: its first in
    row-then-column scan order (a later value wins only if strictly larger)."""
    n, h, w, channels = x.shape
    ph, pw = pool
    out = np.zeros((n, h // ph, w // pw, channels))
    where = {}
    for r in range(n):
        for i in range(h // ph):
            for j in range(w // pw):
                for c in range(channels):
                    best, at = -np.inf, None
                    for di in range(ph):
                        for dj in range(pw):
                            value = x[r, i * ph + di, j * pw + dj, c]
                            if value > best:
                                best, at = value, (r, i * ph + di, j * pw + dj, c)
                    out[r, i, j, c] = best
                    where[r, i, j, c] = at
    return out, where


def np_max_pool_backward(x, pool, d_out):
    """Each window's gradient, all to its first maximum."""
    _, where = np_max_pool(x, pool)
    d_x = np.zeros_like(x)
    for position, at in where.items():
        d_x[at] += d_out[position]
    return d_x


#: Each activation and its derivative, given the weighted sum ``z`` and the activation ``a``.
ACTIVATIONS = {
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a**2),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z, a: a * (1.0 - a)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z), lambda z, a: np.where(z > 0, 1.0, 0.01)),
}


def assert_close(actual, expected, rtol=1e-10, what=""):
    """Equal within ``rtol`` of each value, or of the largest value where one is near zero."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


# --------------------------------------------------------------------------------------------------------------
# The public API as a probe: a Sequential of float64 with plain SGD; the gradient of one batch is w0 - w1 at lr=1.


def sequential(layers, backend, *, lr=1.0, loss="mse", dtype="float64", seed=0):
    """A built ``Sequential`` of ``layers`` (the first declares its input shape), compiled with plain SGD."""
    model = fastbp.Sequential(layers, seed=seed)
    model.compile(optimizer=SGD(learning_rate=lr), loss=loss, dtype=dtype, backend=backend)
    model.build()
    return model


def one_batch(model, x, y) -> float:
    """One epoch of one batch (the rows in order): one update; returns the loss ``fit`` reports for it."""
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False, n_threads=1)
    return history.history["loss"][0]


def sgd_gradient(model, x, y) -> list[np.ndarray]:
    """The gradient of the batch at the model's weights, from one plain SGD step at lr=1: ``w0 - w1``."""
    before = model.get_weights()
    one_batch(model, x, y)
    return [w0 - w1 for w0, w1 in zip(before, model.get_weights(), strict=True)]


def identity_readout(n: int) -> list[np.ndarray]:
    """A dense layer's kernel and bias that pass its ``n`` inputs on as its outputs."""
    return [np.eye(n), np.zeros(n)]


#: Convolutions checked against the loops: (height, width, channels, filters, kernel, strides, padding,
#: activation).  Odd and even sizes, 1x1, 2x3, 3x3 and larger-than-the-image kernels, strides 1, 2 and mixed.
CONV_CASES = [
    (5, 5, 1, 1, (1, 1), (1, 1), "valid", "identity"),
    (7, 5, 2, 3, (2, 3), (1, 1), "same", "identity"),
    (7, 5, 2, 3, (2, 3), (2, 2), "valid", "tanh"),
    (7, 9, 3, 4, (3, 3), (2, 2), "same", "identity"),
    (5, 7, 1, 2, (3, 3), (1, 1), "same", "relu"),
    (9, 7, 3, 2, (3, 3), (2, 2), "valid", "sigmoid"),
    (5, 6, 2, 4, (2, 3), (2, 1), "same", "identity"),
    (4, 4, 1, 2, (3, 3), (2, 2), "same", "identity"),
    (3, 3, 2, 1, (3, 3), (1, 1), "valid", "identity"),
    (7, 7, 3, 1, (1, 1), (2, 2), "same", "identity"),
    (6, 5, 2, 2, (2, 3), (1, 2), "same", "relu"),
    (5, 3, 1, 3, (3, 3), (3, 3), "same", "tanh"),
    (2, 2, 1, 2, (4, 3), (1, 1), "same", "identity"),
    (6, 7, 2, 3, (2, 2), (2, 2), "same", "leaky_relu"),
]
#: The same, followed by a max pooling of the given size.
POOL_CASES = [
    (7, 5, 2, 3, (2, 3), (1, 1), "same", "identity", (2, 2)),
    (9, 7, 1, 2, (3, 3), (1, 1), "valid", "relu", (3, 2)),
    (6, 7, 3, 4, (3, 3), (2, 2), "same", "tanh", (1, 2)),
    (5, 5, 2, 1, (1, 1), (1, 1), "valid", "identity", (5, 5)),
    (8, 7, 1, 2, (2, 2), (2, 1), "valid", "sigmoid", (2, 3)),
]


def case_id(case) -> str:
    h, w, c, f, kernel, strides, padding, activation, *pool = case
    pooled = f"-pool{pool[0][0]}x{pool[0][1]}" if pool else ""
    return f"{h}x{w}x{c}-f{f}-k{kernel[0]}x{kernel[1]}-s{strides[0]}{strides[1]}-{padding}-{activation}{pooled}"


def check_against_loops(backend, case, pool=None, weights=None, x=None):
    """A 1x1 convolution (so the next one's input gradient shows), the convolution ``case``, an optional max
    pooling, Flatten and a linear Dense set to the identity: fastbp's outputs are the layers' outputs, and one
    SGD step on Keras's ``mean((o - t)**2)`` gives every gradient the loops give."""
    h, w, c, filters, kernel, strides, padding, activation = case
    rng = np.random.default_rng(h * 1000 + w * 100 + c * 10 + filters)
    x = rng.normal(size=(3, h, w, c)) if x is None else x
    layers = [
        Conv2D(c, 1, input_shape=x.shape[1:]),
        Conv2D(filters, kernel, strides=strides, padding=padding, activation=activation),
    ]
    if pool is not None:
        layers.append(MaxPooling2D(pool))
    pre_kernel, pre_bias = rng.normal(size=(1, 1, x.shape[-1], c)), rng.normal(size=c)
    conv_kernel, conv_bias = rng.normal(size=(*kernel, c, filters)), rng.normal(size=filters)
    if weights is not None:
        pre_kernel, pre_bias, conv_kernel, conv_bias = weights

    # The loops' forward pass.
    hidden = np_conv2d(x, pre_kernel, pre_bias)
    z = np_conv2d(hidden, conv_kernel, conv_bias, strides, padding)
    forward, slope = ACTIVATIONS[activation]
    a = forward(z)
    pooled = np_max_pool(a, pool)[0] if pool is not None else a
    outputs = pooled.reshape(len(x), -1)
    n_out = outputs.shape[1]

    model = sequential([*layers, Flatten(), Dense(n_out)], backend)
    model.set_weights([pre_kernel, pre_bias, conv_kernel, conv_bias, *identity_readout(n_out)])
    assert_close(model.predict(x), outputs, what="forward")

    # The loops' backward pass of the mean over rows and outputs of (o - t)**2, through the identity readout.
    targets = rng.normal(size=outputs.shape)
    d_outputs = 2 * (outputs - targets) / outputs.size
    d_pooled = d_outputs.reshape(pooled.shape)
    d_a = np_max_pool_backward(a, pool, d_pooled) if pool is not None else d_pooled
    d_z = d_a * slope(z, a)
    d_hidden, d_conv_kernel, d_conv_bias = np_conv2d_backward(hidden, conv_kernel, d_z, strides, padding)
    _, d_pre_kernel, d_pre_bias = np_conv2d_backward(x, pre_kernel, d_hidden)
    expected = [d_pre_kernel, d_pre_bias, d_conv_kernel, d_conv_bias, outputs.T @ d_outputs, d_outputs.sum(axis=0)]
    names = ["1x1 kernel", "1x1 bias", "kernel", "bias", "dense kernel", "dense bias"]
    for name, got, want in zip(names, sgd_gradient(model, x, targets), expected, strict=True):
        assert got.shape == want.shape
        assert_close(got, want, what=f"gradient of the {name}")


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_convolution_forward_and_gradients_equal_plain_loops(layered_backend, case):
    check_against_loops(layered_backend, case)


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_convolution_input_gradient_equals_plain_loops_at_every_pixel(layered_backend, case):
    # Images whose channel k is 1 at pixel k only: the 1x1 convolution's kernel row k is then the hidden image at
    # pixel k, and its gradient the next convolution's input gradient there (summed over the rows).
    h, w = case[:2]
    positions = np.tile(np.eye(h * w).reshape(1, h, w, h * w), (3, 1, 1, 1))
    check_against_loops(layered_backend, case, x=positions)


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_max_pooling_forward_and_gradients_equal_plain_loops(layered_backend, case):
    *conv, pool = case
    check_against_loops(layered_backend, tuple(conv), pool=pool)


def test_max_pooling_sends_each_gradient_to_the_first_maximum_of_its_window(layered_backend):
    # Ties everywhere: a zero kernel makes every output of a filter its bias.  Then partial ties: 0/1 images
    # through a kernel of ones give small whole numbers, often tied.  The kernel's gradient depends on which
    # pixel of each window receives it.
    h, w, c, filters = 7, 8, 2, 2
    rng = np.random.default_rng(3)
    case = (h, w, c, filters, (2, 2), (1, 1), "valid", "identity")
    identity_1x1 = np.eye(c).reshape(1, 1, c, c)
    tied = [identity_1x1, np.zeros(c), np.zeros((2, 2, c, filters)), rng.normal(size=filters)]
    check_against_loops(layered_backend, case, pool=(2, 3), weights=tied)
    pixels = rng.integers(0, 2, size=(3, h, w, c)).astype(float)
    ones = [identity_1x1, np.zeros(c), np.ones((2, 2, c, filters)), np.zeros(filters)]
    check_against_loops(layered_backend, case, pool=(3, 2), weights=ones, x=pixels)


def test_max_pooling_alone_and_flatten_order_are_channels_last(layered_backend):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 7, 5, 3))
    model = sequential([MaxPooling2D((2, 2), input_shape=(7, 5, 3)), Flatten(), Dense(3 * 2 * 3)], layered_backend)
    model.set_weights(identity_readout(18))
    assert_close(model.predict(x), np_max_pool(x, (2, 2))[0].reshape(4, -1))
    flat = sequential([Flatten(input_shape=(7, 5, 3)), Dense(105)], layered_backend)
    flat.set_weights(identity_readout(105))
    np.testing.assert_array_equal(flat.predict(x), x.reshape(4, -1))


# --------------------------------------------------------------------------------------------------------------
# Central differences of the loss fit reports, through fresh models, against one SGD step's gradient.

INPUT = (7, 6, 2)
#: One network per layer kind (and activation on a convolution), each ending in its output layer.
FD_NETWORKS = {
    "conv-valid-stride2-relu": [
        Conv2D(3, (2, 3), strides=2, padding="valid", activation="relu", input_shape=INPUT),
        Flatten(),
        Dense(3, activation="softmax"),
    ],
    "conv-same-stride2-tanh": [
        Conv2D(2, 3, strides=2, padding="same", activation="tanh", input_shape=INPUT),
        Flatten(),
        Dense(3, activation="softmax"),
    ],
    "conv-sigmoid-pooling": [
        Conv2D(3, 2, activation="sigmoid", input_shape=INPUT),
        MaxPooling2D(2),
        Flatten(),
        Dense(4, activation="relu"),
        Dense(3, activation="softmax"),
    ],
    "two-convs-pooling-activation-layers": [
        Conv2D(2, 3, padding="same", input_shape=INPUT),
        Activation("relu"),
        MaxPooling2D((2, 3)),
        Conv2D(3, (2, 1), strides=(1, 1)),
        Activation("tanh"),
        Flatten(),
        Dense(3),
        Activation("softmax"),
    ],
    "dropout": [
        Conv2D(2, 3, padding="same", activation="tanh", input_shape=INPUT),
        Dropout(0.5),
        Flatten(),
        Dense(5, activation="tanh"),
        Dropout(0.5),
        Dense(3, activation="softmax"),
    ],
    "flatten-dense": [Flatten(input_shape=INPUT), Dense(4, activation="sigmoid"), Dense(3, activation="softmax")],
    "conv-leaky-relu-dense-relu": [
        Conv2D(2, (3, 2), strides=(1, 2), activation="leaky_relu", input_shape=INPUT),
        Flatten(),
        Dense(6, activation="relu"),
        Dense(3, activation="softmax"),
    ],
}


def fd_check(backend, layers, x, y, loss, n_samples=4, step=1e-5, seed=11):
    """Every weight array's gradient at a sample of its entries: central differences of the reported loss
    (each from a fresh model of ``seed``, so the same dropout masks) against one SGD step's."""
    rng = np.random.default_rng(seed)
    start = sequential(layers, backend, loss=loss, seed=seed).get_weights()
    weights = [w + rng.normal(scale=0.3, size=w.shape) for w in start]

    def loss_at(values):
        model = sequential(layers, backend, lr=1e-12, loss=loss, seed=seed)
        model.set_weights(values)
        return one_batch(model, x, y)

    model = sequential(layers, backend, loss=loss, seed=seed)
    model.set_weights(weights)
    gradient = sgd_gradient(model, x, y)
    for k, (w, g) in enumerate(zip(weights, gradient, strict=True)):
        for index in rng.choice(w.size, size=min(n_samples, w.size), replace=False):
            plus, minus = [v.copy() for v in weights], [v.copy() for v in weights]
            plus[k].flat[index] += step
            minus[k].flat[index] -= step
            numeric = (loss_at(plus) - loss_at(minus)) / (2 * step)
            analytic = g.flat[index]
            assert abs(numeric - analytic) <= 1e-6 * abs(analytic) + 1e-9, (k, index, numeric, analytic)


@pytest.mark.parametrize("name", FD_NETWORKS)
def test_gradients_equal_central_differences_of_the_loss(layered_backend, name):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(19, *INPUT)), rng.integers(0, 3, 19)  # 19 rows: two chunks of rows, one short
    fd_check(layered_backend, FD_NETWORKS[name], x, y, "categorical_crossentropy")


def test_squared_error_descends_the_loss_it_reports(layered_backend):
    # Keras's mse, the mean of (t - o)**2 over a row's outputs: reported as it is descended (the kernels take the
    # gradient of half the sum over the outputs, which the model's row weights make up for).
    layers = [
        Conv2D(2, (3, 2), strides=(2, 1), padding="same", activation="relu", input_shape=INPUT),
        MaxPooling2D(2),
        Flatten(),
        Dense(2),
    ]
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, *INPUT)), rng.normal(size=(9, 2))
    fd_check(layered_backend, layers, x, y, "mse")


# --------------------------------------------------------------------------------------------------------------
# PyTorch, where installed.

TORCH_CASES = [
    # (height, width, channels, filters, kernel, strides, padding, pool)
    (7, 6, 2, 3, (3, 3), (1, 1), "valid", None),
    (7, 6, 2, 3, (3, 3), (2, 2), "valid", None),
    (8, 9, 1, 2, (2, 3), (2, 2), "valid", (2, 2)),
    (7, 7, 3, 2, (3, 3), (1, 1), "same", None),
    (7, 7, 1, 4, (3, 3), (2, 2), "same", (2, 2)),
    (9, 5, 2, 2, (5, 3), (2, 2), "same", None),
    (9, 8, 2, 3, (3, 1), (1, 1), "same", (3, 2)),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda case: "-".join(map(str, case)).replace(" ", ""))
def test_convolution_and_pooling_equal_pytorch(layered_backend, case):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the comparison with it is skipped")
    h, w, c, filters, kernel, strides, padding, pool = case
    pads = [out_size_and_pad(size, k, s, padding) for size, k, s in zip((h, w), kernel, strides)]
    totals = [max((out - 1) * s + k - size, 0) for (out, _), size, k, s in zip(pads, (h, w), kernel, strides)]
    assert padding == "valid" or all(total % 2 == 0 for total in totals), "torch pads symmetrically only"
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, h, w, c))
    conv_kernel, conv_bias = rng.normal(size=(*kernel, c, filters)), rng.normal(size=filters)

    x_t = torch.tensor(x.transpose(0, 3, 1, 2))
    kernel_t = torch.tensor(conv_kernel.transpose(3, 2, 0, 1), requires_grad=True)
    bias_t = torch.tensor(conv_bias, requires_grad=True)
    out_t = torch.nn.functional.conv2d(x_t, kernel_t, bias_t, stride=strides, padding=[pad for _, pad in pads])
    if pool is not None:
        out_t = torch.nn.functional.max_pool2d(out_t, kernel_size=pool, stride=pool)
    flat_t = out_t.permute(0, 2, 3, 1).reshape(len(x), -1)  # channels-last, as fastbp flattens
    targets = rng.normal(size=tuple(flat_t.shape))
    torch.nn.functional.mse_loss(flat_t, torch.tensor(targets)).backward()  # Keras's mse, the model's loss

    layers = [Conv2D(filters, kernel, strides=strides, padding=padding, input_shape=(h, w, c))]
    layers += [MaxPooling2D(pool)] if pool is not None else []
    n_out = flat_t.shape[1]
    model = sequential([*layers, Flatten(), Dense(n_out)], layered_backend)
    model.set_weights([conv_kernel, conv_bias, *identity_readout(n_out)])
    assert_close(model.predict(x), flat_t.detach().numpy())
    d_kernel, d_bias, *_ = sgd_gradient(model, x, targets)
    assert_close(d_kernel, kernel_t.grad.numpy().transpose(2, 3, 1, 0))
    assert_close(d_bias, bias_t.grad.numpy())


# --------------------------------------------------------------------------------------------------------------
# Determinism.


def threaded_layers():
    """Enough weights that a batch of 37 rows is shared between threads (MIN_BATCH_WORK_FOR_THREADS)."""
    return [
        Conv2D(8, 3, activation="relu"),
        Flatten(),
        Dropout(0.5),
        Dense(96, activation="relu"),
        Dropout(0.3),
    ]


def threaded_data():
    rng = np.random.default_rng(8)
    return rng.random((50, 20, 20, 1)), rng.integers(0, 3, 50)  # 50 rows in batches of 37: a short last one


def train_threaded(backend, seed, n_threads):
    x, y = threaded_data()
    return fastbp.train(
        x, y, layers=threaded_layers(), output="softmax", optimizer="adam", lr=1e-3, batch_size=37, epochs=3,
        shuffle=True, seed=seed, backend=backend, n_threads=n_threads,
    )  # fmt: skip


def test_train_is_deterministic_and_independent_of_threads(layered_backend):
    first = train_threaded(layered_backend, seed=5, n_threads=1)
    assert 37 * first.weights.size >= MIN_BATCH_WORK_FOR_THREADS, "the batches would not be shared by threads"
    again = train_threaded(layered_backend, seed=5, n_threads=1)
    threaded = train_threaded(layered_backend, seed=5, n_threads=2)
    for other in (again, threaded):
        np.testing.assert_array_equal(other.weights, first.weights)
        np.testing.assert_array_equal(other.history, first.history)
    other_seed = train_threaded(layered_backend, seed=6, n_threads=2)
    assert not np.array_equal(other_seed.weights, first.weights)


def test_predictions_do_not_depend_on_threads_or_on_the_other_rows(layered_backend):
    x, _ = threaded_data()
    model = fastbp.Sequential([Input((20, 20, 1)), *threaded_layers(), Dense(3, activation="softmax")], seed=5)
    model.compile(dtype="float64", backend=layered_backend)
    model.build()
    alone = model.predict(x, n_threads=1)
    np.testing.assert_array_equal(model.predict(x, n_threads=2), alone)
    for first, stop in [(0, 25), (24, 25), (25, 50), (40, 50)]:
        np.testing.assert_array_equal(model.predict(x[first:stop], n_threads=1), alone[first:stop])


def fit_threaded(backend, seed, n_threads):
    x, y = threaded_data()
    model = fastbp.Sequential([Input((20, 20, 1)), *threaded_layers(), Dense(3, activation="softmax")], seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], backend=backend)
    history = model.fit(x, y, batch_size=37, epochs=3, verbose=0, n_threads=n_threads)
    return model, history.history


def test_sequential_fit_is_deterministic_and_independent_of_threads(layered_backend):
    first, history = fit_threaded(layered_backend, seed=5, n_threads=1)
    assert 37 * first.count_params() >= MIN_BATCH_WORK_FOR_THREADS
    for n_threads in (1, 2):
        model, other = fit_threaded(layered_backend, seed=5, n_threads=n_threads)
        for got, want in zip(model.get_weights(), first.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
        assert other == history
    model, _ = fit_threaded(layered_backend, seed=6, n_threads=2)
    assert not np.array_equal(model.get_weights()[0], first.get_weights()[0])


def test_compiled_backends_train_the_same_bits(layered_backend):
    # The Cython backend follows the Numba one operation by operation, BLAS called the same way.
    other = {"numba": "cython", "cython": "numba"}[layered_backend]
    require_layered(other)
    mine, theirs = train_threaded(layered_backend, 5, 2), train_threaded(other, 5, 2)
    np.testing.assert_array_equal(mine.weights, theirs.weights)
    np.testing.assert_array_equal(mine.history, theirs.history)


# --------------------------------------------------------------------------------------------------------------
# Dropout.


def test_dropout_passes_values_on_in_prediction(layered_backend):
    # The convolution's outputs are 6x6, whole 2x2 tiles whether the pooling reads them or not: it is computed by
    # Winograd's transform in both networks (a pooling reading 6x5 outputs would have it computed on the 6x4 it
    # reads by Winograd's, and the dropout between them on all 6x5 directly, to other rounding).
    with_dropout = [
        Conv2D(3, 3, activation="relu", input_shape=(8, 8, 2)),
        Dropout(0.5),
        MaxPooling2D(2),
        Flatten(),
        Dense(6, activation="tanh"),
        Dropout(0.7),
        Dense(4, activation="softmax"),
    ]
    without = [layer for layer in with_dropout if not isinstance(layer, Dropout)]
    model = sequential(with_dropout, layered_backend, loss="categorical_crossentropy", seed=2)
    plain = sequential(without, layered_backend, loss="categorical_crossentropy", seed=9)
    plain.set_weights(model.get_weights())
    x = np.random.default_rng(9).normal(size=(21, 8, 8, 2))
    np.testing.assert_array_equal(model.predict(x), plain.predict(x))
    np.testing.assert_array_equal(model.predict(x), model.predict(x))


@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_dropout_zeroes_about_rate_of_the_values_and_scales_the_rest(layered_backend, rate):
    # Dropout(rate) on inputs of ones, then a linear Dense(2) of zero weights: with targets (-1, 0) for row 0
    # and (0, -1) for row 1, the gradient of column r of the kernel is row r's mask times 1 / (1 - rate), halved
    # (the batch's mean); a tiny lr keeps the next update's outputs at 0, so it shows the next masks.
    n = 4000
    model = sequential([Dropout(rate, input_shape=(n,)), Dense(2)], layered_backend, lr=1e-20)
    model.set_weights([np.zeros((n, 2)), np.zeros(2)])
    x, targets = np.ones((2, n)), -np.eye(2)
    masks = []
    for _ in range(2):
        before = model.get_weights()[0]
        one_batch(model, x, targets)
        gradient = (before - model.get_weights()[0]) / 1e-20
        kept = 2 * gradient * (1 - rate)  # each row's mask: 0 dropped, 1 kept
        np.testing.assert_allclose(kept, np.round(kept), atol=1e-9)
        assert set(np.unique(np.round(kept))) == {0.0, 1.0}
        masks += list(np.round(kept).T)
    sigma = np.sqrt(n * rate * (1 - rate))
    for mask in masks:
        assert abs((n - mask.sum()) - rate * n) < 5 * sigma
    for k in range(len(masks)):
        for j in range(k):
            assert not np.array_equal(masks[k], masks[j]), "rows and updates must draw their own masks"


def test_dropout_of_rate_zero_changes_nothing(layered_backend):
    rng = np.random.default_rng(19)
    x, y = rng.normal(size=(20, 6, 5, 2)), rng.integers(0, 3, 20)
    layers = [Conv2D(3, 2, activation="relu", input_shape=(6, 5, 2)), Flatten(), Dense(3, activation="softmax")]
    plain = sequential(layers, layered_backend, loss="categorical_crossentropy")
    dropped = sequential([*layers[:2], Dropout(0.0), layers[2]], layered_backend, loss="categorical_crossentropy")
    dropped.set_weights(plain.get_weights())
    assert one_batch(plain, x, y) == one_batch(dropped, x, y)
    for got, want in zip(dropped.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_training_with_dropout_differs_from_training_without(layered_backend):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(20, 6, 5, 2)), rng.integers(0, 3, 20)
    layers = [Conv2D(3, 2, activation="relu", input_shape=(6, 5, 2)), Flatten(), Dense(3, activation="softmax")]
    plain = sequential(layers, layered_backend, loss="categorical_crossentropy")
    dropped = sequential([*layers[:2], Dropout(0.5), layers[2]], layered_backend, loss="categorical_crossentropy")
    dropped.set_weights(plain.get_weights())
    assert one_batch(plain, x, y) != one_batch(dropped, x, y)
    assert not np.array_equal(plain.get_weights()[0], dropped.get_weights()[0])


# --------------------------------------------------------------------------------------------------------------
# Bad input: a ValueError that names the layer and the shapes, before any kernel runs.


@pytest.fixture
def no_kernels(monkeypatch):
    """Make every kernel call fail the test: the checks must refuse the input before any runs."""

    def refused(*args, **kwargs):
        raise AssertionError("a kernel ran on input that should have been refused")

    for name in ("train_online", "train_batches", "predict_batch"):
        monkeypatch.setattr(Backend, name, refused)


def image_model(backend, seed=0):
    model = fastbp.Sequential(
        [Conv2D(2, 3, activation="relu", input_shape=(6, 5, 2)), MaxPooling2D(2), Flatten(), Dense(3, "softmax")],
        seed=seed,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", dtype="float64", backend=backend)
    model.build()
    return model


@pytest.mark.parametrize(
    "shape", [(4, 5, 6, 2), (4, 6, 5), (4, 6, 5, 3), (4, 6, 5, 2, 1), (4, 61), (6, 5, 2)], ids=lambda s: str(s)
)
def test_images_of_the_wrong_shape_are_refused(layered_backend, no_kernels, shape):
    model = image_model(layered_backend)
    before = model.get_weights()
    x = np.zeros(shape)
    message = r"shape .*the first layer takes images of shape \(6, 5, 2\)"
    with pytest.raises(ValueError, match=message):
        model.predict(x)
    with pytest.raises(ValueError, match=message):
        model.fit(x, np.zeros(shape[0], dtype=int), verbose=0)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_one_image_ragged_images_and_non_arrays_are_refused_by_name(layered_backend, no_kernels):
    model = image_model(layered_backend)
    image = np.zeros((6, 5, 2))
    with pytest.raises(ValueError, match=r"X is one image of shape \(6, 5, 2\).*in a batch.*X\[np.newaxis\]"):
        model.predict(image)
    with pytest.raises(ValueError, match=r"X's images are not all of one shape: pass one array \(n_images, 6, 5, 2\)"):
        model.predict([image, image[:5]])
    for x in (None, 3.0):
        with pytest.raises(TypeError, match=r"X must be an array of images \(n_images, 6, 5, 2\), got"):
            model.predict(x)
    for x in ({"x": image}, (row for row in [image])):
        with pytest.raises(TypeError, match=r"x must be an array of rows, got (dict|generator): fastbp takes arrays"):
            model.predict(x)


def test_one_flattened_row_is_not_taken_for_one_image(layered_backend):
    model = fastbp.Sequential([Flatten(input_shape=(1, 4, 1)), Dense(2, "softmax")])
    model.compile(backend=layered_backend)
    assert model.predict(np.zeros((1, 4))).shape == (1, 2)  # a row of an image (1, 4, 1)'s 4 values


def test_train_refuses_images_of_the_wrong_rank_and_predict_the_wrong_size(layered_backend, no_kernels):
    layers = [Conv2D(2, 3), Flatten()]
    with pytest.raises(ValueError, match=r"the first layer takes images.*got shape \(4, 30\)"):
        fastbp.train(np.zeros((4, 30)), [0, 1, 0, 1], layers=layers, output="softmax", backend=layered_backend)


@pytest.mark.parametrize("output_layer", [[Dense(2), Activation("softmax")], [Dense(2, activation="softmax")]], ids=str)
def test_train_refuses_layers_that_end_in_the_output_layer_with_a_hint(no_kernels, output_layer):
    x, y = np.zeros((4, 6, 5, 1)), [0, 1, 0, 1]
    message = r"layers end in a softmax \((Activation|Dense)\), an output layer's: fastbp.train makes the output layer"
    with pytest.raises(ValueError, match=message):
        fastbp.train(x, y, layers=[Conv2D(2, 3), Flatten(), *output_layer], output="softmax")


def test_sparse_rows_for_a_first_convolution_need_its_input_shape(layered_backend, no_kernels):
    rows = scipy.sparse.csr_matrix(np.eye(4, 30))
    message = r"X is a sparse matrix of shape \(4, 30\): give the first layer input_shape=\(height, width, channels\)"
    with pytest.raises(ValueError, match=message):
        fastbp.train(rows, [0, 1, 0, 1], layers=[Conv2D(2, 3), Flatten()], output="softmax", backend=layered_backend)


def test_input_dim_is_kerass_other_spelling_of_a_vectors_input_shape():
    assert Dense(4, input_dim=7) == Dense(4, input_shape=(7,))
    assert Conv2D(2, 3, input_dim=9).input_shape == (9,)  # as Keras takes it, from any layer
    assert fastbp.layers.layer_config(Dense(4, input_dim=7)) == {
        "class_name": "Dense",
        "input_shape": [7],
        "units": 4,
        "activation": None,
    }
    assert "input_dim" not in repr(Dense(4, input_dim=7))
    with pytest.raises(ValueError, match="Dense: give input_shape or input_dim, not both"):
        Dense(4, input_dim=7, input_shape=(7,))
    for bad in (0, 2.5, True, "7"):
        with pytest.raises(ValueError, match=f"Dense: input_dim must be a positive integer, got {bad!r}"):
            Dense(4, input_dim=bad)
    with pytest.raises(ValueError, match="Input: its shape is the input's shape; it takes no input_dim"):
        Input((7,), input_dim=7)


def test_only_the_first_layer_declares_the_networks_input_shape(layered_backend):
    # As Keras takes it: a later layer's input_shape is checked against its input, never taken for the network's.
    x, y = np.random.default_rng(16).random((8, 6, 5, 1)), np.arange(8) % 2
    options = {"output": "softmax", "batch_size": 4, "epochs": 1, "seed": 0, "backend": layered_backend}
    model = fastbp.train(x, y, layers=[Flatten(), Dense(4, input_shape=(30,))], **options)
    assert model.input_shape == (6, 5, 1)
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\): it declares input_shape \(7,\), but its input has shape"):
        fastbp.train(x, y, layers=[Flatten(), Dense(4, input_shape=(7,))], **options)


def test_models_from_train_refuse_images_of_the_wrong_size(layered_backend):
    rng = np.random.default_rng(13)
    model = fastbp.train(
        rng.random((8, 6, 5)), np.arange(8) % 2, layers=[Conv2D(2, 3), Flatten()], output="softmax",
        batch_size=4, epochs=1, seed=0, backend=layered_backend,
    )  # fmt: skip
    assert model.input_shape == (6, 5, 1)
    assert model.predict(rng.random((3, 6, 5, 1))).shape == (3,)
    with pytest.raises(ValueError, match=r"X has shape \(3, 5, 6\).*\(6, 5, 1\)"):
        model.predict(rng.random((3, 5, 6)))


#: Layers that cannot take what comes in, on images (4, 6, 1), and the message that names the layer and the shapes.
UNFIT_LAYERS = [
    ([Conv2D(2, 5), Flatten()], r"layer 0 \(Conv2D\): a 5x5 kernel is larger than its 4x6 input$"),
    ([Conv2D(2, (2, 7)), Flatten()], r"layer 0 \(Conv2D\): a 2x7 kernel is larger than its 4x6 input"),
    ([Conv2D(2, 3), MaxPooling2D(3), Flatten()], r"layer 1 \(MaxPooling2D\): a 3x3 pool is larger than its 2x4 input"),
    ([MaxPooling2D((5, 1)), Flatten()], r"layer 0 \(MaxPooling2D\): a 5x1 pool is larger than its 4x6 input"),
    ([Conv2D(2, 3), Dense(4), Flatten()], r"layer 1 \(Dense\).*image of shape \(2, 4, 2\).*Flatten"),
    ([Conv2D(2, 3)], r"the last hidden layer puts out images of shape \(2, 4, 2\).*Flatten"),
    ([], r"the input is images of shape \(4, 6, 1\), and the output layer \(a Dense\) takes vectors.*Flatten"),
    ([Conv2D(2, 3), Flatten(), Dense(4, "softmax"), Dropout(0.1)], r"layer 2 \(Dense\): softmax is the output"),
    ([Conv2D(2, 3), Activation("softmax"), Flatten()], r"layer 1 \(Activation\): softmax is the output layer's"),
    ([Conv2D(2, 3, activation="relu"), Activation("tanh"), Flatten()], r"layer 1 \(Activation\).*already has"),
    ([Conv2D(2, 3), Flatten(), Conv2D(2, 1)], r"layer 2 \(Conv2D\).*takes images.*shape \(16,\)"),
    ([Conv2D(2, 3), Flatten(), MaxPooling2D(1)], r"layer 2 \(MaxPooling2D\).*takes images.*shape \(16,\)"),
    ([Conv2D(2, 3), Dropout(0.5), Activation("relu"), Flatten()], r"layer 2 \(Activation\): an Activation must"),
    ([Input((4, 6, 1)), Conv2D(2, 3, input_shape=(4, 5, 1))], r"layer 0 \(Conv2D\).*declares.*\(4, 5, 1\)"),
]
#: A Sequential's output layer is one of its layers, named as the others, where fastbp.train names it the output layer.
NAMED_OUTPUT_LAYER = {
    UNFIT_LAYERS[5][1]: r"layer 1 \(Dense\): Dense takes vectors.*image of shape \(2, 4, 2\): put a Flatten",
    UNFIT_LAYERS[6][1]: r"layer 0 \(Dense\): Dense takes vectors.*image of shape \(4, 6, 1\): put a Flatten",
}


def test_images_too_small_for_a_window_that_read_as_channels_first_say_so(layered_backend, no_kernels):
    x, y = np.zeros((3, 1, 12, 12)), [0, 1, 0]  # PyTorch's order
    with pytest.raises(ValueError, match=r"3x3 kernel is larger than its 1x12 input \(images are channels-last, "
                       r"\(height, width, channels\): \(1, 12, 12\) has 12 channels; channels-first images need "
                       r"x.transpose\(0, 2, 3, 1\)\)"):  # fmt: skip
        fastbp.train(x, y, layers=[Conv2D(2, 3), Flatten()], output="softmax", backend=layered_backend)


def test_a_layer_too_small_for_its_window_deeper_in_blames_no_channel_order(layered_backend, no_kernels):
    """Only the network's input is the user's images: a layer that put out more filters than its image's sides
    leaves the next window too small, and that is the network's shape, not the images' order."""
    x, y = np.zeros((3, 12, 12, 1)), [0, 1, 0]
    for layers, too_large in [
        (
            [Conv2D(16, 3, strides=3), Conv2D(4, 5), Flatten()],
            r"layer 1 \(Conv2D\): a 5x5 kernel is larger than its 4x4",
        ),
        (
            [Dropout(0.1), Conv2D(16, 3), MaxPooling2D(8), MaxPooling2D(2), Flatten()],
            r"layer 3 \(MaxPooling2D\): a 2x2 pool is larger than its 1x1",
        ),
    ]:
        with pytest.raises(ValueError, match=too_large + r" input$"):
            fastbp.train(x, y, layers=layers, output="softmax", backend=layered_backend)


@pytest.mark.parametrize("layers, message", UNFIT_LAYERS)
def test_layers_that_cannot_take_their_input_are_refused_by_train(layered_backend, no_kernels, layers, message):
    x, y = np.zeros((3, 4, 6, 1)), [0, 1, 0]
    with pytest.raises(ValueError, match=message):
        fastbp.train(x, y, layers=layers, output="softmax", backend=layered_backend)


@pytest.mark.parametrize("layers, message", UNFIT_LAYERS)
def test_layers_that_cannot_take_their_input_are_refused_by_sequential(layered_backend, no_kernels, layers, message):
    # A Sequential names its layers (conv2d, conv2d_1, ...), and numbers them as its layers list does, without Input.
    x, y = np.zeros((3, 4, 6, 1)), [0, 1, 0]
    named = re.sub(r"\\\((\w+)\\\)", r"\\(\1 '\\w+'\\)", NAMED_OUTPUT_LAYER.get(message, message))
    model = fastbp.Sequential([*layers, Dense(2, activation="softmax")])
    model.compile(backend=layered_backend)
    with pytest.raises(ValueError, match=named):
        model.fit(x, y, verbose=0)
    if layers and isinstance(layers[0], Input):  # a second Input is refused as it is added
        with pytest.raises(ValueError, match="only the first layer may be an Input, and this model has 1 already"):
            fastbp.Sequential([Input((4, 6, 1)), *layers])
        return
    declared = fastbp.Sequential([Input((4, 6, 1)), *layers, Dense(2, activation="softmax")])
    declared.compile(backend=layered_backend)
    if "declares" in message:  # build() may take the Conv2D's declaration and blame an Input layer instead
        named = r"declares input_shape \(4, [56], 1\), but its input has shape \(4, [56], 1\)"
    for call in (declared.build, declared.summary, declared.count_params):  # none shows a network fit refuses
        with pytest.raises(ValueError, match=named):
            call()


@pytest.mark.parametrize(
    "options", [{"hidden": (5,)}, {"activation": "sigmoid"}, {"hidden": 7, "activation": "tanh"}], ids=str
)
def test_train_with_layers_refuses_the_dense_hidden_layers_options_even_at_their_defaults(no_kernels, options):
    message = r"(hidden|activation|hidden and activation) describes? dense hidden layers: with layers, list them"
    with pytest.raises(ValueError, match=message):
        fastbp.train(np.zeros((3, 4, 6, 1)), [0, 1, 0], layers=[Conv2D(2, 3), Flatten()], output="softmax", **options)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Conv2D(0, 3), r"Conv2D: filters must be a positive integer, got 0"),
        (lambda: Conv2D(-2, 3), r"Conv2D: filters"),
        (lambda: Conv2D(2, 0), r"Conv2D: kernel_size must be a positive integer or two, got 0"),
        (lambda: Conv2D(2, (3, 3, 3)), r"Conv2D: kernel_size"),
        (lambda: Conv2D(2, 3, strides=0), r"Conv2D: strides"),
        (lambda: Conv2D(2, 3, padding="full"), r"Conv2D: padding must be 'valid' or 'same', got 'full'"),
        (lambda: Conv2D(2, 3, activation="swish"), r"Conv2D: unknown activation 'swish'"),
        (lambda: Conv2D(2, 3, activation="softmax"), r"Conv2D: softmax is an output layer's activation"),
        (lambda: Dense(3, activation="gelu"), r"Dense: unknown activation 'gelu'"),
        (lambda: Dense(0), r"Dense: units must be a positive integer"),
        (lambda: Activation("bogus"), r"Activation: unknown activation 'bogus'"),
        (lambda: Dropout(-0.1), r"Dropout: rate must be a number in \[0, 1\), got -0.1"),
        (lambda: Dropout(1.0), r"Dropout: rate must be a number in \[0, 1\), got 1.0"),
        (lambda: Dropout(float("nan")), r"Dropout: rate"),
        (lambda: MaxPooling2D(2, strides=1), r"MaxPooling2D: strides must be None or pool_size \(2, 2\), got 1"),
        (lambda: MaxPooling2D((2, 3), strides=(3, 2)), r"MaxPooling2D: strides must be None or pool_size"),
        (lambda: MaxPooling2D(2, padding="same"), r"MaxPooling2D: .*padding='valid'"),
        (lambda: MaxPooling2D(2, padding="SAME"), r"MaxPooling2D: .*\(padding='valid'\), got 'SAME'"),
        (lambda: Conv2D(2, 3, padding="Full"), r"Conv2D: padding must be 'valid' or 'same', got 'Full'"),
        (lambda: MaxPooling2D(0), r"MaxPooling2D: pool_size"),
        (lambda: Conv2D(2, 3, input_shape=(4, 0, 1)), r"Conv2D: input_shape"),
        (lambda: Input((4, 6, 1, 2)), r"Input: input_shape"),
        (lambda: Dense(3, kernel_initializer="he"), r"Dense: unknown kernel_initializer 'he'; .*he_uniform"),
        (lambda: Conv2D(2, 3, bias_initializer="GlorotUniform"), r"Conv2D: unknown bias_initializer"),
        (lambda: Dense(3, kernel_initializer={"class_name": "HeNormal"}), r"Dense: unknown kernel_initializer"),
    ],
)
def test_layer_settings_that_cannot_work_are_refused_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_pooling_with_strides_equal_to_its_size_is_accepted():
    assert MaxPooling2D((2, 3), strides=(2, 3)).pool_size == (2, 3)
    assert MaxPooling2D(2, strides=2).strides is None


def test_labels_out_of_range_and_nan_pixels_are_refused(layered_backend, no_kernels):
    model = image_model(layered_backend)
    x = np.random.default_rng(14).random((4, 6, 5, 2))
    for labels in ([0, 1, 2, 3], [0, -1, 1, 2]):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) for an output layer of 3 units"):
            model.fit(x, labels, verbose=0)
    for labels in ([0, 1, 2, 0.5], [[0, 1, 1]] * 4, ["a", "b", "a", "b"]):
        with pytest.raises(ValueError, match=r"y"):
            model.fit(x, labels, verbose=0)
    bad = x.copy()
    bad[2, 3, 1, 0] = np.nan
    for call in (model.predict, lambda x: model.fit(x, [0, 1, 2, 0], verbose=0)):
        with pytest.raises(ValueError, match="NaN"):
            call(bad)
    with pytest.raises(ValueError, match="NaN"):
        fastbp.train(bad, [0, 1, 2, 0], layers=[Conv2D(2, 3), Flatten()], output="softmax", backend=layered_backend)
    with pytest.raises(ValueError, match="y has 3 rows, x has 4"):
        model.fit(x, [0, 1, 2], verbose=0)


def test_extreme_but_valid_shapes_work(layered_backend):
    # A 1x1 image, a kernel as large as the image, a global pooling, "same" with a kernel larger than the image.
    rng = np.random.default_rng(15)
    cases = [
        ((1, 1, 1), [Conv2D(1, 1)]),
        ((3, 4, 2), [Conv2D(2, (3, 4))]),
        ((3, 4, 2), [MaxPooling2D((3, 4))]),
        ((2, 3, 1), [Conv2D(3, 5, padding="same", activation="tanh"), MaxPooling2D((2, 3))]),
        ((5, 5, 1), [Conv2D(2, 2, strides=5)]),
    ]
    for shape, layers in cases:
        x, y = rng.random((6, *shape)), np.arange(6) % 2
        model = fastbp.train(
            x, y, layers=[*layers, Flatten()], output="softmax", optimizer="adam", lr=0.01, batch_size=4, epochs=2,
            seed=0, backend=layered_backend,
        )  # fmt: skip
        assert np.isfinite(model.history).all()
        probabilities = model.predict_proba(x)
        assert np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_models_from_train_save_and_load(layered_backend, tmp_path):
    rng = np.random.default_rng(20)
    x, y = rng.random((24, 7, 6, 2)), np.array(["cat", "dog", "emu"])[rng.integers(0, 3, 24)]
    layers = [Conv2D(3, 3, padding="same", activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.2)]
    model = fastbp.train(
        x, y, layers=layers, output="softmax", optimizer="adam", lr=0.01, batch_size=8, epochs=3, seed=0,
        backend=layered_backend,
    )  # fmt: skip
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        assert int(archive["version"]) == 2
    loaded = fastbp.load(tmp_path / "model.npz")
    assert isinstance(loaded, fastbp.Model)
    assert loaded.input_shape == (7, 6, 2) and loaded.classes.tolist() == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.history, model.history)
    # The file's options, its layers among them as configs, train the same network again.
    assert loaded.options == model.options and "hidden" not in loaded.options
    again = fastbp.train(x, y, **loaded.options)
    np.testing.assert_array_equal(again.weights, model.weights)


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({"class_name": "Conv3D", "filters": 2}, ValueError, r"unknown layer .*Conv3D.* one of \('Dense', 'Conv2D'"),
        ({"units": 3}, ValueError, "^layer 0: unknown layer"),
        ({"class_name": ["Dense"], "units": 3}, ValueError, "unknown layer"),
        ({"class_name": "Dense", "units": 3, "colour": "red"}, TypeError, "^layer 0: .*colour"),
        ("Dense", TypeError, "^layer 0: 'Dense' is not a fastbp.layers layer \\(nor a layer's config\\)"),
        (type("Dense", (), {})(), TypeError, "is not a fastbp.layers layer: use fastbp.layers.Dense"),  # Keras's
        ({"class_name": "Dense", "units": 0}, ValueError, "Dense: units must be a positive integer"),
    ],
)
def test_layer_configs_are_checked_as_the_layers_they_describe(no_kernels, config, error, message):
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(error, match=message):
        fastbp.train(x, y, layers=[config], backend="numba")
    dense = Dense(4, activation="relu", name="hidden")
    assert fastbp.layers.from_config(fastbp.layers.layer_config(dense)) == dense


# --------------------------------------------------------------------------------------------------------------
# Both precisions.


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_both_precisions_train(layered_backend, dtype):
    # Which half of the image holds the bright square: a convolutional network learns it in a few epochs.
    rng = np.random.default_rng(16)
    n = 64
    x = rng.random((n, 8, 8, 1)) * 0.2
    y = rng.integers(0, 2, n)
    for k in range(n):
        top = 0 if y[k] == 0 else 4
        x[k, top + 1 : top + 3, 2:6, 0] += 1.0
    model = fastbp.Sequential(
        [Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), MaxPooling2D(2), Flatten(), Dense(2, "softmax")],
        seed=1,
    )
    model.compile(optimizer=Adam(learning_rate=0.01), metrics=["accuracy"], dtype=dtype, backend=layered_backend)
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] >= 0.95
    assert all(w.dtype == np.dtype(dtype) for w in model.get_weights())
    assert model.predict(x).dtype == np.dtype(dtype)


def test_float32_and_float64_gradients_agree(layered_backend):
    layers = FD_NETWORKS["conv-sigmoid-pooling"]
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(10, *INPUT)), rng.integers(0, 3, 10)
    gradients = {}
    for dtype in ("float32", "float64"):
        model = sequential(layers, layered_backend, loss="categorical_crossentropy", dtype=dtype, seed=3)
        start = model.get_weights()
        before = [w.astype(np.float64) for w in start]
        one_batch(model, x, y)
        gradients[dtype] = [w0 - w1.astype(np.float64) for w0, w1 in zip(before, model.get_weights(), strict=True)]
    for low, high in zip(gradients["float32"], gradients["float64"], strict=True):
        np.testing.assert_allclose(low, high, rtol=2e-3, atol=2e-5 * np.abs(high).max())


def test_train_takes_float32(layered_backend):
    rng = np.random.default_rng(18)
    model = fastbp.train(
        rng.random((12, 6, 5, 2)), np.arange(12) % 3, layers=[Conv2D(2, 3, activation="relu"), Flatten()],
        output="softmax", optimizer="adam", lr=0.01, batch_size=5, epochs=3, seed=0, dtype=np.float32,
        backend=layered_backend,
    )  # fmt: skip
    assert model.dtype == np.float32 and np.isfinite(model.history).all()


# --------------------------------------------------------------------------------------------------------------
# The founding notebook's network learns digits.


@pytest.mark.slow
def test_notebook_network_learns_mnist_digits(shared_data):
    (x_train, y_train), (x_test, y_test) = fastbp.datasets.load_mnist(
        path=shared_data / "mnist-5k" / "mnist_5k.csv.gz", download=False
    )
    x_train, x_test = (images[..., np.newaxis].astype("float32") / 255 for images in (x_train, x_test))
    model = fastbp.Sequential(
        [
            Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            MaxPooling2D(2),
            Conv2D(32, (3, 3), activation="relu"),
            MaxPooling2D(2),
            Flatten(),
            Dense(128, activation="relu"),
            Dropout(0.5),
            Dense(10, activation="softmax"),
        ],
        seed=0,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=6, verbose=0)  # shuffled: the file is sorted by digit
    accuracy = np.mean(model.predict(x_test).argmax(axis=1) == y_test)
    assert accuracy >= 0.95


def test_a_star_import_gives_the_layers_and_their_configs_alone():
    namespace: dict = {}
    exec("from fastbp.layers import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == [
        "Activation", "Conv2D", "Dense", "Dropout", "Flatten", "Input", "LayerSpec", "MaxPool2D", "MaxPooling2D",
        "WeightedLayer", "from_config", "layer_config",
    ]  # fmt: skip
    assert namespace["MaxPool2D"] is fastbp.layers.MaxPooling2D  # Keras's other name

"""W4: the founding notebook's convolutional network on Fashion-MNIST (float32, batches of 128, forward,
backward and Adam), per fastbp backend, against PyTorch's eager CPU training and Keras 3 on
TensorFlow-CPU, all on one thread; then fastbp on every core.

Run: ``python benches/report.py`` (or ``pytest benches --benchmark-enable -k cnn``).  The
data is the shared Fashion-MNIST (``$FASTBP_SHARED_DATA`` or ``../shared/data``); the
peers are optional and skip with a reason where they are not installed.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import COMPILED, REPO_ROOT, SIZES, Size

import fastbp
from fastbp.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D

SIZES["W4-cnn-batch128"] = {
    "full": Size(rows=4096, epochs=1, rounds=3, slow_rounds=3),
    "quick": Size(rows=1024, epochs=1, rounds=1, slow_rounds=1),
    "smoke": Size(rows=512, epochs=1, rounds=1, slow_rounds=1),
}
SIZES["parallel-W4-cnn-batch128"] = SIZES["W4-cnn-batch128"]
BATCH = 128


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST's training images as float32 ``(n, 28, 28, 1)`` in [0, 1], and their labels."""
    shared = Path(os.environ.get("FASTBP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "fashion-mnist"
    if not shared.is_dir():
        pytest.skip(f"the shared Fashion-MNIST is not at {shared} (set FASTBP_SHARED_DATA)")
    (x_train, y_train), _ = fastbp.datasets.load_fashion_mnist(path=shared)
    return x_train.reshape(-1, 28, 28, 1).astype(np.float32) / 255, y_train.astype(np.int64)


def notebook_network(seed=0) -> fastbp.Sequential:
    """The notebook's cell: 113,386 parameters."""
    model = fastbp.Sequential([
        Conv2D(32, (3, 3), input_shape=(28, 28, 1)), Activation("relu"), MaxPooling2D((2, 2)),
        Conv2D(32, (3, 3)), Activation("relu"), MaxPooling2D((2, 2)),
        Flatten(), Dense(128), Activation("relu"), Dropout(0.5), Dense(10), Activation("softmax"),
    ], seed=seed)  # fmt: skip
    return model


def fit_fastbp(x, y, backend, epochs, n_threads):
    model = notebook_network()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=backend)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False, n_threads=n_threads)
    return lambda images: model.predict(images, n_threads=n_threads).argmax(axis=1)


def fit_torch(x, y, epochs, layout="channels-last"):
    """PyTorch's eager training of the cell's network, on the images in their own channels-last layout (which
    oneDNN's convolutions run fastest on one core) or as ``"NCHW"`` (PyTorch's default layout, torchvision's)."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional peer: install torch to compare with it")
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 128), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(128, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()
    # One channel: the permuted images' strides are channels-last's, which PyTorch's layers keep; the reshape
    # (the same values) has NCHW's.
    images = (
        torch.as_tensor(x).permute(0, 3, 1, 2)
        if layout == "channels-last"
        else torch.as_tensor(x.reshape(-1, 1, 28, 28))
    )
    labels = torch.as_tensor(y)
    network.train()
    for _ in range(epochs):
        for start in range(0, len(images), BATCH):
            optimizer.zero_grad()
            loss = loss_function(network(images[start : start + BATCH]), labels[start : start + BATCH])
            loss.backward()
            optimizer.step()
    network.eval()

    def predict(batch):
        with torch.no_grad():
            return network(torch.as_tensor(batch).permute(0, 3, 1, 2)).argmax(dim=1).numpy()

    return predict


def keras_on_one_thread():
    """Keras 3 with TensorFlow's thread pools cut to one thread each (``OMP_NUM_THREADS`` does not reach them);
    TensorFlow takes the setting only before it first runs an operation."""
    keras = pytest.importorskip("keras", reason="Keras is an optional peer: install tensorflow-cpu to compare")
    tensorflow = pytest.importorskip("tensorflow", reason="Keras's peer here is TensorFlow-CPU: install it")
    threading = tensorflow.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) != (1, 1):
        try:
            threading.set_intra_op_parallelism_threads(1)
            threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pytest.skip("TensorFlow was started on every thread before this benchmark: run it in its own process")
    return keras


def keras_network(x, y):
    """The cell's network in Keras, compiled and traced: ``fit`` builds its training graph on its first batch, a
    cost paid once per model (about as long as a few hundred images' training), which the timing leaves out."""
    keras = keras_on_one_thread()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    return model


def fit_keras(model, x, y, epochs):
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False)
    return lambda batch: model.predict(batch, verbose=0).argmax(axis=1)


@pytest.mark.benchmark(group="W4-cnn-batch128")
@pytest.mark.parametrize("library", ["fastbp", "PyTorch", "PyTorch NCHW", "Keras"])
@pytest.mark.parametrize("backend", COMPILED)
def test_cnn_training_on_one_thread(library, backend, fashion, size, timed, assert_learned):
    if library != "fastbp" and backend != COMPILED[0]:
        pytest.skip("the peers run once, not once per fastbp backend")
    x, y = fashion[0][: size.rows], fashion[1][: size.rows]
    if library == "fastbp":
        fit = lambda: fit_fastbp(x, y, backend, size.epochs, 1)  # noqa: E731
        described = {"implementation": f"fastbp {backend} float32", "path": "layered kernels", "backend": backend}
    elif library.startswith("PyTorch"):
        torch = pytest.importorskip("torch", reason="PyTorch is an optional peer: install torch to compare with it")
        torch.set_num_threads(1)
        layout = "NCHW" if library.endswith("NCHW") else "channels-last"
        fit = lambda: fit_torch(x, y, size.epochs, layout)  # noqa: E731
        described = {"implementation": f"PyTorch CPU eager float32, {layout}", "path": "torch.optim.Adam loop"}
    else:
        fit = lambda model: fit_keras(model, x, y, size.epochs)  # noqa: E731
        described = {"implementation": "Keras 3 TensorFlow-CPU float32", "path": "model.fit, traced"}
    setup = None
    if library == "fastbp":
        fit_fastbp(x[:BATCH], y[:BATCH], backend, 1, 1)  # compiled and warm
    elif library == "Keras":
        setup = lambda: ((keras_network(x, y),), {})  # noqa: E731
    else:
        fit_torch(x[:BATCH], y[:BATCH], 1, layout)
    predict = timed(fit, samples=len(x) * size.epochs, setup=setup, library=library, dtype="float32",
                    batch_size=BATCH, threads=1, **described)  # fmt: skip
    if size.rows >= 1024:
        assert_learned(predict(x), y)


@pytest.mark.benchmark(group="parallel-W4-cnn-batch128")
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("backend", COMPILED)
def test_cnn_training_on_every_core(n_threads, backend, fashion, size, timed, assert_learned):
    x, y = fashion[0][: size.rows], fashion[1][: size.rows]
    fit_fastbp(x[:BATCH], y[:BATCH], backend, 1, n_threads)
    predict = timed(
        lambda: fit_fastbp(x, y, backend, size.epochs, n_threads), samples=len(x) * size.epochs, library="fastbp",
        implementation=f"fastbp {backend} float32, {n_threads} thread(s)", path="layered kernels", backend=backend,
        dtype="float32", batch_size=BATCH, workers=n_threads, parallelism="threads",
        workload=f"W4 notebook CNN, {len(x):,} images",
    )  # fmt: skip
    if size.rows >= 1024:
        assert_learned(predict(x), y)

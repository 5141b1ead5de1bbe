"""The backend registry: what is available, what "auto" picks, and what a missing one says."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import _backends
from fastbp._codes import HYPER, SGD
from fastbp._layout import Layout


def test_both_compiled_backends_are_built_and_importable():
    assert set(fastbp.available_backends()) == {"cython", "numba", "reference"}


def test_auto_prefers_the_ahead_of_time_backend():
    assert _backends.get_backend("auto") is _backends.get_backend("cython")
    X, y = fastbp.data.tutorial_toy()
    assert fastbp.train(X, y, epochs=1).backend == "cython"


def test_a_missing_extension_is_reported_and_numba_takes_over(monkeypatch):
    monkeypatch.setitem(_backends.BACKENDS, "cython", "fastbp._kernels_not_built")
    with pytest.raises(ImportError, match="compiled extension fastbp._kernels_not_built is missing"):
        _backends.get_backend("cython")
    assert "cython" not in fastbp.available_backends()
    X, y = fastbp.data.tutorial_toy()
    assert fastbp.train(X, y, epochs=1).backend == "numba"


def test_unknown_backend_names_are_rejected():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        _backends.get_backend("fortran")


def test_training_with_cython_in_a_fresh_process_compiles_nothing(tmp_path):
    script = (
        "import sys, fastbp;"
        "X, y = fastbp.data.tutorial_toy();"
        "fastbp.train(X, y, hidden=2, epochs=5, seed=1, backend='cython').predict(X);"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('numba', 'llvmlite')))"
    )
    # Run outside the checkout, so that the installed package (with its extension) is imported.
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_kernels_release_the_gil_while_training(compiled_backend):
    """The main thread reads the history while a worker thread's kernel is still filling it."""
    kernels = _backends.get_backend(compiled_backend)
    rng = np.random.default_rng(0)
    layout = Layout.from_sizes((20, 32, 4))
    weights = rng.uniform(-0.1, 0.1, layout.n_weights)
    X, Y = rng.uniform(size=(1000, 20)), np.eye(4)[rng.integers(0, 4, 1000)]
    outputs, deltas = np.empty(layout.n_neurons), np.empty(layout.n_neurons)
    grad, state = np.zeros(layout.n_weights), np.zeros(2 * layout.n_weights)
    orders, history = np.arange(1000, dtype=np.intp)[None], np.full(2000, np.nan)
    args = (
        weights, layout.w_off, layout.sizes, layout.acts, outputs, layout.o_off, deltas, grad, state,
        X, Y, np.ones(1000), orders, np.full(2000, 0.1), np.zeros(len(HYPER)), SGD, False, 0, history,
    )  # fmt: skip
    kernels.train_online(*args[:-1], np.zeros(1))  # compile first, if the backend compiles
    worker = threading.Thread(target=kernels.train_online, args=args)
    worker.start()
    while np.isnan(history[0]):
        time.sleep(0.001)  # with the GIL held by the kernel, this loop would resume only after it ended
    filled = np.count_nonzero(~np.isnan(history))
    worker.join()
    assert filled < len(history)
    assert np.all(np.isfinite(history))


def read_only(array):
    array = np.array(array)
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_compiles_one_specialisation_per_dtype_whatever_the_input_layout(dtype):
    kernels = _backends.get_backend("numba")
    X, y = fastbp.data.tutorial_toy()
    variants = [
        {"X": X},
        {"X": X.tolist(), "sample_weight": np.ones(len(X)).tolist()},
        {"X": X.astype(np.float32), "y": read_only(y)},
        {"X": np.asfortranarray(X), "sample_weight": read_only(np.ones(len(X), dtype=dtype))},
        {"X": X.astype(">f8"), "sample_weight": np.arange(1, 11)},
        {"X": read_only(X.astype(np.int64))},
        {"X": X, "y": read_only(X[:, :2].astype(dtype)), "output": "identity"},
    ]
    for kernel, options in [(kernels.train_online, {}), (kernels._train_batches_on_one_thread, {"batch_size": 4})]:
        before = set(kernel.signatures)
        for variant in variants:
            data = {"y": y, **options, **variant}
            model = fastbp.train(hidden=2, epochs=2, seed=1, dtype=dtype, backend="numba", **data)
            model.predict(variant["X"])
        assert len(set(kernel.signatures) - before) <= 1
        assert len(kernel.signatures) <= 2  # one per dtype, over the whole session
    assert len(kernels.predict_batch.signatures) <= 2

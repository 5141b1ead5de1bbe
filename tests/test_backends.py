"""The backend registry and the kernel contract: what is available, what "auto" picks, what a missing one says,
what each backend declares, and the checks that the bundles fit together."""

import dataclasses
import importlib
import importlib.util
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from kernel_bundles import schedule, signals

import fastbp
from fastbp import _backends
from fastbp import _kernels_cython as cython_kernels
from fastbp._backends import KERNELS, LOCKSTEP_KERNEL, STEP_KERNELS, Data
from fastbp._layout import Layout


def test_both_compiled_backends_are_built_and_importable():
    assert set(fastbp.available_backends()) == {"cython", "numba", "reference"}


def test_auto_prefers_the_ahead_of_time_backend():
    assert _backends.get_backend("auto") is _backends.get_backend("cython")
    X, y = fastbp.data.tutorial_toy()
    assert fastbp.train(X, y, epochs=1).backend == "cython"


def test_a_missing_extension_is_reported_and_numba_takes_over(monkeypatch):
    monkeypatch.setitem(_backends.BACKENDS, "cython", "fastbp._kernels_not_built")
    monkeypatch.setattr(_backends, "_WARNED", set())
    with pytest.raises(ImportError, match="compiled extension fastbp._kernels_not_built is missing"):
        _backends.get_backend("cython")
    assert "cython" not in fastbp.available_backends()
    X, y = fastbp.data.tutorial_toy()
    with pytest.warns(fastbp.InstallWarning, match="uses the 'numba' backend instead"):
        assert fastbp.train(X, y, epochs=1).backend == "numba"


def test_unknown_backend_names_are_rejected():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        _backends.get_backend("fortran")


@pytest.mark.slow
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


def _cython_results() -> list[np.ndarray]:
    """Weights and outputs of every family of the Cython backend's kernels on small data: online (exact and
    fast mode), lockstep, mini-batches (float64 and float32) and two layered networks (the second, the
    notebook's kind: a fused first layer and a pooled convolution of 32 filters each)."""
    from fastbp.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(48, 5)), rng.integers(0, 3, 48)
    results = []
    for options in ({"exact": True}, {"exact": False}, {"batch_size": 16}, {"batch_size": 16, "dtype": np.float32}):
        model = fastbp.train(X, y, hidden=(6,), epochs=3, seed=0, backend="cython", optimizer="adam", **options)
        results += [model.weights, model.predict_proba(X)]
    results += [model.weights for model in fastbp.train_many(X, y, seeds=range(8), epochs=3, backend="cython")]
    networks = {
        (9, 9, 2): [Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Conv2D(3, 2, padding="same"), Flatten(),
                    Dropout(0.3)],
        (14, 14, 1): [Conv2D(32, 3, activation="relu"), MaxPooling2D(2), Conv2D(32, 3, activation="relu"),
                      MaxPooling2D(2), Flatten(), Dense(16, activation="relu")],
    }  # fmt: skip
    for shape, layers in networks.items():
        images = rng.random((40, *shape), dtype=np.float32)
        model = fastbp.train(images, y[:40], layers=layers, output="softmax", optimizer="adam", lr=0.01,
                             batch_size=20, epochs=2, seed=0, dtype=np.float32, backend="cython")  # fmt: skip
        results += [model.weights, model.predict_proba(images)]
    return results


def _use_build(monkeypatch, suffix: str) -> None:
    """Point the Cython backend's kernels at its modules built with ``suffix`` (``""``: for every processor),
    those that were built so."""
    for family in ("online", "lockstep", "batches", "layered"):
        try:
            module = importlib.import_module(f"fastbp._kernels_cython.{family}{suffix}")
        except ImportError:
            continue
        for name, kernel in vars(module).items():
            if hasattr(cython_kernels, name) and callable(kernel):
                monkeypatch.setattr(cython_kernels, name, kernel)


@pytest.mark.parametrize(
    "suffix, instructions, runs",
    [("_avx2", "AVX2", cython_kernels.AVX2), ("_avx512", "AVX-512", cython_kernels.AVX512)],
    ids=["avx2", "avx512"],
)
def test_the_cython_kernels_built_for_wider_vectors_give_the_bits_of_those_built_for_every_processor(
    monkeypatch, suffix, instructions, runs
):
    if not runs:
        pytest.skip(f"this processor does not run {instructions} (or the environment turns its builds off)")
    layered = f"fastbp._kernels_cython.layered{suffix}"
    if importlib.util.find_spec(layered) is None:
        pytest.skip(f"the Cython kernels are not built for {instructions} here")
    _use_build(monkeypatch, suffix)
    assert cython_kernels.train_layered.__module__ == layered
    wide = _cython_results()
    _use_build(monkeypatch, "")
    assert cython_kernels.train_layered.__module__ == "fastbp._kernels_cython.layered"
    baseline = _cython_results()
    assert all(np.array_equal(a, b) for a, b in zip(wide, baseline, strict=True))


@pytest.mark.parametrize("name", _backends.BACKENDS)
def test_every_backend_provides_the_kernels_it_declares(name):
    module = _backends.get_backend(name).module
    capabilities = module.CAPABILITIES
    declared = [*KERNELS, *(STEP_KERNELS if capabilities.steps else ()), *([LOCKSTEP_KERNEL] * capabilities.lockstep)]
    assert all(callable(getattr(module, kernel, None)) for kernel in declared)
    assert capabilities.max_threads >= 1


def test_arguments_that_do_not_fit_together_are_refused_before_any_kernel_runs(compiled_backend):
    backend = _backends.get_backend(compiled_backend)
    layout = Layout.from_sizes((3, 4, 2))
    net, weights, state = layout.network(exact=True), np.zeros(layout.n_weights), np.zeros(2 * layout.n_weights)
    X, Y, weight = np.zeros((5, 3)), np.zeros((5, 2)), np.ones(5)
    plan, history = schedule([np.arange(5)], [0.1]), np.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"weights must be a C-contiguous, writeable float64 array of shape \(26,\), got float64 \(52,\)",
    ):
        backend.train_online(net, state, weights, Data(X, Y, weight), plan, history)  # weights and state swapped
    with pytest.raises(ValueError, match=r"optimizer_state must be .* of shape \(52,\), got float64 \(26,\)"):
        backend.train_online(net, weights, weights, Data(X, Y, weight), plan, history)
    with pytest.raises(ValueError, match=r"Y must be .* float64 array of shape \(5, 2\), got float64 \(5, 1\)"):
        backend.train_online(net, weights, state, Data(X, weight[:, None], Y), plan, history)
    with pytest.raises(ValueError, match=r"X must be .* of shape \(5, 3\), got float64 \(5, 2\)"):
        backend.predict_batch(net, weights, Y, X)  # the rows and the outputs swapped
    with pytest.raises(ValueError, match=r"out must be .* of shape \(5, 2\)"):
        backend.predict_batch(net, weights, X, X.copy())
    with pytest.raises(ValueError, match="weights must be"):
        backend.train_online(net, weights[:-1].copy(), state, Data(X, Y, weight), plan, history)
    with pytest.raises(ValueError, match="X must be a C-contiguous, writeable float32 array"):
        backend.predict_batch(net, weights.astype(np.float32), X, Y.astype(np.float32))
    with pytest.raises(ValueError, match=r"deltas must be .* of shape \(6,\)"):
        backend.forward_propagate(net, weights, signals(layout)._replace(deltas=np.zeros(2)), X[0])
    read_only = weights.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="weights must be a C-contiguous, writeable"):
        backend.predict_batch(net, read_only, X, Y)
    with pytest.raises(TypeError, match="net.exact must be True or False"):
        backend.predict_batch(net._replace(exact=1), weights, X, Y)
    with pytest.raises(ValueError, match=r"net.sizes must all be positive, got \[3, 0, 2\]"):
        backend.predict_batch(net._replace(sizes=np.array([3, 0, 2], dtype=np.intp)), weights, X, Y)
    assert not weights.any() and not state.any() and not history.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mini_batches_hand_back_the_weights_each_epoch_starts_from(compiled_backend, dtype):
    """``starts[e]`` of ``train_batches`` is the weights epoch ``e`` begins with (the first: those passed in, each
    later one where the epoch before ended, as three calls of an epoch each give them), and keeping them changes
    nothing in the training; only dense rows through dense layers keep them, into an array of the right shape."""
    backend = _backends.get_backend(compiled_backend)
    layout = Layout.from_sizes((3, 4, 2))
    rng = np.random.default_rng(0)
    net, initial = layout.network(exact=False), rng.normal(size=layout.n_weights).astype(dtype)
    data = Data(rng.normal(size=(7, 3)).astype(dtype), rng.normal(size=(7, 2)).astype(dtype), np.ones(7, dtype))
    orders = [rng.permutation(7) for _ in range(3)]
    plan = schedule(orders, [0.1, 0.05, 0.02], batch_size=3, optimizer="adam")
    weights, state, history = initial.copy(), np.zeros(2 * layout.n_weights, dtype), np.zeros(3)
    starts = np.full((3, layout.n_weights), np.nan, dtype)
    backend.train_batches(net, weights, state, data, plan, history, 1, starts=starts)
    one, one_state, ends = initial.copy(), np.zeros(2 * layout.n_weights, dtype), []
    for epoch in range(3):
        ends.append(one.copy())
        epoch_plan = schedule([orders[epoch]], [plan.rates[epoch]], batch_size=3, optimizer="adam",
                              steps_done=3 * epoch)  # fmt: skip
        backend.train_batches(net, one, one_state, data, epoch_plan, np.zeros(1), 1)
    assert starts.tobytes() == np.stack(ends).tobytes()
    assert weights.tobytes() == one.tobytes()
    with pytest.raises(ValueError, match=r"starts must be .* of shape \(3, 26\)"):
        backend.train_batches(net, weights, state, data, plan, history, 1, starts=starts[:2].copy())
    rows = data.X
    sparse = _backends.SparseRows(
        np.arange(0, rows.size + 1, rows.shape[1], dtype=np.intp), np.tile(np.arange(3, dtype=np.intp), 7), rows.ravel()
    )  # every value stored
    with pytest.raises(ValueError, match="starts is kept by the dense-row kernels"):
        backend.train_batches(net, weights, state, data._replace(X=sparse), plan, history, 1, starts=starts)
    assert weights.tobytes() == one.tobytes()  # refused before any kernel ran


def test_a_network_of_layers_a_backend_does_not_run_is_refused(monkeypatch):
    module = _backends.get_backend("numba").module
    monkeypatch.setattr(module, "CAPABILITIES", dataclasses.replace(module.CAPABILITIES, layer_kinds=()))
    layout = Layout.from_sizes((3, 2))
    with pytest.raises(ValueError, match="the 'numba' backend does not run layers of kind dense"):
        _backends.Backend("numba", module).predict_batch(
            layout.network(True), np.zeros(8), np.zeros((1, 3)), np.zeros((1, 2))
        )


def test_kernels_release_the_gil_while_training(compiled_backend):
    """The main thread reads the history while a worker thread's kernel is still filling it."""
    backend = _backends.get_backend(compiled_backend)
    rng = np.random.default_rng(0)
    layout = Layout.from_sizes((20, 32, 4))
    weights = rng.uniform(-0.1, 0.1, layout.n_weights)
    X, Y = rng.uniform(size=(1000, 20)), np.eye(4)[rng.integers(0, 4, 1000)]
    net, data, state = layout.network(exact=True), Data(X, Y, np.ones(1000)), np.zeros(2 * layout.n_weights)
    history = np.full(2000, np.nan)
    args = (net, weights, state, data, schedule([np.arange(1000)], np.full(2000, 0.1)), history)
    backend.train_online(*args[:-1], np.zeros(2000))  # compile first, if the backend compiles
    worker = threading.Thread(target=backend.train_online, args=args)
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


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_compiles_one_specialisation_per_dtype_whatever_the_input_layout(dtype):
    from fastbp._kernels_numba import batches, online

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
    for kernel, options in [(online.train_online, {}), (batches._train_batches_on_one_thread, {"batch_size": 4})]:
        before = set(kernel.signatures)
        for variant in variants:
            data = {"y": y, **options, **variant}
            model = fastbp.train(hidden=2, epochs=2, seed=1, dtype=dtype, backend="numba", **data)
            model.predict(variant["X"])
        assert len(set(kernel.signatures) - before) <= 1
        assert len(kernel.signatures) <= 2  # one per dtype, over the whole session
    assert len(online._predict_rows.signatures) <= 2


@pytest.mark.slow
def test_numba_compiles_each_shared_function_once_per_dtype_whatever_the_kernels_calling_it():
    """The row loops in ``primitives`` serve the mini-batch and the layered kernels alike: each caller must pass
    them the same types (a signed or unsigned integer, a literal, are types of their own), or Numba compiles them
    again, seconds each on first use.  Dense batches on one thread and on two, sparse rows, and a convolutional
    network, trained in one process.  Only functions compiled in this process list their types, not those loaded
    from Numba's disk cache."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    from numba.core.registry import CPUDispatcher

    from fastbp._kernels_numba import batches, layered, online, primitives
    from fastbp.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    rng = np.random.default_rng(0)
    images, y = rng.random((48, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 48)
    rows = images.reshape(48, -1)
    dense = {"hidden": (8, 4), "activation": "relu", "output": "softmax", "epochs": 1, "batch_size": 16}
    for X, n_threads in ((rows, 1), (rows, 2), (scipy_sparse.csr_matrix(rows), 1)):
        fastbp.train(X, y, **dense, dtype=np.float32, backend="numba", n_threads=n_threads)
    layers = [Conv2D(2, (3, 3), activation="relu"), MaxPooling2D((2, 2)), Flatten(), Dense(4), Dropout(0.5)]
    fastbp.train(images, y, layers=layers, epochs=1, batch_size=16, dtype=np.float32, backend="numba").predict(images)
    float32 = {
        f"{module.__name__}.{name}": [signature for signature in value.signatures if "float32" in str(signature)]
        for module in (primitives, batches, layered, online)
        for name, value in vars(module).items()
        if isinstance(value, CPUDispatcher)
    }
    if not float32["fastbp._kernels_numba.primitives.derive_row"]:
        pytest.skip("the kernels were loaded from Numba's disk cache: the functions they call list no types")
    assert {name: len(signatures) for name, signatures in float32.items() if len(signatures) > 1} == {}

"""Benchmark fixtures: workload sizes, the data sets, and the peers fastbp is compared with.

Every benchmark group is one workload (``W1-wheat-seeds``, ``W2-digits-online``, ...):
identical data, network and epochs for each implementation in it, so their times
compare within one run.  Each benchmark records ``extra_info["samples"]`` (rows x
epochs trained, or rows predicted) and who ran it, which ``benches/report.py`` turns
into samples per second and ratios.

Sizes depend on the mode:

- ``full``: ``pytest benches --benchmark-enable`` (what ``python benches/report.py`` runs);
- ``quick``: the same with ``FASTBP_BENCH_MODE=quick`` (``report.py --quick``): fewer
  epochs and rounds, for a rough look in well under a minute;
- ``smoke``: benchmarks disabled (the test command's ``--benchmark-disable``): each
  runs once, untimed, on a few rows, so the suites never rot and cost seconds.
"""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import fastbp

REPO_ROOT = Path(__file__).resolve().parent.parent

#: ``full`` unless ``FASTBP_BENCH_MODE=quick``; disabled benchmarks always run ``smoke``.
MODE = os.environ.get("FASTBP_BENCH_MODE", "full")
if MODE not in ("full", "quick"):
    raise ValueError(f"FASTBP_BENCH_MODE must be 'full' or 'quick', got {MODE!r}")


@dataclass(frozen=True)
class Size:
    """How much one benchmark of a workload trains (or predicts), and how often it is timed."""

    #: Rows used (the first ones of the data set); None: all of them.
    rows: int | None
    epochs: int
    #: Timed rounds of fastbp's compiled backends.
    rounds: int
    #: Timed rounds of the slow implementations (the reference, scikit-learn online, cold start-up).
    slow_rounds: int


#: Per workload (the benchmark group) and mode.  The full sizes keep
#: ``python benches/report.py`` to a few minutes on 2 cores: scikit-learn's online
#: SGD costs ~0.1 ms per row at 64-32-10 and several ms per row at 784-128-10.
SIZES = {
    "W1-wheat-seeds": {
        "full": Size(rows=None, epochs=500, rounds=10, slow_rounds=1),
        "quick": Size(rows=None, epochs=100, rounds=3, slow_rounds=1),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
    "W1-wheat-estimator": {  # epochs: max_iter, every one run
        "full": Size(rows=None, epochs=200, rounds=20, slow_rounds=5),
        "quick": Size(rows=None, epochs=100, rounds=5, slow_rounds=2),
        "smoke": Size(rows=None, epochs=50, rounds=1, slow_rounds=1),
    },
    "W2-digits-online": {
        "full": Size(rows=None, epochs=10, rounds=10, slow_rounds=2),
        "quick": Size(rows=None, epochs=2, rounds=3, slow_rounds=1),
        "smoke": Size(rows=200, epochs=1, rounds=1, slow_rounds=1),
    },
    "W2-digits-batch32": {
        "full": Size(rows=None, epochs=10, rounds=10, slow_rounds=5),
        "quick": Size(rows=None, epochs=2, rounds=3, slow_rounds=2),
        "smoke": Size(rows=500, epochs=5, rounds=1, slow_rounds=1),
    },
    "W2-digits-lbfgs": {  # epochs: L-BFGS's max_iter
        "full": Size(rows=None, epochs=100, rounds=5, slow_rounds=3),
        "quick": Size(rows=None, epochs=30, rounds=2, slow_rounds=1),
        "smoke": Size(rows=300, epochs=3, rounds=1, slow_rounds=1),
    },
    "W2-digits-adam": {  # epochs: max_iter, every one run (Adam's default rate learns slowly)
        "full": Size(rows=None, epochs=100, rounds=5, slow_rounds=3),
        "quick": Size(rows=None, epochs=30, rounds=2, slow_rounds=1),
        "smoke": Size(rows=300, epochs=40, rounds=1, slow_rounds=1),
    },
    "W3-mnist-online": {
        "full": Size(rows=500, epochs=1, rounds=5, slow_rounds=1),
        "quick": Size(rows=150, epochs=1, rounds=2, slow_rounds=1),
        "smoke": Size(rows=40, epochs=1, rounds=1, slow_rounds=1),
    },
    "W3-mnist-batch32": {
        "full": Size(rows=2000, epochs=3, rounds=5, slow_rounds=5),
        "quick": Size(rows=2000, epochs=1, rounds=2, slow_rounds=2),
        "smoke": Size(rows=256, epochs=2, rounds=1, slow_rounds=1),
    },
    "W3-mnist-batch128": {
        "full": Size(rows=2000, epochs=3, rounds=5, slow_rounds=5),
        "quick": Size(rows=2000, epochs=1, rounds=2, slow_rounds=2),
        "smoke": Size(rows=512, epochs=4, rounds=1, slow_rounds=1),
    },
    "W5-tfidf-sgd": {  # 20,000 x 50,000 at 0.2% (smoke: 2,000 columns); dense runs on the first 1,000 rows
        "full": Size(rows=20_000, epochs=1, rounds=5, slow_rounds=1),
        "quick": Size(rows=5_000, epochs=1, rounds=2, slow_rounds=1),
        "smoke": Size(rows=300, epochs=1, rounds=1, slow_rounds=1),
    },
    "W5-tfidf-adam": {
        "full": Size(rows=20_000, epochs=2, rounds=3, slow_rounds=1),
        "quick": Size(rows=5_000, epochs=3, rounds=1, slow_rounds=1),
        "smoke": Size(rows=300, epochs=30, rounds=1, slow_rounds=1),
    },
    "predict": {
        "full": Size(rows=100_000, epochs=1, rounds=10, slow_rounds=10),
        "quick": Size(rows=100_000, epochs=1, rounds=3, slow_rounds=3),
        "smoke": Size(rows=1_000, epochs=1, rounds=1, slow_rounds=1),
    },
    "predict-mnist-shape": {
        "full": Size(rows=20_000, epochs=1, rounds=10, slow_rounds=10),
        "quick": Size(rows=20_000, epochs=1, rounds=3, slow_rounds=3),
        "smoke": Size(rows=200, epochs=1, rounds=1, slow_rounds=1),
    },
    "predict-one-row": {  # single-row calls, as a service gets its requests
        "full": Size(rows=5_000, epochs=1, rounds=5, slow_rounds=5),
        "quick": Size(rows=1_000, epochs=1, rounds=3, slow_rounds=3),
        "smoke": Size(rows=20, epochs=1, rounds=1, slow_rounds=1),
    },
    "startup": {  # the tutorial's toy data (10 rows), 20 epochs, in a new process each round
        "full": Size(rows=10, epochs=20, rounds=3, slow_rounds=1),
        "quick": Size(rows=10, epochs=20, rounds=1, slow_rounds=1),
        "smoke": Size(rows=10, epochs=20, rounds=1, slow_rounds=1),
    },
    # bench_parallel.py: one thread (or job) against every core, same work, side by side.
    "parallel-predict": {  # 784-128-10: a row-by-row predict costs ~30 us per row and core
        "full": Size(rows=100_000, epochs=1, rounds=3, slow_rounds=3),
        "quick": Size(rows=20_000, epochs=1, rounds=2, slow_rounds=2),
        "smoke": Size(rows=200, epochs=1, rounds=1, slow_rounds=1),
    },
    "parallel-W3-batch128": {
        "full": Size(rows=2000, epochs=3, rounds=5, slow_rounds=5),
        "quick": Size(rows=2000, epochs=1, rounds=2, slow_rounds=2),
        "smoke": Size(rows=256, epochs=1, rounds=1, slow_rounds=1),
    },
    "parallel-W3-batch32": {
        "full": Size(rows=2000, epochs=3, rounds=5, slow_rounds=5),
        "quick": Size(rows=2000, epochs=1, rounds=2, slow_rounds=2),
        "smoke": Size(rows=128, epochs=1, rounds=1, slow_rounds=1),
    },
    "parallel-cv-wheat": {  # the tutorial's 5 folds; its 500 epochs in full
        "full": Size(rows=None, epochs=500, rounds=10, slow_rounds=10),
        "quick": Size(rows=None, epochs=100, rounds=3, slow_rounds=3),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
    "parallel-cv-digits": {  # 5 folds of W2's network, online
        "full": Size(rows=None, epochs=20, rounds=5, slow_rounds=5),
        "quick": Size(rows=None, epochs=5, rounds=2, slow_rounds=2),
        "smoke": Size(rows=300, epochs=1, rounds=1, slow_rounds=1),
    },
    "parallel-grid-wheat": {  # 8 learning rates x 5 folds, 40 networks in lockstep (~0.2 s a round on one thread)
        "full": Size(rows=None, epochs=500, rounds=7, slow_rounds=7),
        "quick": Size(rows=None, epochs=100, rounds=3, slow_rounds=3),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
    # bench_lockstep.py: many networks in lockstep against one at a time, same work, side by side.
    "lockstep-wheat-cv": {  # the tutorial's 5 folds x 500 epochs (~45 ms a round one at a time)
        "full": Size(rows=None, epochs=500, rounds=15, slow_rounds=15),
        "quick": Size(rows=None, epochs=100, rounds=5, slow_rounds=5),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
    "lockstep-wheat-grid": {  # 5 folds x 8 learning rates, default init (~0.4 s a round one at a time)
        "full": Size(rows=None, epochs=500, rounds=7, slow_rounds=7),
        "quick": Size(rows=None, epochs=100, rounds=3, slow_rounds=3),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
    "lockstep-wheat-grid-tutorial": {  # the same with the tutorial's init
        "full": Size(rows=None, epochs=500, rounds=7, slow_rounds=7),
        "quick": Size(rows=None, epochs=100, rounds=3, slow_rounds=3),
        "smoke": Size(rows=None, epochs=10, rounds=1, slow_rounds=1),
    },
}

#: fastbp's compiled backends that import here.
COMPILED = [name for name in fastbp.available_backends() if name != "reference"]
#: Rows of the generated MNIST-shaped data (the most any W3 size uses).
MNIST_ROWS = 2000


@pytest.fixture
def mode(benchmark) -> str:
    """``smoke`` when benchmarks are disabled, else :data:`MODE`."""
    return "smoke" if benchmark.disabled else MODE


@pytest.fixture
def size(request, mode) -> Size:
    """The size of this benchmark's workload: its group's entry in :data:`SIZES`."""
    marker = request.node.get_closest_marker("benchmark")
    group = marker.kwargs.get("group") if marker else None
    if group not in SIZES:
        raise LookupError(f"{request.node.name}: mark it with a benchmark group among {list(SIZES)}")
    return SIZES[group][mode]


@pytest.fixture(params=COMPILED)
def compiled_backend(request):
    """Every compiled fastbp backend that imports here."""
    return request.param


@pytest.fixture
def timed(benchmark, size, mode):
    """``timed(target, samples=..., slow=False, setup=None, **info)``: time ``target()``
    over the size's rounds (``slow_rounds`` if ``slow``) and return its last result.

    ``info`` lands in ``benchmark.extra_info`` for the report: ``library`` ("fastbp",
    "reference", "scikit-learn", "PyTorch"), ``implementation`` (the table's label),
    ``path`` (which kernels or loop ran) and anything else worth keeping.
    """

    def run(target, *, samples, slow=False, setup=None, **info):
        benchmark.extra_info.update(samples=int(samples), mode=mode, **info)
        rounds = size.slow_rounds if slow else size.rounds
        return benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)

    return run


@pytest.fixture
def assert_learned():
    """``assert_learned(predicted, y)``: training accuracy at least twice chance, so a
    broken kernel (or a peer that silently did nothing) cannot look fast."""

    def check(predicted, y):
        y = np.asarray(y)
        chance = 1.0 / len(np.unique(y))
        accuracy = float(np.mean(np.asarray(predicted) == y))
        assert accuracy >= 2 * chance, f"training accuracy {accuracy:.3f} is not above chance ({chance:.3f})"
        return accuracy

    return check


@pytest.fixture
def bench_estimator(timed, size, assert_learned):
    """``bench_estimator(library, X, y, params, path)``: time ``MLPClassifier(**params).fit(X, y)`` for the size's
    epochs (``max_iter``), scikit-learn's (``library="scikit-learn"``) or fastbp's on backend ``library``, its
    kernels loaded first and ``path`` naming them, and check that it learned."""
    from sklearn import neural_network
    from sklearn.exceptions import ConvergenceWarning

    def run(library, X, y, params, path):
        params = {**params, "max_iter": size.epochs}
        if library == "scikit-learn":
            estimator, info = neural_network.MLPClassifier, {"library": library, "implementation": "scikit-learn"}
        else:
            estimator, params = fastbp.MLPClassifier, {**params, "backend": library}
            with warnings.catch_warnings():  # warm up: load or compile the kernels (one iteration cannot converge)
                warnings.simplefilter("ignore", ConvergenceWarning)
                estimator(**{**params, "max_iter": 1}).fit(X[:64], y[:64])
            info = {"library": "fastbp", "implementation": f"fastbp {library} float64", "path": path}

        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return estimator(**params).fit(X, y)

        model = timed(fit, samples=len(X) * size.epochs, slow=library == "scikit-learn", **info)
        assert_learned(model.predict(X), y)

    return run


def fastbp_modes(groups: dict[int, str]):
    """Parametrize ``batch_size, exact`` over each batch size's benchmark group: online training in both
    arithmetics (exact, the tutorial's; the fast mode, vectorised), mini-batches once (BLAS either way)."""
    cases = []
    for batch_size, group in groups.items():
        mark = pytest.mark.benchmark(group=group)
        if batch_size == 1:
            cases += [pytest.param(1, True, marks=mark, id="online-exact"),
                      pytest.param(1, False, marks=mark, id="online-fast")]  # fmt: skip
        else:
            cases.append(pytest.param(batch_size, False, marks=mark, id=f"batch{batch_size}"))
    return pytest.mark.parametrize("batch_size, exact", cases)


@pytest.fixture
def describe_fastbp():
    """``describe_fastbp(backend, dtype, batch_size)``: the ``timed`` info for a fastbp run."""

    def describe(backend, dtype=np.float64, batch_size=None, exact=True):
        name = np.dtype(dtype).name
        online = batch_size in (None, 1)
        sums = (" exact" if exact else " fast mode") if online else ""
        return {
            "library": "fastbp",
            "implementation": f"fastbp {backend} {name}{sums}",
            # Which kernels ran: batch size 1 trains row by row, anything larger by matrix products.
            "path": ("online kernel, " + ("the tutorial's arithmetic" if exact else "8 partial sums, fastbp's exp"))
            if online
            else "mini-batch kernel (BLAS)",
            "dtype": name,
            "batch_size": batch_size or 1,
        }

    return describe


@pytest.fixture(scope="session")
def wheat():
    path = Path(os.environ.get("FASTBP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "wheat-seeds.csv"
    if not path.is_file():
        pytest.skip(f"wheat-seeds.csv not found at {path} (set FASTBP_SHARED_DATA)")
    X, y = fastbp.datasets.load_wheat_seeds(path=path)
    return fastbp.data.minmax_normalize(X), y


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's handwritten digits: 1,797 rows of 64 pixels scaled to [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return np.ascontiguousarray(X / 16.0), y


@pytest.fixture(scope="session")
def mnist_shape():
    """Generated data of MNIST's shape: 784 values in [0, 1] per row, labels 0-9.

    Like handwritten digits, rows are mostly zeros (about 17% of the pixels are ink):
    each is its class's random stroke pattern at random intensities plus scattered
    noise, so one epoch learns it (the sanity checks need that).  The arithmetic is
    the same as on real digits: every layer is dense, whatever the values.
    """
    rng = np.random.default_rng(784)
    strokes = rng.uniform(0.0, 1.0, (10, 784)) < 0.2
    y = rng.integers(0, 10, MNIST_ROWS)
    noise = (rng.uniform(0.0, 1.0, (MNIST_ROWS, 784)) < 0.05) * rng.uniform(0.0, 1.0, (MNIST_ROWS, 784))
    X = np.clip(strokes[y] * rng.uniform(0.5, 1.0, (MNIST_ROWS, 784)) + noise, 0.0, 1.0)
    return X, y


@pytest.fixture
def fit_sklearn():
    """``fit_sklearn(X, y, hidden=, lr=, batch_size=, epochs=, estimator=)``: scikit-learn's
    ``MLPClassifier`` (or ``estimator``, a drop-in replacement) trained like fastbp's SGD:
    logistic hidden units, softmax and cross-entropy, plain constant-rate SGD, rows in
    order, no L2, exactly ``epochs``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def fit(X, y, *, hidden, lr, batch_size, epochs, estimator=MLPClassifier):
        model = estimator(
            hidden_layer_sizes=(hidden,), activation="logistic", solver="sgd", batch_size=batch_size,
            learning_rate="constant", learning_rate_init=lr, momentum=0.0, alpha=0.0, shuffle=False,
            max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, early_stopping=False, random_state=0,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reaching max_iter is the point
            model.fit(X, y)
        assert model.n_iter_ == epochs
        return model

    return fit


def _torch_fit():
    """``fit(X, y, hidden=, lr=, batch_size=, epochs=)``: the same network in
    PyTorch on the CPU (float32, its native precision), a plain loop over batches in
    order (``batch_size=1``: per sample) with ``torch.optim.SGD``; Glorot-uniform
    weights and zero biases, as ``fastbp.train(init="glorot")``.  Skipped without torch.
    """
    torch = pytest.importorskip("torch", reason="PyTorch is an optional peer: install torch to compare with it")

    class Fitted:
        def __init__(self, network):
            self.network = network

        def predict(self, X):
            with torch.no_grad():
                return self.network(torch.as_tensor(X, dtype=torch.float32)).argmax(dim=1).numpy()

    def fit(X, y, *, hidden, lr, batch_size, epochs):
        torch.manual_seed(0)
        inputs = torch.as_tensor(X, dtype=torch.float32)
        targets = torch.as_tensor(y, dtype=torch.int64)
        n_classes = int(targets.max()) + 1
        network = torch.nn.Sequential(
            torch.nn.Linear(inputs.shape[1], hidden), torch.nn.Sigmoid(), torch.nn.Linear(hidden, n_classes)
        )
        for layer in (network[0], network[2]):
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        optimizer = torch.optim.SGD(network.parameters(), lr=lr)
        loss_function = torch.nn.CrossEntropyLoss()  # softmax outputs, mean over the batch
        for _ in range(epochs):
            for start in range(0, len(inputs), batch_size):
                optimizer.zero_grad()
                loss = loss_function(network(inputs[start : start + batch_size]), targets[start : start + batch_size])
                loss.backward()
                optimizer.step()
        return Fitted(network)

    return fit


@pytest.fixture
def bench_peer(timed, assert_learned, fit_sklearn):
    """``bench_peer(library, X, y, hidden=, lr=, batch_size=, epochs=)``: time the same network in
    ``"scikit-learn"`` (float64, as users call it) or ``"PyTorch"`` (float32, skipped without
    torch) and check that it learned."""

    def run(library, X, y, *, hidden, lr, batch_size, epochs):
        network = {"hidden": hidden, "lr": lr, "batch_size": batch_size}
        if library == "PyTorch":
            fit = _torch_fit()
            fit(X[:64], y[:64], **network, epochs=1)  # warm up
            described = {
                "implementation": f"PyTorch CPU {'per-sample' if batch_size == 1 else f'batch {batch_size}'} float32",
                "path": "torch.optim.SGD loop",
                "dtype": "float32",
            }
        else:
            fit = fit_sklearn
            described = {
                "implementation": f"scikit-learn MLPClassifier batch_size={batch_size} float64",
                "path": "MLPClassifier(solver='sgd')",
                "dtype": "float64",
            }
        model = timed(
            lambda: fit(X, y, **network, epochs=epochs), samples=len(X) * epochs, slow=batch_size == 1,
            library=library, batch_size=batch_size, **described,
        )  # fmt: skip
        assert_learned(model.predict(X), y)

    return run

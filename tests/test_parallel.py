"""Threads and processes: every thread count gives the same bits, and the jobs of evaluate and search (threads,
or processes) train the serial networks.

The networks here are small, so the work thresholds are lowered where a test
must see the kernels really share the work: with the default, small batches run on
one thread whatever ``n_threads`` says.
"""

import collections
import contextlib
import functools
import os
import re
import signal
import threading
import time
import warnings

import numpy as np
import pytest
import scipy.sparse

import fastbp
from fastbp import _api, _parallel, _training
from fastbp._backends import COMPILED, available_backends

THREAD_COUNTS = (1, 2, 3, 5)
COMPILED = [name for name in COMPILED if name in available_backends()]


@pytest.fixture
def always_threaded(monkeypatch):
    """Make every batch and every prediction worth splitting between threads, as many as asked for
    (more than this machine's cores: they take turns, which tests the thread count's independence all the more)."""
    monkeypatch.setattr(_training, "MIN_BATCH_WORK_FOR_THREADS", 0)
    monkeypatch.setattr(_parallel, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_parallel, "usable_cores", lambda: 8)


def _data(n_rows=150, n_features=12, n_classes=33, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    y = rng.integers(0, n_classes, n_rows)
    return X, y


# Layers wider than a block (32 neurons for batches up to 32 rows, 64 above: fastbp._constants.block_size) and not
# a multiple of it, batches that end short, and a last batch of a single row.
MINI_BATCH_CASES = {
    "small batches, blocks of 32": dict(hidden=70, batch_size=24, lr=0.05),
    "softmax, two blocks per layer": dict(hidden=(70, 40), output="softmax", batch_size=64, optimizer="adam", lr=0.01),
    "sigmoid, momentum, short last batch": dict(hidden=45, activation="tanh", batch_size=37, momentum=0.9, lr=0.05),
    "relu, last batch of one row": dict(hidden=(33, 5), activation="relu", batch_size=149, l2=0.01, lr=0.05),
    "rprop, the whole data": dict(hidden=64, optimizer="rprop"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", MINI_BATCH_CASES)
def test_mini_batch_training_gives_the_same_bits_for_any_thread_count(compiled_backend, case, dtype, always_threaded):
    X, y = _data()
    shuffle = case != "rprop, the whole data"
    options = dict(epochs=3, seed=5, shuffle=shuffle, dtype=dtype, backend=compiled_backend, **MINI_BATCH_CASES[case])
    serial = fastbp.train(X, y, n_threads=1, **options)
    for n_threads in THREAD_COUNTS[1:]:
        parallel = fastbp.train(X, y, n_threads=n_threads, **options)
        assert parallel.weights.tobytes() == serial.weights.tobytes(), n_threads
        assert parallel.history.tobytes() == serial.history.tobytes(), n_threads


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs both compiled backends")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", MINI_BATCH_CASES)
def test_mini_batch_backends_agree_bit_for_bit(case, dtype, always_threaded):
    """Both backends make the same gemm call for each block, blocks of one neuron (the 33 classes' last) or one
    row (a short last batch, the last chunk of a sparse prediction over 129 rows) too."""
    X, y = _data()
    shuffle = case != "rprop, the whole data"
    options = dict(epochs=3, seed=5, shuffle=shuffle, dtype=dtype, n_threads=2, **MINI_BATCH_CASES[case])
    models = [fastbp.train(X, y, backend=name, **options) for name in COMPILED]
    assert models[0].weights.tobytes() == models[1].weights.tobytes()
    assert models[0].history.tobytes() == models[1].history.tobytes()
    rows = scipy.sparse.csr_matrix(X[:129])  # sparse rows predict in chunks of 64 by gemm, dense ones row by row
    assert models[0].forward(rows).tobytes() == models[1].forward(rows).tobytes()


@pytest.mark.parametrize("hidden", [(20, 9), (96, 90)], ids=["row by row", "by products"])
@pytest.mark.parametrize("exact", [True, False])
def test_prediction_gives_the_same_bits_for_any_thread_count(compiled_backend, exact, hidden, always_threaded):
    X, y = _data(n_rows=40)
    model = fastbp.train(X, y, hidden=hidden, output="softmax", epochs=2, seed=1, exact=exact, backend=compiled_backend)
    rows = np.random.default_rng(1).normal(size=(1001, X.shape[1]))
    serial = model.forward(rows, n_threads=1)
    for n_threads in THREAD_COUNTS[1:]:
        assert model.forward(rows, n_threads=n_threads).tobytes() == serial.tobytes()
        np.testing.assert_array_equal(model.predict(rows, n_threads=n_threads), model.predict(rows, n_threads=1))
    single = np.stack([model.forward(row[None], n_threads=1)[0] for row in rows[:50]])
    assert single.tobytes() == serial[:50].tobytes()  # a row's outputs do not depend on its chunk


def test_row_chunks_cover_the_rows_once_and_skip_threads_for_little_work(monkeypatch):
    monkeypatch.setattr(_parallel, "usable_cores", lambda: 8)
    for n_rows, work, n_threads in [(1, 10**9, 4), (10, 10**9, 3), (1000, 10**6, 7), (5, 1, 4)]:
        chunks = _parallel.row_chunks(n_rows, work, n_threads)
        covered = np.concatenate([np.arange(n_rows)[chunk] for chunk in chunks])
        np.testing.assert_array_equal(covered, np.arange(n_rows))
        assert 1 <= len(chunks) <= n_threads
    assert len(_parallel.row_chunks(1000, 10, 8)) == 1  # 10k multiply-adds: not worth a thread
    assert len(_parallel.row_chunks(10**6, 10**3, 8)) == 8
    assert len(_parallel.row_chunks(10**6, 10**3, 100)) == 8  # no more threads than cores


def test_errors_in_a_thread_reach_the_caller():
    def work(chunk):
        if chunk.start > 0:
            raise FloatingPointError(f"chunk {chunk.start}")

    with pytest.raises(FloatingPointError, match="chunk"):
        _parallel.run_chunks(work, [slice(0, 5), slice(5, 10), slice(10, 15)])


def test_chunks_share_one_pool_and_chunks_within_chunks_run_in_their_thread(monkeypatch):
    """Predictions in several threads at once share one pool of threads, however many chunks each asks for; a
    chunk that runs chunks of its own runs them itself (waiting on the pool from its threads could hang)."""
    monkeypatch.setattr(_parallel, "usable_cores", lambda: 4)
    monkeypatch.setattr(_parallel, "_chunk_pool_now", None)  # a pool of this test's own
    done, pool_threads = [], set()

    def inner(chunk):
        done.append(chunk.start)

    def outer(chunk):
        if getattr(_parallel._pool_thread, "active", False):
            pool_threads.add(threading.get_ident())
        _parallel.run_chunks(inner, [slice(chunk.start * 10 + k, chunk.start * 10 + k + 1) for k in range(3)])

    counts = (2, 3, 4, 2)
    callers = [
        threading.Thread(target=_parallel.run_chunks, args=(outer, [slice(k, k + 1) for k in range(n)])) for n in counts
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    assert not any(caller.is_alive() for caller in callers), "a caller waits forever"
    assert len(done) == 3 * sum(counts)
    assert 1 <= len(pool_threads) <= 3  # one pool: a thread for each core but the caller's


def test_thread_count_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("FASTBP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = _parallel.default_threads()
    assert cores >= 1
    assert _parallel.as_threads(None) == cores
    assert _parallel.as_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # OpenMP's nested form: the outer level counts
    assert _parallel.as_threads(None) == min(2, cores)
    monkeypatch.setenv("FASTBP_NUM_THREADS", "1")
    assert _parallel.as_threads(None) == 1
    monkeypatch.setenv("FASTBP_NUM_THREADS", "100000")  # never more than the cores
    assert _parallel.as_threads(None) == cores
    monkeypatch.setenv("FASTBP_NUM_THREADS", "lots")  # not a count: ignored, as OpenMP ignores it
    assert _parallel.as_threads(None) == min(2, cores)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    X, y = _data(n_rows=20, n_classes=2)
    with pytest.raises(ValueError, match="n_threads"):
        fastbp.train(X, y, epochs=1, n_threads=bad)
    model = fastbp.train(X, y, epochs=1)
    with pytest.raises(ValueError, match="n_threads"):
        model.predict(X, n_threads=bad)


def test_threads_training_at_once_in_one_process_get_the_serial_results(compiled_backend):
    """Overlapping trainings share one process-wide BLAS limit, which must hold until the last one ends and
    then be given back; Numba's fallback threading layer aborts on concurrent parallel launches, so fastbp
    serialises those.  The products are wide enough for OpenBLAS to use its threads if it were let."""
    from threadpoolctl import threadpool_info

    X, y = _data(n_rows=256, n_features=784, n_classes=10)
    options = dict(hidden=128, output="softmax", batch_size=128, epochs=2, seed=3, backend=compiled_backend)
    before = [library["num_threads"] for library in threadpool_info()]
    expected = fastbp.train(X, y, n_threads=1, **options).weights
    results = [None] * 4

    def train(k):
        results[k] = fastbp.train(X, y, n_threads=2, **options).weights

    threads = [threading.Thread(target=train, args=(k,)) for k in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for weights in results:
        assert weights.tobytes() == expected.tobytes()
    assert [library["num_threads"] for library in threadpool_info()] == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX systems only")
def test_a_child_forked_after_threaded_training_trains_on_one_thread(compiled_backend, always_threaded, tmp_path):
    """GNU OpenMP cannot start threads in a forked child; the child must neither hang nor crash."""
    X, y = _data()
    options = dict(epochs=2, seed=3, backend=compiled_backend, **MINI_BATCH_CASES["softmax, two blocks per layer"])
    expected = fastbp.train(X, y, n_threads=2, **options).weights  # the parent has started its threads
    path = tmp_path / "child.npy"

    def child() -> int:
        assert _parallel.kernel_threads(2) == 1
        np.save(path, fastbp.train(X, y, n_threads=2, **options).weights)
        return 0

    _, status = os.waitpid(_fork(child), 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.load(path).tobytes() == expected.tobytes()


FORKS = 150  # for each backend
HELD_EVERY = 4  # every fourth fork is made while a thread holds one of fastbp's locks
CHILDREN_AT_ONCE = 4
CHILD_TIMEOUT = 10.0  # seconds: a child takes a fraction of one; one that runs past this has hung
LOCK_HELD = 0.02  # seconds


def _fork(child) -> int:
    """Fork; the child runs ``child()`` and exits with the status it returns (3 if it raises), never returning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12 warns about fork in threaded processes
        pid = os.fork()
    if pid == 0:
        status = 3
        try:
            status = child()
        finally:
            os._exit(status)
    return pid


def _fork_holding(lock, child) -> int:
    """``_fork(child)`` just after another thread takes ``lock``, which it holds for ``LOCK_HELD`` seconds
    (fastbp may make the fork wait for it)."""
    held = threading.Event()

    def hold():
        with lock:
            held.set()
            time.sleep(LOCK_HELD)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        return _fork(child)
    finally:
        holder.join()


def _reap(running: dict, outcomes: collections.Counter, at_most: int) -> None:
    """Wait until at most ``at_most`` of the ``running`` children (pid: deadline) remain, counting each one's
    exit status in ``outcomes``; a child past its deadline is killed and counted as ``"hung"``."""
    while len(running) > at_most:
        for pid, deadline in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                outcomes[os.waitstatus_to_exitcode(status)] += 1
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                outcomes["hung"] += 1
            else:
                continue
            del running[pid]
        time.sleep(0.001)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX systems only")
def test_children_forked_while_threads_train_and_hold_locks_never_hang(compiled_backend, always_threaded):
    """A child has only the thread that forked: a lock another thread of the parent held at the fork must be
    free in it, or its first mini-batch training waits forever.  Children are forked while two threads train
    by mini-batches and predict, some while a thread holds fastbp's BLAS lock or the backend's parallel lock;
    each trains and predicts (on one thread), and must get the parent's bits."""
    from fastbp._backends import get_backend

    X, y = _data()
    options = dict(epochs=2, seed=3, backend=compiled_backend, **MINI_BATCH_CASES["softmax, two blocks per layer"])
    model = fastbp.train(X, y, n_threads=2, **options)
    expected = model.weights.tobytes(), model.forward(X, n_threads=2).tobytes()

    def locks():
        """The locks the child's code would take now (the BLAS lock by its module's current name)."""
        backend_lock = get_backend(compiled_backend).capabilities.parallel_lock
        return [lock for lock in (_parallel._blas_lock, _parallel._chunk_pool_lock, backend_lock) if lock is not None]

    def result():
        trained = fastbp.train(X, y, n_threads=2, **options)
        return trained.weights.tobytes(), trained.forward(X, n_threads=2).tobytes()

    def child():
        """0: the parent's bits; 1: other bits; 2: a lock is still held after training."""
        same = result() == expected
        held = any(lock.locked() for lock in locks())
        return 2 if held else 0 if same else 1

    stop, parent_results = threading.Event(), []

    def keep_training():
        while not stop.is_set():
            parent_results.append(result() == expected)

    trainers = [threading.Thread(target=keep_training) for _ in range(2)]
    for thread in trainers:
        thread.start()
    running, outcomes = {}, collections.Counter()
    try:
        for k in range(FORKS):
            _reap(running, outcomes, CHILDREN_AT_ONCE - 1)
            if k % HELD_EVERY == HELD_EVERY - 1:
                held = locks()
                pid = _fork_holding(held[k // HELD_EVERY % len(held)], child)
            else:
                pid = _fork(child)
            running[pid] = time.monotonic() + CHILD_TIMEOUT
        _reap(running, outcomes, 0)
    finally:
        stop.set()
        for thread in trainers:
            thread.join()
        for pid in running:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert outcomes == {0: FORKS}, "0: the parent's bits; 1: other bits; 2: a lock left held; 3: an error"
    assert parent_results and all(parent_results)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX systems only")
def test_a_child_forked_while_blas_is_on_one_thread_gives_the_count_back_after_training():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]

    X, y = _data(n_rows=40, n_classes=3)
    fastbp.train(X, y, batch_size=8, epochs=1)
    before = blas_threads()
    inside, leave = threading.Event(), threading.Event()

    def open_block():
        with _parallel.one_blas_thread():
            inside.set()
            leave.wait()

    def child():
        fastbp.train(X, y, batch_size=8, epochs=1)
        return 0 if blas_threads() == before else 1

    thread = threading.Thread(target=open_block)
    thread.start()
    inside.wait()
    try:
        pid = _fork(child)
        _, status = os.waitpid(pid, 0)
    finally:
        leave.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert blas_threads() == before


def test_blas_limits_opened_by_several_threads_hold_until_the_last_leaves(compiled_backend):
    """Blocks of ``one_blas_thread`` overlapping in any order, one nested in another in the same thread: BLAS
    stays on one thread while any is open, and gets its own count back when the last leaves (not the one that
    a block entered while another was open found)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]

    X, y = _data(n_rows=40, n_classes=3)
    fastbp.train(X, y, batch_size=8, epochs=1, backend=compiled_backend)  # loads the BLAS the kernels call
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(count == 2 for count in before)
        first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
        seen = []

        def first():
            with _parallel.one_blas_thread():
                first_in.set()
                second_in.wait()
                seen.append(blas_threads())
            first_out.set()

        def second():
            first_in.wait()
            with _parallel.one_blas_thread():
                second_in.set()
                first_out.wait()
                seen.append(blas_threads())  # the first block has left; this one is still open
                with _parallel.one_blas_thread():
                    seen.append(blas_threads())
                seen.append(blas_threads())

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [[1] * len(before)] * 4
        assert blas_threads() == before


#: joblib's backend for evaluate's and search's jobs: None keeps fastbp's default (threads); "loky" is a
#: ``parallel_config`` asking for worker processes instead.
JOBLIB_BACKENDS = [None, "loky"]


def _in_joblib_backend(name: str | None):
    """``joblib.parallel_config(backend=name)``, or no context for None."""
    from joblib import parallel_config

    return parallel_config(backend=name) if name else contextlib.nullcontext()


@pytest.mark.parametrize("joblib_backend", JOBLIB_BACKENDS)
@pytest.mark.parametrize("init", ["tutorial", None])
def test_evaluate_in_parallel_equals_the_serial_run(compiled_backend, wheat, init, joblib_backend):
    X, y = wheat
    options = dict(folds=4, seed=2, epochs=20, init=init, backend=compiled_backend)
    serial = fastbp.evaluate(X, y, **options)
    with _in_joblib_backend(joblib_backend):
        for n_jobs in (2, -1):
            parallel = fastbp.evaluate(X, y, n_jobs=n_jobs, **options)
            assert parallel.scores == serial.scores
            assert parallel.baseline_scores == serial.baseline_scores


#: What the jobs run: online networks one per job (4 folds: too few for lockstep), a lockstep group cut into a
#: part per job (16 folds on 2 jobs), mini-batches (BLAS, on one thread in every job) and L-BFGS.
JOB_CASES = {
    "online, one per job": dict(folds=4, epochs=20, init="tutorial"),
    "lockstep, a part per job": dict(folds=16, epochs=20, shuffle=True, l2=0.001),
    "mini-batches": dict(folds=3, epochs=5, shuffle=True, batch_size=8, hidden=(40,), momentum=0.9, lr=0.05),
    "l-bfgs": dict(folds=3, epochs=10, optimizer="lbfgs", hidden=(6,)),
}


def _fold_networks(X, y, n_jobs, folds, **options) -> list[fastbp.Model]:
    """The networks that ``evaluate(X, y, folds=folds, seed=3, n_jobs=n_jobs, **options)`` trains."""
    X, y, classes, rng = _api._evaluation_data(X, y, 3, "tutorial", None, options)
    _, trainings = _api._fold_trainings(X, y, folds, rng, classes, options)
    return _api._models(_api._run_together(trainings, n_jobs), "fold")


@pytest.mark.parametrize("joblib_backend", JOBLIB_BACKENDS)
@pytest.mark.parametrize("case", JOB_CASES)
def test_jobs_train_the_serial_networks_bit_for_bit(compiled_backend, wheat, case, joblib_backend):
    X, y = wheat
    options = dict(backend=compiled_backend, **JOB_CASES[case])
    serial = _fold_networks(X, y, None, **options)
    with _in_joblib_backend(joblib_backend):
        parallel = _fold_networks(X, y, 2, **options)
    for alone, in_a_job in zip(serial, parallel, strict=True):
        assert in_a_job.weights.tobytes() == alone.weights.tobytes()
        assert in_a_job.history.tobytes() == alone.history.tobytes()


def test_jobs_cut_a_lockstep_group_into_a_part_per_worker_and_run_other_trainings_alone(wheat):
    def jobs(workers, folds=16, **options):
        X, y, classes, rng = _api._evaluation_data(*wheat, 3, "tutorial", None, options)
        return _api._jobs(_api._fold_trainings(X, y, folds, rng, classes, options)[1], workers)

    assert jobs(1) == [list(range(16))]  # one core: one lockstep call
    assert jobs(2) == [list(range(8)), list(range(8, 16))]
    assert jobs(3) == [[k] for k in range(16)]  # too few networks to give 3 workers a part worth lockstep each
    assert jobs(2, batch_size=4) == [[k] for k in range(16)]  # mini-batches do not train in lockstep
    assert jobs(1, folds=5) == [[k] for k in range(5)]


@pytest.mark.parametrize("joblib_backend", JOBLIB_BACKENDS)
def test_search_in_parallel_equals_the_serial_search(compiled_backend, wheat, joblib_backend):
    """Two lockstep groups of 16 networks (a part per job) and 16 networks in mini-batches (one per job)."""
    X, y = wheat
    grid = {"hidden": [3, 5], "lr": [0.1, 0.3, 0.5, 0.7]}
    options = dict(folds=4, seed=3, epochs=15, backend=compiled_backend)
    serial = fastbp.search(X, y, grid, **options)
    batches = fastbp.search(X, y, {"lr": [0.1, 0.3, 0.5, 0.7]}, batch_size=8, **options)
    with _in_joblib_backend(joblib_backend):
        assert fastbp.search(X, y, grid, n_jobs=2, **options).evaluations == serial.evaluations
        assert fastbp.search(X, y, {"lr": [0.1, 0.3, 0.5, 0.7]}, batch_size=8, n_jobs=-1, **options) == batches
    assert len(set(serial.means)) > 1  # the points do differ, so their order is checked


@pytest.mark.parametrize("joblib_backend", JOBLIB_BACKENDS)
def test_train_many_in_parallel_equals_training_one_after_the_other(compiled_backend, wheat, joblib_backend):
    """Networks in mini-batches with Adam (one per job) and a lockstep group of online networks (a part per
    job) give the same bits on any number of jobs."""
    X, y = wheat
    kinds = [
        dict(seeds=range(4), optimizer="adam", batch_size=16, epochs=3),
        dict(seeds=range(16), lr=[0.1 * (1 + k % 4) for k in range(16)], epochs=5),
    ]
    for options in kinds:
        serial = fastbp.train_many(X, y, backend=compiled_backend, **options)
        with _in_joblib_backend(joblib_backend):
            shared = fastbp.train_many(X, y, backend=compiled_backend, n_jobs=2, **options)
        assert [model.weights.tobytes() for model in shared] == [model.weights.tobytes() for model in serial]
        assert len({model.weights.tobytes() for model in serial}) == len(serial)


def test_jobs_train_each_network_on_one_kernel_thread(wheat, always_threaded, monkeypatch):
    """The jobs are the parallelism: a job's mini-batches asking the kernels for every core too would put
    n_jobs x cores threads on the cores."""
    from fastbp._backends import Backend

    asked = []
    original = Backend.train_batches

    def train_batches(self, *arguments, **options):
        asked.append(arguments[-1])
        return original(self, *arguments, **options)

    monkeypatch.setattr(Backend, "train_batches", train_batches)
    X, y = wheat
    fastbp.evaluate(X, y, folds=3, epochs=2, batch_size=16, hidden=(40,), n_jobs=-1)
    assert len(asked) == 3 and set(asked) == {1}


def test_a_failing_job_stops_the_jobs_not_yet_started():
    ran = []

    def work(item):
        if item == 0:
            raise FloatingPointError("job 0")
        time.sleep(0.05)
        ran.append(item)

    with pytest.raises(FloatingPointError, match="job 0"):
        _parallel.run_jobs(work, range(20), 2)
    assert len(ran) < 5


def _record_where(folder, epoch: int, loss: float) -> None:
    """A training callback: leave a file named after the process and the thread that it runs on."""
    (folder / f"{os.getpid()}-{threading.get_ident()}").touch()


@pytest.mark.parametrize("joblib_backend", JOBLIB_BACKENDS)
def test_jobs_run_on_threads_unless_a_parallel_config_names_processes(wheat, tmp_path, joblib_backend):
    X, y = wheat
    with _in_joblib_backend(joblib_backend):
        fastbp.evaluate(X, y, folds=3, epochs=2, n_jobs=2, callback=functools.partial(_record_where, tmp_path))
    where = [name.split("-") for name in os.listdir(tmp_path)]
    processes = {int(pid) for pid, _ in where}
    if joblib_backend is None:  # threads of this process, other than the calling one
        assert processes == {os.getpid()}
        assert str(threading.get_ident()) not in {thread for _, thread in where}
    else:
        assert os.getpid() not in processes


def _saturated(caught) -> list[str]:
    """The folds named by the warnings of saturated networks among ``caught``, sorted."""
    found = [re.match(r"fold (\d+): training ended .* saturated", str(warning.message)) for warning in caught]
    return sorted(match.group(1) for match in found if match)


@pytest.mark.parametrize("joblib_backend", [None, "threading", "loky"])
def test_evaluate_passes_on_each_folds_warnings_once(wheat, joblib_backend):
    """``warnings.catch_warnings`` swaps process-wide state: jobs on threads recording their own warnings would
    cross their records, one fold's warnings lost or under another's label, later warnings going nowhere."""
    X, y = wheat
    for _ in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _in_joblib_backend(joblib_backend):
                fastbp.evaluate(X, y, folds=4, epochs=1000, lr=1e6, n_jobs=2)
            warnings.warn("after evaluate", UserWarning, stacklevel=1)
        assert _saturated(caught) == ["0", "1", "2", "3"]
        assert [str(warning.message) for warning in caught][-1] == "after evaluate"


def test_evaluations_in_several_threads_at_once_pass_on_every_folds_warnings(wheat):
    X, y = wheat
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [
            threading.Thread(target=fastbp.evaluate, args=(X, y), kwargs=dict(folds=3, epochs=1000, lr=1e6))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        warnings.warn("after evaluate", UserWarning, stacklevel=1)
    assert _saturated(caught) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    assert [str(warning.message) for warning in caught][-1] == "after evaluate"


@pytest.mark.parametrize("bad", [0, 1.5, "2", True])
def test_evaluate_search_and_train_many_refuse_bad_job_counts(wheat, bad):
    X, y = wheat
    with pytest.raises(ValueError, match="n_jobs"):
        fastbp.evaluate(X, y, epochs=1, n_jobs=bad)
    with pytest.raises(ValueError, match="n_jobs"):
        fastbp.search(X, y, {"lr": [0.1]}, epochs=1, n_jobs=bad)
    with pytest.raises(ValueError, match="n_jobs"):
        fastbp.train_many(X, y, seeds=[1], epochs=1, n_jobs=bad)


def test_estimators_predict_the_same_for_any_thread_count(compiled_backend, always_threaded):
    X, y = _data(n_classes=4)
    options = dict(hidden_layer_sizes=(40,), max_iter=3, batch_size=16, random_state=0, backend=compiled_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 3 epochs
        one = fastbp.MLPClassifier(n_threads=1, **options).fit(X, y)
        three = fastbp.MLPClassifier(n_threads=3, **options).fit(X, y)
    for one_coef, three_coef in zip(one.coefs_, three.coefs_, strict=True):
        assert one_coef.tobytes() == three_coef.tobytes()
    assert one.predict_proba(X).tobytes() == three.predict_proba(X).tobytes()


def test_more_threads_than_cores_are_capped_not_started(compiled_backend, always_threaded):
    """OpenMP would try to start every thread asked for (a crash at 100000); the cores (8 here) are the limit."""
    X, y = _data()
    options = dict(epochs=1, seed=3, backend=compiled_backend, **MINI_BATCH_CASES["softmax, two blocks per layer"])
    serial = fastbp.train(X, y, n_threads=1, **options)
    for n_threads in (100_000, 2**40):
        assert fastbp.train(X, y, n_threads=n_threads, **options).weights.tobytes() == serial.weights.tobytes()
        assert serial.forward(X, n_threads=n_threads).tobytes() == serial.forward(X, n_threads=1).tobytes()


def test_numba_gives_back_the_callers_thread_count(always_threaded):
    import numba

    X, y = _data()
    before = numba.get_num_threads()
    fastbp.train(X, y, n_threads=2, epochs=1, backend="numba", **MINI_BATCH_CASES["softmax, two blocks per layer"])
    assert numba.get_num_threads() == before


def test_the_cython_extension_shares_batches_between_threads_where_ci_builds_it():
    """A build without OpenMP passes every test above on one thread; CI's compiler has OpenMP, so it must be on."""
    if "cython" not in fastbp.available_backends():
        pytest.skip("the Cython extension is not built")
    from fastbp import _kernels_cython

    assert isinstance(_kernels_cython.OPENMP, bool)
    if os.environ.get("CI"):
        assert _kernels_cython.OPENMP, "the extension was built without OpenMP"

"""Threads: how many to use, prediction over row chunks, many trainings as jobs, and the settings the
mini-batch kernels need.

Prediction splits the rows into one contiguous chunk per thread and runs the
backend's kernel on each chunk in a Python thread of its own (from a pool made once
per process, the calling thread taking the first chunk).  The compiled kernels
release the GIL, so the threads run on separate cores, and every row's outputs are
computed by the same code whichever chunk it falls in: the result does not depend on
the number of threads.  Plain threads rather than OpenMP or Numba's parallel loops:
one implementation serves every backend, and no OpenMP runtime is involved.

Many trainings (the folds of a cross-validation, the points of a grid) run as joblib's
jobs (:func:`run_jobs`), on threads too unless a ``joblib.parallel_config`` names
processes or a Dask cluster: each training's kernels run on one thread, so as many jobs
as cores keep every core busy without taking turns.

Mini-batch training cannot return to Python between steps, so its kernels share
each batch's matrix products between threads themselves (OpenMP in the Cython
backend, ``prange`` in Numba's), in blocks whose size depends on the batch alone
(:func:`fastbp._constants.block_size`): the thread count never changes the arithmetic.
BLAS then runs on one thread inside them (OpenBLAS splits products differently for
different thread counts, which changes their rounding).
GNU OpenMP cannot start threads in a child forked from a process that has used it,
so a forked child trains on one thread (the same numbers, only slower).  A child has
only the thread that forked, so the locks that the parent's other threads held at the
fork are freed in it; if their trainings had BLAS on one thread, the child's first
mini-batch training gives back the thread count as it ends.

OpenMP's threads spin between parallel regions by default, which on a machine
whose cores are all busy (several trainings, joblib or Dask workers) slows every
step several times over; unless ``OMP_WAIT_POLICY`` is set, fastbp sets it to
``PASSIVE`` (threads sleep instead) when imported, which a GNU OpenMP runtime reads
as it loads (it has no effect on one that some other library loaded earlier; child
processes inherit it).  On a machine
of its own, ``OMP_WAIT_POLICY=ACTIVE`` (or GNU's ``GOMP_SPINCOUNT=100000``) makes
small batches faster on several threads.  The Cython backend's layered kernels wait at
a barrier of their own instead, which spins briefly before it sleeps.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from numbers import Integral
from typing import TypeVar

from ._backends import BACKENDS

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when an OpenMP runtime loads; children inherit it

#: Below this many multiply-adds for each thread, handing rows to another thread costs more than it saves (the
#: docs' performance page).
MIN_WORK_PER_THREAD = 2**21
#: A mini-batch step wakes the threads several times (every layer, forward and back), so it needs
#: more: batch size times weights (784-128-10 gains at batches of 128 and loses at 32; docs' performance page).
MIN_BATCH_WORK_FOR_THREADS = 2**23
#: Environment variables that set the default thread count, the first one set winning.
THREAD_VARIABLES = ("FASTBP_NUM_THREADS", "OMP_NUM_THREADS")

Item = TypeVar("Item")
Result = TypeVar("Result")


def as_threads(n_threads: int | None) -> int:
    """``n_threads`` as a positive count; ``None`` means :func:`default_threads`."""
    if n_threads is None:
        return default_threads()
    if not isinstance(n_threads, Integral) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer or None (every core), got {n_threads!r}")
    return int(n_threads)


def default_threads() -> int:
    """The cores this process may use, unless ``FASTBP_NUM_THREADS`` or ``OMP_NUM_THREADS`` asks for fewer.

    joblib's workers and Dask's set ``OMP_NUM_THREADS`` so that their processes
    share the cores instead of each taking all of them.
    """
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").split(",")[0].strip()  # OpenMP allows a list, one count per nesting level
        if value.isdigit() and int(value) > 0:
            return min(int(value), usable_cores())
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on: more threads than that would only take turns."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def row_chunks(n_rows: int, work_per_row: int, n_threads: int) -> list[slice]:
    """Split ``n_rows`` into at most ``n_threads`` contiguous chunks, each worth starting a thread for."""
    worthwhile = max(1, n_rows * work_per_row // MIN_WORK_PER_THREAD)
    count = max(1, min(n_threads, usable_cores(), worthwhile, n_rows))
    bounds = [n_rows * k // count for k in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def run_chunks(work: Callable[[slice], None], chunks: list[slice]) -> None:
    """Call ``work(chunk)`` for every chunk, in threads when there are several; errors propagate.

    The threads come from one pool per process (:func:`_chunk_pool`): starting threads for every prediction
    cost more than a few hundred rows of a small network take.  A chunk that runs chunks of its own runs
    them itself: waiting on the pool from one of its threads could wait forever.
    """
    if len(chunks) == 1 or getattr(_pool_thread, "active", False):
        for chunk in chunks:
            work(chunk)
        return
    pool = _chunk_pool(len(chunks) - 1)
    pending = [pool.submit(work, chunk) for chunk in chunks[1:]]
    try:
        work(chunks[0])  # the calling thread takes the first chunk
    finally:
        wait(pending)  # none still writes its rows once this returns, nor once an error propagates
    for future in pending:
        future.result()


_pool_thread = threading.local()
_chunk_pool_now: ThreadPoolExecutor | None = None
_chunk_pool_size = 0
_chunk_pool_lock = threading.Lock()


def _chunk_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool for :func:`run_chunks`, of at least ``workers`` threads, a core each but the calling
    thread's (its threads start as they are first needed).  Callers in several threads at once queue their
    chunks in it; a larger count than the pool's replaces it, whose threads end once idle."""
    global _chunk_pool_now, _chunk_pool_size
    with _chunk_pool_lock:
        if _chunk_pool_now is None or workers > _chunk_pool_size:
            if _chunk_pool_now is not None:
                _chunk_pool_now.shutdown(wait=False)
            _chunk_pool_size = max(workers, usable_cores() - 1)
            _chunk_pool_now = ThreadPoolExecutor(
                max_workers=_chunk_pool_size, thread_name_prefix="fastbp", initializer=_mark_pool_thread
            )
        return _chunk_pool_now


def _mark_pool_thread() -> None:
    _pool_thread.active = True


def _forget_chunk_pool() -> None:
    """In a forked child: the parent's pool threads are not there, so its pool would never run anything."""
    global _chunk_pool_now, _chunk_pool_size, _chunk_pool_lock
    _chunk_pool_now, _chunk_pool_size, _chunk_pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_chunk_pool)


def job_workers(n_jobs: int) -> int:
    """How many workers joblib runs ``n_jobs`` jobs on (``-1``: every core), in the backend :func:`run_jobs` uses."""
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend(prefer="threads")
    return backend.effective_n_jobs(n_jobs)


def run_jobs(work: Callable[[Item], Result], items: Sequence[Item], n_jobs: int) -> list[Result]:
    """``[work(item) for item in items]`` as joblib's ``n_jobs`` jobs; errors propagate.

    The jobs run on threads (joblib's ``prefer="threads"``), unless a
    ``joblib.parallel_config`` names another backend (``"loky"``'s processes, a Dask
    cluster), which runs them through ``joblib.Parallel``.  Threads run in a pool here:
    ``joblib.Parallel`` collects its results by waking every 10 ms, which costs as much as
    training all the folds of a small cross-validation.
    """
    from joblib import Parallel, delayed
    from joblib.parallel import ThreadingBackend, get_active_backend

    backend, _ = get_active_backend(prefer="threads")
    if not isinstance(backend, ThreadingBackend):
        return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(work)(item) for item in items)
    workers = min(backend.effective_n_jobs(n_jobs), len(items))
    if workers <= 1:
        return [work(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastbp-job")
    try:
        return list(pool.map(work, items))
    finally:  # after an error or Ctrl-C, the jobs not yet started never start
        pool.shutdown(cancel_futures=True)


def kernel_threads(n_threads: int) -> int:
    """The threads a kernel that starts its own may use: at most the usable cores, and one in a forked
    child (see the module docstring)."""
    return 1 if _forked else min(n_threads, usable_cores())


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block below with BLAS on one thread, its rounding then independent of the thread count.

    The setting is process-wide, so it is counted: the first block to enter sets it
    and the last to leave restores what was there, however the blocks of several
    Python threads overlap.  (While any is inside, other BLAS work in the process runs
    on one thread too.)  threadpoolctl finds the libraries, but its own limits are
    not used: for OpenBLAS they do nothing when called from a thread other than the
    first one that set a limit, which would leave a training in a worker thread on
    every BLAS thread.  A child forked while blocks were open keeps what they found,
    and gives it back as its own last block leaves.
    """
    global _blas_users, _blas_original
    with _blas_lock:
        if _blas_users == 0:
            libraries = [library for library in _blas_controller().lib_controllers if library.user_api == "blas"]
            if not _blas_original:
                _blas_original = [(library, library.get_num_threads()) for library in libraries]
            for library in libraries:
                _set_threads(library, 1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, count in _blas_original:
                    _set_threads(library, count)
                _blas_original = []


def _set_threads(library, count: int) -> None:
    # OpenBLAS's controller guards its public setter by thread (see one_blas_thread); the library call is not.
    getattr(library, "_real_set_num_threads", library.set_num_threads)(count)


def _blas_controller():
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call, loaded so the controller sees it)
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas


_blas = None
_blas_original: list = []  # (library, count) pairs to give back while BLAS is on one thread, else empty
_blas_users = 0
_blas_lock = threading.Lock()
_forked = False


def _before_fork() -> None:
    """Wait for any thread changing BLAS's thread count (briefly), so that no child copies a change half made."""
    _blas_lock.acquire()


def _after_fork_in_parent() -> None:
    _blas_lock.release()


def _after_fork_in_child() -> None:
    """Free what the parent's other threads held at the fork: they do not exist in the child.

    A lock they held would never be released, and the child's first training that takes it would wait
    forever.  The BLAS lock is held by this thread (see ``_before_fork``); a backend's parallel lock may be
    held by a training, freed here in place, since other modules refer to it (a ``threading.Lock`` may be
    released by any thread, and fastbp's threads never fork while inside one).  The open blocks of
    :func:`one_blas_thread` will not close: the child's own last block gives their BLAS setting back.
    """
    global _forked, _blas_users
    _forked = True
    _blas_users = 0
    _blas_lock.release()
    for lock in _backend_locks():
        if lock.locked():
            lock.release()


def _backend_locks() -> list[threading.Lock]:
    """The ``parallel_lock`` of every backend imported so far (importing none)."""
    capabilities = (getattr(sys.modules.get(module), "CAPABILITIES", None) for module in BACKENDS.values())
    return [lock for declared in capabilities if (lock := getattr(declared, "parallel_lock", None)) is not None]


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)

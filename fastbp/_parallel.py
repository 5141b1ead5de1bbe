"""Threads: how many to use, prediction over row chunks, and the settings the mini-batch kernels need.

Prediction splits the rows into one contiguous chunk per thread and runs the
backend's kernel on each chunk in its own Python thread.  The compiled kernels
release the GIL, so the threads run on separate cores, and every row's outputs are
computed by the same code whichever chunk it falls in: the result does not depend on
the number of threads.  Plain threads rather than OpenMP or Numba's parallel loops:
one implementation serves every backend, and no OpenMP runtime is involved.

Mini-batch training cannot return to Python between steps, so its kernels share
each batch's matrix products between threads themselves (OpenMP in the Cython
backend, ``prange`` in Numba's), in blocks of fixed size: the thread count never
changes the arithmetic.  BLAS then runs on one thread inside them (OpenBLAS splits
products differently for different thread counts, which changes their rounding).
GNU OpenMP cannot start threads in a child forked from a process that has used it,
so a forked child trains on one thread (the same numbers, only slower).

OpenMP's threads spin between parallel regions by default, which on a machine
whose cores are all busy (several trainings, joblib or Dask workers) slows every
step several times over; unless ``OMP_WAIT_POLICY`` is set, fastbp sets it to
``PASSIVE`` (threads sleep instead) before any OpenMP runtime starts.  On a machine
of its own, ``OMP_WAIT_POLICY=ACTIVE`` (or GNU's ``GOMP_SPINCOUNT=100000``) makes
small batches faster on several threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Below this many multiply-adds for each thread, starting threads costs more than it saves.
MIN_WORK_PER_THREAD = 2**18
#: A mini-batch step wakes the threads several times (every layer, forward and back), so it needs
#: more: batch size times weights (measured on 2 cores: 784-128-10 gains at batches of 128, loses at 32).
MIN_BATCH_WORK_FOR_THREADS = 2**23
#: Environment variables that set the default thread count, the first one set winning.
THREAD_VARIABLES = ("FASTBP_NUM_THREADS", "OMP_NUM_THREADS")


def as_threads(n_threads) -> int:
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
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def row_chunks(n_rows: int, work_per_row: int, n_threads: int) -> list[slice]:
    """Split ``n_rows`` into at most ``n_threads`` contiguous chunks, each worth starting a thread for."""
    worthwhile = max(1, n_rows * work_per_row // MIN_WORK_PER_THREAD)
    count = max(1, min(n_threads, worthwhile, n_rows))
    bounds = [n_rows * k // count for k in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def run_chunks(work: Callable[[slice], None], chunks: list[slice]) -> None:
    """Call ``work(chunk)`` for every chunk, in threads when there are several; errors propagate."""
    if len(chunks) == 1:
        work(chunks[0])
        return
    with ThreadPoolExecutor(max_workers=len(chunks) - 1, thread_name_prefix="fastbp") as pool:
        pending = [pool.submit(work, chunk) for chunk in chunks[1:]]
        work(chunks[0])  # the calling thread takes the first chunk
        for future in pending:
            future.result()


def kernel_threads(n_threads: int) -> int:
    """The threads a kernel that starts its own may use: one in a forked child (see the module docstring)."""
    return 1 if _forked else n_threads


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block below with BLAS on one thread, its rounding then independent of the thread count."""
    global _blas
    with _blas_lock:
        if _blas is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call, loaded so the controller sees it)
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
    with _blas.limit(limits=1, user_api="blas"):
        yield


_blas = None
_blas_lock = threading.Lock()
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)

"""Compiler options for the Numba kernels, in one place.

The exact kernels must agree bit for bit with :mod:`fastbp.reference`, so
``fastmath`` stays off: it would let LLVM reorder sums and fuse multiply-adds.
Kernels are cached on disk, so a second process loads them instead of compiling.
``FASTBP_NUMBA_CACHE=0`` turns the cache off.  Where Numba can write its cache
nowhere (a read-only install without a writable home), the cache is off as well,
and :data:`NO_CACHE_WARNING` says why.
"""

import inspect
import os

from numba import njit

from .._constants import block_size


def _no_cache_warning() -> str | None:
    """Why Numba cannot cache the kernels on disk, and what to do about it; None where it can.

    Numba caches a function under ``NUMBA_CACHE_DIR`` (where set), beside its source
    (``__pycache__``) or in the user-wide cache folder under the home directory, the
    first of these it can write to, and raises on decorating it where it can write to
    none.  The kernels' sources lie in this package's folder and in fastbp's
    (``_constants.block_size``): a function of each is decorated to find out.
    """
    for function in (_no_cache_warning, block_size):
        try:
            njit(cache=True)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
            folder = os.path.dirname(inspect.getfile(function))
            return (
                "fastbp's Numba kernels cannot be cached on disk: Numba can write to none of the places it caches "
                f"in ($NUMBA_CACHE_DIR, __pycache__ beside the sources in {folder}, the cache folder under the "
                "home directory), so it compiles them in memory, again in every process that uses them (10-17 s "
                "on first use).  Set NUMBA_CACHE_DIR to a writable folder to cache them, or "
                "FASTBP_NUMBA_CACHE=0 to compile in memory without this warning."
            )
    return None


_CACHE = os.environ.get("FASTBP_NUMBA_CACHE", "1") != "0"
#: Why the kernels are compiled in memory although the cache is on, or None.
NO_CACHE_WARNING = _no_cache_warning() if _CACHE else None

NUMBA_OPTIONS = {
    "nogil": True,
    "fastmath": False,
    "cache": _CACHE and NO_CACHE_WARNING is None,
    "error_model": "numpy",
}

# For the helpers called in a loop per value, pixel or pooling window (an activation, a dropout draw, a Winograd
# tile's transforms, a window's errors added into its inputs): inlined at the Numba IR level, since LLVM alone
# leaves those calls in the loop.  A helper that does a whole row's or chunk's work is compiled once on its own
# instead (plain ``NUMBA_OPTIONS``): Numba copies an inlined function's IR into every caller and types each
# copy again, which took the layered kernels' first compilation to minutes.  A thin wrapper around such helpers
# is inlined again: compiled on its own, a function links in its callees and generates their machine code again.
NUMBA_INLINED_OPTIONS = {**NUMBA_OPTIONS, "inline": "always"}

# For the per-row kernels that allocate nothing: without Numba's reference counting (NRT, a private but
# long-standing option), whose counts on every row view the LLVM pass that removes them leaves in large functions.
NUMBA_NO_REFCOUNT_OPTIONS = {**NUMBA_OPTIONS, "_nrt": False}

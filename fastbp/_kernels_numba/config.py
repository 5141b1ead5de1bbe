"""Compiler options for the Numba kernels, in one place.

The exact kernels must agree bit for bit with :mod:`fastbp.reference`, so
``fastmath`` stays off: it would let LLVM reorder sums and fuse multiply-adds.
Kernels are cached on disk, so a second process loads them instead of compiling.
``FASTBP_NUMBA_CACHE=0`` turns the cache off (for example on a read-only install
where Numba's fallback cache directory is not wanted).
"""

import os

NUMBA_OPTIONS = {
    "nogil": True,
    "fastmath": False,
    "cache": os.environ.get("FASTBP_NUMBA_CACHE", "1") != "0",
    "error_model": "numpy",
}

# For the per-row helpers: inlined at the Numba IR level, since LLVM alone leaves calls in the per-row loop.
NUMBA_INLINED_OPTIONS = {**NUMBA_OPTIONS, "inline": "always"}

# For the per-row kernels that allocate nothing: without Numba's reference counting (NRT, a private but
# long-standing option), whose counts on every row view the LLVM pass that removes them leaves in large functions.
NUMBA_NO_REFCOUNT_OPTIONS = {**NUMBA_OPTIONS, "_nrt": False}

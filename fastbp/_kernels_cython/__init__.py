"""The Cython backend: the kernels of the contract (:mod:`fastbp._backends`), compiled when fastbp is installed.

Its extension modules, one family each, share the arithmetic of ``primitives.pxd``:
``online`` (one row at a time), ``lockstep`` (many networks at once), ``batches``
(mini-batches by BLAS, shared between OpenMP threads; sparse rows, on one thread)
and ``layered`` (networks with convolutions, pooling and dropout: mini-batches cut
into chunks that OpenMP threads share).  They follow the Numba backend operation by
operation and are built without fast-math and without fused multiply-adds, so the two
agree bit for bit.  Their constants are generated from :mod:`fastbp._concepts` and
:mod:`fastbp._constants` when the extension is built, and each module refuses to
import if they differ from those modules now (a stale build).

On x86-64 each module is also built for processors with AVX2 (``<module>_avx2``, from
the same source, with vectors twice as wide) and with AVX-512 (``<module>_avx512``, four
times as wide), still without fused multiply-adds: the same bits.  The widest build the
processor runs is imported; ``FASTBP_CYTHON_AVX512=0`` in the environment stops at AVX2,
``FASTBP_CYTHON_AVX2=0`` keeps the modules built for every processor.
"""

import importlib
import os
from types import ModuleType

from .._backends import Capabilities
from .._concepts import LAYER_KINDS
from .._parallel import usable_cores
from .batches import PROCESSOR_HAS_AVX2, PROCESSOR_HAS_AVX512

#: Whether the ``_avx2`` builds may be imported (where they were built): the processor runs them, and
#: ``FASTBP_CYTHON_AVX2`` is not ``0``.
AVX2 = PROCESSOR_HAS_AVX2 and os.environ.get("FASTBP_CYTHON_AVX2", "1") != "0"
#: Whether the ``_avx512`` builds may be imported, likewise (``FASTBP_CYTHON_AVX512``), and never without AVX2's.
AVX512 = AVX2 and PROCESSOR_HAS_AVX512 and os.environ.get("FASTBP_CYTHON_AVX512", "1") != "0"


def _family(name: str) -> ModuleType:
    """Kernel module ``name``: its widest vector build that :data:`AVX512` and :data:`AVX2` allow and that
    exists, else its build for every processor."""
    for suffix, allowed in (("_avx512", AVX512), ("_avx2", AVX2)):
        if allowed:
            try:
                return importlib.import_module(f"{__name__}.{name}{suffix}")
            except ImportError:
                pass
    return importlib.import_module(f"{__name__}.{name}")


_online, _lockstep, _batches, _layered = (_family(name) for name in ("online", "lockstep", "batches", "layered"))
OPENMP = _batches.OPENMP
batch_gradient, train_batches = _batches.batch_gradient, _batches.train_batches
predict_sparse, sparse_gradient, train_sparse = _batches.predict_sparse, _batches.sparse_gradient, _batches.train_sparse
layered_gradient, predict_layered, train_layered = (
    _layered.layered_gradient,
    _layered.predict_layered,
    _layered.train_layered,
)
train_lockstep = _lockstep.train_lockstep
backward_propagate_error, forward_propagate, update_weights = (
    _online.backward_propagate_error,
    _online.forward_propagate,
    _online.update_weights,
)
predict_batch, train_online = _online.predict_batch, _online.train_online

CAPABILITIES = Capabilities(
    layer_kinds=tuple(LAYER_KINDS),
    steps=True,
    lockstep=True,
    sparse=True,
    releases_gil=True,
    max_threads=usable_cores() if OPENMP else 1,  # without OpenMP its mini-batch kernels run on one thread
)

__all__ = [
    "AVX2",
    "AVX512",
    "CAPABILITIES",
    "OPENMP",
    "backward_propagate_error",
    "batch_gradient",
    "forward_propagate",
    "layered_gradient",
    "predict_batch",
    "predict_layered",
    "predict_sparse",
    "sparse_gradient",
    "train_batches",
    "train_layered",
    "train_lockstep",
    "train_online",
    "train_sparse",
    "update_weights",
]

"""The Numba backend: the kernels of the contract (:mod:`fastbp._backends`), compiled in nopython mode.

Its modules, one family each: ``primitives`` (activations, exp, softmax, losses,
optimizers, BLAS's gemm), ``online`` (one row at a time), ``lockstep`` (many networks at once),
``batches`` (mini-batches by BLAS), ``layered`` (networks with convolutions, pooling
and dropout); ``llvm`` holds the LLVM intrinsics and the
binding to the C library's exp, ``config`` the compiler options.  ``fastmath`` stays
off, so the exact kernels agree bit for bit with :mod:`fastbp.reference`.

Kernels are cached on disk, so a second process loads them instead of compiling.
Numba checks a cached kernel against its own source file only, while the kernels
inline functions from the other modules: so the cache is cleared here whenever any
source the kernels are built from has changed since it was written.  Where Numba can
write its cache nowhere, the kernels are compiled in memory (:mod:`.config`), and
its capabilities' ``first_use_warning`` says so the first time the backend is used.
"""

import hashlib
import os
from pathlib import Path

from .. import _concepts, _constants, _libm
from .._backends import Capabilities
from . import batches, config, layered, llvm, lockstep, online, primitives
from .batches import (
    MAX_THREADS,
    PARALLEL_LOCK,
    batch_gradient,
    predict_sparse,
    sparse_gradient,
    train_batches,
    train_sparse,
)
from .layered import layered_gradient, predict_layered, train_layered
from .lockstep import train_lockstep
from .online import backward_propagate_error, forward_propagate, predict_batch, train_online, update_weights

_MODULES = (primitives, online, lockstep, batches, layered)
#: The sources every kernel is built from.
_SOURCES = (*_MODULES, llvm, _concepts, _constants, _libm)


def _dispatchers():
    """Every compiled function of the backend's modules."""
    return [value for module in _MODULES for value in vars(module).values() if hasattr(value, "_cache")]


def _clear_disk_cache() -> None:
    for dispatcher in _dispatchers():
        dispatcher._cache.flush()


def _not_yet_run(kernel: str) -> bool:
    """Whether the compiled functions behind ``kernel`` have not run in this process (so may load the cache)."""
    module = next(module for module in _MODULES if hasattr(module, kernel))
    compiled = getattr(module, "DISPATCHERS", {}).get(kernel, (getattr(module, kernel),))
    return any(not dispatcher.signatures for dispatcher in compiled)


def _clear_stale_cache() -> None:
    """Clear the disk cache if the kernels' sources differ from those it was written from."""
    cache_path = getattr(online.train_online._cache, "_cache_path", None)
    if cache_path is None:  # caching is off
        return
    digest = hashlib.sha256()
    for module in _SOURCES:
        digest.update(Path(module.__file__).read_bytes())
    stamp = Path(cache_path) / "fastbp-sources.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == digest.hexdigest():
            return
        _clear_disk_cache()
        os.makedirs(cache_path, exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only cache directory: Numba does without the cache
        pass


_clear_stale_cache()

CAPABILITIES = Capabilities(
    layer_kinds=tuple(_concepts.LAYER_KINDS),
    steps=True,
    lockstep=True,
    sparse=True,
    releases_gil=True,
    max_threads=MAX_THREADS,
    parallel_lock=PARALLEL_LOCK,
    clear_disk_cache=_clear_disk_cache,
    not_yet_run=_not_yet_run,
    first_use_warning=config.NO_CACHE_WARNING,
)

__all__ = [
    "CAPABILITIES",
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

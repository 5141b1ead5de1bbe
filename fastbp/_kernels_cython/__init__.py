"""The Cython backend: the kernels of the contract (:mod:`fastbp._backends`), compiled when fastbp is installed.

Its extension modules, one family each, share the arithmetic of ``primitives.pxd``:
``online`` (one row at a time), ``lockstep`` (many networks at once), ``batches``
(mini-batches by BLAS, shared between OpenMP threads) and ``layered`` (networks with
convolutions, pooling and dropout: mini-batches cut into chunks that OpenMP threads
share).  They follow the Numba backend operation by operation and are built without
fast-math and without fused multiply-adds, so the two agree bit for bit.  Their
constants are generated from :mod:`fastbp._concepts` and :mod:`fastbp._constants`
when the extension is built, and each module refuses to import if they differ from
those modules now (a stale build).
"""

from .._backends import Capabilities
from .._concepts import LAYER_KINDS
from .._parallel import usable_cores
from .batches import OPENMP, batch_gradient, train_batches
from .layered import layered_gradient, predict_layered, train_layered
from .lockstep import train_lockstep
from .online import backward_propagate_error, forward_propagate, predict_batch, train_online, update_weights

CAPABILITIES = Capabilities(
    layer_kinds=tuple(LAYER_KINDS),
    steps=True,
    lockstep=True,
    releases_gil=True,
    max_threads=usable_cores() if OPENMP else 1,  # without OpenMP its mini-batch kernels run on one thread
)

__all__ = [
    "CAPABILITIES",
    "OPENMP",
    "backward_propagate_error",
    "batch_gradient",
    "forward_propagate",
    "layered_gradient",
    "predict_batch",
    "predict_layered",
    "train_batches",
    "train_layered",
    "train_lockstep",
    "train_online",
    "update_weights",
]

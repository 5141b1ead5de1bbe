"""Backend registry: a name maps to a kernel module implementing the contract.

Compiled backends are imported on first use, so a broken one does not stop the
others from working, and asking for it raises an error that says why.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from pathlib import Path
from types import ModuleType

#: Backend names, fastest first, and the module holding each one's kernels.
BACKENDS = {
    "cython": "fastbp._kernels_cython",
    "numba": "fastbp._kernels_numba",
    "reference": "fastbp._kernels_reference",
}
#: Backends that ``"auto"`` may pick, in order of preference.
COMPILED = ("cython", "numba")
#: Backends built as C extensions at install time rather than compiled on import.
_EXTENSIONS = ("cython",)


def get_backend(name: str) -> ModuleType:
    """The kernel module for backend ``name`` (``"auto"``: the fastest that imports)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {name!r}")
    if name == "auto":
        for candidate in COMPILED:
            module = _try_import(candidate)
            if module is not None:
                return module
        raise ImportError(f"no compiled backend could be imported (tried {', '.join(COMPILED)})")
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {tuple(BACKENDS)}, got {name!r}")
    module_name = BACKENDS[name]
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        if name in _EXTENSIONS and error.name == module_name:
            package = Path(__file__).parent
            reason = (
                f"the compiled extension {module_name} is missing from {package} "
                "(reinstall with a C compiler, or build it in a source checkout with 'pip install -e .')"
            )
        else:
            reason = str(error)
        raise ImportError(f"the {name!r} backend is not available: {reason}") from error


#: What a damaged Numba cache file raises when the dispatcher unpickles it (Numba 0.68 does not catch it).
_UNREADABLE_CACHE = (EOFError, pickle.UnpicklingError, ImportError, AttributeError, IndexError, ValueError)


def run_kernel(kernels: ModuleType, name: str, *args):
    """Call ``kernels.<name>(*args)``, recompiling Numba kernels whose disk cache cannot be read.

    Numba loads a kernel (and the kernels it calls) from its cache on the first call
    in a process; a truncated or garbled cache file then raises from inside Numba
    before any work is done.  The module's caches are cleared, with a warning, and
    the kernel compiled afresh, once.
    """
    kernel = getattr(kernels, name)
    # A Python function that picks between compiled ones lists them as ``dispatchers``: any that has not run
    # yet may be the one reading the cache now.
    first_call = any(not getattr(compiled, "signatures", True) for compiled in getattr(kernel, "dispatchers", [kernel]))
    try:
        return kernel(*args)
    except _UNREADABLE_CACHE as error:
        caches = [value._cache for value in vars(kernels).values() if hasattr(value, "_cache")]
        if not first_call or not caches:
            raise
        warnings.warn(
            f"fastbp's Numba cache could not be read ({type(error).__name__}: {error}); compiling the kernels afresh",
            RuntimeWarning,
            stacklevel=3,
        )
        for cache in caches:
            cache.flush()
        return kernel(*args)


def available_backends() -> list[str]:
    """Names of the backends whose kernels import on this machine."""
    return [name for name in BACKENDS if _try_import(name) is not None]


def backend_name(module: ModuleType) -> str:
    """The registry name of a kernel module."""
    return next(name for name, path in BACKENDS.items() if path == module.__name__)


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError:
        return None

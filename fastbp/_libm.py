"""Where the C library's ``exp`` and ``expf`` start, for the compiled kernels to call them directly.

Both backends' exact arithmetic takes libm's exp, as the reference's ``math.exp``
does.  glibc's ``exp`` is a wrapper that sets ``errno`` on overflow around the
core that glibc still exports as ``__exp_finite``; Numba's ``math.exp`` adds a
second wrapper, a helper of Numba's own built against an old glibc, whose ``exp``
is glibc's compatibility wrapper (``exp@GLIBC_2.2.5``).  The kernels call the
core where glibc has it, and the plain function elsewhere: the values are the
same (checked by the tests), without the wrappers' cost on every call (see the
docs' performance page).  ``expf`` has no wrapper.
"""

import ctypes
import ctypes.util
import functools

#: glibc's version of its exported exp core on x86-64 (``__exp_finite@GLIBC_2.15``).
EXP_CORE_VERSION = b"GLIBC_2.15"


@functools.cache  # finding the library runs ldconfig, and every compiled module asks
def libm_address(name: str) -> int | None:
    """Where ``name`` (``"exp"`` or ``"expf"``) starts: glibc's exp core if it has one, or None without a libm."""
    path = ctypes.util.find_library("m")
    if path is None:
        return None
    libm = ctypes.CDLL(path)
    dlvsym = getattr(ctypes.CDLL(None), "dlvsym", None)  # glibc's: a symbol of a given version
    if name == "exp" and dlvsym is not None:
        dlvsym.restype, dlvsym.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        core = dlvsym(libm._handle, b"__exp_finite", EXP_CORE_VERSION)
        if core:
            return core
    return ctypes.cast(getattr(libm, name), ctypes.c_void_p).value

"""Build script for the Cython backend's extension; the package metadata lives in pyproject.toml.

The extension is optional: if it cannot be compiled (no C compiler, no Cython,
no SciPy, whose ``cython_blas`` gives its mini-batch kernels BLAS), the install
still succeeds with a warning, the Numba backend works as before,
and ``backend="cython"`` raises an ImportError saying the extension is missing.
"""

import os
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# The exact kernels must not let the C compiler fuse a * b + c into one FMA
# (the rounding would differ from the reference); fast-math is never enabled.
# -fno-trapping-math changes no value, only the promise to keep floating-point exception
# flags: it lets gcc turn the selects of fastbp's exp into vector code (lockstep's sigmoid).
GCC_LIKE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math"]
# Linked against libm, the kernels' libm functions (expf, tanh, log; exp where fastbp._libm finds
# no exp core) bind to glibc's current symbols; left unlinked, the loader binds them to the oldest,
# compatibility wrappers (exp@GLIBC_2.2.5) that check errno around every call. The values are the same.
MATH_LIBRARY = ["m"]
# OpenMP lets the mini-batch kernels share a batch's products between threads; without it
# (a compiler that lacks it) the extension builds anyway and runs them on one thread.
OPENMP_FLAGS = ["-fopenmp"]
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, ValueError)
WARNING = (
    "the Cython extension fastbp._kernels_cython could not be built ({error}); "
    "fastbp is installed without it: the 'numba' backend works, backend='cython' will raise ImportError"
)


class OptionalBuildExt(build_ext):
    """``build_ext`` that adds gcc/clang flags and turns a failed compile into a warning."""

    def run(self):
        try:
            super().run()
        except BUILD_ERRORS as error:
            warnings.warn(WARNING.format(error=error), stacklevel=1)

    def build_extension(self, ext):
        if self.compiler.compiler_type in ("unix", "mingw32", "cygwin"):
            ext.extra_compile_args = [*ext.extra_compile_args, *GCC_LIKE_FLAGS]
            ext.libraries = [*ext.libraries, *MATH_LIBRARY]
            try:
                self._build_with(ext, OPENMP_FLAGS)
                return
            except BUILD_ERRORS as error:
                warnings.warn(
                    f"building {ext.name} without OpenMP ({error}): its kernels will use one thread", stacklevel=1
                )
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as error:
            # A binary left by an earlier build would be installed as if it were this source's.
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            warnings.warn(WARNING.format(error=error), stacklevel=1)

    def _build_with(self, ext, flags):
        """Build ``ext`` with ``flags`` added to its compile and link options, leaving ``ext`` as it was."""
        compile_args, link_args = ext.extra_compile_args, ext.extra_link_args
        ext.extra_compile_args, ext.extra_link_args = [*compile_args, *flags], [*link_args, *flags]
        try:
            super().build_extension(ext)
        finally:
            ext.extra_compile_args, ext.extra_link_args = compile_args, link_args


def extensions():
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (cimported by the kernels)
        from Cython.Build import cythonize
    except ImportError as error:
        warnings.warn(WARNING.format(error=error), stacklevel=1)
        return []
    extension = Extension("fastbp._kernels_cython", ["fastbp/_kernels_cython.pyx"])
    return cythonize([extension], compiler_directives={"language_level": 3})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""Build script for the Cython backend's extensions; the package metadata lives in pyproject.toml.

The extensions are optional: if they cannot be compiled (no C compiler, no Cython,
no SciPy, whose ``cython_blas`` gives the mini-batch kernels BLAS), the install
still succeeds, with a warning that says what that costs and how to fix it: the
Numba backend works as before, ``backend="auto"`` picks it (and warns once per
process), and ``backend="cython"`` raises an ImportError saying the extension is missing.

The constants the kernels build in are generated from ``fastbp._constants`` into
``fastbp/_kernels_cython/constants.pxd`` by every build, never typed twice.

On x86-64 the modules are also built for wider vectors (``VECTOR_BUILDS``): each for
every x86-64 processor (whose vector unit, SSE2, is four floats wide) and as
``<module>_avx2`` (generated ``<module>_avx2.pyx``, which includes the module's source)
for processors with AVX2, eight floats wide; the layered kernels also as
``layered_avx512`` for those with AVX-512, sixteen.  ``fastbp._kernels_cython`` imports
the widest build of each module that the processor runs.  The C compiler may not fuse
multiplies and adds in any of them (see ``GCC_LIKE_FLAGS``), so all give the same bits.
"""

import importlib
import os
import platform
import sys
import types
import warnings
from pathlib import Path
from typing import NamedTuple

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

PACKAGE = Path(__file__).resolve().parent / "fastbp"
KERNELS = PACKAGE / "_kernels_cython"
MODULES = ("online", "lockstep", "batches", "layered")
# The exact kernels must not let the C compiler fuse a * b + c into one FMA
# (the rounding would differ from the reference); fast-math is never enabled.
# -fno-trapping-math changes no value, only the promise to keep floating-point exception
# flags: it lets gcc turn the selects of fastbp's exp into vector code (lockstep's sigmoid).
# -fno-jump-tables keeps the tests of an activation code a chain of branches, which gcc hoists out of
# the loops over a layer so that they vectorise; a jump table would stay inside them, scalar.
# -fno-math-errno changes no value either (a square root is correctly rounded whether or not a negative
# argument sets errno): without it, every sqrt tests its argument and may call the C library to set errno,
# which keeps the loops that take one (Adam's, RMSprop's steps) scalar.
GCC_LIKE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-jump-tables", "-fno-math-errno"]
# Linked against libm, the kernels' libm functions (expf, tanh, log; exp where fastbp._libm finds
# no exp core) bind to glibc's current symbols; left unlinked, the loader binds them to the oldest,
# compatibility wrappers (exp@GLIBC_2.2.5) that check errno around every call. The values are the same.
MATH_LIBRARY = ["m"]
# OpenMP lets the mini-batch kernels share a batch's products between threads; without it
# (a compiler that lacks it) the extensions build anyway and run them on one thread.
OPENMP_FLAGS = ["-fopenmp"]


class VectorBuild(NamedTuple):
    """A vector build: the instructions' name, gcc's and clang's flags for them, the modules built so."""

    instructions: str
    flags: list[str]
    modules: tuple[str, ...]


# The vector builds, on x86-64 only, by suffix: the flags make gcc and clang target the instructions in their
# loops (still without fused multiply-adds). AVX2 for every module; AVX-512 (F, CD, BW, DQ and VL, as x86-64-v4,
# with 512-bit vectors preferred: gcc's tuning for these processors stops at 256 bits otherwise) for the
# layered kernels alone, whose loops over 32 filters or channels it runs faster; the online kernels' short
# loops over a layer run slower in it (see the performance page).
VECTOR_BUILDS = {
    "_avx2": VectorBuild("AVX2", ["-mavx2"], MODULES),
    "_avx512": VectorBuild(
        "AVX-512",
        ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mprefer-vector-width=512"],
        ("layered",),
    ),
}
VECTOR_MACHINES = ("x86_64", "amd64")
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, ValueError)
MISSING_BACKEND = """
********************************************************************************
WARNING: fastbp is built without its compiled Cython backend:
{reason}.
fastbp still works, but starts slower: backend="auto" (the default) picks the
Numba backend instead, which compiles its kernels on first use (10-17 s; then
cached on disk where Numba can write), and backend="cython" raises ImportError.
To build the Cython backend, install a C compiler (gcc or clang; on Windows,
Microsoft C++ Build Tools), then reinstall fastbp:
    pip install --force-reinstall --no-cache-dir --no-deps fastbp
(in a source checkout: pip install . or pip install -e .).
********************************************************************************
"""


def announce_missing_backend(reason: str) -> None:
    """Say, where pip shows a build's output (``pip install -v``, or the build log), that the Cython backend is
    missing, what that costs, and how to build it."""
    print(MISSING_BACKEND.format(reason=reason), file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that adds gcc/clang flags and turns failed compiles into one warning at the end."""

    def initialize_options(self):
        super().initialize_options()
        self.failed = {}  # extension name -> the error that stopped its build

    def run(self):
        try:
            super().run()
        except BUILD_ERRORS as error:
            self.failed["fastbp._kernels_cython"] = error
        missing = [name for name in self.failed if _vector_build(name) is None]
        if missing:
            announce_missing_backend(f"{', '.join(missing)} could not be compiled ({self.failed[missing[0]]})")
            return
        for name, error in self.failed.items():  # vector builds only
            instructions = VECTOR_BUILDS[_vector_build(name)].instructions
            warnings.warn(
                f"{name} could not be built ({error}): processors with {instructions} will run a module built for "
                "narrower vectors",
                stacklevel=1,
            )

    def build_extension(self, ext):
        openmp_error = None
        vectors = _vector_build(ext.name)
        if self.compiler.compiler_type in ("unix", "mingw32", "cygwin"):
            ext.extra_compile_args = [*ext.extra_compile_args, *GCC_LIKE_FLAGS]
            if vectors is not None:
                ext.extra_compile_args = [*ext.extra_compile_args, *VECTOR_BUILDS[vectors].flags]
            ext.libraries = [*ext.libraries, *MATH_LIBRARY]
            try:
                self._build_with(ext, OPENMP_FLAGS)
                return
            except BUILD_ERRORS as error:
                openmp_error = error
        elif vectors is not None:  # another compiler: the modules built for every processor will do
            return
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as error:
            # A binary left by an earlier build would be installed as if it were this source's.
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            self.failed[ext.name] = error
            return
        if openmp_error is not None:
            warnings.warn(f"building {ext.name} without OpenMP ({openmp_error}): it will use one thread", stacklevel=1)

    def _build_with(self, ext, flags):
        """Build ``ext`` with ``flags`` added to its compile and link options, leaving ``ext`` as it was."""
        compile_args, link_args = ext.extra_compile_args, ext.extra_link_args
        ext.extra_compile_args, ext.extra_link_args = [*compile_args, *flags], [*link_args, *flags]
        try:
            super().build_extension(ext)
        finally:
            ext.extra_compile_args, ext.extra_link_args = compile_args, link_args


def compiled_constants() -> dict:
    """``fastbp._constants.compiled_constants()``, loaded without running ``fastbp/__init__.py`` (which imports
    fastbp's dependencies): a stub package stands in for ``fastbp`` meanwhile."""
    names = ("fastbp", "fastbp._constants", "fastbp._concepts")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    stub = types.ModuleType("fastbp")
    stub.__path__ = [str(PACKAGE)]
    sys.modules["fastbp"] = stub
    try:
        return importlib.import_module("fastbp._constants").compiled_constants()
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


CONSTANTS_PXD = '''# cython: language_level=3
# Generated by setup.py from fastbp._constants.compiled_constants() at every build: do not edit.

cdef enum:
{enum}

cdef extern from *:
    """
{definitions}
    """
{declarations}


cdef inline dict compiled_constants():
    return {{
{entries}
    }}
'''


def write_constants() -> None:
    """Generate ``constants.pxd``: the integers as a C enum, the floats as C constants (``repr`` of a float reads
    back as the same double), and ``compiled_constants()``, which returns them all by name (written only where
    its text changed)."""
    enum, definitions, declarations, entries = [], [], [], []
    for name, value in compiled_constants().items():
        if type(value) is int and value >= 2**31:  # a 64-bit pattern: too wide for a C enum
            definitions.append(f"    static const unsigned long long FASTBP_{name} = {value}ULL;")
            declarations.append(f'    const unsigned long long {name} "FASTBP_{name}"')
            entries.append(f'        "{name}": {name},')
            continue
        if type(value) is int:
            enum.append(f"    {name} = {value}")
            entries.append(f'        "{name}": {name},')
            continue
        length = f"[{len(value)}]" if isinstance(value, tuple) else ""
        text = "{" + ", ".join(map(repr, value)) + "}" if length else repr(value)
        definitions.append(f"    static const double FASTBP_{name}{length} = {text};")
        declarations.append(f'    const double {name} "FASTBP_{name}"{length}')
        entries.append(f'        "{name}": {f"tuple({name})" if length else name},')
    lists = {"enum": enum, "definitions": definitions, "declarations": declarations, "entries": entries}
    text = CONSTANTS_PXD.format(**{key: "\n".join(lines) for key, lines in lists.items()})
    _write_if_changed(KERNELS / "constants.pxd", text)


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it holds that text already: an unchanged file keeps its time, so nothing
    that depends on it is rebuilt."""
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


VECTOR_PYX = """{directives}
# Generated by setup.py at every build: {name}.pyx's kernels, compiled for processors with {vectors}. Do not edit.

include "{name}.pyx"
"""


def _vector_build(name: str) -> str | None:
    """The suffix of the vector build that extension or module ``name`` is, or None."""
    return next((suffix for suffix in VECTOR_BUILDS if name.endswith(suffix)), None)


def write_vector_sources() -> list[str]:
    """Generate ``<module><suffix>.pyx`` for each module and vector build (its compiler directives, then its
    source included) where the machine is x86-64; returns their module names."""
    if platform.machine().lower() not in VECTOR_MACHINES:
        return []
    names = []
    for suffix, build in VECTOR_BUILDS.items():
        for name in build.modules:
            directives = (KERNELS / f"{name}.pyx").read_text().splitlines()[0]
            text = VECTOR_PYX.format(directives=directives, name=name, vectors=build.instructions)
            _write_if_changed(KERNELS / f"{name}{suffix}.pyx", text)
            names.append(f"{name}{suffix}")
    return names


def extensions():
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (cimported by the kernels)
        from Cython.Build import cythonize
    except ImportError as error:
        announce_missing_backend(f"Cython or SciPy is missing at build time ({error})")
        return []
    write_constants()
    names = [*MODULES, *write_vector_sources()]
    modules = [Extension(f"fastbp._kernels_cython.{name}", [f"fastbp/_kernels_cython/{name}.pyx"]) for name in names]
    return cythonize(modules, compiler_directives={"language_level": 3})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""The C library's exp as the kernels call it (fastbp._libm): the same values as the exp everyone else calls."""

import ctypes
import ctypes.util
import math

import numpy as np
import pytest
from numba import njit

from fastbp._kernels_numba.llvm import libm_exp
from fastbp._libm import libm_address

rng = np.random.default_rng(0)
#: Ordinary, overflowing, underflowing (to subnormals and to 0) and special arguments.
ARGUMENTS = np.concatenate(
    [
        rng.normal(0, 5, 20_000),
        rng.uniform(-760, 720, 20_000),
        [0.0, -0.0, 1.0, -1.0, 709.78, 709.79, -708.4, -745.13, -745.14, 1e-300, -1e-300],
        [np.inf, -np.inf, np.nan],
    ]
)


def as_function(address, c_type):
    return ctypes.CFUNCTYPE(c_type, c_type)(address)


@pytest.fixture(scope="module")
def libm():
    path = ctypes.util.find_library("m")
    if path is None or libm_address("exp") is None:
        pytest.skip("no C math library found by name: the kernels use Numba's math.exp")
    return ctypes.CDLL(path)


@pytest.mark.parametrize("name, c_type", [("exp", ctypes.c_double), ("expf", ctypes.c_float)])
def test_the_kernels_exp_gives_the_c_librarys_values(libm, name, c_type):
    kernels, public = as_function(libm_address(name), c_type), getattr(libm, name)
    public.restype, public.argtypes = c_type, [c_type]
    dtype = np.float64 if c_type is ctypes.c_double else np.float32
    x = ARGUMENTS.astype(dtype)
    ours = np.array([kernels(v) for v in x.tolist()], dtype=dtype)
    theirs = np.array([public(v) for v in x.tolist()], dtype=dtype)
    assert ours.tobytes() == theirs.tobytes()


def test_the_kernels_exp_gives_pythons_values(libm):
    """Where Python's math.exp returns (no overflow), the exact kernels' exp must match it: the reference uses it."""
    kernels = as_function(libm_address("exp"), ctypes.c_double)
    finite = ARGUMENTS[np.isfinite(ARGUMENTS) & (ARGUMENTS < 709.78)]
    assert all(kernels(v) == math.exp(v) for v in finite.tolist())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_libm_exp_equals_numbas_math_exp(dtype):
    @njit
    def ours(x, out):
        for i in range(x.shape[0]):
            out[i] = libm_exp(x[i])

    @njit
    def numbas(x, out):
        for i in range(x.shape[0]):
            out[i] = math.exp(x[i])

    x = ARGUMENTS.astype(dtype)
    a, b = np.empty_like(x), np.empty_like(x)
    ours(x, a)
    numbas(x, b)
    assert a.tobytes() == b.tobytes()

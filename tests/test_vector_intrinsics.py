"""The Numba backend's vector intrinsics (fastbp._kernels_numba.llvm) against plain loops written here: the same
bits as the loops' one value at a time, at every vector width the intrinsics may be built for."""

import numpy as np
import pytest
from numba import njit

from fastbp._kernels_numba import llvm

DTYPES = [np.float32, np.float64]
#: SSE's or NEON's, AVX's and AVX-512's vectors; the intrinsics read the width when they are compiled.
WIDTHS = [16, 32, 64]
#: Winograd's F(2x2, 3x3) transforms (Lavin and Gray, 2016): a window ``d`` as ``B^T d B``, products as ``A^T m A``.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)

rng = np.random.default_rng(0)


@pytest.fixture(params=WIDTHS, ids=lambda width: f"{width}-byte vectors")
def width(request, monkeypatch):
    monkeypatch.setattr(llvm, "VECTOR_BYTES", request.param)
    return request.param


def fresh(function):
    """``function`` compiled anew (each width is compiled into the functions that call an intrinsic)."""
    return njit(cache=False)(function)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_scaled_adds_each_term_in_turn(width, dtype):
    def intrinsic(sums, at, sums_step, rows, starts, offset, scales, n_terms, row_step, n_rows, n):
        llvm.add_scaled(sums, at, sums_step, rows, starts, offset, scales, n_terms, row_step, n_rows, n)

    call = fresh(intrinsic)
    for n, n_terms, n_rows in [(1, 1, 1), (7, 3, 2), (96, 64, 3), (97, 5, 1), (200, 2, 2), (31, 0, 2)]:
        rows = rng.standard_normal(4000).astype(dtype)
        sums = rng.standard_normal(1000).astype(dtype)
        starts = rng.integers(0, 3000, 64).astype(np.uintp)
        scales = rng.standard_normal(64).astype(dtype)
        expected = sums.copy()
        for r in range(n_rows):
            for i in range(n):
                total = expected[5 + r * (n + 3) + i]
                for t in range(n_terms):
                    total = total + scales[t] * rows[starts[t] + 7 + r * 300 + i]
                expected[5 + r * (n + 3) + i] = total
        call(sums, 5, n + 3, rows, starts, 7, scales, n_terms, 300, n_rows, n)
        np.testing.assert_array_equal(sums, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("units", [1, 5, 16, 32, 37])
def test_fused_gradient_adds_each_windows_error_times_the_pixels_under_its_maximum(width, dtype, units):
    def intrinsic(values, image, in_w, places, errors, at, out_h, out_w, units, sums, sums_step):
        llvm.fused_gradient(values, image, in_w, places, errors, at, out_h, out_w, units, sums, sums_step)

    out_h, out_w, in_w, image, places, at, step = 3, 5, 12, 7, 500, 11, 64
    values = rng.standard_normal(500 + out_h * out_w * units).astype(dtype)
    values[places:] = rng.integers(0, 4, out_h * out_w * units)
    errors = rng.standard_normal(at + out_h * out_w * units).astype(dtype)
    errors[rng.random(errors.size) < 0.3] = 0.0
    sums = rng.standard_normal(10 * step).astype(dtype)
    expected = sums.copy()
    for window in range(out_h * out_w):
        oy, ox = divmod(window, out_w)
        for u in range(units):
            error, place = errors[at + window * units + u], int(values[places + window * units + u])
            for i in range(9):
                y, x = 2 * oy + place // 2 + i // 3, 2 * ox + place % 2 + i % 3
                expected[i * step + u] = expected[i * step + u] + error * values[image + y * in_w + x]
            expected[9 * step + u] = expected[9 * step + u] + error
    fresh(intrinsic)(values, image, in_w, places, errors, at, out_h, out_w, units, sums, step)
    np.testing.assert_array_equal(sums, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 16, 37])
def test_winograd_in_and_out_are_the_transforms(width, dtype, n):
    def transform_in(values, source, row_step, column_step, V, to, plane, n):
        llvm.winograd_in(values, source, row_step, column_step, V, to, plane, n)

    def transform_out(M, at, plane, biases, bias_at, out, to, row_step, column_step, n):
        llvm.winograd_out(M, at, plane, biases, bias_at, out, to, row_step, column_step, n)

    windows = rng.standard_normal((4, 4, n)).astype(dtype)
    V = np.zeros(3 + 16 * 50, dtype=dtype)
    fresh(transform_in)(windows.ravel(), 0, 4 * n, n, V, 3, 50, n)
    transformed = V[3:].reshape(16, 50)[:, :n].reshape(4, 4, n)
    expected = np.einsum("ij,jkc,lk->ilc", B_T, windows.astype(float), B_T)
    np.testing.assert_allclose(transformed, expected, rtol=1e-5, atol=1e-5)

    products, biases = rng.standard_normal((16, 50)).astype(dtype), rng.standard_normal(n + 2).astype(dtype)
    out = np.zeros(2 * 2 * n, dtype=dtype)
    fresh(transform_out)(products.ravel(), 0, 50, biases, 2, out, 0, 2 * n, n, n)
    m = products[:, :n].reshape(4, 4, n).astype(float)
    expected = np.einsum("ij,jkc,lk->ilc", A_T, m, A_T) + biases[2:].astype(float)
    np.testing.assert_allclose(out.reshape(2, 2, n), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("units", [1, 5, 16, 32, 37])
def test_winograd_pool_takes_relu_of_each_windows_largest_output_and_its_place(width, dtype, units):
    def intrinsic(values, corner, in_w, pooled, places, winograd, units, step):
        llvm.winograd_pool(values, corner, in_w, pooled, places, winograd, units, step)

    in_w, step = 9, 64
    values = np.zeros(100 + 2 * units, dtype=dtype)
    values[: 4 * in_w] = rng.standard_normal(4 * in_w)
    kernels = rng.standard_normal((17, step)).astype(dtype)
    kernels[16, : units // 2] = -100.0  # biases that make every output of some filters negative
    fresh(intrinsic)(values, 2, in_w, 100, 100 + units, kernels.ravel(), units, step)
    window = values[: 4 * in_w].reshape(4, in_w)[:, 2:6].astype(float)
    outputs = np.einsum(
        "ij,jkc,lk->ilc", A_T, (B_T @ window @ B_T.T)[:, :, None] * kernels[:16, :units].reshape(4, 4, units), A_T
    )
    outputs = (outputs + kernels[16, :units]).reshape(4, units)
    np.testing.assert_allclose(values[100 : 100 + units], np.maximum(outputs.max(axis=0), 0.0), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(values[100 + units : 100 + 2 * units], outputs.argmax(axis=0))

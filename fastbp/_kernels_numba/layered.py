"""The Numba backend's kernels for layered networks: convolutions, max pooling, dropout and flatten beside
dense layers, trained by mini-batches.

A batch is cut into chunks of ``chunk_rows(batch_size)`` rows (``fastbp._constants``;
predictions into chunks of ``CHUNK_ROWS``).  A chunk runs forward and then
backward layer by layer, into a gradient buffer of its own; the chunks' gradients
are then summed in chunk order, so the weights do not depend on which thread ran
which chunk.  Each thread takes every ``n_slots``-th chunk with scratch of its own.

Layer ``k``'s values for a chunk form a ``(rows, sizes[k] + 1)`` matrix whose last
column is ones, so that products include the biases; an image's values are
channels-last.  A dense layer multiplies the chunk's rows at once, and a
convolution each row's windows, gathered into a ``(positions, fan_in + 1)`` matrix
("im2col"), by BLAS's gemm, called exactly as the Cython backend calls it, so the
two agree bit for bit; a relu dense layer's backward pass adds its nonzero errors' terms
alone instead (``_dense_backward_by_terms``), in both backends' order.  A 3x3
convolution of stride 1 without padding whose outputs come in whole 2x2 tiles is
computed by Winograd's F(2x2, 3x3) instead (``_winograd``): each tile's 4x4 window and
each kernel transformed, their products summed over the channels by one gemm per
element of the 4x4, and transformed back, with 16 products of a channel's window and
kernel per tile where the windows' products take 36.  Pooling, dropout and flatten are
loops.

A convolution that a max pooling reads ("pooled", ``_region``) is computed only where
the pooling's windows read it, and trained from the pooling's errors alone: each,
times the activation's slope at its window's maximum, adds the maximum's window of
inputs times the error into its filter's gradient, and the filter times the error into
those inputs' errors.  This skips the products of the errors the pooling drops (three
in four for 2x2 pooling).  The notebook's first layer (``_fused``) is computed inside
its pooling's loop, and its backward pass reads each maximum's pixels from the image.

Each layer's error signals ``dL/dz`` (``z`` its values before its activation) go
down the network in two alternating buffers: the layer in hand's and the layer
below's.  Dropout keeps a value unless its draw (``_dropout_draw``) is below the
rate, and scales the kept ones by ``1 / (1 - rate)``.
"""

import numpy as np
from numba import njit, prange

from .._concepts import ActivationCode, LayerKindCode
from .._constants import (
    CELL_SHIFT,
    CHUNK_ROWS,
    FUSED_MAX_UNITS,
    GROUPED_FILTERS,
    LINE_BYTES,
    SPLITMIX_GAMMA,
    SPLITMIX_MIX1,
    SPLITMIX_MIX2,
    TERMS_BLOCK,
    TERMS_ERRORS_PER_NONZERO,
    WINOGRAD_ROWS,
    Geometry,
    chunk_rows,
    terms_columns,
)
from .batches import MAX_THREADS, _variant, on_threads
from .config import NUMBA_INLINED_OPTIONS, NUMBA_OPTIONS
from .llvm import (
    add_scaled,
    flush_subnormals,
    fused_gradient,
    restore_subnormals,
    winograd_in,
    winograd_out,
    winograd_pool,
)
from .primitives import (
    AS_IS,
    ONE,
    START,
    TRANSPOSED,
    activate_row,
    activation,
    copy_values,
    derive_row,
    gemm,
    optimizer_step_over,
    output_error,
    row_start,
    softmax,
)

_chunk_rows = njit(**NUMBA_INLINED_OPTIONS)(chunk_rows)
_terms_columns = njit(**NUMBA_INLINED_OPTIONS)(terms_columns)

#: The forward pass's mode, and one slot of scratch: NumPy values too, so that training and prediction share one
#: compilation of the forward pass and of ``_scratch``.
TRAINING, PREDICTING = np.bool_(True), np.bool_(False)
ONE_SLOT = np.intp(1)

#: A pooled convolution's maximum's row and column in one winner (``_pool``): the row's shift, the column's mask.
ROW_SHIFT = np.uintp(CELL_SHIFT)
COLUMN_MASK = np.uintp(2**CELL_SHIFT - 1)

GAMMA = np.uint64(SPLITMIX_GAMMA)
MIX1 = np.uint64(SPLITMIX_MIX1)
MIX2 = np.uint64(SPLITMIX_MIX2)


@njit(**NUMBA_INLINED_OPTIONS)
def _mix(z):
    """SplitMix64's output function of the 64-bit state ``z``."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(**NUMBA_INLINED_OPTIONS)
def _row_stream(seed, step, row):
    """The state from which the dropout draws of ``row`` at update ``step`` follow."""
    return _mix(_mix(np.uint64(seed) + np.uint64(step) * GAMMA) + np.uint64(row) * GAMMA)


@njit(**NUMBA_INLINED_OPTIONS)
def _dropout_draw(stream, unit):
    """The draw in [0, 1) of the ``unit``-th value of a row's ``stream``: SplitMix64's value at that place."""
    return np.float64(_mix(stream + (np.uint64(unit) + np.uint64(1)) * GAMMA) >> np.uint64(11)) * 2.0**-53


@njit(**NUMBA_INLINED_OPTIONS)
def _line_width(n, item):
    """``n`` floats of ``item`` bytes rounded up to whole cache lines (``LINE_BYTES``), in floats."""
    line = LINE_BYTES // item
    return (n + line - 1) // line * line


@njit(**NUMBA_INLINED_OPTIONS)
def _first_line(array):
    """The index of ``array``'s first value that starts a cache line."""
    return np.uintp(-array.ctypes.data % LINE_BYTES // array.itemsize)


@njit(**NUMBA_OPTIONS)
def _copy_rows(source, source_at, source_step, to, to_at, to_step, n_rows, n):
    """``n`` values of each of ``n_rows`` rows, ``source_step`` apart from ``source[source_at]``, into rows
    ``to_step`` apart from ``to[to_at]``."""
    for r in range(np.uintp(n_rows)):
        for i in range(np.uintp(n)):
            to[to_at + r * to_step + i] = source[source_at + r * source_step + i]


@njit(**NUMBA_OPTIONS)
def _scratch(net, n_slots, rows, dt):
    """Each slot's scratch for chunks of ``rows`` rows: ``(values, v_off, errors, patches, patch_errors,
    products, blas_ints, blas_floats, winners, win_off, winograd, u_off, transformed, filters)``.

    ``values[slot]`` holds layer ``k``'s ``(rows, sizes[k] + 1)`` matrix from
    ``v_off[k]``; ``errors[slot]`` two sides of ``rows * widest`` error
    signals; ``patches`` and ``patch_errors`` one row's windows of the largest
    convolution and their errors; ``products`` a layer's weighted sums (a dense layer's
    transposed), and a dense layer's errors passed down, transposed;
    ``winners[slot]`` holds a pooling layer ``k``'s ``(rows, sizes[k + 1])``
    winners (where in its input each output's maximum is) from ``win_off[k]``, but for
    a fused layer's pooling, which keeps its places among the values (``_conv_pool_row``);
    ``winograd[slot]`` a Winograd convolution's transformed windows and their products
    (``_winograd_parts``); ``transformed``, which the slots share, the weights' transforms
    (``_transform``): each Winograd convolution's transformed filters from ``u_off[k]``; ``filters[slot]`` a
    pooled convolution's filters and their gradient, in rows of whole cache lines (``_line_width``) from the
    first line in it on (``_first_line``).
    """
    sizes, geometry = net.sizes, net.geometry
    n_layers = sizes.shape[0] - 1
    v_off = np.zeros(n_layers + 2, dtype=np.intp)
    widest = 0
    for k in range(n_layers + 1):
        v_off[k + 1] = v_off[k] + rows * (sizes[k] + 1)
        widest = max(widest, sizes[k] + 1)
    n_patches, n_patch_errors, n_winograd, n_filter_rows = 1, 1, 1, 0
    item = np.empty(0, dtype=dt).itemsize
    win_off = np.zeros(n_layers + 1, dtype=np.intp)
    u_off = np.zeros(n_layers + 1, dtype=np.intp)
    for k in range(n_layers):
        pooling = net.kinds[k] == LayerKindCode.MAX_POOL2D and not _pooled_with_the_first(net, k)
        win_off[k + 1] = win_off[k] + (rows * sizes[k + 1] if pooling else 0)
        if net.kinds[k] == LayerKindCode.CONV2D:
            positions = geometry[k, Geometry.OUT_H] * geometry[k, Geometry.OUT_W]
            n_patches = max(n_patches, positions * (geometry[k, Geometry.FAN_IN] + 1))
            n_patch_errors = max(n_patch_errors, positions * geometry[k, Geometry.FAN_IN])
            if _pooled(net, k):
                n_filter_rows = max(
                    n_filter_rows, geometry[k, Geometry.UNITS] * _line_width(geometry[k, Geometry.FAN_IN] + 1, item)
                )
        u_off[k + 1] = u_off[k]
        if _winograd(net, k):
            n_filters, n_windows, n_products = _winograd_parts(net, k)
            n_winograd = max(n_winograd, n_windows + n_products)
            u_off[k + 1] += n_filters
    return (
        np.empty((n_slots, v_off[n_layers + 1]), dtype=dt),
        v_off,
        np.empty((n_slots, 2, rows * widest), dtype=dt),
        np.empty((n_slots, n_patches), dtype=dt),
        np.empty((n_slots, n_patch_errors), dtype=dt),
        np.empty((n_slots, rows * widest), dtype=dt),
        np.empty((n_slots, 8), dtype=np.int32),
        np.empty((n_slots, 2), dtype=dt),
        np.empty((n_slots, max(win_off[n_layers], 1)), dtype=np.uintp),
        win_off,
        np.empty((n_slots, n_winograd), dtype=dt),
        u_off,
        np.empty(max(u_off[n_layers], 1), dtype=dt),
        np.empty((n_slots, 2 * n_filter_rows + LINE_BYTES // item), dtype=dt),
    )


@njit(**NUMBA_INLINED_OPTIONS)
def _window(g):
    """A layer's geometry row as unsigned integers ``(in_h, in_w, in_c, out_h, out_w, kernel_h, kernel_w,
    stride_h, stride_w, pad_top, pad_left, fan_in)``.  The loops index with unsigned integers throughout:
    Numba checks a signed index for a negative value (to wrap it around) on every access, which keeps loops
    from vectorising; and a window position before the image wraps to a huge one, so one comparison with
    the image's size tells it is outside."""
    return (
        np.uintp(g[Geometry.IN_H]), np.uintp(g[Geometry.IN_W]), np.uintp(g[Geometry.IN_C]),
        np.uintp(g[Geometry.OUT_H]), np.uintp(g[Geometry.OUT_W]), np.uintp(g[Geometry.KERNEL_H]),
        np.uintp(g[Geometry.KERNEL_W]), np.uintp(g[Geometry.STRIDE_H]), np.uintp(g[Geometry.STRIDE_W]),
        np.uintp(g[Geometry.PAD_TOP]), np.uintp(g[Geometry.PAD_LEFT]), np.uintp(g[Geometry.FAN_IN]),
    )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _pooled(net, k):
    """Whether layer ``k`` is a convolution that a max pooling reads (see ``_region``)."""
    n_layers = net.kinds.shape[0]
    return net.kinds[k] == LayerKindCode.CONV2D and k + 1 < n_layers and net.kinds[k + 1] == LayerKindCode.MAX_POOL2D


@njit(**NUMBA_INLINED_OPTIONS)
def _region(net, k):
    """The rows and columns of convolution ``k``'s outputs that are computed: where a pooling above reads (the
    rows and columns past its last whole window are never used), else all."""
    if _pooled(net, k):
        above = net.geometry[k + 1]
        return (
            np.uintp(above[Geometry.OUT_H] * above[Geometry.KERNEL_H]),
            np.uintp(above[Geometry.OUT_W] * above[Geometry.KERNEL_W]),
        )
    return np.uintp(net.geometry[k, Geometry.OUT_H]), np.uintp(net.geometry[k, Geometry.OUT_W])


@njit(**NUMBA_INLINED_OPTIONS)
def _inside(g, region):
    """Whether every window of convolution ``g`` whose outputs ``region`` (rows, columns) are computed lies
    inside its image: its gradient then reads the windows there, not gathered."""
    in_h, in_w, _, _, _, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, _ = _window(g)
    return (
        pad_top == 0
        and pad_left == 0
        and (region[0] - ONE) * stride_h + kernel_h <= in_h
        and (region[1] - ONE) * stride_w + kernel_w <= in_w
    )


@njit(**NUMBA_INLINED_OPTIONS)
def _winograd(net, k):
    """Whether layer ``k`` is a convolution computed by Winograd's F(2x2, 3x3): 3x3 kernels, stride 1, every
    window inside the image, its computed outputs (``_region``) in whole 2x2 tiles, not fused (``_fused``)."""
    if net.kinds[k] != LayerKindCode.CONV2D or _fused(net, k):
        return False
    g, region = net.geometry[k], _region(net, k)
    return (
        g[Geometry.KERNEL_H] == 3 and g[Geometry.KERNEL_W] == 3 and g[Geometry.STRIDE_H] == 1
        and g[Geometry.STRIDE_W] == 1 and _inside(g, region) and region[0] % 2 == 0 and region[1] % 2 == 0
    )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _winograd_parts(net, k):
    """The sizes of a Winograd convolution's transformed filters ``(16, in_c, units)`` (in the weights'
    transforms, ``_transform``), its rows' transformed windows ``(16, WINOGRAD_ROWS * tiles, in_c)`` and their
    products ``(16, WINOGRAD_ROWS * tiles, units)``, the last two one after the other in a slot's ``winograd``
    scratch."""
    units, in_c = net.geometry[k, Geometry.UNITS], net.geometry[k, Geometry.IN_C]
    out_h, out_w = _region(net, k)
    tiles = WINOGRAD_ROWS * np.intp(out_h // np.uintp(2)) * np.intp(out_w // np.uintp(2))
    return 16 * in_c * units, 16 * tiles * in_c, 16 * tiles * units


@njit(**NUMBA_INLINED_OPTIONS)
def _winograd_filter_row(U, to, plane, a, b, c, half):
    """A row ``(a, b, c)`` of ``G g`` times ``G^T``: four values, ``plane`` apart from ``U[to]``."""
    U[to] = a
    U[to + plane] = (a + b + c) * half
    U[to + np.uintp(2) * plane] = (a - b + c) * half
    U[to + np.uintp(3) * plane] = c


@njit(**NUMBA_OPTIONS)
def _winograd_kernel(weights, at, step, U, to, plane, dt):
    """The 3x3 kernel at ``weights[at:]`` (pixel ``y * 3 + x`` at ``at + (y * 3 + x) * step``) as ``G g G^T``
    (4x4), element ``i * 4 + j`` into ``U[to + (i * 4 + j) * plane]``."""
    at, step, to, plane, half = np.uintp(at), np.uintp(step), np.uintp(to), np.uintp(plane), dt(0.5)
    g00, g01, g02 = weights[at], weights[at + step], weights[at + np.uintp(2) * step]
    at += np.uintp(3) * step
    g10, g11, g12 = weights[at], weights[at + step], weights[at + np.uintp(2) * step]
    at += np.uintp(3) * step
    g20, g21, g22 = weights[at], weights[at + step], weights[at + np.uintp(2) * step]
    _winograd_filter_row(U, to, plane, g00, g01, g02, half)
    _winograd_filter_row(
        U, to + np.uintp(4) * plane, plane, (g00 + g10 + g20) * half, (g01 + g11 + g21) * half,
        (g02 + g12 + g22) * half, half,
    )  # fmt: skip
    _winograd_filter_row(
        U, to + np.uintp(8) * plane, plane, (g00 - g10 + g20) * half, (g01 - g11 + g21) * half,
        (g02 - g12 + g22) * half, half,
    )  # fmt: skip
    _winograd_filter_row(U, to + np.uintp(12) * plane, plane, g20, g21, g22, half)


@njit(**NUMBA_OPTIONS)
def _winograd_filters(weights, start, units, in_c, U, dt):
    """Each 3x3 kernel of the layer at ``weights[start:]`` as ``G g G^T`` (``_winograd_kernel``), into ``U``:
    plane ``i * 4 + j`` an ``(in_c, units)`` matrix."""
    start, units, in_c = np.uintp(start), np.uintp(units), np.uintp(in_c)
    width = np.uintp(9) * in_c + ONE
    for co in range(units):
        for ci in range(in_c):
            _winograd_kernel(weights, start + co * width + ci, in_c, U, ci * units + co, in_c * units, dt)


@njit(**NUMBA_OPTIONS)
def _transform(net, weights, scratch):
    """The weights' transforms: each Winograd convolution's filters (``_winograd_filters``) into the scratch's
    ``transformed`` from ``u_off[k]``, once for a batch's chunks (or a prediction's), which all read them."""
    u_off, transformed = scratch[11], scratch[12]
    for k in range(net.kinds.shape[0]):
        if _winograd(net, k):
            g = net.geometry[k]
            _winograd_filters(
                weights,
                net.w_off[k],
                g[Geometry.UNITS],
                g[Geometry.IN_C],
                transformed[u_off[k] :],
                weights.dtype.type,
            )


@njit(**NUMBA_OPTIONS)
def _winograd_windows(values, image, g, region, V, plane, first):
    """One row's 4x4 windows (its image at ``values[image:]``) of each 2x2 tile of outputs as ``B^T d B``
    (``winograd_in``, the channels side by side), into ``V`` from tile ``first`` on: plane ``i * 4 + j``
    (``plane`` values apart) a ``(tiles, in_c)`` matrix."""
    _, in_w, in_c, _, _, _, _, _, _, _, _, _ = _window(g)
    image, plane, first = np.uintp(image), np.uintp(plane), np.uintp(first)
    tiles_w, two = region[1] // np.uintp(2), np.uintp(2)
    for ty in range(region[0] // two):
        for tx in range(tiles_w):
            corner = image + (two * ty * in_w + two * tx) * in_c
            winograd_in(values, corner, in_w * in_c, in_c, V, (first + ty * tiles_w + tx) * in_c, plane, in_c)


@njit(**NUMBA_OPTIONS)
def _winograd_outputs(M, at, plane, first, region, units, biases, products, out):
    """One row's outputs from the products at ``M[at:]`` of its tiles from tile ``first`` on (plane ``i * 4 + j``
    ``plane`` values apart, each ``(tiles, units)``): each tile's ``A^T m A`` plus the filters' ``biases``
    (``winograd_out``, the filters side by side), into ``products[out:]`` ``(out_h, out_w, units)``."""
    at, plane, first, units, out = np.uintp(at), np.uintp(plane), np.uintp(first), np.uintp(units), np.uintp(out)
    two = np.uintp(2)
    out_w, tiles_w = region[1], region[1] // two
    for ty in range(region[0] // two):
        for tx in range(tiles_w):
            source = at + (first + ty * tiles_w + tx) * units
            top = out + (two * ty * out_w + two * tx) * units
            winograd_out(M, source, plane, biases, 0, products, top, out_w * units, units, units)


@njit(**NUMBA_OPTIONS)
def _winograd_products(net, k, weights, transformed, u_at, values, inputs, n_rows, winograd, products, blas):
    """Winograd convolution ``k``'s outputs of the chunk's ``n_rows`` rows (values ``n_in + 1`` apart from
    ``values[inputs:]``) into ``products``, from its transformed filters (``transformed`` from ``u_at``):
    ``WINOGRAD_ROWS`` rows at a time, their windows transformed, one gemm per plane, and the products
    transformed back."""
    g = net.geometry[k]
    units, in_c, n_in, n_out = g[Geometry.UNITS], g[Geometry.IN_C], net.sizes[k], net.sizes[k + 1]
    region = _region(net, k)
    tiles = np.intp(region[0] // np.uintp(2)) * np.intp(region[1] // np.uintp(2))
    _, n_windows, _ = _winograd_parts(net, k)
    biases = np.empty(units, dtype=weights.dtype)  # side by side, for the filters' vectors
    width = g[Geometry.FAN_IN] + 1
    for c in range(units):
        biases[c] = weights[net.w_off[k] + c * width + width - 1]
    for first in range(0, n_rows, WINOGRAD_ROWS):
        rows = min(WINOGRAD_ROWS, n_rows - first)
        v_plane, m_plane = rows * tiles * in_c, rows * tiles * units
        for r in range(rows):
            _winograd_windows(values, inputs + (first + r) * (n_in + 1), g, region, winograd, v_plane, r * tiles)
        for i in range(16):
            gemm(AS_IS, (winograd, i * v_plane, in_c), AS_IS, (transformed, u_at + i * in_c * units, units),
                 (winograd, n_windows + i * m_plane, units), 0.0, (rows * tiles, units, in_c), blas)  # fmt: skip
        for r in range(rows):
            _winograd_outputs(winograd, n_windows, m_plane, r * tiles, region, units, biases, products,
                              (first + r) * n_out)  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _fused(net, k):
    """Whether layer ``k`` is computed together with the max pooling above it (``_conv_pool_row``): the first
    layer, a relu convolution of one-channel images by at most ``FUSED_MAX_UNITS`` 3x3 kernels, stride 1, no
    padding, that a pooling reads (the founding notebook's first layer; the Cython kernel holds its weights on
    the stack)."""
    if k != 0 or not _pooled(net, 0) or net.activations[0] != ActivationCode.RELU:
        return False
    g = net.geometry[0]
    return (
        g[Geometry.IN_C] == 1 and g[Geometry.KERNEL_H] == 3 and g[Geometry.KERNEL_W] == 3
        and g[Geometry.STRIDE_H] == 1 and g[Geometry.STRIDE_W] == 1 and g[Geometry.PAD_TOP] == 0
        and g[Geometry.PAD_LEFT] == 0 and g[Geometry.UNITS] <= FUSED_MAX_UNITS
    )  # fmt: skip


#: The stride of the columns of ``_side_by_side``: a constant, so that LLVM sees the columns apart and the loops
#: over the filters that store into several of them vectorise (a stride of ``units`` would need a check of
#: each pair of columns at run time).
COLUMN = np.uintp(FUSED_MAX_UNITS)


@njit(**NUMBA_INLINED_OPTIONS)
def _pooled_with_the_first(net, k):
    """Whether layer ``k`` is the pooling of a fused first layer (``_fused``): computed in its loop, its places
    kept among the values, no winners of its own."""
    return k == 1 and _fused(net, 0)


@njit(**NUMBA_INLINED_OPTIONS)
def _to_the_first(net, k):
    """Whether layer ``k``'s backward pass also takes the two layers below it, row by row: a pooled convolution
    over the pooling of a fused first layer (``_fused``), as the founding notebook's second layer.  A row's
    errors passed down then go through the pooling's relu slopes and into the first layer's gradient at once,
    in one row's scratch that stays in the cache, where each layer's own pass would go over the whole chunk's;
    each gradient's sums are added in the same order (the Cython kernels' ``_to_the_first``)."""
    return (
        k == 2 and _pooled(net, 2) and _pooled_with_the_first(net, 1) and net.activations[1] == ActivationCode.IDENTITY
    )


@njit(**NUMBA_OPTIONS)
def _side_by_side(weights, start, units, columns):
    """A fused convolution's weights (or their gradient) ``(units, 10)`` at ``weights[start:]`` as columns: input
    ``i``'s weights for all the filters side by side from ``columns[i * COLUMN]``, for loops over the filters."""
    start, units = np.uintp(start), np.uintp(units)
    for u in range(units):
        for i in range(np.uintp(10)):
            columns[i * COLUMN + u] = weights[start + u * np.uintp(10) + i]


@njit(**NUMBA_OPTIONS)
def _one_by_one(columns, units, weights, start):
    """The reverse of ``_side_by_side``."""
    start, units = np.uintp(start), np.uintp(units)
    for u in range(units):
        for i in range(np.uintp(10)):
            weights[start + u * np.uintp(10) + i] = columns[i * COLUMN + u]


@njit(**NUMBA_INLINED_OPTIONS)
def _nine_pixels(values, image, in_w, y, x):
    """The 3x3 pixels from row ``y``, column ``x`` of the one-channel image at ``values[image:]`` (``in_w``
    wide), row by row: the window of a fused first layer's output (``_fused``)."""
    top = image + y * in_w + x
    middle = top + in_w
    bottom = middle + in_w
    return (
        values[top], values[top + ONE], values[top + np.uintp(2)],
        values[middle], values[middle + ONE], values[middle + np.uintp(2)],
        values[bottom], values[bottom + ONE], values[bottom + np.uintp(2)],
    )  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _fused_output(p, kernels, u, dt):
    """Filter ``u``'s output of a fused first layer (``_fused``) at the 9 pixels ``p``: their products with its
    weights in ``kernels`` (``_side_by_side``) summed in the kernel's order, then its bias, then relu."""
    total = p[0] * kernels[u] + p[1] * kernels[COLUMN + u]
    total += p[2] * kernels[np.uintp(2) * COLUMN + u]
    total += p[3] * kernels[np.uintp(3) * COLUMN + u]
    total += p[4] * kernels[np.uintp(4) * COLUMN + u]
    total += p[5] * kernels[np.uintp(5) * COLUMN + u]
    total += p[6] * kernels[np.uintp(6) * COLUMN + u]
    total += p[7] * kernels[np.uintp(7) * COLUMN + u]
    total += p[8] * kernels[np.uintp(8) * COLUMN + u]
    total += kernels[np.uintp(9) * COLUMN + u]
    return activation(total, ActivationCode.RELU, dt)


@njit(**NUMBA_INLINED_OPTIONS)
def _two_by_two(pool):
    """Whether a pooling's windows (its geometry ``pool``) are 2x2 at a stride of 2: each the outputs of one tile
    of a fused first layer computed by Winograd's F(2x2, 3x3) (``_winograd_conv_pool_row``)."""
    return (
        pool[Geometry.KERNEL_H] == 2 and pool[Geometry.KERNEL_W] == 2 and pool[Geometry.STRIDE_H] == 2
        and pool[Geometry.STRIDE_W] == 2
    )  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _winograd_side_by_side(weights, start, units, columns, dt):
    """A fused convolution's kernels ``(units, 10)`` at ``weights[start:]`` as Winograd's ``G g G^T``
    (``_winograd_kernel``) side by side: element ``i`` of filter ``u``'s at ``columns[i * COLUMN + u]``, its
    bias at ``columns[16 * COLUMN + u]``."""
    start, units = np.uintp(start), np.uintp(units)
    for u in range(units):
        _winograd_kernel(weights, start + u * np.uintp(10), ONE, columns, u, COLUMN, dt)
        columns[np.uintp(16) * COLUMN + u] = weights[start + u * np.uintp(10) + np.uintp(9)]


@njit(**NUMBA_OPTIONS)
def _winograd_conv_pool_row(values, image, in_w, pooled, places, pool, winograd, units):
    """``_conv_pool_row`` for 2x2 windows at a stride of 2 (``_two_by_two``), as the Cython kernel's: each
    window one tile of Winograd's F(2x2, 3x3), its 4x4 pixels transformed once, then for all the filters their
    16 products with the filters' transforms ``winograd`` (``_winograd_side_by_side``) transformed back, the
    four compared, and relu taken once, of the largest (``winograd_pool``).  Relu keeps the order, so the
    largest is the same value as ``_conv_pool_row``'s; only where all four are at most zero can its place differ
    (the first of the four before relu, not the first zero), and there the gradient multiplies by relu's zero
    slope, so the pixels it picks add zeros either way."""
    out_h, out_w = pool[Geometry.OUT_H], pool[Geometry.OUT_W]
    image, in_w, pooled, places = np.uintp(image), np.uintp(in_w), np.uintp(pooled), np.uintp(places)
    units, two = np.uintp(units), np.uintp(2)
    for oy in range(out_h):
        for ox in range(out_w):
            to = (oy * out_w + ox) * units
            winograd_pool(
                values, image + two * (oy * in_w + ox), in_w, pooled + to, places + to, winograd, units, COLUMN
            )


@njit(**NUMBA_OPTIONS)
def _conv_pool_row(values, image, in_w, pooled, places, pool, kernels, units, where, dt):
    """One row's fused first layer (``_fused``) and its pooling: each output of the convolution that the
    pooling ``pool`` reads (``_fused_output``, of the one-channel image at ``values[image:]``, ``in_w`` wide)
    is compared with its window's largest; the window's largest into ``values[pooled:]`` and where in the
    window it is (``dy * kernel_w + dx``, the first largest) into ``values[places:]``, as a float, which
    selects beside the values without widening; one output at a time for all the filters, the places so far
    kept in ``where`` until the window is done (LLVM cannot tell two stores into ``values`` apart in a loop
    that also loads from it, and leaves it scalar).  2x2 windows at a stride of 2 go through
    ``_winograd_conv_pool_row`` instead.  The convolution's own outputs are not stored: nothing reads them."""
    _, _, _, out_h, out_w, pool_h, pool_w, stride_h, stride_w, _, _, _ = _window(pool)
    image, in_w, pooled, places = np.uintp(image), np.uintp(in_w), np.uintp(pooled), np.uintp(places)
    units = np.uintp(units)
    for oy in range(out_h):
        for ox in range(out_w):
            to = (oy * out_w + ox) * units
            for dy in range(pool_h):
                for dx in range(pool_w):
                    p = _nine_pixels(values, image, in_w, oy * stride_h + dy, ox * stride_w + dx)
                    place = dt(dy * pool_w + dx)
                    first = dy == 0 and dx == 0
                    for u in range(units):  # the filters side by side: it vectorises
                        value, best = _fused_output(p, kernels, u, dt), values[pooled + to + u]
                        better = first or value > best
                        values[pooled + to + u] = value if better else best
                        where[u] = place if better else where[u]
            for u in range(units):
                values[places + to + u] = where[u]


@njit(**NUMBA_OPTIONS)
def _fused_gradient_row(values, image, in_w, places, errors, at, pool, units, sums, picked, dt):
    """One row's share of a fused first layer's gradient (``_fused``), added into ``sums`` (columns, as
    ``_side_by_side`` lays out the weights): each pooling window's error of each filter (its ``pool``'s errors
    at ``errors[at:]``) times the 9 pixels of the image at ``values[image:]`` under the window's maximum
    (at its place in ``values[places:]``, as ``_conv_pool_row`` writes it), picked into ``picked`` by a
    select, and the error into the bias's sum; the filters side by side.  A zero error adds zeros, which leave
    a sum as it is, so the sums are those of adding one error at a time.  2x2 windows at a stride of 2
    (``_two_by_two``) go to ``fused_gradient``, which keeps the sums in registers."""
    _, _, _, out_h, out_w, pool_h, pool_w, stride_h, stride_w, _, _, _ = _window(pool)
    if _two_by_two(pool):
        fused_gradient(values, image, in_w, places, errors, at, out_h, out_w, units, sums, COLUMN)
        return
    image, in_w, places, at = np.uintp(image), np.uintp(in_w), np.uintp(places), np.uintp(at)
    units = np.uintp(units)
    for oy in range(out_h):
        for ox in range(out_w):
            to = (oy * out_w + ox) * units
            for dy in range(pool_h):
                for dx in range(pool_w):
                    p0, p1, p2, p3, p4, p5, p6, p7, p8 = _nine_pixels(
                        values, image, in_w, oy * stride_h + dy, ox * stride_w + dx
                    )
                    place = dt(dy * pool_w + dx)
                    for u in range(units):  # selects, not branches: it vectorises
                        won_here = values[places + to + u] == place
                        picked[u] = p0 if won_here else picked[u]
                        picked[COLUMN + u] = p1 if won_here else picked[COLUMN + u]
                        picked[np.uintp(2) * COLUMN + u] = p2 if won_here else picked[np.uintp(2) * COLUMN + u]
                        picked[np.uintp(3) * COLUMN + u] = p3 if won_here else picked[np.uintp(3) * COLUMN + u]
                        picked[np.uintp(4) * COLUMN + u] = p4 if won_here else picked[np.uintp(4) * COLUMN + u]
                        picked[np.uintp(5) * COLUMN + u] = p5 if won_here else picked[np.uintp(5) * COLUMN + u]
                        picked[np.uintp(6) * COLUMN + u] = p6 if won_here else picked[np.uintp(6) * COLUMN + u]
                        picked[np.uintp(7) * COLUMN + u] = p7 if won_here else picked[np.uintp(7) * COLUMN + u]
                        picked[np.uintp(8) * COLUMN + u] = p8 if won_here else picked[np.uintp(8) * COLUMN + u]
            for u in range(units):
                error = errors[at + to + u]
                sums[u] += error * picked[u]
                sums[COLUMN + u] += error * picked[COLUMN + u]
                sums[np.uintp(2) * COLUMN + u] += error * picked[np.uintp(2) * COLUMN + u]
                sums[np.uintp(3) * COLUMN + u] += error * picked[np.uintp(3) * COLUMN + u]
                sums[np.uintp(4) * COLUMN + u] += error * picked[np.uintp(4) * COLUMN + u]
                sums[np.uintp(5) * COLUMN + u] += error * picked[np.uintp(5) * COLUMN + u]
                sums[np.uintp(6) * COLUMN + u] += error * picked[np.uintp(6) * COLUMN + u]
                sums[np.uintp(7) * COLUMN + u] += error * picked[np.uintp(7) * COLUMN + u]
                sums[np.uintp(8) * COLUMN + u] += error * picked[np.uintp(8) * COLUMN + u]
                sums[np.uintp(9) * COLUMN + u] += error  # the bias's input is 1: error * 1 is error exactly


@njit(**NUMBA_OPTIONS)
def _gather_windows(values, start, g, region, patches):
    """One row's image at ``values[start:]`` as the windows of its convolution's outputs in ``region`` (rows,
    columns), a ``(positions, fan_in + 1)`` matrix in ``patches``: each window's values in ``(kernel row,
    kernel column, channel)`` order, zero where it overhangs the image, then a one."""
    in_h, in_w, in_c, _, _, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, fan_in = _window(g)
    out_h, out_w = region
    start, width, run = np.uintp(start), fan_in + ONE, kernel_w * in_c
    for oy in range(out_h):
        for ox in range(out_w):
            window = (oy * out_w + ox) * width
            x0 = ox * stride_w - pad_left
            inside = x0 < in_w and x0 + kernel_w <= in_w  # the window's rows lie wholly inside (x0 >= 0 unsigned)
            for ky in range(kernel_h):
                y = oy * stride_h + ky - pad_top
                to = window + ky * run
                if y < in_h and inside:  # the kernel row's values are contiguous in the image
                    source = start + (y * in_w + x0) * in_c
                    for i in range(run):
                        patches[to + i] = values[source + i]
                    continue
                for kx in range(kernel_w):
                    x = x0 + kx
                    if y < in_h and x < in_w:
                        source = start + (y * in_w + x) * in_c
                        for c in range(in_c):
                            patches[to + kx * in_c + c] = values[source + c]
                    else:
                        for c in range(in_c):
                            patches[to + kx * in_c + c] = 0.0
            patches[window + fan_in] = 1.0


@njit(**NUMBA_OPTIONS)
def _scatter_windows(patch_errors, g, below, start):
    """The reverse of ``_gather_windows``: each window's errors ``(positions, fan_in)`` added into the image
    at ``below[start:]`` where the window reads it, windows in order."""
    in_h, in_w, in_c, out_h, out_w, _, _, _, _, _, _, fan_in = _window(g)
    below[start : start + in_h * in_w * in_c] = 0.0
    starts, ones = np.empty(1, dtype=np.uintp), np.ones(1, dtype=below.dtype)
    for oy in range(out_h):
        for ox in range(out_w):
            starts[0] = (oy * out_w + ox) * fan_in
            _add_window(below, start, g, oy, ox, patch_errors, starts, ones, 1)


@njit(**NUMBA_INLINED_OPTIONS)
def _few_nonzero_errors(net, k, errors, n):
    """Whether dense layer ``k``'s backward pass adds its nonzero errors' terms alone (``_dense_backward_by_terms``)
    instead of the gemms' every product: a relu layer's ``n`` errors of the chunk, of which at most one in
    ``TERMS_ERRORS_PER_NONZERO`` is not zero (relu's slope is zero wherever a unit is off, and dropout above
    zeroes more).  The chunk's errors decide, whichever thread computes it."""
    if net.activations[k] != ActivationCode.RELU:
        return False
    nonzero = 0
    for i in range(n):  # counted without a branch
        nonzero += errors[i] != 0.0
    return nonzero * TERMS_ERRORS_PER_NONZERO <= n


@njit(**NUMBA_OPTIONS)
def _dense_backward_by_terms(errors, values, inputs, n_rows, units, fan_in, weights, grad, w_off, below, passing_down):
    """A dense layer's gradient for the chunk's ``errors`` written into ``grad[w_off:]`` and, if ``passing_down``,
    the errors passed down into ``below``, by the nonzero errors' terms alone (``_add_nonzero_terms``): a unit's
    gradient by the rows' inputs (``values[inputs:]``, a bias's 1.0 after each row's) in the rows' order, a row's
    errors passed down by the units' weights in the units' order, as the Cython backend sums them.  Both go over
    the inputs in blocks of ``_terms_columns``, the same sums."""
    width, columns = fan_in + 1, _terms_columns(units, n_rows, weights.itemsize)
    scales = np.empty(TERMS_BLOCK, dtype=weights.dtype)
    starts = np.empty(TERMS_BLOCK, dtype=np.uintp)
    for start in range(0, width, columns):
        for j in range(units):
            _add_nonzero_terms(grad, w_off + j * width + start, min(columns, width - start), errors, j, units, n_rows,
                               values, inputs, width, start, scales, starts)  # fmt: skip
    if not passing_down:
        return
    next_unit = np.intp(1)  # an intp, as the gradient's step from row to row
    for start in range(0, fan_in, columns):
        for s in range(n_rows):
            _add_nonzero_terms(below, s * fan_in + start, min(columns, fan_in - start), errors, s * units, next_unit,
                               units, weights, w_off, width, start, scales, starts)  # fmt: skip


@njit(**NUMBA_INLINED_OPTIONS)
def _add_nonzero_terms(to, at, n, errors, first_scale, scale_step, n_scales, rows, first_row, row_step, offset,
                       scales, starts):  # fmt: skip
    """``to[at + i] = sum of errors[first_scale + t * scale_step] * rows[first_row + t * row_step + offset + i]``
    for ``i < n``, from zero, over the ``t < n_scales`` whose error is not zero, in turn (``add_scaled``, in blocks
    of ``TERMS_BLOCK`` terms, listed in the scratch ``scales`` and ``starts``), as the Cython backend's."""
    for i in range(n):
        to[at + i] = 0.0
    for first in range(0, n_scales, TERMS_BLOCK):
        n_terms = 0
        for t in range(first, min(first + TERMS_BLOCK, n_scales)):  # listed without a branch
            scale = errors[first_scale + t * scale_step]
            scales[n_terms] = scale
            starts[n_terms] = first_row + t * row_step
            n_terms += scale != 0.0
        add_scaled(to, at, 0, rows, starts, offset, scales, n_terms, 0, 1, n)


@njit(**NUMBA_OPTIONS)
def _add_grouped(below, start, g, weights, filters, width, errors, winners, at, won, first, last, lists, scales):
    """Filters ``first`` to ``last - 1``'s errors at one pooling window (``errors[at:]``), each times its filter
    (rows ``width`` apart from ``weights[filters:]``), added into the image at ``below[start:]`` where the window's
    maximum (``winners[won:]``) reads it: the filters whose maximum is at the same place together, places in the
    order the filters first meet them (``GROUPED_FILTERS``), as the Cython backend sums them.  ``lists`` and
    ``scales`` are scratch: the filters left, and the group's filters' starts and errors."""
    left, starts = lists[0], lists[1]
    n_left = 0
    for c in range(first, last):  # the filters with an error, listed without a branch
        left[n_left] = c
        n_left += errors[at + c] != 0.0
    while n_left > 0:
        cell, n_rest, n_terms = winners[won + left[0]], 0, 0
        for i in range(n_left):  # those at the first one's place to the group, the others left
            c = left[i]
            same = winners[won + c] == cell
            starts[n_terms] = filters + c * width
            scales[n_terms] = errors[at + c]
            n_terms += same
            left[n_rest] = c
            n_rest += not same
        n_left = n_rest
        _add_window(below, start, g, cell >> ROW_SHIFT, cell & COLUMN_MASK, weights, starts, scales, n_terms)


@njit(**NUMBA_INLINED_OPTIONS)
def _add_window(below, start, g, oy, ox, kernels, starts, scales, n_terms):
    """Each of ``n_terms`` kernels (at ``kernels[starts[t]:]``) times its scale added into the image at
    ``below[start:]`` where output ``(oy, ox)``'s window reads it, kernels in turn (``add_scaled``): errors passed
    down to their inputs.  Where the window's columns lie inside the image, its rows inside it go at once, a row
    one stretch.  ``_scatter_windows`` passes a scale of ``1.0``: ``x * 1.0`` is ``x`` exactly."""
    in_h, in_w, in_c = g[Geometry.IN_H], g[Geometry.IN_W], g[Geometry.IN_C]  # signed: rows may start above
    kernel_h, kernel_w = g[Geometry.KERNEL_H], g[Geometry.KERNEL_W]
    stretch, image_row = kernel_w * in_c, in_w * in_c
    left = np.intp(ox) * g[Geometry.STRIDE_W] - g[Geometry.PAD_LEFT]
    top = np.intp(oy) * g[Geometry.STRIDE_H] - g[Geometry.PAD_TOP]
    first, last = max(0, -top), min(kernel_h, in_h - top)  # the kernel rows inside
    if first >= last:
        return
    if left >= 0 and left + kernel_w <= in_w:
        add_scaled(below, start + ((top + first) * in_w + left) * in_c, image_row, kernels, starts, first * stretch,
                   scales, n_terms, stretch, last - first, stretch)  # fmt: skip
        return
    for kx in range(kernel_w):
        x = left + kx
        if 0 <= x < in_w:
            add_scaled(below, start + ((top + first) * in_w + x) * in_c, image_row, kernels, starts,
                       first * stretch + kx * in_c, scales, n_terms, stretch, last - first, in_c)  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _pool(values, source, in_w, out, g, winners, at, cells, training):
    """One row's max pooling: from the image at ``values[source:]``, ``in_w`` values wide, into
    ``values[out:]``, and, in ``training`` (nothing reads them after a prediction), where in the image each
    maximum is into ``winners[at:]`` (the first one, scanning each window's rows then columns): its index, or,
    where ``cells`` (the image is a pooled convolution's outputs), its row and column as ``y << CELL_SHIFT | x``,
    which the convolution's backward pass reads without dividing an index.  A 2x2 window at a stride of 2
    (``_two_by_two``) is compared in registers, its largest stored once, as the Cython kernel's."""
    _, _, channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, _, _, _ = _window(g)
    source, in_w, out, at = np.uintp(source), np.uintp(in_w), np.uintp(out), np.uintp(at)
    if _two_by_two(g):
        two = np.uintp(2)
        dt = values.dtype.type
        zero, one = dt(0.0), dt(1.0)
        rows, columns = np.empty(channels, values.dtype), np.empty(channels, values.dtype)
        for oy in range(out_h):
            for ox in range(out_w):
                to = (oy * out_w + ox) * channels
                corner = (two * oy * in_w + two * ox) * channels
                top, bottom = source + corner, source + corner + in_w * channels
                for c in range(channels):  # the places as floats until the window is done: it vectorises
                    best, row, column = values[top + c], zero, zero
                    value = values[top + channels + c]
                    better = value > best
                    best, column = (value, one) if better else (best, column)
                    value = values[bottom + c]
                    better = value > best
                    best, row, column = (value, one, zero) if better else (best, row, column)
                    value = values[bottom + channels + c]
                    better = value > best
                    best, row, column = (value, one, one) if better else (best, row, column)
                    values[out + to + c] = best
                    rows[c], columns[c] = row, column
                if training:
                    cell = (two * oy) << ROW_SHIFT | (two * ox)
                    for c in range(channels):
                        row, column = np.uintp(rows[c]), np.uintp(columns[c])
                        winners[at + to + c] = (
                            cell + (row << ROW_SHIFT) + column
                            if cells
                            else corner + (row * in_w + column) * channels + c
                        )
        return
    for oy in range(out_h):
        for ox in range(out_w):
            to = (oy * out_w + ox) * channels
            corner = ((oy * stride_h) * in_w + ox * stride_w) * channels
            for dy in range(kernel_h):
                for dx in range(kernel_w):
                    place = corner + (dy * in_w + dx) * channels
                    cell = (oy * stride_h + dy) << ROW_SHIFT | (ox * stride_w + dx)
                    first = dy == 0 and dx == 0
                    for c in range(channels):  # contiguous, and selects rather than branches: it vectorises
                        value, best = values[source + place + c], values[out + to + c]
                        better = first or value > best
                        values[out + to + c] = value if better else best
                        if training:
                            mark = cell if cells else place + c
                            winners[at + to + c] = mark if better else winners[at + to + c]


# A layer's passes are compiled on their own rather than inlined: called once per layer and chunk, the call costs
# nothing, and training on one thread or several, the gradient and prediction share one compilation of each
# (inlined, every caller compiled copies of its own, most of the layered kernels' first compilation).
@njit(**NUMBA_OPTIONS)
def _forward(net, weights, k, chunk, scratch, slot, training):
    """Layer ``k``'s values for the ``chunk`` ``(rows, seed, step)`` (its data rows, the dropout seed and the
    update's number), from the layer below's; ``training`` applies dropout."""
    dt = weights.dtype.type
    values_all, v_off, _, patches_all, _, products_all, blas_ints, blas_floats, winners_all, win_off = scratch[:10]
    winograd, u_off, transformed = scratch[10:13]
    values, patches, products, winners = values_all[slot], patches_all[slot], products_all[slot], winners_all[slot]
    blas = (blas_ints[slot], blas_floats[slot])
    rows, seed, step = chunk
    n_rows = rows.shape[0]
    n_in, n_out, code, kind = net.sizes[k], net.sizes[k + 1], net.activations[k], net.kinds[k]
    g = net.geometry[k]
    inputs, outputs = v_off[k], v_off[k + 1]
    if _pooled_with_the_first(net, k):  # computed with the convolution below
        return
    if _fused(net, k):
        units, n_pooled, pooled, pool = g[Geometry.UNITS], net.sizes[k + 2], v_off[k + 2], net.geometry[k + 1]
        by_winograd = _two_by_two(pool)
        kernels = np.empty((17 if by_winograd else 10) * FUSED_MAX_UNITS, dtype=weights.dtype)
        where = np.empty(FUSED_MAX_UNITS, dtype=weights.dtype)
        if by_winograd:
            _winograd_side_by_side(weights, net.w_off[k], units, kernels, dt)
        else:
            _side_by_side(weights, net.w_off[k], units, kernels)
        for s in range(n_rows):
            image, out, places = inputs + s * (n_in + 1), pooled + s * (n_pooled + 1), outputs + s * (n_out + 1)
            if by_winograd:
                _winograd_conv_pool_row(values, image, g[Geometry.IN_W], out, places, pool, kernels, units)
            else:
                _conv_pool_row(values, image, g[Geometry.IN_W], out, places, pool, kernels, units, where, dt)
            values[out + n_pooled] = 1.0
        return
    if kind == LayerKindCode.DENSE or kind == LayerKindCode.CONV2D:
        units, width = g[Geometry.UNITS], g[Geometry.FAN_IN] + 1
        layer = (weights, net.w_off[k], width)
        region = _region(net, k)
        positions = region[0] * region[1]
        n_computed = positions * units if kind == LayerKindCode.CONV2D else n_out
        if kind == LayerKindCode.DENSE:  # the products transposed, (units, rows): BLAS's faster form of this product
            gemm(AS_IS, layer, TRANSPOSED, (values, inputs, n_in + 1), (products, START, n_rows), 0.0,
                 (units, n_rows, width), blas)  # fmt: skip
        by_winograd = _winograd(net, k)
        if by_winograd:
            _winograd_products(
                net, k, weights, transformed, u_off[k], values, inputs, n_rows, winograd[slot], products, blas
            )
        for s in range(n_rows):
            out = outputs + s * (n_out + 1)
            if kind == LayerKindCode.DENSE:  # the row's sums from their column, activated where they land
                for j in range(n_out):
                    values[out + j] = products[j * n_rows + s]
                activate_row(values, out, values, out, n_computed, code, dt)
            else:
                if not by_winograd:
                    _gather_windows(values, inputs + s * (n_in + 1), g, region, patches)
                    gemm(AS_IS, (patches, START, width), TRANSPOSED, layer, (products, s * n_out, units), 0.0,
                         (np.intp(positions), units, width), blas)  # fmt: skip
                activate_row(products, s * n_out, values, out, n_computed, code, dt)
            if code == ActivationCode.SOFTMAX:
                softmax(values, out, n_out, dt)
            values[out + n_out] = 1.0
        return
    for s in range(n_rows):
        source, out = inputs + s * (n_in + 1), outputs + s * (n_out + 1)
        if kind == LayerKindCode.MAX_POOL2D:
            cells = k > 0 and _pooled(net, k - 1)
            in_w = g[Geometry.OUT_W] * g[Geometry.KERNEL_W] if cells else g[Geometry.IN_W]
            _pool(values, source, in_w, out, g, winners, win_off[k] + s * n_out, cells, training)
        elif kind == LayerKindCode.DROPOUT and training and net.dropout[k] > 0.0:
            rate, scale = net.dropout[k], dt(1.0 / (1.0 - net.dropout[k]))
            stream = _row_stream(seed, step, rows[s])
            # Each value loaded before its draw is tested: a select (under the test, LLVM branches on the draw).
            for j in range(n_out):
                kept = values[source + j] * scale
                values[out + j] = kept if _dropout_draw(stream, net.o_off[k] + j) >= rate else dt(0.0)
        else:  # flatten, and dropout outside training: the values as they are
            for j in range(n_out):
                values[out + j] = values[source + j]
        values[out + n_out] = 1.0


@njit(**NUMBA_OPTIONS)
def _backward(net, weights, k, chunk, scratch, slot, grad, side):
    """Layer ``k``'s gradient into ``grad`` (a dense layer's written, the others' added), and, but for the first
    layer, the error signals of the layer below into the other side of the errors, from the layer's own at
    ``side``."""
    dt = weights.dtype.type
    values_all, v_off, errors_all, patches_all, patch_errors_all, products_all, blas_ints, blas_floats, winners_all = (
        scratch[:9]
    )
    win_off = scratch[9]
    values, patches, patch_errors, products, winners = (
        values_all[slot],
        patches_all[slot],
        patch_errors_all[slot],
        products_all[slot],
        winners_all[slot],
    )
    errors, below = errors_all[slot, side], errors_all[slot, 1 - side]
    blas = (blas_ints[slot], blas_floats[slot])
    rows, seed, step = chunk
    n_rows = rows.shape[0]
    n_in, n_out, kind = net.sizes[k], net.sizes[k + 1], net.kinds[k]
    g = net.geometry[k]
    inputs, outputs = v_off[k], v_off[k + 1]
    pooling_a_convolution = kind == LayerKindCode.MAX_POOL2D and k > 0 and _pooled(net, k - 1)
    if kind == LayerKindCode.DENSE or kind == LayerKindCode.CONV2D:
        units, fan_in = g[Geometry.UNITS], g[Geometry.FAN_IN]
        layer, layer_grad = (weights, net.w_off[k], fan_in + 1), (grad, net.w_off[k], fan_in + 1)
        if kind == LayerKindCode.DENSE and _few_nonzero_errors(net, k, errors, n_rows * units):
            _dense_backward_by_terms(errors, values, inputs, n_rows, units, fan_in, weights, grad, net.w_off[k],
                                     below, k > 0)  # fmt: skip
        elif kind == LayerKindCode.DENSE:
            gemm(TRANSPOSED, (errors, START, units), AS_IS, (values, inputs, n_in + 1), layer_grad, 0.0,
                 (units, fan_in + 1, n_rows), blas)  # fmt: skip
            if k > 0:  # transposed, (inputs, rows), in the forward pass's products: BLAS's faster form
                gemm(TRANSPOSED, layer, TRANSPOSED, (errors, START, units), (products, START, n_rows), 0.0,
                     (n_in, n_rows, units), blas)  # fmt: skip
                for s in range(n_rows):
                    for i in range(n_in):
                        below[s * n_in + i] = products[i * n_rows + s]
        elif _fused(net, k):  # the filters side by side, in sums of their own (see ``_fused_gradient_row``)
            sums = np.empty(10 * FUSED_MAX_UNITS, dtype=weights.dtype)
            picked = np.empty(9 * FUSED_MAX_UNITS, dtype=weights.dtype)
            _side_by_side(grad, net.w_off[k], units, sums)
            n_pooled = net.sizes[k + 2]
            for s in range(n_rows):
                _fused_gradient_row(values, inputs + s * (n_in + 1), g[Geometry.IN_W], outputs + s * (n_out + 1),
                                    errors, s * n_pooled, net.geometry[k + 1], units, sums, picked, dt)  # fmt: skip
            _one_by_one(sums, units, grad, net.w_off[k])
        elif _pooled(net, k):  # errors only at the maxima the pooling above took (its ``below``)
            region = _region(net, k)
            n_pooled, width, won = np.uintp(net.sizes[k + 2]), np.uintp(fan_in) + ONE, np.uintp(win_off[k + 1])
            units = np.uintp(units)
            # The filters and their gradient in rows of whole cache lines (``_scratch``'s ``filters``); the
            # gradient is copied back afterwards, the same sums.
            rows_of_lines = scratch[13][slot]
            line_width = np.uintp(_line_width(fan_in + 1, weights.itemsize))
            filters = _first_line(rows_of_lines)
            filter_grads, w_off = filters + units * line_width, np.uintp(net.w_off[k])
            _copy_rows(grad, w_off, width, rows_of_lines, filter_grads, line_width, units, width)
            if k > 0:
                _copy_rows(weights, w_off, width, rows_of_lines, filters, line_width, units, width)
            n_windows = n_pooled // units
            _, in_w, in_c, _, _, kernel_h, kernel_w, stride_h, stride_w, _, _, _ = _window(g)
            inside = _inside(g, region)
            stretch, row_step = kernel_w * in_c, in_w * in_c
            lists = np.empty((2, GROUPED_FILTERS), dtype=np.uintp)
            scales = np.empty(max(GROUPED_FILTERS, TERMS_BLOCK), dtype=weights.dtype)
            starts, zeros = np.empty(TERMS_BLOCK, dtype=np.uintp), np.zeros(TERMS_BLOCK, dtype=np.uintp)
            ones = np.ones(1, dtype=weights.dtype)
            to_the_first = _to_the_first(net, k)
            if to_the_first:  # the first layer's gradient side by side (see ``_fused_gradient_row``)
                first_units = net.geometry[0, Geometry.UNITS]
                sums = np.empty(10 * FUSED_MAX_UNITS, dtype=weights.dtype)
                picked = np.empty(9 * FUSED_MAX_UNITS, dtype=weights.dtype)
                _side_by_side(grad, net.w_off[0], first_units, sums)
            for s in range(n_rows):
                image = np.uintp(inputs + s * (n_in + 1))
                if not inside:
                    _gather_windows(values, np.intp(image), g, region, patches)  # an intp, as the forward pass's
                row = np.uintp(s) * n_pooled
                row_below = 0 if to_the_first else s * n_in  # then one row's scratch for every row
                if k > 0:  # each window's errors times their filters into its inputs, windows in order
                    below[row_below : row_below + n_in] = 0.0
                    for window in range(n_windows):
                        for first in range(np.uintp(0), units, np.uintp(GROUPED_FILTERS)):
                            _add_grouped(below, row_below, g, rows_of_lines, filters, line_width, errors, winners,
                                         row + window * units, won + row + window * units, first,
                                         min(first + np.uintp(GROUPED_FILTERS), units), lists, scales)  # fmt: skip
                if to_the_first:  # the pooling's and the first layer's passes, this row's share
                    derive_row(below, row_below, below, row_below, values, inputs + s * (n_in + 1), n_in,
                               net.activations[0], dt)  # fmt: skip
                    _fused_gradient_row(values, v_off[0] + s * (net.sizes[0] + 1), net.geometry[0, Geometry.IN_W],
                                        v_off[1] + s * (net.sizes[1] + 1), below, row_below, net.geometry[1],
                                        first_units, sums, picked, dt)  # fmt: skip
                # Each error times its window into its filter's gradient: many windows' errors for one filter at
                # a time, in the windows' order, so that each sum is loaded and stored once for them all.
                block = np.uintp(TERMS_BLOCK)  # unsigned, as the indexes below
                for first in range(np.uintp(0), n_windows, block):
                    for c in range(units):
                        n_terms = 0
                        for window in range(first, min(first + block, n_windows)):  # no branch
                            j = row + window * units + c
                            y, x = winners[won + j] >> ROW_SHIFT, winners[won + j] & COLUMN_MASK
                            scales[n_terms] = errors[j]
                            if inside:
                                starts[n_terms] = image + (y * stride_h * in_w + x * stride_w) * in_c
                            else:
                                starts[n_terms] = (y * region[1] + x) * width
                            n_terms += errors[j] != 0.0  # the zero errors' terms overwritten, or left
                        at = filter_grads + c * line_width
                        if inside:
                            add_scaled(rows_of_lines, at, stretch, values, starts, 0, scales, n_terms, row_step,
                                       kernel_h, stretch)  # fmt: skip
                            add_scaled(rows_of_lines, at + fan_in, 0, ones, zeros, 0, scales, n_terms, 0, 1, 1)
                        else:
                            add_scaled(rows_of_lines, at, 0, patches, starts, 0, scales, n_terms, 0, 1, width)
            _copy_rows(rows_of_lines, filter_grads, line_width, grad, w_off, width, units, width)
            if to_the_first:
                _one_by_one(sums, first_units, grad, net.w_off[0])
        else:
            positions = g[Geometry.OUT_H] * g[Geometry.OUT_W]
            for s in range(n_rows):
                _gather_windows(values, inputs + s * (n_in + 1), g, _region(net, k), patches)
                gemm(TRANSPOSED, (errors, s * n_out, units), AS_IS, (patches, START, fan_in + 1), layer_grad, 1.0,
                     (units, fan_in + 1, positions), blas)  # fmt: skip
                if k > 0:
                    gemm(AS_IS, (errors, s * n_out, units), AS_IS, layer, (patch_errors, START, fan_in), 0.0,
                         (positions, fan_in, units), blas)  # fmt: skip
                    _scatter_windows(patch_errors, g, below, s * n_in)
    elif pooling_a_convolution:  # each error as the convolution's at its window's maximum (see above)
        for s in range(n_rows):
            derive_row(below, s * n_out, errors, s * n_out, values, outputs + s * (n_out + 1), n_out,
                       net.activations[k - 1], dt)  # fmt: skip
    elif k > 0:
        for s in range(n_rows):
            at = s * n_in
            if kind == LayerKindCode.MAX_POOL2D:  # each error to its window's maximum
                below[at : at + n_in] = 0.0
                won = win_off[k] + s * n_out
                for j in range(n_out):
                    below[at + winners[won + j]] += errors[s * n_out + j]
            elif kind == LayerKindCode.DROPOUT and net.dropout[k] > 0.0:
                rate, scale = net.dropout[k], dt(1.0 / (1.0 - net.dropout[k]))
                stream = _row_stream(seed, step, rows[s])
                for j in range(n_out):  # a select, as the forward pass's
                    kept = errors[s * n_out + j] * scale
                    below[at + j] = kept if _dropout_draw(stream, net.o_off[k] + j) >= rate else dt(0.0)
            else:
                for j in range(n_out):
                    below[at + j] = errors[s * n_out + j]
    if k > 0 and net.activations[k - 1] != ActivationCode.IDENTITY and not pooling_a_convolution:
        for s in range(n_rows):
            derive_row(below, s * n_in, below, s * n_in, values, inputs + s * (n_in + 1), n_in, net.activations[k - 1],
                       dt)  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _is_right(values, at, Y, r, n):
    """Whether a row's class is right, as ``Sequential``'s accuracy counts it: one unit's output
    ``values[at]`` on its target's side of 0.5, else the (first) largest output where the target's (first)
    largest is."""
    if n == 1:
        return (values[at] > 0.5) == (Y[r, 0] > 0.5)
    guess, truth = 0, 0
    for j in range(1, n):
        if values[at + j] > values[at + guess]:
            guess = j
        if Y[r, j] > Y[r, truth]:
            truth = j
    return guess == truth


@njit(**NUMBA_OPTIONS)
def _chunk_gradient(net, weights, data, chunk, batch_rows, scratch, slot, grad):
    """The chunk's share of the batch's mean gradient, into ``grad`` (overwritten); returns its weighted loss
    and how many of its rows the forward pass classed right (``_is_right``).

    ``batch_rows`` is the whole batch's row count, which the mean divides by.
    """
    dt = weights.dtype.type
    X, Y, sample_weight = data.X, data.Y, data.sample_weight
    values, v_off, errors = scratch[0][slot], scratch[1], scratch[2][slot]
    rows = chunk[0]
    n_layers = net.sizes.shape[0] - 1
    n_features, n_outputs = net.sizes[0], net.sizes[n_layers]
    for s in range(rows.shape[0]):
        copy_values(X[rows[s]], values, s * (n_features + 1), n_features)
        values[(s + 1) * (n_features + 1) - 1] = 1.0
    for k in range(n_layers):
        _forward(net, weights, k, chunk, scratch, slot, TRAINING)
    code = net.activations[n_layers - 1]
    outputs = v_off[n_layers]
    side = np.intp(0)  # not a literal 0: _backward compiles once, for any side
    chunk_loss = dt(0.0)
    n_right = 0
    for s in range(rows.shape[0]):
        r = rows[s]
        row_loss = dt(0.0)
        scale = sample_weight[r] / dt(batch_rows)
        for j in range(n_outputs):
            loss, delta = output_error(values[outputs + s * (n_outputs + 1) + j], Y[r, j], code, net.loss, dt)
            row_loss += loss
            errors[side, s * n_outputs + j] = delta * scale
        chunk_loss += sample_weight[r] * row_loss
        n_right += _is_right(values, outputs + s * (n_outputs + 1), Y, r, n_outputs)
    for k in range(n_layers):  # a dense layer's backward pass writes its gradient instead
        if net.kinds[k] != LayerKindCode.DENSE:
            grad[net.w_off[k] : net.w_off[k + 1]] = 0.0
    for k in range(n_layers - 1, -1, -1):
        _backward(net, weights, k, chunk, scratch, slot, grad, side)
        if _to_the_first(net, k):  # the layers below are done
            break
        side = 1 - side
    return chunk_loss, n_right


def _batch_tasks(net, weights, data, batch, per_chunk, scratch, chunk_grads, chunk_losses, chunk_rights, seed, step):
    """The gradients, losses and rows classed right of the chunks of ``per_chunk`` rows of ``batch`` (data rows),
    each into its own place; slot ``t`` (a thread's scratch) takes chunks ``t``, ``t + n_slots``, ..."""
    n_slots = scratch[0].shape[0]
    n_chunks = -(-batch.shape[0] // per_chunk)
    for slot in prange(min(n_slots, n_chunks)):
        kept = flush_subnormals()  # on each thread (see llvm.flush_subnormals)
        for c in range(slot, n_chunks, n_slots):
            first = c * per_chunk
            chunk = (batch[first : min(first + per_chunk, batch.shape[0])], seed, step)
            chunk_losses[c], chunk_rights[c] = _chunk_gradient(  # the slot as an intp in both compilations
                net, weights, data, chunk, batch.shape[0], scratch, np.intp(slot), chunk_grads[c]
            )
        restore_subnormals(kept)


# The one-thread chain's thin wrappers, ``_batch_chunks`` and ``_batch_gradient``, are inlined into their callers
# (see ``NUMBA_INLINED_OPTIONS``): compiled on their own, each cost 3 s of the first compilation.
_batch_chunks = njit(**NUMBA_INLINED_OPTIONS)(_batch_tasks)
_batch_chunks_on_threads = njit(parallel=True, **NUMBA_OPTIONS)(_variant(_batch_tasks, "_on_threads"))


@njit(**NUMBA_INLINED_OPTIONS)
def _batch_gradient(net, weights, data, batch, per_chunk, scratch, chunk_grads, chunk_losses, chunk_rights, seed, step):
    """The gradients of the batch's chunks (of ``per_chunk`` rows) into ``chunk_grads``; returns the batch's loss
    (the chunks' summed in chunk order) and how many of its rows the forward passes classed right."""
    _transform(net, weights, scratch)
    _batch_chunks(net, weights, data, batch, per_chunk, scratch, chunk_grads, chunk_losses, chunk_rights, seed, step)
    n_chunks = -(-batch.shape[0] // per_chunk)
    loss = chunk_losses[0]
    for c in range(1, n_chunks):
        loss += chunk_losses[c]
    return loss, chunk_rights[:n_chunks].sum()


@njit(**NUMBA_OPTIONS)
def _sum_chunks(chunk_grads, n_chunks, first, last):
    """Weights ``first`` to ``last`` of the chunks' gradients summed in chunk order into the first chunk's: the
    batch's mean gradient."""
    grad = chunk_grads[0]
    for c in range(1, n_chunks):
        chunk = chunk_grads[c]
        for i in range(np.uintp(first), np.uintp(last)):  # unsigned: no wrap-around checks, so it vectorises
            grad[i] += chunk[i]


def _step_tasks(net, weights, optimizer_state, schedule, rate, step, chunk_grads, n_chunks, n_ranges):
    """The batch's chunks' gradients summed and applied by the optimizer, the weights cut into ``n_ranges``
    ranges of whole rows (one per slot): each weight's sum and update are those of one thread, the same bits, and
    no thread waits idle while another steps the optimizer alone."""
    n_weights = weights.shape[0]
    for r in prange(n_ranges):
        kept = flush_subnormals()
        at = np.intp(r)  # prange's index is unsigned on threads
        first = row_start(net, at * n_weights // n_ranges)
        last = row_start(net, (at + 1) * n_weights // n_ranges)
        _sum_chunks(chunk_grads, n_chunks, first, last)
        optimizer_step_over(net, weights, chunk_grads[0], optimizer_state, schedule, rate, step, first, last)
        restore_subnormals(kept)


_step = njit(**NUMBA_OPTIONS)(_step_tasks)
_step_on_threads = njit(parallel=True, **NUMBA_OPTIONS)(_variant(_step_tasks, "_on_threads"))


@njit(**NUMBA_OPTIONS)
def layered_gradient(net, weights, data, schedule, rows, grad):
    """The mean gradient of the loss over rows ``data.X[rows]`` (one batch, update ``steps_done + 1`` of
    ``schedule.seed``'s dropout) into ``grad``; returns their weighted loss sum."""
    per_chunk = _chunk_rows(rows.shape[0])
    scratch = _scratch(net, ONE_SLOT, per_chunk, weights.dtype)
    n_chunks = -(-rows.shape[0] // per_chunk)
    chunk_grads = np.empty((n_chunks, weights.shape[0]), dtype=weights.dtype)
    chunk_losses = np.empty(n_chunks, dtype=weights.dtype)
    chunk_rights = np.empty(n_chunks, dtype=np.intp)
    step = schedule.steps_done + 1
    kept = flush_subnormals()
    loss, _ = _batch_gradient(
        net, weights, data, rows, per_chunk, scratch, chunk_grads, chunk_losses, chunk_rights, schedule.seed, step
    )
    _sum_chunks(chunk_grads, n_chunks, np.intp(0), weights.shape[0])
    restore_subnormals(kept)
    grad[:] = chunk_grads[0]
    return loss


def _train(net, weights, optimizer_state, data, schedule, history, right, n_slots):
    """Mini-batch training for ``len(history)`` epochs, the chunks of each batch and then its step shared by
    ``n_slots`` threads; each epoch's loss into ``history``, its rows classed right into ``right``."""
    orders = schedule.orders
    n_rows = orders.shape[1]
    batch_size = min(schedule.batch_size, n_rows)
    # Chunks of the schedule's batch size's rows, even where this call's rows are fewer (the last part of an epoch
    # that the Python layer runs in parts): the same chunks as in one call.
    per_chunk = _chunk_rows(schedule.batch_size)
    n_chunks = -(-batch_size // per_chunk)
    n_slots = min(n_slots, n_chunks)
    scratch = _scratch(net, n_slots, per_chunk, weights.dtype)
    chunk_grads = np.empty((n_chunks, weights.shape[0]), dtype=weights.dtype)
    chunk_losses = np.empty(n_chunks, dtype=weights.dtype)
    chunk_rights = np.empty(n_chunks, dtype=np.intp)
    step = schedule.steps_done
    kept = flush_subnormals()
    for epoch in range(history.shape[0]):
        order = orders[epoch % orders.shape[0]]
        epoch_loss, epoch_right = 0.0, 0
        for start in range(0, n_rows, batch_size):
            batch = order[start : min(start + batch_size, n_rows)]
            step += 1
            loss, n_right = _batch_gradient(net, weights, data, batch, per_chunk, scratch, chunk_grads, chunk_losses,
                                            chunk_rights, schedule.seed, step)  # fmt: skip
            epoch_loss += loss
            epoch_right += n_right
            _step(net, weights, optimizer_state, schedule, schedule.rates[epoch], step, chunk_grads,
                  -(-batch.shape[0] // per_chunk), n_slots)  # fmt: skip
        history[epoch] = epoch_loss
        right[epoch] = epoch_right
    restore_subnormals(kept)


_train_on_one_thread = njit(**NUMBA_OPTIONS)(_train)
_train_on_threads = njit(**NUMBA_OPTIONS)(
    _variant(
        _train,
        "_on_threads",
        _batch_gradient=njit(**NUMBA_INLINED_OPTIONS)(
            _variant(_batch_gradient.py_func, "_on_threads", _batch_chunks=_batch_chunks_on_threads)
        ),
        _step=_step_on_threads,
    )
)


def train_layered(net, weights, optimizer_state, data, schedule, history, right, n_threads):
    """Mini-batch training of a layered network for ``len(history)`` epochs on up to ``n_threads`` threads
    (at most MAX_THREADS), each with a slot of scratch; each epoch's rows classed right into ``right``."""
    if n_threads <= 1:
        _train_on_one_thread(net, weights, optimizer_state, data, schedule, history, right, 1)
    else:
        n_slots = min(n_threads, MAX_THREADS)
        on_threads(n_slots, _train_on_threads, net, weights, optimizer_state, data, schedule, history, right, n_slots)


@njit(**NUMBA_OPTIONS)
def predict_layered(net, weights, X, out):
    """The output layer's values for every row of ``X`` into ``out`` (dropout passes values on).

    Every chunk is a whole ``CHUNK_ROWS`` rows, the last one filled up with copies of
    its last row: BLAS rounds a product's rows alike only within products of one
    shape, so each row's outputs do not depend on the rows predicted with it (nor on
    how many threads share them).
    """
    scratch = _scratch(net, ONE_SLOT, np.intp(CHUNK_ROWS), weights.dtype)
    values, v_off = scratch[0][0], scratch[1]
    n_layers = net.sizes.shape[0] - 1
    n_features, n_outputs = net.sizes[0], net.sizes[n_layers]
    rows = np.empty(CHUNK_ROWS, dtype=np.intp)
    kept = flush_subnormals()
    _transform(net, weights, scratch)
    for first in range(0, X.shape[0], CHUNK_ROWS):
        real = min(CHUNK_ROWS, X.shape[0] - first)
        for s in range(CHUNK_ROWS):
            rows[s] = first + min(s, real - 1)
            copy_values(X[rows[s]], values, s * (n_features + 1), n_features)
            values[(s + 1) * (n_features + 1) - 1] = 1.0
        chunk = (rows, np.intp(0), np.intp(0))  # no dropout draws: seed and step unused
        for k in range(n_layers):
            _forward(net, weights, k, chunk, scratch, np.intp(0), PREDICTING)
        for s in range(real):
            at = v_off[n_layers] + s * (n_outputs + 1)
            out[first + s] = values[at : at + n_outputs]
    restore_subnormals(kept)


#: The compiled functions behind each kernel that is a Python function.
DISPATCHERS = {"train_layered": (_train_on_one_thread, _train_on_threads)}

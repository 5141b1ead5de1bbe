"""The numbers every backend's arithmetic shares, defined once.

The Numba kernels read them from here; the Cython extension's copies are generated
from this module when it is built (``setup.py``) and compared with it on import.
"""

import math
from enum import IntEnum

#: Slope of the leaky relu for negative activations (PyTorch's default).
LEAKY_SLOPE = 0.01
#: Probabilities are floored here inside the logarithm of the cross-entropy (a normal float32 too).
LOG_FLOOR = 1e-37

#: iRprop- constants, FANN's defaults (Igel & Huesken 2000; FANN's fann_create_standard).
RPROP_INCREASE = 1.2
RPROP_DECREASE = 0.5
RPROP_DELTA_MIN = 0.0
RPROP_DELTA_MAX = 50.0
RPROP_DELTA_ZERO = 0.1

#: The fast mode's weighted sums run in this many interleaved partial sums (one vector register of float64
#: on AVX-512, two on AVX2), from this many inputs up.
LANES = 8

#: fastbp's own exp, the sigmoid's in the fast mode (``_fast_exp`` in each backend): ``x = n ln2 + r`` with
#: ``n`` rounded by adding EXP_SHIFT (1.5 * 2**52), ``ln2`` in fdlibm's two parts (the high part's low bits
#: are zero, so ``n * EXP_LN2_HI`` is exact), and Taylor's coefficients ``1 / k!`` for ``exp(r)``.
EXP_LOG2E = 1.4426950408889634
EXP_SHIFT = 6755399441055744.0
EXP_LN2_HI = 0.6931471803691238
EXP_LN2_LO = 1.9082149292705877e-10
EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))

#: The mini-batch kernels split their matrix products into blocks of neurons, or of rows, which threads
#: share.  The block size depends on the batch's row count alone (:func:`block_size`), never on the
#: thread count, so results do not either.
SMALL_BLOCK = 32
LARGE_BLOCK = 64


def block_size(batch_rows):
    """Neurons or rows per block for a batch of ``batch_rows`` rows.

    Batches of up to 32 rows take blocks of 32, where BLAS's small-matrix kernels
    are fastest; larger batches take blocks of 64, since every product packs its
    operands again and wider blocks pack less often, while a layer of 128 neurons
    still has two blocks to share between threads.
    """
    return SMALL_BLOCK if batch_rows <= SMALL_BLOCK else LARGE_BLOCK


#: The layered kernels (networks with convolution, pooling or dropout) cut each batch into chunks of
#: :func:`chunk_rows` rows, whose gradients are summed in chunk order: the same sums whichever thread computes each
#: chunk.  They predict in chunks of ``CHUNK_ROWS``.
CHUNK_ROWS = 16
LARGE_CHUNK_ROWS = 32


def chunk_rows(batch_rows):
    """Rows per chunk of a layered network's batches of ``batch_rows`` rows (the last, shorter batch of an epoch
    is cut alike).

    Each chunk costs work of its own whatever its rows: its gradient written (a dense layer's by its backward
    pass, the others' zeroed first) and summed into the batch's.  Batches of four large chunks or more take large
    ones, which halve that work; smaller batches take chunks of ``CHUNK_ROWS``, so that two threads, or four,
    still share them.  It depends on the batch's size alone, never on the thread count, so results do not either.
    """
    return LARGE_CHUNK_ROWS if batch_rows >= 4 * LARGE_CHUNK_ROWS else CHUNK_ROWS


#: Sparse rows predicted per forward pass of ``predict_sparse``: the chunk's row count sets the blocks of its
#: products, so both backends take the same.
PREDICT_CHUNK_ROWS = 64

#: Row-by-row prediction runs this many rows through each neuron at once: each row's sum in the order one row
#: alone takes (the same bits), the rows' sums side by side, so that they overlap where one row's additions wait
#: on each other, and each weight loaded once for them all.
PREDICT_ROWS = 4

#: The most filters of a first convolution that the layered kernels compute fused with its pooling (its
#: transposed weights, ten per filter, live on the stack of the Cython kernel; the notebook's layer has 32).
FUSED_MAX_UNITS = 64

#: A convolution computed by Winograd's F(2x2, 3x3) transforms this many rows of a chunk at a time and multiplies
#: them by one gemm per plane: with more rows the transformed windows and their products outgrow the L2 cache, with
#: fewer the gemms are too small to pay for their calls.  Both backends take the same, so the gemms are the same.
WINOGRAD_ROWS = 4

#: A pooled convolution's backward pass adds its errors into its inputs a pooling window at a time, up to this
#: many filters at a time: the filters whose maximum is at the same place of the window (places in the order they
#: are first met, the filters in order within each) are added together, so that each input's sum is loaded and
#: stored once for them.  Both backends group alike, so their sums are the same.
GROUPED_FILTERS = 64

#: A pooled convolution's backward pass adds the errors of up to this many pooling windows into a filter's
#: gradient at a time, each sum in a register for them all (in the windows' order: the sums of one at a time); a
#: relu dense layer's, up to this many rows' or units' nonzero errors into a unit's gradient or a row's errors
#: passed down.
TERMS_BLOCK = 64

#: A relu dense layer's errors are zero wherever a unit is off: where at most one of a chunk's errors in this many is
#: not, its backward pass adds the nonzero errors' terms alone, else it takes the gemms, which multiply four to five
#: times as fast per product (measured on AVX-512; the notebook's ``Dense(128)`` under its dropout has one in eight
#: nonzero once trained, a relu layer without dropout about one in two at random weights).
TERMS_ERRORS_PER_NONZERO = 5

#: A relu dense layer's backward pass by terms goes over the inputs in blocks of whole stretches of six lines
#: (``LINE_BYTES``) whose weights (the units by the block), or whose inputs (the chunk's rows by the block), take at
#: most about this many bytes: they stay in the level-2 cache while every row's, or every unit's, sums read them.
TERMS_CACHE_BYTES = 262144

#: A cache line's bytes, and the widest vector's (AVX-512's): the layered kernels lay a pooled convolution's filters
#: and their gradient in rows padded to whole lines of it, each row starting on one, so that no vector of them
#: straddles two lines (rows of ``fan_in + 1`` values would make most do).
LINE_BYTES = 64


def terms_columns(units, rows, item):
    """Inputs per block of a relu dense layer's backward pass by terms: whole stretches of six cache lines, the
    weights of ``units`` units, or the inputs of ``rows`` rows, of ``item`` bytes each, over a block in about
    ``TERMS_CACHE_BYTES``."""
    stretch = 6 * LINE_BYTES // item
    return max(stretch, TERMS_CACHE_BYTES // (max(units, rows) * item) // stretch * stretch)


#: A max pooling of a pooled convolution's outputs keeps where each maximum is as its row shifted by this many
#: bits, or'd with its column: the convolution's backward pass reads both without dividing an index.
CELL_SHIFT = 32

#: What the kernels know of each layer's shape, one row of ``Network.geometry`` per layer, in this order: its
#: weight block (``units`` rows of ``fan_in`` weights and a bias), its input and output images (height, width,
#: channels; a vector of ``n`` values is ``(1, 1, n)``), and its window: size, stride, and the zero padding
#: before the first row and column.
GEOMETRY_FIELDS = (
    "units", "fan_in", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c",
    "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top", "pad_left",
)  # fmt: skip
#: The columns of ``Network.geometry`` by name, for the Numba kernels (the Cython ones get ``GEOMETRY_...``).
Geometry = IntEnum("Geometry", [(field.upper(), column) for column, field in enumerate(GEOMETRY_FIELDS)])

#: Dropout's masks come from a counter-based generator, SplitMix64 (Steele, Lea and Flood, 2014): the stream
#: of a row is seeded by the training's seed, the update's number and the row's index, and a unit's draw is
#: the stream's value at the unit's index, so no random state is shared or carried between threads.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_MIX1 = 0xBF58476D1CE4E5B9
SPLITMIX_MIX2 = 0x94D049BB133111EB


def splitmix64(z: int) -> int:
    """SplitMix64's output function of the 64-bit state ``z`` (the kernels compute it alike)."""
    mask = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * SPLITMIX_MIX1) & mask
    z = ((z ^ (z >> 27)) * SPLITMIX_MIX2) & mask
    return z ^ (z >> 31)


def compiled_constants() -> dict:
    """Every constant the compiled kernels build in, by the name the Cython extension gives it.

    The extension's are generated from this when it is built (``setup.py``), and
    :func:`check_compiled` compares them with it when the extension is imported.
    """
    from ._concepts import ActivationCode, LayerKindCode, LossCode, OptimizerCode

    enums = (("ACTIVATION", ActivationCode), ("LOSS", LossCode), ("OPTIMIZER", OptimizerCode), ("LAYER", LayerKindCode))
    codes = {f"{prefix}_{member.name}": int(member) for prefix, enum in enums for member in enum}
    names = ("LANES", "SMALL_BLOCK", "LARGE_BLOCK", "LEAKY_SLOPE", "LOG_FLOOR", "RPROP_INCREASE", "RPROP_DECREASE")
    names += ("RPROP_DELTA_MIN", "RPROP_DELTA_MAX", "EXP_LOG2E", "EXP_SHIFT", "EXP_LN2_HI", "EXP_LN2_LO")
    names += ("EXP_TAYLOR", "CHUNK_ROWS", "LARGE_CHUNK_ROWS", "FUSED_MAX_UNITS", "SPLITMIX_GAMMA", "SPLITMIX_MIX1")
    names += ("SPLITMIX_MIX2", "PREDICT_CHUNK_ROWS", "CELL_SHIFT", "WINOGRAD_ROWS", "GROUPED_FILTERS", "LINE_BYTES")
    names += ("TERMS_BLOCK", "TERMS_CACHE_BYTES", "TERMS_ERRORS_PER_NONZERO", "PREDICT_ROWS")
    geometry = {f"GEOMETRY_{field.upper()}": column for column, field in enumerate(GEOMETRY_FIELDS)}
    return {**codes, **geometry, "GEOMETRY_COLUMNS": len(GEOMETRY_FIELDS), **{name: globals()[name] for name in names}}


def check_compiled(compiled: dict, module: str) -> None:
    """Refuse an extension module built with other constants than :func:`compiled_constants` (a stale build)."""
    expected = compiled_constants()
    mismatches = [
        f"{name} is {compiled.get(name)!r} there, {value!r} here"
        for name, value in expected.items()
        if compiled.get(name) != value
    ]
    if mismatches or compiled.keys() != expected.keys():
        raise ImportError(
            f"{module} was compiled with other constants than fastbp's ({'; '.join(mismatches) or 'other names'}): "
            "it is a stale build, rebuild or reinstall fastbp"
        )

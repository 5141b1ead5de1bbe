"""What the Numba kernels need below Python: LLVM intrinsics and the C library's exp.

* ``bits`` and ``from_bits`` reinterpret a float64 as an int64 and back (fastbp's exp
  builds ``2**n`` from its bits);
* ``lane_sums`` and ``stepped_lane_sums`` run the fast mode's ``LANES`` partial sums as
  one LLVM vector: Numba keeps LLVM's SLP vectoriser off, which would otherwise leave
  them as scalar code;
* ``add_scaled`` adds many rows times their scales into one, each sum kept in a vector
  register across all the rows, as the Cython backend's ``fastbp_add_scaled_*`` does:
  LLVM's loop vectoriser would load and store each sum once per row instead;
* ``fused_gradient`` is a fused first layer's gradient for 2x2 pooling, its filters'
  sums in vector registers across a whole image (as the Cython backend's
  ``fastbp_fused_gradient``);
* ``libm_exp`` is ``math.exp`` calling the C library's exp directly (see
  :mod:`fastbp._libm`);
* ``blas_sgemm`` and ``blas_dgemm`` are BLAS's matrix products, the very functions the
  Cython backend calls (scipy's ``cython_blas``), bound by address like the C library's
  exp so the kernels that call them can be cached; they take their pointers as integers.
"""

import math

import llvmlite.binding
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import get_cython_function_address, intrinsic, overload

from .._constants import LANES
from .._libm import libm_address


@intrinsic
def bits(typingctx, value):
    """The bits of a float64 as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def from_bits(typingctx, value):
    """The float64 whose bits are the int64 ``value``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


def _lane_sums_codegen(update: bool):
    """LLVM code for the fast mode's partial sums as one vector of ``LANES``: see ``lane_sums``."""

    def codegen(context, builder, signature, args):
        if update:  # ``weighed``: the inputs the (updated) weights multiply
            weights, neuron, inputs, weighed, in_off, count, step = args
        else:
            weights, neuron, weighed, in_off, count = args
        dtype = signature.args[0].dtype
        scalar, align = context.get_value_type(dtype), dtype.bitwidth // 8
        vector = ir.VectorType(scalar, LANES)

        def base(array_type, array, offset):
            data = context.make_array(array_type)(context, builder, array).data
            return builder.gep(data, [offset])

        def load(pointer, i):
            return builder.load(builder.bitcast(builder.gep(pointer, [i]), vector.as_pointer()), align=align)

        w_base = base(signature.args[0], weights, neuron)
        weighed_base = base(signature.args[3 if update else 2], weighed, in_off)
        if update:
            x_base = base(signature.args[2], inputs, in_off)
            step = context.cast(builder, step, signature.args[6], dtype)
            steps = ir.Constant(vector, ir.Undefined)
            for k in range(LANES):
                steps = builder.insert_element(steps, step, ir.Constant(ir.IntType(32), k))
        total = cgutils.alloca_once_value(builder, ir.Constant(vector, [ir.Constant(scalar, 0.0)] * LANES))
        zero, stride = ir.Constant(count.type, 0), ir.Constant(count.type, LANES)
        with cgutils.for_range_slice(builder, zero, count, stride, inc=True) as (i, _):
            w = load(w_base, i)
            if update:
                w = builder.fsub(w, builder.fmul(steps, load(x_base, i)))
                builder.store(w, builder.bitcast(builder.gep(w_base, [i]), vector.as_pointer()), align=align)
            builder.store(builder.fadd(builder.load(total), builder.fmul(w, load(weighed_base, i))), total)
        value = builder.load(total)
        lanes = [builder.extract_element(value, ir.Constant(ir.IntType(32), k)) for k in range(LANES)]
        return context.make_tuple(builder, signature.return_type, lanes)

    return codegen


@intrinsic
def lane_sums(typingctx, weights, neuron, inputs, in_off, count):
    """The fast mode's partial sums: lane ``k`` adds ``weights[neuron + i] * inputs[in_off + i]`` for
    ``i % LANES == k``, ``i < count`` (a multiple of ``LANES``), in order, from 0.

    Each lane's additions are the scalar code's, in its order: the same bits as
    ``LANES`` scalar accumulators, which gcc vectorises in the Cython backend.
    """
    return types.UniTuple(weights.dtype, LANES)(weights, neuron, inputs, in_off, count), _lane_sums_codegen(False)


@intrinsic
def stepped_lane_sums(typingctx, weights, neuron, inputs, next_inputs, in_off, count, step):
    """``lane_sums`` of ``next_inputs``, each weight first updated in place, ``w -= step * inputs[in_off + i]``."""
    signature = types.UniTuple(weights.dtype, LANES)(weights, neuron, inputs, next_inputs, in_off, count, step)
    return signature, _lane_sums_codegen(True)


def _vector_bytes() -> int:
    """The widest vector register of the processor that Numba compiles for, in bytes: 16 where Numba compiles
    for a named processor (``NUMBA_CPU_NAME``, say ``generic`` for a portable cache), which wider vectors would
    make spill."""
    if config.CPU_NAME is not None:
        return 16
    features = llvmlite.binding.get_host_cpu_features()
    return 64 if features.get("avx512f") else 32 if features.get("avx") else 16


#: ``add_scaled``'s vectors, in bytes, and how many of them it keeps in registers at once.
VECTOR_BYTES = _vector_bytes()
SUMS_AT_ONCE = 6


def _add_scaled_codegen(context, builder, signature, args):
    """LLVM code for ``add_scaled``: rows of ``SUMS_AT_ONCE`` vectors of sums, then of two, then one sum at a
    time, each loaded once, added to by every term in turn, and stored once."""
    sums, at, sums_step, rows, starts, offset, scales, n_terms, row_step, n_rows, n = args
    argument_types = signature.args
    dtype = argument_types[0].dtype
    scalar, align = context.get_value_type(dtype), dtype.bitwidth // 8
    lanes = VECTOR_BYTES // align
    vector = ir.VectorType(scalar, lanes)
    at, sums_step, offset, n_terms, row_step, n_rows, n = (
        context.cast(builder, value, argument_types[i], types.intp)
        for i, value in ((1, at), (2, sums_step), (5, offset), (7, n_terms), (8, row_step), (9, n_rows), (10, n))
    )
    intp = at.type

    def data(i, array):
        return context.make_array(argument_types[i])(context, builder, array).data

    sums_data, rows_data, starts_data, scales_data = data(0, sums), data(3, rows), data(4, starts), data(6, scales)

    def load_vector(pointer):
        return builder.load(builder.bitcast(pointer, vector.as_pointer()), align=align)

    def splat(value):
        one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

    def constant(value):
        return ir.Constant(intp, value)

    def add_terms(to, offset, count, width):
        """``count`` stretches of ``width`` vectors (0: one value) from ``to`` on, each term's rows from
        ``offset`` on: the sums in registers across the terms."""
        slots = [cgutils.alloca_once(builder, vector if width else scalar) for _ in range(max(width, 1))]
        size = width * lanes if width else 1
        with cgutils.for_range(builder, count) as block:
            first = builder.mul(block.index, constant(size))
            places = [builder.gep(to, [builder.add(first, constant(q * lanes))]) for q in range(len(slots))]
            for slot, place in zip(slots, places):
                builder.store(load_vector(place) if width else builder.load(place), slot)
            with cgutils.for_range(builder, n_terms) as term:
                scale = builder.load(builder.gep(scales_data, [term.index]))
                scales_ = splat(scale) if width else scale
                start = context.cast(builder, builder.load(builder.gep(starts_data, [term.index])),
                                     argument_types[4].dtype, types.intp)  # fmt: skip
                source = builder.add(builder.add(start, offset), first)
                for q, slot in enumerate(slots):
                    pointer = builder.gep(rows_data, [builder.add(source, constant(q * lanes))])
                    term_values = load_vector(pointer) if width else builder.load(pointer)
                    builder.store(builder.fadd(builder.load(slot), builder.fmul(scales_, term_values)), slot)
            for slot, place in zip(slots, places):
                value = builder.load(slot)
                builder.store(value, builder.bitcast(place, vector.as_pointer()) if width else place,
                              align=align)  # fmt: skip
        return builder.mul(count, constant(size))

    with cgutils.for_range(builder, n_rows) as row:
        to = builder.gep(sums_data, [builder.add(at, builder.mul(row.index, sums_step))])
        shift = builder.add(offset, builder.mul(row.index, row_step))
        done = constant(0)
        for width in (SUMS_AT_ONCE, 2, 0):
            size = constant(width * lanes if width else 1)
            count = builder.sdiv(builder.sub(n, done), size)
            added = add_terms(builder.gep(to, [done]), builder.add(shift, done), count, width)
            done = builder.add(done, added)
    return context.get_dummy_value()


@intrinsic
def add_scaled(typingctx, sums, at, sums_step, rows, starts, offset, scales, n_terms, row_step, n_rows, n):
    """``sums[at + r * sums_step + i] += scales[t] * rows[starts[t] + offset + r * row_step + i]`` for
    ``r < n_rows`` and ``i < n``, for ``t`` from 0 to ``n_terms - 1`` in turn: the additions of one term at a
    time (the bits of the plain loops), each sum loaded and stored once for them all."""
    signature = types.void(sums, at, sums_step, rows, starts, offset, scales, n_terms, row_step, n_rows, n)
    return signature, _add_scaled_codegen


def _fused_gradient_codegen(context, builder, signature, args):
    """LLVM code for ``fused_gradient``: a vector of filters at a time (then one), their 10 sums loaded once,
    added to at every window in turn, and stored once; each window's maximum's pixels picked by selects on
    its place."""
    values, image, in_w, places, errors, at, out_h, out_w, units, sums, sums_step = args
    argument_types = signature.args
    dtype = argument_types[0].dtype
    scalar, align = context.get_value_type(dtype), dtype.bitwidth // 8
    image, in_w, places, at, out_h, out_w, units, sums_step = (
        context.cast(builder, value, argument_types[i], types.intp)
        for i, value in ((1, image), (2, in_w), (3, places), (5, at), (6, out_h), (7, out_w), (8, units),
                         (10, sums_step))
    )  # fmt: skip
    intp = image.type
    values_data, errors_data, sums_data = (
        context.make_array(argument_types[i])(context, builder, array).data
        for i, array in ((0, values), (4, errors), (9, sums))
    )

    def constant(value):
        return ir.Constant(intp, value)

    def filters(first, count, lanes):
        """``count`` blocks of ``lanes`` filters from ``first`` on (``lanes`` 1: scalars)."""
        kind = ir.VectorType(scalar, lanes) if lanes > 1 else scalar

        def load(pointer):
            return builder.load(builder.bitcast(pointer, kind.as_pointer()), align=align)

        def splat(value):
            if lanes == 1:
                return value
            one = builder.insert_element(ir.Constant(kind, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

        slots = [cgutils.alloca_once(builder, kind) for _ in range(10)]
        with cgutils.for_range(builder, count) as block:
            u = builder.add(first, builder.mul(block.index, constant(lanes)))
            columns = [builder.gep(sums_data, [builder.add(builder.mul(constant(i), sums_step), u)]) for i in range(10)]
            for slot, column in zip(slots, columns):
                builder.store(load(column), slot)
            with cgutils.for_range(builder, out_h) as row:
                with cgutils.for_range(builder, out_w) as column:
                    window = builder.add(builder.mul(row.index, out_w), column.index)
                    here = builder.add(builder.mul(window, units), u)
                    error = load(builder.gep(errors_data, [builder.add(at, here)]))
                    place = load(builder.gep(values_data, [builder.add(places, here)]))
                    at_place = [builder.fcmp_ordered("==", place, splat(ir.Constant(scalar, q))) for q in (1, 2, 3)]
                    corner = builder.add(
                        image, builder.add(builder.mul(builder.mul(row.index, constant(2)), in_w),
                                           builder.mul(column.index, constant(2)))
                    )  # fmt: skip
                    for i in range(9):
                        top = builder.add(corner, builder.add(builder.mul(constant(i // 3), in_w), constant(i % 3)))
                        bottom = builder.add(top, in_w)
                        pixels = [
                            splat(builder.load(builder.gep(values_data, [where])))
                            for where in (top, builder.add(top, constant(1)), bottom, builder.add(bottom, constant(1)))
                        ]
                        picked = pixels[0]
                        for q in (1, 2, 3):
                            picked = builder.select(at_place[q - 1], pixels[q], picked)
                        builder.store(builder.fadd(builder.load(slots[i]), builder.fmul(error, picked)), slots[i])
                    builder.store(builder.fadd(builder.load(slots[9]), error), slots[9])
            for slot, column in zip(slots, columns):
                builder.store(builder.load(slot), builder.bitcast(column, kind.as_pointer()), align=align)

    lanes = VECTOR_BYTES // align
    blocks = builder.sdiv(units, constant(lanes))
    filters(constant(0), blocks, lanes)
    done = builder.mul(blocks, constant(lanes))
    filters(done, builder.sub(units, done), 1)
    return context.get_dummy_value()


@intrinsic
def fused_gradient(typingctx, values, image, in_w, places, errors, at, out_h, out_w, units, sums, sums_step):
    """A fused first layer's gradient for one row, when its pooling's windows are 2x2 at a stride of 2: for each
    window in order, each filter's error (``errors[at + window * units + u]``) times the 9 pixels under the
    window's maximum (of the one-channel image at ``values[image:]``, ``in_w`` wide; the maximum's place ``q``,
    row ``q // 2`` and column ``q % 2`` of the window, at ``values[places + window * units + u]``) added into
    the filter's sums (pixel ``i``'s at ``sums[i * sums_step + u]``), and the error into the bias's
    (``i = 9``): the products and sums, in their order, of one filter at a time."""
    signature = types.void(values, image, in_w, places, errors, at, out_h, out_w, units, sums, sums_step)
    return signature, _fused_gradient_codegen


def _libm_function(name: str, signature):
    """The C library's ``name`` as a Numba external function (see :mod:`fastbp._libm`), or None."""
    address = libm_address(name)
    if address is None:
        return None
    symbol = f"fastbp_libm_{name}"
    llvmlite.binding.add_symbol(symbol, address)
    return types.ExternalFunction(symbol, signature)


#: The C library's exp per float type (None: Numba's ``math.exp``).
_LIBM_EXP = {
    types.float64: _libm_function("exp", types.float64(types.float64)),
    types.float32: _libm_function("expf", types.float32(types.float32)),
}


def libm_exp(x):
    """``math.exp(x)``, which in compiled code calls the C library's exp directly (see :mod:`fastbp._libm`)."""
    return math.exp(x)


@overload(libm_exp, inline="always")
def _libm_exp(x):
    function = _LIBM_EXP.get(x)
    if function is None:
        return lambda x: math.exp(x)
    return lambda x: function(x)


def _blas_function(name: str) -> types.ExternalFunction:
    """BLAS's ``name`` from scipy's ``cython_blas``, every argument (all are pointers in Fortran's convention)
    an integer address."""
    symbol = f"fastbp_blas_{name}"
    llvmlite.binding.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", name))
    return types.ExternalFunction(symbol, types.void(*[types.uintp] * 13))


blas_sgemm = _blas_function("sgemm")
blas_dgemm = _blas_function("dgemm")

"""What the Numba kernels need below Python: LLVM intrinsics and the C library's exp.

* ``bits`` and ``from_bits`` reinterpret a float64 as an int64 and back (fastbp's exp
  builds ``2**n`` from its bits);
* ``lane_sums``, ``stepped_lane_sums`` and ``lane_sums_of_rows`` run the fast mode's
  ``LANES`` partial sums as one LLVM vector (per row): Numba keeps LLVM's SLP vectoriser
  off, which would otherwise leave them as scalar code;
* ``add_scaled`` adds many rows times their scales into one, each sum kept in a vector
  register across all the rows, as the Cython backend's ``fastbp_add_scaled_*`` does:
  LLVM's loop vectoriser would load and store each sum once per row instead;
* ``fused_gradient`` is a fused first layer's gradient for 2x2 pooling, its filters'
  sums in vector registers across a whole image (as the Cython backend's
  ``fastbp_fused_gradient``), and ``winograd_pool`` its forward pass at one pooling
  window, a Winograd tile, all the filters in vectors of the widest registers (LLVM's
  own vectoriser takes half as wide ones on processors with AVX-512);
* ``winograd_in`` and ``winograd_out`` are a Winograd convolution's transforms, the
  channels in vectors likewise (LLVM's vectoriser leaves their 16 streams scalar);
* ``flush_subnormals`` and ``restore_subnormals`` turn the x86 processor's
  flush-to-zero and denormals-are-zero modes on for a layered or mini-batch kernel's
  thread and back off, as the Cython backend's ``fastbp_flush_subnormals`` does (which
  says why);
* ``libm_exp`` is ``math.exp`` calling the C library's exp directly (see
  :mod:`fastbp._libm`);
* ``blas_sgemm`` and ``blas_dgemm`` are BLAS's matrix products, the very functions the
  Cython backend calls (scipy's ``cython_blas``), bound by address like the C library's
  exp so the kernels that call them can be cached; they take their pointers as integers.
"""

import math
import platform

import llvmlite.binding
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import get_cython_function_address, intrinsic, overload

from .._constants import LANES, PREDICT_ROWS
from .._libm import libm_address

#: MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) modes.
FLUSH_SUBNORMALS = 0x8040
#: Whether the processor has an MXCSR (x86); elsewhere the intrinsics below do nothing.
_HAS_MXCSR = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _control_word(builder, name: str, slot) -> None:
    """Call LLVM's ``stmxcsr`` or ``ldmxcsr`` (``name``) on the 32-bit ``slot``."""
    pointer = ir.IntType(8).as_pointer()
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [pointer]), name)
    builder.call(function, [builder.bitcast(slot, pointer)])


@intrinsic
def flush_subnormals(typingctx):
    """Turn on flush-to-zero and denormals-are-zero on this thread; returns the control word to restore."""

    def codegen(context, builder, signature, args):
        word = ir.IntType(32)
        if not _HAS_MXCSR:
            return word(0)
        slot = cgutils.alloca_once(builder, word)
        _control_word(builder, "llvm.x86.sse.stmxcsr", slot)
        kept = builder.load(slot)
        builder.store(builder.or_(kept, word(FLUSH_SUBNORMALS)), slot)
        _control_word(builder, "llvm.x86.sse.ldmxcsr", slot)
        return kept

    return types.uint32(), codegen


@intrinsic
def restore_subnormals(typingctx, kept):
    """Restore the control word ``flush_subnormals`` returned."""

    def codegen(context, builder, signature, args):
        if _HAS_MXCSR:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], slot)
            _control_word(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


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


def _lane_sums_codegen(update: bool, rows: int = 1):
    """LLVM code for the fast mode's partial sums as one vector of ``LANES`` per row: see ``lane_sums``,
    ``stepped_lane_sums`` and ``lane_sums_of_rows``."""

    def codegen(context, builder, signature, args):
        if update:  # ``weighed``: the inputs the (updated) weights multiply
            weights, neuron, inputs, weighed, in_off, count, step = args
        elif rows > 1:
            weights, neuron, weighed, in_off, stride, count = args
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
        row_bases = [weighed_base]
        for _ in range(1, rows):
            row_bases.append(builder.gep(row_bases[-1], [stride]))
        if update:
            x_base = base(signature.args[2], inputs, in_off)
            step = context.cast(builder, step, signature.args[6], dtype)
            steps = ir.Constant(vector, ir.Undefined)
            for k in range(LANES):
                steps = builder.insert_element(steps, step, ir.Constant(ir.IntType(32), k))
        zeros = ir.Constant(vector, [ir.Constant(scalar, 0.0)] * LANES)
        totals = [cgutils.alloca_once_value(builder, zeros) for _ in row_bases]
        zero, lanes_step = ir.Constant(count.type, 0), ir.Constant(count.type, LANES)
        with cgutils.for_range_slice(builder, zero, count, lanes_step, inc=True) as (i, _):
            w = load(w_base, i)
            if update:
                w = builder.fsub(w, builder.fmul(steps, load(x_base, i)))
                builder.store(w, builder.bitcast(builder.gep(w_base, [i]), vector.as_pointer()), align=align)
            for total, row_base in zip(totals, row_bases):
                builder.store(builder.fadd(builder.load(total), builder.fmul(w, load(row_base, i))), total)
        lanes = [
            builder.extract_element(builder.load(total), ir.Constant(ir.IntType(32), k))
            for total in totals
            for k in range(LANES)
        ]
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


@intrinsic
def lane_sums_of_rows(typingctx, weights, neuron, inputs, in_off, stride, count):
    """``lane_sums`` of ``PREDICT_ROWS`` rows, ``inputs[in_off + r * stride ...]``, one after the other in the
    tuple: each row's in its own vector, each weight loaded once for all rows."""
    signature = types.UniTuple(weights.dtype, LANES * PREDICT_ROWS)(weights, neuron, inputs, in_off, stride, count)
    return signature, _lane_sums_codegen(False, PREDICT_ROWS)


def _vector_bytes() -> int:
    """The widest vector register of the processor that Numba compiles for, in bytes: 16 where Numba compiles
    for a named processor (``NUMBA_CPU_NAME``, say ``generic`` for a portable cache), which wider vectors would
    make spill."""
    if config.CPU_NAME is not None:
        return 16
    features = llvmlite.binding.get_host_cpu_features()
    return 64 if features.get("avx512f") else 32 if features.get("avx") else 16


#: The vector intrinsics' widest vectors, in bytes, and how many of them ``add_scaled`` keeps in registers at once.
VECTOR_BYTES = _vector_bytes()
SUMS_AT_ONCE = 6


class _Code:
    """What the vector intrinsics' code generators share: their arguments' data and integers, and vectors of
    the first argument's float type ``lanes`` wide (``lanes`` 1: the scalars themselves)."""

    def __init__(self, context, builder, signature, args):
        self.context, self.builder, self.types, self.args = context, builder, signature.args, args
        dtype = self.types[0].dtype
        self.scalar, self.align = context.get_value_type(dtype), dtype.bitwidth // 8
        self.lanes = VECTOR_BYTES // self.align  # the widest vector's
        self.intp = context.get_value_type(types.intp)

    def data(self, i):
        """Argument ``i``'s (an array's) data pointer."""
        return self.context.make_array(self.types[i])(self.context, self.builder, self.args[i]).data

    def index(self, i):
        """Argument ``i`` (an integer) as an intp."""
        return self.context.cast(self.builder, self.args[i], self.types[i], types.intp)

    def constant(self, value):
        return ir.Constant(self.intp, value)

    def at(self, data, *terms):
        """The address ``data`` plus the sum of ``terms`` (intp values or Python integers)."""
        total = self.constant(0)
        for term in terms:
            total = self.builder.add(total, self.constant(term) if isinstance(term, int) else term)
        return self.builder.gep(data, [total])

    def vector(self, lanes):
        """The type of ``lanes`` floats."""
        return ir.VectorType(self.scalar, lanes) if lanes > 1 else self.scalar

    def load(self, pointer, lanes):
        return self.builder.load(self.builder.bitcast(pointer, self.vector(lanes).as_pointer()), align=self.align)

    def store(self, value, pointer, lanes):
        self.builder.store(value, self.builder.bitcast(pointer, self.vector(lanes).as_pointer()), align=self.align)

    def splat(self, value, lanes):
        """``value`` (a scalar, or a Python float) in each of ``lanes`` lanes."""
        if isinstance(value, float):
            value = ir.Constant(self.scalar, value)
        if lanes == 1:
            return value
        builder = self.builder
        one = builder.insert_element(
            ir.Constant(self.vector(lanes), ir.Undefined), value, ir.Constant(ir.IntType(32), 0)
        )
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

    def in_blocks(self, n, block):
        """``block(first, count, lanes)`` for the ``n`` items: whole vectors of ``lanes`` first, then one at a time."""
        whole = self.builder.sdiv(n, self.constant(self.lanes))
        block(self.constant(0), whole, self.lanes)
        done = self.builder.mul(whole, self.constant(self.lanes))
        block(done, self.builder.sub(n, done), 1)

    def accumulators(self, count, lanes):
        """``count`` stack slots of ``lanes`` floats, which LLVM keeps in registers."""
        return [cgutils.alloca_once(self.builder, self.vector(lanes)) for _ in range(count)]


def _add_scaled_codegen(context, builder, signature, args):
    """LLVM code for ``add_scaled``: stretches of ``SUMS_AT_ONCE`` vectors of sums, then of one vector, then one
    sum at a time, each loaded once, added to by every term in turn, and stored once."""
    code = _Code(context, builder, signature, args)
    sums, rows, starts, scales = code.data(0), code.data(3), code.data(4), code.data(6)
    at, sums_step, offset, n_terms, row_step, n_rows, n = (code.index(i) for i in (1, 2, 5, 7, 8, 9, 10))
    start_type = signature.args[4].dtype

    def stretches(to, source, first, count, lanes, width):
        """``count`` stretches of ``width`` vectors of ``lanes`` sums from ``to[first]`` on, each term's from
        ``source + first`` on in its row."""
        slots = code.accumulators(width, lanes)
        size = width * lanes
        with cgutils.for_range(builder, count) as stretch:
            here = builder.add(first, builder.mul(stretch.index, code.constant(size)))
            places = [code.at(to, here, q * lanes) for q in range(width)]
            for slot, place in zip(slots, places):
                builder.store(code.load(place, lanes), slot)
            with cgutils.for_range(builder, n_terms) as term:
                scale = code.splat(builder.load(code.at(scales, term.index)), lanes)
                start = context.cast(builder, builder.load(code.at(starts, term.index)), start_type, types.intp)
                for q, slot in enumerate(slots):
                    term_values = code.load(code.at(rows, start, source, here, q * lanes), lanes)
                    builder.store(builder.fadd(builder.load(slot), builder.fmul(scale, term_values)), slot)
            for slot, place in zip(slots, places):
                code.store(builder.load(slot), place, lanes)

    with cgutils.for_range(builder, n_rows) as row:
        to = code.at(sums, at, builder.mul(row.index, sums_step))
        source = builder.add(offset, builder.mul(row.index, row_step))
        wide = code.constant(SUMS_AT_ONCE * code.lanes)
        whole = builder.sdiv(n, wide)
        stretches(to, source, code.constant(0), whole, code.lanes, SUMS_AT_ONCE)
        done = builder.mul(whole, wide)
        code.in_blocks(
            builder.sub(n, done),
            lambda first, count, lanes: stretches(to, source, builder.add(done, first), count, lanes, 1),
        )
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
    code = _Code(context, builder, signature, args)
    values, errors, sums = code.data(0), code.data(4), code.data(9)
    image, in_w, places, at, out_h, out_w, units, sums_step = (code.index(i) for i in (1, 2, 3, 5, 6, 7, 8, 10))

    def filters(first, count, lanes):
        slots = code.accumulators(10, lanes)
        with cgutils.for_range(builder, count) as block:
            u = builder.add(first, builder.mul(block.index, code.constant(lanes)))
            columns = [code.at(sums, builder.mul(code.constant(i), sums_step), u) for i in range(10)]
            for slot, column in zip(slots, columns):
                builder.store(code.load(column, lanes), slot)
            with cgutils.for_range(builder, out_h) as row, cgutils.for_range(builder, out_w) as column:
                here = builder.add(builder.mul(builder.add(builder.mul(row.index, out_w), column.index), units), u)
                error = code.load(code.at(errors, at, here), lanes)
                place = code.load(code.at(values, places, here), lanes)
                at_place = [builder.fcmp_ordered("==", place, code.splat(float(q), lanes)) for q in (1, 2, 3)]
                corner = builder.add(
                    builder.mul(builder.add(row.index, row.index), in_w), builder.add(column.index, column.index)
                )
                for i in range(9):
                    top = builder.add(
                        builder.add(image, corner),
                        builder.add(builder.mul(code.constant(i // 3), in_w), code.constant(i % 3)),
                    )
                    bottom = builder.add(top, in_w)
                    pixels = [
                        code.splat(builder.load(code.at(values, where, dx)), lanes)
                        for where in (top, bottom)
                        for dx in (0, 1)
                    ]
                    picked = pixels[0]
                    for q in (1, 2, 3):
                        picked = builder.select(at_place[q - 1], pixels[q], picked)
                    builder.store(builder.fadd(builder.load(slots[i]), builder.fmul(error, picked)), slots[i])
                builder.store(builder.fadd(builder.load(slots[9]), error), slots[9])
            for slot, column in zip(slots, columns):
                code.store(builder.load(slot), column, lanes)

    code.in_blocks(units, filters)
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


def _winograd_in(builder, d):
    """A 4x4 window ``d`` (16 values or vectors, row by row) as ``B^T d B``, row by row: its columns, then its
    rows, as the Cython kernels' ``FASTBP_WINOGRAD_IN_TILE``, operation by operation."""
    add, sub = builder.fadd, builder.fsub
    columns = [(sub(d[j], d[8 + j]), add(d[4 + j], d[8 + j]), sub(d[8 + j], d[4 + j]), sub(d[4 + j], d[12 + j]))
               for j in range(4)]  # fmt: skip
    rows = [[columns[j][i] for j in range(4)] for i in range(4)]
    return [value for a, b, c, e in rows for value in (sub(a, c), add(b, c), sub(c, b), sub(b, e))]


def _winograd_out(builder, m, bias):
    """A tile's 4x4 products ``m`` (16 values or vectors, row by row) as ``A^T m A`` plus ``bias``: its 2x2
    outputs, row by row, as the Cython kernels' ``FASTBP_WINOGRAD_OUT_TILE``, operation by operation."""
    add, sub = builder.fadd, builder.fsub
    s0 = [add(add(m[j], m[4 + j]), m[8 + j]) for j in range(4)]
    s1 = [sub(sub(m[4 + j], m[8 + j]), m[12 + j]) for j in range(4)]
    return [
        add(add(add(s[0], s[1]), s[2]), bias) if right == 0 else add(sub(sub(s[1], s[2]), s[3]), bias)
        for s in (s0, s1)
        for right in (0, 1)
    ]


def _winograd_in_codegen(context, builder, signature, args):
    """LLVM code for ``winograd_in``: a vector of channels at a time, then one."""
    code = _Code(context, builder, signature, args)
    values, V = code.data(0), code.data(4)
    source, row_step, column_step, to, plane, n = (code.index(i) for i in (1, 2, 3, 5, 6, 7))

    def channels(first, count, lanes):
        with cgutils.for_range(builder, count) as block:
            c = builder.add(first, builder.mul(block.index, code.constant(lanes)))
            d = [
                code.load(code.at(values, source, builder.mul(code.constant(i), row_step),
                                  builder.mul(code.constant(j), column_step), c), lanes)
                for i in range(4)
                for j in range(4)
            ]  # fmt: skip
            for i, value in enumerate(_winograd_in(builder, d)):
                code.store(value, code.at(V, to, builder.mul(code.constant(i), plane), c), lanes)

    code.in_blocks(n, channels)
    return context.get_dummy_value()


@intrinsic
def winograd_in(typingctx, values, source, row_step, column_step, V, to, plane, n):
    """``n`` channels' 4x4 windows (channel ``c`` of pixel ``(i, j)`` at ``values[source + i * row_step + j *
    column_step + c]``) as ``B^T d B``, element ``(i, j)`` into ``V[to + (i * 4 + j) * plane + c]``."""
    signature = types.void(values, source, row_step, column_step, V, to, plane, n)
    return signature, _winograd_in_codegen


def _winograd_out_codegen(context, builder, signature, args):
    """LLVM code for ``winograd_out``: a vector of channels at a time, then one."""
    code = _Code(context, builder, signature, args)
    M, biases, out = code.data(0), code.data(3), code.data(5)
    at, plane, bias_at, to, row_step, column_step, n = (code.index(i) for i in (1, 2, 4, 6, 7, 8, 9))

    def channels(first, count, lanes):
        with cgutils.for_range(builder, count) as block:
            c = builder.add(first, builder.mul(block.index, code.constant(lanes)))
            m = [code.load(code.at(M, at, builder.mul(code.constant(i), plane), c), lanes) for i in range(16)]
            bias = code.load(code.at(biases, bias_at, c), lanes)
            for (i, j), value in zip(((0, 0), (0, 1), (1, 0), (1, 1)), _winograd_out(builder, m, bias)):
                steps = builder.add(builder.mul(code.constant(i), row_step), builder.mul(code.constant(j), column_step))
                code.store(value, code.at(out, to, steps, c), lanes)

    code.in_blocks(n, channels)
    return context.get_dummy_value()


@intrinsic
def winograd_out(typingctx, M, at, plane, biases, bias_at, out, to, row_step, column_step, n):
    """``n`` channels' 4x4 products (element ``(i, j)`` of channel ``c`` at ``M[at + (i * 4 + j) * plane + c]``)
    as ``A^T m A`` plus ``biases[bias_at + c]``, output ``(i, j)`` of the 2x2 into ``out[to + i * row_step + j *
    column_step + c]``."""
    signature = types.void(M, at, plane, biases, bias_at, out, to, row_step, column_step, n)
    return signature, _winograd_out_codegen


def _winograd_pool_codegen(context, builder, signature, args):
    """LLVM code for ``winograd_pool``: a vector of filters at a time, then one."""
    code = _Code(context, builder, signature, args)
    values, winograd = code.data(0), code.data(5)
    corner, in_w, pooled, places, units, step = (code.index(i) for i in (1, 2, 3, 4, 6, 7))
    window = [
        code.load(code.at(values, corner, builder.mul(code.constant(i), in_w), j), 1)
        for i in range(4)
        for j in range(4)
    ]
    pixels = _winograd_in(builder, window)  # transformed once for all the filters

    def filters(first, count, lanes):
        with cgutils.for_range(builder, count) as block:
            u = builder.add(first, builder.mul(block.index, code.constant(lanes)))
            kernel = [code.load(code.at(winograd, builder.mul(code.constant(i), step), u), lanes) for i in range(17)]
            m = [builder.fmul(kernel[i], code.splat(pixels[i], lanes)) for i in range(16)]
            outputs = _winograd_out(builder, m, kernel[16])
            best, place = outputs[0], code.splat(0.0, lanes)
            for q in (1, 2, 3):
                better = builder.fcmp_ordered(">", outputs[q], best)
                best = builder.select(better, outputs[q], best)
                place = builder.select(better, code.splat(float(q), lanes), place)
            zero = code.splat(0.0, lanes)
            relu = builder.select(builder.fcmp_ordered("<=", best, zero), zero, best)  # nan stays nan
            code.store(relu, code.at(values, pooled, u), lanes)
            code.store(place, code.at(values, places, u), lanes)

    code.in_blocks(units, filters)
    return context.get_dummy_value()


@intrinsic
def winograd_pool(typingctx, values, corner, in_w, pooled, places, winograd, units, step):
    """A fused first layer's outputs at one 2x2 pooling window and their pooling, the window one tile of
    Winograd's F(2x2, 3x3): its 4x4 pixels (of the one-channel image ``in_w`` wide, from ``values[corner]``) as
    ``B^T d B``, then for each filter ``u`` the 16 products with its transformed kernel (element ``i`` at
    ``winograd[i * step + u]``, the bias at ``winograd[16 * step + u]``) as ``A^T m A`` plus the bias, the
    largest of the 2x2 and relu of it into ``values[pooled + u]``, its place (the first largest, row by row)
    into ``values[places + u]``, as a float."""
    signature = types.void(values, corner, in_w, pooled, places, winograd, units, step)
    return signature, _winograd_pool_codegen


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

"""What the Numba kernels need below Python: LLVM intrinsics and the C library's exp.

* ``bits`` and ``from_bits`` reinterpret a float64 as an int64 and back (fastbp's exp
  builds ``2**n`` from its bits);
* ``lane_sums`` and ``stepped_lane_sums`` run the fast mode's ``LANES`` partial sums as
  one LLVM vector: Numba keeps LLVM's SLP vectoriser off, which would otherwise leave
  them as scalar code;
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
from numba.core import cgutils
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

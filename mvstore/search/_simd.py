"""Explicit SIMD building blocks for the compiled search kernels (numba intrinsics emitting LLVM vector IR).

Both hot loops of a CPU search fold rows of a float32 matrix, one lane per query token: stage 2 sums one
score-table row per code unit of a stored vector, stage 1 takes the max over the centroid rows a document
holds. Written as plain numba loops over a runtime width, the running sums live in memory (numba cannot
prove they do not alias the rows) and widths under 32 lanes are not vectorized. These intrinsics keep the
``chunks`` running values in vector registers (``chunks`` x 8 float32 lanes, a compile-time constant) for a
whole fold. LLVM lowers the 8-lane vectors to the target's SIMD (AVX2 here, two SSE/NEON registers
elsewhere), so they are portable.

Callers pass ``chunks`` as a literal constant (one specialization per chunk count) and check every shape
and index beforehand: the intrinsics read through raw pointers without bounds checks.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LANES", "MAX_CHUNKS", "table_fold_max", "rows_max"]

#: float32 lanes per chunk (one AVX2 register)
LANES = 8
#: chunks one call keeps in registers (64 lanes); wider rows are folded in column blocks
MAX_CHUNKS = 8

_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_I64 = ir.IntType(64)
_I8P = ir.IntType(8).as_pointer()


def _literal_int(t: types.Type) -> int | None:
    if isinstance(t, types.IntegerLiteral) and 1 <= t.literal_value <= MAX_CHUNKS:
        return int(t.literal_value)
    return None


def _byte_ptr(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
    return builder.gep(builder.bitcast(base, _I8P), [offset])


def _load_vec(builder: ir.IRBuilder, base_i8: ir.Value, offset: ir.Value) -> ir.Value:
    return builder.load(builder.bitcast(builder.gep(base_i8, [offset]), _VEC.as_pointer()), align=4)


def _vmax(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _store_max(builder: ir.IRBuilder, mx_i8: ir.Value, col_bytes: ir.Value, accs: list[ir.Value]) -> None:
    """``mx[col + 8k : col + 8k + 8] = max(mx[...], accs[k])`` for every chunk ``k``."""
    for k, acc in enumerate(accs):
        off = builder.add(col_bytes, ir.Constant(_I64, 4 * LANES * k))
        ptr = builder.bitcast(builder.gep(mx_i8, [off]), _VEC.as_pointer())
        builder.store(_vmax(builder, acc, builder.load(ptr, align=4)), ptr, align=4)


@intrinsic
def table_fold_max(typingctx, table, codes, v, col, mx, chunks):
    """``mx[col:col + 8*chunks] = max(mx[...], s)`` with ``s = sum_u table[u, unit_u(codes[v]), col:...]``:
    the similarity of stored vector ``v`` to query-token lanes ``col..`` through a score table
    (:meth:`mvstore.codecs.base.Codec.score_table`). A table with 16 levels (``(2 * code_size, 16, width)``)
    has one unit per nibble of the code, low nibble first; one with 256 levels, one per byte.

    table: float32 3-D C array; codes: uint8 2-D C array; v, col: ints; mx: float32 1-D C array.
    """
    k = _literal_int(chunks)
    if k is None:
        return None
    sig = types.void(table, codes, v, col, mx, chunks)

    def codegen(context, builder, signature, args):
        tab = context.make_array(signature.args[0])(context, builder, args[0])
        cod = context.make_array(signature.args[1])(context, builder, args[1])
        mxa = context.make_array(signature.args[4])(context, builder, args[4])
        v_ = context.cast(builder, args[2], signature.args[2], types.int64)
        col_bytes = builder.mul(
            context.cast(builder, args[3], signature.args[3], types.int64), ir.Constant(_I64, 4)
        )
        t_shape = cgutils.unpack_tuple(builder, tab.shape, 3)
        t_stride = cgutils.unpack_tuple(builder, tab.strides, 3)
        c_shape = cgutils.unpack_tuple(builder, cod.shape, 2)
        c_stride = cgutils.unpack_tuple(builder, cod.strides, 2)
        t_i8 = builder.bitcast(tab.data, _I8P)
        row_codes = _byte_ptr(builder, cod.data, builder.mul(v_, c_stride[0]))
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_VEC, None)) for _ in range(k)]

        def fold(nibble: bool) -> None:
            with cgutils.for_range(builder, c_shape[1]) as loop:
                j = loop.index
                byte = builder.zext(builder.load(builder.gep(row_codes, [j])), _I64)
                if nibble:
                    lo = builder.mul(j, ir.Constant(_I64, 2))
                    hi = builder.add(lo, ir.Constant(_I64, 1))
                    units = [
                        (lo, builder.and_(byte, ir.Constant(_I64, 15))),
                        (hi, builder.lshr(byte, ir.Constant(_I64, 4))),
                    ]
                else:
                    units = [(j, byte)]
                offs = [
                    builder.add(
                        builder.add(builder.mul(u, t_stride[0]), builder.mul(level, t_stride[1])), col_bytes
                    )
                    for u, level in units
                ]
                for c, acc in enumerate(accs):
                    lane = ir.Constant(_I64, 4 * LANES * c)
                    total = builder.load(acc)
                    for o in offs:
                        total = builder.fadd(total, _load_vec(builder, t_i8, builder.add(o, lane)))
                    builder.store(total, acc)

        is_nibble = builder.icmp_signed("==", t_shape[1], ir.Constant(_I64, 16))
        with builder.if_else(is_nibble) as (nibble, whole_byte):
            with nibble:
                fold(True)
            with whole_byte:
                fold(False)
        _store_max(builder, builder.bitcast(mxa.data, _I8P), col_bytes, [builder.load(a) for a in accs])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_max(typingctx, mat, rows, a, b, col, mx, chunks):
    """``mx[col:col + 8*chunks] = max(mx[...], mat[rows[i], col:...] for i in [a, b))``.

    mat: float32 2-D C array; rows: integer 1-D C array; a, b, col: ints; mx: float32 1-D C array.
    """
    k = _literal_int(chunks)
    if k is None:
        return None
    sig = types.void(mat, rows, a, b, col, mx, chunks)

    def codegen(context, builder, signature, args):
        m = context.make_array(signature.args[0])(context, builder, args[0])
        r = context.make_array(signature.args[1])(context, builder, args[1])
        mxa = context.make_array(signature.args[5])(context, builder, args[5])
        a_, b_, c_ = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (2, 3, 4))
        col_bytes = builder.mul(c_, ir.Constant(_I64, 4))
        m_stride = cgutils.unpack_tuple(builder, m.strides, 2)
        m_i8 = builder.bitcast(m.data, _I8P)
        row_ty = signature.args[1].dtype
        ninf = ir.Constant(_VEC, [ir.Constant(_F32, float("-inf"))] * LANES)
        accs = [cgutils.alloca_once_value(builder, ninf) for _ in range(k)]
        n = builder.sub(b_, a_)
        with cgutils.for_range(builder, n) as loop:
            i = builder.add(a_, loop.index)
            row = builder.load(builder.gep(r.data, [i]))
            row = context.cast(builder, row, row_ty, types.int64)
            off = builder.add(builder.mul(row, m_stride[0]), col_bytes)
            for c, acc in enumerate(accs):
                x = _load_vec(builder, m_i8, builder.add(off, ir.Constant(_I64, 4 * LANES * c)))
                builder.store(_vmax(builder, builder.load(acc), x), acc)
        _store_max(builder, builder.bitcast(mxa.data, _I8P), col_bytes, [builder.load(acc) for acc in accs])
        return context.get_dummy_value()

    return sig, codegen

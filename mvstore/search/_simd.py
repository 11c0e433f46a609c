"""Explicit SIMD building blocks for the compiled search kernels (numba intrinsics emitting LLVM vector IR).

The hot loops of a CPU search work on float32 rows with one lane per query token: stage 1 computes every
query-centroid similarity (:func:`dot_rows`) and takes the max over the centroid rows a document holds
(:func:`rows_max`); stage 2 sums one score-table row per code unit of a stored vector
(:func:`table_fold_max`). As plain numba loops over a runtime width, the running values live in memory
(numba cannot prove they do not alias the rows) and widths under 32 lanes are not vectorized; BLAS, for the
similarities, first copies the whole centroid matrix into packed panels. These intrinsics keep the running
values in vector registers (``chunks`` x 8 float32 lanes, a compile-time constant). LLVM lowers the 8-lane
vectors to the target's SIMD (AVX2 here, two SSE/NEON registers elsewhere), so they are portable.

Callers pass ``chunks`` (and ``rows``) as literal constants, one specialization each. The intrinsics read
through raw pointers without bounds checks: they accept (at typing time) only C-contiguous arrays of the
documented dtypes, and every shape and index must be checked beforehand, which the checked entry points of
:mod:`mvstore.search._kernels` do. Every load and address computation names its LLVM type explicitly
(``typ=``, ``source_etype=``), so the IR does not depend on typed pointers.
"""

from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LANES", "MAX_CHUNKS", "DOT_ROWS", "table_fold_max", "rows_max", "dot_rows"]

#: float32 lanes per chunk (one AVX2 register)
LANES = 8
#: chunks one call keeps in registers (32 lanes); wider rows are processed in column blocks
MAX_CHUNKS = 4

_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_I64 = ir.IntType(64)
_I8 = ir.IntType(8)
_I8P = _I8.as_pointer()


def _literal_int(t: types.Type) -> int | None:
    if isinstance(t, types.IntegerLiteral) and 1 <= t.literal_value <= MAX_CHUNKS:
        return int(t.literal_value)
    return None


def _c_array(t: types.Type, dtype: types.Type | None, ndim: int) -> bool:
    """Whether ``t`` is a C-contiguous ``ndim``-D array of ``dtype`` (any integer dtype when None)."""
    if not (isinstance(t, types.Array) and t.ndim == ndim and t.layout == "C"):
        return False
    return isinstance(t.dtype, types.Integer) if dtype is None else t.dtype == dtype


def _ints(*ts: types.Type) -> bool:
    return all(isinstance(t, types.Integer) for t in ts)


class _Array(NamedTuple):
    """An array argument as the codegens address it: a byte pointer, shape and strides (in bytes)."""

    data: ir.Value
    shape: list
    strides: list


def _unpack(context, builder: ir.IRBuilder, signature, args) -> list:
    """An intrinsic's arguments for its codegen: arrays as :class:`_Array`, integers widened to int64."""
    out = []
    for ty, val in zip(signature.args, args):
        if isinstance(ty, types.Array):
            a = context.make_array(ty)(context, builder, val)
            shape = cgutils.unpack_tuple(builder, a.shape, ty.ndim)
            strides = cgutils.unpack_tuple(builder, a.strides, ty.ndim)
            out.append(_Array(builder.bitcast(a.data, _I8P), shape, strides))
        else:
            out.append(context.cast(builder, val, ty, types.int64))
    return out


def _col_bytes(builder: ir.IRBuilder, col: ir.Value) -> ir.Value:
    return builder.mul(col, ir.Constant(_I64, 4))  # float32 lanes -> bytes


def _byte_gep(builder: ir.IRBuilder, base_i8: ir.Value, offset: ir.Value) -> ir.Value:
    """``base_i8 + offset`` (bytes)."""
    return builder.gep(base_i8, [offset], source_etype=_I8)


def _load_vec(builder: ir.IRBuilder, base_i8: ir.Value, offset: ir.Value) -> ir.Value:
    return builder.load(
        builder.bitcast(_byte_gep(builder, base_i8, offset), _VEC.as_pointer()), align=4, typ=_VEC
    )


def _load_acc(builder: ir.IRBuilder, acc: ir.Value) -> ir.Value:
    """A running vector (an ``alloca`` of one ``<8 x float>``)."""
    return builder.load(acc, typ=_VEC)


def _vmax(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _store_max(builder: ir.IRBuilder, mx_i8: ir.Value, col_bytes: ir.Value, accs: list[ir.Value]) -> None:
    """``mx[col + 8k : col + 8k + 8] = max(mx[...], accs[k])`` for every chunk ``k``."""
    for k, acc in enumerate(accs):
        off = builder.add(col_bytes, ir.Constant(_I64, 4 * LANES * k))
        ptr = builder.bitcast(_byte_gep(builder, mx_i8, off), _VEC.as_pointer())
        builder.store(_vmax(builder, acc, builder.load(ptr, align=4, typ=_VEC)), ptr, align=4)


@intrinsic
def table_fold_max(typingctx, table, codes, v, col, mx, chunks):
    """``mx[col:col + 8*chunks] = max(mx[...], s)`` with ``s = sum_u table[u, unit_u(codes[v]), col:...]``:
    the similarity of stored vector ``v`` to query-token lanes ``col..`` through a score table
    (:meth:`mvstore.codecs.base.Codec.score_table`). A table with 16 levels (``(2 * code_size, 16, width)``)
    has one unit per nibble of the code, low nibble first; one with 256 levels, one per byte.

    table: float32 3-D C array; codes: uint8 2-D C array; v, col: ints; mx: float32 1-D C array.
    """
    k = _literal_int(chunks)
    if k is None or not (
        _c_array(table, types.float32, 3)
        and _c_array(codes, types.uint8, 2)
        and _ints(v, col)
        and _c_array(mx, types.float32, 1)
    ):
        return None
    sig = types.void(table, codes, v, col, mx, chunks)

    def codegen(context, builder, signature, args):
        tab, cod, v_, col, mxa = _unpack(context, builder, signature, args)[:5]
        col_bytes = _col_bytes(builder, col)
        row_codes = _byte_gep(builder, cod.data, builder.mul(v_, cod.strides[0]))
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_VEC, None)) for _ in range(k)]

        def fold(nibble: bool) -> None:
            with cgutils.for_range(builder, cod.shape[1]) as loop:
                j = loop.index
                byte = builder.zext(builder.load(_byte_gep(builder, row_codes, j), typ=_I8), _I64)
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
                        builder.add(builder.mul(u, tab.strides[0]), builder.mul(level, tab.strides[1])),
                        col_bytes,
                    )
                    for u, level in units
                ]
                for c, acc in enumerate(accs):
                    lane = ir.Constant(_I64, 4 * LANES * c)
                    total = _load_acc(builder, acc)
                    for o in offs:
                        total = builder.fadd(total, _load_vec(builder, tab.data, builder.add(o, lane)))
                    builder.store(total, acc)

        is_nibble = builder.icmp_signed("==", tab.shape[1], ir.Constant(_I64, 16))
        with builder.if_else(is_nibble) as (nibble, whole_byte):
            with nibble:
                fold(True)
            with whole_byte:
                fold(False)
        _store_max(builder, mxa.data, col_bytes, [_load_acc(builder, a) for a in accs])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_max(typingctx, mat, rows, a, b, col, mx, chunks):
    """``mx[col:col + 8*chunks] = max(mx[...], mat[rows[i], col:...] for i in [a, b))``.

    mat: float32 2-D C array; rows: integer 1-D array (any stride); a, b, col: ints; mx: float32 1-D C array.
    """
    k = _literal_int(chunks)
    if k is None or not (
        _c_array(mat, types.float32, 2)
        and isinstance(rows, types.Array)
        and rows.ndim == 1
        and isinstance(rows.dtype, types.Integer)
        and _ints(a, b, col)
        and _c_array(mx, types.float32, 1)
    ):
        return None
    sig = types.void(mat, rows, a, b, col, mx, chunks)

    def codegen(context, builder, signature, args):
        m, r, a_, b_, col, mxa = _unpack(context, builder, signature, args)[:6]
        col_bytes = _col_bytes(builder, col)
        row_ty = signature.args[1].dtype
        row_llty = context.get_data_type(row_ty)
        ninf = ir.Constant(_VEC, [ir.Constant(_F32, float("-inf"))] * LANES)
        accs = [cgutils.alloca_once_value(builder, ninf) for _ in range(k)]
        n = builder.sub(b_, a_)
        with cgutils.for_range(builder, n) as loop:
            i = builder.add(a_, loop.index)
            row = builder.load(
                builder.bitcast(
                    _byte_gep(builder, r.data, builder.mul(i, r.strides[0])), row_llty.as_pointer()
                ),
                typ=row_llty,
            )
            row = context.cast(builder, row, row_ty, types.int64)
            off = builder.add(builder.mul(row, m.strides[0]), col_bytes)
            for c, acc in enumerate(accs):
                x = _load_vec(builder, m.data, builder.add(off, ir.Constant(_I64, 4 * LANES * c)))
                builder.store(_vmax(builder, _load_acc(builder, acc), x), acc)
        _store_max(builder, mxa.data, col_bytes, [_load_acc(builder, acc) for acc in accs])
        return context.get_dummy_value()

    return sig, codegen


#: rows of ``a`` one :func:`dot_rows` call computes, by chunk count, measured best on AVX2 (16 vector
#: registers: ``rows * chunks`` running sums plus the broadcasts)
DOT_ROWS = {1: 8, 2: 4, 3: 3, 4: 3}


# one LLVM IR emitter for a register-blocked loop nest, kept whole (issue 17 keeps the measured kernels)
@intrinsic
def dot_rows(typingctx, a, bt, row, col, out, chunks, rows):  # noqa: C901
    """``out[row + r, col:col + 8*chunks] = a[row + r] @ bt[:, col:col + 8*chunks]`` for ``r < rows``: a
    block of a matrix product with the big operand ``a`` streamed as is (BLAS would first copy it into
    packed panels, which for a product as skinny as the query's dominates) and ``rows * chunks`` running
    sums in registers, accumulated by fused multiply-adds in order of the shared dimension.

    a: float32 2-D C array (n, d); bt: float32 2-D C array (d, width); row, col: ints; out: float32 2-D C
    array (n, width); chunks, rows: literal ints.
    """
    k = _literal_int(chunks)
    if k is None or not isinstance(rows, types.IntegerLiteral):
        return None
    if not (
        _c_array(a, types.float32, 2) and _c_array(bt, types.float32, 2) and _c_array(out, types.float32, 2)
    ):
        return None
    if not _ints(row, col):
        return None
    if not 1 <= rows.literal_value <= DOT_ROWS[k]:
        return None
    n_rows = int(rows.literal_value)
    sig = types.void(a, bt, row, col, out, chunks, rows)

    def codegen(context, builder, signature, args):
        am, bm, row_, col, om = _unpack(context, builder, signature, args)[:5]
        col_bytes = _col_bytes(builder, col)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]), "llvm.fmuladd.v8f32"
        )
        row_offs = [
            builder.mul(builder.add(row_, ir.Constant(_I64, r)), am.strides[0]) for r in range(n_rows)
        ]
        accs = [
            [cgutils.alloca_once_value(builder, ir.Constant(_VEC, None)) for _ in range(k)]
            for _ in range(n_rows)
        ]
        with cgutils.for_range(builder, am.shape[1]) as loop:
            d = loop.index
            b_off = builder.add(builder.mul(d, bm.strides[0]), col_bytes)
            d_bytes = builder.mul(d, ir.Constant(_I64, 4))
            splats = []
            for r in range(n_rows):
                x_ptr = builder.bitcast(
                    _byte_gep(builder, am.data, builder.add(row_offs[r], d_bytes)), _F32.as_pointer()
                )
                x = builder.load(x_ptr, align=4, typ=_F32)
                splats.append(
                    builder.shuffle_vector(
                        builder.insert_element(ir.Constant(_VEC, None), x, ir.Constant(ir.IntType(32), 0)),
                        ir.Constant(_VEC, None),
                        ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES),
                    )
                )
            for c in range(k):
                bv = _load_vec(builder, bm.data, builder.add(b_off, ir.Constant(_I64, 4 * LANES * c)))
                for r in range(n_rows):
                    builder.store(
                        builder.call(fmuladd, [splats[r], bv, _load_acc(builder, accs[r][c])]), accs[r][c]
                    )
        for r in range(n_rows):
            o_off = builder.add(
                builder.mul(builder.add(row_, ir.Constant(_I64, r)), om.strides[0]), col_bytes
            )
            for c in range(k):
                ptr = _byte_gep(builder, om.data, builder.add(o_off, ir.Constant(_I64, 4 * LANES * c)))
                builder.store(
                    _load_acc(builder, accs[r][c]), builder.bitcast(ptr, _VEC.as_pointer()), align=4
                )
        return context.get_dummy_value()

    return sig, codegen

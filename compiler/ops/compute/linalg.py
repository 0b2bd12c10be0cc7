"""Loop nests of the ops in ir/ops/linalg.py, written directly in lowered-form loop IR as
compute/scan.py writes cumsum's (TVM's te.extern): cumprod, topk, det and bitcast. The CPU
templates (compiler/ops/cpu/linalg.py) register them as externs.

Views. cumprod and topk see their tensors as (outer, axis, inner), det its input as
(matrices, n, n) and its output as (matrices,), bitcast both tensors as flat byte-width
unsigned integers: each view has the tensor's element count and row-major layout.

topk keeps, per row, its k best elements so far sorted in its outputs: each new element
moves the worse ones down one slot and lands where it belongs (insertion, O(n k) per row,
for the small k of detection heads and samplers). An element only beats a strictly better
one, so equal values keep the lower index first. det runs Gaussian elimination with partial
pivoting on a float64 copy of each matrix (a zero pivot column makes the determinant 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.elementwise import arith_dtype
from ember.compiler.ops.compute.scan import copy_loops, running_func
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.expr import INDEX, Expr, Var, const
from ember.ir.loop import Buffer, ForKind, PrimFunc
from ember.ir.passes import NOP


def _var(name: str) -> Var:
    return Var(name, INDEX)


def _axis_view(shape: Sequence[int], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


# ----------------------------------------------------------------------------- cumprod


def cumprod_func(name: str, shape: Sequence[int], dtype: str, axis: int, exclusive: bool,
                 reverse: bool, lanes: int, parallel: bool) -> PrimFunc:
    """out = the running product of x along `axis` (integers wrap: a product's low bits do
    not depend on the high bits dropped before)."""
    return running_func(name, shape, dtype, axis, exclusive, reverse, lanes, parallel,
                        lambda a, b: a * b, 1)


# ----------------------------------------------------------------------------- topk


def _beats(value: Expr, other: Expr, largest: bool) -> Expr:
    """Whether `value` belongs strictly before `other`; NaN ranks above every number."""
    if largest:
        better = value > other
        if E.is_float_dtype(value.dtype):
            better = better | (E.call("isnan", value) & E.logical_not(E.call("isnan", other)))
    else:
        better = value < other
        if E.is_float_dtype(value.dtype):
            better = better | (E.call("isnan", other) & E.logical_not(E.call("isnan", value)))
    return better


def topk_func(name: str, shape: Sequence[int], dtype: str, axis: int, k: int, largest: bool,
              parallel: bool) -> PrimFunc:
    """values, indices = the k best elements of x along `axis` (see the module docstring)."""
    outer, steps, inner = _axis_view(shape, axis)
    x = Buffer("x", (outer, steps, inner), dtype)
    values = Buffer("values", (outer, k, inner), dtype)
    indices = Buffer("indices", (outer, k, inner), "int64")
    params = (x, values, indices)
    if outer * inner * k == 0:
        return PrimFunc(name, params, NOP)
    work = arith_dtype(dtype)
    task, i, slot = _var("task"), _var("i"), _var("slot")
    o, c = E.floordiv(task, const(inner)), E.floormod(task, const(inner))
    j = const(k - 1) - slot  # slots from the last to the first
    previous = E.max_(j - const(1), const(0))  # clamped: read only where j >= 1
    new = E.cast(work, L.Load(x, (o, i, c)))

    def holds(position: Expr) -> Expr:
        # slots at or past i are still empty: only i elements have been seen
        return position < i

    def beaten(position: Expr) -> Expr:
        kept = E.cast(work, L.Load(values, (o, position, c)))
        return E.logical_not(holds(position)) | _beats(new, kept, largest)

    shift = L.seq(L.Store(values, (o, j, c), L.Load(values, (o, previous, c))),
                  L.Store(indices, (o, j, c), L.Load(indices, (o, previous, c))))
    place = L.seq(L.Store(values, (o, j, c), L.Load(x, (o, i, c))),
                  L.Store(indices, (o, j, c), E.cast("int64", i)))
    step = L.IfThenElse((j >= const(1)) & beaten(previous), shift,
                        L.IfThenElse(beaten(j), place))
    body = L.loop(i, steps, L.loop(slot, k, step))
    tasks = outer * inner
    kind = ForKind.PARALLEL if parallel and tasks > 1 else ForKind.SERIAL
    return PrimFunc(name, params, L.loop(task, tasks, body, kind))


# ----------------------------------------------------------------------------- det


def det_func(name: str, shape: Sequence[int], dtype: str, parallel: bool) -> PrimFunc:
    """out[m] = the determinant of matrix m of x (see the module docstring)."""
    n = shape[-1]
    count = math.prod(shape[:-2])
    x = Buffer("x", (count, n, n), dtype)
    out = Buffer("out", (count,), dtype)
    if count == 0:
        return PrimFunc(name, (x, out), NOP)
    work = "float64"
    a = Buffer("a", (n, n), work)
    det = Buffer("det", (1,), work)
    pivot_row = Buffer("pivot_row", (1,), INDEX)
    m, r, col, c = _var("m"), _var("r"), _var("col"), _var("c")
    zero = E.const(0, INDEX)

    def magnitude(row: Expr) -> Expr:
        return E.call("fabs", L.Load(a, (row, c)))

    copy = L.loop(r, n, L.loop(col, n, L.Store(a, (r, col),
                                               E.cast(work, L.Load(x, (m, r, col))))))
    # the row at or below c with the largest magnitude in column c (the first of equals)
    find = L.seq(
        L.Store(pivot_row, (zero,), c),
        L.loop(r, n, L.IfThenElse(
            (r > c) & (magnitude(r) > magnitude(L.Load(pivot_row, (zero,)))),
            L.Store(pivot_row, (zero,), r))),
    )
    p = _var("p")
    held = Var("held", work)
    swap = L.IfThenElse(E.ne(p, c), L.seq(
        L.loop(col, n, L.LetStmt(held, L.Load(a, (c, col)), L.seq(
            L.Store(a, (c, col), L.Load(a, (p, col))),
            L.Store(a, (p, col), held)))),
        L.Store(det, (zero,), -L.Load(det, (zero,))),
    ))
    pivot = L.Load(a, (c, c))
    factor = Var("factor", work)
    ratio = E.select(E.eq(pivot, E.const(0, work)), E.const(0, work),
                     L.Load(a, (r, c)) / pivot)
    eliminate = L.loop(r, n, L.IfThenElse(r > c, L.LetStmt(factor, ratio, L.loop(
        col, n, L.IfThenElse(col > c, L.Store(
            a, (r, col), L.Load(a, (r, col)) - factor * L.Load(a, (c, col))))))))
    column = L.seq(
        find,
        L.LetStmt(p, L.Load(pivot_row, (zero,)), swap),
        L.Store(det, (zero,), L.Load(det, (zero,)) * pivot),
        eliminate,
    )
    body = L.seq(
        copy,
        L.Store(det, (zero,), E.const(1, work)),
        L.loop(c, n, column),
        L.Store(out, (m,), E.cast(dtype, L.Load(det, (zero,)))),
    )
    body = L.Allocate(a, L.Allocate(det, L.Allocate(pivot_row, body)))
    kind = ForKind.PARALLEL if parallel and count > 1 else ForKind.SERIAL
    return PrimFunc(name, (x, out), L.loop(m, count, body, kind))


# ----------------------------------------------------------------------------- bitcast

#: the unsigned integer of each byte width: copying these moves bits and nothing else
_BITS = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}


def bitcast_func(name: str, shape: Sequence[int], width: int, lanes: int,
                 parallel: bool) -> PrimFunc:
    """out = x, both seen as unsigned integers of `width` bytes (a float copy could quiet a
    signalling NaN; a bool copy would normalize bytes other than 0 and 1)."""
    size = math.prod(shape)
    dtype = _BITS[width]
    x = Buffer("x", (size,), dtype)
    out = Buffer("out", (size,), dtype)
    if size == 0:
        return PrimFunc(name, (x, out), NOP)
    return PrimFunc(name, (x, out), copy_loops(x, out, lanes, parallel))


"""Loop nests of the opaque ops that tensor expressions cannot state: cumsum (a scan) and the
scatters (scatter_elements, scatter_nd), written directly in lowered-form loop IR, as TVM's
te.extern does. The CPU templates (compiler/ops/cpu/scan.py) register them as externs with
the vector width and the parallel choice of the machine.

Buffers. The parameters are the present inputs then the output, each the row-major tensor
seen through a view that makes the loops simple: cumsum sees `x` and `out` as
(outer, axis, inner); scatter_nd sees data/out as (rows addressed, slice), indices as
(updates, depth) and updates as (updates, slice). A view has the tensor's element count and
layout, so callers pass the arrays as they are. scatter_elements keeps the true shapes (its
indices may be smaller than data on every axis).

Loops. The innermost contiguous dimension runs in chunks of `lanes` (a VECTORIZED loop with a
guarded tail); the outermost independent loop is PARALLEL when asked. Scatters keep the order
of updates that may hit the same element: updates are applied in row-major order of the
indices, so with reduction "none" the last one wins, as in the numpy reference.

Indices are normalized (negative ones count from the end) and clamped to the axis, so a
compiled scatter never writes outside its output (see compute/injective.py's
[Note: reads stay in bounds]); an update aimed at an empty axis is dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from ember.compiler.ops.compute.elementwise import arith_dtype
from ember.compiler.ops.compute.injective import normalize_index
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.expr import INDEX, Expr, Var, const
from ember.ir.loop import Buffer, ForKind, PrimFunc, Stmt
from ember.ir.passes import NOP

#: Copies smaller than this many elements run on one thread.
_PARALLEL_COPY = 16 * 1024

# ----------------------------------------------------------------------------- loop helpers


def _var(name: str) -> Var:
    return Var(name, INDEX)


def chunked(extent: int, lanes: int, name: str,
            body: Callable[[Expr, Expr], Stmt]) -> tuple[int, Callable[[Expr], Stmt]]:
    """Loops over [0, extent) in chunks of `lanes`: returns (the number of chunks, a function
    of the chunk variable building `for v in lanes (vectorized): body(index, v)` with a guard
    when `lanes` does not divide `extent`)."""
    lanes = max(1, min(lanes, extent))
    chunks = -(-extent // lanes)

    def inner(chunk: Expr) -> Stmt:
        lane = _var(f"{name}.lane")
        index = chunk * const(lanes) + lane
        stmt = body(index, lane)
        if extent % lanes:
            stmt = L.IfThenElse(index < const(extent), stmt)
        kind = ForKind.VECTORIZED if lanes > 1 else ForKind.SERIAL
        return L.loop(lane, lanes, stmt, kind)

    return chunks, inner


def copy_loops(source: Buffer, target: Buffer, lanes: int, parallel: bool) -> Stmt:
    """target[...] = source[...] over two buffers of one shape: loops over the leading axes
    (the outermost parallel when asked) and vector chunks of the last one."""
    shape = list(source.shape)
    if not shape:
        return L.Store(target, (), L.Load(source, ()))
    chunk = _var("copy.chunk")
    lead = [_var(f"copy.{d}") for d in range(len(shape) - 1)]
    chunks, inner = chunked(shape[-1], lanes, "copy",
                            lambda index, lane: L.Store(target, (*lead, index),
                                                        L.Load(source, (*lead, index))))
    stmt: Stmt = L.loop(chunk, chunks, inner(chunk))
    for d in range(len(lead) - 1, -1, -1):
        stmt = L.loop(lead[d], shape[d], stmt)
    return _parallel_outermost(stmt) if parallel else stmt


def _parallel_outermost(stmt: Stmt) -> Stmt:
    """`stmt` with its outermost loop of more than one iteration parallel (size-1 leading
    axes, as the batch axis of a KV cache, would leave the copy on one thread)."""
    if not isinstance(stmt, L.For) or not isinstance(stmt.extent, E.IntImm):
        return stmt
    if stmt.extent.value > 1:
        return dataclasses.replace(stmt, kind=ForKind.PARALLEL)
    return dataclasses.replace(stmt, body=_parallel_outermost(stmt.body))


def combine(reduction: str, old: Expr, new: Expr) -> Expr:
    """What a scatter stores where `old` was: `new`, or both combined by `reduction` (each
    step rounds in the element's dtype, as numpy's ufunc.at does)."""
    if reduction == "none":
        return new
    dtype = old.dtype
    if dtype == "bool":  # numpy's add/mul/max/min of bools are or/and
        return E.logical_or(old, new) if reduction in ("add", "max") else \
            E.logical_and(old, new)
    wide = arith_dtype(dtype)
    a, b = E.cast(wide, old), E.cast(wide, new)
    value = {"add": lambda: a + b, "mul": lambda: a * b, "max": lambda: E.max_(a, b),
             "min": lambda: E.min_(a, b)}[reduction]()
    return E.cast(dtype, value)


# ----------------------------------------------------------------------------- cumsum


def running_func(name: str, shape: Sequence[int], dtype: str, axis: int, exclusive: bool,
                 reverse: bool, lanes: int, parallel: bool, combine: Callable[[Expr, Expr], Expr],
                 identity: int) -> PrimFunc:
    """out = the running `combine` of x along `axis` from `identity` (a running sum or product),
    accumulated in float32 for half floats (integers wrap). Vectorized across the axes inside
    `axis`; parallel over the outer axes and chunks of the inner ones."""
    outer, steps, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    x = Buffer("x", (outer, steps, inner), dtype)
    out = Buffer("out", (outer, steps, inner), dtype)
    if outer * steps * inner == 0:
        return PrimFunc(name, (x, out), NOP)
    acc_dtype = arith_dtype(dtype)
    lanes = max(1, min(lanes, inner))
    acc = Buffer("acc", (lanes,), acc_dtype)
    o, t = _var("o"), _var("t")
    step = const(steps - 1) - t if reverse else t

    def update(index: Expr, lane: Expr) -> Stmt:
        value = E.cast(acc_dtype, L.Load(x, (o, step, index)))
        accumulate = L.Store(acc, (lane,), combine(L.Load(acc, (lane,)), value))
        write = L.Store(out, (o, step, index), E.cast(dtype, L.Load(acc, (lane,))))
        return L.seq(write, accumulate) if exclusive else L.seq(accumulate, write)

    chunks, scan = chunked(inner, lanes, "i", update)
    _, reset = chunked(inner, lanes, "i.init",
                       lambda index, lane: L.Store(acc, (lane,), E.const(identity, acc_dtype)))
    task = _var("task")
    o_value, chunk = E.floordiv(task, const(chunks)), E.floormod(task, const(chunks))
    body = L.seq(reset(chunk), L.loop(t, steps, scan(chunk)))
    body = L.LetStmt(o, o_value, L.Allocate(acc, body))
    tasks = outer * chunks
    kind = ForKind.PARALLEL if parallel and tasks > 1 else ForKind.SERIAL
    return PrimFunc(name, (x, out), L.loop(task, tasks, body, kind))


def cumsum_func(name: str, shape: Sequence[int], dtype: str, axis: int, exclusive: bool,
                reverse: bool, lanes: int, parallel: bool) -> PrimFunc:
    """out = the running sum of x along `axis` (see ir/ops/reduce.py's cumsum)."""
    return running_func(name, shape, dtype, axis, exclusive, reverse, lanes, parallel,
                        lambda a, b: a + b, 0)


# ----------------------------------------------------------------------------- scatter_elements


def _nest(shape: Sequence[int], prefix: str, body: Callable[[list[Expr]], Stmt],
          outer_kind: ForKind = ForKind.SERIAL) -> Stmt:
    """Serial loops over every element of `shape` (the outermost of kind `outer_kind`)."""
    variables = [_var(f"{prefix}{d}") for d in range(len(shape))]
    stmt = body(list(variables))
    for d in range(len(shape) - 1, -1, -1):
        stmt = L.loop(variables[d], shape[d], stmt, outer_kind if d == 0 else ForKind.SERIAL)
    return stmt


def scatter_elements_func(name: str, data_shape: Sequence[int], dtype: str,
                          index_shape: Sequence[int], index_dtype: str, axis: int,
                          reduction: str, lanes: int, parallel: bool) -> PrimFunc:
    data = Buffer("data", tuple(data_shape), dtype)
    indices = Buffer("indices", tuple(index_shape), index_dtype)
    updates = Buffer("updates", tuple(index_shape), dtype)
    out = Buffer("out", tuple(data_shape), dtype)
    size = math.prod(data_shape)
    if size == 0:
        return PrimFunc(name, (data, indices, updates, out), NOP)
    copy = copy_loops(data, out, lanes, parallel and size >= _PARALLEL_COPY)
    if math.prod(index_shape) == 0 or data_shape[axis] == 0:
        return PrimFunc(name, (data, indices, updates, out), copy)

    def scatter(u: list[Expr]) -> Stmt:
        target = list(u)
        target[axis] = normalize_index(L.Load(indices, tuple(u)), data_shape[axis])
        old = L.Load(out, tuple(target))
        return L.Store(out, tuple(target), combine(reduction, old, L.Load(updates, tuple(u))))

    # Updates that collide differ only along `axis`, so an outer loop over another axis may
    # run in parallel.
    kind = ForKind.PARALLEL if parallel and axis != 0 and index_shape[0] > 1 else \
        ForKind.SERIAL
    return PrimFunc(name, (data, indices, updates, out),
                    L.seq(copy, _nest(index_shape, "u", scatter, kind)))


def _strides(shape: Sequence[int]) -> list[int]:
    strides, stride = [], 1
    for dim in reversed(shape):
        strides.append(stride)
        stride *= dim
    return strides[::-1]


# ----------------------------------------------------------------------------- scatter_nd


def scatter_nd_func(name: str, data_shape: Sequence[int], dtype: str,
                    index_shape: Sequence[int], index_dtype: str, reduction: str,
                    lanes: int, parallel: bool) -> PrimFunc:
    depth = index_shape[-1]
    addressed = data_shape[:depth]
    rows = math.prod(addressed)
    width = math.prod(data_shape[depth:])
    count = math.prod(index_shape[:-1])
    data = Buffer("data", (rows, width), dtype)
    out = Buffer("out", (rows, width), dtype)
    indices = Buffer("indices", (count, depth), index_dtype)
    updates = Buffer("updates", (count, width), dtype)
    params = (data, indices, updates, out)
    if rows * width == 0:
        return PrimFunc(name, params, NOP)
    copy = copy_loops(data, out, lanes, parallel and rows * width >= _PARALLEL_COPY)
    if count == 0:
        return PrimFunc(name, params, copy)
    k = _var("k")
    row: Expr = const(0)
    for j, (dim, stride) in enumerate(zip(addressed, _strides(addressed))):
        position = normalize_index(L.Load(indices, (k, const(j))), dim)
        row = row + position * const(stride)

    def update(index: Expr, lane: Expr) -> Stmt:
        old = L.Load(out, (target, index))
        return L.Store(out, (target, index),
                       combine(reduction, old, L.Load(updates, (k, index))))

    target = _var("row")
    chunks, inner = chunked(width, lanes, "s", update)
    chunk = _var("chunk")
    # Each chunk of the slice is its own column of elements: chunks may run in parallel,
    # while the updates (which may collide) stay in order inside each.
    body = L.loop(k, count, L.LetStmt(target, row, inner(chunk)))
    kind = ForKind.PARALLEL if parallel and chunks > 1 else ForKind.SERIAL
    return PrimFunc(name, params, L.seq(copy, L.loop(chunk, chunks, body, kind)))

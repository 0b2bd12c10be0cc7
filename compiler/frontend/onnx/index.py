"""Converters for ONNX's indexing operators: Gather, GatherElements, GatherND, Scatter,
ScatterElements, ScatterND, OneHot, Compress and ReverseSequence.

Index tensors may be run-time values (they do not decide shapes); the ember ops normalize
negative indices as they run. OneHot's depth and Compress's condition decide the output shape
and so must be constants.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, onnx_axis
from ember.ir.ops.index import SCATTER_REDUCTIONS


@converter("Gather")
def gather(ctx: ConvertContext) -> str:
    axis = onnx_axis(ctx, ctx.attr("axis", 0), ctx.type(0).rank)
    return ctx.emit("gather", [ctx.input(0), ctx.input(1)], {"axis": axis})


@converter("GatherElements", since=11)
def gather_elements(ctx: ConvertContext) -> str:
    axis = onnx_axis(ctx, ctx.attr("axis", 0), ctx.type(0).rank)
    return ctx.emit("gather_elements", [ctx.input(0), ctx.input(1)], {"axis": axis})


@converter("GatherND", since=11)
def gather_nd(ctx: ConvertContext) -> str:
    batch_dims = ctx.attr("batch_dims", 0)
    return ctx.emit("gather_nd", [ctx.input(0), ctx.input(1)], {"batch_dims": batch_dims})


def _reduction(ctx: ConvertContext) -> str:
    reduction = ctx.attr("reduction", "none")
    if reduction not in SCATTER_REDUCTIONS:
        ctx.fail(f"reduction {reduction!r} is not supported; ember supports "
                 f"{', '.join(SCATTER_REDUCTIONS)}")
    return reduction


@converter("Scatter", since=9)
@converter("ScatterElements", since=11)
def scatter_elements(ctx: ConvertContext) -> str:
    axis = onnx_axis(ctx, ctx.attr("axis", 0), ctx.type(0).rank)
    return ctx.emit("scatter_elements", [ctx.input(0), ctx.input(1), ctx.input(2)],
                    {"axis": axis, "reduction": _reduction(ctx)})


@converter("ScatterND", since=11)
def scatter_nd(ctx: ConvertContext) -> str:
    return ctx.emit("scatter_nd", [ctx.input(0), ctx.input(1), ctx.input(2)],
                    {"reduction": _reduction(ctx)})


@converter("OneHot", since=9)
def one_hot(ctx: ConvertContext) -> str:
    depth_value = np.asarray(ctx.require_const(1, "depth")).reshape(-1)
    if depth_value.size != 1:
        ctx.fail(f"depth must be a single value, got {depth_value.size} values")
    depth = int(depth_value[0])
    if depth < 0:
        ctx.fail(f"depth must be non-negative, got {depth}")
    rank = ctx.type(0).rank
    axis = ctx.attr("axis", -1)
    if not -rank - 1 <= axis <= rank:
        ctx.fail(f"axis {axis} is out of range for the output rank {rank + 1}")
    axis = axis + rank + 1 if axis < 0 else axis
    values = ctx.input(2)
    if ctx.type(2).shape != (2,):
        values = emit_reshape(ctx, values, (2,))
    return ctx.emit("one_hot", [ctx.input(0), values], {"depth": depth, "axis": axis})


@converter("Compress", since=9)
def compress(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    condition = np.asarray(ctx.require_const(1, "condition")).reshape(-1).astype(bool)
    data = ctx.input(0)
    axis = ctx.attr("axis", None)
    if axis is None:  # select from the flattened input
        data, axis, dim = emit_reshape(ctx, data, (t.size,)), 0, t.size
    else:
        axis = onnx_axis(ctx, axis, t.rank)
        dim = t.shape[axis]
    if condition[dim:].any():
        ctx.fail(f"condition selects index {dim + int(np.argmax(condition[dim:]))}, past the "
                 f"axis size {dim}")
    chosen = ctx.constant(np.flatnonzero(condition[:dim]).astype(np.int64))
    return ctx.emit("gather", [data, chosen], {"axis": axis})


@converter("ReverseSequence", since=10)
def reverse_sequence(ctx: ConvertContext) -> str:
    return ctx.emit("reverse_sequence", [ctx.input(0), ctx.input(1)],
                    {"batch_axis": ctx.attr("batch_axis", 1),
                     "time_axis": ctx.attr("time_axis", 0)})

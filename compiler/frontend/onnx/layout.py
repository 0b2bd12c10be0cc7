"""Converters for ONNX's padding and block-rearranging operators: Pad, CenterCropPad,
DepthToSpace, SpaceToDepth and Trilu.

Pads are compile-time constants; negative pads (which ONNX defines as cropping) become an ember
`slice` before the `pad`. DepthToSpace and SpaceToDepth are reshape -> transpose -> reshape.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import (
    const_ints,
    emit_reshape,
    emit_slice,
    onnx_axes,
)
from ember.ir.graph import numpy_dtype
from ember.ir.ops.tensor import PAD_MODES


def emit_pad(ctx: ConvertContext, value: str, pads: list[tuple[int, int]], mode: str,
             fill: str = "") -> str:
    """Pad `value` by (before, after) per axis; a negative amount crops that side instead."""
    shape = ctx.builder.types[value].shape
    if any(min(p) < 0 for p in pads):
        windows = {}
        for axis, (dim, (before, after)) in enumerate(zip(shape, pads)):
            start = max(-before, 0)
            windows[axis] = (start, max(dim - max(-after, 0), start), 1)
        value = emit_slice(ctx, value, windows)
    grow = tuple((max(before, 0), max(after, 0)) for before, after in pads)
    if not any(b or a for b, a in grow):
        return value
    inputs = [value, fill] if fill and mode == "constant" else [value]
    return ctx.emit("pad", inputs, {"pads": grow, "mode": mode})


@converter("Pad", since=2)
def pad(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    mode = ctx.attr("mode", "constant")
    if mode not in PAD_MODES:
        ctx.fail(f"mode {mode!r} is not supported; ember supports {', '.join(PAD_MODES)}")
    axes = list(range(t.rank))
    if ctx.opset < 11:
        amounts = list(ctx.attr("pads"))
        value = ctx.attr("value", 0.0)
        fill = ctx.constant(np.array(value).astype(numpy_dtype(t.dtype))) if value else ""
    else:
        amounts = const_ints(ctx, 1, "pads")
        fill = ctx.input(2)
        if ctx.opset >= 18 and ctx.has_input(3):
            axes = onnx_axes(ctx, const_ints(ctx, 3, "axes"), t.rank)
    if len(amounts) != 2 * len(axes):
        ctx.fail(f"pads {amounts} must hold 2 x {len(axes)} amounts (all begins, then all ends)")
    pairs = [(0, 0)] * t.rank
    for i, axis in enumerate(axes):
        pairs[axis] = (amounts[i], amounts[i + len(axes)])
    if fill and ctx.builder.types[fill].dtype != t.dtype:
        ctx.fail(f"constant_value has dtype {ctx.builder.types[fill].dtype}, the data {t.dtype}")
    return emit_pad(ctx, ctx.input(0), pairs, mode, fill)


@converter("CenterCropPad", since=18)
def center_crop_pad(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    target = const_ints(ctx, 1, "shape")
    axes = ctx.attr("axes", None)
    axes = list(range(t.rank)) if axes is None else onnx_axes(ctx, list(axes), t.rank)
    if len(target) != len(axes):
        ctx.fail(f"shape {target} must hold one size per axis of {axes}")
    pairs = [(0, 0)] * t.rank
    for axis, size in zip(axes, target):
        change = size - t.shape[axis]
        # the smaller half goes before, as in the ONNX definition; cropping is negative padding
        before = change // 2 if change >= 0 else -((-change) // 2)
        pairs[axis] = (before, change - before)
    return emit_pad(ctx, ctx.input(0), pairs, "constant")


def _block_size(ctx: ConvertContext) -> int:
    size = ctx.attr("blocksize")
    if size < 1:
        ctx.fail(f"blocksize must be positive, got {size}")
    rank = ctx.type(0).rank
    if rank != 4:
        ctx.fail(f"the input must be 4-D (N, C, H, W), got rank {rank}")
    return size


def _mode(ctx: ConvertContext) -> str:
    mode = ctx.attr("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        ctx.fail(f"mode {mode!r} is not supported; ember supports DCR and CRD")
    return mode


@converter("DepthToSpace")
def depth_to_space(ctx: ConvertContext) -> str:
    block = _block_size(ctx)
    n, c, h, w = ctx.type(0).shape
    if c % (block * block):
        ctx.fail(f"{c} channels are not a multiple of blocksize^2 = {block * block}")
    depth = c // (block * block)
    if _mode(ctx) == "DCR":
        blocks = emit_reshape(ctx, ctx.input(0), (n, block, block, depth, h, w))
        perm = (0, 3, 4, 1, 5, 2)
    else:
        blocks = emit_reshape(ctx, ctx.input(0), (n, depth, block, block, h, w))
        perm = (0, 1, 4, 2, 5, 3)
    moved = ctx.emit("transpose", [blocks], {"perm": perm})
    return emit_reshape(ctx, moved, (n, depth, h * block, w * block))


@converter("SpaceToDepth")
def space_to_depth(ctx: ConvertContext) -> str:
    block = _block_size(ctx)
    n, c, h, w = ctx.type(0).shape
    if h % block or w % block:
        ctx.fail(f"spatial size {h}x{w} is not a multiple of blocksize {block}")
    blocks = emit_reshape(ctx, ctx.input(0), (n, c, h // block, block, w // block, block))
    perm = (0, 3, 5, 1, 2, 4) if _mode(ctx) == "DCR" else (0, 1, 3, 5, 2, 4)
    moved = ctx.emit("transpose", [blocks], {"perm": perm})
    return emit_reshape(ctx, moved, (n, c * block * block, h // block, w // block))


@converter("Trilu", since=14)
def trilu(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    if t.rank < 2:
        ctx.fail(f"the input must have rank >= 2, got shape {t.shape}")
    k = const_ints(ctx, 1, "diagonal offset k")[0] if ctx.has_input(1) else 0
    rows, cols = t.shape[-2:]
    k = min(max(k, -rows), cols)  # past these every element is kept or dropped alike
    return ctx.emit("trilu", [ctx.input(0)], {"upper": bool(ctx.attr("upper", 1)), "k": k})

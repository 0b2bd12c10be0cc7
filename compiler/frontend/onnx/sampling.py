"""Converters for ONNX's sampling and image-patch ops: GridSample (opsets 16, 20, 22) and
RoiAlign (10, 16, 22) to ember's `grid_sample` and `roi_align` (ir/ops/sampling.py);
AffineGrid (20), Col2Im (18) and MaxUnpool (9, 11) decomposed into ember ops.

- AffineGrid: the grid is a constant base grid of normalized output positions (x, y[, z], 1)
  times each batch's transposed theta: one batched matmul.
- Col2Im: the columns' values are added into the padded image with one scatter_elements
  (reduction "add") at constant flat positions, then the padding is sliced off.
- MaxUnpool: the values are scattered into a zero tensor at their indices, which (as
  MaxPool's) count over the whole unpooled tensor; a larger output_shape pads at the end
  (onnx's reference).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.ir.graph import numpy_dtype
from ember.ir.ops.elementwise import FLOATS
from ember.ir.ops.sampling import PADDING_MODES

# ----------------------------------------------------------------------------- GridSample

_GRID_MODE_NAMES = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest",
                    "linear": "linear", "cubic": "cubic"}


@converter("GridSample", since=16)
def grid_sample(ctx: ConvertContext) -> str:
    x, grid = ctx.type(0), ctx.type(1)
    default = "bilinear" if ctx.opset < 20 else "linear"
    allowed = ("bilinear", "nearest", "bicubic") if ctx.opset < 20 else (
        "linear", "nearest", "cubic")
    mode = ctx.attr("mode", default)
    if mode not in allowed:
        ctx.fail(f"mode {mode!r} is not supported at opset {ctx.opset}; ember supports "
                 f"{', '.join(repr(m) for m in allowed)}")
    padding = ctx.attr("padding_mode", "zeros")
    if padding not in PADDING_MODES:
        ctx.fail(f"padding_mode {padding!r} is not supported; ember supports "
                 f"{', '.join(repr(p) for p in PADDING_MODES)}")
    if x.dtype not in FLOATS or grid.dtype not in FLOATS:
        ctx.fail(f"X ({x.dtype}) and grid ({grid.dtype}) must be floats")
    k = x.rank - 2
    if k < 1 or grid.rank != x.rank or grid.shape[-1] != k or grid.shape[0] != x.shape[0]:
        ctx.fail(f"X {x.shape} is (N, C, D1..Dk), so grid must be (N, O1..Ok, {k}), "
                 f"but it is {grid.shape}")
    return ctx.emit("grid_sample", [ctx.input(0), ctx.input(1)], {
        "mode": _GRID_MODE_NAMES[mode], "padding_mode": padding,
        "align_corners": bool(ctx.attr("align_corners", 0)),
    })


# ----------------------------------------------------------------------------- RoiAlign


def _roi_align(ctx: ConvertContext, half_pixel: bool) -> str:
    x, rois, batch_indices = ctx.type(0), ctx.type(1), ctx.type(2)
    if x.rank != 4 or rois.rank != 2 or rois.shape[1] != 4 or batch_indices.shape != (
            rois.shape[0],):
        ctx.fail(f"X {x.shape} must be (N, C, H, W), rois {rois.shape} (num_rois, 4) and "
                 f"batch_indices {batch_indices.shape} (num_rois,)")
    if x.dtype not in FLOATS or rois.dtype != x.dtype:
        ctx.fail(f"X ({x.dtype}) and rois ({rois.dtype}) must share one float dtype")
    mode = ctx.attr("mode", "avg")
    if mode not in ("avg", "max"):
        ctx.fail(f"mode {mode!r} is not supported; ember supports 'avg', 'max'")
    sampling_ratio = int(ctx.attr("sampling_ratio", 0))
    if sampling_ratio <= 0:
        ctx.fail("sampling_ratio 0 (a sample grid that adapts to each region's size at run "
                 "time) is not supported; ember needs a fixed sampling_ratio >= 1")
    return ctx.emit("roi_align", [ctx.input(0), ctx.input(1), ctx.input(2)], {
        "mode": mode,
        "output_height": int(ctx.attr("output_height", 1)),
        "output_width": int(ctx.attr("output_width", 1)),
        "sampling_ratio": sampling_ratio,
        "spatial_scale": float(np.float32(ctx.attr("spatial_scale", 1.0))),
        "half_pixel": half_pixel,
    })


@converter("RoiAlign", since=10)
def roi_align_10(ctx: ConvertContext) -> str:
    return _roi_align(ctx, half_pixel=False)


@converter("RoiAlign", since=16)
def roi_align_16(ctx: ConvertContext) -> str:
    mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if mode not in ("half_pixel", "output_half_pixel"):
        ctx.fail(f"coordinate_transformation_mode {mode!r} is not supported; ember supports "
                 f"'half_pixel', 'output_half_pixel'")
    return _roi_align(ctx, half_pixel=mode == "half_pixel")


# ----------------------------------------------------------------------------- AffineGrid


def _normalized_positions(length: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return np.linspace(-1.0, 1.0, length) if length > 1 else np.zeros(1)
    return (np.arange(length) * 2.0 + 1.0) / length - 1.0


@converter("AffineGrid", since=20)
def affine_grid(ctx: ConvertContext) -> str:
    theta = ctx.type(0)
    size = [int(s) for s in np.asarray(ctx.require_const(1, "size")).reshape(-1)]
    spatial = size[2:]
    k = len(spatial)
    if k not in (2, 3) or theta.shape != (size[0], k, k + 1):
        ctx.fail(f"theta {theta.shape} must be (N, k, k + 1) for size {size} "
                 f"(N, C, H, W) or (N, C, D, H, W)")
    if theta.dtype not in FLOATS:
        ctx.fail(f"theta has dtype {theta.dtype}; AffineGrid accepts {', '.join(FLOATS)}")
    align = bool(ctx.attr("align_corners", 0))
    # positions (x, y[, z], 1), with x along the innermost axis
    axes = [_normalized_positions(d, align) for d in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    columns = [m.reshape(-1) for m in reversed(mesh)] + [np.ones(math.prod(spatial))]
    base = np.stack(columns, axis=1)[None].astype(numpy_dtype(theta.dtype))
    transposed = ctx.emit("transpose", [ctx.input(0)], {"perm": (0, 2, 1)})
    grid = ctx.emit("matmul", [ctx.constant(base), transposed])
    return ctx.emit("reshape", [grid], {"shape": (size[0], *spatial, k)})


# ----------------------------------------------------------------------------- Col2Im


def _ints(ctx: ConvertContext, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in ctx.attr(name, default)]


@converter("Col2Im", since=18)
def col2im(ctx: ConvertContext) -> str:
    x = ctx.type(0)
    image = [int(v) for v in np.asarray(ctx.require_const(1, "image_shape")).reshape(-1)]
    block = [int(v) for v in np.asarray(ctx.require_const(2, "block_shape")).reshape(-1)]
    k = len(image)
    if len(block) != k or k == 0:
        ctx.fail(f"image_shape {image} and block_shape {block} must have one entry per "
                 f"spatial axis")
    dilations = _ints(ctx, "dilations", [1] * k)
    strides = _ints(ctx, "strides", [1] * k)
    pads = _ints(ctx, "pads", [0] * (2 * k))
    if len(dilations) != k or len(strides) != k or len(pads) != 2 * k:
        ctx.fail(f"dilations {dilations}, strides {strides} and pads {pads} must have "
                 f"{k}, {k} and {2 * k} entries")
    padded = [d + pads[i] + pads[i + k] for i, d in enumerate(image)]
    blocks = [(p - (dilations[i] * (block[i] - 1) + 1)) // strides[i] + 1
              for i, p in enumerate(padded)]
    kernel = math.prod(block)
    if x.rank != 3 or x.shape[1] % kernel or x.shape[2] != math.prod(blocks):
        ctx.fail(f"input {x.shape} must be (N, C * {kernel}, {math.prod(blocks)}) for "
                 f"image_shape {image}, block_shape {block}")
    n, channels = x.shape[0], x.shape[1] // kernel
    # the padded-image flat position of each (kernel offset, block) column entry
    positions = np.zeros((kernel, math.prod(blocks)), np.int64)
    for offset, tap in enumerate(itertools.product(*(range(b) for b in block))):
        for index, where in enumerate(itertools.product(*(range(b) for b in blocks))):
            flat = 0
            for axis in range(k):
                coordinate = where[axis] * strides[axis] + tap[axis] * dilations[axis]
                flat = flat * padded[axis] + coordinate
            positions[offset, index] = flat
    indices = np.broadcast_to(positions.reshape(1, 1, -1), (n, channels, positions.size))
    values = ctx.emit("reshape", [ctx.input(0)], {"shape": (n, channels, positions.size)})
    zeros = ctx.constant(np.zeros((n, channels, math.prod(padded)), numpy_dtype(x.dtype)))
    summed = ctx.emit("scatter_elements", [zeros, ctx.constant(indices.copy()), values],
                      {"axis": 2, "reduction": "add"})
    result = ctx.emit("reshape", [summed], {"shape": (n, channels, *padded)})
    if not any(pads):
        return result
    return ctx.emit("slice", [result], {
        "starts": (0, 0, *pads[:k]),
        "ends": (n, channels, *(p - pads[k + i] for i, p in enumerate(padded))),
        "steps": (1,) * (k + 2),
    })


# ----------------------------------------------------------------------------- MaxUnpool


@converter("MaxUnpool", since=9)
def max_unpool(ctx: ConvertContext) -> str:
    x, indices = ctx.type(0), ctx.type(1)
    k = x.rank - 2
    kernel = _ints(ctx, "kernel_shape", [])
    strides = _ints(ctx, "strides", [1] * k)
    pads = _ints(ctx, "pads", [0] * (2 * k))
    if k < 1 or len(kernel) != k or len(strides) != k or len(pads) != 2 * k:
        ctx.fail(f"X {x.shape} needs kernel_shape, strides and pads for {k} spatial axes; "
                 f"got {kernel}, {strides}, {pads}")
    if indices.shape != x.shape:
        ctx.fail(f"I {indices.shape} must have the shape of X {x.shape}")
    inferred = (*x.shape[:2], *((d - 1) * strides[i] + kernel[i] - pads[i] - pads[i + k]
                                for i, d in enumerate(x.shape[2:])))
    shape = inferred
    if ctx.has_input(2):
        shape = tuple(int(v) for v in
                      np.asarray(ctx.require_const(2, "output_shape")).reshape(-1))
        if len(shape) != x.rank or any(s < d for s, d in zip(shape, inferred)):
            ctx.fail(f"output_shape {list(shape)} must have {x.rank} entries, each at least "
                     f"the unpooled shape {list(inferred)}")
    flat_values = ctx.emit("reshape", [ctx.input(0)], {"shape": (math.prod(x.shape),)})
    flat_indices = ctx.emit("reshape", [ctx.input(1)], {"shape": (math.prod(x.shape),)})
    zeros = ctx.constant(np.zeros(math.prod(inferred), numpy_dtype(x.dtype)))
    scattered = ctx.emit("scatter_elements", [zeros, flat_indices, flat_values], {"axis": 0})
    result = ctx.emit("reshape", [scattered], {"shape": inferred})
    if shape == inferred:
        return result
    # the indices count over the unpooled shape; a larger output_shape pads at the end
    return ctx.emit("pad", [result], {"pads": tuple((0, s - d) for s, d in zip(shape, inferred))})

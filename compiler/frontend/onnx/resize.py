"""Converters for ONNX's Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9) to ember's
`resize` op (ir/ops/resize.py).

The converter resolves everything the op needs at compile time: the output shape and the
per-axis scale from `scales` or `sizes` (inputs since opset 9/10: their values are required
constants, and graph-input ones specialize the module at run time), `axes`,
`keep_aspect_ratio_policy` and tf_crop_and_resize's `roi`, all expanded to every axis. Scales
and output sizes follow onnx's reference implementation, the conformance oracle: from
scales, out = floor(in * scale); from sizes, scale = out / in (or, keeping the aspect ratio,
the smallest or largest of those, with out = round-half-up(in * scale)).

Resize-10 and Upsample map with "asymmetric" coordinates and, for nearest, ONNX Runtime's rule
for those opsets (floor when upsampling, ceil when downsampling; ember's nearest_mode "simple").
"""

from __future__ import annotations

import math

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.ir.ops.elementwise import FLOATS, INTS
from ember.ir.ops.resize import COORDINATE_MODES, NEAREST_MODES

_POLICIES = ("stretch", "not_larger", "not_smaller")


def _given(ctx: ConvertContext, index: int) -> bool:
    """Whether optional input `index` is present and not an empty tensor (Resize-11 passes
    an empty scales or roi for "absent")."""
    return ctx.has_input(index) and math.prod(ctx.type(index).shape) > 0


def _check_input(ctx: ConvertContext) -> tuple[int, ...]:
    x = ctx.type(0)
    if x.dtype not in FLOATS + INTS:
        ctx.fail(f"input X has dtype {x.dtype}; ember resizes {', '.join(FLOATS + INTS)}")
    if x.rank == 0:
        ctx.fail("input X is a scalar; Resize needs at least one axis")
    return x.shape


def _float_list(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values).reshape(-1)]


def _from_scales(ctx: ConvertContext, shape: tuple[int, ...], axes: list[int],
                 scales: list[float]) -> tuple[list[int], list[float]]:
    if len(scales) != len(axes):
        ctx.fail(f"scales {scales} must have {len(axes)} entries, one per resized axis")
    if any(not s > 0 for s in scales):
        ctx.fail(f"scales {scales} must be positive")
    full_scales = [1.0] * len(shape)
    for axis, scale in zip(axes, scales):
        full_scales[axis] = scale
    sizes = [int(scale * dim) for scale, dim in zip(full_scales, shape)]
    return sizes, full_scales


def _from_sizes(ctx: ConvertContext, shape: tuple[int, ...], axes: list[int],
                sizes: list[int], policy: str) -> tuple[list[int], list[float]]:
    if len(sizes) != len(axes):
        ctx.fail(f"sizes {sizes} must have {len(axes)} entries, one per resized axis")
    if any(s < 0 for s in sizes):
        ctx.fail(f"sizes {sizes} must not be negative")
    full_sizes = list(shape)
    for axis, size in zip(axes, sizes):
        if shape[axis] == 0 and size != 0:
            ctx.fail(f"axis {axis} of X {shape} is empty and cannot be resized to {size}")
        full_sizes[axis] = size
    scales = [out / dim if dim else 1.0 for out, dim in zip(full_sizes, shape)]
    if policy == "stretch":
        return full_sizes, scales
    pick = min if policy == "not_larger" else max
    scale = pick(scales[axis] for axis in axes)
    for axis in axes:
        scales[axis] = scale
        full_sizes[axis] = int(scale * shape[axis] + 0.5)
    return full_sizes, scales


def _axes(ctx: ConvertContext, rank: int) -> list[int]:
    axes = ctx.attr("axes", None)
    if axes is None:
        return list(range(rank))
    resolved = []
    for axis in axes:
        if not -rank <= axis < rank:
            ctx.fail(f"axis {axis} in axes {list(axes)} is out of range for rank {rank}")
        resolved.append(axis % rank)
    if len(set(resolved)) != len(resolved):
        ctx.fail(f"axes {list(axes)} repeat an axis")
    return resolved


def _choice(ctx: ConvertContext, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = ctx.attr(name, default)
    if value not in allowed:
        ctx.fail(f"{name} {value!r} is not supported; ember supports "
                 f"{', '.join(repr(v) for v in allowed)}")
    return value


@converter("Resize", since=11)
def resize(ctx: ConvertContext) -> str:
    shape = _check_input(ctx)
    rank = len(shape)
    mode = _choice(ctx, "mode", "nearest", ("nearest", "linear", "cubic"))
    coordinate_mode = _choice(ctx, "coordinate_transformation_mode", "half_pixel",
                              tuple(m for m in COORDINATE_MODES))
    nearest_mode = _choice(ctx, "nearest_mode", "round_prefer_floor",
                           tuple(m for m in NEAREST_MODES if m != "simple"))
    policy = _choice(ctx, "keep_aspect_ratio_policy", "stretch", _POLICIES)
    antialias = bool(ctx.attr("antialias", 0))
    if antialias and mode == "nearest":
        ctx.fail("antialias is defined for the linear and cubic modes only, not 'nearest'")
    axes = _axes(ctx, rank)

    has_scales, has_sizes = _given(ctx, 2), _given(ctx, 3)
    if has_scales == has_sizes:
        ctx.fail("exactly one of the inputs scales and sizes must be given (and not empty)")
    if has_scales:
        scales = _float_list(ctx.require_const(2, "scales"))
        sizes, full_scales = _from_scales(ctx, shape, axes, scales)
    else:
        wanted = [int(s) for s in np.asarray(ctx.require_const(3, "sizes")).reshape(-1)]
        sizes, full_scales = _from_sizes(ctx, shape, axes, wanted, policy)

    roi: list[float] = []
    if coordinate_mode == "tf_crop_and_resize":
        if not _given(ctx, 1):
            ctx.fail("coordinate_transformation_mode 'tf_crop_and_resize' needs the roi input")
        given = _float_list(ctx.require_const(1, "roi"))
        if len(given) != 2 * len(axes):
            ctx.fail(f"roi {given} must have 2 * {len(axes)} entries (starts, then ends)")
        roi = [0.0] * rank + [1.0] * rank
        for k, axis in enumerate(axes):
            roi[axis], roi[rank + axis] = given[k], given[len(axes) + k]

    return ctx.emit("resize", [ctx.input(0)], {
        "sizes": tuple(sizes),
        "scales": tuple(full_scales),
        "roi": tuple(roi),
        "mode": mode,
        "coordinate_mode": coordinate_mode,
        "nearest_mode": nearest_mode,
        "cubic_coeff_a": float(np.float32(ctx.attr("cubic_coeff_a", -0.75))),
        "exclude_outside": bool(ctx.attr("exclude_outside", 0)),
        "extrapolation_value": float(np.float32(ctx.attr("extrapolation_value", 0.0))),
        "antialias": antialias,
    })


def _asymmetric_resize(ctx: ConvertContext, scales: list[float], modes: tuple[str, ...]) -> str:
    """Resize-10 and Upsample: scales for every axis, asymmetric coordinates."""
    shape = _check_input(ctx)
    mode = _choice(ctx, "mode", "nearest", modes)
    sizes, full_scales = _from_scales(ctx, shape, list(range(len(shape))), scales)
    return ctx.emit("resize", [ctx.input(0)], {
        "sizes": tuple(sizes),
        "scales": tuple(full_scales),
        "mode": "linear" if mode == "bilinear" else mode,
        "coordinate_mode": "asymmetric",
        "nearest_mode": "simple",
    })


@converter("Resize", since=10)
def resize_10(ctx: ConvertContext) -> str:
    return _asymmetric_resize(ctx, _float_list(ctx.require_const(1, "scales")),
                              ("nearest", "linear"))


@converter("Upsample", since=7)
def upsample_7(ctx: ConvertContext) -> str:
    return _asymmetric_resize(ctx, [float(np.float32(s)) for s in ctx.attr("scales")],
                              ("nearest", "linear", "bilinear"))


@converter("Upsample", since=9)
def upsample_9(ctx: ConvertContext) -> str:
    return _asymmetric_resize(ctx, _float_list(ctx.require_const(1, "scales")),
                              ("nearest", "linear", "bilinear"))

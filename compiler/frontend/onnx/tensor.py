"""Converters for ONNX's tensor and shape operators: constants and shape queries, reshapes,
transpose, concat, split, slice, expand and tile.

Shapes are static in ember, so Shape, Size, ConstantOfShape, EyeLike, Range and NonZero become
constants, and every input that decides an output shape (Reshape's shape, Slice's bounds,
Split's sizes, ...) must be a compile-time constant (`ctx.require_const`); when one is computed
from graph inputs, `ember.compile` specializes the module on their values at run time. Squeeze,
Unsqueeze and Flatten become ember `reshape`; Split becomes one `slice` per output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.errors import ShapeError
from ember.ir.graph import numpy_dtype
from ember.ir.ops.registry import broadcast_shapes

# ----------------------------------------------------------------------------- helpers
# Shared with the other converter modules of this family (index.py, layout.py).


def const_ints(ctx: ConvertContext, index: int, what: str) -> list[int]:
    """Input `index`, which must be a compile-time constant, as a list of Python ints."""
    return [int(v) for v in np.asarray(ctx.require_const(index, what)).reshape(-1)]


def onnx_axis(ctx: ConvertContext, axis: int, rank: int, what: str = "axis") -> int:
    """An ONNX axis (negative counts from the back) in [0, rank)."""
    if not -rank <= axis < rank:
        ctx.fail(f"{what} {axis} is out of range for rank {rank} (accepted: [{-rank}, {rank - 1}])")
    return axis % rank


def onnx_axes(ctx: ConvertContext, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    """ONNX axes normalized to [0, rank); repeats are an error."""
    normalized = [onnx_axis(ctx, a, rank, what) for a in axes]
    if len(set(normalized)) != len(normalized):
        ctx.fail(f"{what} {list(axes)} name an axis twice (rank {rank})")
    return normalized


def emit_reshape(ctx: ConvertContext, value: str, shape: Sequence[int]) -> str:
    return ctx.emit("reshape", [value], {"shape": tuple(int(d) for d in shape)})


def clamp_slice(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """ONNX Slice bounds (negative from the end, any magnitude) clamped into ember `slice`
    form: 0 <= start <= dim and -1 <= end <= dim, end -1 only for a negative step."""
    if dim == 0:
        return 0, 0, step
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim), step
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step


def emit_slice(ctx: ConvertContext, value: str,
               windows: Mapping[int, tuple[int, int, int]]) -> str:
    """An ember `slice` of `value` taking the clamped (start, end, step) window `windows[axis]`
    on the axes named and everything on the others."""
    shape = ctx.builder.types[value].shape
    bounds = [clamp_slice(dim, *windows.get(axis, (0, dim, 1))) for axis, dim in enumerate(shape)]
    starts, ends, steps = zip(*bounds) if bounds else ((), (), ())
    return ctx.emit("slice", [value], {"starts": starts, "ends": ends, "steps": steps})


# ----------------------------------------------------------------------------- constants


@converter("Identity")
def identity(ctx: ConvertContext) -> str:
    return ctx.input(0)


def _dense_sparse(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim <= 1:  # linear indices into the flattened tensor
        dense.reshape(-1)[indices.reshape(-1)] = values.reshape(-1)
    else:  # one row of coordinates per value
        dense[tuple(indices.T)] = values
    return dense


@converter("Constant")
def constant(ctx: ConvertContext) -> str:
    given = list(ctx.node.attribute)
    if len(given) != 1:
        ctx.fail(f"exactly one value attribute is expected, got {[a.name for a in given]}")
    attr = given[0]
    if attr.name == "sparse_value":
        return ctx.constant(_dense_sparse(attr.sparse_tensor))
    value = ctx.attr(attr.name)
    if attr.name == "value":
        return ctx.constant(value)
    if attr.name in ("value_float", "value_floats"):
        return ctx.constant(value, np.float32)
    if attr.name in ("value_int", "value_ints"):
        return ctx.constant(value, np.int64)
    if attr.name in ("value_string", "value_strings"):
        return ctx.constant(np.array(value, dtype=object))
    ctx.fail(f"attribute {attr.name!r} is not a Constant value attribute")


@converter("Shape")
def shape(ctx: ConvertContext) -> str:
    dims = ctx.type(0).shape
    # start/end (opset 15) follow Python slicing: negative counts from the back, then clamped.
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return ctx.constant(np.array(dims[start:end], dtype=np.int64))


@converter("Size")
def size(ctx: ConvertContext) -> str:
    return ctx.constant(np.array(ctx.type(0).size, dtype=np.int64))


@converter("ConstantOfShape", since=9)
def constant_of_shape(ctx: ConvertContext) -> str:
    dims = const_ints(ctx, 0, "output shape")
    if any(d < 0 for d in dims):
        ctx.fail(f"output shape {dims} has negative dimensions")
    value = ctx.attr("value", None)
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        ctx.fail(f"attribute 'value' must hold one element, got {fill.size}")
    return ctx.constant(np.full(dims, fill[0], dtype=fill.dtype))


@converter("EyeLike", since=9)
def eye_like(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    if t.rank != 2:
        ctx.fail(f"the input must have rank 2, got shape {t.shape}")
    elem = ctx.attr("dtype", None)
    dtype = numpy_dtype(t.dtype) if elem is None else helper.tensor_dtype_to_np_dtype(elem)
    return ctx.constant(np.eye(t.shape[0], t.shape[1], k=ctx.attr("k", 0), dtype=dtype))


@converter("Range", since=11)
def range_(ctx: ConvertContext) -> str:
    values = [ctx.const(i) for i in range(3)]
    if any(v is None for v in values):
        missing = [i for i, v in enumerate(values) if v is None]
        runtime = [ctx.node.input[i] for i in missing]
        ctx.needs_values(
            missing,
            f"inputs {runtime} are computed at run time, so the output length is data-dependent; "
            f"ember folds Range only when start, limit and delta are constants (run-time ranges "
            f"come with shape specialization)"
        )
    start, limit, delta = (np.asarray(v).reshape(()) for v in values)
    dtype = start.dtype
    if delta == 0:
        ctx.fail("delta is 0")
    if dtype.kind in "iu":
        begin, stop, step = int(start), int(limit), int(delta)
        count = max(-((begin - stop) // step), 0)  # ceil((stop - begin) / step)
        return ctx.constant(begin + np.arange(count, dtype=np.int64) * step, dtype)
    # float16/bfloat16 accumulate in float32 (opset 27's default stash_type); exact for others
    wide = np.float64 if dtype == np.float64 else np.float32
    begin, stop, step = (np.asarray(v, wide) for v in (start, limit, delta))
    count = max(math.ceil(float((stop - begin) / step)), 0)
    return ctx.constant((begin + np.arange(count, dtype=wide) * step).astype(dtype))


@converter("NonZero", since=9)
def nonzero(ctx: ConvertContext) -> str:
    data = ctx.const(0)
    if data is None:
        # Specializing on the data compiles once per distinct input value: correct, and the
        # only way to a static shape.
        ctx.needs_values(
            [0],
            f"NonZero of the run-time tensor {ctx.node.input[0]!r} has a data-dependent output "
            f"shape (one column per nonzero element), which a statically shaped ember graph "
            f"cannot hold; ember folds NonZero only when its input is a constant"
        )
    if data.ndim == 0:
        return ctx.constant(np.zeros((0, int(bool(data))), dtype=np.int64))
    return ctx.constant(np.array(np.nonzero(data), dtype=np.int64).reshape(data.ndim, -1))


# ----------------------------------------------------------------------------- reshapes


def resolve_reshape(ctx: ConvertContext, dims: Sequence[int], target: Sequence[int],
                    allowzero: bool) -> tuple[int, ...]:
    """ONNX Reshape's target shape with 0 (copy the input dim, unless allowzero) and one -1
    (inferred) resolved."""
    shape = list(target)
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(dims):
                ctx.fail(f"shape {list(target)} copies dim {i} (0), but the input {tuple(dims)} "
                         f"has rank {len(dims)}")
            shape[i] = dims[i]
        elif d < -1:
            ctx.fail(f"shape {list(target)} has the invalid dimension {d}")
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1:
        ctx.fail(f"shape {list(target)} has more than one -1")
    total = math.prod(dims)
    if unknown:
        if allowzero and 0 in shape:
            ctx.fail(f"shape {list(target)} has both -1 and 0 with allowzero=1")
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or total % known:
            ctx.fail(f"cannot reshape {tuple(dims)} ({total} elements) to {list(target)}: "
                     f"{total} is not a multiple of {known}")
        shape[unknown[0]] = total // known
    return tuple(shape)


@converter("Reshape", since=5)
def reshape(ctx: ConvertContext) -> str:
    target = const_ints(ctx, 1, "target shape")
    shape = resolve_reshape(ctx, ctx.type(0).shape, target, bool(ctx.attr("allowzero", 0)))
    return emit_reshape(ctx, ctx.input(0), shape)


@converter("Flatten")
def flatten(ctx: ConvertContext) -> str:
    dims = ctx.type(0).shape
    axis = ctx.attr("axis", 1)
    if not -len(dims) <= axis <= len(dims):
        ctx.fail(f"axis {axis} is out of range for rank {len(dims)}")
    axis = axis + len(dims) if axis < 0 else axis
    return emit_reshape(ctx, ctx.input(0), (math.prod(dims[:axis]), math.prod(dims[axis:])))


def _squeeze_axes(ctx: ConvertContext) -> list[int] | None:
    if ctx.opset < 13:
        axes = ctx.attr("axes", None)
        return None if axes is None else list(axes)
    return const_ints(ctx, 1, "axes") if ctx.has_input(1) else None


@converter("Squeeze")
def squeeze(ctx: ConvertContext) -> str:
    dims = ctx.type(0).shape
    axes = _squeeze_axes(ctx)
    if axes is None:
        drop = {i for i, d in enumerate(dims) if d == 1}
    else:
        drop = set(onnx_axes(ctx, axes, len(dims)))
        wide = [a for a in sorted(drop) if dims[a] != 1]
        if wide:
            ctx.fail(f"cannot squeeze axes {wide} of shape {tuple(dims)}: their size is not 1")
    return emit_reshape(ctx, ctx.input(0), [d for i, d in enumerate(dims) if i not in drop])


@converter("Unsqueeze")
def unsqueeze(ctx: ConvertContext) -> str:
    dims = ctx.type(0).shape
    if ctx.opset < 13:
        axes = list(ctx.attr("axes"))
    else:
        axes = const_ints(ctx, 1, "axes")
    rank = len(dims) + len(axes)
    inserted = set(onnx_axes(ctx, axes, rank))
    rest = iter(dims)
    return emit_reshape(ctx, ctx.input(0), [1 if i in inserted else next(rest)
                                            for i in range(rank)])


# ----------------------------------------------------------------------------- layout


@converter("Transpose")
def transpose(ctx: ConvertContext) -> str:
    rank = ctx.type(0).rank
    perm = ctx.attr("perm", None)
    perm = tuple(reversed(range(rank))) if perm is None else tuple(perm)
    return ctx.emit("transpose", [ctx.input(0)], {"perm": perm})


@converter("Concat")
def concat(ctx: ConvertContext) -> str:
    inputs = [v for v in ctx.inputs() if v]
    rank = ctx.type(0).rank
    axis = onnx_axis(ctx, ctx.attr("axis", 1) if ctx.opset < 4 else ctx.attr("axis"), rank)
    return ctx.emit("concat", inputs, {"axis": axis})


def _split_sizes(ctx: ConvertContext, dim: int, count: int) -> list[int]:
    if ctx.opset >= 13 and ctx.has_input(1):
        sizes = const_ints(ctx, 1, "split sizes")
    elif ctx.opset < 13 and ctx.attr("split", None) is not None:
        sizes = list(ctx.attr("split"))
    else:
        parts = ctx.attr("num_outputs", count) if ctx.opset >= 18 else count
        if parts != count:
            ctx.fail(f"num_outputs is {parts} but the node has {count} outputs")
        if dim % parts and ctx.opset < 18:  # opset 18 lets the last chunk be smaller
            ctx.fail(f"cannot split an axis of size {dim} into {parts} equal parts")
        chunk = -(-dim // parts)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
        if sizes[-1] < 0:
            ctx.fail(f"cannot split an axis of size {dim} into {parts} chunks of {chunk}")
    if len(sizes) != count or sum(sizes) != dim or min(sizes, default=0) < 0:
        ctx.fail(f"split sizes {sizes} must be {count} non-negative sizes summing to the "
                 f"axis size {dim}")
    return sizes


@converter("Split", since=2)
def split(ctx: ConvertContext) -> list[str]:
    t = ctx.type(0)
    axis = onnx_axis(ctx, ctx.attr("axis", 0), t.rank)
    sizes = _split_sizes(ctx, t.shape[axis], ctx.num_outputs)
    outputs, start = [], 0
    for size_ in sizes:
        outputs.append(emit_slice(ctx, ctx.input(0), {axis: (start, start + size_, 1)}))
        start += size_
    return outputs


@converter("Slice")
def slice_(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    if ctx.opset < 10:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = ctx.attr("axes", None)
        steps = None
    else:
        starts, ends = const_ints(ctx, 1, "starts"), const_ints(ctx, 2, "ends")
        axes = const_ints(ctx, 3, "axes") if ctx.has_input(3) else None
        steps = const_ints(ctx, 4, "steps") if ctx.has_input(4) else None
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} must have "
                 f"the same length")
    if 0 in steps:
        ctx.fail(f"steps {steps} contain 0")
    axes = onnx_axes(ctx, axes, t.rank)
    return emit_slice(ctx, ctx.input(0), {a: (s, e, d)
                                          for a, s, e, d in zip(axes, starts, ends, steps)})


@converter("Expand", since=8)
def expand(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    target = const_ints(ctx, 1, "shape")
    try:
        shape = broadcast_shapes("Expand", t.shape, target)
    except ShapeError:
        ctx.fail(f"the input shape {t.shape} does not broadcast with the shape {target}")
    return ctx.emit("broadcast_to", [ctx.input(0)], {"shape": shape})


@converter("Tile", since=6)
def tile(ctx: ConvertContext) -> str:
    t = ctx.type(0)
    repeats = const_ints(ctx, 1, "repeats")
    if len(repeats) != t.rank or min(repeats, default=0) < 0:
        ctx.fail(f"repeats {repeats} must hold one non-negative count per axis of {t.shape}")
    return ctx.emit("tile", [ctx.input(0)], {"repeats": tuple(repeats)})

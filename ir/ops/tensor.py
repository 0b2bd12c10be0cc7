"""Tensor and shape ops: identity, reshape, transpose, concat, split, slice, gather, ...

These ops move or select elements without arithmetic (TVM's injective kind), except the
scatter ops, whose outputs depend on index values in a way no loop nest can inline (opaque).
Attributes are fully resolved by the ONNX converters: static shapes with no -1 or 0 entries,
non-negative axes, explicit per-axis bounds.
"""

from __future__ import annotations

import math

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.registry import REQUIRED, Pattern, broadcast_shapes, define_op, same_dtype

identity = define_op("identity", Pattern.INJECTIVE, doc="A copy of its input.")


@identity.infer
def _(attrs, x: TensorType) -> TensorType:
    return x


@identity.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return x.copy()


# ----------------------------------------------------------------------------- reshape

reshape = define_op(
    "reshape", Pattern.INJECTIVE, attrs={"shape": REQUIRED},
    doc="The input's elements, in row-major order, in a new static shape (no -1 or 0 entries).",
)


@reshape.infer
def _(attrs, x: TensorType) -> TensorType:
    shape = tuple(attrs.shape)
    if any(d < 0 for d in shape):
        raise ShapeError(f"reshape: target shape {shape} has negative dimensions")
    if math.prod(shape) != x.size:
        raise ShapeError(
            f"reshape: cannot reshape {x.shape} ({x.size} elements) to {shape} "
            f"({math.prod(shape)} elements)"
        )
    return TensorType(shape, x.dtype)


@reshape.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return x.reshape(attrs.shape).copy()


# ----------------------------------------------------------------------------- transpose

transpose = define_op(
    "transpose", Pattern.INJECTIVE, attrs={"perm": REQUIRED},
    doc="Output axis i is input axis perm[i].",
)


@transpose.infer
def _(attrs, x: TensorType) -> TensorType:
    perm = tuple(attrs.perm)
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(
            f"transpose: perm {perm} is not a permutation of the {x.rank} axes of {x.shape}"
        )
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


@transpose.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, attrs.perm))


# ----------------------------------------------------------------------------- concat

concat = define_op(
    "concat", Pattern.INJECTIVE, attrs={"axis": REQUIRED}, num_inputs=(1, None),
    doc="Its inputs joined along `axis`; the other dimensions must agree.",
)


@concat.infer
def _(attrs, *xs: TensorType) -> TensorType:
    dtype = same_dtype("concat", *xs)
    first = xs[0]
    axis = attrs.axis
    if not 0 <= axis < first.rank:
        raise ShapeError(f"concat: axis {axis} is out of range for rank {first.rank}")
    for x in xs[1:]:
        if x.rank != first.rank or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis
        ):
            shapes = ", ".join(str(t.shape) for t in xs)
            raise ShapeError(
                f"concat: shapes {shapes} differ outside the concatenation axis {axis}"
            )
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return TensorType(tuple(shape), dtype)


@concat.reference
def _(attrs, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=attrs.axis)


# ----------------------------------------------------------------------------- slice

slice_ = define_op(
    "slice", Pattern.INJECTIVE,
    attrs={"starts": REQUIRED, "ends": REQUIRED, "steps": REQUIRED},
    doc="A strided window, one (start, end, step) per axis with Python `range` semantics: "
        "0 <= start < dim and -1 <= end <= dim (end -1 only with a negative step, meaning "
        "'through index 0'); the axis keeps max(0, ceil((end - start) / step)) elements.",
)


def slice_length(start: int, end: int, step: int) -> int:
    """How many elements `range(start, end, step)` holds."""
    return max(0, -(-(end - start) // step)) if step > 0 else max(0, -(-(start - end) // -step))


@slice_.infer
def _(attrs, x: TensorType) -> TensorType:
    starts, ends, steps = tuple(attrs.starts), tuple(attrs.ends), tuple(attrs.steps)
    if not len(starts) == len(ends) == len(steps) == x.rank:
        raise ShapeError(
            f"slice: starts {starts}, ends {ends} and steps {steps} must each have one entry "
            f"per axis of the rank-{x.rank} input {x.shape}"
        )
    shape = []
    for axis, (dim, start, end, step) in enumerate(zip(x.shape, starts, ends, steps)):
        low = -1 if step < 0 else 0
        if step == 0 or not (0 <= start <= dim and low <= end <= dim):
            raise ShapeError(
                f"slice: axis {axis} of size {dim} has start {start}, end {end}, step {step}; "
                f"expected a nonzero step, 0 <= start <= {dim} and {low} <= end <= {dim}"
            )
        shape.append(slice_length(start, end, step))
    return TensorType(tuple(shape), x.dtype)


@slice_.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    window = tuple(
        slice(start, None if end < 0 else end, step)
        for start, end, step in zip(attrs.starts, attrs.ends, attrs.steps)
    )
    return x[window].copy()


# ----------------------------------------------------------------------------- broadcast_to

broadcast_to = define_op(
    "broadcast_to", Pattern.BROADCAST, attrs={"shape": REQUIRED},
    doc="The input broadcast (numpy rules) to exactly `shape`.",
)


@broadcast_to.infer
def _(attrs, x: TensorType) -> TensorType:
    shape = tuple(attrs.shape)
    if broadcast_shapes("broadcast_to", x.shape, shape) != shape:
        raise ShapeError(f"broadcast_to: {x.shape} does not broadcast to exactly {shape}")
    return TensorType(shape, x.dtype)


@broadcast_to.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(x, attrs.shape).copy()


# ----------------------------------------------------------------------------- tile

tile = define_op(
    "tile", Pattern.INJECTIVE, attrs={"repeats": REQUIRED},
    doc="The input repeated `repeats[i]` times along axis i.",
)


@tile.infer
def _(attrs, x: TensorType) -> TensorType:
    repeats = tuple(attrs.repeats)
    if len(repeats) != x.rank or any(r < 0 for r in repeats):
        raise ShapeError(
            f"tile: repeats {repeats} must hold one non-negative count per axis of {x.shape}"
        )
    return TensorType(tuple(d * r for d, r in zip(x.shape, repeats)), x.dtype)


@tile.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return np.tile(x, attrs.repeats) if x.ndim else x.copy()


# ----------------------------------------------------------------------------- pad

PAD_MODES = ("constant", "reflect", "edge", "wrap")

pad = define_op(
    "pad", Pattern.INJECTIVE, attrs={"pads": REQUIRED, "mode": "constant"}, num_inputs=(1, 2),
    doc="The input grown by `pads` ((before, after) per axis, non-negative). Mode 'constant' "
        "fills with the optional scalar second input (zero when omitted); 'reflect' mirrors "
        "without repeating the edge, 'edge' repeats it, 'wrap' wraps around.",
)


@pad.infer
def _(attrs, x: TensorType, value: TensorType | None = None) -> TensorType:
    pads = tuple(tuple(p) for p in attrs.pads)
    if attrs.mode not in PAD_MODES:
        raise ShapeError(f"pad: mode {attrs.mode!r} is not one of {PAD_MODES}")
    if len(pads) != x.rank or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ShapeError(
            f"pad: pads {pads} must hold one non-negative (before, after) pair per axis of "
            f"{x.shape}"
        )
    if value is not None:
        if value.size != 1 or value.dtype != x.dtype:
            raise ShapeError(
                f"pad: the pad value must be one {x.dtype} element, got {value}"
            )
    for axis, (dim, (before, after)) in enumerate(zip(x.shape, pads)):
        if attrs.mode != "constant" and dim == 0 and before + after > 0:
            raise ShapeError(
                f"pad: mode {attrs.mode!r} cannot pad axis {axis}, which is empty"
            )
    return TensorType(tuple(d + b + a for d, (b, a) in zip(x.shape, pads)), x.dtype)


@pad.reference
def _(attrs, x: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
    pads = [tuple(p) for p in attrs.pads]
    if attrs.mode != "constant":
        return np.pad(x, pads, mode=attrs.mode)
    fill = np.zeros((), x.dtype) if value is None else np.asarray(value).reshape(())
    if x.dtype == object:
        fill = "" if value is None else value.reshape(()).item()
    out = np.full(tuple(d + b + a for d, (b, a) in zip(x.shape, pads)), fill, dtype=x.dtype)
    out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, pads))] = x
    return out


# ----------------------------------------------------------------------------- trilu

trilu = define_op(
    "trilu", Pattern.INJECTIVE, attrs={"upper": True, "k": 0},
    doc="The upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes; "
        "the other elements become zero.",
)


@trilu.infer
def _(attrs, x: TensorType) -> TensorType:
    if x.rank < 2:
        raise ShapeError(f"trilu: the input must have rank >= 2, got {x.shape}")
    return x


@trilu.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    rows, cols = x.shape[-2:]
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = offset >= attrs.k if attrs.upper else offset <= attrs.k
    zero = np.zeros((), x.dtype) if x.dtype != object else ""
    return np.where(keep, x, zero).astype(x.dtype, copy=False)

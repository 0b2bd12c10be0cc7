"""Reductions (sum, mean, max, min, prod), arg-reductions (argmax, argmin) and cumsum.

The primitives are the reductions a kernel computes with one accumulator: `reduce_sum`,
`reduce_mean`, `reduce_max`, `reduce_min`, `reduce_prod` over a sorted tuple of axes, with
`keepdims`. ONNX's other reductions are compositions the frontend emits (ReduceL2 is
sqrt(reduce_sum(x * x)), ReduceLogSumExp the max-shifted form, ...). `reduce_mean` is a
primitive rather than sum-then-divide so that a float16 mean whose sum would overflow float16
still comes out right: the kernel accumulates in float32 and scales before it rounds.

Axes are fully resolved: non-negative, ascending, no repeats. An empty axes tuple reduces
nothing (each element is its own group), which is what ONNX's noop_with_empty_axes and a rank-0
input mean. A reduction over zero elements gives the reduction's identity: 0 for sum, 1 for
prod, the lowest value for max (-inf for floats), the highest for min, NaN for a float mean.

Accumulation: float16 and bfloat16 accumulate in float32 (DESIGN.md); integers accumulate in
their own dtype and wrap, as ONNX's do, except `reduce_mean`, which sums integers in 64 bits
and truncates the quotient toward zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import Attrs, TensorType
from ember.ir.ops.elementwise import FLOATS, NUMERIC, check_dtype, compute_dtype
from ember.ir.ops.registry import REQUIRED, Pattern, define_op, normalize_axis

#: ONNX's ReduceSum/Mean/Prod/L1/L2/SumSquare and CumSum dtypes.
SUMMABLE = FLOATS + ("int32", "int64", "uint32", "uint64")
#: ONNX's ReduceMax/ReduceMin dtypes.
ORDERED = FLOATS + ("bool", "int8", "uint8", "int32", "int64", "uint32", "uint64")


def reduced_shape(op: str, shape: tuple[int, ...], axes: tuple[int, ...],
                  keepdims: bool) -> tuple[int, ...]:
    """The result shape of reducing `shape` over resolved `axes`."""
    if list(axes) != sorted(set(axes)) or any(not 0 <= a < len(shape) for a in axes):
        raise ShapeError(
            f"{op}: axes {list(axes)} must be distinct, ascending and in [0, {len(shape)}) for "
            f"an input of shape {shape}"
        )
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


ReduceFn = Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]


def _define_reduce(name: str, fn: ReduceFn, accepts: Collection[str], doc: str) -> None:
    op = define_op(name, Pattern.REDUCE, attrs={"axes": REQUIRED, "keepdims": True}, doc=doc)

    @op.infer
    def _(attrs: Attrs, x: TensorType) -> TensorType:
        check_dtype(name, x, accepts)
        return TensorType(reduced_shape(name, x.shape, attrs.axes, attrs.keepdims), x.dtype)

    @op.reference
    def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = fn(x, tuple(attrs.axes), bool(attrs.keepdims))
        return np.asarray(out).astype(x.dtype, copy=False)


def _sum(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=compute_dtype(x.dtype))


def _prod(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    return np.prod(x, axis=axes, keepdims=keepdims, dtype=compute_dtype(x.dtype))


def _mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    count = math.prod(x.shape[a] for a in axes)
    if x.dtype.kind in "iu":
        wide = np.int64 if x.dtype.kind == "i" else np.uint64
        total = np.sum(x, axis=axes, keepdims=keepdims, dtype=wide)
        if count == 0:
            return np.zeros_like(total)
        quotient = total // count
        # Floor division rounds a negative, inexact quotient down; ONNX truncates toward zero.
        return quotient + ((total % count != 0) & (total < 0))
    total = np.sum(x, axis=axes, keepdims=keepdims, dtype=compute_dtype(x.dtype))
    return total / count if count else total * np.nan


def _lowest(dtype: np.dtype) -> object:
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf


def _highest(dtype: np.dtype) -> object:
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max if dtype.kind in "iu" else np.inf


def _max(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    # `initial` is the identity: it answers empty reductions and changes nothing else.
    return np.max(x, axis=axes, keepdims=keepdims, initial=_lowest(x.dtype))


def _min(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    return np.min(x, axis=axes, keepdims=keepdims, initial=_highest(x.dtype))


_define_reduce("reduce_sum", _sum, SUMMABLE, "Sum over `axes`.")
_define_reduce("reduce_mean", _mean, SUMMABLE, "Mean over `axes` (integers: truncated).")
_define_reduce("reduce_prod", _prod, SUMMABLE, "Product over `axes`.")
_define_reduce("reduce_max", _max, ORDERED, "Maximum over `axes`; NaN wins.")
_define_reduce("reduce_min", _min, ORDERED, "Minimum over `axes`; NaN wins.")


# ----------------------------------------------------------------------------- argmax, argmin


def _define_arg_reduce(name: str, fn: Callable[..., np.ndarray]) -> None:
    op = define_op(
        name, Pattern.REDUCE,
        attrs={"axis": REQUIRED, "keepdims": True, "select_last_index": False},
        doc="The int64 index of the extreme value along `axis`; ties go to the first "
            "occurrence, or the last with select_last_index. A NaN counts as the extreme.",
    )

    @op.infer
    def _(attrs: Attrs, x: TensorType) -> TensorType:
        check_dtype(name, x, NUMERIC)
        if not 0 <= attrs.axis < x.rank:
            raise ShapeError(f"{name}: axis {attrs.axis} is out of range for shape {x.shape}")
        if x.shape[attrs.axis] == 0:
            raise ShapeError(
                f"{name}: axis {attrs.axis} of shape {x.shape} is empty, so it has no {name}"
            )
        return TensorType(reduced_shape(name, x.shape, (attrs.axis,), attrs.keepdims), "int64")

    @op.reference
    def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
        axis = attrs.axis
        if attrs.select_last_index:
            # The first hit in the reversed axis is the last one in the original order.
            index = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            index = fn(x, axis=axis)
        if attrs.keepdims:
            index = np.expand_dims(index, axis)
        return np.asarray(index, dtype=np.int64)


_define_arg_reduce("argmax", np.argmax)
_define_arg_reduce("argmin", np.argmin)


# ----------------------------------------------------------------------------- cumsum

cumsum = define_op(
    "cumsum", Pattern.OPAQUE, attrs={"axis": REQUIRED, "exclusive": False, "reverse": False},
    doc="Running sum along `axis`: `exclusive` leaves each element out of its own sum, "
        "`reverse` sums from the end. A scan, not a reduction: it does not fuse.",
)


@cumsum.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("cumsum", x, SUMMABLE)
    if not 0 <= attrs.axis < x.rank:
        raise ShapeError(f"cumsum: axis {attrs.axis} is out of range for shape {x.shape}")
    return x


@cumsum.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    axis = attrs.axis
    values = np.flip(x, axis) if attrs.reverse else x
    running = np.cumsum(values, axis=axis, dtype=compute_dtype(x.dtype))
    if attrs.exclusive:
        # Shift by one along the axis (a subtraction would round differently for floats).
        shifted = np.zeros_like(running)
        into = [slice(None)] * x.ndim
        into[axis] = slice(1, None)
        start = [slice(None)] * x.ndim
        start[axis] = slice(0, -1)
        shifted[tuple(into)] = running[tuple(start)]
        running = shifted
    if attrs.reverse:
        running = np.flip(running, axis)
    return np.ascontiguousarray(running).astype(x.dtype, copy=False)


def normalize_axes(op: str, axes: Collection[int], rank: int) -> tuple[int, ...]:
    """ONNX axes (negative allowed) as a resolved tuple; repeats are an error."""
    resolved = [normalize_axis(op, int(a), rank) for a in axes]
    if len(set(resolved)) != len(resolved):
        raise ShapeError(f"{op}: axes {list(axes)} name an axis twice (rank {rank})")
    return tuple(sorted(resolved))

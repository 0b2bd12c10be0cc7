"""Graph-IR ops that walk an axis or a matrix in order, and a byte reinterpretation: cumprod
(a running product), topk (the k largest or smallest along an axis, with their indices), det
(determinants of square matrices) and bitcast (the same bytes read as another dtype).

None is a composition of other ember ops without losing exactness (a product through
exp/log breaks on signs and zeros; a determinant through LU without pivoting breaks on a zero
pivot), so each is a primitive; their kernels are loop nests written directly
(compiler/ops/compute/linalg.py), opaque to fusion like cumsum's.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import Attrs, TensorType, numpy_dtype
from ember.ir.ops.elementwise import FLOAT8S, FLOATS, INTS, NUMERIC, check_dtype, compute_dtype
from ember.ir.ops.registry import REQUIRED, Pattern, define_op

# ----------------------------------------------------------------------------- cumprod

cumprod = define_op(
    "cumprod", Pattern.OPAQUE, attrs={"axis": REQUIRED, "exclusive": False, "reverse": False},
    doc="Running product along `axis`: `exclusive` leaves each element out of its own product "
        "(the first is 1), `reverse` multiplies from the end. Integers wrap.",
)


@cumprod.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("cumprod", x, NUMERIC)
    if not 0 <= attrs.axis < x.rank:
        raise ShapeError(f"cumprod: axis {attrs.axis} is out of range for shape {x.shape}")
    return x


@cumprod.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    axis = attrs.axis
    values = np.flip(x, axis) if attrs.reverse else x
    if attrs.exclusive:
        # a leading 1, the last element dropped: each product stops before its own element
        ones = np.ones_like(values.take([0], axis=axis)) if x.shape[axis] else values
        values = np.concatenate([ones, values.take(range(x.shape[axis] - 1), axis=axis)],
                                axis=axis)
    with np.errstate(all="ignore"):
        running = np.cumprod(values, axis=axis, dtype=compute_dtype(x.dtype))
    if attrs.reverse:
        running = np.flip(running, axis)
    return np.ascontiguousarray(running).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- topk

topk = define_op(
    "topk", Pattern.OPAQUE, attrs={"k": REQUIRED, "axis": REQUIRED, "largest": True},
    doc="The k largest (or smallest) elements along `axis`, sorted best first, and their int64 "
        "indices; equal values keep their order (the lower index first). NaN counts as larger "
        "than every number.",
)


@topk.infer
def _(attrs: Attrs, x: TensorType) -> tuple[TensorType, TensorType]:
    check_dtype("topk", x, NUMERIC)
    if not 0 <= attrs.axis < x.rank:
        raise ShapeError(f"topk: axis {attrs.axis} is out of range for shape {x.shape}")
    if not 0 <= attrs.k <= x.shape[attrs.axis]:
        raise ShapeError(f"topk: k={attrs.k} must lie in [0, {x.shape[attrs.axis]}], the size "
                         f"of axis {attrs.axis} of {x.shape}")
    shape = tuple(attrs.k if d == attrs.axis else n for d, n in enumerate(x.shape))
    return TensorType(shape, x.dtype), TensorType(shape, "int64")


@topk.reference
def _(attrs: Attrs, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = attrs.axis
    position = np.indices(x.shape)[axis]
    # lexsort's last key is the primary one; it sorts NaN last (as the largest)
    if attrs.largest:
        order = np.flip(np.lexsort((-position, x), axis=axis), axis)
    else:
        order = np.lexsort((position, x), axis=axis)
    order = np.take(order, np.arange(attrs.k), axis=axis)
    return np.take_along_axis(x, order, axis=axis), order.astype(np.int64)


# ----------------------------------------------------------------------------- det

det = define_op(
    "det", Pattern.OPAQUE,
    doc="Determinants of the square matrices in the last two axes (LU with partial pivoting; "
        "half floats computed in float32).",
)


@det.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("det", x, FLOATS)
    if x.rank < 2 or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"det: input {x.shape} must end in a square matrix")
    return TensorType(x.shape[:-2], x.dtype)


@det.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == 0:
        return np.ones(x.shape[:-2], x.dtype)
    return np.asarray(np.linalg.det(x.astype(compute_dtype(x.dtype)))).astype(x.dtype)


# ----------------------------------------------------------------------------- bitcast

#: dtypes a bitcast reads and writes (fixed-width, with a storage layout numpy shares); the
#: float8 types, which no compiled kernel computes in, pass through it as bytes
BITCASTABLE = FLOATS + INTS + ("bool",) + FLOAT8S

bitcast = define_op(
    "bitcast", Pattern.OPAQUE, attrs={"to": REQUIRED},
    doc="The input's bytes read as dtype `to`, which has the same width.",
)


@bitcast.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("bitcast", x, BITCASTABLE)
    if attrs.to not in BITCASTABLE:
        raise ShapeError(f"bitcast: cannot reinterpret as {attrs.to}; ember reinterprets as "
                         f"{', '.join(BITCASTABLE)}")
    source, target = numpy_dtype(x.dtype).itemsize, numpy_dtype(attrs.to).itemsize
    if source != target:
        raise ShapeError(f"bitcast: {x.dtype} has {8 * source} bits but {attrs.to} has "
                         f"{8 * target}; the widths must be equal")
    return TensorType(x.shape, attrs.to)


@bitcast.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    # np.array keeps a rank-0 input rank 0 (np.ascontiguousarray would make it rank 1)
    return np.array(x, order="C").view(numpy_dtype(attrs.to))

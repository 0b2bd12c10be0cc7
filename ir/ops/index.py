"""Indexing ops: gathers, scatters, one_hot and reverse_sequence.

Their index inputs are ordinary run-time tensors (they never decide an output shape), so the
references check and normalize them as they run: a negative index counts from the end of its
axis, and an index outside [-dim, dim) raises ShapeError naming the op, the index and the axis.
Gathers are injective (each output element reads one input element); scatters are opaque.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType, is_float, is_int
from ember.ir.ops.registry import REQUIRED, Pattern, define_op, require_dtype

INDEX_DTYPES = ("int32", "int64")
SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")


def normalize_indices(op: str, indices: np.ndarray, dim: int, axis: int) -> np.ndarray:
    """`indices` as int64 in [0, dim), counting negative ones from the end."""
    indices = np.asarray(indices, dtype=np.int64)
    bad = (indices < -dim) | (indices >= dim)
    if bad.any():
        raise ShapeError(
            f"{op}: index {int(indices[bad].flat[0])} is out of range for axis {axis} of "
            f"size {dim}"
        )
    return np.where(indices < 0, indices + dim, indices)


def _check_axis(op: str, axis: int, rank: int) -> None:
    if not 0 <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")


def _along_axis(indices: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """A full index tuple that reads `indices` along `axis` and each other axis in order."""
    grids = list(np.ogrid[tuple(slice(0, d) for d in indices.shape)])
    grids[axis] = indices
    return tuple(grids)


# ----------------------------------------------------------------------------- gather

gather = define_op(
    "gather", Pattern.INJECTIVE, attrs={"axis": 0}, num_inputs=2,
    doc="out[a..., i..., b...] = data[a..., indices[i...], b...] along `axis`.",
)


@gather.infer
def _(attrs, data: TensorType, indices: TensorType) -> TensorType:
    _check_axis("gather", attrs.axis, data.rank)
    require_dtype("gather", indices, INDEX_DTYPES, "indices")
    shape = data.shape[:attrs.axis] + indices.shape + data.shape[attrs.axis + 1:]
    return TensorType(shape, data.dtype)


@gather.reference
def _(attrs, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    indices = normalize_indices("gather", indices, data.shape[attrs.axis], attrs.axis)
    return np.take(data, indices, axis=attrs.axis)


# ----------------------------------------------------------------------------- gather_elements

gather_elements = define_op(
    "gather_elements", Pattern.INJECTIVE, attrs={"axis": 0}, num_inputs=2,
    doc="out[i, j, k] = data[indices[i, j, k], j, k] (axis 0; likewise for other axes).",
)


def _check_elementwise_indices(op: str, data: TensorType, indices: TensorType,
                               axis: int) -> None:
    _check_axis(op, axis, data.rank)
    require_dtype(op, indices, INDEX_DTYPES, "indices")
    if indices.rank != data.rank or any(
        i != axis and n > d for i, (n, d) in enumerate(zip(indices.shape, data.shape))
    ):
        raise ShapeError(
            f"{op}: indices {indices.shape} must have the rank of data {data.shape} and no "
            f"larger dimension outside axis {axis}"
        )


@gather_elements.infer
def _(attrs, data: TensorType, indices: TensorType) -> TensorType:
    _check_elementwise_indices("gather_elements", data, indices, attrs.axis)
    return TensorType(indices.shape, data.dtype)


@gather_elements.reference
def _(attrs, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    indices = normalize_indices("gather_elements", indices, data.shape[attrs.axis], attrs.axis)
    return data[_along_axis(indices, attrs.axis)]


# ----------------------------------------------------------------------------- gather_nd

gather_nd = define_op(
    "gather_nd", Pattern.INJECTIVE, attrs={"batch_dims": 0}, num_inputs=2,
    doc="Each row indices[b..., i..., :] (k entries) picks data[b..., row, ...]: the output "
        "is indices.shape[:-1] + data.shape[batch_dims + k:].",
)


def _nd_index_depth(op: str, data: TensorType, indices: TensorType, batch_dims: int) -> int:
    require_dtype(op, indices, INDEX_DTYPES, "indices")
    if indices.rank < 1 or not 0 <= batch_dims < min(data.rank, indices.rank):
        raise ShapeError(
            f"{op}: batch_dims {batch_dims} must be below the ranks of data {data.shape} and "
            f"indices {indices.shape}"
        )
    depth = indices.shape[-1]
    if depth > data.rank - batch_dims:
        raise ShapeError(
            f"{op}: indices {indices.shape} index {depth} axes, but data {data.shape} has "
            f"only {data.rank - batch_dims} after {batch_dims} batch dims"
        )
    if data.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise ShapeError(
            f"{op}: the first {batch_dims} dims of data {data.shape} and indices "
            f"{indices.shape} must agree"
        )
    return depth


def _nd_index(op: str, data_shape: tuple[int, ...], indices: np.ndarray,
              batch_dims: int) -> tuple[np.ndarray, ...]:
    """The numpy index tuple that gather_nd and scatter_nd use on data."""
    lead = indices.shape[:-1]
    batch = [
        np.arange(d).reshape((1,) * i + (d,) + (1,) * (len(lead) - i - 1))
        for i, d in enumerate(data_shape[:batch_dims])
    ]
    rows = [
        normalize_indices(op, indices[..., j], data_shape[batch_dims + j], batch_dims + j)
        for j in range(indices.shape[-1])
    ]
    return tuple(batch + rows)


@gather_nd.infer
def _(attrs, data: TensorType, indices: TensorType) -> TensorType:
    depth = _nd_index_depth("gather_nd", data, indices, attrs.batch_dims)
    return TensorType(indices.shape[:-1] + data.shape[attrs.batch_dims + depth:], data.dtype)


@gather_nd.reference
def _(attrs, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    index = _nd_index("gather_nd", data.shape, indices, attrs.batch_dims)
    if not index:  # zero-length index rows pick whole slices
        return np.broadcast_to(data, indices.shape[:-1] + data.shape).copy()
    return data[index]


# ----------------------------------------------------------------------------- scatters


_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(reduction: str, out: np.ndarray, index: tuple[np.ndarray, ...],
             updates: np.ndarray) -> np.ndarray:
    if reduction == "none":
        out[index] = updates  # duplicate indices: the last update wins, as ONNX leaves it open
        return out
    _REDUCERS[reduction].at(out, index, updates)
    return out


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in SCATTER_REDUCTIONS:
        raise ShapeError(f"{op}: reduction {reduction!r} is not one of {SCATTER_REDUCTIONS}")


scatter_elements = define_op(
    "scatter_elements", Pattern.OPAQUE, attrs={"axis": 0, "reduction": "none"}, num_inputs=3,
    doc="A copy of data where out[indices[i, j, k], j, k] (axis 0) is updates[i, j, k], or "
        "that element combined with it by `reduction` (add, mul, max, min).",
)


@scatter_elements.infer
def _(attrs, data: TensorType, indices: TensorType, updates: TensorType) -> TensorType:
    _check_reduction("scatter_elements", attrs.reduction)
    _check_elementwise_indices("scatter_elements", data, indices, attrs.axis)
    if updates.shape != indices.shape or updates.dtype != data.dtype:
        raise ShapeError(
            f"scatter_elements: updates {updates} must have the shape of indices "
            f"{indices.shape} and the dtype of data {data.dtype}"
        )
    return data


@scatter_elements.reference
def _(attrs, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    indices = normalize_indices("scatter_elements", indices, data.shape[attrs.axis], attrs.axis)
    return _scatter(attrs.reduction, data.copy(), _along_axis(indices, attrs.axis), updates)


scatter_nd = define_op(
    "scatter_nd", Pattern.OPAQUE, attrs={"reduction": "none"}, num_inputs=3,
    doc="A copy of data where each slice data[indices[i..., :]] is updates[i...], or that "
        "slice combined with it by `reduction` (add, mul, max, min).",
)


@scatter_nd.infer
def _(attrs, data: TensorType, indices: TensorType, updates: TensorType) -> TensorType:
    _check_reduction("scatter_nd", attrs.reduction)
    require_dtype("scatter_nd", indices, INDEX_DTYPES, "indices")
    depth = indices.shape[-1] if indices.rank else -1
    if not 0 <= depth <= data.rank:
        raise ShapeError(
            f"scatter_nd: indices {indices.shape} must end in a dim of at most the rank of data "
            f"{data.shape}"
        )
    expected = indices.shape[:-1] + data.shape[depth:]
    if updates.shape != expected or updates.dtype != data.dtype:
        raise ShapeError(
            f"scatter_nd: updates {updates} must be {data.dtype}{list(expected)} for data "
            f"{data.shape} and indices {indices.shape}"
        )
    return data


@scatter_nd.reference
def _(attrs, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    if indices.shape[-1] == 0:  # zero-length rows address the whole tensor, once per row
        rows = updates.reshape((-1,) + data.shape)
        if attrs.reduction == "none":
            return rows[-1].copy() if len(rows) else data.copy()
        return _REDUCERS[attrs.reduction].reduce(np.concatenate([data[None], rows]), axis=0)
    index = _nd_index("scatter_nd", data.shape, indices, 0)
    return _scatter(attrs.reduction, data.copy(), index, updates)


# ----------------------------------------------------------------------------- one_hot

one_hot = define_op(
    "one_hot", Pattern.INJECTIVE, attrs={"depth": REQUIRED, "axis": REQUIRED}, num_inputs=2,
    doc="values[1] where the new axis `axis` (of size `depth`) equals the index, values[0] "
        "elsewhere; values is [off, on]. Indices in [-depth, 0) count from the end; others "
        "outside [0, depth) give an all-off row.",
)


@one_hot.infer
def _(attrs, indices: TensorType, values: TensorType) -> TensorType:
    require_dtype("one_hot", indices, lambda d: is_int(d) or is_float(d), "indices")
    if values.shape != (2,):
        raise ShapeError(f"one_hot: values must be [off, on] (shape (2,)), got {values.shape}")
    if attrs.depth < 0 or not 0 <= attrs.axis <= indices.rank:
        raise ShapeError(
            f"one_hot: depth {attrs.depth} must be non-negative and axis {attrs.axis} in "
            f"[0, {indices.rank}]"
        )
    shape = indices.shape[:attrs.axis] + (attrs.depth,) + indices.shape[attrs.axis:]
    return TensorType(shape, values.dtype)


@one_hot.reference
def _(attrs, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    index = np.asarray(indices).astype(np.int64)
    index = np.where(index < 0, index + attrs.depth, index)
    positions = np.arange(attrs.depth).reshape((-1,) + (1,) * (index.ndim - attrs.axis))
    hot = np.expand_dims(index, attrs.axis) == positions
    return np.where(hot, values[1], values[0]).astype(values.dtype, copy=False)


# ----------------------------------------------------------------------------- reverse_sequence

reverse_sequence = define_op(
    "reverse_sequence", Pattern.INJECTIVE, attrs={"batch_axis": 1, "time_axis": 0},
    num_inputs=2,
    doc="For each batch entry b, the first lengths[b] steps along time_axis reversed; the "
        "rest copied.",
)


@reverse_sequence.infer
def _(attrs, x: TensorType, lengths: TensorType) -> TensorType:
    require_dtype("reverse_sequence", lengths, INDEX_DTYPES, "sequence lengths")
    batch, time = attrs.batch_axis, attrs.time_axis
    if x.rank < 2 or {batch, time} != {0, 1}:
        raise ShapeError(
            f"reverse_sequence: batch_axis {batch} and time_axis {time} must be 0 and 1 in "
            f"some order, on an input of rank >= 2 (got {x.shape})"
        )
    if lengths.shape != (x.shape[batch],):
        raise ShapeError(
            f"reverse_sequence: sequence lengths {lengths.shape} must hold one length per "
            f"batch entry ({x.shape[batch]})"
        )
    return x


@reverse_sequence.reference
def _(attrs, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    time = attrs.time_axis
    steps = x.shape[time]
    lengths = np.clip(np.asarray(lengths, np.int64), 0, steps)
    t = np.arange(steps)
    # source[b, t]: which time step output step t reads in batch entry b
    source = np.where(t[None, :] < lengths[:, None], lengths[:, None] - 1 - t[None, :], t[None, :])
    if time == 0:
        source = source.T
    shape = source.shape + (1,) * (x.ndim - 2)
    index = np.broadcast_to(source.reshape(shape), x.shape)
    return np.take_along_axis(x, index, axis=time)

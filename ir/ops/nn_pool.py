"""Pooling ops: max_pool, average_pool and lp_pool over the spatial axes of (N, C, *spatial).

Attributes are fully resolved (see `nn.py`): kernel_shape, strides and dilations per spatial
axis, pads as begins then ends, and ceil_mode. With ceil_mode a last partial window is kept when
it starts inside the input or its begin padding; its part past the end padding holds no
elements (it is neither maxed nor counted by count_include_pad), as in PyTorch and ONNX Runtime.

Pooling is out-elementwise-fusable, as TVM registers it: a window reduction per output element,
whose elementwise consumers (a ReLU, a requantize) fuse onto its output.

Global pooling over all spatial axes is not an op of its own: the ONNX converters emit the
reduce family's reduce_mean / reduce_max for it, or lp_pool with a whole-input window.
"""

from __future__ import annotations

import math

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.elementwise import FLOATS, INTS, check_dtype, compute_dtype
from ember.ir.ops.nn import check_window_attrs, sliding_windows, window_output_shape
from ember.ir.ops.registry import REQUIRED, Pattern, define_op

_WINDOW_ATTRS = {
    "kernel_shape": REQUIRED, "strides": REQUIRED, "dilations": REQUIRED, "pads": REQUIRED,
    "ceil_mode": False,
}


def _pool_output_type(op: str, attrs, x: TensorType) -> TensorType:
    check_window_attrs(op, x, kernel_shape=attrs.kernel_shape, strides=attrs.strides,
                       dilations=attrs.dilations, pads=attrs.pads)
    out = window_output_shape(op, x.shape[2:], attrs.kernel_shape, attrs.strides,
                              attrs.dilations, attrs.pads, attrs.ceil_mode)
    return TensorType((*x.shape[:2], *out), x.dtype)


def _windows(attrs, x: np.ndarray, pad_value: float) -> np.ndarray:
    out = window_output_shape("pool", x.shape[2:], attrs.kernel_shape, attrs.strides,
                              attrs.dilations, attrs.pads, attrs.ceil_mode)
    return sliding_windows(x, attrs.kernel_shape, attrs.strides, attrs.dilations, attrs.pads,
                           out, pad_value)


def _kernel_axes(attrs) -> tuple[int, ...]:
    return tuple(range(-len(attrs.kernel_shape), 0))


# ----------------------------------------------------------------------------- max_pool

max_pool = define_op(
    "max_pool", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={**_WINDOW_ATTRS, "return_indices": False, "storage_order": 0},
    doc="The maximum of each window; padding never wins. With return_indices a second int64 "
        "output gives where each maximum is, as an index into the flattened input (over N and "
        "C too); storage_order 1 numbers the spatial axes column-major (ONNX's Indices).",
)


@max_pool.infer
def _(attrs, x: TensorType) -> TensorType | tuple[TensorType, TensorType]:
    check_dtype("max_pool", x, FLOATS + INTS)
    if attrs.storage_order not in (0, 1):
        raise ShapeError(f"max_pool: storage_order must be 0 or 1, got {attrs.storage_order}")
    y = _pool_output_type("max_pool", attrs, x)
    return (y, TensorType(y.shape, "int64")) if attrs.return_indices else y


def _lowest(dtype: np.dtype) -> float:
    return np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf


@max_pool.reference
def _(attrs, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    windows = _windows(attrs, x, _lowest(x.dtype))
    if not attrs.return_indices:
        return windows.max(axis=_kernel_axes(attrs))
    kernel, spatial = tuple(attrs.kernel_shape), len(attrs.kernel_shape)
    out_shape = windows.shape[2:2 + spatial]
    flat = windows.reshape(*windows.shape[:2 + spatial], -1)
    tap = flat.argmax(axis=-1)
    values = np.take_along_axis(flat, tap[..., None], axis=-1)[..., 0]
    # Input coordinate of the winning tap along each spatial axis.
    offsets = np.unravel_index(tap, kernel)
    in_shape = x.shape[2:]
    index = np.zeros(tap.shape, np.int64)
    for d in range(spatial):
        position = np.arange(out_shape[d]).reshape((-1,) + (1,) * (spatial - 1 - d))
        coord = position * attrs.strides[d] + offsets[d] * attrs.dilations[d] - attrs.pads[d]
        if attrs.storage_order == 0:
            stride = math.prod(in_shape[d + 1:])
        else:
            stride = math.prod(in_shape[:d])
        index += coord * stride
    planes = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(
        x.shape[0], x.shape[1], *(1,) * spatial)
    return values, index + planes * math.prod(in_shape)


# ----------------------------------------------------------------------------- average_pool

average_pool = define_op(
    "average_pool", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={**_WINDOW_ATTRS, "count_include_pad": False},
    doc="The mean of each window. The divisor counts the input elements in the window, plus "
        "the explicit padding ones when count_include_pad.",
)


@average_pool.infer
def _(attrs, x: TensorType) -> TensorType:
    check_dtype("average_pool", x, FLOATS)
    return _pool_output_type("average_pool", attrs, x)


@average_pool.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    axes = _kernel_axes(attrs)
    sums = _windows(attrs, x.astype(acc, copy=False), 0).sum(axis=axes)
    # The divisor of each window: pool a mask of the input (and of its explicit padding).
    spatial = len(attrs.kernel_shape)
    mask = np.ones((1, 1, *x.shape[2:]), acc)
    if attrs.count_include_pad:
        widths = [(0, 0), (0, 0)] + [(attrs.pads[d], attrs.pads[spatial + d])
                                      for d in range(spatial)]
        mask = np.pad(mask, widths, constant_values=1)
        out = sums.shape[2:]
        counts = sliding_windows(mask, attrs.kernel_shape, attrs.strides, attrs.dilations,
                                 (0,) * 2 * spatial, out, 0).sum(axis=axes)
    else:
        counts = _windows(attrs, mask, 0).sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- lp_pool

lp_pool = define_op(
    "lp_pool", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={**_WINDOW_ATTRS, "p": REQUIRED},
    doc="The p-norm of each window, (sum |x|^p) ^ (1/p); padding adds zeros.",
)


@lp_pool.infer
def _(attrs, x: TensorType) -> TensorType:
    check_dtype("lp_pool", x, FLOATS)
    if not attrs.p > 0:
        raise ShapeError(f"lp_pool: p must be positive, got {attrs.p}")
    return _pool_output_type("lp_pool", attrs, x)


@lp_pool.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    powered = np.abs(x.astype(acc, copy=False)) ** acc.type(attrs.p)
    sums = _windows(attrs, powered, 0).sum(axis=_kernel_axes(attrs))
    return (sums ** acc.type(1 / attrs.p)).astype(x.dtype, copy=False)

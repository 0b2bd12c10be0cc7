"""Normalization ops: batch_norm (inference), group_norm, layer_norm, rms_norm and lrn.

Statistics are computed in float32 for half-precision inputs (float64 stays float64) and the
result is rounded to the input's dtype once, as ONNX's stash_type=1 asks.
InstanceNormalization is group_norm with one group per channel, so it has no op of its own.

Fusion pattern kinds:
- batch_norm in inference is a per-channel scale and shift of its input (TVM's
  SimplifyInference rewrites it to exactly that broadcast multiply-add before fusion), so it is
  a broadcast op and fuses into the epilogue of the convolution before it.
- group_norm, layer_norm and rms_norm reduce over some axes and broadcast the statistics back
  over the same tensor, like softmax, which TVM registers as out-elementwise-fusable: an
  elementwise epilogue fuses onto them, nothing fuses into their input.
- lrn sums squares over a window of channels, a pooling along C: out-elementwise-fusable like
  pooling.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.elementwise import FLOATS, check_dtype, compute_dtype
from ember.ir.ops.registry import REQUIRED, Pattern, broadcast_shapes, define_op


def _require_float(op: str, *types: TensorType | None,
                   names: tuple[str, ...] = ("input", "scale", "bias")) -> None:
    for t, name in zip(types, names):
        if t is not None:
            check_dtype(op, t, FLOATS, what=name)


def _check_channel_params(op: str, x: TensorType, **params: TensorType | None) -> None:
    if x.rank < 2:
        raise ShapeError(f"{op}: the input must be (N, C, ...), got shape {x.shape}")
    for name, t in params.items():
        if t is not None and t.shape != (x.shape[1],):
            raise ShapeError(
                f"{op}: {name} must have shape ({x.shape[1]},), one value per channel of the "
                f"input {x.shape}, got {t.shape}"
            )


def _per_channel(array: np.ndarray, rank: int, dtype: np.dtype) -> np.ndarray:
    """A (C,) parameter shaped to broadcast over (N, C, *spatial)."""
    return array.astype(dtype, copy=False).reshape(-1, *(1,) * (rank - 2))


# ----------------------------------------------------------------------------- batch_norm

batch_norm = define_op(
    "batch_norm", Pattern.BROADCAST, attrs={"epsilon": 1e-5}, num_inputs=5,
    doc="Inference batch normalization over axis 1 with given statistics: "
        "(x - mean) / sqrt(var + epsilon) * scale + bias; inputs x, scale, bias, mean, var.",
)


@batch_norm.infer
def _(attrs, x, scale, bias, mean, var) -> TensorType:
    _require_float("batch_norm", x, scale, bias, mean, var,
                   names=("input", "scale", "bias", "mean", "var"))
    _check_channel_params("batch_norm", x, scale=scale, bias=bias, mean=mean, var=var)
    return x


@batch_norm.reference
def _(attrs, x, scale, bias, mean, var) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    rank = x.ndim
    factor = _per_channel(scale, rank, acc) / np.sqrt(_per_channel(var, rank, acc)
                                                      + acc.type(attrs.epsilon))
    shift = _per_channel(bias, rank, acc) - _per_channel(mean, rank, acc) * factor
    return (x.astype(acc, copy=False) * factor + shift).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- group_norm

group_norm = define_op(
    "group_norm", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"num_groups": REQUIRED, "epsilon": 1e-5}, num_inputs=3,
    doc="Normalizes each group of C/num_groups channels of each sample over those channels and "
        "all spatial axes, then scales and shifts per channel; inputs x, scale (C,), bias (C,).",
)


@group_norm.infer
def _(attrs, x, scale, bias) -> TensorType:
    _require_float("group_norm", x, scale, bias)
    _check_channel_params("group_norm", x, scale=scale, bias=bias)
    groups = attrs.num_groups
    if groups < 1 or x.shape[1] % groups:
        raise ShapeError(
            f"group_norm: num_groups={groups} must be positive and divide the {x.shape[1]} "
            f"channels of the input {x.shape}"
        )
    return x


@group_norm.reference
def _(attrs, x, scale, bias) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    grouped = x.astype(acc, copy=False).reshape(x.shape[0], attrs.num_groups, -1)
    mean = grouped.mean(axis=-1, keepdims=True)
    centered = grouped - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    normalized = (centered / np.sqrt(var + acc.type(attrs.epsilon))).reshape(x.shape)
    y = normalized * _per_channel(scale, x.ndim, acc) + _per_channel(bias, x.ndim, acc)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- layer_norm

#: dtype of layer_norm's optional mean and inverse-standard-deviation outputs (ONNX's
#: stash_type=1; ONNX's shape inference gives them float32 whatever the input's dtype).
STATS_DTYPE = "float32"

layer_norm = define_op(
    "layer_norm", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"axis": REQUIRED, "epsilon": 1e-5, "with_stats": False}, num_inputs=(2, 3),
    doc="Normalizes over axes axis..rank-1, then multiplies by scale and adds the optional "
        "bias (both broadcast to the input). with_stats adds two float32 outputs, the mean and "
        "1/sqrt(var + epsilon), shaped like the input with the normalized axes set to 1.",
)


def _check_affine(op: str, x: TensorType, **params: TensorType | None) -> None:
    for name, t in params.items():
        if t is not None and broadcast_shapes(op, x.shape, t.shape) != x.shape:
            raise ShapeError(
                f"{op}: {name} of shape {t.shape} does not broadcast to the input {x.shape}"
            )


@layer_norm.infer
def _(attrs, x, scale, bias=None) -> TensorType | tuple[TensorType, ...]:
    _require_float("layer_norm", x, scale, bias)
    if not 0 <= attrs.axis < x.rank:
        raise ShapeError(f"layer_norm: axis {attrs.axis} is out of range for shape {x.shape}")
    _check_affine("layer_norm", x, scale=scale, bias=bias)
    if not attrs.with_stats:
        return x
    stats = TensorType(x.shape[:attrs.axis] + (1,) * (x.rank - attrs.axis), STATS_DTYPE)
    return x, stats, stats


@layer_norm.reference
def _(attrs, x, scale, bias=None) -> np.ndarray | tuple[np.ndarray, ...]:
    acc = compute_dtype(x.dtype)
    axes = tuple(range(attrs.axis, x.ndim))
    xs = x.astype(acc, copy=False)
    mean = xs.mean(axis=axes, keepdims=True)
    centered = xs - mean
    inv_std = 1 / np.sqrt((centered * centered).mean(axis=axes, keepdims=True)
                          + acc.type(attrs.epsilon))
    y = centered * inv_std * scale.astype(acc, copy=False)
    if bias is not None:
        y = y + bias.astype(acc, copy=False)
    y = y.astype(x.dtype, copy=False)
    if not attrs.with_stats:
        return y
    return y, mean.astype(STATS_DTYPE), inv_std.astype(STATS_DTYPE)


# ----------------------------------------------------------------------------- rms_norm

rms_norm = define_op(
    "rms_norm", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"axis": REQUIRED, "epsilon": 1e-5}, num_inputs=2,
    doc="x / sqrt(mean(x^2 over axes axis..rank-1) + epsilon) * scale (scale broadcasts to x).",
)


@rms_norm.infer
def _(attrs, x, scale) -> TensorType:
    _require_float("rms_norm", x, scale)
    if not 0 <= attrs.axis < x.rank:
        raise ShapeError(f"rms_norm: axis {attrs.axis} is out of range for shape {x.shape}")
    _check_affine("rms_norm", x, scale=scale)
    return x


@rms_norm.reference
def _(attrs, x, scale) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    xs = x.astype(acc, copy=False)
    mean_square = (xs * xs).mean(axis=tuple(range(attrs.axis, x.ndim)), keepdims=True)
    y = xs / np.sqrt(mean_square + acc.type(attrs.epsilon)) * scale.astype(acc, copy=False)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- lrn

lrn = define_op(
    "lrn", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"size": REQUIRED, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
    doc="Local response normalization across channels: x / (bias + alpha / size * s) ^ beta, "
        "s the sum of squares over channels c - floor((size-1)/2) .. c + ceil((size-1)/2).",
)


@lrn.infer
def _(attrs, x) -> TensorType:
    _require_float("lrn", x)
    if x.rank < 3:
        raise ShapeError(f"lrn: the input must be (N, C, *spatial), got shape {x.shape}")
    if attrs.size < 1:
        raise ShapeError(f"lrn: size must be positive, got {attrs.size}")
    return x


@lrn.reference
def _(attrs, x) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    xs = x.astype(acc, copy=False)
    before = (attrs.size - 1) // 2
    after = attrs.size - 1 - before
    widths = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    squares = np.pad(xs * xs, widths)
    channels = x.shape[1]
    # A loop over the window's few taps, each a slice of all channels.
    sums = sum(squares[:, tap:tap + channels] for tap in range(attrs.size))
    scale = acc.type(attrs.bias) + acc.type(attrs.alpha / attrs.size) * sums
    return (xs / scale ** acc.type(attrs.beta)).astype(x.dtype, copy=False)

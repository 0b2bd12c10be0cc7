"""Neural-network ops: convolution, transposed convolution, matrix product, softmax family.

Data is laid out channels-first, (N, C, *spatial), with any number of spatial axes (1-D, 2-D,
3-D, ...); convolution weights are (M, C / groups, *kernel) and transposed-convolution weights
(C, M / groups, *kernel), as in ONNX. Window attributes are fully resolved by the converters:
`strides` and `dilations` hold one entry per spatial axis, `pads` holds the begin paddings of
every spatial axis followed by the end paddings (ONNX's order), and auto_pad is already turned
into explicit pads.

Pooling lives in `nn_pool.py` and normalization in `nn_norm.py`; they share the window helpers
defined here.

The references compute half-precision inputs in float32 and round once at the end (the way a
kernel with float32 accumulation does), and are vectorized: convolution is an im2col over a
strided view of the padded input followed by one (grouped) matrix product.

Fusion pattern kinds follow TVM: convolutions and matrix products are out-elementwise-fusable
(a bias, activation or residual add fuses onto their output; two of them never chain). TVM
registers softmax and log_softmax as out-elementwise-fusable too: each is a reduction whose
result is immediately broadcast back over the same tensor, so an elementwise epilogue fuses onto
it but nothing fuses into its input; hardmax has the same shape of computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.elementwise import FLOATS, check_dtype, compute_dtype
from ember.ir.ops.registry import (
    REQUIRED,
    OpDef,
    Pattern,
    broadcast_shapes,
    define_op,
    same_dtype,
)

#: The im2col matrix of one convolution chunk stays under this many bytes; larger batches
#: are processed in chunks of images.
_IM2COL_BUDGET = 256 << 20


# ----------------------------------------------------------------------------- window helpers


def check_window_attrs(op: str, x: TensorType, **attrs: Sequence[int]) -> int:
    """Check the window attributes of an (N, C, *spatial) op and return the spatial rank.

    `attrs` may hold kernel_shape, strides, dilations (one positive entry per spatial axis),
    pads (2 entries per spatial axis, begins then ends) and output_padding (one per axis).
    """
    if x.rank < 3:
        raise ShapeError(
            f"{op}: the input must be (N, C, *spatial) with at least one spatial axis, got "
            f"shape {x.shape}"
        )
    spatial = x.rank - 2
    for name, values in attrs.items():
        values = tuple(values)
        expected = 2 * spatial if name == "pads" else spatial
        if len(values) != expected:
            raise ShapeError(
                f"{op}: {name} {values} has {len(values)} entries; an input of shape {x.shape} "
                f"has {spatial} spatial axes, so it needs {expected}"
            )
        if name in ("kernel_shape", "strides", "dilations") and any(v < 1 for v in values):
            raise ShapeError(f"{op}: {name} {values} must be positive")
        if name in ("pads", "output_padding") and any(v < 0 for v in values):
            raise ShapeError(f"{op}: {name} {values} must not be negative")
    return spatial


def window_output_size(op: str, size: int, kernel: int, stride: int, dilation: int,
                       pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    """Number of window positions along one axis of a convolution or pooling.

    With `ceil_mode` a last, partial window is kept when it starts inside the input or the
    begin padding (the rule PyTorch and ONNX Runtime use).
    """
    span = (kernel - 1) * dilation + 1
    room = size + pad_begin + pad_end - span
    if room < 0:
        raise ShapeError(
            f"{op}: the window spans {span} elements (kernel {kernel}, dilation {dilation}) "
            f"but the padded input has only {size + pad_begin + pad_end} "
            f"({size} plus pads {pad_begin} and {pad_end})"
        )
    if not ceil_mode:
        return room // stride + 1
    count = -(-room // stride) + 1
    if (count - 1) * stride >= size + pad_begin:
        count -= 1
    return count


def window_output_shape(op: str, spatial_shape: Sequence[int], kernel: Sequence[int],
                        strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int],
                        ceil_mode: bool = False) -> tuple[int, ...]:
    n = len(spatial_shape)
    return tuple(
        window_output_size(op, spatial_shape[d], kernel[d], strides[d], dilations[d], pads[d],
                           pads[n + d], ceil_mode)
        for d in range(n)
    )


def sliding_windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], pads: Sequence[int], out_shape: Sequence[int],
                    pad_value: float) -> np.ndarray:
    """A read-only view of shape (N, C, *out_shape, *kernel) over `x` padded with `pad_value`:
    element [n, c, o..., k...] is padded_x[n, c, o * strides + k * dilations].

    The end padding grows where ceil mode needs a last window that reaches past it.
    """
    spatial = len(kernel)
    widths = [(0, 0), (0, 0)]
    for d in range(spatial):
        needed = (out_shape[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1
        begin = pads[d]
        widths.append((begin, max(pads[spatial + d], needed - x.shape[2 + d] - begin)))
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, constant_values=pad_value)
    step = x.strides
    return as_strided(
        x,
        shape=(*x.shape[:2], *out_shape, *kernel),
        strides=(
            *step[:2],
            *(step[2 + d] * strides[d] for d in range(spatial)),
            *(step[2 + d] * dilations[d] for d in range(spatial)),
        ),
        writeable=False,
    )


# ----------------------------------------------------------------------------- conv

conv = define_op(
    "conv", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"strides": REQUIRED, "dilations": REQUIRED, "pads": REQUIRED, "groups": 1},
    num_inputs=(2, 3),
    doc="N-d grouped convolution (cross-correlation) of x (N, C, *S) with weight "
        "(M, C/groups, *K) and an optional bias (M,).",
)


@conv.infer
def _(attrs, x: TensorType, w: TensorType, bias: TensorType | None = None) -> TensorType:
    check_dtype("conv", x, FLOATS)
    same_dtype("conv", x, w, *([bias] if bias is not None else []))
    spatial = check_window_attrs("conv", x, strides=attrs.strides, dilations=attrs.dilations,
                                 pads=attrs.pads)
    if w.rank != x.rank:
        raise ShapeError(
            f"conv: the weight {w.shape} must have rank {x.rank} (M, C/groups, {spatial} "
            f"kernel axes) for an input of shape {x.shape}"
        )
    groups, channels, filters = attrs.groups, x.shape[1], w.shape[0]
    if groups < 1 or channels % groups or filters % groups:
        raise ShapeError(
            f"conv: groups={groups} must be positive and divide both the input channels "
            f"({channels}) and the output channels ({filters})"
        )
    if w.shape[1] * groups != channels:
        raise ShapeError(
            f"conv: the input has {channels} channels but the weight {w.shape} expects "
            f"{w.shape[1] * groups} (groups={groups})"
        )
    if bias is not None and bias.shape != (filters,):
        raise ShapeError(f"conv: the bias must have shape ({filters},), got {bias.shape}")
    out = window_output_shape("conv", x.shape[2:], w.shape[2:], attrs.strides, attrs.dilations,
                              attrs.pads)
    return TensorType((x.shape[0], filters, *out), x.dtype)


@conv.reference
def _(attrs, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    kernel = w.shape[2:]
    spatial = len(kernel)
    out_shape = window_output_shape("conv", x.shape[2:], kernel, attrs.strides, attrs.dilations,
                                    attrs.pads)
    windows = sliding_windows(x.astype(acc, copy=False), kernel, attrs.strides,
                              attrs.dilations, attrs.pads, out_shape, 0)
    batch, channels = x.shape[:2]
    groups, filters = attrs.groups, w.shape[0]
    group_in, group_out = channels // groups, filters // groups
    taps, pixels = math.prod(kernel), math.prod(out_shape)
    # (groups, C/groups * taps, M/groups): one matrix per group
    weight = w.astype(acc, copy=False).reshape(groups, group_out, group_in * taps)
    weight = weight.transpose(0, 2, 1)
    # windows as (N, groups, C/groups, *out, *kernel) -> (groups, N, *out, C/groups, *kernel)
    grouped = windows.reshape(batch, groups, group_in, *out_shape, *kernel)
    grouped = np.moveaxis(grouped, 2, 2 + spatial).swapaxes(0, 1)
    y = np.empty((batch, filters, *out_shape), acc)
    chunk = max(1, _IM2COL_BUDGET // max(1, pixels * channels * taps * acc.itemsize))
    for start in range(0, batch, chunk):
        stop = min(batch, start + chunk)
        cols = grouped[:, start:stop].reshape(groups, (stop - start) * pixels, group_in * taps)
        # A single group goes straight to one BLAS call.
        out = (cols[0] @ weight[0])[None] if groups == 1 else np.matmul(cols, weight)
        out = out.reshape(groups, stop - start, *out_shape, group_out)
        out = np.moveaxis(out, (0, 1, -1), (1, 0, 2))  # (N, groups, M/groups, *out)
        y[start:stop] = out.reshape(stop - start, filters, *out_shape)
    if bias is not None:
        y += bias.astype(acc).reshape(filters, *(1,) * spatial)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- conv_transpose

conv_transpose = define_op(
    "conv_transpose", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"strides": REQUIRED, "dilations": REQUIRED, "pads": REQUIRED,
           "output_padding": REQUIRED, "groups": 1},
    num_inputs=(2, 3),
    doc="N-d grouped transposed convolution (the gradient of conv) of x (N, C, *S) with weight "
        "(C, M/groups, *K) and an optional bias (M,). Each spatial output size is "
        "(S - 1) * stride + (K - 1) * dilation + 1 + output_padding - pad_begin - pad_end. "
        "Pads may be negative (the output then extends past the full result, with zeros): "
        "that is how ONNX's output_shape larger than the natural size comes out.",
)


def _conv_transpose_shape(attrs, x_shape: Sequence[int], kernel: Sequence[int]) -> list[int]:
    spatial = len(kernel)
    return [
        (x_shape[2 + d] - 1) * attrs.strides[d] + (kernel[d] - 1) * attrs.dilations[d] + 1
        + attrs.output_padding[d] - attrs.pads[d] - attrs.pads[spatial + d]
        for d in range(spatial)
    ]


@conv_transpose.infer
def _(attrs, x: TensorType, w: TensorType, bias: TensorType | None = None) -> TensorType:
    op = "conv_transpose"
    check_dtype(op, x, FLOATS)
    same_dtype(op, x, w, *([bias] if bias is not None else []))
    check_window_attrs(op, x, strides=attrs.strides, dilations=attrs.dilations,
                       output_padding=attrs.output_padding)
    if len(attrs.pads) != 2 * (x.rank - 2):
        raise ShapeError(f"{op}: pads {attrs.pads} needs {2 * (x.rank - 2)} entries")
    if w.rank != x.rank:
        raise ShapeError(
            f"{op}: the weight {w.shape} must have rank {x.rank} (C, M/groups, kernel...) for "
            f"an input of shape {x.shape}"
        )
    groups, channels = attrs.groups, x.shape[1]
    if groups < 1 or channels % groups:
        raise ShapeError(
            f"{op}: groups={groups} must be positive and divide the input channels ({channels})"
        )
    if w.shape[0] != channels:
        raise ShapeError(
            f"{op}: the input has {channels} channels but the weight {w.shape} expects "
            f"{w.shape[0]} (its first axis)"
        )
    filters = w.shape[1] * groups
    if bias is not None and bias.shape != (filters,):
        raise ShapeError(f"{op}: the bias must have shape ({filters},), got {bias.shape}")
    out = _conv_transpose_shape(attrs, x.shape, w.shape[2:])
    if any(size < 1 for size in out):
        raise ShapeError(
            f"{op}: the output spatial shape {tuple(out)} is empty for input {x.shape}, "
            f"weight {w.shape}, strides {attrs.strides}, pads {attrs.pads}"
        )
    return TensorType((x.shape[0], filters, *out), x.dtype)


@conv_transpose.reference
def _(attrs, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    kernel = w.shape[2:]
    spatial = len(kernel)
    batch, channels, *in_shape = x.shape
    groups = attrs.groups
    group_in, group_out = channels // groups, w.shape[1]
    filters, taps = group_out * groups, math.prod(kernel)
    # Every input pixel times every tap, as one matrix product per group:
    # (groups, N * S, C/groups) @ (groups, C/groups, M/groups * taps)
    xs = x.astype(acc, copy=False).reshape(batch, groups, group_in, -1)
    xs = xs.transpose(1, 0, 3, 2).reshape(groups, -1, group_in)
    ws = w.astype(acc, copy=False).reshape(groups, group_in, group_out * taps)
    products = np.matmul(xs, ws).reshape(groups, batch, *in_shape, group_out, taps)
    # -> (taps, N, groups, M/groups, *S)
    products = np.moveaxis(products, (-1, 0, 1, -2), (0, 2, 1, 3))
    products = products.reshape(taps, batch, filters, *in_shape)
    full_shape = [(in_shape[d] - 1) * attrs.strides[d] + (kernel[d] - 1) * attrs.dilations[d] + 1
                  for d in range(spatial)]
    full = np.zeros((batch, filters, *full_shape), acc)
    # Scatter-add each tap's contribution onto its strided positions of the full output.
    for tap, offset in enumerate(np.ndindex(*kernel)):
        where = tuple(
            slice(offset[d] * attrs.dilations[d],
                  offset[d] * attrs.dilations[d] + (in_shape[d] - 1) * attrs.strides[d] + 1,
                  attrs.strides[d])
            for d in range(spatial)
        )
        full[(slice(None), slice(None), *where)] += products[tap]
    # Crop the begin/end pads; negative pads and output_padding extend with zeros.
    out_shape = _conv_transpose_shape(attrs, x.shape, kernel)
    y = np.zeros((batch, filters, *out_shape), acc)
    source, target = [slice(None)] * 2, [slice(None)] * 2
    for d in range(spatial):
        begin = attrs.pads[d]
        lo, hi = max(begin, 0), min(begin + out_shape[d], full_shape[d])
        source.append(slice(lo, max(lo, hi)))
        target.append(slice(lo - begin, lo - begin + max(0, hi - lo)))
    y[tuple(target)] = full[tuple(source)]
    if bias is not None:
        y += bias.astype(acc).reshape(filters, *(1,) * spatial)
    return y.astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- matmul

#: Dtypes ONNX's MatMul and Gemm accept.
MATMUL_DTYPES = FLOATS + ("int32", "int64", "uint32", "uint64")

matmul = define_op(
    "matmul", Pattern.OUT_ELEMWISE_FUSABLE, num_inputs=2,
    doc="numpy.matmul: batched matrix product with broadcast batch axes; a 1-D first operand "
        "is a row vector and a 1-D second operand a column vector, their axis dropped after.",
)


@matmul.infer
def _(attrs, a: TensorType, b: TensorType) -> TensorType:
    dtype = same_dtype("matmul", a, b)
    check_dtype("matmul", a, MATMUL_DTYPES)
    if a.rank == 0 or b.rank == 0:
        raise ShapeError(f"matmul: operands must have rank >= 1, got {a.shape} and {b.shape}")
    a_shape = (1, *a.shape) if a.rank == 1 else a.shape
    b_shape = (*b.shape, 1) if b.rank == 1 else b.shape
    if a_shape[-1] != b_shape[-2]:
        raise ShapeError(
            f"matmul: {a.shape} @ {b.shape}: the contracted dimensions {a_shape[-1]} and "
            f"{b_shape[-2]} differ"
        )
    batch = broadcast_shapes("matmul", a_shape[:-2], b_shape[:-2])
    shape = (*batch, *a_shape[-2:-1], *b_shape[-1:])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return TensorType(shape, dtype)


@matmul.reference
def _(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = compute_dtype(a.dtype)
    return np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(
        a.dtype, copy=False)


# ----------------------------------------------------------------------------- softmax family


def _define_axis_op(name: str, doc: str) -> OpDef:
    op = define_op(name, Pattern.OUT_ELEMWISE_FUSABLE, attrs={"axis": REQUIRED}, doc=doc)

    @op.infer
    def _(attrs, x: TensorType) -> TensorType:
        check_dtype(name, x, FLOATS)
        if not 0 <= attrs.axis < x.rank:
            raise ShapeError(f"{name}: axis {attrs.axis} is out of range for shape {x.shape}")
        return x

    return op


softmax = _define_axis_op("softmax", "exp(x) / sum(exp(x)) along `axis`.")
log_softmax = _define_axis_op("log_softmax", "x - log(sum(exp(x))) along `axis`.")
hardmax = _define_axis_op(
    "hardmax", "1 where x is the first maximum along `axis`, 0 elsewhere.")


@softmax.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    acc = x.astype(compute_dtype(x.dtype), copy=False)
    e = np.exp(acc - acc.max(axis=attrs.axis, keepdims=True))
    return (e / e.sum(axis=attrs.axis, keepdims=True)).astype(x.dtype, copy=False)


@log_softmax.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    acc = x.astype(compute_dtype(x.dtype), copy=False)
    shifted = acc - acc.max(axis=attrs.axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=attrs.axis, keepdims=True))
    return out.astype(x.dtype, copy=False)


@hardmax.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    if x.size:
        first = np.argmax(x, axis=attrs.axis, keepdims=True)
        np.put_along_axis(out, first, 1, axis=attrs.axis)
    return out

"""Converters for ONNX's neural-network operators: Conv, ConvTranspose, the pools, MatMul,
Gemm, Softmax/LogSoftmax/Hardmax and Dropout. Normalizations are in `nn_norm.py`.

The converters resolve everything opset-specific into the ember ops' explicit attributes:
auto_pad becomes explicit pads, a missing kernel_shape comes from the weight, ConvTranspose's
output_shape becomes pads, and the pre-13 Softmax semantics (coerce to 2-D at `axis`) become
reshapes around a one-axis softmax. Gemm is decomposed into transpose, matmul, mul and add;
global pooling into reduce_mean / reduce_max; Dropout is the identity at inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, emit_slice, onnx_axis
from ember.ir.graph import is_float, numpy_dtype
from ember.ir.ops.registry import broadcast_shapes

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# ----------------------------------------------------------------------------- window attributes


def spatial_rank(ctx: ConvertContext) -> int:
    """The number of spatial axes of input 0, which must be (N, C, *spatial)."""
    rank = ctx.type(0).rank
    if rank < 3:
        ctx.fail(
            f"the input must be (N, C, *spatial) with at least one spatial axis, got shape "
            f"{ctx.type(0).shape}"
        )
    return rank - 2


def int_list(ctx: ConvertContext, name: str, count: int, default: int) -> tuple[int, ...]:
    """Attribute `name` as `count` ints (`default` each when absent)."""
    values = ctx.attr(name, None)
    if values is None or len(values) == 0:
        return (default,) * count
    values = tuple(int(v) for v in values)
    if len(values) != count:
        ctx.fail(f"{name} {list(values)} must have {count} entries, one per spatial axis")
    return values


def auto_pad_mode(ctx: ConvertContext) -> str:
    mode = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if mode not in _AUTO_PADS:
        ctx.fail(f"auto_pad {mode!r} is not supported; ember supports {', '.join(_AUTO_PADS)}")
    return mode


def resolve_pads(ctx: ConvertContext, in_shape: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int]) -> tuple[int, ...]:
    """Explicit pads (begins, then ends) from the `pads` and `auto_pad` attributes.

    SAME_* pads so that each output size is ceil(input / stride), the odd unit at the end
    (SAME_UPPER) or at the beginning (SAME_LOWER); VALID does not pad. As in ONNX's formula
    and ONNX Runtime, the SAME total is not clamped at zero: when the stride is longer than
    the window it is negative and the pads crop the input (see `apply_pads`), halved with
    C's truncating division as ONNX Runtime does.
    """
    spatial = len(in_shape)
    mode = auto_pad_mode(ctx)
    given = int_list(ctx, "pads", 2 * spatial, 0) if ctx.has_attr("pads") else None
    if given is not None and any(p < 0 for p in given):
        ctx.fail(f"pads {list(given)} must not be negative")
    if mode == "NOTSET":
        return given if given is not None else (0,) * (2 * spatial)
    begins, ends = [], []
    for d in range(spatial):
        total = 0
        if mode != "VALID":
            out = -(-in_shape[d] // strides[d])
            span = (kernel[d] - 1) * dilations[d] + 1
            total = (out - 1) * strides[d] + span - in_shape[d]
        begin = int((total if mode == "SAME_UPPER" else total + 1) / 2)
        begins.append(begin)
        ends.append(total - begin)
    pads = (*begins, *ends)
    if given is not None and any(given) and given != pads:
        ctx.fail(f"pads {list(given)} contradict auto_pad {mode!r}, which gives {list(pads)}")
    return pads


def apply_pads(ctx: ConvertContext, value: str,
               pads: Sequence[int]) -> tuple[str, tuple[int, ...]]:
    """`value` and `pads` for an ember window op, whose pads are never negative: a negative
    pad (from SAME with a stride longer than the window) becomes a slice of the input."""
    if min(pads, default=0) >= 0:
        return value, tuple(pads)
    spatial = len(pads) // 2
    shape = ctx.builder.types[value].shape
    crops = {
        2 + d: (max(0, -pads[d]), shape[2 + d] - max(0, -pads[spatial + d]), 1)
        for d in range(spatial)
    }
    return emit_slice(ctx, value, crops), tuple(max(0, p) for p in pads)


def _float_input(ctx: ConvertContext, index: int = 0) -> None:
    if not is_float(ctx.type(index).dtype):
        ctx.fail(f"input {index} has dtype {ctx.type(index).dtype}; {ctx.op_type} takes floats")


# ----------------------------------------------------------------------------- convolution


def _kernel_from_weight(ctx: ConvertContext, spatial: int) -> tuple[int, ...]:
    weight = ctx.type(1)
    if weight.rank != spatial + 2:
        ctx.fail(
            f"the weight {weight.shape} must have rank {spatial + 2} for the input "
            f"{ctx.type(0).shape}"
        )
    kernel = tuple(weight.shape[2:])
    declared = ctx.attr("kernel_shape", None)
    if declared is not None and tuple(int(k) for k in declared) != kernel:
        ctx.fail(
            f"kernel_shape {list(declared)} does not match the weight's spatial shape "
            f"{list(kernel)} (weight {weight.shape})"
        )
    return kernel


def _conv_inputs(ctx: ConvertContext) -> list[str]:
    return [ctx.input(0), ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])


@converter("Conv", since=1)
def conv(ctx: ConvertContext) -> str:
    spatial = spatial_rank(ctx)
    kernel = _kernel_from_weight(ctx, spatial)
    strides = int_list(ctx, "strides", spatial, 1)
    dilations = int_list(ctx, "dilations", spatial, 1)
    pads = resolve_pads(ctx, ctx.type(0).shape[2:], kernel, strides, dilations)
    x, pads = apply_pads(ctx, ctx.input(0), pads)
    return ctx.emit("conv", [x, *_conv_inputs(ctx)[1:]], {
        "strides": strides, "dilations": dilations, "pads": pads,
        "groups": int(ctx.attr("group", 1)),
    })


@converter("ConvTranspose", since=1)
def conv_transpose(ctx: ConvertContext) -> str:
    spatial = spatial_rank(ctx)
    kernel = _kernel_from_weight(ctx, spatial)
    in_shape = ctx.type(0).shape[2:]
    strides = int_list(ctx, "strides", spatial, 1)
    dilations = int_list(ctx, "dilations", spatial, 1)
    output_padding = int_list(ctx, "output_padding", spatial, 0)
    mode = auto_pad_mode(ctx)
    output_shape = ctx.attr("output_shape", None)
    if output_shape is not None and len(output_shape) == spatial + 2:
        output_shape = output_shape[2:]  # some exporters give the whole (N, C, ...) shape
    # The size before any padding is taken off: (in - 1) * stride + span + output_padding.
    natural = [(in_shape[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1
               + output_padding[d] for d in range(spatial)]
    if output_shape is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        # SAME aims at in * stride but never pads negatively (as ONNX's shape inference and
        # ONNX Runtime do); an explicit output_shape larger than the natural size extends the
        # output with zeros at the end (negative pads), as ONNX's reference does.
        clamp = output_shape is None
        if output_shape is None:
            output_shape = [in_shape[d] * strides[d] for d in range(spatial)]
        if len(output_shape) != spatial:
            ctx.fail(f"output_shape {list(output_shape)} must have {spatial} entries")
        # The total padding is split evenly, the odd unit at the end for SAME_UPPER and at the
        # beginning otherwise.
        begins, ends = [], []
        for d in range(spatial):
            total = natural[d] - int(output_shape[d])
            total = max(0, total) if clamp else total
            half = total // 2
            begins.append(half if mode == "SAME_UPPER" else total - half)
            ends.append(total - half if mode == "SAME_UPPER" else half)
        pads = (*begins, *ends)
    elif mode == "VALID":
        pads = (0,) * (2 * spatial)
    else:
        pads = int_list(ctx, "pads", 2 * spatial, 0)
    # output_padding stays in the attributes: with output_shape it is part of the total
    # padding above, so the op's size comes out as output_shape.
    return ctx.emit("conv_transpose", _conv_inputs(ctx), {
        "strides": strides, "dilations": dilations, "pads": pads,
        "output_padding": output_padding, "groups": int(ctx.attr("group", 1)),
    })


# ----------------------------------------------------------------------------- pooling


def _pool_window(ctx: ConvertContext) -> tuple[str, dict]:
    """The pooled value (input 0, cropped where SAME pads are negative) and the window
    attributes of a pooling node."""
    spatial = spatial_rank(ctx)
    if not ctx.attr("kernel_shape", None):
        ctx.fail("attribute 'kernel_shape' is required")
    kernel = int_list(ctx, "kernel_shape", spatial, 1)
    strides = int_list(ctx, "strides", spatial, 1)
    dilations = int_list(ctx, "dilations", spatial, 1)
    pads = resolve_pads(ctx, ctx.type(0).shape[2:], kernel, strides, dilations)
    value, pads = apply_pads(ctx, ctx.input(0), pads)
    # ceil_mode only changes explicit padding: SAME and VALID fix the output size themselves.
    ceil_mode = bool(ctx.attr("ceil_mode", 0)) and auto_pad_mode(ctx) == "NOTSET"
    return value, {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                   "pads": pads, "ceil_mode": ceil_mode}


def _wants_output(ctx: ConvertContext, index: int) -> bool:
    return index < ctx.num_outputs and ctx.node.output[index] != ""


@converter("MaxPool", since=1)
def max_pool(ctx: ConvertContext) -> str | tuple[str, ...]:
    value, attrs = _pool_window(ctx)
    if not _wants_output(ctx, 1):
        return ctx.emit("max_pool", [value], attrs)
    if value != ctx.input(0):
        ctx.fail("the Indices output is not supported where auto_pad crops the input "
                 "(a stride longer than the window)")
    storage_order = int(ctx.attr("storage_order", 0))
    return ctx.emit_multi("max_pool", [value],
                          {**attrs, "return_indices": True, "storage_order": storage_order})


@converter("AveragePool", since=1)
def average_pool(ctx: ConvertContext) -> str:
    _float_input(ctx)
    value, attrs = _pool_window(ctx)
    attrs["count_include_pad"] = bool(ctx.attr("count_include_pad", 0))
    return ctx.emit("average_pool", [value], attrs)


@converter("LpPool", since=1)
def lp_pool(ctx: ConvertContext) -> str:
    _float_input(ctx)
    value, attrs = _pool_window(ctx)
    return ctx.emit("lp_pool", [value], {**attrs, "p": _lp_order(ctx)})


def _lp_order(ctx: ConvertContext) -> float | int:
    p = ctx.attr("p", 2)
    if p <= 0:
        ctx.fail(f"p must be positive, got {p}")
    return int(p) if float(p).is_integer() else float(p)


def _global_reduce(ctx: ConvertContext, op: str) -> str:
    _float_input(ctx)
    rank = spatial_rank(ctx) + 2
    return ctx.emit(op, [ctx.input(0)], {"axes": tuple(range(2, rank)), "keepdims": True})


@converter("GlobalAveragePool", since=1)
def global_average_pool(ctx: ConvertContext) -> str:
    return _global_reduce(ctx, "reduce_mean")


@converter("GlobalMaxPool", since=1)
def global_max_pool(ctx: ConvertContext) -> str:
    return _global_reduce(ctx, "reduce_max")


@converter("GlobalLpPool", since=1)
def global_lp_pool(ctx: ConvertContext) -> str:
    _float_input(ctx)
    spatial = spatial_rank(ctx)
    whole = tuple(ctx.type(0).shape[2:])
    return ctx.emit("lp_pool", [ctx.input(0)], {
        "kernel_shape": whole, "strides": (1,) * spatial, "dilations": (1,) * spatial,
        "pads": (0,) * (2 * spatial), "p": _lp_order(ctx),
    })


# ----------------------------------------------------------------------------- matmul and gemm


@converter("MatMul", since=1)
def matmul(ctx: ConvertContext) -> str:
    return ctx.emit("matmul", [ctx.input(0), ctx.input(1)])


def _scalar(ctx: ConvertContext, value: float, dtype: str, what: str) -> str:
    if not is_float(dtype) and not float(value).is_integer():
        ctx.fail(f"{what}={value} cannot scale a {dtype} Gemm; only whole numbers can")
    return ctx.constant(np.asarray(value).astype(numpy_dtype(dtype)))


@converter("Gemm", since=1)
def gemm(ctx: ConvertContext) -> str:
    """alpha * A' @ B' + beta * C, A' and B' optionally transposed (opsets before 7 had a
    `broadcast` flag; numpy broadcasting of C covers both of its settings)."""
    a, b = ctx.type(0), ctx.type(1)
    if a.rank != 2 or b.rank != 2:
        ctx.fail(f"A and B must be matrices, got shapes {a.shape} and {b.shape}")
    operands = []
    for index, flag in ((0, "transA"), (1, "transB")):
        value = ctx.input(index)
        if ctx.attr(flag, 0):
            value = ctx.emit("transpose", [value], {"perm": (1, 0)})
        operands.append(value)
    y = ctx.emit("matmul", operands)
    dtype = a.dtype
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    if alpha != 1.0:
        y = ctx.emit("mul", [y, _scalar(ctx, alpha, dtype, "alpha")])
    if ctx.has_input(2) and beta != 0.0:
        out_shape = ctx.builder.types[y].shape
        c_shape = ctx.type(2).shape
        if len(c_shape) > 2 or broadcast_shapes("gemm", out_shape, c_shape) != out_shape:
            ctx.fail(f"C of shape {c_shape} does not broadcast to the result {out_shape}")
        c = ctx.input(2)
        if beta != 1.0:
            c = ctx.emit("mul", [c, _scalar(ctx, beta, dtype, "beta")])
        y = ctx.emit("add", [y, c])
    return y


# ----------------------------------------------------------------------------- softmax family


def _softmax_like(ctx: ConvertContext, op: str, coerce_2d: bool) -> str:
    x = ctx.type(0)
    if x.rank == 0:
        ctx.fail("the input must have rank >= 1, got a scalar")
    axis = onnx_axis(ctx, int(ctx.attr("axis", 1 if coerce_2d else -1)), x.rank)
    if not coerce_2d:
        return ctx.emit(op, [ctx.input(0)], {"axis": axis})
    # Before opset 13 the op works on the input flattened to [prod(:axis), prod(axis:)]. When at
    # most one of the trailing axes is longer than 1, that is the op along that one axis.
    long_axes = [a for a in range(axis, x.rank) if x.shape[a] != 1]
    if len(long_axes) <= 1:
        return ctx.emit(op, [ctx.input(0)], {"axis": long_axes[0] if long_axes else axis})
    flat = emit_reshape(ctx, ctx.input(0), (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
    return emit_reshape(ctx, ctx.emit(op, [flat], {"axis": 1}), x.shape)


def _define_softmax_like(onnx_op: str, op: str) -> None:
    @converter(onnx_op, since=1)
    def convert_2d(ctx: ConvertContext) -> str:
        return _softmax_like(ctx, op, coerce_2d=True)

    @converter(onnx_op, since=13)
    def convert(ctx: ConvertContext) -> str:
        return _softmax_like(ctx, op, coerce_2d=False)


_define_softmax_like("Softmax", "softmax")
_define_softmax_like("LogSoftmax", "log_softmax")
_define_softmax_like("Hardmax", "hardmax")


# ----------------------------------------------------------------------------- dropout


def _dropout_outputs(ctx: ConvertContext, mask_dtype: str) -> str | tuple[str, str]:
    if not _wants_output(ctx, 1):
        return ctx.input(0)
    mask = np.ones(ctx.type(0).shape, numpy_dtype(mask_dtype))
    return ctx.input(0), ctx.constant(mask)


@converter("Dropout", since=1)
def dropout(ctx: ConvertContext) -> str | tuple[str, str]:
    """Inference: the output is the input and the mask all ones (ember compiles inference
    graphs, so is_test=0 in opsets 1 and 6 is read as test mode, as TVM and ORT do)."""
    return _dropout_outputs(ctx, ctx.type(0).dtype if ctx.opset < 10 else "bool")


@converter("Dropout", since=12)
def dropout_12(ctx: ConvertContext) -> str | tuple[str, str]:
    """training_mode (input 2) must be a constant; in training mode a ratio of 0 keeps every
    element, any other ratio draws random numbers, which an inference compiler does not."""
    if ctx.has_input(2) and bool(np.asarray(ctx.require_const(2, "training_mode")).item()):
        ratio = 0.5
        if ctx.has_input(1):
            ratio = float(np.asarray(ctx.require_const(1, "ratio")).item())
        if ratio != 0.0:
            ctx.fail(
                f"training_mode is true with ratio {ratio}: random dropout is not supported; "
                f"ember compiles inference graphs (set training_mode to false or drop the node)"
            )
    return _dropout_outputs(ctx, "bool")

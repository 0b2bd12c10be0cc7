"""Converters for ONNX's quantization ops: QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv.

None of them is an ember primitive: each decomposes into cast, div/mul/add/sub, round (half
to even, ONNX's rounding), clip, matmul and conv, which fusion puts back into few kernels.

Arithmetic follows the precision ONNX's reference computes in, so results match it bit for
bit: quantization divides in x's dtype and rounds; dequantization subtracts the zero point
in float32 (float64 for int32 data, where float32 is not exact) and multiplies by the scale.
Integer products (MatMulInteger, QLinearMatMul) run as int32 matmuls; integer convolutions
run as float64 convolutions (ember's conv takes floats; every int32 sum of uint8/int8
products is exact in float64) and cast back to int32.

Scales and zero points are per tensor (a scalar or one element), per axis (a vector along
`axis`) or, from opset 21, blocked (`block_size` consecutive elements along `axis` share
one); they may be graph inputs, and `_along_axis` makes them broadcast against x.
Compiled kernels have no float8 arithmetic, so float8 data passes through `bitcast` as bytes:
dequantization looks the 256 values of the type up in a table, quantization computes the
code (round to nearest even, saturating) with integer arithmetic. The sub-byte types (int4,
uint4, int2, uint2, float4) are no ember dtypes: the importer rejects models using them with
a message naming the type.
"""

from __future__ import annotations

import numpy as np
import onnx

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.nn import (
    apply_pads,
    int_list,
    resolve_pads,
    spatial_rank,
)
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, onnx_axis
from ember.ir.graph import DTYPES, dtype_name, numpy_dtype
from ember.ir.ops.elementwise import FLOAT8S, FLOATS

#: The integer types ONNX quantizes to that ember has, with their ranges.
_INT_RANGES = {
    "uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
}
QUANTIZED = tuple(_INT_RANGES) + FLOAT8S

# ----------------------------------------------------------------------------- helpers


def cast(ctx: ConvertContext, value: str, dtype: str) -> str:
    """`value` as `dtype` (no node when it already is)."""
    if ctx.builder.types[value].dtype == dtype:
        return value
    return ctx.emit("cast", [value], {"to": dtype})


def scalar(ctx: ConvertContext, value: float, dtype: str) -> str:
    return ctx.constant(np.asarray(value).astype(numpy_dtype(dtype)))


def onnx_dtype(ctx: ConvertContext, elem_type: int, what: str) -> str:
    """The ember dtype of an ONNX element type given as an attribute value."""
    try:
        dtype = dtype_name(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = None
    if dtype in DTYPES:
        return dtype
    label = onnx.TensorProto.DataType.Name(elem_type) \
        if elem_type in onnx.TensorProto.DataType.values() else str(elem_type)
    ctx.fail(f"{what} {label} is not an ember dtype")


def wider_float(*dtypes: str) -> str:
    """The float dtype numpy computes a mix of `dtypes` in (float32 at least for halves)."""
    if "float64" in dtypes:
        return "float64"
    if len(set(dtypes)) == 1:
        return dtypes[0]
    return "float32"


def _along_axis(ctx: ConvertContext, index: int, x_shape: tuple[int, ...], axis: int,
                block_size: int, what: str) -> str:
    """Input `index` (a scale or zero point) reshaped or repeated to broadcast against x:
    per tensor it becomes a scalar, per axis a vector along `axis`, blocked a tensor of x's
    shape whose blocks repeat each element `block_size` times along `axis`."""
    value, shape = ctx.input(index), ctx.type(index).shape
    size = int(np.prod(shape))
    if len(shape) == 0 or (size == 1 and block_size == 0):
        return emit_reshape(ctx, value, ()) if shape else value
    rank = len(x_shape)
    axis = onnx_axis(ctx, axis, rank)
    if block_size == 0:
        if len(shape) != 1 or shape[0] != x_shape[axis]:
            ctx.fail(
                f"{what} of shape {shape} must be a scalar or a vector of the {x_shape[axis]} "
                f"elements of axis {axis} of x {x_shape}"
            )
        return emit_reshape(ctx, value, [x_shape[axis] if d == axis else 1 for d in range(rank)])
    if block_size < 0:
        ctx.fail(f"block_size {block_size} must be positive")
    blocks = -(-x_shape[axis] // block_size)
    expected = tuple(blocks if d == axis else x_shape[d] for d in range(rank))
    if tuple(shape) != expected:
        ctx.fail(
            f"{what} of shape {shape} does not block x {x_shape} by {block_size} along axis "
            f"{axis}; expected shape {expected}"
        )
    indices = ctx.constant(np.arange(x_shape[axis], dtype=np.int64) // block_size)
    return ctx.emit("gather", [value, indices], {"axis": axis})


def _quantization_args(ctx: ConvertContext) -> tuple[int, int]:
    return int(ctx.attr("axis", 1)), int(ctx.attr("block_size", 0))


def _check_float(ctx: ConvertContext, index: int, what: str) -> str:
    dtype = ctx.type(index).dtype
    if dtype not in FLOATS:
        ctx.fail(f"{what} has dtype {dtype}; it must be one of {', '.join(FLOATS)}")
    return dtype


# ----------------------------------------------------------------------------- QuantizeLinear


@converter("QuantizeLinear", since=10)
def quantize_linear(ctx: ConvertContext) -> str:
    """saturate(round(x / y_scale) + y_zero_point); to float8, a (saturating) cast of
    x / y_scale."""
    x_type = ctx.type(0)
    # int32 data divides in float64, as numpy promotes int32 / float32
    x_dtype = "float64" if x_type.dtype == "int32" else _check_float(ctx, 0, "x")
    scale_dtype = _check_float(ctx, 1, "y_scale")
    axis, block_size = _quantization_args(ctx)
    out = "uint8"
    if ctx.attr("output_dtype", 0):
        out = onnx_dtype(ctx, int(ctx.attr("output_dtype")), "output_dtype")
    if ctx.has_input(2):
        zero_dtype = ctx.type(2).dtype
        if ctx.attr("output_dtype", 0) and zero_dtype != out:
            ctx.fail(f"output_dtype {out} and the zero point's dtype {zero_dtype} differ")
        out = zero_dtype
    if out not in QUANTIZED:
        ctx.fail(f"quantizing to {out} is not supported; ember quantizes to "
                 f"{', '.join(QUANTIZED)}")
    work = wider_float(x_dtype, scale_dtype)
    if ctx.attr("precision", 0):
        work = onnx_dtype(ctx, int(ctx.attr("precision")), "precision")
        if work not in FLOATS:
            ctx.fail(f"precision {work} must be a float dtype")
    scale = _along_axis(ctx, 1, x_type.shape, axis, block_size, "y_scale")
    q = ctx.emit("div", [cast(ctx, ctx.input(0), work), cast(ctx, scale, work)])
    if out in FLOAT8S:
        # ONNX's float8 quantization ignores the zero point (which must be zero).
        if not ctx.attr("saturate", 1):
            ctx.fail(f"saturate=0 is not supported for {out}; ember saturates")
        return _float8_codes(ctx, cast(ctx, q, "float32"), out)
    q = ctx.emit("round", [q])
    # Whole numbers up to 2**24 are exact in float32: the zero point adds exactly.
    exact = "float64" if work == "float64" else "float32"
    q = cast(ctx, q, exact)
    if ctx.has_input(2):
        zero = _along_axis(ctx, 2, x_type.shape, axis, block_size, "y_zero_point")
        q = ctx.emit("add", [q, cast(ctx, zero, exact)])
    low, high = _INT_RANGES[out]
    return cast(ctx, ctx.emit("clip", [q], {"min": float(low), "max": float(high)}), out)


def _float8_codes(ctx: ConvertContext, value: str, dtype: str) -> str:
    """float32 `value` rounded (to nearest, ties to even) and saturated to float8 `dtype`.

    Compiled kernels have no float8 arithmetic, so the code is computed with integers and
    stored through a bitcast: with E the binade of |v| (clamped below at the smallest normal
    exponent, which subnormals share) and m mantissa bits, the code is
    (E + bias - 1) * 2**m + round(|v| * 2**(m - E)); a rounding that carries into the next
    binade lands on its first code by the same formula.
    """
    import ml_dtypes

    info = ml_dtypes.finfo(numpy_dtype(dtype))
    bits, low, high = int(info.nmant), int(info.minexp), int(info.maxexp) - 1
    bias = 1 - low
    magnitude = ctx.emit("minimum", [ctx.emit("abs", [value]), scalar(ctx, float(info.max),
                                                                     "float32")])
    # the binade index t = E - low: how many powers of two above 2**low |v| reaches
    powers = ctx.constant(np.exp2(np.arange(low + 1, high + 1)).astype(np.float32))
    column = emit_reshape(ctx, magnitude, (*ctx.builder.types[value].shape, 1))
    reached = cast(ctx, ctx.emit("greater_equal", [column, powers]), "int32")
    binade = ctx.emit("reduce_sum", [reached], {"axes": (len(ctx.builder.types[value].shape),),
                                                "keepdims": False})
    exponents = np.arange(low, high + 1)
    steps = ctx.constant(np.exp2(bits - exponents).astype(np.float32))
    bases = ctx.constant(((exponents + bias - 1) << bits).astype(np.int32))
    mantissa = ctx.emit("round", [ctx.emit("mul", [magnitude, ctx.emit(
        "gather", [steps, binade], {"axis": 0})])])
    code = ctx.emit("add", [ctx.emit("gather", [bases, binade], {"axis": 0}),
                            cast(ctx, mantissa, "int32")])
    # the sign bit: v < 0, or -0.0 (whose reciprocal is -inf)
    zero = scalar(ctx, 0.0, "float32")
    negative = ctx.emit("logical_or", [ctx.emit("less", [value, zero]), ctx.emit(
        "less", [ctx.emit("div", [scalar(ctx, 1.0, "float32"), value]), zero])])
    if dtype.endswith("fnuz"):  # no negative zero: the sign goes with nonzero codes only
        negative = ctx.emit("logical_and", [negative, ctx.emit(
            "greater", [code, scalar(ctx, 0, "int32")])])
    signed = ctx.emit("where", [negative, ctx.emit("add", [code, scalar(ctx, 128, "int32")]),
                                code])
    nan = np.array(np.nan, np.float32).astype(numpy_dtype(dtype)).view(np.uint8)
    signed = ctx.emit("where", [ctx.emit("is_nan", [value]), scalar(ctx, int(nan), "int32"),
                                signed])
    return ctx.emit("bitcast", [cast(ctx, signed, "uint8")], {"to": dtype})


# ----------------------------------------------------------------------------- DequantizeLinear


def _float8_values(ctx: ConvertContext, value: str, dtype: str) -> str:
    """float8 `value` as float32. Compiled kernels have no float8 arithmetic, so the bytes
    (a bitcast) index a table of all 256 values."""
    table = np.arange(256, dtype=np.uint8).view(numpy_dtype(dtype)).astype(np.float32)
    codes = cast(ctx, ctx.emit("bitcast", [value], {"to": "uint8"}), "int32")
    return ctx.emit("gather", [ctx.constant(table), codes], {"axis": 0})


@converter("DequantizeLinear", since=10)
def dequantize_linear(ctx: ConvertContext) -> str:
    """(x - x_zero_point) * x_scale, in the scale's dtype (or output_dtype)."""
    x_type = ctx.type(0)
    scale_dtype = _check_float(ctx, 1, "x_scale")
    axis, block_size = _quantization_args(ctx)
    if x_type.dtype not in QUANTIZED + ("int32",):
        ctx.fail(f"x has dtype {x_type.dtype}; ember dequantizes "
                 f"{', '.join(QUANTIZED + ('int32',))}")
    out = scale_dtype
    if ctx.attr("output_dtype", 0):
        out = onnx_dtype(ctx, int(ctx.attr("output_dtype")), "output_dtype")
        if out != scale_dtype:
            ctx.fail(f"output_dtype {out} differs from the scale's dtype {scale_dtype}")
    # float32 holds every value of the 8- and 16-bit types exactly; int32 needs float64.
    work = "float64" if x_type.dtype == "int32" else "float32"
    if x_type.dtype in FLOAT8S:
        dx = _float8_values(ctx, ctx.input(0), x_type.dtype)
    else:
        dx = cast(ctx, cast(ctx, ctx.input(0), "float32"), work)
    if ctx.has_input(2) and x_type.dtype not in FLOAT8S:
        if ctx.type(2).dtype != x_type.dtype:
            ctx.fail(f"the zero point's dtype {ctx.type(2).dtype} differs from x's "
                     f"{x_type.dtype}")
        zero = _along_axis(ctx, 2, x_type.shape, axis, block_size, "x_zero_point")
        dx = ctx.emit("sub", [dx, cast(ctx, zero, work)])
    product = wider_float(work, scale_dtype)
    scale = _along_axis(ctx, 1, x_type.shape, axis, block_size, "x_scale")
    y = ctx.emit("mul", [cast(ctx, dx, product), cast(ctx, scale, product)])
    return cast(ctx, y, out)


# ------------------------------------------------------------------- DynamicQuantizeLinear


@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx: ConvertContext) -> tuple[str, str, str]:
    """uint8 quantization with the scale and zero point that map [min(x, 0), max(x, 0)] onto
    [0, 255]: y, y_scale, y_zero_point."""
    x_type = ctx.type(0)
    if x_type.dtype != "float32":
        ctx.fail(f"x has dtype {x_type.dtype}; DynamicQuantizeLinear takes float32")
    if x_type.size == 0:
        ctx.fail(f"x of shape {x_type.shape} is empty: its range is undefined")
    x = ctx.input(0)
    axes = {"axes": tuple(range(x_type.rank)), "keepdims": False}
    zero, one = scalar(ctx, 0, "float32"), scalar(ctx, 1, "float32")
    high = ctx.emit("maximum", [ctx.emit("reduce_max", [x], axes), zero])
    low = ctx.emit("minimum", [ctx.emit("reduce_min", [x], axes), zero])
    span = ctx.emit("sub", [high, low])
    span = ctx.emit("where", [ctx.emit("equal", [high, low]), one, span])
    scale = ctx.emit("div", [span, scalar(ctx, 255, "float32")])
    zero_point = ctx.emit("sub", [zero, ctx.emit("div", [low, scale])])
    zero_point = ctx.emit("round", [ctx.emit("clip", [zero_point], {"min": 0.0, "max": 255.0})])
    y = ctx.emit("add", [ctx.emit("round", [ctx.emit("div", [x, scale])]), zero_point])
    y = cast(ctx, ctx.emit("clip", [y], {"min": 0.0, "max": 255.0}), "uint8")
    return y, scale, cast(ctx, zero_point, "uint8")


# ----------------------------------------------------------------------------- integer products


def _centered(ctx: ConvertContext, index: int, zero_index: int, per_row: bool) -> str:
    """Input `index` as int32 minus its zero point (input `zero_index`, when given). A vector
    zero point of the first matmul operand holds one entry per row (`per_row`)."""
    dtype = ctx.type(index).dtype
    if dtype not in ("int8", "uint8"):
        ctx.fail(f"input {index} has dtype {dtype}; {ctx.op_type} takes int8 or uint8")
    value = cast(ctx, ctx.input(index), "int32")
    if not ctx.has_input(zero_index):
        return value
    zero_type = ctx.type(zero_index)
    if zero_type.dtype != dtype:
        ctx.fail(f"zero point {zero_index} has dtype {zero_type.dtype}, its input {dtype}")
    zero = cast(ctx, ctx.input(zero_index), "int32")
    if zero_type.size == 1:
        zero = emit_reshape(ctx, zero, ())
    elif per_row and zero_type.rank == 1:
        zero = emit_reshape(ctx, zero, (zero_type.shape[0], 1))
    return ctx.emit("sub", [value, zero])


def _matmul_integer(ctx: ConvertContext, a: int, a_zero: int, b: int, b_zero: int) -> str:
    left = _centered(ctx, a, a_zero, per_row=True)
    right = _centered(ctx, b, b_zero, per_row=False)
    return ctx.emit("matmul", [left, right])


@converter("MatMulInteger", since=10)
def matmul_integer(ctx: ConvertContext) -> str:
    """(A - a_zero_point) @ (B - b_zero_point) in int32."""
    return _matmul_integer(ctx, 0, 2, 1, 3)


def _conv_integer(ctx: ConvertContext, x: int, x_zero: int, w: int, w_zero: int,
                  bias: int | None) -> str:
    """The int32 convolution of the centered x and w (plus the int32 bias), as float64."""
    spatial = spatial_rank(ctx)
    kernel = _weight_kernel(ctx, w, spatial)
    strides = int_list(ctx, "strides", spatial, 1)
    dilations = int_list(ctx, "dilations", spatial, 1)
    pads = resolve_pads(ctx, ctx.type(x).shape[2:], kernel, strides, dilations)
    data = cast(ctx, _centered(ctx, x, x_zero, per_row=False), "float64")
    data, pads = apply_pads(ctx, data, pads)
    weight = _centered(ctx, w, w_zero, per_row=False) if not ctx.has_input(w_zero) or \
        ctx.type(w_zero).size == 1 else _per_channel_weight(ctx, w, w_zero, spatial)
    inputs = [data, cast(ctx, weight, "float64")]
    if bias is not None and ctx.has_input(bias):
        if ctx.type(bias).dtype != "int32":
            ctx.fail(f"the bias has dtype {ctx.type(bias).dtype}; it must be int32")
        inputs.append(cast(ctx, ctx.input(bias), "float64"))
    return ctx.emit("conv", inputs, {
        "strides": strides, "dilations": dilations, "pads": pads,
        "groups": int(ctx.attr("group", 1)),
    })


def _weight_kernel(ctx: ConvertContext, w: int, spatial: int) -> tuple[int, ...]:
    weight = ctx.type(w)
    if weight.rank != spatial + 2:
        ctx.fail(f"the weight {weight.shape} must have rank {spatial + 2} for the input "
                 f"{ctx.type(0).shape}")
    kernel = tuple(weight.shape[2:])
    declared = ctx.attr("kernel_shape", None)
    if declared is not None and tuple(int(k) for k in declared) != kernel:
        ctx.fail(f"kernel_shape {list(declared)} does not match the weight's spatial shape "
                 f"{list(kernel)}")
    return kernel


def _per_channel_weight(ctx: ConvertContext, w: int, w_zero: int, spatial: int) -> str:
    """The weight minus a zero point per output channel."""
    weight, zero = ctx.type(w), ctx.type(w_zero)
    if zero.rank != 1 or zero.shape[0] != weight.shape[0]:
        ctx.fail(f"the weight's zero point of shape {zero.shape} must be a scalar or one per "
                 f"output channel ({weight.shape[0]})")
    if zero.dtype != weight.dtype:
        ctx.fail(f"the weight's zero point has dtype {zero.dtype}, the weight {weight.dtype}")
    column = emit_reshape(ctx, cast(ctx, ctx.input(w_zero), "int32"),
                          (weight.shape[0],) + (1,) * (spatial + 1))
    return ctx.emit("sub", [cast(ctx, ctx.input(w), "int32"), column])


@converter("ConvInteger", since=10)
def conv_integer(ctx: ConvertContext) -> str:
    """conv(x - x_zero_point, w - w_zero_point) in int32."""
    return cast(ctx, _conv_integer(ctx, 0, 2, 1, 3, None), "int32")


def _requantize(ctx: ConvertContext, accumulated: str, scales: list[int], y_scale: int,
                y_zero: int, fallback_dtype: str, channel_axis: int | None = None) -> str:
    """round(accumulated * prod(scales) / y_scale) + y_zero_point, saturated to the output
    type. The multiplier is computed in the scales' dtype, the product in float64 (numpy's
    int32 x float promotion in ONNX's reference)."""
    for index in (*scales, y_scale):
        _check_float(ctx, index, f"input {index} (a scale)")
    values = []
    for index in scales:
        value, t = ctx.input(index), ctx.type(index)
        if t.size == 1:
            value = emit_reshape(ctx, value, ())
        elif channel_axis is not None and t.rank == 1:
            rank = ctx.builder.types[accumulated].rank
            value = emit_reshape(ctx, value,
                                 [t.shape[0] if d == channel_axis else 1 for d in range(rank)])
        values.append(value)
    y_scale_value = ctx.input(y_scale)
    if ctx.type(y_scale).size == 1:
        y_scale_value = emit_reshape(ctx, y_scale_value, ())
    else:
        ctx.fail(f"y_scale of shape {ctx.type(y_scale).shape} must hold one value")
    dtypes = {ctx.type(i).dtype for i in (*scales, y_scale)}
    scale_dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    values = [cast(ctx, v, scale_dtype) for v in values]
    multiplier = ctx.emit("div", [ctx.emit("mul", values), cast(ctx, y_scale_value,
                                                                  scale_dtype)])
    y = ctx.emit("mul", [cast(ctx, accumulated, "float64"), cast(ctx, multiplier, "float64")])
    out = fallback_dtype
    if ctx.has_input(y_zero):
        out = ctx.type(y_zero).dtype
        if ctx.type(y_zero).size != 1:
            ctx.fail(f"y_zero_point of shape {ctx.type(y_zero).shape} must hold one value")
        zero = emit_reshape(ctx, cast(ctx, ctx.input(y_zero), "float64"), ())
        y = ctx.emit("add", [y, zero])
    if out not in ("int8", "uint8"):
        ctx.fail(f"the output dtype {out} must be int8 or uint8")
    low, high = _INT_RANGES[out]
    y = ctx.emit("clip", [ctx.emit("round", [y])],
                 {"min": float(low), "max": float(high)})
    return cast(ctx, y, out)


@converter("QLinearMatMul", since=10)
def qlinear_matmul(ctx: ConvertContext) -> str:
    """Quantized matmul: (a - a_zp) @ (b - b_zp) in int32, requantized by
    a_scale * b_scale / y_scale to y_zero_point's type."""
    product = _matmul_integer(ctx, 0, 2, 3, 5)
    return _requantize(ctx, product, [1, 4], 6, 7, ctx.type(0).dtype)


@converter("QLinearConv", since=10)
def qlinear_conv(ctx: ConvertContext) -> str:
    """Quantized convolution: conv(x - x_zp, w - w_zp) + B in int32, requantized by
    x_scale * w_scale / y_scale (w_scale may be per output channel)."""
    accumulated = _conv_integer(ctx, 0, 2, 3, 5, 8)
    return _requantize(ctx, accumulated, [1, 4], 6, 7, ctx.type(0).dtype, channel_axis=1)

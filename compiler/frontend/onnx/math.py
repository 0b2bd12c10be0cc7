"""Converters for ONNX's elementwise math: unary functions, activations, binary arithmetic,
the variadic Sum/Mean/Max/Min, Clip, Cast and CastLike.

Each ONNX op becomes one ember op where ember has it as a primitive (`ir/ops/elementwise.py`,
`ir/ops/broadcast.py`); the activations that are short compositions (Elu, Selu, Celu,
HardSigmoid, HardSwish, Softsign, Mish, PRelu, Shrink, ThresholdedRelu) become a few
elementwise ember ops, which fusion puts back into one kernel. Comparisons and logic are in
`logic.py`. Binary ops convert from opset 7, where numpy broadcasting replaced the
`broadcast`/`axis` attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.errors import ShapeError
from ember.ir.graph import dtype_name, numpy_dtype
from ember.ir.ops.elementwise import CASTABLE, FLOATS, INTS
from ember.ir.ops.registry import broadcast_shapes


def float_attr(ctx: ConvertContext, name: str, default: float) -> float:
    """A FLOAT attribute, or its default, as the float32 value ONNX stores (0.01 is
    0.009999999776...; float64 models see the difference)."""
    return float(np.float32(ctx.attr(name, default)))


def scalar(ctx: ConvertContext, value: Any, dtype: str) -> str:
    """A rank-0 constant of an ember dtype (attribute values are Python floats)."""
    return ctx.constant(np.asarray(value).astype(numpy_dtype(dtype)))


# ----------------------------------------------------------------------------- unary

_UNARY = {
    # ONNX op: (ember op, first opset ember converts)
    "Abs": ("abs", 1), "Neg": ("neg", 1), "Exp": ("exp", 1), "Log": ("log", 1),
    "Sqrt": ("sqrt", 1), "Reciprocal": ("reciprocal", 1), "Floor": ("floor", 1),
    "Ceil": ("ceil", 1), "Round": ("round", 11), "Sign": ("sign", 9), "Sin": ("sin", 7),
    "Cos": ("cos", 7), "Tan": ("tan", 7), "Asin": ("asin", 7), "Acos": ("acos", 7),
    "Atan": ("atan", 7), "Sinh": ("sinh", 9), "Cosh": ("cosh", 9), "Asinh": ("asinh", 9),
    "Acosh": ("acosh", 9), "Atanh": ("atanh", 9), "Erf": ("erf", 9), "Tanh": ("tanh", 1),
    "Sigmoid": ("sigmoid", 1), "Relu": ("relu", 1), "Softplus": ("softplus", 1),
    "IsNaN": ("is_nan", 9), "BitwiseNot": ("bitwise_not", 18),
}


def _unary(onnx_op: str, ember_op: str, since: int) -> None:
    @converter(onnx_op, since=since)
    def convert(ctx: ConvertContext) -> str:
        return ctx.emit(ember_op, [ctx.input(0)])


for _onnx, (_ember, _since) in _UNARY.items():
    _unary(_onnx, _ember, _since)


@converter("IsInf", since=10)
def is_inf(ctx: ConvertContext) -> str:
    return ctx.emit("is_inf", [ctx.input(0)], {
        "detect_negative": bool(ctx.attr("detect_negative", 1)),
        "detect_positive": bool(ctx.attr("detect_positive", 1)),
    })


# ----------------------------------------------------------------------------- activations


@converter("LeakyRelu", since=6)
def leaky_relu(ctx: ConvertContext) -> str:
    return ctx.emit("leaky_relu", [ctx.input(0)], {"alpha": float_attr(ctx, "alpha", 0.01)})


@converter("Gelu", since=20)
def gelu(ctx: ConvertContext) -> str:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        ctx.fail(f"approximate {approximate!r} is not supported; ember supports 'none', 'tanh'")
    return ctx.emit("gelu", [ctx.input(0)], {"approximate": approximate})


def _float_input(ctx: ConvertContext) -> tuple[str, str]:
    """Input 0 and its dtype, which must be a float (the activations' ONNX constraint)."""
    dtype = ctx.type(0).dtype
    if dtype not in FLOATS:
        ctx.fail(f"input has dtype {dtype}; {ctx.op_type} accepts {', '.join(FLOATS)}")
    return ctx.input(0), dtype


Body = Callable[[str, str], str]


def in_float32(ctx: ConvertContext, x: str, dtype: str, body: Body) -> str:
    """`body(x, dtype)`, with float16/bfloat16 values computed in float32 and rounded once at
    the end, as a single kernel would; a chain of half-precision ops would round after every
    step (ONNX's own conformance data for bfloat16 Celu is exact to one rounding)."""
    if dtype not in ("float16", "bfloat16"):
        return body(x, dtype)
    out = body(ctx.emit("cast", [x], {"to": "float32"}), "float32")
    return ctx.emit("cast", [out], {"to": dtype})


def _activation(onnx_op: str, since: int) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register `body(ctx, x, dtype)` as a float-only activation computed through in_float32."""

    def register(body: Callable[[ConvertContext, str, str], str]) -> Callable[..., str]:
        @converter(onnx_op, since=since)
        def convert(ctx: ConvertContext) -> str:
            x, dtype = _float_input(ctx)
            return in_float32(ctx, x, dtype, lambda v, work: body(ctx, v, work))

        return body

    return register


def _exp_minus_one(ctx: ConvertContext, x: str, dtype: str) -> str:
    return ctx.emit("sub", [ctx.emit("exp", [x]), scalar(ctx, 1, dtype)])


@_activation("Elu", since=6)
def elu(ctx: ConvertContext, x: str, dtype: str) -> str:
    # x > 0 ? x : alpha * (exp(x) - 1)
    alpha = scalar(ctx, float_attr(ctx, "alpha", 1.0), dtype)
    negative = ctx.emit("mul", [_exp_minus_one(ctx, x, dtype), alpha])
    positive = ctx.emit("greater", [x, scalar(ctx, 0, dtype)])
    return ctx.emit("where", [positive, x, negative])


@_activation("Selu", since=6)
def selu(ctx: ConvertContext, x: str, dtype: str) -> str:
    # gamma * (x > 0 ? x : alpha * exp(x) - alpha)
    alpha = scalar(ctx, float_attr(ctx, "alpha", 1.67326319217681884765625), dtype)
    gamma = scalar(ctx, float_attr(ctx, "gamma", 1.05070102214813232421875), dtype)
    negative = ctx.emit("sub", [ctx.emit("mul", [ctx.emit("exp", [x]), alpha]), alpha])
    positive = ctx.emit("greater", [x, scalar(ctx, 0, dtype)])
    return ctx.emit("mul", [ctx.emit("where", [positive, x, negative]), gamma])


@_activation("Celu", since=12)
def celu(ctx: ConvertContext, x: str, dtype: str) -> str:
    # max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    alpha = scalar(ctx, float_attr(ctx, "alpha", 1.0), dtype)
    scaled = ctx.emit("div", [x, alpha])
    negative = ctx.emit("mul", [_exp_minus_one(ctx, scaled, dtype), alpha])
    negative = ctx.emit("minimum", [negative, scalar(ctx, 0, dtype)])
    return ctx.emit("add", [ctx.emit("relu", [x]), negative])


@_activation("ThresholdedRelu", since=10)
def thresholded_relu(ctx: ConvertContext, x: str, dtype: str) -> str:
    above = ctx.emit("greater", [x, scalar(ctx, float_attr(ctx, "alpha", 1.0), dtype)])
    return ctx.emit("where", [above, x, scalar(ctx, 0, dtype)])


def _hard_sigmoid(ctx: ConvertContext, x: str, dtype: str, alpha: float, beta: float) -> str:
    linear = ctx.emit("add", [ctx.emit("mul", [x, scalar(ctx, alpha, dtype)]),
                              scalar(ctx, beta, dtype)])
    return ctx.emit("clip", [linear], {"min": 0.0, "max": 1.0})


@_activation("HardSigmoid", since=6)
def hard_sigmoid(ctx: ConvertContext, x: str, dtype: str) -> str:
    alpha, beta = float_attr(ctx, "alpha", 0.2), float_attr(ctx, "beta", 0.5)
    return _hard_sigmoid(ctx, x, dtype, alpha, beta)


@_activation("HardSwish", since=14)
def hard_swish(ctx: ConvertContext, x: str, dtype: str) -> str:
    return ctx.emit("mul", [x, _hard_sigmoid(ctx, x, dtype, 1 / 6, 0.5)])


@_activation("Softsign", since=1)
def softsign(ctx: ConvertContext, x: str, dtype: str) -> str:
    return ctx.emit("div", [x, ctx.emit("add", [ctx.emit("abs", [x]), scalar(ctx, 1, dtype)])])


@_activation("Mish", since=18)
def mish(ctx: ConvertContext, x: str, dtype: str) -> str:
    return ctx.emit("mul", [x, ctx.emit("tanh", [ctx.emit("softplus", [x])])])


@converter("PRelu", since=7)
def prelu(ctx: ConvertContext) -> str:
    x, slope = ctx.input(0), ctx.input(1)
    x_type, slope_type = ctx.type(0), ctx.type(1)
    # The slope broadcasts to x, never the other way (unidirectional broadcasting).
    try:
        fits = broadcast_shapes("PRelu", x_type.shape, slope_type.shape) == x_type.shape
    except ShapeError:
        fits = False
    if not fits:
        ctx.fail(f"slope of shape {slope_type.shape} does not broadcast to the input's shape "
                 f"{x_type.shape}")
    negative = ctx.emit("less", [x, scalar(ctx, 0, x_type.dtype)])
    return ctx.emit("where", [negative, ctx.emit("mul", [x, slope]), x])


@converter("Shrink", since=9)
def shrink(ctx: ConvertContext) -> str:
    # x < -lambd ? x + bias : x > lambd ? x - bias : 0
    x, dtype = ctx.input(0), ctx.type(0).dtype
    lambd, bias = float_attr(ctx, "lambd", 0.5), float_attr(ctx, "bias", 0.0)
    # ONNX compares and adds integers with the float attributes exactly; doing the same in
    # float64 and truncating back is exact for every integer up to 2**53.
    work = "float64" if dtype in INTS else dtype
    if work != dtype:
        x = ctx.emit("cast", [x], {"to": work})
    below = ctx.emit("less", [x, scalar(ctx, -lambd, work)])
    above = ctx.emit("greater", [x, scalar(ctx, lambd, work)])
    inner = ctx.emit("where", [above, ctx.emit("sub", [x, scalar(ctx, bias, work)]),
                               scalar(ctx, 0, work)])
    out = ctx.emit("where", [below, ctx.emit("add", [x, scalar(ctx, bias, work)]), inner])
    return out if work == dtype else ctx.emit("cast", [out], {"to": dtype})


# ----------------------------------------------------------------------------- binary


def _binary(onnx_op: str, ember_op: str, since: int = 7) -> None:
    @converter(onnx_op, since=since)
    def convert(ctx: ConvertContext) -> str:
        return ctx.emit(ember_op, [ctx.input(0), ctx.input(1)])


for _onnx, _ember, _since in [
    ("Add", "add", 7), ("Sub", "sub", 7), ("Mul", "mul", 7), ("Div", "div", 7),
    ("Pow", "pow", 7), ("BitwiseAnd", "bitwise_and", 18), ("BitwiseOr", "bitwise_or", 18),
    ("BitwiseXor", "bitwise_xor", 18),
]:
    _binary(_onnx, _ember, _since)


@converter("Mod", since=10)
def mod(ctx: ConvertContext) -> str:
    fmod = ctx.attr("fmod", 0)
    if fmod not in (0, 1):
        ctx.fail(f"fmod {fmod} is not supported; ONNX allows 0 and 1")
    return ctx.emit("mod", [ctx.input(0), ctx.input(1)], {"fmod": bool(fmod)})


@converter("BitShift", since=11)
def bit_shift(ctx: ConvertContext) -> str:
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        ctx.fail(f"direction {direction!r} is not supported; ONNX allows 'LEFT' and 'RIGHT'")
    return ctx.emit("bit_shift", [ctx.input(0), ctx.input(1)], {"direction": direction.lower()})


# ----------------------------------------------------------------------------- variadic


def _fold(ctx: ConvertContext, ember_op: str) -> str:
    """input0 op input1 op ... as a left-leaning chain of broadcasting binary ops."""
    if ctx.num_inputs == 0 or not all(ctx.has_input(k) for k in range(ctx.num_inputs)):
        ctx.fail("needs at least one input, and none of its inputs may be omitted (\"\")")
    result = ctx.input(0)
    for index in range(1, ctx.num_inputs):
        result = ctx.emit(ember_op, [result, ctx.input(index)])
    return result


for _onnx, _ember in [("Sum", "add"), ("Max", "maximum"), ("Min", "minimum")]:
    converter(_onnx, since=6)(lambda ctx, _op=_ember: _fold(ctx, _op))


@converter("Mean", since=6)
def mean(ctx: ConvertContext) -> str:
    total = _fold(ctx, "add")
    if ctx.num_inputs == 1:
        return total
    return ctx.emit("div", [total, scalar(ctx, ctx.num_inputs, ctx.type(0).dtype)])


# ----------------------------------------------------------------------------- clip


def _attr_bound(ctx: ConvertContext, name: str) -> float | None:
    return float_attr(ctx, name, 0.0) if ctx.has_attr(name) else None


@converter("Clip", since=6)
def clip_6(ctx: ConvertContext) -> str:
    return ctx.emit("clip", [ctx.input(0)],
                    {"min": _attr_bound(ctx, "min"), "max": _attr_bound(ctx, "max")})


@converter("Clip", since=11)
def clip_11(ctx: ConvertContext) -> str:
    """Constant bounds become the clip op's attributes; a bound computed at run time becomes
    a maximum/minimum against that value (the same min(max(x, lo), hi))."""
    x, x_type = ctx.input(0), ctx.type(0)
    attrs: dict[str, Any] = {"min": None, "max": None}
    runtime: dict[str, str] = {}
    for index, name in [(1, "min"), (2, "max")]:
        if not ctx.has_input(index):
            continue
        bound_type = ctx.type(index)
        if bound_type.size != 1 or bound_type.rank > x_type.rank:
            ctx.fail(f"{name} must be a scalar, got shape {bound_type.shape}")
        value = ctx.const(index)
        if value is None:
            runtime[name] = ctx.input(index)
        else:
            item = value.reshape(()).item()
            attrs[name] = int(item) if x_type.dtype in INTS else float(item)
    if "min" in runtime:
        x = ctx.emit("maximum", [x, runtime["min"]])
    if attrs["min"] is not None or attrs["max"] is not None:
        x = ctx.emit("clip", [x], attrs)
    if "max" in runtime:
        x = ctx.emit("minimum", [x, runtime["max"]])
    return x


# ----------------------------------------------------------------------------- cast


def onnx_dtype(ctx: ConvertContext, elem_type: int) -> str:
    """The ember dtype of an ONNX element type that Cast may produce, or a FrontendError."""
    label = onnx.TensorProto.DataType.Name(elem_type) \
        if elem_type in onnx.TensorProto.DataType.values() else f"element type {elem_type}"
    try:
        name = dtype_name(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        name = ""
    if name not in CASTABLE:
        ctx.fail(f"casting to {label} is not supported; ember casts to "
                 f"{', '.join(CASTABLE)}")
    return name


def _cast(ctx: ConvertContext, to: str) -> str:
    if ctx.type(0).dtype == to:
        return ctx.input(0)
    if ctx.has_attr("round_mode") and ctx.attr("round_mode") not in ("up", "nearest"):
        ctx.fail(f"round_mode {ctx.attr('round_mode')!r} is not an ONNX rounding mode")
    # round_mode only concerns float8e8m0, which ember does not have; saturate only float8.
    return ctx.emit("cast", [ctx.input(0)], {"to": to, "saturate": bool(ctx.attr("saturate", 1))})


@converter("Cast", since=6)
def cast(ctx: ConvertContext) -> str:
    return _cast(ctx, onnx_dtype(ctx, ctx.attr("to")))


@converter("CastLike", since=15)
def cast_like(ctx: ConvertContext) -> str:
    return _cast(ctx, ctx.type(1).dtype)

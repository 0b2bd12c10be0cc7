"""Converters for ONNX's reductions, ArgMax/ArgMin and CumSum.

ReduceSum/Mean/Max/Min/Prod map to ember's reduce primitives; the others are compositions:

    ReduceL1         reduce_sum(abs(x))
    ReduceSumSquare  reduce_sum(x * x)
    ReduceL2         sqrt(reduce_sum(x * x)), the root in float64 for integers (then
                     truncated, as ONNX's reference does)
    ReduceLogSum     log(reduce_sum(x))
    ReduceLogSumExp  m + log(reduce_sum(exp(x - m))), m = the max over the axes (0 where it
                     is infinite), so no exp overflows and an all -inf group stays -inf

The compositions compute float16 and bfloat16 in float32 and round once at the end (the
squares in ReduceL2 would overflow float16 above 256; the root brings them back).

The axes come from the `axes` attribute up to ReduceSum-11 and the others' opset 17, and from
the optional second input after that; the input must be a compile-time constant. No axes means
all axes, or none with noop_with_empty_axes (then the op's elementwise part still applies, as
in ONNX's reference: ReduceSumSquare gives x * x).
"""

from __future__ import annotations

from collections.abc import Callable

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.math import in_float32, scalar
from ember.compiler.frontend.onnx.registry import converter
from ember.ir.ops.elementwise import FLOATS, INTS
from ember.ir.ops.reduce import normalize_axes
from ember.ir.ops.registry import normalize_axis


def _axes_from_attr(ctx: ConvertContext) -> list[int]:
    return list(ctx.attr("axes", []))


def _axes_from_input(ctx: ConvertContext) -> list[int]:
    if not ctx.has_input(1):
        return []
    return [int(a) for a in ctx.require_const(1, "axes").reshape(-1)]


def _resolve_axes(ctx: ConvertContext, axes: list[int]) -> tuple[int, ...]:
    rank = ctx.type(0).rank
    if not axes:
        return () if ctx.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return normalize_axes(ctx.op_type, axes, rank)


# A composition gets (ctx, x, axes, keepdims) and returns the result value.
Lowering = Callable[[ConvertContext, str, tuple[int, ...], bool], str]


def _reduce(ctx: ConvertContext, op: str, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    return ctx.emit(op, [x], {"axes": axes, "keepdims": keepdims})


def _primitive(ember_op: str) -> Lowering:
    return lambda ctx, x, axes, keepdims: _reduce(ctx, ember_op, x, axes, keepdims)


def _l1(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    return _reduce(ctx, "reduce_sum", ctx.emit("abs", [x]), axes, keepdims)


def _sum_square(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    return _reduce(ctx, "reduce_sum", ctx.emit("mul", [x, x]), axes, keepdims)


def _l2(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    dtype = ctx.type(0).dtype
    if dtype in INTS:
        # Square and sum in the integer type (as ONNX does), take the root in float64.
        total = _sum_square(ctx, x, axes, keepdims)
        root = ctx.emit("sqrt", [ctx.emit("cast", [total], {"to": "float64"})])
        return ctx.emit("cast", [root], {"to": dtype})
    return ctx.emit("sqrt", [_sum_square(ctx, x, axes, keepdims)])


def _log_sum(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    return ctx.emit("log", [_reduce(ctx, "reduce_sum", x, axes, keepdims)])


def _log_sum_exp(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
    # Shifting by the group's max keeps every exp in (0, 1]. An infinite max would make
    # x - m NaN (inf - inf), so those groups shift by 0: +inf then gives +inf, and a group
    # of only -inf gives log(0) = -inf. An empty group has max -inf, so it gives -inf too.
    peak = _reduce(ctx, "reduce_max", x, axes, True)
    zero = scalar(ctx, 0, ctx.builder.types[x].dtype)
    shift = ctx.emit("where", [ctx.emit("is_inf", [peak]), zero, peak])
    exps = ctx.emit("exp", [ctx.emit("sub", [x, shift])])
    log_sum = ctx.emit("log", [_reduce(ctx, "reduce_sum", exps, axes, keepdims)])
    if not keepdims:
        # Drop the kept size-1 axes: a max over one element is that element.
        shift = _reduce(ctx, "reduce_max", shift, axes, False)
    return ctx.emit("add", [log_sum, shift])


def _composite(lowering: Lowering, floats_only: bool = False) -> Lowering:
    """A composed reduction; float16/bfloat16 inputs compute in float32 and round once (the
    squares in ReduceL2 would overflow float16 above 256, the root brings them back)."""

    def lower(ctx: ConvertContext, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
        dtype = ctx.type(0).dtype
        if floats_only and dtype not in FLOATS:
            ctx.fail(f"input has dtype {dtype}; {ctx.op_type} is defined through exp/log and "
                     f"accepts {', '.join(FLOATS)} (cast the input first)")
        if dtype not in FLOATS:
            return lowering(ctx, x, axes, keepdims)
        return in_float32(ctx, x, dtype, lambda v, work: lowering(ctx, v, axes, keepdims))

    return lower


_REDUCTIONS: dict[str, tuple[Lowering, int]] = {
    # ONNX op: (lowering, first opset with axes as an input)
    "ReduceSum": (_primitive("reduce_sum"), 13),
    "ReduceMean": (_primitive("reduce_mean"), 18),
    "ReduceMax": (_primitive("reduce_max"), 18),
    "ReduceMin": (_primitive("reduce_min"), 18),
    "ReduceProd": (_primitive("reduce_prod"), 18),
    "ReduceL1": (_composite(_l1), 18),
    "ReduceL2": (_composite(_l2), 18),
    "ReduceSumSquare": (_composite(_sum_square), 18),
    "ReduceLogSum": (_composite(_log_sum, floats_only=True), 18),
    "ReduceLogSumExp": (_composite(_log_sum_exp, floats_only=True), 18),
}


def _register_reduction(onnx_op: str, lowering: Lowering, axes_input_since: int) -> None:
    def convert(ctx: ConvertContext, read_axes: Callable[[ConvertContext], list[int]]) -> str:
        axes = _resolve_axes(ctx, read_axes(ctx))
        return lowering(ctx, ctx.input(0), axes, bool(ctx.attr("keepdims", 1)))

    converter(onnx_op, since=1)(lambda ctx: convert(ctx, _axes_from_attr))
    converter(onnx_op, since=axes_input_since)(lambda ctx: convert(ctx, _axes_from_input))


for _onnx, (_lowering, _since) in _REDUCTIONS.items():
    _register_reduction(_onnx, _lowering, _since)


def _arg_reduce(ember_op: str) -> Callable[[ConvertContext], str]:
    def convert(ctx: ConvertContext) -> str:
        axis = normalize_axis(ctx.op_type, ctx.attr("axis", 0), ctx.type(0).rank)
        return ctx.emit(ember_op, [ctx.input(0)], {
            "axis": axis,
            "keepdims": bool(ctx.attr("keepdims", 1)),
            "select_last_index": bool(ctx.attr("select_last_index", 0)),
        })

    return convert


converter("ArgMax", since=1)(_arg_reduce("argmax"))
converter("ArgMin", since=1)(_arg_reduce("argmin"))


@converter("CumSum", since=11)
def cumsum(ctx: ConvertContext) -> str:
    axis = ctx.require_const(1, "axis")
    if axis.size != 1:
        ctx.fail(f"axis must be a scalar, got shape {axis.shape}")
    return ctx.emit("cumsum", [ctx.input(0)], {
        "axis": normalize_axis("CumSum", int(axis.reshape(())), ctx.type(0).rank),
        "exclusive": bool(ctx.attr("exclusive", 0)),
        "reverse": bool(ctx.attr("reverse", 0)),
    })

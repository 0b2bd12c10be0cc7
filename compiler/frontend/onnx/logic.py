"""Converters for ONNX's comparisons, boolean logic and Where.

Each maps to one broadcasting ember op from `ir/ops/broadcast.py` (or `logical_not`, an
elementwise one). Binary ops convert from opset 7, where numpy broadcasting replaced the
`broadcast`/`axis` attributes.
"""

from __future__ import annotations

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter


def _binary(onnx_op: str, ember_op: str, since: int) -> None:
    @converter(onnx_op, since=since)
    def convert(ctx: ConvertContext) -> str:
        return ctx.emit(ember_op, [ctx.input(0), ctx.input(1)])


for _onnx, _ember, _since in [
    ("Equal", "equal", 7), ("Less", "less", 7), ("Greater", "greater", 7),
    ("LessOrEqual", "less_equal", 12), ("GreaterOrEqual", "greater_equal", 12),
    ("And", "logical_and", 7), ("Or", "logical_or", 7), ("Xor", "logical_xor", 7),
]:
    _binary(_onnx, _ember, _since)


@converter("Not", since=1)
def logical_not(ctx: ConvertContext) -> str:
    return ctx.emit("logical_not", [ctx.input(0)])


@converter("Where", since=9)
def where(ctx: ConvertContext) -> str:
    return ctx.emit("where", [ctx.input(0), ctx.input(1), ctx.input(2)])

"""Converters for ONNX's elementwise math, comparison and logic operators."""

from __future__ import annotations

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter


def _unary(onnx_op: str, ember_op: str, since: int = 1) -> None:
    @converter(onnx_op, since=since)
    def convert(ctx: ConvertContext) -> str:
        return ctx.emit(ember_op, [ctx.input(0)])


def _binary(onnx_op: str, ember_op: str, since: int = 7) -> None:
    # Opsets before 7 had `broadcast`/`axis` attributes; ember converts from 7 on.
    @converter(onnx_op, since=since)
    def convert(ctx: ConvertContext) -> str:
        return ctx.emit(ember_op, [ctx.input(0), ctx.input(1)])


for _onnx, _ember in [("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Exp", "exp")]:
    _unary(_onnx, _ember)
for _onnx, _ember in [("Add", "add"), ("Sub", "sub"), ("Mul", "mul")]:
    _binary(_onnx, _ember)

"""Converters for ONNX's tensor and shape operators."""

from __future__ import annotations

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter


@converter("Identity")
def identity(ctx: ConvertContext) -> str:
    return ctx.input(0)

"""Converters for ONNX's nn operators."""

from __future__ import annotations

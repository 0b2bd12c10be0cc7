"""Converters for ONNX's reduce operators."""

from __future__ import annotations

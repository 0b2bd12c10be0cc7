"""The converter table: one converter per ONNX op, versioned by opset.

    @converter("Squeeze", since=13)
    def squeeze_13(ctx: ConvertContext) -> str: ...

A model at opset N uses the converter with the highest `since` at or below N, as TVM's frontend
does. A converter returns the ember value (or values) for the node's outputs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ember.compiler.frontend.onnx.context import ConvertContext

Converter = Callable[["ConvertContext"], "str | Sequence[str]"]

#: The default ONNX domain; "ai.onnx" is a synonym.
ONNX_DOMAIN = ""

_CONVERTERS: dict[tuple[str, str], list[tuple[int, Converter]]] = {}


def canonical_domain(domain: str) -> str:
    return ONNX_DOMAIN if domain in ("", "ai.onnx") else domain


def converter(op_type: str, since: int = 1, domain: str = ONNX_DOMAIN):
    """Register the decorated function as the converter of `op_type` from opset `since` on."""

    def register(fn: Converter) -> Converter:
        versions = _CONVERTERS.setdefault((canonical_domain(domain), op_type), [])
        if any(v == since for v, _ in versions):
            raise ValueError(f"two converters for {op_type} since opset {since}")
        bisect.insort(versions, (since, fn), key=lambda entry: entry[0])
        return fn

    return register


def find_converter(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for `op_type` at `opset`, or None."""
    versions = _CONVERTERS.get((canonical_domain(domain), op_type), [])
    chosen = None
    for since, fn in versions:
        if since <= opset:
            chosen = fn
    return chosen


def first_supported_opset(domain: str, op_type: str) -> int | None:
    versions = _CONVERTERS.get((canonical_domain(domain), op_type), [])
    return versions[0][0] if versions else None


def supported_ops() -> dict[tuple[str, str], list[int]]:
    """(domain, op_type) -> the opsets where a converter version starts."""
    return {key: [v for v, _ in versions] for key, versions in sorted(_CONVERTERS.items())}

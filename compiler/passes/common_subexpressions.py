"""Common-subexpression elimination: nodes computing the same op on the same values with the
same attributes become one, and constants with equal content become one constant."""

from __future__ import annotations

import hashlib

import numpy as np

from ember.compiler.passes.rewrite import Rewriter
from ember.ir.graph import Graph
from ember.ir.ops import get_op


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """`graph` with duplicate constants and duplicate nodes merged into their first copy.
    Ops that are not foldable (random numbers) are never merged: two draws differ."""
    rewriter = Rewriter(graph)
    by_content: dict[tuple, str] = {}
    for name, array in graph.constants.items():
        if name in graph.outputs:
            continue  # an output keeps its own value (else it would come back as an identity)
        first = by_content.setdefault(_content_key(array), name)
        if first != name:
            rewriter.alias(name, rewriter.value(first))
    seen: dict[tuple, tuple[str, ...]] = {}
    changed = any(rewriter.value(name) != name for name in graph.constants)
    for node in graph.nodes:
        inputs = tuple(rewriter.value(v) for v in node.inputs)
        key = (node.op, inputs, node.attrs)
        if get_op(node.op).foldable and key in seen:
            for old, new in zip(node.outputs, seen[key]):
                rewriter.alias(old, new)
            changed = True
            continue
        seen[key] = rewriter.keep(node)
    return rewriter.finish() if changed else graph


def _content_key(array: np.ndarray) -> tuple:
    if array.dtype == object:
        return (array.dtype.str, array.shape, repr(array.tolist()))
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    return (array.dtype.str, array.shape, digest)

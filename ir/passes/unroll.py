"""Unrolling: an UNROLLED loop of constant extent becomes that many copies of its body.

Runs after vectorization in the standard pipeline (ir/passes/__init__.py), followed by a
simplify that folds each copy's constants. Copy k has the loop variable replaced by
`min + k`. Loops whose extent is not a constant or exceeds `max_extent` stay loops, of kind
SERIAL with the annotation ("unroll", True) so a backend can still ask its own unroller.
Nested unrolled loops multiply: the inner ones are unrolled first. Variables bound inside the
body (inner loops, lets) keep their names in every copy: the copies are siblings, never nested,
so no name is bound twice on one path. AttrStmt pragmas (`pragma_auto_unroll_max_step`) are
left for the backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.passes.simplify import NOP
from ember.ir.visitor import substitute, transform

#: Extents above this stay loops: code size grows with every copy.
MAX_UNROLL_EXTENT = 64


def unroll(func: L.PrimFunc, max_extent: int = MAX_UNROLL_EXTENT) -> L.PrimFunc:
    """Replace every UNROLLED loop of `func` with constant extent <= `max_extent` by copies of
    its body; the others become SERIAL loops annotated ("unroll", True)."""

    def rewrite(node: Any) -> Any | None:
        if not (isinstance(node, L.For) and node.kind is L.ForKind.UNROLLED):
            return None
        extent = node.extent
        if not isinstance(extent, E.IntImm) or extent.value > max_extent:
            return dataclasses.replace(node, kind=L.ForKind.SERIAL,
                                       annotations=(*node.annotations, ("unroll", True)))
        if extent.value <= 0:
            return NOP
        copies = [substitute(node.body, {node.var: E.add(node.min, E.const(k))})
                  for k in range(extent.value)]
        return L.seq(*copies)

    return func.with_body(transform(func.body, rewrite))

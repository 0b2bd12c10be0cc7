"""Storage flattening: every buffer becomes one-dimensional and every Load/Store gets a single
row-major flat index.

Runs after the first simplify in the standard pipeline (ir/passes/__init__.py). The buffer
`A: (4, 8, 16)` becomes `A: (512,)`, and `A[i, j, k]` becomes `A[i * 128 + j * 16 + k]`
(the simplifier then merges what fused loops left, such as `(f // 16) * 16 + f % 16`).
Scopes and dtypes are kept; buffers that are already one-dimensional are left as they are,
so the pass is idempotent. A vector index (a Ramp from an earlier vectorization) is allowed:
the other indices and the strides are broadcast to its lanes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ember.errors import IRError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.visitor import transform


def _flat_buffer(buffer: L.Buffer) -> L.Buffer:
    if len(buffer.shape) == 1:
        return buffer
    size = E.const(1)
    for dim in buffer.shape:
        size = E.mul(size, E.const(dim))
    return dataclasses.replace(buffer, shape=(size.value if isinstance(size, E.IntImm) else size,))


def _strides(buffer: L.Buffer) -> list[E.Expr]:
    """Row-major strides of `buffer`'s dimensions, innermost 1."""
    strides: list[E.Expr] = []
    stride: E.Expr = E.const(1)
    for dim in reversed(buffer.shape):
        strides.append(stride)
        stride = E.mul(stride, E.const(dim))
    return strides[::-1]


def _broadcast(e: E.Expr, lanes: int) -> E.Expr:
    return e if lanes == 1 or E.lanes_of(e.dtype) == lanes else E.Broadcast(e, lanes)


def flat_index(buffer: L.Buffer, indices: tuple[E.Expr, ...]) -> E.Expr:
    """The row-major flat index of `buffer[indices]`: sum of index * stride, built with the
    folding builders (so `i * 1` is `i` and a 0 term disappears)."""
    if len(indices) != len(buffer.shape):
        raise IRError(f"{buffer.name} has {len(buffer.shape)} dimensions but is indexed with "
                      f"{len(indices)} indices: [{', '.join(str(i) for i in indices)}]")
    lanes = max((E.lanes_of(i.dtype) for i in indices), default=1)
    if lanes == 1:
        total = E.const(0)
        for index, stride in zip(indices, _strides(buffer)):
            total = E.add(total, E.mul(index, stride))
        return total
    # Vector sums are left raw (Broadcast * Ramp + ...) for the simplifier to fold into a Ramp.
    terms = [E.Mul(_broadcast(index, lanes), _broadcast(stride, lanes))
             for index, stride in zip(indices, _strides(buffer))]
    total = terms[0]
    for term in terms[1:]:
        total = E.Add(total, term)
    return total


def flatten_storage(func: L.PrimFunc) -> L.PrimFunc:
    """Make every buffer of `func` (params and Allocates) one-dimensional, with row-major flat
    indices in every Load and Store."""

    def rewrite(node: Any) -> Any | None:
        # A Load or Store carries its buffer with the full shape (buffers are never rewritten
        # on their own here, so the bottom-up rebuild still sees the original).
        if isinstance(node, (L.Load, L.Store)):
            if len(node.buffer.shape) == 1 and len(node.indices) == 1:
                return None
            return dataclasses.replace(node, buffer=_flat_buffer(node.buffer),
                                       indices=(flat_index(node.buffer, node.indices),))
        if isinstance(node, L.Allocate):
            return dataclasses.replace(node, buffer=_flat_buffer(node.buffer))
        return None

    body = transform(func.body, rewrite)
    params = tuple(_flat_buffer(p) for p in func.params)
    return func.replace(params=params, body=body)

"""Vectorization: a VECTORIZED loop of constant extent n becomes straight-line n-lane vector
code; a loop that cannot be vectorized becomes a SERIAL loop, unchanged otherwise.

Runs after flattening and the second simplify (ir/passes/__init__.py), so indices are flat and
canonical. For `for v in [m, m + n) vectorized`:

- `v` becomes `ramp(m, 1, n)`; values that do not depend on `v` stay scalar until they meet a
  vector, where they become `broadcast(x, n)`; affine index arithmetic keeps ramps
  (`ramp(b, s, n) * c + d` is `ramp(b * c + d, s * c, n)`).
- Loads whose index depends on `v` load a vector: contiguous or strided when the index is a
  ramp, a gather otherwise (`A[v // 2]`, `A[B[v]]`). Stores must be ramps with a non-zero
  stride (distinct lanes); a store that would scatter falls back.
- Arithmetic, Select, Cast and intrinsic calls act lane-wise; comparisons give `boolxn`. All
  operands of a vector node have the same lanes (Select's condition included).
- An `if` whose condition depends on `v` (an index guard such as a non-divisible split's tail)
  becomes a predicate on the stores under it, and on the loads those stores need, so masked-off
  lanes touch no memory. An `if` on a loop-invariant condition stays an `if`.

The loop falls back to SERIAL (reason in `why_not_vectorizable` and the debug log) when its
extent is not constant, or its body has an inner loop, a Let/LetStmt/Allocate/AttrStmt/
Evaluate, a data-dependent branch (a condition that loads memory), a store whose index does not
depend on `v` (a reduction into one element, `C[i] = C[i] + A[i, j]` over `j`), a store that
would scatter, an integer division by a non-constant under a guard (masked lanes could divide
by zero), or a dependence between iterations: a buffer that is written and also read or
written at a different index in the body (`A[v + 1] = A[v] + 1`). Vectors are not vectorized
again: an outer VECTORIZED loop around vector code falls back.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.passes.simplify import NOP
from ember.ir.visitor import collect, substitute, transform, uses_var

log = logging.getLogger(__name__)


class _CannotVectorize(Exception):
    """Raised with the reason a loop body stays scalar."""


def _broadcast(e: E.Expr, lanes: int) -> E.Expr:
    return e if E.lanes_of(e.dtype) == lanes else E.Broadcast(e, lanes)


def _and(a: E.Expr | None, b: E.Expr | None) -> E.Expr | None:
    if a is None or b is None:
        return b if a is None else a
    return E.And(a, b)


class _Vectorizer:
    """Rewrites one loop body into vector code for `var` -> ramp(start, 1, lanes)."""

    def __init__(self, var: E.Var, start: E.Expr, lanes: int):
        self.var, self.lanes = var, lanes
        self.ramp = E.Ramp(start, E.const(1), lanes)

    def is_vector(self, e: E.Expr) -> bool:
        return E.lanes_of(e.dtype) > 1

    def widen(self, e: E.Expr) -> E.Expr:
        return _broadcast(e, self.lanes)

    # -- statements; `mask` is the predicate of the enclosing guards (None: all lanes)

    def stmt(self, s: L.Stmt, mask: E.Expr | None) -> L.Stmt:
        if isinstance(s, L.SeqStmt):
            return L.seq(*(self.stmt(child, mask) for child in s.stmts))
        if isinstance(s, L.Store):
            return self.store(s, mask)
        if isinstance(s, L.IfThenElse):
            condition = self.expr(s.condition, mask)
            if not self.is_vector(condition):
                return L.IfThenElse(condition, self.stmt(s.then_case, mask),
                                    None if s.else_case is None
                                    else self.stmt(s.else_case, mask))
            if collect(s.condition, L.Load):
                raise _CannotVectorize(f"data-dependent branch: if {s.condition}")
            then_case = self.stmt(s.then_case, _and(mask, condition))
            if s.else_case is None:
                return then_case
            return L.seq(then_case, self.stmt(s.else_case, _and(mask, E.Not(condition))))
        if isinstance(s, L.For):
            raise _CannotVectorize(f"the body has an inner loop over {s.var.name}")
        raise _CannotVectorize(f"the body has a {type(s).__name__}")

    def store(self, s: L.Store, mask: E.Expr | None) -> L.Stmt:
        if not any(uses_var(i, self.var) for i in s.indices):
            raise _CannotVectorize(
                f"the store to {s.buffer.name}[{', '.join(str(i) for i in s.indices)}] does not "
                f"depend on {self.var.name} (a reduction into one element)")
        indices = tuple(self.widen(self.expr(i, mask)) for i in s.indices)
        if not any(isinstance(i, E.Ramp) and not (isinstance(i.stride, E.IntImm)
                                                  and i.stride.value == 0) for i in indices):
            raise _CannotVectorize(f"the store to {s.buffer.name} would scatter "
                                   f"(index {', '.join(str(i) for i in s.indices)})")
        if mask is not None:
            for e in collect(s, (E.Div, E.FloorDiv, E.FloorMod)):
                if E.is_int_dtype(e.dtype) and not isinstance(e.b, E.IntImm):
                    raise _CannotVectorize(f"integer division by a variable under a guard: {e}")
        value = self.widen(self.expr(s.value, mask))
        own = None if s.predicate is None else self.widen(self.expr(s.predicate, mask))
        return L.Store(s.buffer, indices, value, _and(mask, own))

    # -- expressions: the result is scalar when it does not depend on the loop variable

    def expr(self, e: E.Expr, mask: E.Expr | None) -> E.Expr:
        if isinstance(e, E.Var):
            return self.ramp if e == self.var else e
        if isinstance(e, (E.IntImm, E.FloatImm)):
            return e
        if isinstance(e, L.Load):
            return self.load(e, mask)
        if isinstance(e, E.BinaryOp):
            return self.binary(e, self.expr(e.a, mask), self.expr(e.b, mask))
        if isinstance(e, E.Not):
            return E.Not(self.expr(e.a, mask))
        if isinstance(e, E.Select):
            parts = [self.expr(x, mask) for x in (e.condition, e.true_value, e.false_value)]
            if not any(self.is_vector(p) for p in parts):
                return E.Select(*parts)
            return E.Select(*(self.widen(p) for p in parts))
        if isinstance(e, E.Cast):
            value = self.expr(e.value, mask)
            return E.Cast(E.with_lanes(e.dtype, E.lanes_of(value.dtype)), value)
        if isinstance(e, E.Call):
            args = [self.expr(a, mask) for a in e.args]
            if not any(self.is_vector(a) for a in args):
                return E.Call(e.name, tuple(args), e.dtype)
            return E.Call(e.name, tuple(self.widen(a) for a in args),
                          E.with_lanes(e.dtype, self.lanes))
        raise _CannotVectorize(f"cannot vectorize {type(e).__name__}: {e}")

    def load(self, e: L.Load, mask: E.Expr | None) -> E.Expr:
        indices = [self.expr(i, mask) for i in e.indices]
        predicate = None if e.predicate is None else self.expr(e.predicate, mask)
        vector = any(self.is_vector(i) for i in indices)
        if not vector and mask is None and (predicate is None or not self.is_vector(predicate)):
            return L.Load(e.buffer, tuple(indices), predicate)
        # Under a guard even a loop-invariant load becomes a masked (broadcast-index) load:
        # when every lane is masked off, its address may be out of bounds.
        predicate = None if predicate is None else self.widen(predicate)
        return L.Load(e.buffer, tuple(self.widen(i) for i in indices), _and(mask, predicate))

    def binary(self, e: E.BinaryOp, a: E.Expr, b: E.Expr) -> E.Expr:
        op = type(e)
        if not (self.is_vector(a) or self.is_vector(b)):
            return op(a, b)
        if E.is_int_dtype(a.dtype):  # keep affine index arithmetic as ramps
            ramp = self._affine(op, a, b)
            if ramp is not None:
                return ramp
        return op(self.widen(a), self.widen(b))

    def _affine(self, op: type, a: E.Expr, b: E.Expr) -> E.Expr | None:
        def parts(x: E.Expr) -> tuple[E.Expr, E.Expr] | None:
            if isinstance(x, E.Ramp):
                return x.base, x.stride
            if not self.is_vector(x):
                return x, E.const(0, x.dtype)
            return None

        pa, pb = parts(a), parts(b)
        if pa is None or pb is None:
            return None
        if op is E.Add:
            return E.Ramp(E.add(pa[0], pb[0]), E.add(pa[1], pb[1]), self.lanes)
        if op is E.Sub:
            return E.Ramp(E.sub(pa[0], pb[0]), E.sub(pa[1], pb[1]), self.lanes)
        if op is E.Mul and not self.is_vector(b):
            return E.Ramp(E.mul(pa[0], b), E.mul(pa[1], b), self.lanes)
        if op is E.Mul and not self.is_vector(a):
            return E.Ramp(E.mul(a, pb[0]), E.mul(a, pb[1]), self.lanes)
        return None


def _check_dependences(loop: L.For) -> None:
    """Every buffer the body writes must be read and written at one index only, so running all
    lanes of each statement before the next gives what running the iterations in turn does."""
    stores = collect(loop.body, L.Store)
    for buffer in {s.buffer.name for s in stores}:
        accesses = [a for a in collect(loop.body, (L.Load, L.Store)) if a.buffer.name == buffer]
        first = next(a for a in accesses if isinstance(a, L.Store))
        for access in accesses:
            if access.indices != first.indices:
                raise _CannotVectorize(
                    f"{buffer} is written at [{', '.join(str(i) for i in first.indices)}] and "
                    f"accessed at [{', '.join(str(i) for i in access.indices)}] in the same "
                    f"loop (a dependence between iterations)")


def _vectorize_loop(loop: L.For) -> L.Stmt:
    if not isinstance(loop.extent, E.IntImm):
        raise _CannotVectorize(f"the extent {loop.extent} is not a constant")
    lanes = loop.extent.value
    if lanes <= 1:
        return substitute(loop.body, {loop.var: loop.min}) if lanes == 1 else NOP
    if any(E.lanes_of(e.dtype) > 1 for e in collect(loop.body, E.Expr)):
        raise _CannotVectorize("the body is already vector code")
    _check_dependences(loop)
    return _Vectorizer(loop.var, loop.min, lanes).stmt(loop.body, None)


def why_not_vectorizable(loop: L.For) -> str | None:
    """The reason `vectorize` would turn `loop` into a serial loop, or None if it would not."""
    try:
        _vectorize_loop(loop)
    except _CannotVectorize as reason:
        return str(reason)
    return None


def vectorize(func: L.PrimFunc) -> L.PrimFunc:
    """Turn every VECTORIZED loop of constant extent in `func` into vector code; the rest
    become SERIAL loops. Inner loops are handled first."""

    def rewrite(node: Any) -> Any | None:
        if not (isinstance(node, L.For) and node.kind is L.ForKind.VECTORIZED):
            return None
        try:
            return _vectorize_loop(node)
        except _CannotVectorize as reason:
            log.debug("%s: loop over %s stays scalar: %s", func.name, node.var.name, reason)
            return dataclasses.replace(node, kind=L.ForKind.SERIAL)

    return func.with_body(transform(func.body, rewrite))

"""The arithmetic simplifier: constant folding, canonical index arithmetic with known loop
bounds, and removal of dead code (provably true/false guards, loops of extent 0 or 1,
branches that cannot run, lets of constants).

It runs three times in the standard pipeline (ir/passes/__init__.py): on the lowered form, after
storage flattening (where `(f // 16) * 16 + f % 16` from fused loops must become `f` again, and
so must `(f // 512) * 512 + (f // 64) % 8 * 64 + f % 64` from three fused axes: see
`arith._merge_div_mod`) and after vectorization and unrolling (where copies of a loop body fold
their constants).

How it works. Statements are walked top-down so that every loop variable's range
`[min, min + extent - 1]` is known while its body is simplified (`IntervalAnalysis`); each
expression is then rebuilt bottom-up by `visitor.transform` through `_Rules.rewrite`, until
nothing changes. Signed integer sums are put in a canonical linear form (`linear_form`): terms
in order of first appearance with merged coefficients, the constant last, so `(a + 1) + 2` is
`a + 3`, `a * 2 * 4` is `a * 8`, and `i * 4 + j - i * 4` is `j`.

Rules about rounding. Integer arithmetic is two's complement (it wraps, as LLVM's `add`
without `nsw` does), and index (int64) arithmetic is assumed not to overflow: that assumption
is what makes `(i * 16 + j) // 16 -> i` valid. Narrower integers only get bound-based rules
when their bounds are proven to fit the dtype. Floating point is never reassociated; float
constants fold only through operations IEEE 754 rounds exactly once (+ - * / sqrt, casts),
computed by numpy in the expression's own dtype, which is what the compiled code computes.
The float identities kept are exactly the ones that hold for every input, signed zeros and
NaN included:
    x * 1.0 -> x, x / 1.0 -> x      (exact for every x, -0.0 and NaN included)
    x - 0.0 -> x, x + (-0.0) -> x   (-0.0 + -0.0 is -0.0, +0.0 + -0.0 is +0.0)
and these are NOT applied: x + 0.0 -> x (-0.0 + 0.0 is +0.0), x * 0.0 -> 0 (NaN, inf, -0.0),
x - x -> 0 and x == x -> true (NaN), min/max folding with NaN or zeros of both signs.
Transcendental intrinsics (exp, tanh, ...) are not folded: libm and LLVM may round them
differently. Comparisons fold as numpy does (NaN != x is true).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.passes.arith import (
    UNKNOWN,
    Interval,
    IntervalAnalysis,
    build_linear,
    fold_binary,
    fold_call,
    fold_cast,
    int_range,
    is_signed,
    linear_form,
    wrap,
)
from ember.ir.visitor import substitute, transform, uses_var

#: The statement that does nothing (what a removed loop or branch becomes when it has no
#: sibling to disappear into). Backends treat `Evaluate` of a constant as a no-op.
NOP = L.Evaluate(E.IntImm(0, "int32"))


def is_nop(stmt: L.Stmt) -> bool:
    return isinstance(stmt, L.Evaluate) and isinstance(stmt.value, (E.IntImm, E.FloatImm))


# ----------------------------------------------------------------------------- rules


def _is_const(e: E.Expr) -> bool:
    return isinstance(e, (E.IntImm, E.FloatImm))


def _bool_const(e: E.Expr) -> bool | None:
    """The value of a constant condition (scalar, or a broadcast constant), else None."""
    if isinstance(e, E.Broadcast):
        e = e.value
    if isinstance(e, E.IntImm) and E.element_of(e.dtype) == "bool":
        return bool(e.value)
    return None


def _bool(value: bool, like: E.Expr) -> E.Expr:
    scalar = E.IntImm(int(value), "bool")
    lanes = E.lanes_of(like.dtype)
    return scalar if lanes == 1 else E.Broadcast(scalar, lanes)


def _float_is(e: E.Expr, value: float, negative_zero: bool | None = None) -> bool:
    if not isinstance(e, E.FloatImm) or e.value != value:
        return False
    return negative_zero is None or (math.copysign(1.0, e.value) < 0) == negative_zero


_INVERSE = {E.EQ: E.NE, E.NE: E.EQ, E.LT: E.GE, E.GE: E.LT, E.LE: E.GT, E.GT: E.LE}


def _affine_lanes(e: E.Expr) -> tuple[E.Expr, E.Expr] | None:
    """(base, stride) of an integer Ramp or Broadcast."""
    if isinstance(e, E.Ramp):
        return e.base, e.stride
    if isinstance(e, E.Broadcast) and E.is_int_dtype(e.value.dtype):
        return e.value, E.IntImm(0, e.value.dtype)
    return None


class _Rules:
    """One rewrite step per node kind; `rewrite` returns a replacement or None."""

    def __init__(self, analysis: IntervalAnalysis):
        self.analysis = analysis

    def simplify(self, e: E.Expr) -> E.Expr:
        for _ in range(8):  # every rule shrinks or canonicalizes; this bounds surprises
            new = transform(e, self.rewrite)
            if new == e:
                return new
            e = new
        return e

    def rewrite(self, e: Any) -> Any | None:
        method = getattr(self, f"_{type(e).__name__}", None)
        if method is not None:
            return method(e)
        if isinstance(e, E.CompareOp):
            return self._compare(e)
        return None

    # -- helpers

    def _no_overflow(self, *forms: tuple[Mapping[E.Expr, int], int], dtype: str) -> bool:
        if E.element_of(dtype) == E.INDEX:
            return True
        rng = int_range(dtype)
        return rng is not None and all(self.analysis.bound_linear(t, c).within(*rng)
                                       for t, c in forms)

    def _vector_binary(self, e: E.BinaryOp) -> E.Expr | None:
        a, b, lanes = e.a, e.b, E.lanes_of(e.a.dtype)
        if isinstance(a, E.Broadcast) and isinstance(b, E.Broadcast):
            return E.Broadcast(self.simplify(type(e)(a.value, b.value)), lanes)
        if isinstance(e, (E.Add, E.Sub)) and E.is_int_dtype(e.dtype):
            pa, pb = _affine_lanes(a), _affine_lanes(b)
            if pa and pb:
                op = type(e)
                return self._ramp(op(pa[0], pb[0]), op(pa[1], pb[1]), lanes)
        if isinstance(e, E.Mul) and E.is_int_dtype(e.dtype):
            if isinstance(b, E.Ramp) and isinstance(a, E.Broadcast):
                a, b = b, a
            if isinstance(a, E.Ramp) and isinstance(b, E.Broadcast):
                return self._ramp(E.Mul(a.base, b.value), E.Mul(a.stride, b.value), lanes)
        if isinstance(e, (E.FloorDiv, E.FloorMod)):
            return self._ramp_div_mod(e)
        return None

    def _ramp(self, base: E.Expr, stride: E.Expr, lanes: int) -> E.Expr:
        base, stride = self.simplify(base), self.simplify(stride)
        if isinstance(stride, E.IntImm) and stride.value == 0:
            return E.Broadcast(base, lanes)
        return E.Ramp(base, stride, lanes)

    def _ramp_div_mod(self, e: E.BinaryOp) -> E.Expr | None:
        """ramp(16*q + r, s, n) // 16 when the lanes stay within one block of 16 (or step
        whole blocks): what vectorizing an inner split loop over a fused index gives."""
        a, b = e.a, e.b
        if not (isinstance(a, E.Ramp) and isinstance(b, E.Broadcast)
                and isinstance(b.value, E.IntImm) and b.value.value > 0
                and isinstance(a.stride, E.IntImm) and is_signed(a.base.dtype)):
            return None
        d, s, n, dtype = b.value.value, a.stride.value, a.lanes, a.base.dtype
        terms, constant = linear_form(a.base)
        q_terms = {t: c // d for t, c in terms.items() if c % d == 0}
        r_terms = {t: c for t, c in terms.items() if c % d != 0}
        qc, rc = divmod(constant, d)
        r = self.analysis.bound_linear(r_terms, rc)
        if not (r.known and self._no_overflow((terms, constant), dtype=dtype)):
            return None
        if s % d == 0 and r.lo // d == r.hi // d:  # type: ignore[operator]
            k = r.lo // d  # type: ignore[operator]
            if isinstance(e, E.FloorDiv):
                return self._ramp(build_linear(q_terms, qc + k, dtype), E.IntImm(s // d, dtype), n)
            return E.Broadcast(build_linear(r_terms, rc - k * d, dtype), n)
        last = r + Interval(min(0, s * (n - 1)), max(0, s * (n - 1)))
        if last.lo // d == last.hi // d:  # type: ignore[operator]
            k = last.lo // d  # type: ignore[operator]
            if isinstance(e, E.FloorDiv):
                return E.Broadcast(build_linear(q_terms, qc + k, dtype), n)
            return self._ramp(build_linear(r_terms, rc - k * d, dtype), a.stride, n)
        return None

    def _sign_of_difference(self, a: E.Expr, b: E.Expr) -> Interval:
        """Bounds of a - b (over all lanes) for integers, UNKNOWN otherwise."""
        if E.lanes_of(a.dtype) > 1:
            pa, pb = _affine_lanes(a), _affine_lanes(b)
            if not (pa and pb and is_signed(pa[0].dtype)):
                return UNKNOWN
            stride = self.simplify(E.Sub(pa[1], pb[1]))
            if not isinstance(stride, E.IntImm):
                return UNKNOWN
            last = stride.value * (E.lanes_of(a.dtype) - 1)
            return self._sign_of_difference(pa[0], pb[0]) + Interval(min(0, last), max(0, last))
        if not is_signed(a.dtype):
            if a == b and not E.is_float_dtype(a.dtype):
                return Interval(0, 0)
            return UNKNOWN
        ta, ca = linear_form(a)
        tb, cb = linear_form(b)
        if not self._no_overflow((ta, ca), (tb, cb), dtype=a.dtype):
            return UNKNOWN
        diff = dict(ta)
        for t, c in tb.items():
            diff[t] = diff.get(t, 0) - c
        return self.analysis.bound_linear({t: c for t, c in diff.items() if c}, ca - cb)

    # -- integer arithmetic

    def _linear(self, e: E.BinaryOp) -> E.Expr | None:
        if E.lanes_of(e.dtype) > 1:
            return self._vector_binary(e)
        if _is_const(e.a) and _is_const(e.b):
            return fold_binary(e)
        if is_signed(e.dtype):
            return build_linear(*linear_form(e), e.dtype)
        return self._identity(e)

    _Add = _Sub = _Mul = _linear

    def _identity(self, e: E.BinaryOp) -> E.Expr | None:
        a, b = e.a, e.b
        if not E.is_float_dtype(e.dtype):  # unsigned integers and bools: only the trivial rules
            zero_b = isinstance(b, E.IntImm) and b.value == 0
            if isinstance(e, (E.Add, E.Sub)) and zero_b:
                return a
            if isinstance(e, E.Add) and isinstance(a, E.IntImm) and a.value == 0:
                return b
            if isinstance(e, E.Mul) and isinstance(b, E.IntImm) and b.value == 1:
                return a
            if isinstance(e, E.Mul) and isinstance(a, E.IntImm) and a.value == 1:
                return b
            return None
        if isinstance(e, E.Mul) and _float_is(b, 1.0):
            return a
        if isinstance(e, E.Mul) and _float_is(a, 1.0):
            return b
        if isinstance(e, E.Sub) and _float_is(b, 0.0, negative_zero=False):
            return a
        if isinstance(e, E.Add) and _float_is(b, 0.0, negative_zero=True):
            return a
        if isinstance(e, E.Add) and _float_is(a, 0.0, negative_zero=True):
            return b
        return None

    def _Div(self, e: E.Div) -> E.Expr | None:
        if E.lanes_of(e.dtype) > 1:
            return self._vector_binary(e)
        if _is_const(e.a) and _is_const(e.b):
            return fold_binary(e)
        if E.is_float_dtype(e.dtype):
            return e.a if _float_is(e.b, 1.0) else None
        if isinstance(e.b, E.IntImm) and e.b.value == 1:
            return e.a
        # Truncating and flooring division agree on a non-negative dividend.
        lo = self.analysis.bound(e.a).lo
        if isinstance(e.b, E.IntImm) and e.b.value > 0 and lo is not None and lo >= 0:
            return E.FloorDiv(e.a, e.b)
        return None

    def _FloorDiv(self, e: E.BinaryOp) -> E.Expr | None:
        if E.lanes_of(e.dtype) > 1:
            return self._vector_binary(e)
        if _is_const(e.a) and _is_const(e.b):
            return fold_binary(e)
        if not (isinstance(e.b, E.IntImm) and e.b.value > 0 and E.is_int_dtype(e.dtype)):
            return None
        d, dtype, is_div = e.b.value, e.dtype, isinstance(e, E.FloorDiv)
        if d == 1:
            return e.a if is_div else E.IntImm(0, dtype)
        inner = e.a
        if (is_div and isinstance(inner, E.FloorDiv) and isinstance(inner.b, E.IntImm)
                and inner.b.value > 0 and wrap(d * inner.b.value, dtype) == d * inner.b.value):
            return E.FloorDiv(inner.a, E.IntImm(d * inner.b.value, dtype))
        if (not is_div and isinstance(inner, E.FloorMod) and isinstance(inner.b, E.IntImm)
                and inner.b.value > 0 and inner.b.value % d == 0):
            return E.FloorMod(inner.a, e.b)
        if not is_signed(dtype):
            return None
        terms, constant = linear_form(inner)
        q_terms = {t: c // d for t, c in terms.items() if c % d == 0}
        r_terms = {t: c for t, c in terms.items() if c % d != 0}
        qc, rc = divmod(constant, d)
        if not self._no_overflow((terms, constant), (q_terms, qc), (r_terms, rc), dtype=dtype):
            return None
        r = self.analysis.bound_linear(r_terms, rc)
        if r.known and r.lo // d == r.hi // d:  # type: ignore[operator]
            k = r.lo // d  # type: ignore[operator]
            if is_div:
                return build_linear(q_terms, qc + k, dtype)
            return build_linear(r_terms, rc - k * d, dtype)
        # floor((d*q + r) / d) == q + floor(r / d) and (d*q + r) % d == r % d for all integers.
        if not q_terms and qc == 0:
            return None
        remainder = build_linear(r_terms, rc, dtype)
        if not is_div:
            return E.FloorMod(remainder, e.b)
        quotient = build_linear(q_terms, qc, dtype)
        return build_linear(*linear_form(E.Add(quotient, E.FloorDiv(remainder, e.b))), dtype)

    _FloorMod = _FloorDiv

    def _min_max(self, e: E.BinaryOp) -> E.Expr | None:
        if e.a == e.b:
            return e.a  # exact for floats too: min(NaN, NaN) is NaN
        if E.lanes_of(e.dtype) > 1:
            return self._vector_binary(e)
        if _is_const(e.a) and _is_const(e.b):
            return fold_binary(e)
        if E.is_float_dtype(e.dtype):
            return None
        diff = self._sign_of_difference(e.a, e.b)
        first = isinstance(e, E.Min)
        if diff.hi is not None and diff.hi <= 0:
            return e.a if first else e.b
        if diff.lo is not None and diff.lo >= 0:
            return e.b if first else e.a
        return None

    _Min = _Max = _min_max

    # -- conditions

    def _compare(self, e: E.CompareOp) -> E.Expr | None:
        a, b = e.a, e.b
        if E.lanes_of(a.dtype) == 1 and _is_const(a) and _is_const(b):
            return fold_binary(e)
        if isinstance(a, E.Broadcast) and isinstance(b, E.Broadcast):
            return self._vector_binary(e)
        if E.is_float_dtype(a.dtype):
            return None
        diff = self._sign_of_difference(a, b)
        lo = -math.inf if diff.lo is None else diff.lo
        hi = math.inf if diff.hi is None else diff.hi
        decided = {
            E.LT: (hi < 0, lo >= 0), E.LE: (hi <= 0, lo > 0),
            E.GT: (lo > 0, hi <= 0), E.GE: (lo >= 0, hi < 0),
            E.EQ: (lo == hi == 0, lo > 0 or hi < 0), E.NE: (lo > 0 or hi < 0, lo == hi == 0),
        }[type(e)]
        if decided[0]:
            return _bool(True, e)
        if decided[1]:
            return _bool(False, e)
        return None

    def _logical(self, e: E.BinaryOp) -> E.Expr | None:
        ca, cb = _bool_const(e.a), _bool_const(e.b)
        absorbing = isinstance(e, E.Or)  # true absorbs or, false absorbs and
        for const, other in ((ca, e.b), (cb, e.a)):
            if const is None:
                continue
            return _bool(absorbing, e) if const == absorbing else other
        return e.a if e.a == e.b else None

    _And = _Or = _logical

    def _Not(self, e: E.Not) -> E.Expr | None:
        value = _bool_const(e.a)
        if value is not None:
            return _bool(not value, e)
        if isinstance(e.a, E.Not):
            return e.a.a
        inverse = _INVERSE.get(type(e.a))
        if inverse is not None and not E.is_float_dtype(e.a.a.dtype):  # NaN breaks !(a<b)
            return inverse(e.a.a, e.a.b)
        return None

    def _Select(self, e: E.Select) -> E.Expr | None:
        value = _bool_const(e.condition)
        if value is not None:
            return e.true_value if value else e.false_value
        return e.true_value if e.true_value == e.false_value else None

    # -- the rest

    def _Cast(self, e: E.Cast) -> E.Expr | None:
        if e.value.dtype == e.dtype:
            return e.value
        if isinstance(e.value, E.Broadcast):
            return E.Broadcast(self.simplify(E.Cast(E.element_of(e.dtype), e.value.value)),
                               e.value.lanes)
        return fold_cast(e.dtype, e.value) if _is_const(e.value) else None

    def _Call(self, e: E.Call) -> E.Expr | None:
        return fold_call(e)

    def _IntImm(self, e: E.IntImm) -> E.Expr | None:
        if int_range(e.dtype) is None:
            return None
        value = wrap(e.value, e.dtype)
        return None if value == e.value else E.IntImm(value, e.dtype)

    def _Ramp(self, e: E.Ramp) -> E.Expr | None:
        if isinstance(e.stride, E.IntImm) and e.stride.value == 0:
            return E.Broadcast(e.base, e.lanes)
        return None

    def _Let(self, e: E.Let) -> E.Expr | None:
        if _is_const(e.value):
            return self.simplify(substitute(e.body, {e.var: e.value}))
        return None if uses_var(e.body, e.var) else e.body

    def _Load(self, e: L.Load) -> E.Expr | None:
        # A load's predicate only keeps masked-off lanes from touching memory (their values are
        # unspecified), so it can go when every lane's address is provably inside the buffer:
        # a guarded tail's loop-invariant loads (A[i * 12 + k] under a mask on j) become plain
        # loads again.
        if e.predicate is not None and (_bool_const(e.predicate) is True or self._in_bounds(e)):
            e = dataclasses.replace(e, predicate=None)
        if e.predicate is None and e.indices and all(isinstance(i, E.Broadcast)
                                                     for i in e.indices):
            scalar = L.Load(e.buffer, tuple(i.value for i in e.indices))
            return E.Broadcast(scalar, e.indices[0].lanes)  # type: ignore[attr-defined]
        return e

    def _in_bounds(self, e: L.Load) -> bool:
        for index, dim in zip(e.indices, e.buffer.shape):
            size = dim.value if isinstance(dim, E.IntImm) else dim
            if not (isinstance(size, int) and self.analysis.bound(index).within(0, size - 1)):
                return False
        return len(e.indices) == len(e.buffer.shape)


# ----------------------------------------------------------------------------- statements


class _StmtSimplifier:
    """Walks statements top-down, keeping the ranges of the loop and let variables in scope."""

    def __init__(self, var_bounds: Mapping[E.Var, Interval]):
        self.analysis = IntervalAnalysis(var_bounds)
        self.rules = _Rules(self.analysis)

    def expr(self, e: E.Expr) -> E.Expr:
        return self.rules.simplify(e)

    def stmt(self, s: L.Stmt) -> L.Stmt:
        method = getattr(self, f"_{type(s).__name__}", None)
        return s if method is None else method(s)

    def _scoped(self, var: E.Var, bound: Interval, body: L.Stmt) -> L.Stmt:
        saved = self.analysis.var_bounds.get(var)
        self.analysis.var_bounds[var] = bound
        try:
            return self.stmt(body)
        finally:
            if saved is None:
                del self.analysis.var_bounds[var]
            else:
                self.analysis.var_bounds[var] = saved

    def _For(self, s: L.For) -> L.Stmt:
        start, extent = self.expr(s.min), self.expr(s.extent)
        if isinstance(extent, E.IntImm) and extent.value <= 0:
            return NOP
        if (isinstance(extent, E.IntImm) and extent.value == 1
                and s.kind is not L.ForKind.THREAD_BINDING):
            return self.stmt(substitute(s.body, {s.var: start}))
        lo, size = self.analysis.bound(start), self.analysis.bound(extent)
        hi = None if lo.hi is None or size.hi is None else lo.hi + size.hi - 1
        body = self._scoped(s.var, Interval(lo.lo, hi), s.body)
        if is_nop(body):
            return NOP
        return dataclasses.replace(s, min=start, extent=extent, body=body)

    def _Store(self, s: L.Store) -> L.Stmt:
        predicate = None if s.predicate is None else self.expr(s.predicate)
        if predicate is not None:
            value = _bool_const(predicate)
            if value is False:
                return NOP
            if value is True:
                predicate = None
        return dataclasses.replace(s, indices=tuple(self.expr(i) for i in s.indices),
                                   value=self.expr(s.value), predicate=predicate)

    def _SeqStmt(self, s: L.SeqStmt) -> L.Stmt:
        stmts = [self.stmt(child) for child in s.stmts]
        kept = [child for child in stmts if not is_nop(child)]
        return L.seq(*kept) if kept else NOP

    def _IfThenElse(self, s: L.IfThenElse) -> L.Stmt:
        condition = self.expr(s.condition)
        value = _bool_const(condition)
        if value is True:
            return self.stmt(s.then_case)
        if value is False:
            return NOP if s.else_case is None else self.stmt(s.else_case)
        then_case = self.stmt(s.then_case)
        else_case = None if s.else_case is None else self.stmt(s.else_case)
        if else_case is not None and is_nop(else_case):
            else_case = None
        if is_nop(then_case):
            if else_case is None:
                return NOP
            return L.IfThenElse(self.expr(E.Not(condition)), else_case)
        return L.IfThenElse(condition, then_case, else_case)

    def _LetStmt(self, s: L.LetStmt) -> L.Stmt:
        value = self.expr(s.value)
        if _is_const(value):
            return self.stmt(substitute(s.body, {s.var: value}))
        body = self._scoped(s.var, self.analysis.bound(value), s.body)
        if not uses_var(body, s.var):
            return body
        return dataclasses.replace(s, value=value, body=body)

    def _Allocate(self, s: L.Allocate) -> L.Stmt:
        body = self.stmt(s.body)
        return NOP if is_nop(body) else dataclasses.replace(s, body=body)

    def _AttrStmt(self, s: L.AttrStmt) -> L.Stmt:
        body = self.stmt(s.body)
        if is_nop(body):
            return NOP
        value = self.expr(s.value) if isinstance(s.value, E.Expr) else s.value
        return dataclasses.replace(s, value=value, body=body)

    def _Evaluate(self, s: L.Evaluate) -> L.Stmt:
        return L.Evaluate(self.expr(s.value))


def simplify(node: Any, var_bounds: Mapping[E.Var, tuple[int, int]] | None = None) -> Any:
    """Simplify a PrimFunc, a statement or an expression; returns the same kind of node.

    `var_bounds` gives inclusive ranges `{var: (lo, hi)}` of free variables (loop variables of
    the function's own loops are found by the walk itself).
    """
    bounds = {v: Interval(lo, hi) for v, (lo, hi) in (var_bounds or {}).items()}
    walker = _StmtSimplifier(bounds)
    if isinstance(node, L.PrimFunc):
        return node.with_body(walker.stmt(node.body))
    if isinstance(node, L.Stmt):
        return walker.stmt(node)
    if isinstance(node, E.Expr):
        return walker.expr(node)
    raise TypeError(f"simplify takes a PrimFunc, a Stmt or an Expr, not {type(node).__name__}")

"""Integer and constant arithmetic for the loop-IR simplifier: two's complement wrapping,
interval (bound) analysis over loop-variable ranges, linear forms of index expressions, and
constant folding that rounds exactly as compiled code does.

Split out of ir/passes/simplify.py, which holds the rewrite rules and the statement walk and
explains the rounding rules (what may be folded and what may not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ember.ir import expr as E

# ----------------------------------------------------------------------------- integers


def is_signed(dtype: str) -> bool:
    return E.lanes_of(dtype) == 1 and E.element_of(dtype).startswith("int")


def int_range(dtype: str) -> tuple[int, int] | None:
    element = E.element_of(dtype)
    if element == "bool":
        return 0, 1
    if not E.is_int_dtype(element):
        return None
    info = np.iinfo(element)
    return int(info.min), int(info.max)


def wrap(value: int, dtype: str) -> int:
    """`value` reduced into `dtype`'s range the way two's complement hardware wraps it."""
    element = E.element_of(dtype)
    if element == "bool":
        return int(value != 0)
    bits = np.iinfo(element).bits
    if element.startswith("uint"):
        return value % (1 << bits)
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


# ----------------------------------------------------------------------------- intervals


@dataclasses.dataclass(frozen=True)
class Interval:
    """The closed integer range [lo, hi]; None is an unknown (infinite) end."""

    lo: int | None
    hi: int | None

    def __add__(self, o: Interval) -> Interval:
        return Interval(None if self.lo is None or o.lo is None else self.lo + o.lo,
                        None if self.hi is None or o.hi is None else self.hi + o.hi)

    def scale(self, c: int) -> Interval:
        if c == 0:
            return Interval(0, 0)
        lo = None if self.lo is None else self.lo * c
        hi = None if self.hi is None else self.hi * c
        return Interval(lo, hi) if c > 0 else Interval(hi, lo)

    def union(self, o: Interval) -> Interval:
        return Interval(None if self.lo is None or o.lo is None else min(self.lo, o.lo),
                        None if self.hi is None or o.hi is None else max(self.hi, o.hi))

    @property
    def known(self) -> bool:
        return self.lo is not None and self.hi is not None

    def within(self, lo: int, hi: int) -> bool:
        return self.known and lo <= self.lo and self.hi <= hi  # type: ignore[operator]


UNKNOWN = Interval(None, None)


def _dtype_interval(dtype: str) -> Interval:
    """What a value of `dtype` can be; int64 (index) values are taken as unbounded."""
    if E.element_of(dtype) == E.INDEX:
        return UNKNOWN
    rng = int_range(dtype)
    return UNKNOWN if rng is None else Interval(*rng)


def _floordiv_bound(v: int | None, d: int) -> int | None:
    return None if v is None else v // d


class IntervalAnalysis:
    """Bounds of integer expressions from the ranges of the variables in scope.

    The bound of a vector is the union over its lanes. Results of narrow integer dtypes that
    might wrap are widened to the dtype's whole range.
    """

    def __init__(self, var_bounds: Mapping[E.Var, Interval] | None = None):
        self.var_bounds: dict[E.Var, Interval] = dict(var_bounds or {})

    def bound(self, e: E.Expr) -> Interval:
        if E.is_float_dtype(e.dtype):
            return UNKNOWN
        result = self._bound(e)
        rng = int_range(e.dtype)
        if rng is not None and E.element_of(e.dtype) != E.INDEX and not result.within(*rng):
            return Interval(*rng)
        return result

    def _bound(self, e: E.Expr) -> Interval:
        if isinstance(e, E.IntImm):
            return Interval(e.value, e.value)
        if isinstance(e, E.Var):
            return self.var_bounds.get(e, _dtype_interval(e.dtype))
        if isinstance(e, (E.Add, E.Sub, E.Mul)) and is_signed(e.dtype):
            terms, constant = linear_form(e)
            if terms.get(e) != 1 or len(terms) != 1 or constant:  # else e is an atom: a * b
                return self.bound_linear(terms, constant)
        if isinstance(e, E.Mul):
            return self._mul(self.bound(e.a), self.bound(e.b))
        if isinstance(e, (E.FloorDiv, E.FloorMod)) and isinstance(e.b, E.IntImm) and e.b.value:
            a, d = self.bound(e.a), e.b.value
            if isinstance(e, E.FloorDiv):
                lo, hi = _floordiv_bound(a.lo, d), _floordiv_bound(a.hi, d)
                return Interval(lo, hi) if d > 0 else Interval(hi, lo)
            if a.known and a.lo // d == a.hi // d:  # type: ignore[operator]
                k = a.lo // d  # type: ignore[operator]
                return Interval(a.lo - k * d, a.hi - k * d)  # type: ignore[operator]
            return Interval(0, d - 1) if d > 0 else Interval(d + 1, 0)
        if isinstance(e, E.Min):
            a, b = self.bound(e.a), self.bound(e.b)
            lo = None if a.lo is None or b.lo is None else min(a.lo, b.lo)
            hi = a.hi if b.hi is None else b.hi if a.hi is None else min(a.hi, b.hi)
            return Interval(lo, hi)
        if isinstance(e, E.Max):
            a, b = self.bound(e.a), self.bound(e.b)
            lo = a.lo if b.lo is None else b.lo if a.lo is None else max(a.lo, b.lo)
            hi = None if a.hi is None or b.hi is None else max(a.hi, b.hi)
            return Interval(lo, hi)
        if isinstance(e, E.Select):
            return self.bound(e.true_value).union(self.bound(e.false_value))
        if isinstance(e, E.Cast) and not E.is_float_dtype(e.value.dtype):
            return self.bound(e.value)
        if isinstance(e, E.Ramp) and isinstance(e.stride, E.IntImm):
            last = e.stride.value * (e.lanes - 1)
            return self.bound(e.base) + Interval(min(0, last), max(0, last))
        if isinstance(e, E.Broadcast):
            return self.bound(e.value)
        if isinstance(e, E.Let):
            return self.bound(e.body)
        if E.element_of(e.dtype) == "bool":
            return Interval(0, 1)
        return _dtype_interval(e.dtype)

    @staticmethod
    def _mul(a: Interval, b: Interval) -> Interval:
        if a.lo == a.hi and a.lo is not None:
            return b.scale(a.lo)
        if b.lo == b.hi and b.lo is not None:
            return a.scale(b.lo)
        if a.known and b.known:
            corners = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]  # type: ignore
            return Interval(min(corners), max(corners))
        return UNKNOWN

    def bound_linear(self, terms: Mapping[E.Expr, int], constant: int) -> Interval:
        total = Interval(constant, constant)
        for term, coeff in terms.items():
            total = total + self.bound(term).scale(coeff)
            if total == UNKNOWN:
                break
        return total


# ----------------------------------------------------------------------------- linear forms


def linear_form(e: E.Expr) -> tuple[dict[E.Expr, int], int]:
    """`e` (a signed scalar integer) as ({term: coefficient}, constant), terms in order of first
    appearance; anything other than +, - and multiplication by a constant is a term."""
    terms: dict[E.Expr, int] = {}
    constant = _accumulate(e, 1, terms)
    _merge_div_mod(terms)
    return {t: c for t, c in terms.items() if c}, constant


def _accumulate(e: E.Expr, scale: int, terms: dict[E.Expr, int]) -> int:
    if isinstance(e, E.IntImm):
        return scale * e.value
    if isinstance(e, E.Add):
        return _accumulate(e.a, scale, terms) + _accumulate(e.b, scale, terms)
    if isinstance(e, E.Sub):
        return _accumulate(e.a, scale, terms) + _accumulate(e.b, -scale, terms)
    if isinstance(e, E.Mul) and isinstance(e.b, E.IntImm):
        return _accumulate(e.a, scale * e.b.value, terms)
    if isinstance(e, E.Mul) and isinstance(e.a, E.IntImm):
        return _accumulate(e.b, scale * e.a.value, terms)
    terms[e] = terms.get(e, 0) + scale
    return 0


def _merge_div_mod(terms: dict[E.Expr, int]) -> None:
    """Merge the pairs of terms that flattening fused loops leaves behind. For constants
    c, m > 0 and any coefficient k, with `//` and `%` rounding toward negative infinity:

        (x // c) * c * k            + (x % c) * k   ->  x * k
        (x // c) % m * c * k        + (x % c) * k   ->  (x % (c * m)) * k
        (x % (c * m)) // c * c * k  + (x % c) * k   ->  (x % (c * m)) * k

    and the first with `x` itself a quotient, `(y // (c0 * c)) * c * k + (y // c0) % c * k ->
    (y // c0) * k`. Each is exact for every integer x, negative ones included (write x as
    q * c + r with 0 <= r < c: then x // (c * m) == q // m), but not for truncating division.
    Repeated until none applies, so that the chain of three or more fused axes,
    `(f // 512) * 512 + (f // 64) % 8 * 64 + f % 64`, collapses from the inside out: `f % 64`
    absorbs the middle term into `f % 512`, which then absorbs the first into `f`.
    """
    changed = True
    while changed:
        changed = False
        for term, coeff in list(terms.items()):
            if not (coeff and isinstance(term, E.FloorMod) and _positive(term.b)):
                continue
            want = coeff * term.b.value  # type: ignore[attr-defined]
            for partner, partner_coeff in list(terms.items()):
                if partner_coeff != want or partner == term:
                    continue
                merged = _merge_pair(term, partner)
                if merged is None:
                    continue
                terms[term] = terms[partner] = 0
                _accumulate(merged, coeff, terms)
                changed = True
                break
            if changed:
                break


def _positive(e: E.Expr) -> bool:
    return isinstance(e, E.IntImm) and e.value > 0


def _quotients(x: E.Expr, c: int, dtype: str) -> tuple[E.Expr, ...]:
    """The forms `x // c` takes: as written, and (for `x = y // c0`) as the simplifier folds
    it, `y // (c0 * c)`."""
    forms: tuple[E.Expr, ...] = (E.FloorDiv(x, E.IntImm(c, dtype)),)
    if isinstance(x, E.FloorDiv) and _positive(x.b):
        total = x.b.value * c  # type: ignore[attr-defined]
        if wrap(total, dtype) == total:
            forms += (E.FloorDiv(x.a, E.IntImm(total, dtype)),)
    return forms


def _merge_pair(mod: E.FloorMod, partner: E.Expr) -> E.Expr | None:
    """`mod + partner * c` as one expression, where `mod` is `x % c` (c > 0), when `partner`
    is one of the forms `_merge_div_mod` merges; else None."""
    x, c, dtype = mod.a, mod.b.value, mod.dtype  # type: ignore[attr-defined]
    quotients = _quotients(x, c, dtype)
    if partner in quotients:
        return x
    if isinstance(partner, E.FloorMod) and _positive(partner.b) and partner.a in quotients:
        size = c * partner.b.value  # type: ignore[attr-defined]
        return E.FloorMod(x, E.IntImm(size, dtype)) if wrap(size, dtype) == size else None
    if (isinstance(partner, E.FloorDiv) and partner.b == mod.b
            and isinstance(partner.a, E.FloorMod) and partner.a.a == x
            and _positive(partner.a.b) and partner.a.b.value % c == 0):  # type: ignore
        return partner.a
    return None


def build_linear(terms: Mapping[E.Expr, int], constant: int, dtype: str) -> E.Expr:
    """The canonical expression of a linear form: positive terms added in order, negative ones
    subtracted, the constant last (`i * 16 + j - k + 3`)."""
    constant = wrap(constant, dtype)
    items = [(t, wrap(c, dtype)) for t, c in terms.items() if wrap(c, dtype)]

    def term(t: E.Expr, c: int) -> E.Expr:
        return t if c == 1 else E.Mul(t, E.IntImm(c, dtype))

    positive = [(t, c) for t, c in items if c > 0]
    negative = [(t, -c) for t, c in items if c < 0]
    acc: E.Expr | None = None
    for t, c in positive:
        acc = term(t, c) if acc is None else E.Add(acc, term(t, c))
    if acc is None and negative:
        if constant > 0:
            acc, constant = E.IntImm(constant, dtype), 0
        else:
            t, c = negative.pop(0)
            acc = E.Mul(t, E.IntImm(wrap(-c, dtype), dtype))
    for t, c in negative:
        acc = E.Sub(acc, term(t, c))  # type: ignore[arg-type]
    if acc is None:
        return E.IntImm(constant, dtype)
    if constant > 0:
        return E.Add(acc, E.IntImm(constant, dtype))
    if constant < 0:
        return E.Sub(acc, E.IntImm(wrap(-constant, dtype), dtype))
    return acc


# ----------------------------------------------------------------------------- folding


def _foldable_float(dtype: str) -> bool:
    return E.element_of(dtype) in ("float16", "float32", "float64")


def _np_value(e: E.Expr) -> Any:
    with np.errstate(over="ignore"):  # 1e30 as float16 is inf, as the compiled code has it
        return np.asarray(e.value).astype(E.element_of(e.dtype))[()]  # type: ignore


def _make_const(value: Any, dtype: str) -> E.Expr:
    if E.is_float_dtype(dtype):
        return E.FloatImm(float(value), dtype)
    return E.IntImm(wrap(int(value), dtype), dtype)


def fold_binary(e: E.BinaryOp) -> E.Expr | None:
    """`a op b` for two scalar constants, or None where folding could change the result."""
    a, b = e.a, e.b
    if isinstance(e, E.CompareOp):
        if E.is_float_dtype(a.dtype) and not _foldable_float(a.dtype):
            return None
        x, y = _np_value(a), _np_value(b)
        compare = {E.EQ: np.equal, E.NE: np.not_equal, E.LT: np.less, E.LE: np.less_equal,
                   E.GT: np.greater, E.GE: np.greater_equal}[type(e)]
        return E.IntImm(int(bool(compare(x, y))), "bool")
    if E.is_float_dtype(a.dtype):
        return _fold_float(e)
    x, y, dtype = a.value, b.value, e.dtype  # type: ignore[attr-defined]
    if isinstance(e, (E.And, E.Or)):
        result = (x and y) if isinstance(e, E.And) else (x or y)
        return E.IntImm(int(bool(result)), dtype)
    if isinstance(e, (E.Div, E.FloorDiv, E.FloorMod)):
        if y == 0:
            return None  # a division by zero stays for the program to trap on
        if isinstance(e, E.Div):
            quotient = abs(x) // abs(y)
            value = quotient if (x < 0) == (y < 0) else -quotient
        else:
            value = x // y if isinstance(e, E.FloorDiv) else x % y
        if isinstance(e, (E.Div, E.FloorDiv)) and wrap(value, dtype) != value:
            return None  # INT_MIN / -1 overflows: undefined in LLVM
        return _make_const(value, dtype)
    ops = {E.Add: lambda: x + y, E.Sub: lambda: x - y, E.Mul: lambda: x * y,
           E.Min: lambda: min(x, y), E.Max: lambda: max(x, y)}
    op = ops.get(type(e))
    return None if op is None else _make_const(op(), dtype)


def _fold_float(e: E.BinaryOp) -> E.Expr | None:
    if not _foldable_float(e.dtype):
        return None
    x, y = _np_value(e.a), _np_value(e.b)
    if isinstance(e, (E.Min, E.Max)):
        if np.isnan(x) or np.isnan(y) or (x == y and np.signbit(x) != np.signbit(y)):
            return None  # minnum/minimum and numpy disagree on these
        return _make_const(min(x, y) if isinstance(e, E.Min) else max(x, y), e.dtype)
    with np.errstate(all="ignore"):
        ops = {E.Add: np.add, E.Sub: np.subtract, E.Mul: np.multiply, E.Div: np.divide}
        op = ops.get(type(e))
        return None if op is None else _make_const(op(x, y), e.dtype)


def fold_cast(dtype: str, value: E.Expr) -> E.Expr | None:
    source = E.element_of(value.dtype)
    target = E.element_of(dtype)
    for side in (source, target):
        if E.is_float_dtype(side) and not _foldable_float(side):
            return None
    x = _np_value(value)
    if target == "bool":
        return E.IntImm(int(bool(x)), "bool")
    if E.is_float_dtype(source) and not E.is_float_dtype(target):
        if not np.isfinite(x):
            return None
        truncated = int(np.trunc(x))
        return None if wrap(truncated, target) != truncated else E.IntImm(truncated, target)
    if not E.is_float_dtype(target):
        return E.IntImm(wrap(int(x), target), target)
    with np.errstate(all="ignore"):
        return E.FloatImm(float(np.asarray(x).astype(target)), target)


#: Intrinsics that IEEE 754 defines exactly, so numpy and compiled code agree bit for bit.
_EXACT_INTRINSICS = {"fabs": np.abs, "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
                     "sqrt": np.sqrt, "isnan": np.isnan, "isinf": np.isinf}


def fold_call(e: E.Call) -> E.Expr | None:
    fn = _EXACT_INTRINSICS.get(e.name)
    if fn is None or not all(isinstance(a, E.FloatImm) and _foldable_float(a.dtype)
                             for a in e.args):
        return None
    with np.errstate(all="ignore"):
        value = fn(_np_value(e.args[0]))
    if e.dtype == "bool":
        return E.IntImm(int(bool(value)), "bool")
    return _make_const(value, e.dtype)

"""Index arithmetic for bound inference: linear simplification and interval bounds.

Lowering (`ember.ir.lower`) needs two things from integer index expressions: to see that an
extent such as `(io*4 + 5) - (io*4) + 1` is the constant 6, and to bound an index over a box of
loop variables (the region a consumer reads while some loops are fixed and others run). This
module does exactly that and no more; the general simplifier is `ember.ir.passes.simplify`.

`simplify_index` rewrites an integer expression as a sum of `coefficient * atom` plus a
constant, where atoms are variables and anything non-linear; `floordiv`/`floormod` by a positive
constant pull out the terms whose coefficients the divisor divides (exact for integers).
`bound_of` gives symbolic [lo, hi] of an expression when some variables range over intervals.
"""

from __future__ import annotations

from collections.abc import Callable

from ember.ir import expr as E
from ember.ir.expr import Expr, IntImm, Var

Interval = tuple[Expr, Expr]
#: relax(var) -> the interval a variable ranges over, or None to keep it symbolic.
Relax = Callable[[Var], Interval | None]

_Linear = tuple[dict[Expr, int], int]


def is_index(e: Expr) -> bool:
    return E.is_int_dtype(e.dtype) and E.lanes_of(e.dtype) == 1 and e.dtype != "bool"


def const_int(e: object) -> int | None:
    """The value of an integer immediate (or a Python int), else None."""
    if isinstance(e, bool):
        return None
    if isinstance(e, int):
        return e
    if isinstance(e, IntImm) and e.dtype != "bool":
        return e.value
    return None


def _add_terms(a: _Linear, b: _Linear, scale: int = 1) -> _Linear:
    terms = dict(a[0])
    for atom, coeff in b[0].items():
        terms[atom] = terms.get(atom, 0) + scale * coeff
    return {k: v for k, v in terms.items() if v != 0}, a[1] + scale * b[1]


def _scale(a: _Linear, factor: int) -> _Linear:
    if factor == 0:
        return {}, 0
    return {k: v * factor for k, v in a[0].items()}, a[1] * factor


def _linear(e: Expr) -> _Linear:
    if isinstance(e, IntImm):
        return {}, e.value
    if isinstance(e, E.Add):
        return _add_terms(_linear(e.a), _linear(e.b))
    if isinstance(e, E.Sub):
        return _add_terms(_linear(e.a), _linear(e.b), -1)
    if isinstance(e, E.Mul):
        a, b = _linear(e.a), _linear(e.b)
        if not a[0]:
            return _scale(b, a[1])
        if not b[0]:
            return _scale(a, b[1])
        return {E.Mul(_rebuild(a, e.dtype), _rebuild(b, e.dtype)): 1}, 0
    if isinstance(e, (E.FloorDiv, E.FloorMod)) and const_int(e.b) is not None and e.b.value > 0:
        return _divmod(e, _linear(e.a), e.b.value)
    if isinstance(e, (E.Min, E.Max)):
        a, b = _linear(e.a), _linear(e.b)
        diff = _add_terms(a, b, -1)
        if not diff[0]:  # the two sides differ by a constant: pick one
            pick_a = (diff[1] <= 0) if isinstance(e, E.Min) else (diff[1] >= 0)
            return a if pick_a else b
        return {type(e)(_rebuild(a, e.dtype), _rebuild(b, e.dtype)): 1}, 0
    return {e: 1}, 0


def _divmod(e: Expr, a: _Linear, c: int) -> _Linear:
    # floor((c*X + Y + c*q + r) / c) = X + q + floor((Y + r) / c) and
    # (c*X + Y + c*q + r) mod c = (Y + r) mod c, for integers X, Y, q and 0 <= r < c.
    whole = {k: v // c for k, v in a[0].items() if v % c == 0}
    rest = {k: v for k, v in a[0].items() if v % c != 0}
    q, r = divmod(a[1], c)
    if isinstance(e, E.FloorDiv):
        if not rest:
            return whole, q
        return _add_terms((whole, q), ({E.FloorDiv(_rebuild((rest, r), e.dtype), e.b): 1}, 0))
    if not rest:
        return {}, r
    return {E.FloorMod(_rebuild((rest, r), e.dtype), e.b): 1}, 0


def _rebuild(form: _Linear, dtype: str) -> Expr:
    terms, constant = form
    positive = [(k, v) for k, v in terms.items() if v > 0]
    negative = [(k, -v) for k, v in terms.items() if v < 0]

    def term(atom: Expr, coeff: int) -> Expr:
        return atom if coeff == 1 else E.Mul(atom, E.const(coeff, dtype))

    result: Expr | None = None
    for atom, coeff in positive:
        result = term(atom, coeff) if result is None else E.Add(result, term(atom, coeff))
    for atom, coeff in negative:
        base = E.const(0, dtype) if result is None else result
        result = E.Sub(base, term(atom, coeff))
    if result is None:
        return E.const(constant, dtype)
    if constant > 0:
        return E.Add(result, E.const(constant, dtype))
    if constant < 0:
        return E.Sub(result, E.const(-constant, dtype))
    return result


def simplify_index(e: Expr) -> Expr:
    """`e` in canonical linear form (integer scalar expressions; others are returned as is)."""
    if not is_index(e):
        return e
    return _rebuild(_linear(e), e.dtype)


def difference(a: Expr, b: Expr) -> int | None:
    """`a - b` when it is a known constant, else None."""
    form = _add_terms(_linear(a), _linear(b), -1)
    return None if form[0] else form[1]


def bound_of(e: Expr, relax: Relax) -> Interval | None:
    """Symbolic [lo, hi] (inclusive) of integer `e` when each variable `v` with
    `relax(v) = (lo, hi)` ranges over that interval and other variables stay fixed; None when
    `e` cannot be bounded (e.g. an index read from memory that depends on a relaxed loop)."""
    b = _bound(e, relax)
    if b is None:
        return None
    return simplify_index(b[0]), simplify_index(b[1])


def _bound(e: Expr, relax: Relax) -> Interval | None:
    from ember.ir.visitor import collect

    if isinstance(e, IntImm):
        return e, e
    if isinstance(e, Var):
        return relax(e) or (e, e)
    if isinstance(e, (E.Add, E.Sub)):
        a, b = _bound(e.a, relax), _bound(e.b, relax)
        if a is None or b is None:
            return None
        if isinstance(e, E.Add):
            return E.add(a[0], b[0]), E.add(a[1], b[1])
        return E.sub(a[0], b[1]), E.sub(a[1], b[0])
    if isinstance(e, E.Mul):
        a, b = _bound(e.a, relax), _bound(e.b, relax)
        if a is None or b is None:
            return None
        for x, y in ((a, b), (b, a)):
            c = const_int(simplify_index(x[0])) if difference(x[0], x[1]) == 0 else None
            if c is not None:
                return (E.mul(y[0], c), E.mul(y[1], c)) if c >= 0 else \
                    (E.mul(y[1], c), E.mul(y[0], c))
        if difference(a[0], a[1]) == 0 and difference(b[0], b[1]) == 0:
            return E.mul(a[0], b[0]), E.mul(a[0], b[0])
        return None
    if isinstance(e, (E.FloorDiv, E.FloorMod)) and (c := const_int(e.b)) is not None and c > 0:
        a = _bound(e.a, relax)
        if a is None:
            return None
        if isinstance(e, E.FloorDiv):
            return E.floordiv(a[0], c), E.floordiv(a[1], c)
        if difference(a[0], a[1]) == 0:
            value = E.floormod(a[0], c)
            return value, value
        same_block = difference(E.floordiv(a[1], c), E.floordiv(a[0], c))
        if same_block == 0:  # the interval stays inside one block of c
            return E.floormod(a[0], c), E.floormod(a[1], c)
        return E.const(0, e.dtype), E.const(c - 1, e.dtype)
    if isinstance(e, (E.Min, E.Max)):
        a, b = _bound(e.a, relax), _bound(e.b, relax)
        if a is None or b is None:
            return None
        f = E.min_ if isinstance(e, E.Min) else E.max_
        return f(a[0], b[0]), f(a[1], b[1])
    if isinstance(e, E.Select):
        a, b = _bound(e.true_value, relax), _bound(e.false_value, relax)
        if a is None or b is None:
            return None
        return E.min_(a[0], b[0]), E.max_(a[1], b[1])
    if isinstance(e, E.Cast) and is_index(e) and is_index(e.value):
        a = _bound(e.value, relax)
        return None if a is None else (E.cast(e.dtype, a[0]), E.cast(e.dtype, a[1]))
    # Anything else is bounded only when no relaxed variable occurs in it.
    if any(relax(v) is not None for v in collect(e, Var)):
        return None
    return e, e


def constant_upper_bound(e: Expr, relax: Relax) -> int | None:
    """A constant upper bound of integer `e` over the relaxed variables, or None.

    Extents such as `(x + 2) // 6 - x // 6 + 1` are not constant, but bounded: a window of
    `c + 1` consecutive integers meets at most `(c + d - 1) // d + 1` blocks of `d`.
    """
    terms, total = _linear(e)
    terms = dict(terms)
    for atom in list(terms):
        if atom not in terms or terms[atom] != 1 or not isinstance(atom, E.FloorDiv):
            continue
        for other in list(terms):
            if terms[other] == -1 and isinstance(other, E.FloorDiv) and other.b == atom.b:
                gap = difference(atom.a, other.a)
                if gap is not None and gap >= 0:
                    d = atom.b.value
                    total += (gap + d - 1) // d
                    del terms[atom], terms[other]
                    break
    if not terms:
        return total
    b = bound_of(_rebuild((terms, 0), e.dtype), relax)
    rest = const_int(b[1]) if b is not None else None
    return None if rest is None else total + rest


def prove_less_equal(a: Expr, b: Expr) -> bool:
    """Whether a <= b holds for every value of the variables (a - b is a constant <= 0)."""
    d = difference(a, b)
    return d is not None and d <= 0

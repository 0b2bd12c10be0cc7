"""The loop-IR simplifier (ember.ir.passes.simplify): one Before/Expected row per rule, rows
for what must NOT be simplified (float rounding, unknown bounds, overflow), statement-level
dead-code removal, and a Hypothesis check that simplification never changes what a function
computes (run through the loop-IR interpreter), alone and with the whole pipeline."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir import te
from ember.ir.interpreter import run_primfunc
from ember.ir.lower import lower
from ember.ir.passes import NOP, run_pipeline, simplify, verify_primfunc
from ember.ir.passes.arith import Interval, IntervalAnalysis, linear_form
from ember.ir.schedule import create_schedule
from ember.ir.visitor import collect

F = L.ForKind
i, j, k, f, u = E.Var("i"), E.Var("j"), E.Var("k"), E.Var("f"), E.Var("u")
w = E.Var("w")  # a loop over three fused axes of (4, 8, 64)
x, y = E.Var("x", "float32"), E.Var("y", "float32")
b8 = E.Var("b8", "int8")
p, q = E.Var("p", "bool"), E.Var("q", "bool")
BOUNDS = {i: (0, 3), j: (0, 15), k: (0, 3), f: (0, 63), w: (0, 2047)}  # u, x, y, b8: unknown


def c(value, dtype="int64"):
    """A raw integer immediate (the builders would fold; these rows test the simplifier)."""
    return E.IntImm(value, dtype)


def fc(value, dtype="float32"):
    return E.FloatImm(value, dtype)


TRUE, FALSE = c(1, "bool"), c(0, "bool")


def bc(e, lanes=4):
    return E.Broadcast(e, lanes)


def fd(a, d, dtype="int64"):
    return E.FloorDiv(a, c(d, dtype))


def fm(a, d, dtype="int64"):
    return E.FloorMod(a, c(d, dtype))


def mul(a, factor, dtype="int64"):
    return E.Mul(a, c(factor, dtype))


def add(*terms):
    acc = terms[0]
    for t in terms[1:]:
        acc = E.Add(acc, t)
    return acc


# What flattening a loop fused from axes of sizes (4, 8, 64) leaves: w // 512, (w // 64) % 8
# and w % 64, scaled by the row-major strides.
W_OUTER, W_MIDDLE, W_INNER = mul(fd(w, 512), 512), mul(fm(fd(w, 64), 8), 64), fm(w, 64)


RULES = [
    # -- integer constant folding (two's complement, floor semantics for // and %)
    ("fold add", E.Add(c(2), c(3)), c(5)),
    ("fold int8 wraps", E.Add(c(100, "int8"), c(100, "int8")), c(-56, "int8")),
    ("fold out-of-range immediate", c(200, "int8"), c(-56, "int8")),
    ("fold floordiv rounds down", E.FloorDiv(c(-7), c(2)), c(-4)),
    ("fold floormod has divisor's sign", E.FloorMod(c(-7), c(2)), c(1)),
    ("fold div truncates", E.Div(c(-7), c(2)), c(-3)),
    ("fold min/max", E.Max(c(-7), E.Min(c(2), c(5))), c(2)),
    ("fold compare", E.LT(c(3), c(4)), TRUE),
    ("fold and/or", E.Or(E.And(TRUE, FALSE), TRUE), TRUE),
    ("no fold: division by zero", E.FloorDiv(c(7), c(0)), E.FloorDiv(c(7), c(0))),
    ("no fold: INT_MIN / -1", E.Div(c(-128, "int8"), c(-1, "int8")),
     E.Div(c(-128, "int8"), c(-1, "int8"))),
    # -- float constant folding: IEEE rounding in the expression's own dtype
    ("fold float32 add rounds to float32", E.Add(fc(0.1), fc(0.2)),
     fc(float(np.float32(0.1) + np.float32(0.2)))),
    ("fold float64 add", E.Add(fc(0.1, "float64"), fc(0.2, "float64")), fc(0.1 + 0.2, "float64")),
    ("fold float16 mul", E.Mul(fc(0.1, "float16"), fc(3.0, "float16")),
     fc(float(np.float16(0.1) * np.float16(3.0)), "float16")),
    ("fold float division by zero", E.Div(fc(1.0), fc(0.0)), fc(math.inf)),
    ("fold float compare with NaN", E.NE(fc(math.nan), fc(math.nan)), TRUE),
    ("no fold: min with NaN", E.Min(fc(math.nan), fc(1.0)), E.Min(fc(math.nan), fc(1.0))),
    ("no fold: min of signed zeros", E.Min(fc(-0.0), fc(0.0)), E.Min(fc(-0.0), fc(0.0))),
    ("fold cast float->int truncates", E.Cast("int32", fc(-3.7)), c(-3, "int32")),
    ("fold cast int->int wraps", E.Cast("int8", c(300)), c(44, "int8")),
    ("fold cast int->float rounds", E.Cast("float32", c(16777217)), fc(16777216.0)),
    ("fold cast to bool", E.Cast("bool", fc(0.5)), TRUE),
    ("no fold: cast NaN to int", E.Cast("int32", fc(math.nan)), E.Cast("int32", fc(math.nan))),
    ("no fold: cast out of range", E.Cast("int8", fc(300.0)), E.Cast("int8", fc(300.0))),
    ("fold exact intrinsic", E.Call("sqrt", (fc(2.0),), "float32"),
     fc(float(np.sqrt(np.float32(2.0))))),
    ("no fold: transcendental", E.Call("exp", (fc(1.0),), "float32"),
     E.Call("exp", (fc(1.0),), "float32")),
    # -- float identities that hold for every input (signed zeros and NaN included)
    ("x * 1.0", E.Mul(x, fc(1.0)), x),
    ("1.0 * x", E.Mul(fc(1.0), x), x),
    ("x / 1.0", E.Div(x, fc(1.0)), x),
    ("x - 0.0", E.Sub(x, fc(0.0)), x),
    ("x + -0.0", E.Add(x, fc(-0.0)), x),
    ("keep x + 0.0 (-0.0 + 0.0 is +0.0)", E.Add(x, fc(0.0)), E.Add(x, fc(0.0))),
    ("keep x - -0.0", E.Sub(x, fc(-0.0)), E.Sub(x, fc(-0.0))),
    ("keep x * 0.0 (NaN, inf)", E.Mul(x, fc(0.0)), E.Mul(x, fc(0.0))),
    ("keep x - x (NaN)", E.Sub(x, x), E.Sub(x, x)),
    ("keep float reassociation", E.Add(E.Add(x, fc(1.0)), fc(2.0)),
     E.Add(E.Add(x, fc(1.0)), fc(2.0))),
    ("keep !(x < y) (NaN)", E.Not(E.LT(x, y)), E.Not(E.LT(x, y))),
    ("min(x, x) is exact", E.Min(x, x), x),
    # -- canonical linear index arithmetic
    ("(a + c1) + c2", E.Add(E.Add(u, c(1)), c(2)), E.Add(u, c(3))),
    ("a * c1 * c2", E.Mul(E.Mul(u, c(2)), c(4)), E.Mul(u, c(8))),
    ("constant goes last", E.Add(c(2), u), E.Add(u, c(2))),
    ("distribute a constant factor", E.Mul(E.Add(u, c(1)), c(4)), E.Add(E.Mul(u, c(4)), c(4))),
    ("cancel terms", E.Sub(E.Mul(E.Add(u, c(1)), c(4)), E.Mul(u, c(4))), c(4)),
    ("x - x for ints", E.Sub(u, u), c(0)),
    ("x * 0 for ints", E.Mul(u, c(0)), c(0)),
    ("negative terms are subtracted", E.Add(E.Mul(u, c(-3)), c(5)), E.Sub(c(5), E.Mul(u, c(3)))),
    ("a lone negative term", E.Sub(c(0), E.Mul(i, c(3))), E.Mul(i, c(-3))),
    ("merge terms in first-appearance order", E.Add(E.Add(E.Mul(i, c(16)), j), E.Mul(i, c(16))),
     E.Add(E.Mul(i, c(32)), j)),
    # -- floordiv / floormod with known bounds
    ("(i*16 + j) // 16 -> i", E.FloorDiv(E.Add(E.Mul(i, c(16)), j), c(16)), i),
    ("(i*16 + j) % 16 -> j", E.FloorMod(E.Add(E.Mul(i, c(16)), j), c(16)), j),
    ("(f // 16) * 16 + f % 16 -> f",
     E.Add(E.Mul(E.FloorDiv(f, c(16)), c(16)), E.FloorMod(f, c(16))), f),
    # -- nested div/mod chains of three or more fused axes (exact for every x under floor
    #    rounding, so they fire for x of unknown sign too)
    ("three fused axes -> w", add(W_OUTER, W_MIDDLE, W_INNER), w),
    ("three fused axes, inner term first", add(W_INNER, W_OUTER, W_MIDDLE), w),
    ("three fused axes, middle term first", add(W_MIDDLE, W_INNER, W_OUTER), w),
    ("(x // c) % m * c + x % c -> x % (c*m)", add(W_MIDDLE, W_INNER), fm(w, 512)),
    ("x % c + (x // c) % m * c -> x % (c*m)", add(W_INNER, W_MIDDLE), fm(w, 512)),
    ("(x % (c*m)) // c * c + x % c -> x % (c*m)", add(mul(fd(fm(w, 512), 64), 64), W_INNER),
     fm(w, 512)),
    ("x % c + (x % n) // c * c where c divides n", add(W_INNER, mul(fd(fm(w, 1024), 64), 64)),
     fm(w, 1024)),
    ("(x // (c*m)) * (c*m) + x % (c*m) -> x", add(mul(fd(w, 512), 512), fm(w, 512)), w),
    ("nested chain with an outer multiplier", add(mul(fm(fd(w, 64), 8), 192), mul(W_INNER, 3)),
     mul(fm(w, 512), 3)),
    ("three fused axes with an outer multiplier",
     E.Mul(add(W_OUTER, W_MIDDLE, W_INNER), c(-2)), mul(w, -2)),
    ("fused chain among other terms", add(mul(i, 4096), W_MIDDLE, c(5), W_INNER),
     add(mul(i, 4096), fm(w, 512), c(5))),
    ("four fused axes -> w", add(mul(fd(w, 512), 512), mul(fm(fd(w, 64), 8), 64),
                                 mul(fm(fd(w, 8), 8), 8), fm(w, 8)), w),
    ("(y // (c0*m)) * m + (y // c0) % m -> y // c0", add(mul(fd(w, 512), 8), fm(fd(w, 64), 8)),
     fd(w, 64)),
    ("(x // c1) // c2 inside the chain", add(mul(fm(fd(fd(w, 8), 8), 8), 64), W_INNER),
     fm(w, 512)),
    ("x of unknown sign: (u // 4) % 8 * 4 + u % 4 -> u % 32",
     add(mul(fm(fd(u, 4), 8), 4), fm(u, 4)), fm(u, 32)),
    ("x of unknown sign: three fused axes -> u",
     add(mul(fd(u, 32), 32), mul(fm(fd(u, 4), 8), 4), fm(u, 4)), u),
    ("int8 chain whose modulus fits", add(mul(fm(fd(b8, 4, "int8"), 8, "int8"), 4, "int8"),
                                          fm(b8, 4, "int8")), fm(b8, 32, "int8")),
    ("keep: truncating div (wrong for negative x)", add(mul(fm(E.Div(u, c(4)), 8), 4), fm(u, 4)),
     add(mul(fm(E.Div(u, c(4)), 8), 4), fm(u, 4))),
    ("keep: coefficient is not c", add(mul(fm(fd(w, 64), 8), 32), W_INNER),
     add(mul(fm(fd(w, 64), 8), 32), W_INNER)),
    ("keep: divisor is not the modulus", add(mul(fm(fd(w, 32), 8), 64), W_INNER),
     add(mul(fm(fd(w, 32), 8), 64), W_INNER)),
    ("keep: different x", add(W_MIDDLE, fm(u, 64)), add(W_MIDDLE, fm(u, 64))),
    ("keep: c does not divide n", add(mul(fd(fm(w, 500), 64), 64), W_INNER),
     add(mul(fd(fm(w, 500), 64), 64), W_INNER)),
    ("keep: negative modulus", add(mul(fm(fd(w, 64), -8), 64), W_INNER),
     add(mul(fm(fd(w, 64), -8), 64), W_INNER)),
    ("keep: outer term's coefficient is not c*m", add(mul(fd(w, 512), 256), fm(w, 512)),
     add(mul(fd(w, 512), 256), fm(w, 512))),
    ("keep: int8 modulus c*m does not fit", add(mul(fm(fd(b8, 16, "int8"), 16, "int8"), 16,
                                                    "int8"), fm(b8, 16, "int8")),
     add(mul(fm(fd(b8, 16, "int8"), 16, "int8"), 16, "int8"), fm(b8, 16, "int8"))),
    ("x // d when 0 <= x < d", E.FloorDiv(j, c(16)), c(0)),
    ("x % d when 0 <= x < d", E.FloorMod(E.Add(i, c(4)), c(8)), E.Add(i, c(4))),
    ("lanes in one block shift", E.FloorDiv(E.Add(j, c(32)), c(16)), c(2)),
    ("i*4 // 4", E.FloorDiv(E.Mul(u, c(4)), c(4)), u),
    ("(u*4 + 2) % 2", E.FloorMod(E.Add(E.Mul(u, c(4)), c(2)), c(2)), c(0)),
    ("pull the multiple out of //", E.FloorDiv(E.Add(E.Mul(i, c(16)), u), c(16)),
     E.Add(i, E.FloorDiv(u, c(16)))),
    ("pull the multiple out of %", E.FloorMod(E.Add(E.Mul(i, c(16)), u), c(16)),
     E.FloorMod(u, c(16))),
    ("(x // c1) // c2", E.FloorDiv(E.FloorDiv(u, c(4)), c(8)), E.FloorDiv(u, c(32))),
    ("(x % c1) % c2 when c2 divides c1", E.FloorMod(E.FloorMod(u, c(16)), c(4)),
     E.FloorMod(u, c(4))),
    ("keep (x % 6) % 4", E.FloorMod(E.FloorMod(u, c(6)), c(4)),
     E.FloorMod(E.FloorMod(u, c(6)), c(4))),
    ("x // 1", E.FloorDiv(u, c(1)), u),
    ("x % 1", E.FloorMod(u, c(1)), c(0)),
    ("keep // by a negative constant", E.FloorDiv(u, c(-4)), E.FloorDiv(u, c(-4))),
    ("truncating div of a non-negative", E.Div(E.Add(E.Mul(i, c(4)), k), c(4)), i),
    ("keep truncating div of unknown sign", E.Div(u, c(4)), E.Div(u, c(4))),
    ("int8: no bound rules where it may wrap", E.FloorDiv(E.Mul(b8, c(4, "int8")), c(4, "int8")),
     E.FloorDiv(E.Mul(b8, c(4, "int8")), c(4, "int8"))),
    # -- conditions proven by the ranges
    ("guard i*4 + k < 16 is true", E.LT(E.Add(E.Mul(i, c(4)), k), c(16)), TRUE),
    ("keep guard i*4 + k < 15", E.LT(E.Add(E.Mul(i, c(4)), k), c(15)),
     E.LT(E.Add(E.Mul(i, c(4)), k), c(15))),
    ("i < 0 is false", E.LT(i, c(0)), FALSE),
    ("i >= 0 is true", E.GE(i, c(0)), TRUE),
    ("u + 1 > u", E.GT(E.Add(u, c(1)), u), TRUE),
    ("u == u for ints", E.EQ(u, u), TRUE),
    ("i != 5", E.NE(i, c(5)), TRUE),
    ("!(a < b) for ints", E.Not(E.LT(i, j)), E.GE(i, j)),
    ("!!p", E.Not(E.Not(p)), p),
    ("true && p", E.And(TRUE, p), p),
    ("p && false", E.And(p, FALSE), FALSE),
    ("p || true", E.Or(p, TRUE), TRUE),
    ("p && p", E.And(p, p), p),
    # -- min / max with known bounds
    ("min(i, 16) -> i", E.Min(i, c(16)), i),
    ("max(i*4 + k, 15) -> 15", E.Max(E.Add(E.Mul(i, c(4)), k), c(15)), c(15)),
    ("min(u + 1, u + 3)", E.Min(E.Add(u, c(1)), E.Add(u, c(3))), E.Add(u, c(1))),
    ("keep min(i, j)", E.Min(i, j), E.Min(i, j)),
    ("keep float min", E.Min(x, fc(1.0)), E.Min(x, fc(1.0))),
    # -- select and let
    ("select(true, a, b)", E.Select(TRUE, x, y), x),
    ("select(c, a, a)", E.Select(p, x, x), x),
    ("select on a proven condition", E.Select(E.LT(i, c(10)), x, y), x),
    ("let of a constant", E.Let(u, c(3), E.Add(u, i)), E.Add(i, c(3))),
    ("dead let", E.Let(u, i, x), x),
    # -- vectors
    ("ramp + broadcast", E.Add(E.Ramp(E.Mul(i, c(4)), c(1), 4), bc(c(2))),
     E.Ramp(E.Add(E.Mul(i, c(4)), c(2)), c(1), 4)),
    ("ramp * broadcast", E.Mul(E.Ramp(i, c(1), 4), bc(c(3))),
     E.Ramp(E.Mul(i, c(3)), c(3), 4)),
    ("broadcast op broadcast", E.Add(bc(c(2)), bc(c(3))), bc(c(5))),
    ("ramp of stride 0", E.Ramp(i, c(0), 4), bc(i)),
    ("ramp // d within one block", E.FloorDiv(E.Ramp(E.Mul(i, c(16)), c(1), 16), bc(c(16), 16)),
     bc(i, 16)),
    ("ramp % d within one block", E.FloorMod(E.Ramp(E.Mul(i, c(16)), c(1), 16), bc(c(16), 16)),
     E.Ramp(c(0), c(1), 16)),
    ("ramp // d by whole blocks", E.FloorDiv(E.Ramp(E.Add(E.Mul(u, c(8)), k), c(8), 4),
                                             bc(c(8))),
     E.Ramp(u, c(1), 4)),
    ("keep ramp // d across blocks", E.FloorDiv(E.Ramp(j, c(1), 4), bc(c(16))),
     E.FloorDiv(E.Ramp(j, c(1), 4), bc(c(16)))),
    ("vector guard proven", E.LT(E.Ramp(E.Mul(i, c(4)), c(1), 4), bc(c(16))), bc(TRUE)),
    ("keep vector guard", E.LT(E.Ramp(E.Mul(i, c(4)), c(1), 4), bc(c(15))),
     E.LT(E.Ramp(E.Mul(i, c(4)), c(1), 4), bc(c(15)))),
    ("cast of broadcast", E.Cast("float32x4", bc(c(2))), bc(fc(2.0))),
]


@pytest.mark.parametrize("before, expected", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_simplifier_rule(before, expected):
    after = simplify(before, BOUNDS)
    assert after == expected, f"{before}  ->  {after}  (expected {expected})"
    assert after.dtype == before.dtype
    assert simplify(after, BOUNDS) == after  # canonical forms are fixed points


def test_load_predicates():
    A = L.Buffer("A", (16,), "float32")
    at = E.Ramp(E.Mul(i, c(4)), c(1), 4)  # i in [0, 3]: lanes 0..15
    assert simplify(L.Load(A, (at,), bc(TRUE)), BOUNDS) == L.Load(A, (at,))
    mask = E.LT(E.Ramp(j, c(1), 4), bc(c(10)))
    # Every lane is inside A whatever the mask says: the predicate goes.
    assert simplify(L.Load(A, (at,), mask), BOUNDS) == L.Load(A, (at,))
    # Lanes may leave A (j + 3 up to 18): the predicate stays.
    beyond = L.Load(A, (E.Ramp(j, c(1), 4),), mask)
    assert simplify(beyond, BOUNDS) == beyond
    # A broadcast-index load is a scalar load broadcast, once nothing masks it.
    assert simplify(L.Load(A, (bc(E.Add(i, c(8))),), mask), BOUNDS) == bc(
        L.Load(A, (E.Add(i, c(8)),)))
    unknown = L.Load(A, (bc(u),), mask)
    assert simplify(unknown, BOUNDS) == unknown


def test_interval_analysis():
    analysis = IntervalAnalysis({i: Interval(0, 3), j: Interval(0, 15)})
    assert analysis.bound(i * 16 + j) == Interval(0, 63)
    assert analysis.bound(i - j) == Interval(-15, 3)
    assert analysis.bound(E.FloorMod(u, c(8))) == Interval(0, 7)
    assert analysis.bound(E.FloorDiv(j, c(4))) == Interval(0, 3)
    assert analysis.bound(E.min_(i, u)) == Interval(None, 3)
    assert analysis.bound(E.Ramp(i, c(2), 4)) == Interval(0, 9)
    assert analysis.bound(u) == Interval(None, None)  # int64 symbols are unbounded
    assert analysis.bound(b8) == Interval(-128, 127)
    assert analysis.bound(E.Cast("int8", i * 100)) == Interval(-128, 127)  # may wrap


def test_linear_form_keeps_first_appearance_order():
    terms, constant = linear_form(E.Add(E.Sub(E.Add(j, c(3)), E.Mul(i, c(2))), j))
    assert list(terms.items()) == [(j, 2), (i, -2)] and constant == 3


# ----------------------------------------------------------------------------- statements

A = L.Buffer("A", (16,), "float32")
B = L.Buffer("B", (16,), "float32")


def store(index, value=None):
    return L.Store(B, (index,), A.load(index) if value is None else value)


def test_loop_of_extent_one_becomes_its_body():
    before = L.loop(i, 4, L.For(j, c(2), c(1), F.VECTORIZED, store(i * 4 + j)))
    assert simplify(before) == L.loop(i, 4, store(E.Add(E.Mul(i, c(4)), c(2))))


def test_thread_binding_of_extent_one_stays():
    before = L.loop(i, 1, store(i), F.THREAD_BINDING, thread_tag="threadIdx.x")
    assert simplify(before) == before


def test_loops_of_extent_zero_and_dead_bodies_disappear():
    assert simplify(L.loop(i, 0, store(i))) == NOP
    dead = L.loop(i, 4, L.IfThenElse(E.LT(i, c(0)), store(i)))
    assert simplify(dead) == NOP
    before = L.seq(store(c(0)), dead, store(c(1)))
    assert simplify(before) == L.seq(store(c(0)), store(c(1)))


def test_provably_true_guard_is_removed():
    guarded = L.IfThenElse(E.LT(i * 4 + k, c(16)), store(i * 4 + k))
    before = L.loop(i, 4, L.loop(k, 4, guarded))
    assert simplify(before) == L.loop(i, 4, L.loop(k, 4, store(i * 4 + k)))


def test_guard_that_may_fail_stays():
    guarded = L.IfThenElse(E.LT(i * 4 + k, c(10)), store(i * 4 + k))
    before = L.loop(i, 3, L.loop(k, 4, guarded))
    assert simplify(before) == before


def test_loop_bounds_with_a_non_zero_start():
    guarded = L.IfThenElse(E.GE(i, c(2)), store(i), store(c(0)))
    before = L.For(i, c(2), c(6), F.SERIAL, guarded)
    assert simplify(before) == L.For(i, c(2), c(6), F.SERIAL, store(i))


def test_dead_branches():
    then_case, else_case = store(c(1)), store(c(2))
    assert simplify(L.IfThenElse(FALSE, then_case, else_case)) == else_case
    assert simplify(L.IfThenElse(TRUE, then_case, else_case)) == then_case
    assert simplify(L.IfThenElse(FALSE, then_case)) == NOP
    flipped = L.IfThenElse(E.LT(u, c(3)), NOP, else_case)
    assert simplify(flipped) == L.IfThenElse(E.GE(u, c(3)), else_case)


def test_let_of_a_constant_is_propagated_and_others_bound():
    before = L.LetStmt(u, c(5), store(u + i))
    assert simplify(L.loop(i, 4, before)) == L.loop(i, 4, store(E.Add(i, c(5))))
    # A let of a bounded value gives its bounds to the body.
    bounded = L.LetStmt(u, i * 2, L.IfThenElse(E.LT(u, c(8)), store(u)))
    assert simplify(L.loop(i, 4, bounded)) == L.loop(i, 4, L.LetStmt(u, E.Mul(i, c(2)),
                                                                        store(u)))


def test_store_predicates():
    assert simplify(L.Store(B, (c(0),), fc(1.0), TRUE)) == L.Store(B, (c(0),), fc(1.0))
    assert simplify(L.Store(B, (c(0),), fc(1.0), FALSE)) == NOP


def test_simplify_keeps_allocations_and_pragmas():
    T = L.Buffer("T", (4,), "float32", "local")
    body = L.AttrStmt("pragma_auto_unroll_max_step", c(16),
                      L.Allocate(T, L.loop(i, 4, L.Store(T, (E.Add(i, c(0)),), fc(0.0)))))
    func = L.PrimFunc("f", (A, B), body)
    expected = L.AttrStmt("pragma_auto_unroll_max_step", c(16),
                          L.Allocate(T, L.loop(i, 4, L.Store(T, (i,), fc(0.0)))))
    assert simplify(func) == func.with_body(expected)


# ----------------------------------------------------------------------------- semantics


def _int_exprs(dtype):
    """Integer expressions over i, j (loop variables) and constants."""
    def cast(e):
        return e if dtype == "int64" else E.Cast(dtype, e)

    leaves = st.one_of(st.sampled_from([cast(i), cast(j)]),
                       st.integers(-20, 20).map(lambda v: c(v, dtype)))
    divisors = st.sampled_from([-4, -3, -1, 1, 2, 3, 4, 8, 16]).map(lambda v: c(v, dtype))

    def extend(children):
        binary = st.sampled_from([E.Add, E.Sub, E.Min, E.Max])
        compare = st.sampled_from([E.LT, E.LE, E.EQ, E.NE, E.GE, E.GT])
        return st.one_of(
            st.builds(lambda op, a, b: op(a, b), binary, children, children),
            st.builds(E.Mul, children, st.integers(-5, 5).map(lambda v: c(v, dtype))),
            st.builds(E.Mul, children, children),
            st.builds(lambda op, a, d: op(a, d), st.sampled_from([E.FloorDiv, E.FloorMod]),
                      children, divisors),
            st.builds(lambda a, d: E.Div(a, d), children, divisors),
            st.builds(lambda op, a, b, t, e: E.Select(op(a, b), t, e),
                      compare, children, children, children, children),
        )

    return st.recursive(leaves, extend, max_leaves=10)


@st.composite
def _functions(draw):
    dtype = draw(st.sampled_from(["int64", "int64", "int32", "int8"]))
    expr = draw(_int_exprs(dtype))
    start_i, extent_i = draw(st.integers(-3, 3)), draw(st.integers(1, 4))
    start_j, extent_j = draw(st.integers(-3, 3)), draw(st.integers(1, 5))
    out = L.Buffer("out", (extent_i, extent_j), "int64")
    value = expr if dtype == "int64" else E.Cast("int64", expr)
    body = L.For(i, c(start_i), c(extent_i), F.SERIAL,
                 L.For(j, c(start_j), c(extent_j), F.SERIAL,
                       L.Store(out, (i - start_i, j - start_j), value)))
    return L.PrimFunc("f", (out,), body)


def _run(func):
    out = np.zeros(tuple(func.params[0].shape), np.int64)
    with np.errstate(all="ignore"):
        run_primfunc(func, [out])
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_functions())
def test_simplify_preserves_semantics(func):
    simplified = verify_primfunc(simplify(func))
    np.testing.assert_array_equal(_run(simplified), _run(func), err_msg=f"{func}\n{simplified}")


_KINDS = [F.SERIAL, F.VECTORIZED, F.UNROLLED, F.PARALLEL]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_functions(), st.sampled_from(_KINDS), st.sampled_from(_KINDS))
def test_pipeline_preserves_semantics_of_random_expressions(func, outer_kind, inner_kind):
    # The same expressions with the loops vectorized or unrolled: exercises the vector forms of
    # every operator, and the simplifier on ramps and broadcasts.
    inner = dataclasses.replace(func.body.body, kind=inner_kind)
    func = func.with_body(dataclasses.replace(func.body, kind=outer_kind, body=inner))
    after = run_pipeline(func)
    np.testing.assert_array_equal(_run(after).reshape(-1), _run(func).reshape(-1),
                                  err_msg=f"{func}\n{after}")


@st.composite
def _fused_chains(draw):
    """The flat index of a loop fused from 2 to 4 axes, `sum((x // stride) % size * stride)`
    (the outermost term `(x // stride) * stride`, or left out), in a random term order and
    times a random multiplier; with what it must simplify to."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    with_outer = draw(st.booleans())
    scale = draw(st.sampled_from([1, 1, 2, -3]))
    terms, stride = [], 1
    for position, size in enumerate(reversed(sizes)):
        quotient = u if stride == 1 else fd(u, stride)
        if position == len(sizes) - 1 and with_outer:
            terms.append(mul(quotient, stride * scale))
        else:
            terms.append(mul(fm(quotient, size), stride * scale))
        stride *= size
    order = draw(st.permutations(terms))
    merged = u if with_outer else fm(u, stride)
    return add(*order), merged if scale == 1 else mul(merged, scale)


@settings(max_examples=150, deadline=None)
@given(_fused_chains(), st.integers(-200, 100))
def test_fused_div_mod_chains_collapse_exactly(chain, start):
    before, merged = chain
    # Structurally, for an x of unknown sign ...
    assert simplify(simplify(before) - merged) == c(0), f"{before} -> {simplify(before)}"
    # ... and by value, through the interpreter, for a loop over negative and positive x.
    out = L.Buffer("out", (2, 128), "int64")
    body = L.For(u, c(start), c(128), F.SERIAL, L.seq(
        L.Store(out, (c(0), u - start), before), L.Store(out, (c(1), u - start), merged)))
    func = L.PrimFunc("f", (out,), body)
    expected = _run(func)
    np.testing.assert_array_equal(expected[0], expected[1])
    np.testing.assert_array_equal(_run(verify_primfunc(simplify(func))), expected)


@pytest.mark.parametrize("shape", [(4, 8, 64), (4, 7, 56), (3, 5, 7), (2, 3, 4, 5)])
def test_fusing_three_or_more_axes_vectorizes(shape):
    # The fused loop's flat index must collapse back to the loop variable for the store to be a
    # contiguous ramp; (3, 5, 7) and (2, 3, 4, 5) leave a guarded (masked) tail.
    A = te.placeholder(shape, "float32", "A")
    B = te.compute(shape, lambda *index: A[index] * 2.0, name="B")
    s = create_schedule(B)
    fused = s[B].fuse(*s[B].op.axis)
    _, inner = s[B].split(fused, factor=16)
    s[B].vectorize(inner)
    func = run_pipeline(lower(s, [A, B], "k"))
    stores = collect(func.body, L.Store)
    assert len(stores) == 1, func
    (index,) = stores[0].indices
    assert isinstance(index, E.Ramp) and index.stride == c(1) and index.lanes == 16, func
    a = np.arange(math.prod(shape), dtype=np.float32)
    b = np.zeros_like(a)
    run_primfunc(func, [a, b])
    np.testing.assert_array_equal(b, a * 2)


_FLOAT_CONSTANTS = [0.0, -0.0, 1.0, -1.0, 0.1, 3.5, math.inf, -math.inf, math.nan, 1e30]
_X, _Y = L.Buffer("X", (8,), "float32"), L.Buffer("Y", (8,), "float32")


def _float_exprs():
    leaves = st.one_of(st.sampled_from(_FLOAT_CONSTANTS).map(fc), st.just(_X.load(E.Var("v"))))

    def extend(children):
        return st.one_of(
            st.builds(lambda op, a, b: op(a, b),
                      st.sampled_from([E.Add, E.Sub, E.Mul, E.Div, E.Min, E.Max]),
                      children, children),
            st.builds(lambda op, a, b, t, e: E.Select(E.Not(op(a, b)), t, e),
                      st.sampled_from([E.LT, E.EQ, E.NE, E.GE]),
                      children, children, children, children),
            st.builds(lambda name, a: E.Call(name, (a,), "float32"),
                      st.sampled_from(["fabs", "sqrt", "floor", "exp"]), children),
        )

    return st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_float_exprs(), st.sampled_from([F.SERIAL, F.VECTORIZED]))
def test_float_results_are_bit_identical(value, kind):
    # Signed zeros, NaN and infinities in the data and the constants: folding must not change a
    # single bit (NaN payloads aside).
    v = E.Var("v")
    func = L.PrimFunc("f", (_X, _Y), L.For(v, c(0), c(8), kind, _Y.store(v, value)))
    x = np.array([0.0, -0.0, 1.5, -2.25, np.nan, np.inf, -np.inf, 7.0], np.float32)
    outputs = []
    for f in (func, run_pipeline(func)):
        y = np.zeros(8, np.float32)
        with np.errstate(all="ignore"):
            run_primfunc(f, [x, y])
        outputs.append(y)
    nan = np.isnan(outputs[0])
    assert np.array_equal(nan, np.isnan(outputs[1]))
    assert outputs[0][~nan].tobytes() == outputs[1][~nan].tobytes()

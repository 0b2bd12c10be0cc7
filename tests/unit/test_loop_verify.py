"""The loop-IR verifier (ember.ir.passes.verify_primfunc): well-formed functions pass, and each
broken invariant raises IRError with its own message and the function printed."""

import pytest

from ember.errors import IRError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.passes import verify_primfunc

F = L.ForKind
i, j, n = E.Var("i"), E.Var("j"), E.Var("n")
A = L.Buffer("A", (4, 8), "float32")
B = L.Buffer("B", (32,), "float32")
I = L.Buffer("I", (32,), "int32")
S = L.Buffer("S", (n,), "float32")
ZERO = E.FloatImm(0.0)


def c(value, dtype="int64"):
    return E.IntImm(value, dtype)


def func(body, *params):
    return L.PrimFunc("kernel", params or (A, B), body)


def nest(body):
    return L.loop(i, 4, L.loop(j, 8, body))


GOOD = {
    "lowered": func(nest(B.store(i * 8 + j, A.load(i, j)))),
    "vector with predicate": func(L.loop(i, 4, L.Store(
        B, (E.Ramp(i * 8, c(1), 8),), L.Load(B, (E.Ramp(i * 8, c(1), 8),)),
        E.LT(E.Ramp(i * 8, c(1), 8), E.Broadcast(c(30), 8))))),
    "allocate and let": func(L.loop(i, 4, L.Allocate(
        L.Buffer("T", (8,), "float32", "local"), L.LetStmt(n, i * 2, B.store(n, A.load(i, n)))))),
    "symbolic shape": L.PrimFunc("kernel", (S,), L.loop(i, n, S.store(i, ZERO))),
    "thread binding": func(L.loop(i, 32, B.store(i, ZERO), F.THREAD_BINDING,
                                  thread_tag="threadIdx.x")),
    "sibling scopes reuse a name": func(L.seq(L.loop(i, 4, B.store(i, ZERO)),
                                              L.loop(i, 4, B.store(i, E.FloatImm(1.0))))),
    "tensor intrinsic": func(L.Evaluate(E.Call("vta.gemm", (c(0), c(1)), "int32"))),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_well_formed_functions_pass(name):
    assert verify_primfunc(GOOD[name]) is GOOD[name]


BAD = {
    "undefined variable": (func(L.loop(i, 4, B.store(j, ZERO))),
                           "variable j is used outside the scope that binds it"),
    "loop variable shadowed": (func(L.loop(i, 4, L.loop(i, 8, B.store(i, ZERO)))),
                               "loop variable i is already bound"),
    "let variable shadows a loop": (func(L.loop(i, 4, L.LetStmt(i, c(1), B.store(
        i, ZERO)))), "let variable i is already bound"),
    "variable used after its loop": (func(L.seq(L.loop(i, 4, B.store(i, ZERO)),
                                                B.store(i, E.FloatImm(1.0)))),
                                     "variable i is used outside"),
    "variable typed differently": (func(L.loop(i, 4, B.store(E.Cast("int64", E.Var("i", "int32")),
                                                             ZERO))),
                                   "variable i is used as int32 but bound as int64"),
    "unknown buffer": (func(L.loop(i, 4, L.Buffer("Z", (4,), "float32").store(
        i, ZERO))), "buffer Z is neither a parameter nor allocated"),
    "buffer used outside its allocate": (func(L.seq(
        L.Allocate(L.Buffer("T", (4,), "float32"), L.Evaluate(c(0))),
        L.loop(i, 4, L.Buffer("T", (4,), "float32").store(i, ZERO)))),
        "buffer T is neither a parameter nor allocated"),
    "stale buffer shape": (func(L.loop(i, 4, L.Buffer("B", (4, 8), "float32").store(
        (i, c(0)), ZERO))), "buffer B is used as B: Buffer[float32, (4, 8)] but "
                                       "declared as B: Buffer[float32, (32)]"),
    "buffer declared twice": (func(L.Allocate(B, L.Evaluate(c(0)))), "buffer B is declared twice"),
    "index count": (func(L.loop(i, 4, B.store((i, i), ZERO))),
                    "B has 1 dimensions but is indexed with 2 indices"),
    "index dtype": (func(L.loop(i, 4, B.store(E.Cast("int32", i), ZERO))),
                    "index int32(i) of B is int32, not int64"),
    "store dtype": (func(L.loop(i, 4, B.store(i, c(1, "int32")))),
                    "value stored into B is int32, expected float32"),
    "store lanes": (func(L.Store(B, (E.Ramp(c(0), c(1), 4),), ZERO)),
                    "value stored into B is float32, expected float32x4"),
    "predicate lanes": (func(L.Store(B, (E.Ramp(c(0), c(1), 4),), E.Broadcast(ZERO, 4),
                                     c(1, "bool"))), "predicate True is bool, expected boolx4"),
    "index lanes disagree": (func(L.Store(A, (E.Ramp(c(0), c(1), 4), E.Ramp(c(0), c(1), 8)),
                                          E.Broadcast(ZERO, 4))),
                             "indices of A have different lanes: [4, 8]"),
    "binary operand dtypes": (func(L.loop(i, 4, I.store(i, E.Add(I.load(i), c(1)))), I),
                              "operands of Add disagree"),
    "loop extent dtype": (func(L.For(i, c(0), c(4, "int32"), F.SERIAL, B.store(i, ZERO))),
                          "the extent of the loop over i must be a scalar int64"),
    "loop variable dtype": (func(L.For(E.Var("i", "int32"), c(0), c(4), F.SERIAL,
                                       B.store(0, ZERO))),
                            "loop variable i is int32, not int64"),
    "if condition": (func(L.loop(i, 4, L.IfThenElse(i, B.store(i, ZERO)))),
                     "an if condition must be a scalar bool, got int64"),
    "let dtype": (func(L.LetStmt(n, E.FloatImm(1.0), L.Evaluate(c(0)))),
                  "let n is int64 but its value is float32"),
    "select condition lanes": (func(L.Store(B, (E.Ramp(c(0), c(1), 4),), E.Select(
        c(1, "bool"), E.Broadcast(ZERO, 4), E.Broadcast(E.FloatImm(1.0), 4)))),
        "select condition is bool, expected boolx4"),
    "ramp of floats": (func(L.Evaluate(E.Ramp(ZERO, E.FloatImm(1.0), 4))),
                       "ramp needs scalar integer base and stride"),
    "broadcast of a vector": (func(L.Evaluate(E.Broadcast(E.Ramp(c(0), c(1), 4), 4))),
                              "broadcast needs a scalar value"),
    "cast changes lanes": (func(L.Evaluate(E.Cast("float32x8", E.Ramp(c(0), c(1), 4)))),
                           "cast to float32x8 from int64x4 changes the lanes"),
    "intrinsic arity": (func(L.Evaluate(E.Call("exp", (ZERO, ZERO),
                                               "float32"))), "intrinsic exp takes 1 arguments"),
    "thread binding without tag": (func(L.loop(i, 4, L.Evaluate(c(0)), F.THREAD_BINDING)),
                                   "thread-bound loop over i has no thread_tag"),
    "not a loop-IR expression": (func(L.Evaluate(E.Not(c(1)))), "Not of a non-bool operand"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_broken_invariant_is_reported(name):
    bad, message = BAD[name]
    with pytest.raises(IRError) as info:
        verify_primfunc(bad)
    text = str(info.value)
    assert message in text, text
    assert text.startswith("invalid loop IR in 'kernel'")
    assert "def kernel(" in text  # the function is printed


def test_flattened_requires_one_dimensional_buffers():
    lowered = GOOD["lowered"]
    verify_primfunc(lowered, flattened=False)
    with pytest.raises(IRError, match=r"buffer A has shape \(4, 8\) after flattening"):
        verify_primfunc(lowered, flattened=True)


def test_final_form_has_no_vectorized_or_unrolled_loops():
    for kind in (F.VECTORIZED, F.UNROLLED):
        bad = func(L.loop(i, 4, B.store(i, ZERO), kind), B)
        verify_primfunc(bad)
        with pytest.raises(IRError, match=f"a {kind.value} loop over i is left in the final form"):
            verify_primfunc(bad, flattened=True, final=True)


def test_message_points_at_the_statement():
    bad = func(nest(B.store(i * 8 + j, A.load(i, j, j))))
    with pytest.raises(IRError, match=r"(?s)A has 2 dimensions.*at: B\[\(\(i \* 8\) \+ j\)\]"):
        verify_primfunc(bad)

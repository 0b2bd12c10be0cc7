"""Loop-IR passes (ember.ir.passes): storage flattening, vectorization, unrolling and the
standard pipeline, tested as Before/Expected loop IR compared structurally, including what must
NOT be vectorized or unrolled; plus semantic checks: the interpreter gives the same outputs
before and after every pass on hand-made kernels and on Hypothesis-made affine accesses.
(The simplifier has its own file, test_loop_simplify.py; the verifier test_loop_verify.py.)"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.interpreter import run_primfunc
from ember.ir.passes import (
    NOP,
    PIPELINE,
    flatten_storage,
    run_pipeline,
    simplify,
    unroll,
    vectorize,
    verify_primfunc,
    why_not_vectorizable,
)

F = L.ForKind
i, j, k, v, f, n = (E.Var(name) for name in ("i", "j", "k", "v", "f", "n"))
io, ii = E.Var("i.outer"), E.Var("i.inner")


def c(value, dtype="int64"):
    return E.IntImm(value, dtype)


def fc(value, dtype="float32"):
    return E.FloatImm(value, dtype)


def ramp(base, lanes, stride=1):
    return E.Ramp(base, c(stride), lanes)


def bc(value, lanes):
    return E.Broadcast(value, lanes)


def buf(name, *shape, dtype="float32", scope="global"):
    return L.Buffer(name, shape, dtype, scope)


def func(body, *params):
    return L.PrimFunc("kernel", params, body)


# ----------------------------------------------------------------------------- flatten


def test_flatten_two_dimensional():
    A, B = buf("A", 4, 8), buf("B", 4, 8)
    before = func(L.loop(i, 4, L.loop(j, 8, B.store((i, j), A.load(i, j)))), A, B)
    A1, B1 = buf("A", 32), buf("B", 32)
    index = E.Add(E.Mul(i, c(8)), j)
    expected = func(L.loop(i, 4, L.loop(j, 8, L.Store(B1, (index,), L.Load(A1, (index,))))),
                    A1, B1)
    assert flatten_storage(before) == expected
    verify_primfunc(expected, flattened=True)


def test_flatten_three_dimensional_and_local_allocate():
    A = buf("A", 2, 3, 4)
    T = buf("T", 3, 4, scope="local")
    body = L.Allocate(T, L.loop(j, 3, L.loop(k, 4, T.store((j, k), A.load(i, j, k)))))
    before = func(L.loop(i, 2, body), A)
    A1, T1 = buf("A", 24), buf("T", 12, scope="local")
    a_index = E.Add(E.Add(E.Mul(i, c(12)), E.Mul(j, c(4))), k)
    t_index = E.Add(E.Mul(j, c(4)), k)
    expected = func(L.loop(i, 2, L.Allocate(T1, L.loop(j, 3, L.loop(k, 4, L.Store(
        T1, (t_index,), L.Load(A1, (a_index,))))))), A1)
    assert flatten_storage(before) == expected


def test_flatten_keeps_predicates_and_is_idempotent():
    A, B = buf("A", 2, 8), buf("B", 16)
    guard = E.LT(j, c(5))
    before = func(L.loop(i, 2, L.loop(j, 8, L.Store(B, (i * 8 + j,), L.Load(A, (i, j), guard),
                                                    guard))), A, B)
    once = flatten_storage(before)
    load = once.body.body.body.value
    assert load.predicate == guard and len(load.indices) == 1 and load.buffer.shape == (16,)
    assert flatten_storage(once) == once


def test_flatten_scalar_buffer():
    S, B = buf("S"), buf("B", 4)
    before = func(L.loop(i, 4, B.store(i, S.load())), S, B)
    assert flatten_storage(before) == func(
        L.loop(i, 4, B.store(i, L.Load(buf("S", 1), (c(0),)))), buf("S", 1), B)


def test_flatten_then_simplify_undoes_a_fused_loop():
    A, B = buf("A", 4, 16), buf("B", 4, 16)
    before = func(L.loop(f, 64, B.store((f // 16, f % 16), A.load(f // 16, f % 16))), A, B)
    A1, B1 = buf("A", 64), buf("B", 64)
    expected = func(L.loop(f, 64, L.Store(B1, (f,), L.Load(A1, (f,)))), A1, B1)
    assert simplify(flatten_storage(before)) == expected


# ----------------------------------------------------------------------------- vectorize

A16, B16, C16 = buf("A", 16), buf("B", 16), buf("C", 16)


def vloop(body, extent=8, start=0, var=v):
    return L.For(var, c(start), c(extent), F.VECTORIZED, body)


def test_vectorize_elementwise():
    body = B16.store(i * 8 + v, A16.load(i * 8 + v) * fc(2.0))
    before = func(L.loop(i, 2, vloop(body)), A16, B16)
    index = ramp(E.Mul(i, c(8)), 8)
    expected = func(L.loop(i, 2, L.Store(B16, (index,), E.Mul(L.Load(A16, (index,)),
                                                               bc(fc(2.0), 8)))), A16, B16)
    assert vectorize(before) == expected


def test_vectorize_strided_offset_and_gather_loads():
    body = B16.store(v, A16.load(v * 2) + A16.load(v // 2) + A16.load(c(3)))
    before = func(vloop(body, start=0), A16, B16)
    gather = L.Load(A16, (E.FloorDiv(ramp(c(0), 8), bc(c(2), 8)),))
    value = E.Add(E.Add(L.Load(A16, (ramp(c(0), 8, 2),)), gather), bc(A16.load(c(3)), 8))
    assert vectorize(before) == func(L.Store(B16, (ramp(c(0), 8),), value), A16, B16)
    shifted = func(vloop(B16.store(v - 2, A16.load(v)), extent=4, start=2), A16, B16)
    assert vectorize(shifted) == func(
        L.Store(B16, (ramp(c(0), 4),), L.Load(A16, (ramp(c(2), 4),))), A16, B16)


def test_vectorize_select_cast_call_compare():
    I = buf("I", 16, dtype="int32")
    value = E.select(E.LT(A16.load(v), fc(0.0)), E.Call("exp", (A16.load(v),), "float32"),
                     E.Cast("float32", I.load(v)))
    before = func(vloop(B16.store(v, value), extent=4), A16, I, B16)
    a = L.Load(A16, (ramp(c(0), 4),))
    expected_value = E.Select(E.LT(a, bc(fc(0.0), 4)), E.Call("exp", (a,), "float32x4"),
                              E.Cast("float32x4", L.Load(I, (ramp(c(0), 4),))))
    assert vectorize(before) == func(L.Store(B16, (ramp(c(0), 4),), expected_value), A16, I, B16)


def test_vectorize_guard_becomes_predicate():
    index = io * 4 + ii
    body = L.IfThenElse(E.LT(index, c(10)), B16.store(index, A16.load(index) + A16.load(io)))
    before = func(L.loop(io, 3, vloop(body, extent=4, var=ii)), A16, B16)
    lanes = ramp(E.Mul(io, c(4)), 4)
    mask = E.LT(lanes, bc(c(10), 4))
    # The loop-invariant load A[i.outer] becomes a masked broadcast load too.
    value = E.Add(L.Load(A16, (lanes,), mask), L.Load(A16, (bc(io, 4),), mask))
    expected = func(L.loop(io, 3, L.Store(B16, (lanes,), value, mask)), A16, B16)
    assert vectorize(before) == expected


def test_vectorize_guard_with_else_and_invariant_if():
    guarded = L.IfThenElse(E.LT(v, c(2)), B16.store(v, fc(1.0)), B16.store(v, fc(2.0)))
    invariant = L.IfThenElse(E.LT(i, c(1)), guarded)
    before = func(L.loop(i, 2, vloop(invariant, extent=4)), B16)
    mask = E.LT(ramp(c(0), 4), bc(c(2), 4))
    expected = L.IfThenElse(E.LT(i, c(1)), L.seq(
        L.Store(B16, (ramp(c(0), 4),), bc(fc(1.0), 4), mask),
        L.Store(B16, (ramp(c(0), 4),), bc(fc(2.0), 4), E.Not(mask))))
    assert vectorize(before) == func(L.loop(i, 2, expected), B16)


def test_vectorize_matmul_inner_loop():
    A, B, C = buf("A", 4, 8), buf("B", 8, 16), buf("C", 4, 16)
    update = C.store((i, j), C.load(i, j) + A.load(i, k) * B.load(k, j))
    before = func(L.loop(i, 4, L.loop(k, 8, vloop(update, extent=16, var=j))), A, B, C)
    c_at = (bc(i, 16), ramp(c(0), 16))
    value = E.Add(L.Load(C, c_at), E.Mul(bc(A.load(i, k), 16), L.Load(B, (bc(k, 16),
                                                                           ramp(c(0), 16)))))
    expected = func(L.loop(i, 4, L.loop(k, 8, L.Store(C, c_at, value))), A, B, C)
    assert vectorize(before) == expected


def serial(loop):
    return dataclasses.replace(loop, kind=F.SERIAL)


FALLBACKS = {
    # name: (vectorized loop, part of the reason)
    "reduction into one element": (
        vloop(L.Store(buf("C", 4), (i,), buf("C", 4).load(i) + buf("A", 4, 8).load(i, v))),
        "does not depend on v (a reduction"),
    "inner loop": (vloop(L.loop(k, 2, B16.store(v, A16.load(k)))), "inner loop over k"),
    "let inside": (vloop(L.LetStmt(n, v * 2, B16.store(v, A16.load(n)))), "LetStmt"),
    "allocate inside": (vloop(L.Allocate(buf("T", 1), B16.store(v, fc(0.0)))), "Allocate"),
    "data-dependent branch": (
        vloop(L.IfThenElse(E.LT(A16.load(v), fc(0.0)), B16.store(v, fc(0.0)))),
        "data-dependent branch"),
    "non-constant extent": (L.For(v, c(0), n, F.VECTORIZED, B16.store(v, fc(0.0))),
                            "not a constant"),
    "dependence between iterations": (vloop(A16.store(v + 1, A16.load(v) + fc(1.0))),
                                      "dependence between iterations"),
    "read after a write elsewhere": (
        vloop(L.seq(B16.store(v, fc(0.0)), C16.store(v, B16.load(v + 1)))), "B is written"),
    "scatter store": (vloop(B16.store(v // 2, fc(0.0))), "would scatter"),
    "integer division by a variable under a guard": (
        vloop(L.IfThenElse(E.LT(v, c(3)), L.Store(buf("I", 8, dtype="int32"), (v,), E.FloorDiv(
            buf("I", 8, dtype="int32").load(v), buf("J", 8, dtype="int32").load(v))))),
        "division by a variable"),
    "let expression": (vloop(B16.store(v, E.Let(n, v, E.Cast("float32", n)))), "Let"),
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_vectorize_falls_back_to_a_serial_loop(name):
    loop, reason = FALLBACKS[name]
    assert reason in why_not_vectorizable(loop)
    before = L.PrimFunc("kernel", (), L.loop(i, 2, loop))
    assert vectorize(before) == before.with_body(L.loop(i, 2, serial(loop)))


def test_vectorize_inner_first_then_outer_falls_back():
    inner = vloop(B16.store(i * 4 + v, fc(0.0)), extent=4)
    before = func(L.For(i, c(0), c(4), F.VECTORIZED, inner), B16)
    expected = func(L.loop(i, 4, L.Store(B16, (ramp(E.Mul(i, c(4)), 4),), bc(fc(0.0), 4))), B16)
    assert vectorize(before) == expected
    assert "already vector code" in why_not_vectorizable(
        L.For(i, c(0), c(4), F.VECTORIZED, expected.body.body))


def test_vectorize_trivial_extents():
    assert vectorize(func(vloop(B16.store(v, fc(0.0)), extent=1, start=3), B16)) == func(
        B16.store(c(3), fc(0.0)), B16)
    assert vectorize(func(vloop(B16.store(v, fc(0.0)), extent=0), B16)) == func(NOP, B16)


# ----------------------------------------------------------------------------- unroll


def uloop(body, extent, start=0, var=k):
    return L.For(var, E.const(start), c(extent), F.UNROLLED, body)


def test_unroll_copies_the_body():
    before = func(L.loop(i, 2, uloop(B16.store(i * 3 + k, A16.load(k)), 3)), A16, B16)
    # Plain substitution: `i * 3 + 0` stays until the simplify that follows in the pipeline.
    copies = [B16.store(E.Add(E.Mul(i, c(3)), c(m)), A16.load(c(m))) for m in range(3)]
    assert unroll(before) == func(L.loop(i, 2, L.seq(*copies)), A16, B16)


def test_unroll_with_a_symbolic_start_then_simplify():
    before = func(L.loop(i, 2, uloop(B16.store(k, A16.load(k)), 2, start=i * 8)), A16, B16)
    unrolled = unroll(before)
    expected = func(L.loop(i, 2, L.seq(
        B16.store(E.Mul(i, c(8)), A16.load(E.Mul(i, c(8)))),
        B16.store(E.Add(E.Mul(i, c(8)), c(1)), A16.load(E.Add(E.Mul(i, c(8)), c(1)))))),
        A16, B16)
    assert simplify(unrolled) == expected


def test_unroll_nested_and_inner_loops_keep_their_names():
    inner = L.loop(j, 2, B16.store(k * 2 + j, fc(0.0)))
    before = func(uloop(uloop(inner, 2, var=k), 2, var=i), B16)
    after = unroll(before)
    assert isinstance(after.body, L.SeqStmt) and len(after.body.stmts) == 4
    assert all(isinstance(s, L.For) and s.var == j for s in after.body.stmts)
    verify_primfunc(after, final=True)


def test_unroll_fallbacks():
    long = uloop(B16.store(k % 16, fc(0.0)), 100)
    symbolic = L.For(k, c(0), n, F.UNROLLED, B16.store(k, fc(0.0)))
    for loop in (long, symbolic):
        assert unroll(func(loop, B16)) == func(
            dataclasses.replace(loop, kind=F.SERIAL, annotations=(("unroll", True),)), B16)
    assert unroll(func(long, B16), max_extent=128).body == L.seq(
        *[B16.store(E.FloorMod(c(m), c(16)), fc(0.0)) for m in range(100)])
    pragma = L.AttrStmt("pragma_auto_unroll_max_step", c(16), L.loop(k, 4, B16.store(k, fc(0.0))))
    assert unroll(func(pragma, B16)) == func(pragma, B16)


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_is_the_documented_list():
    assert [name for name, _ in PIPELINE] == [
        "simplify", "flatten_storage", "simplify", "vectorize", "unroll", "simplify"]


def test_pipeline_tiled_add_with_tail():
    # C[i, j] = A[i, j] + B[j] over (3, 10), j split by 4 (vectorized, guarded tail), i unrolled.
    A, B, C = buf("A", 3, 10), buf("B", 10), buf("C", 3, 10)
    jo, ji = E.Var("j.outer"), E.Var("j.inner")
    jj = jo * 4 + ji
    store = C.store((i, jj), A.load(i, jj) + B.load(jj))
    before = func(L.loop(jo, 3, L.For(i, c(0), c(3), F.UNROLLED, L.For(
        ji, c(0), c(4), F.VECTORIZED, L.IfThenElse(E.LT(jj, c(10)), store)))), A, B, C)
    after = run_pipeline(before)
    A1, C1 = buf("A", 30), buf("C", 30)
    base = E.Mul(jo, c(4))
    mask = E.LT(ramp(base, 4), bc(c(10), 4))
    copies = []
    for row in range(3):
        at = ramp(E.Add(base, c(10 * row)) if row else base, 4)
        # Rows 0 and 1 provably stay inside A (lanes up to 10 * row + 11 < 30): no mask needed
        # to load; row 2 and B may leave their buffers on the tail, so those loads stay masked.
        a_mask = mask if row == 2 else None
        value = E.Add(L.Load(A1, (at,), a_mask), L.Load(B, (ramp(base, 4),), mask))
        copies.append(L.Store(C1, (at,), value, mask))
    assert after == func(L.loop(jo, 3, L.seq(*copies)), A1, B, C1)


def test_pipeline_reports_the_pass_that_broke():
    A = buf("A", 4)
    bad = func(L.loop(i, 4, A.store(i, A.load(j))), A)
    with pytest.raises(Exception, match="the pipeline's input.*variable j"):
        run_pipeline(bad)


# ----------------------------------------------------------------------------- semantics


def _kernels():
    """Small lowered-form kernels: elementwise, matmul, stencil, guarded tail, fused, reduction
    (vectorize must fall back), a local cache and unrolled loops."""
    kernels = {}
    A, B = buf("A", 4, 8), buf("B", 4, 8)
    kernels["elementwise"] = func(L.loop(i, 4, L.For(j, c(0), c(8), F.VECTORIZED, B.store(
        (i, j), E.Call("tanh", (A.load(i, j) * fc(0.5),), "float32")))), A, B)

    M, K, N = buf("M", 4, 6), buf("K", 6, 8), buf("N", 4, 8)
    kernels["matmul"] = func(L.loop(i, 4, L.seq(
        L.For(j, c(0), c(8), F.VECTORIZED, N.store((i, j), fc(0.0))),
        L.For(k, c(0), c(6), F.UNROLLED, L.For(j, c(0), c(8), F.VECTORIZED, N.store(
            (i, j), N.load(i, j) + M.load(i, k) * K.load(k, j)))))), M, K, N)

    X, Y = buf("X", 18), buf("Y", 16)
    kernels["stencil"] = func(L.loop(i, 4, L.For(j, c(0), c(4), F.VECTORIZED, Y.store(
        i * 4 + j, X.load(i * 4 + j) + X.load(i * 4 + j + 1) * fc(2.0) + X.load(i * 4 + j + 2)))),
        X, Y)

    T, U = buf("T", 10), buf("U", 10)
    jj = io * 4 + ii
    kernels["guarded tail"] = func(L.loop(io, 3, L.For(ii, c(0), c(4), F.VECTORIZED, L.IfThenElse(
        E.LT(jj, c(10)), U.store(jj, E.max_(T.load(jj), fc(0.0)))))), T, U)

    P, Q = buf("P", 4, 16), buf("Q", 4, 16)
    fo, fi = E.Var("f.outer"), E.Var("f.inner")
    fused = fo * 8 + fi
    kernels["fused"] = func(L.loop(fo, 8, L.For(fi, c(0), c(8), F.VECTORIZED, Q.store(
        (fused // 16, fused % 16), P.load(fused // 16, fused % 16) + fc(1.0)))), P, Q)

    R, S = buf("R", 4, 8), buf("S", 4)
    kernels["reduction"] = func(L.loop(i, 4, L.seq(S.store(i, fc(0.0)), L.For(
        j, c(0), c(8), F.VECTORIZED, S.store(i, S.load(i) + R.load(i, j))))), R, S)

    G, H = buf("G", 4, 8), buf("H", 4, 8)
    cache = buf("cache", 8, scope="local")
    kernels["local cache"] = func(L.loop(i, 4, L.Allocate(cache, L.seq(
        L.For(j, c(0), c(8), F.VECTORIZED, cache.store(j, G.load(i, j) * fc(3.0))),
        L.For(j, c(0), c(8), F.UNROLLED, H.store((i, j), cache.load(c(7) - j)))))), G, H)

    I8, O = buf("I8", 12, dtype="int8"), buf("O", 12, dtype="int32")
    kernels["int8 to int32"] = func(L.For(j, c(0), c(12), F.VECTORIZED, O.store(j, E.Cast(
        "int32", I8.load(j)) * c(3, "int32") - c(5, "int32"))), I8, O)
    return kernels


KERNELS = _kernels()


def _random_inputs(func, seed=0):
    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:
        shape = tuple(int(d) for d in param.shape)
        if param.dtype.startswith("int"):
            arrays.append(rng.integers(-100, 100, shape).astype(param.dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(param.dtype))
    return arrays


def _outputs(func, inputs):
    arrays = [a.copy() for a in inputs]
    run_primfunc(func, arrays)
    return arrays


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_pass_preserves_what_a_kernel_computes(name):
    before = verify_primfunc(KERNELS[name])
    inputs = _random_inputs(before)
    expected = _outputs(before, inputs)
    current, flattened = before, None
    for pass_name, run_pass in PIPELINE:
        current = run_pass(current)
        flattened = True if pass_name == "flatten_storage" else flattened
        verify_primfunc(current, flattened)
        for got, want in zip(_outputs(current, inputs), expected):
            np.testing.assert_array_equal(got.reshape(want.shape), want,
                                          err_msg=f"after {pass_name}:\n{current}")
    verify_primfunc(current, flattened=True, final=True)
    assert run_pipeline(before) == current


def test_pipeline_vectorizes_what_it_should():
    kinds = {name: {type(e).__name__ for e in _collect_exprs(run_pipeline(f))}
             for name, f in KERNELS.items()}
    for name in ("elementwise", "matmul", "stencil", "guarded tail", "fused", "local cache",
                 "int8 to int32"):
        assert "Ramp" in kinds[name], name
    assert "Ramp" not in kinds["reduction"]


def _collect_exprs(func):
    from ember.ir.visitor import collect

    return collect(func.body, E.Expr)


@st.composite
def _affine_kernels(draw):
    """for i in 3: for v in 4 vectorized: Out[i*4 + v] = In[(a*i + b*v + c) % 32] * 2."""
    a, b, offset = draw(st.integers(-3, 5)), draw(st.integers(-3, 3)), draw(st.integers(0, 40))
    start = draw(st.integers(0, 2))
    In, Out = buf("In", 32), buf("Out", 12)
    index = (i * a + v * b + offset) % 32 if draw(st.booleans()) else i * a + v * b + offset + 12
    if draw(st.booleans()):
        index = E.min_(E.max_(index, c(0)), c(31))
    value = In.load(index) * fc(2.0)
    body = Out.store(i * 4 + v - start, value)
    if draw(st.booleans()):
        body = L.IfThenElse(E.LT(i * 4 + v - start, c(draw(st.integers(1, 12)))), body)
    loop = L.For(v, c(start), c(4), F.VECTORIZED, body)
    return func(L.loop(i, 3, loop), In, Out)


@settings(max_examples=60, deadline=None)
@given(_affine_kernels())
def test_pipeline_preserves_affine_accesses(kernel):
    inputs = [np.arange(32, dtype=np.float32), np.zeros(12, np.float32)]
    try:
        expected = _outputs(kernel, inputs)
    except IndexError:
        return  # the drawn index leaves the buffer: not a valid kernel
    after = run_pipeline(kernel)
    np.testing.assert_array_equal(_outputs(after, inputs)[1], expected[1],
                                  err_msg=f"{kernel}\n{after}")

"""Lowering: bound inference, loop-nest structure, storage, reductions, tensorize.

Every lowered function is run by the loop-IR interpreter on small random inputs against numpy;
structural assertions check what a test is about (loop order, a guard, an Allocate's extent).
"""

import dataclasses
import functools

import numpy as np
import pytest
from support import check_lowered

from ember.errors import ScheduleError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir import te
from ember.ir.interpreter import run_primfunc
from ember.ir.lower import lower
from ember.ir.schedule import create_schedule, decl_tensor_intrin
from ember.ir.visitor import collect, transform

run = functools.partial(check_lowered, seed=3)


def loop_names(stmt):
    return [f.var.name for f in collect(stmt, L.For)]


def allocations(func):
    return {a.buffer.name: a.buffer for a in collect(func.body, L.Allocate)}


def matmul(n=8, m=8, k=8):
    A = te.placeholder((n, k), name="A")
    B = te.placeholder((k, m), name="B")
    r = te.reduce_axis(k, name="r")
    C = te.compute((n, m), lambda i, j: te.sum(A[i, r] * B[r, j], axis=r), name="C")
    return A, B, C


# ----------------------------------------------------------------------------- loop structure


def test_guarded_split_expected_ir():
    A = te.placeholder((10,), name="A")
    B = te.compute((10,), lambda i: A[i] + 1.0, name="B")
    s = create_schedule(B)
    s[B].split(s[B].op.axis[0], factor=3)
    func = lower(s, [A, B], "add_one")

    a, b = L.Buffer("A", (10,), "float32"), L.Buffer("B", (10,), "float32")
    io, ii = E.Var("i.outer"), E.Var("i.inner")
    index = io * 3 + ii
    expected = L.loop(io, 4, L.loop(ii, 3, L.IfThenElse(
        index < 10, L.Store(b, (index,), a.load(index) + E.const(1.0)))))
    assert func == L.PrimFunc("add_one", (a, b), expected)


def test_matmul_split_reorder():
    A, B, C = matmul(n=6, m=5, k=7)
    s = create_schedule(C)
    i, j = s[C].op.axis
    (r,) = s[C].op.reduce_axis
    io, ii = s[C].split(i, factor=4)
    ro, ri = s[C].split(r, factor=3)
    s[C].reorder(io, ro, j, ii, ri)
    assert [a.name for a in s[C].leaf_axes] == ["i.outer", "r.outer", "j", "i.inner", "r.inner"]
    func = run(s, [A, B, C], lambda a, b: a @ b)
    update_nest = func.body.body.stmts[1]
    assert loop_names(update_nest) == ["r.outer", "j", "i.inner", "r.inner"]
    # the initialization sits before the outermost reduction loop, over the data loops inside
    init = func.body.body.stmts[0]
    assert loop_names(init) == ["j.init", "i.inner.init"]
    assert isinstance(collect(init, L.Store)[0].value, E.FloatImm)


def test_reduction_axis_outermost_puts_init_at_function_level():
    A, B, C = matmul(n=4, m=3, k=5)
    s = create_schedule(C)
    i, j = s[C].op.axis
    (r,) = s[C].op.reduce_axis
    ro, ri = s[C].split(r, factor=2)
    s[C].reorder(ro, i, j, ri)
    func = run(s, [A, B, C], lambda a, b: a @ b)
    init, update = func.body.stmts
    assert loop_names(init) == ["i.init", "j.init"] and update.var.name == "r.outer"
    # the reduction tail guard guards the update only
    assert not collect(init, L.IfThenElse)
    (guard,) = collect(update, L.IfThenElse)
    assert str(guard.condition) == "(((r.outer * 2) + r.inner) < 5)"


def test_reduction_over_offset_axis_with_condition():
    A = te.placeholder((4, 9), name="A")
    r = te.reduce_axis((2, 8), name="r")
    C = te.compute((4,), lambda i: te.max(A[i, r], axis=r, where=E.eq(r % 2, 0)), name="C")
    s = create_schedule(C)
    s[C].split(s[C].op.reduce_axis[0], factor=4)
    run(s, [A, C], lambda a: a[:, 2:8:2].max(axis=1))


def test_unique_loop_variables_across_stages():
    A = te.placeholder((4, 4), name="A")
    B = te.compute((4, 4), lambda i, j: A[i, j] + 1.0, name="B")
    C = te.compute((4, 4), lambda i, j: B[i, j] * 2.0, name="C")
    D = te.compute((4, 4), lambda i, j: C[j, i] - B[i, j], name="D")
    s = create_schedule(D)
    func = run(s, [A, D], lambda a: ((a + 1) * 2).T - (a + 1))
    names = loop_names(func.body)
    assert len(names) == len(set(names)) == 6
    assert names[-2:] == ["i", "j"]  # the output keeps the plain names


def test_multi_output_elementwise_compute():
    A = te.placeholder((3, 5), name="A")
    S, D = te.compute((3, 5), lambda i, j: (A[i, j] + 1.0, A[i, j] - 1.0), name="SD")
    s = create_schedule([S, D])
    s[S].split(s[S].op.axis[1], factor=2)
    run(s, [A, S, D], lambda a: (a + 1, a - 1))


def test_intermediate_in_args_is_stored_not_allocated():
    A = te.placeholder((4, 3), name="A")
    B = te.compute((4, 3), lambda i, j: A[i, j] + 1.0, name="B")
    C = te.compute((4, 3), lambda i, j: B[i, j] * 3.0, name="C")
    s = create_schedule(C)
    func = run(s, [A, B, C], lambda a: (a + 1, (a + 1) * 3))
    assert not collect(func.body, L.Allocate)


# ----------------------------------------------------------------------------- compute_at


def stencil(n):
    A = te.placeholder((n, n), name="A")
    B = te.compute((n, n), lambda i, j: A[i, j] * 2.0, name="B")
    C = te.compute((n - 2, n - 2), lambda i, j: (
        B[i, j] + B[i + 1, j + 1] + B[i + 2, j + 2] + B[i + 2, j]), name="C")

    def reference(a):
        b = a * 2
        return b[:-2, :-2] + b[1:-1, 1:-1] + b[2:, 2:] + b[2:, :-2]

    return A, B, C, reference


@pytest.mark.parametrize("n, guarded", [(10, False), (11, True)])
def test_compute_at_stencil_producer_covers_tile_plus_halo(n, guarded):
    A, B, C, reference = stencil(n)
    s = create_schedule(C)
    xo, yo, xi, yi = s[C].tile(*s[C].op.axis, 4, 4)
    s[B].compute_at(s[C], yo)
    func = run(s, [A, C], reference)
    alloc = allocations(func)["B"]
    assert alloc.shape == (6, 6) and alloc.scope == "global"
    producer = collect(func.body, L.Allocate)[0].body.stmts[0]
    assert loop_names(producer) == ["i", "j"]
    # the halo of the last tile sticks out of B's domain only when 9 % 4 != 0
    assert bool(collect(producer, L.IfThenElse)) == guarded


def test_compute_at_inner_axis_computes_one_row():
    A, B, C, reference = stencil(7)
    s = create_schedule(C)
    s[B].compute_at(s[C], s[C].op.axis[0])
    func = run(s, [A, C], reference)
    assert allocations(func)["B"].shape == (3, 7)


def test_compute_at_a_reduction_consumer():
    A = te.placeholder((12,), name="A")
    B = te.compute((12,), lambda i: A[i] * A[i], name="B")
    r = te.reduce_axis(3, name="r")
    C = te.compute((10,), lambda i: te.sum(B[i + r.var], axis=r), name="C")
    s = create_schedule(C)
    io, ii = s[C].split(s[C].op.axis[0], factor=5)
    s[B].compute_at(s[C], io)
    func = run(s, [A, C], lambda a: np.convolve(a * a, np.ones(3, "float32"), "valid"))
    assert allocations(func)["B"].shape == (7,)


@pytest.mark.parametrize("factor, region", [(6, (1, 6)), (3, (2, 6)), (12, (2, 6)),
                                            (5, (2, 6))])
def test_compute_at_fused_axis(factor, region):
    A = te.placeholder((4, 6), name="A")
    B = te.compute((4, 6), lambda i, j: A[i, j] + 2.0, name="B")
    C = te.compute((4, 6), lambda i, j: B[i, j] * B[i, j], name="C")
    s = create_schedule(C)
    fused = s[C].fuse(*s[C].op.axis)
    fo, fi = s[C].split(fused, factor=factor)
    s[B].compute_at(s[C], fo)
    func = run(s, [A, C], lambda a: (a + 2) ** 2)
    # a block of `factor` consecutive elements of the fused loop spans rows
    # (fo*factor) // 6 .. (fo*factor + factor - 1) // 6: one when 6 divides it, else at most two
    assert allocations(func)["B"].shape == region


def test_nested_compute_at():
    A = te.placeholder((8,), name="A")
    B = te.compute((8,), lambda i: A[i] + 1.0, name="B")
    C = te.compute((7,), lambda i: B[i] + B[i + 1], name="C")
    D = te.compute((6,), lambda i: C[i] * C[i + 1], name="D")
    s = create_schedule(D)
    do, di = s[D].split(s[D].op.axis[0], factor=4)
    s[C].compute_at(s[D], do)
    s[B].compute_at(s[C], s[C].op.axis[0])
    b = None

    def reference(a):
        b = a + 1
        c = b[:-1] + b[1:]
        return c[:-1] * c[1:]

    func = run(s, [A, D], reference)
    allocs = allocations(func)
    assert allocs["C"].shape == (5,) and allocs["B"].shape == (2,)
    assert b is None


def test_inline_chain_and_compute_at():
    A = te.placeholder((6, 5), name="A")
    B = te.compute((6, 5), lambda i, j: A[i, j] + 1.0, name="B")
    C = te.compute((6, 5), lambda i, j: E.exp(B[i, j]), name="C")
    D = te.compute((6, 5), lambda i, j: C[i, j] * 0.5, name="D")
    F = te.compute((6, 4), lambda i, j: D[i, j] + D[i, j + 1], name="F")
    s = create_schedule(F)
    s[B].compute_inline()
    s[C].compute_inline()
    s[D].compute_at(s[F], s[F].op.axis[0])

    def reference(a):
        d = np.exp(a + 1) * 0.5
        return d[:, :-1] + d[:, 1:]

    func = run(s, [A, F], reference)
    assert set(allocations(func)) == {"D"} and allocations(func)["D"].shape == (1, 5)
    stores = collect(func.body, L.Store)
    assert "exp((A[" in str(stores[0].value)


# ----------------------------------------------------------------------------- caches, scopes


def test_cache_write_and_cache_read_for_a_matmul_tile():
    A, B, C = matmul()
    s = create_schedule(C)
    CL = s.cache_write(C, "local")
    AS = s.cache_read(A, "shared", [CL])
    assert [st.name for st in s.stages] == ["A", "A.shared", "B", "C.local", "C"]
    xo, yo, xi, yi = s[C].tile(*s[C].op.axis, 4, 4)
    s[CL].compute_at(s[C], yo)
    (r,) = s[CL].op.reduce_axis
    ro, ri = s[CL].split(r, factor=2)
    s[CL].reorder(ro, *s[CL].op.axis, ri)
    s[AS].compute_at(s[CL], ro)
    func = run(s, [A, B, C], lambda a, b: a @ b)
    allocs = allocations(func)
    assert (allocs["C.local"].shape, allocs["C.local"].scope) == ((4, 4), "local")
    assert (allocs["A.shared"].shape, allocs["A.shared"].scope) == ((4, 2), "shared")
    # C.local's initialization comes before its reduction loop, inside C's tile loops
    local = collect(func.body, L.Allocate)[0].body
    assert loop_names(local.stmts[0]) == ["i.init", "j.init"]
    assert local.stmts[1].var.name == "r.outer"


def test_cache_write_of_a_reduction_with_tail():
    A, B, C = matmul(n=5, m=3, k=7)
    s = create_schedule(C)
    CL = s.cache_write(C, "local")
    io, ii = s[C].split(s[C].op.axis[0], factor=2)
    s[CL].compute_at(s[C], io)
    s[CL].split(s[CL].op.reduce_axis[0], factor=3)
    func = run(s, [A, B, C], lambda a, b: a @ b)
    assert allocations(func)["C.local"].shape == (2, 3)


def test_cache_read_for_two_readers():
    A = te.placeholder((6,), name="A")
    B = te.compute((6,), lambda i: A[i] + 1.0, name="B")
    C = te.compute((6,), lambda i: A[i] * B[i], name="C")
    s = create_schedule(C)
    AL = s.cache_read(A, "local", [B, C])
    assert s[C].op is not C.op and s[C].op.input_tensors[0] is AL
    func = run(s, [A, C], lambda a: a * (a + 1))
    assert allocations(func)["A.local"].scope == "local"


def test_cache_write_after_split_is_an_error():
    A, B, C = matmul()
    s = create_schedule(C)
    s[C].split(s[C].op.axis[0], factor=2)
    with pytest.raises(ScheduleError, match=r"stage 'C': cache_write must come before split"):
        s.cache_write(C, "local")


def test_cache_read_of_tensor_not_read():
    A, B, C = matmul()
    D = te.compute(C.shape, lambda i, j: C[i, j] + 1.0, name="D")
    s = create_schedule(D)
    with pytest.raises(ScheduleError, match=r"cache_read of 'A': stage 'D' does not read it"):
        s.cache_read(A, "shared", [D])


def test_gpu_style_matmul_with_shared_region_relaxed_over_threads():
    A, B, C = matmul()
    s = create_schedule(C)
    AS = s.cache_read(A, "shared", [C])
    BL = s.cache_read(B, "local", [C])
    i, j = s[C].op.axis
    bx, tx = s[C].split(i, factor=4)
    s[C].bind(bx, "blockIdx.x")
    s[C].bind(tx, "threadIdx.x")
    s[AS].compute_at(s[C], tx)
    s[BL].compute_at(s[C], tx)
    func = run(s, [A, B, C], lambda a, b: a @ b)
    allocs = allocations(func)
    # shared memory is filled for the whole thread block, local memory for one thread
    assert allocs["A.shared"].shape == (4, 8) and allocs["B.local"].shape == (8, 8)
    bound = [(f.var.name, f.thread_tag) for f in collect(func.body, L.For)
             if f.kind is L.ForKind.THREAD_BINDING]
    assert bound == [("i.outer", "blockIdx.x"), ("i.inner", "threadIdx.x")]


# ----------------------------------------------------------------------------- tuple reducers


def argmax_reducer():
    li, lv = E.Var("li"), E.Var("lv", "float32")
    ri, rv = E.Var("ri"), E.Var("rv", "float32")
    keep = lv >= rv
    return te.CommReducer((li, lv), (ri, rv), (E.select(keep, li, ri), E.select(keep, lv, rv)),
                          (E.const(-1), E.min_value("float32")), "argmax")


@pytest.mark.parametrize("factor", [None, 3])
def test_argmax_tuple_reducer(factor):
    A = te.placeholder((4, 7), name="A")
    k = te.reduce_axis(7, name="k")
    reducer = argmax_reducer()

    def body(i):
        index = reducer((k.var, A[i, k]), k)
        return index, dataclasses.replace(index, value_index=1)

    index, value = te.compute((4,), body, name="argmax")
    s = create_schedule([index, value])
    if factor:
        ko, ki = s[index].split(s[index].op.reduce_axis[0], factor=factor)
        s[index].reorder(ko, s[index].op.axis[0], ki)
    func = run(s, [A, index, value], lambda a: (a.argmax(axis=1), a.max(axis=1)))
    assert len(collect(func.body, L.LetStmt)) == 2


# ----------------------------------------------------------------------------- tensorize


def vadd4():
    a = te.placeholder((4,), name="a")
    b = te.placeholder((4,), name="b")
    c = te.compute((4,), lambda i: a[i] + b[i], name="c")

    def emit(inputs, outputs):
        args = (outputs[0].address(), inputs[0].address(), inputs[1].address())
        return E.Call("vadd4", args, "int32")

    return decl_tensor_intrin(c, emit, name="vadd4")


def execute_vadd4(func):
    """What the hardware does for vadd4(&c, &a, &b): c[0:4] = a[0:4] + b[0:4], as a vector
    store the interpreter runs."""

    def vector(address):
        load = address.args[0]
        last = E.Ramp(load.indices[-1], E.const(1), 4)
        return L.Load(load.buffer, load.indices[:-1] + (last,))

    def rewrite(node):
        if isinstance(node, L.Evaluate) and node.value.name == "vadd4":
            c, a, b = (vector(arg) for arg in node.value.args)
            return L.Store(c.buffer, c.indices, a + b)
        return None

    return func.with_body(transform(func.body, rewrite))


def test_tensorize_vector_add():
    A = te.placeholder((3, 8), name="A")
    B = te.placeholder((3, 8), name="B")
    C = te.compute((3, 8), lambda i, j: A[i, j] + B[i, j], name="C")
    s = create_schedule(C)
    jo, ji = s[C].split(s[C].op.axis[1], factor=4)
    s[C].tensorize(ji, vadd4())
    func = lower(s, [A, B, C], "vadd")
    assert loop_names(func.body) == ["i", "j.outer"]
    (call,) = [e.value for e in collect(func.body, L.Evaluate)]
    assert str(call) == ("vadd4(address_of(C[i, (j.outer * 4)]), address_of(A[i, (j.outer * 4)]),"
                         " address_of(B[i, (j.outer * 4)]))")
    run(s, [A, B, C], lambda a, b: a + b, func=execute_vadd4(func))


def test_tensorize_region_of_the_wrong_size():
    A = te.placeholder((8,), name="A")
    B = te.placeholder((8,), name="B")
    C = te.compute((8,), lambda i: A[i] + B[i], name="C")
    s = create_schedule(C)
    io, ii = s[C].split(s[C].op.axis[0], factor=2)
    s[C].tensorize(ii, vadd4())
    with pytest.raises(ScheduleError, match=r"stage 'C': tensorize of axis 'i.inner' with "
                                            r"'vadd4': it touches a \[2\] region of 'A'"):
        lower(s, [A, B, C])


def test_tensorize_different_computation():
    A = te.placeholder((8,), name="A")
    B = te.placeholder((8,), name="B")
    C = te.compute((8,), lambda i: A[i] * B[i], name="C")
    s = create_schedule(C)
    io, ii = s[C].split(s[C].op.axis[0], factor=4)
    s[C].tensorize(ii, vadd4())
    with pytest.raises(ScheduleError, match=r"tensorize of axis 'i.inner' with 'vadd4': the "
                                            r"loops compute a different expression"):
        lower(s, [A, B, C])


def test_tensorize_reduction_update():
    """A dot-product-of-4 instruction accumulating into C[i]: the initialization stays a
    loop, the update becomes the call."""
    a = te.placeholder((4,), name="a")
    b = te.placeholder((4,), name="b")
    kk = te.reduce_axis(4, name="kk")
    c = te.compute((1,), lambda i: te.sum(a[kk] * b[kk], axis=kk), name="c")

    def emit_update(inputs, outputs):
        args = (outputs[0].address(), inputs[0].address(), inputs[1].address())
        return E.Call("dot4_update", args, "int32")

    dot4 = decl_tensor_intrin(c, emit=None, emit_update=emit_update, name="dot4")

    A = te.placeholder((3, 8), name="A")
    B = te.placeholder((8,), name="B")
    k = te.reduce_axis(8, name="k")
    C = te.compute((3,), lambda i: te.sum(A[i, k] * B[k], axis=k), name="C")
    s = create_schedule(C)
    ko, ki = s[C].split(s[C].op.reduce_axis[0], factor=4)
    s[C].tensorize(ki, dot4)
    func = lower(s, [A, B, C], "gemv")

    def rewrite(node):
        if isinstance(node, L.Evaluate) and node.value.name == "dot4_update":
            c_, a_, b_ = (arg.args[0] for arg in node.value.args)
            total = c_
            for lane in range(4):
                total = total + L.Load(a_.buffer, (a_.indices[0], a_.indices[1] + lane)) * \
                    L.Load(b_.buffer, (b_.indices[0] + lane,))
            return L.Store(c_.buffer, c_.indices, total)
        return None

    assert loop_names(func.body) == ["i", "k.outer"]
    run(s, [A, B, C], lambda a, b: a @ b, func=func.with_body(transform(func.body, rewrite)))


# ----------------------------------------------------------------------------- edge cases


def test_gather_region_follows_a_data_dependent_index():
    A = te.placeholder((6,), name="A")
    index = te.placeholder((4,), "int64", name="index")
    B = te.compute((6,), lambda i: A[i] * 3.0, name="B")
    C = te.compute((4,), lambda i: B[index[i]], name="C")
    s = create_schedule(C)
    s[B].compute_at(s[C], s[C].op.axis[0])
    func = lower(s, [A, index, C])
    assert allocations(func)["B"].shape == (1,)
    out = np.zeros(4, "float32")
    run_primfunc(func, [np.arange(6, dtype="float32"), np.array([5, 0, 2, 2]), out])
    np.testing.assert_array_equal(out, [15, 0, 6, 6])


def test_zero_dimensional_reduction():
    A = te.placeholder((5,), name="A")
    k = te.reduce_axis(5, name="k")
    S = te.compute((), lambda: te.sum(A[k], axis=k), name="S")
    s = create_schedule(S)
    s[S].split(s[S].op.reduce_axis[0], factor=2)
    run(s, [A, S], lambda a: a.sum())


def test_inline_multi_output_stage():
    A = te.placeholder((6,), name="A")
    X, Y = te.compute((6,), lambda i: (A[i] + 1.0, A[i] * 2.0), name="XY")
    Z = te.compute((6,), lambda i: X[i] - Y[i], name="Z")
    s = create_schedule(Z)
    s[X].compute_inline()
    func = run(s, [A, Z], lambda a: (a + 1) - a * 2)
    assert loop_names(func.body) == ["i"]


def test_reduction_inside_an_expression_is_an_error():
    A = te.placeholder((3,), name="A")
    k = te.reduce_axis(3, name="k")
    T = te.compute((1,), lambda i: te.sum(A[k], axis=k) * 2.0, name="T")
    with pytest.raises(ScheduleError, match=r"stage 'T': a reduction must be the whole body"):
        lower(create_schedule(T), [A, T])


# ----------------------------------------------------------------------------- combinations


def test_padded_conv2d_template():
    """A CPU-template-like schedule: padding computed per output row tile, the accumulator
    in a local cache, tiled and vectorized, reduction loops reordered."""
    X = te.placeholder((1, 2, 5, 5), name="X")
    W = te.placeholder((3, 2, 3, 3), name="W")

    def padded(n, c, h, w):
        inside = (h >= 1) & (h <= 5) & (w >= 1) & (w <= 5)
        hh, ww = E.max_(E.min_(h - 1, 4), 0), E.max_(E.min_(w - 1, 4), 0)
        return E.select(inside, X[n, c, hh, ww], E.const(0.0))

    P = te.compute((1, 2, 7, 7), padded, name="pad")
    rc, ry, rx = (te.reduce_axis(2, "rc"), te.reduce_axis(3, "ry"), te.reduce_axis(3, "rx"))
    Y = te.compute((1, 3, 5, 5), lambda n, f, y, x: te.sum(
        P[n, rc, y + ry.var, x + rx.var] * W[f, rc, ry, rx], axis=[rc, ry, rx]), name="conv")
    s = create_schedule(Y)
    YL = s.cache_write(Y, "local")
    n, f, y, x = s[Y].op.axis
    yo, xo, yi, xi = s[Y].tile(y, x, 2, 4)
    s[Y].vectorize(xi)
    s[YL].compute_at(s[Y], xo)
    ln, lf, ly, lx = s[YL].op.axis
    lrc, lry, lrx = s[YL].op.reduce_axis
    s[YL].reorder(ln, lrc, lry, lf, ly, lrx, lx)
    s[YL].vectorize(lx)
    s[P].compute_at(s[Y], yo)

    def reference(x, w):
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((1, 3, 5, 5), "float32")
        for dy in range(3):
            for dx in range(3):
                out += np.einsum("nchw,fc->nfhw", xp[:, :, dy:dy + 5, dx:dx + 5], w[:, :, dy, dx])
        return out

    func = run(s, [X, W, Y], reference)
    allocs = allocations(func)
    assert allocs["pad"].shape == (1, 2, 4, 7)  # 2 output rows + 2 halo, every column
    assert allocs["conv.local"].shape == (1, 1, 2, 4)  # one filter (f is outside xo)
    kinds = {f.var.name: f.kind for f in collect(func.body, L.For)}
    assert kinds["x.inner"] is kinds["x"] is kinds["x.init"] is L.ForKind.VECTORIZED
    (init,) = [f for f in collect(func.body, L.For) if f.var.name == "f_1.init"]
    assert loop_names(init) == ["f_1.init", "y.init", "x.init"]
    y_guard, x_guard = collect(init, L.IfThenElse)  # each at the loop that binds its variable
    assert str(y_guard.condition) == "(((y.outer * 2) + y.init) < 5)"
    assert isinstance(y_guard.then_case, L.For) and isinstance(x_guard.then_case, L.Store)


@pytest.mark.parametrize("seed", range(6))
def test_random_matmul_schedules(seed):
    """Random splits (dividing or not) and loop orders of a matmul, init placement included."""
    rng = np.random.default_rng(seed)
    A, B, C = matmul(n=5, m=4, k=6)
    s = create_schedule(C)
    for axis in list(s[C].leaf_axes):
        if rng.random() < 0.7:
            s[C].split(axis, factor=int(rng.integers(1, 8)))
    order = list(s[C].leaf_axes)
    rng.shuffle(order)
    s[C].reorder(*order)
    run(s, [A, B, C], lambda a, b: a @ b)

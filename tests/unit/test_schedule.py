"""Schedule primitives, each alone: what they do to a stage's loops, that the lowered function
still computes the same values (run by the loop-IR interpreter against numpy), and the
ScheduleError every misuse raises, naming the stage and the axis."""

import functools

import pytest
from support import check_lowered

from ember.errors import EmberError, ScheduleError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir import te
from ember.ir.lower import lower
from ember.ir.schedule import create_schedule
from ember.ir.visitor import collect

run = functools.partial(check_lowered, seed=7)


def loops(func):
    return collect(func.body, L.For)


def loop_names(func):
    return [f.var.name for f in loops(func)]


def elementwise(n=10, m=6):
    A = te.placeholder((n, m), name="A")
    B = te.compute((n, m), lambda i, j: A[i, j] * 2.0 + 1.0, name="B")
    return A, B, lambda a: a * 2 + 1


def matmul(n=6, m=5, k=7):
    A = te.placeholder((n, k), name="A")
    B = te.placeholder((k, m), name="B")
    r = te.reduce_axis(k, name="r")
    C = te.compute((n, m), lambda i, j: te.sum(A[i, r] * B[r, j], axis=r), name="C")
    return A, B, C


# ----------------------------------------------------------------------------- create_schedule


def test_stages_are_in_topological_order_with_placeholders():
    A, B, C = matmul()
    D = te.compute(C.shape, lambda i, j: C[i, j] + A[i, 0], name="D")
    s = create_schedule(D)
    assert [st.name for st in s.stages] == ["A", "B", "C", "D"]
    assert s[A].is_placeholder and s[A].leaf_axes == []
    assert s[D].op is D.op and s[D.op] is s[D]
    i, j = s[C].op.axis
    assert [a.name for a in s[C].leaf_axes] == ["i", "j", "r"]
    assert s[C].op.reduce_axis[0].name == "r"


def test_natural_schedule_lowers_to_one_nest():
    A, B, f = elementwise()
    s = create_schedule(B)
    func = run(s, [A, B], f)
    assert loop_names(func) == ["i", "j"]
    assert [p.name for p in func.params] == ["A", "B"]


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize("factor", [1, 2, 5, 10])
def test_split_dividing_factor_has_no_guard(factor):
    A, B, f = elementwise()
    s = create_schedule(B)
    io, ii = s[B].split(s[B].op.axis[0], factor=factor)
    assert s[B].leaf_axes == [io, ii, s[B].op.axis[1]]
    func = run(s, [A, B], f)
    assert [x.extent.value for x in loops(func)] == [10 // factor, factor, 6]
    assert not collect(func.body, L.IfThenElse)


@pytest.mark.parametrize("factor", [3, 4, 7])
def test_split_non_dividing_factor_keeps_guarded_tail(factor):
    A, B, f = elementwise()
    s = create_schedule(B)
    s[B].split(s[B].op.axis[0], factor=factor)
    func = run(s, [A, B], f)
    assert [x.extent.value for x in loops(func)][:2] == [-(-10 // factor), factor]
    (guard,) = collect(func.body, L.IfThenElse)
    assert str(guard.condition) == f"(((i.outer * {factor}) + i.inner) < 10)"


def test_split_factor_larger_than_extent_runs_once():
    A, B, f = elementwise()
    s = create_schedule(B)
    s[B].split(s[B].op.axis[1], factor=16)
    func = run(s, [A, B], f)
    assert [(x.var.name, x.extent.value) for x in loops(func)] == \
        [("i", 10), ("j.outer", 1), ("j.inner", 6)]
    assert not collect(func.body, L.IfThenElse)


@pytest.mark.parametrize("nparts, inner", [(2, 5), (3, 4), (4, 3), (16, 1)])
def test_split_by_nparts(nparts, inner):
    A, B, f = elementwise()
    s = create_schedule(B)
    s[B].split(s[B].op.axis[0], nparts=nparts)
    func = run(s, [A, B], f)
    assert [x.extent.value for x in loops(func)][:2] == [nparts, inner]
    assert bool(collect(func.body, L.IfThenElse)) == (nparts * inner != 10)


def test_split_twice_and_split_of_inner():
    A, B, f = elementwise(n=20)
    s = create_schedule(B)
    io, ii = s[B].split(s[B].op.axis[0], factor=6)
    iio, iii = s[B].split(ii, factor=4)
    ioo, ioi = s[B].split(io, nparts=2)
    assert [a.name for a in s[B].leaf_axes] == \
        ["i.outer.outer", "i.outer.inner", "i.inner.outer", "i.inner.inner", "j"]
    run(s, [A, B], f)


# ----------------------------------------------------------------------------- tile, reorder, fuse


def test_tile_orders_outer_then_inner():
    A, B, f = elementwise(n=9, m=8)
    s = create_schedule(B)
    xo, yo, xi, yi = s[B].tile(*s[B].op.axis, 4, 3)
    assert s[B].leaf_axes == [xo, yo, xi, yi]
    func = run(s, [A, B], f)
    assert loop_names(func) == ["i.outer", "j.outer", "i.inner", "j.inner"]
    assert len(collect(func.body, L.IfThenElse)) == 2  # 9 % 4 and 8 % 3


def test_reorder_changes_loop_order():
    A = te.placeholder((3, 4, 5), name="A")
    B = te.compute((3, 4, 5), lambda i, j, k: A[i, j, k] - 1.0, name="B")
    s = create_schedule(B)
    i, j, k = s[B].op.axis
    s[B].reorder(k, i)  # k and i swap positions, j stays
    func = run(s, [A, B], lambda a: a - 1)
    assert loop_names(func) == ["k", "j", "i"]


def test_fuse_recovers_indices_with_div_and_mod():
    A, B, f = elementwise(n=4, m=6)
    s = create_schedule(B)
    fused = s[B].fuse(*s[B].op.axis)
    assert fused.name == "i.j.fused" and s[B].leaf_axes == [fused]
    func = run(s, [A, B], f)
    assert [(x.var.name, x.extent.value) for x in loops(func)] == [("i.j.fused", 24)]
    (store,) = collect(func.body, L.Store)
    assert str(store.indices[0]) == "(i.j.fused // 6)"
    assert str(store.indices[1]) == "(i.j.fused % 6)"


def test_fuse_three_axes_then_non_divisible_split():
    A = te.placeholder((2, 3, 5), name="A")
    B = te.compute((2, 3, 5), lambda a, b, c: A[a, b, c] * 3.0, name="B")
    s = create_schedule(B)
    fused = s[B].fuse(*s[B].op.axis)
    s[B].split(fused, factor=7)
    func = run(s, [A, B], lambda a: a * 3)
    assert [x.extent.value for x in loops(func)] == [5, 7]  # 30 = 5 * 7 - 5 guarded


def test_fuse_of_split_axes_restores_extent():
    A, B, f = elementwise(n=12, m=2)
    s = create_schedule(B)
    io, ii = s[B].split(s[B].op.axis[0], factor=4)
    fused = s[B].fuse(io, ii)
    func = run(s, [A, B], f)
    assert loops(func)[0].var == fused.var and loops(func)[0].extent.value == 12


# ----------------------------------------------------------------------------- annotations


@pytest.mark.parametrize("primitive, kind", [
    ("vectorize", L.ForKind.VECTORIZED), ("unroll", L.ForKind.UNROLLED),
    ("parallel", L.ForKind.PARALLEL),
])
def test_loop_kinds(primitive, kind):
    A, B, f = elementwise()
    s = create_schedule(B)
    i, j = s[B].op.axis
    jo, ji = s[B].split(j, factor=3)
    getattr(s[B], primitive)(ji if primitive != "parallel" else i)
    func = run(s, [A, B], f)
    kinds = {x.var.name: x.kind for x in loops(func)}
    assert kinds["j.inner" if primitive != "parallel" else "i"] is kind
    assert sum(k is not L.ForKind.SERIAL for k in kinds.values()) == 1


def test_unroll_of_reduction_axis_is_allowed():
    A, B, C = matmul()
    s = create_schedule(C)
    s[C].unroll(s[C].op.reduce_axis[0])
    func = run(s, [A, B, C], lambda a, b: a @ b)
    assert loops(func)[-1].kind is L.ForKind.UNROLLED


def test_bind_thread_tags():
    A, B, f = elementwise(n=8, m=3)
    s = create_schedule(B)
    fused = s[B].fuse(*s[B].op.axis)
    bx, tx = s[B].split(fused, factor=5)
    s[B].bind(bx, "blockIdx.x")
    s[B].bind(tx, "threadIdx.x")
    func = run(s, [A, B], f)
    outer, inner = loops(func)
    assert (outer.kind, outer.thread_tag, outer.extent.value) == \
        (L.ForKind.THREAD_BINDING, "blockIdx.x", 5)
    assert (inner.kind, inner.thread_tag, inner.extent.value) == \
        (L.ForKind.THREAD_BINDING, "threadIdx.x", 5)


def test_pragma_wraps_its_loop_in_attr_stmt():
    A, B, f = elementwise()
    s = create_schedule(B)
    i, j = s[B].op.axis
    s[B].pragma(j, "unroll_explicit", 4)
    s[B].pragma(i, "dma_copy")
    func = run(s, [A, B], f)
    outer = func.body
    assert isinstance(outer, L.AttrStmt) and outer.key == "pragma_dma_copy"
    assert outer.value == E.const(1) and isinstance(outer.body, L.For)
    (inner,) = [a for a in collect(func.body, L.AttrStmt) if a.key == "pragma_unroll_explicit"]
    assert inner.value == E.const(4) and inner.body.var.name == "j"


def test_set_scope_gives_allocate_scope():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] * B[i, j], name="C")
    s = create_schedule(C)
    s[B].set_scope("shared")
    func = run(s, [A, C], lambda a: f(a) ** 2)
    (alloc,) = collect(func.body, L.Allocate)
    assert alloc.buffer.name == "B" and alloc.buffer.scope == "shared"
    assert alloc.buffer.shape == (10, 6)


# ----------------------------------------------------------------------------- attach


def test_compute_inline_substitutes_the_body():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] * B[i, j], name="C")
    s = create_schedule(C)
    s[B].compute_inline()
    func = run(s, [A, C], lambda a: f(a) ** 2)
    assert not collect(func.body, L.Allocate)
    assert loop_names(func) == ["i", "j"]


def test_compute_at_then_compute_root():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] + 1.0, name="C")
    s = create_schedule(C)
    s[B].compute_at(s[C], s[C].op.axis[0])
    func = run(s, [A, C], lambda a: f(a) + 1)
    (alloc,) = collect(func.body, L.Allocate)
    assert alloc.buffer.shape == (1, 6)
    s[B].compute_root()
    func = run(s, [A, C], lambda a: f(a) + 1)
    assert func.body.buffer.shape == (10, 6)  # an Allocate at function level


# ----------------------------------------------------------------------------- errors


def test_schedule_error_is_an_ember_error():
    assert issubclass(ScheduleError, EmberError)


def test_compute_at_unrelated_stage():
    A = te.placeholder((4,), name="A")
    B = te.compute((4,), lambda i: A[i] + 1.0, name="B")
    C = te.compute((4,), lambda i: A[i] * 2.0, name="C")
    D = te.compute((4,), lambda i: B[i] + C[i], name="D")
    s = create_schedule(D)
    with pytest.raises(ScheduleError, match=r"stage 'B'.*compute_at 'C' axis 'i'.*does not "
                                            r"consume"):
        s[B].compute_at(s[C], s[C].op.axis[0])


def test_compute_at_axis_of_another_stage():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] + 1.0, name="C")
    s = create_schedule(C)
    with pytest.raises(ScheduleError, match=r"stage 'C': compute_at of stage 'B': axis 'i' "
                                            r"does not belong to this stage"):
        s[B].compute_at(s[C], s[B].op.axis[0])


def test_compute_at_axis_split_afterwards_fails_at_lowering():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] + 1.0, name="C")
    s = create_schedule(C)
    i = s[C].op.axis[0]
    s[B].compute_at(s[C], i)
    s[C].split(i, factor=2)
    with pytest.raises(ScheduleError, match=r"stage 'B' is computed at axis 'i' of stage 'C', "
                                            r"which is no longer one of its loops"):
        lower(s, [A, C])


def test_compute_at_with_a_reader_outside_the_loop():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] + 1.0, name="C")
    D = te.compute(B.shape, lambda i, j: B[i, j] + C[i, j], name="D")
    s = create_schedule(D)
    s[B].compute_at(s[C], s[C].op.axis[1])
    with pytest.raises(ScheduleError, match=r"stage 'B' is computed at axis 'j' of stage 'C', "
                                            r"but stage 'D' reads it outside that loop"):
        lower(s, [A, D])


@pytest.mark.parametrize("primitive, verb", [("vectorize", "vectorized"),
                                             ("parallel", "parallelized")])
def test_vectorize_or_parallelize_reduction_axis(primitive, verb):
    A, B, C = matmul()
    s = create_schedule(C)
    with pytest.raises(ScheduleError, match=rf"stage 'C': .*axis 'r' is a reduction axis; a "
                                            rf"reduction cannot be {verb}"):
        getattr(s[C], primitive)(s[C].op.reduce_axis[0])


def test_vectorize_split_reduction_axis():
    A, B, C = matmul()
    s = create_schedule(C)
    ro, ri = s[C].split(s[C].op.reduce_axis[0], factor=4)
    with pytest.raises(ScheduleError, match=r"stage 'C': vectorize: axis 'r.inner' is a "
                                            r"reduction axis"):
        s[C].vectorize(ri)


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 0}, r"factor must be a positive integer, got 0"),
    ({"factor": -2}, r"factor must be a positive integer, got -2"),
    ({"nparts": 0}, r"nparts must be a positive integer, got 0"),
    ({"factor": 2, "nparts": 2}, r"give exactly one of factor and nparts"),
    ({}, r"give exactly one of factor and nparts"),
    ({"factor": 2.5}, r"factor must be a positive integer, got 2.5"),
])
def test_bad_split(kwargs, message):
    A, B, f = elementwise()
    s = create_schedule(B)
    with pytest.raises(ScheduleError, match=rf"stage 'B': split of axis 'i': {message}"):
        s[B].split(s[B].op.axis[0], **kwargs)


def test_split_of_an_axis_already_split():
    A, B, f = elementwise()
    s = create_schedule(B)
    i = s[B].op.axis[0]
    s[B].split(i, factor=2)
    with pytest.raises(ScheduleError, match=r"stage 'B': split: axis 'i' is no longer a loop "
                                            r"of this stage \(it was split or fused\); its loops "
                                            r"are: i.outer, i.inner, j"):
        s[B].split(i, factor=2)


def test_reorder_with_axis_of_another_stage():
    A, B, f = elementwise()
    C = te.compute(B.shape, lambda i, j: B[i, j] + 1.0, name="C")
    s = create_schedule(C)
    with pytest.raises(ScheduleError, match=r"stage 'C': reorder: axis 'j' does not belong to "
                                            r"this stage"):
        s[C].reorder(s[C].op.axis[0], s[B].op.axis[1])


def test_reorder_with_duplicate_axis():
    A, B, f = elementwise()
    s = create_schedule(B)
    i, j = s[B].op.axis
    with pytest.raises(ScheduleError, match=r"stage 'B': reorder: axis 'j' is given twice"):
        s[B].reorder(j, i, j)


def test_fuse_non_adjacent_axes():
    A = te.placeholder((2, 3, 4), name="A")
    B = te.compute((2, 3, 4), lambda i, j, k: A[i, j, k], name="B")
    s = create_schedule(B)
    i, j, k = s[B].op.axis
    with pytest.raises(ScheduleError, match=r"stage 'B': fuse: axes 'i' and 'k' are not "
                                            r"adjacent"):
        s[B].fuse(i, k)
    with pytest.raises(ScheduleError, match=r"fuse: axes 'j' and 'i' are not adjacent"):
        s[B].fuse(j, i)


def test_fuse_reduction_with_data_axis():
    A, B, C = matmul()
    s = create_schedule(C)
    with pytest.raises(ScheduleError, match=r"stage 'C': fuse: cannot fuse reduction and "
                                            r"data-parallel axes \('j' and 'r'\)"):
        s[C].fuse(s[C].op.axis[1], s[C].op.reduce_axis[0])


def test_inline_reduction_or_output():
    A, B, C = matmul()
    D = te.compute(C.shape, lambda i, j: C[i, j] * 2.0, name="D")
    s = create_schedule(D)
    with pytest.raises(ScheduleError, match=r"stage 'C': compute_inline: the stage reduces over "
                                            r"axis 'r'"):
        s[C].compute_inline()
    with pytest.raises(ScheduleError, match=r"stage 'D': compute_inline: an output stage"):
        s[D].compute_inline()


def test_bad_bind_and_placeholder_primitives():
    A, B, C = matmul()
    s = create_schedule(C)
    i, j = s[C].op.axis
    with pytest.raises(ScheduleError, match=r"stage 'C': bind of axis 'i': unknown thread tag "
                                            r"'threadIdx.w'"):
        s[C].bind(i, "threadIdx.w")
    s[C].bind(i, "threadIdx.x")
    with pytest.raises(ScheduleError, match=r"bind of axis 'j': loop 'i' is already bound"):
        s[C].bind(j, "threadIdx.x")
    with pytest.raises(ScheduleError, match=r"stage 'C': bind: axis 'r' is a reduction axis"):
        s[C].bind(s[C].op.reduce_axis[0], "threadIdx.y")
    with pytest.raises(ScheduleError, match=r"stage 'A': split: a placeholder"):
        s[A].split(i, factor=2)


def test_lower_needs_every_input_and_output():
    A, B, C = matmul()
    s = create_schedule(C)
    with pytest.raises(ScheduleError, match=r"output stage 'C' is not in args"):
        lower(s, [A, B])
    with pytest.raises(ScheduleError, match=r"stage 'C' reads placeholder 'B', which is not in "
                                            r"args"):
        lower(s, [A, C])

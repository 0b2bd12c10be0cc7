"""The injective schedule's copy paths (compiler/ops/cpu/injective.py, [Note: uniform selects]):
concat reads one input per store (a branch, not a select over every input), lane-uniform
vector conditions become scalar branches, branches leave the serial loops they do not depend
on, and every `inner_chunks` choice computes what the op's numpy reference does.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import check_kernel

from ember.compiler.ops import Workload, instantiate
from ember.compiler.ops.cpu.injective import (
    MAX_SELECT_BRANCHES,
    InjectiveSchedule,
    branch_uniform_selects,
)
from ember.compiler.ops.registry import get_schedule
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.ir.visitor import collect
from ember.target import Target

RNG = np.random.default_rng(11)


def sample(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    if dtype.startswith("int"):
        return RNG.integers(-100, 100, shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def lowered(op: str, shapes: list[tuple[int, ...]], attrs: dict, **knobs) -> L.PrimFunc:
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    inputs = tuple(TensorType(shape, "float32") for shape in shapes)
    workload = Workload(op, full, inputs, opdef.infer_types(full, inputs))
    target = Target.parse("llvm")
    space = get_schedule("cpu", op).space(workload, target)
    config = space.from_values({**space.default.as_dict(), **knobs}) if knobs else None
    return instantiate(workload, "cpu", target, config)


def stores_of(func: L.PrimFunc) -> list[L.Store]:
    return collect(func.body, L.Store)


def test_stacked_cache_concat_copies_each_input_once():
    # the KV-cache pattern: 12 layers concatenated along the leading axis
    func = lowered("concat", [(1, 2, 8, 64)] * 12, {"axis": 0})
    stores = stores_of(func)
    assert len(stores) == 12
    for store in stores:
        assert not collect(store.value, E.Select)
        assert len(collect(store.value, L.Load)) == 1
    read = {load.buffer.name for s in stores for load in collect(s.value, L.Load)}
    assert len(read) == 12


def test_branches_leave_the_serial_chunk_loop():
    func = lowered("concat", [(4, 3, 64), (5, 3, 64)], {"axis": 0}, inner_chunks=2)
    # outer loop: the concat axis; the branch on it sits outside the loop over the vectors
    branches = collect(func.body, L.IfThenElse)
    assert branches
    for branch in branches:
        for case in (branch.then_case, branch.else_case):
            if isinstance(case, L.For):
                assert case.kind is L.ForKind.SERIAL


def test_channel_concat_of_whole_vector_blocks_branches_per_block():
    # channel counts that are multiples of the vector width: the lane-varying condition
    # ramp(c) < 32 is the same for all lanes of an aligned block
    x = E.Var("x")
    a, b = L.Buffer("a", (64,), "float32"), L.Buffer("b", (64,), "float32")
    out = L.Buffer("out", (64,), "float32")
    ramp = E.Ramp(x * 16, E.const(1), 16)
    condition = E.LT(ramp, E.Broadcast(E.const(32), 16))
    store = L.Store(out, (ramp,), E.Select(condition, L.Load(a, (ramp,)), L.Load(b, (ramp,))))
    func = branch_uniform_selects(L.PrimFunc("f", (a, b, out), L.loop(x, 4, store)))
    (branch,) = collect(func.body, L.IfThenElse)
    assert branch.condition.dtype == "bool"
    # a boundary inside a vector keeps the select
    odd = E.LT(ramp, E.Broadcast(E.const(24), 16))
    kept = L.Store(out, (ramp,), E.Select(odd, L.Load(a, (ramp,)), L.Load(b, (ramp,))))
    func = branch_uniform_selects(L.PrimFunc("f", (a, b, out), L.loop(x, 4, kept)))
    assert not collect(func.body, L.IfThenElse)


def test_selects_of_computed_values_and_of_loaded_conditions_stay():
    x = E.Var("x")
    a, out = L.Buffer("a", (8,), "float32"), L.Buffer("out", (8,), "float32")
    value = L.Load(a, (x,))
    relu = L.Store(out, (x,), E.Select(E.GT(value, E.const(0.0)), value, E.const(0.0)))
    positional = L.Store(out, (x,), E.Select(E.LT(x, E.const(4)), E.const(1.0),
                                             E.const(2.0)))
    for store in (relu, positional):
        func = branch_uniform_selects(L.PrimFunc("f", (a, out), L.loop(x, 8, store)))
        assert not collect(func.body, L.IfThenElse)


def test_branch_count_is_bounded():
    func = lowered("concat", [(2, 64)] * (MAX_SELECT_BRANCHES + 8), {"axis": 0})
    assert len(stores_of(func)) <= MAX_SELECT_BRANCHES


@pytest.mark.parametrize("inner_chunks", [0, 1, 2])
@pytest.mark.parametrize("shapes, axis", [
    ([(12, 1, 3, 40, 64)] * 3, 0),          # stacked caches
    ([(2, 32, 5, 5), (2, 16, 5, 5), (2, 3, 5, 5)], 1),  # channel concat, one odd part
    ([(3, 7, 5), (3, 7, 11)], 2),            # along the vector axis
    ([(40, 33)] * 2 + [(1, 33)], 0),
], ids=str)
def test_concat_matches_reference(shapes, axis, inner_chunks):
    inputs = [sample(shape) for shape in shapes]
    opdef = get_op("concat")
    full = opdef.make_attrs({"axis": axis})
    types = tuple(TensorType.of(x) for x in inputs)
    workload = Workload("concat", full, types, opdef.infer_types(full, types))
    space = InjectiveSchedule().space(workload, Target.parse("llvm"))
    config = space.from_values({**space.default.as_dict(), "inner_chunks": inner_chunks})
    check_kernel("concat", inputs, {"axis": axis}, config=config)


@pytest.mark.parametrize("inner_chunks", [0, 2])
@pytest.mark.parametrize("op, inputs, attrs", [
    ("pad", [sample((9, 4, 40))], {"pads": ((1, 2), (0, 3), (5, 0))}),
    ("transpose", [sample((16, 12, 40))], {"perm": (1, 0, 2)}),
    ("concat", [sample((20, 8), "int64"), sample((20, 3), "int64")], {"axis": 1}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_copies_match_reference(op, inputs, attrs, inner_chunks):
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    types = tuple(TensorType.of(x) for x in inputs)
    workload = Workload(op, full, types, opdef.infer_types(full, types))
    space = get_schedule("cpu", op).space(workload, Target.parse("llvm"))
    config = space.from_values({**space.default.as_dict(), "inner_chunks": inner_chunks})
    check_kernel(op, inputs, attrs, config=config)


@pytest.mark.parametrize("tile", [0, 4, 16])
@pytest.mark.parametrize("shape, perm", [
    ((3, 40, 33), (0, 2, 1)),        # tails on both tiled axes
    ((2, 1, 48, 32), (0, 3, 1, 2)),  # a size-1 axis in between
    ((64, 16), (1, 0)),
    ((5, 6, 7), (0, 1, 2)),          # the identity permutation copies rows: no tiles
], ids=str)
def test_tiled_transpose_matches_reference(shape, perm, tile):
    from ember.compiler.ops.cpu.injective import TransposeSchedule

    x = sample(shape)
    opdef = get_op("transpose")
    full = opdef.make_attrs({"perm": perm})
    types = (TensorType.of(x),)
    workload = Workload("transpose", full, types, opdef.infer_types(full, types))
    space = TransposeSchedule().space(workload, Target.parse("llvm"))
    config = space.from_values({**space.default.as_dict(), "tile": tile})
    check_kernel("transpose", [x], {"perm": perm}, config=config)


def test_transpose_tiles_by_default_when_the_inner_axis_moves():
    func = lowered("transpose", [(8, 256, 128)], {"perm": (0, 2, 1)})
    names = [f.var.name for f in collect(func.body, L.For)]
    assert any("inner" in name for name in names)  # the rows of a tile


def test_cache_scatter_copies_in_parallel_past_a_unit_batch_axis():
    # a KV-cache write: data (batch 1, heads, positions, head_dim), one position per head
    data = sample((1, 4, 96, 64))
    index = np.broadcast_to(np.array([5, 7, 95, 0]).reshape(1, 4, 1, 1), (1, 4, 1, 64))
    updates = sample((1, 4, 1, 64))
    attrs = {"axis": 2}
    check_kernel("scatter_elements", [data, index.astype(np.int64).copy(), updates], attrs)
    opdef = get_op("scatter_elements")
    full = opdef.make_attrs(attrs)
    types = (TensorType.of(data), TensorType((1, 4, 1, 64), "int64"), TensorType.of(updates))
    func = instantiate(Workload("scatter_elements", full, types, opdef.infer_types(full, types)),
                       "cpu", Target.parse("llvm"))
    assert [f for f in collect(func.body, L.For) if f.kind is L.ForKind.PARALLEL]


def test_branches_drop_the_clamps_of_the_input_they_chose():
    # concat of two 32-channel blocks: each arm's clamp cannot bind once the branch chose it
    from ember.ir.interpreter import run_primfunc

    x = E.Var("x")
    a, b = L.Buffer("a", (32,), "float32"), L.Buffer("b", (32,), "float32")
    out = L.Buffer("out", (64,), "float32")
    ramp = E.Ramp(x * 16, E.const(1), 16)
    shifted = E.Ramp(x * 16 - 32, E.const(1), 16)
    first = L.Load(a, (E.Min(ramp, E.Broadcast(E.const(31), 16)),))
    # (the last arm has no upper bound from a branch: only its lower clamp can go)
    second = L.Load(b, (E.Max(shifted, E.Broadcast(E.const(0), 16)),))
    condition = E.LT(ramp, E.Broadcast(E.const(32), 16))
    store = L.Store(out, (ramp,), E.Select(condition, first, second))
    func = branch_uniform_selects(L.PrimFunc("f", (a, b, out), L.loop(x, 4, store)))
    for branch_store in collect(func.body, L.Store):
        assert not collect(branch_store.value, (E.Min, E.Max))
        (load,) = collect(branch_store.value, L.Load)
        assert isinstance(load.indices[0], E.Ramp)
    inputs = [np.arange(32, dtype=np.float32), np.arange(32, 64, dtype=np.float32)]
    result = np.zeros(64, np.float32)
    run_primfunc(func, [*inputs, result])
    np.testing.assert_array_equal(result, np.arange(64, dtype=np.float32))

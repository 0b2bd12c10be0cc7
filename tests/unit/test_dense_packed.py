"""dense_packed (ir/ops/dense.py, compiler/ops/{compute,cpu}/dense.py) and the weight-packing
pass (compiler/passes/pack_weights.py): the layout, which matmuls get packed, the kernel
against its numpy reference over shapes and configs, fused epilogues, and the whole path
through ember.compile against onnx's reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.compiler.kernels import graph_kernels
from ember.compiler.ops import Workload
from ember.compiler.ops.cpu.dense import panel_width
from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.registry import get_schedule
from ember.compiler.passes import PIPELINES, fuse
from ember.compiler.passes.pack_weights import pack_weights
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.ir.ops.dense import pack_dense_weight, unpack_dense_weight
from ember.target import Target
from ember.tests.support import check_kernel

LLVM = Target.parse("llvm")
F32 = "float32"
#: float32 sums of up to a few hundred products, against numpy's differently ordered sums
TOL = {"rtol": 1e-4, "atol": 1e-4}


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def workload(x_shape, k, n, nb):
    op = get_op("dense_packed")
    attrs = op.make_attrs({"n": n})
    types = (TensorType(tuple(x_shape), F32), TensorType((-(-n // nb), k, nb), F32))
    return Workload("dense_packed", attrs, types, op.infer_types(attrs, types))


# ----------------------------------------------------------------------------- the op


@pytest.mark.parametrize("k, n, nb", [(5, 7, 4), (8, 32, 16), (3, 1, 16), (6, 33, 16)])
def test_pack_unpack_round_trip_pads_with_zeros(k, n, nb):
    b = rand((k, n))
    w = pack_dense_weight(b, nb)
    assert w.shape == (-(-n // nb), k, nb)
    np.testing.assert_array_equal(unpack_dense_weight(w, n), b)
    tail = w[-1, :, n - (w.shape[0] - 1) * nb:]
    assert not tail.any()
    # W[p, k, c] = B[k, p * nb + c]
    p, row, c = w.shape[0] - 1, k - 1, (n - 1) % nb
    assert w[p, row, c] == b[row, p * nb + c]


def test_reference_is_matmul_with_batch_axes():
    x, b = rand((2, 3, 6)), rand((6, 10), 1)
    (out,) = get_op("dense_packed").evaluate(get_op("dense_packed").make_attrs({"n": 10}),
                                             [x, pack_dense_weight(b, 4)])
    np.testing.assert_allclose(out, x @ b, rtol=1e-6)


@pytest.mark.parametrize("x_shape, w_shape, n", [
    ((4, 5), (2, 6, 4), 8),     # K mismatch
    ((4, 6), (2, 6, 4), 9),     # n beyond the panels
    ((4, 6), (2, 6, 4), 4),     # n leaves a whole panel empty
    ((4, 6), (6, 8), 8),        # an unpacked weight
])
def test_infer_rejects_inconsistent_shapes(x_shape, w_shape, n):
    op = get_op("dense_packed")
    with pytest.raises(ShapeError):
        op.infer_types(op.make_attrs({"n": n}), (TensorType(x_shape, F32),
                                                 TensorType(w_shape, F32)))


# ----------------------------------------------------------------------------- the pass


def _matmul_graph(x_shape, b, b_constant=True):
    g = GraphBuilder("g")
    x = g.add_input("x", TensorType(tuple(x_shape), str(b.dtype)))
    w = (g.add_constant(b, "w") if b_constant
         else g.add_input("w", TensorType(b.shape, str(b.dtype))))
    (y,) = g.add_node("matmul", [x, w], hint="y")
    return g.build([y])


@pytest.mark.parametrize("x_shape", [(4, 6), (1, 6), (6,), (2, 3, 6)])
def test_constant_2d_weights_get_packed(x_shape):
    b = rand((6, 20), 1)
    before = _matmul_graph(x_shape, b)
    after = pack_weights(before, panel=16)
    assert [node.op for node in after.nodes] == ["dense_packed"]
    (node,) = after.nodes
    assert node.attrs.n == 20 and after.types[node.inputs[1]].shape == (2, 6, 16)
    assert after.types[after.outputs[0]] == before.types[before.outputs[0]]
    assert "w" not in after.constants  # the unpacked weight is dead
    x = rand(x_shape, 2)
    weight = after.constants[node.inputs[1]]
    (out,) = get_op("dense_packed").evaluate(node.attrs, [x, weight])
    np.testing.assert_allclose(out, x @ b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["computed", "3d", "int", "vector"])
def test_other_matmuls_stay(case):
    if case == "computed":
        before = _matmul_graph((4, 6), rand((6, 8)), b_constant=False)
    elif case == "3d":
        before = _matmul_graph((2, 4, 6), rand((2, 6, 8)))
    elif case == "int":
        before = _matmul_graph((4, 6), np.arange(48, dtype=np.int32).reshape(6, 8))
    else:  # a 1-D second operand: a matrix-vector product without columns
        before = _matmul_graph((4, 6), rand((6,)))
    assert pack_weights(before) is before


def test_a_large_computed_weight_is_packed_at_run_time():
    b = rand((256, 260), 1)
    before = _matmul_graph((256, 256), b, b_constant=False)
    after = pack_weights(before, panel=16)
    assert [node.op for node in after.nodes] == ["pad", "reshape", "transpose", "dense_packed"]
    feeds = {"x": rand((256, 256), 2), "w": b}
    values = dict(feeds)
    for node in after.nodes:
        arrays = [values[v] for v in node.inputs]
        values.update(zip(node.outputs, get_op(node.op).evaluate(node.attrs, arrays)))
    np.testing.assert_allclose(values[after.outputs[0]], feeds["x"] @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1030, 1040])
def test_a_ragged_computed_weight_is_packed_from_fewer_rows(n):
    before = _matmul_graph((16, 1024), rand((1024, n), 1), b_constant=False)
    ragged = n % cpu_facts(LLVM).lanes(F32) != 0
    assert (pack_weights(before, panel=16) is not before) == ragged


def test_run_time_packing_compiles_and_matches(monkeypatch):
    from ember.compiler.passes import pack_weights as module

    monkeypatch.setattr(module, "RUNTIME_PACK_ROWS", 1)
    monkeypatch.setattr(module, "RUNTIME_PACK_WORK", 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "plain",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [9, 20]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [20, 35])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [9, 35])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    a, b = rand((9, 20)), rand((20, 35), 1)
    (out,) = ember.compile(model, target="llvm").run({"a": a, "b": b})
    np.testing.assert_allclose(out, a @ b, **TOL)


def test_a_shared_weight_is_packed_once():
    g = GraphBuilder("g")
    x = g.add_input("x", TensorType((4, 6), F32))
    w = g.add_constant(rand((6, 8)), "w")
    (y1,) = g.add_node("matmul", [x, w], hint="y1")
    (y2,) = g.add_node("matmul", [x, w], hint="y2")
    (y,) = g.add_node("add", [y1, y2], hint="y")
    after = pack_weights(g.build([y]), panel=16)
    packed = {node.inputs[1] for node in after.nodes if node.op == "dense_packed"}
    assert len(packed) == 1 and len(after.constants) == 1


def test_opt_level_3_packs_weights():
    assert "pack_weights" in PIPELINES[3] and "pack_weights" not in PIPELINES[2]


def test_panel_width_heuristic():
    facts = CpuFacts(vector_bytes=64, cores=2)
    assert panel_width(128, 768, 50257, facts) == 32   # GEMM: two vectors
    assert panel_width(1, 768, 50257, facts) == 64     # GEMV: four
    assert panel_width(1, 768, 40, facts) == 16        # narrow: panels for both cores
    assert panel_width(160, 192, 64, facts) == 32      # narrow GEMM: row blocks share
    assert panel_width(64, 8, 10, facts) == 16         # one vector holds n
    assert panel_width(1, 8, 5, CpuFacts(vector_bytes=32, cores=1)) % 8 == 0


def test_space_of_a_large_product_leaves_room_to_tune():
    template = get_schedule("cpu", "dense_packed")
    facts = cpu_facts(LLVM)
    nb = panel_width(128, 768, 50257, facts)
    space = template.space(workload((128, 768), 768, 50257, nb), LLVM)
    assert len(space) >= 1000
    assert space.is_valid(space.default)


# ----------------------------------------------------------------------------- the kernel


@pytest.mark.parametrize("x_shape, n, nb", [
    ((24, 64), 64, 32),       # N a multiple of the panel
    ((13, 40), 70, 32),       # N not a multiple, awkward M
    ((1, 64), 100, 64),       # GEMV
    ((3, 48), 50, 16),        # small M
    ((2, 3, 16), 40, 16),     # batch axes in x
    ((16,), 40, 16),          # a 1-D x
    ((64, 32), 50, 32),
])
def test_kernel_matches_reference(x_shape, n, nb):
    k = x_shape[-1]
    check_kernel("dense_packed", [rand(x_shape), pack_dense_weight(rand((k, n), 1), nb)],
                 {"n": n}, **TOL)


@pytest.mark.parametrize("values", [
    {"order": "rows"},
    {"parallel": "all"},
    {"parallel": "none"},
    {"tile_n": 16, "unroll_k": 1},
    {"panel_group": 3},
    {"tile_m": 5, "unroll_rows": False},   # a guarded row tail
])
def test_kernel_matches_reference_at_other_configs(values):
    x, b = rand((20, 32)), rand((32, 72), 1)
    load = workload(x.shape, 32, 72, 32)
    space = get_schedule("cpu", "dense_packed").space(load, LLVM)
    config = space.from_values({**space.default.as_dict(), **values})
    check_kernel("dense_packed", [x, pack_dense_weight(b, 32)], {"n": 72}, config=config,
                 **TOL)


# ----------------------------------------------------------------------------- epilogues


def _dense_model(m, k, n, epilogue, batch=()):
    weight = numpy_helper.from_array(rand((k, n), 3), "w")
    bias = numpy_helper.from_array(rand((n,), 4), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["a"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*batch, m, k])]
    if epilogue == "gelu":
        half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
        one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
        root = numpy_helper.from_array(np.array(2 ** -0.5, np.float32), "root")
        nodes += [helper.make_node("Mul", ["a", "root"], ["s"]),
                  helper.make_node("Erf", ["s"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["e1"]),
                  helper.make_node("Mul", ["a", "e1"], ["ae"]),
                  helper.make_node("Mul", ["ae", "half"], ["y"])]
        extra = [half, one, root]
    elif epilogue == "residual":
        nodes += [helper.make_node("Add", ["a", "skip"], ["y"])]
        inputs.append(helper.make_tensor_value_info("skip", TensorProto.FLOAT,
                                                    [*batch, m, n]))
        extra = []
    else:
        nodes[-1] = helper.make_node("Add", ["mm", "bias"], ["y"])
        extra = []
    graph = helper.make_graph(
        nodes, "dense", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*batch, m, n])],
        [weight, bias, *extra])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("m, batch", [(1, ()), (7, ()), (5, (2,))])
@pytest.mark.parametrize("epilogue", ["bias", "gelu", "residual"])
def test_epilogue_fuses_into_the_packed_kernel(m, batch, epilogue):
    model = _dense_model(m, 24, 40, epilogue, batch)
    module = ember.compile(model, target="llvm")
    reference = ember.compile(model, target="reference", opt_level=0)
    feeds = {spec.name: rand(spec.shape, 5) for spec in reference.inputs}
    np.testing.assert_allclose(module.run(feeds)[0], reference.run(feeds)[0], **TOL)
    from ember.compiler.frontend.onnx import import_onnx
    from ember.compiler.passes import optimize

    graph = optimize(import_onnx(model), 3)
    kernels = graph_kernels(graph, "cpu", LLVM, [g.nodes for g in fuse(graph).groups])
    (call,) = kernels.calls
    assert call.ops[0] == "dense_packed" and len(call.ops) > 1

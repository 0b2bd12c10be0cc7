"""The static memory plan: no two live values share bytes, reuse beats one buffer per value,
reshapes alias their input, and the AOT executor returns every kind of graph output."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.kernels import graph_kernels
from ember.compiler.memory_plan import ALIAS_OPS, plan_program
from ember.ir.graph import Graph, numpy_dtype
from ember.target import Target
from ember.workloads.light import light_model

LLVM = Target.parse("llvm")


def _light_graph(name: str) -> Graph:
    return import_onnx(light_model(name))


def _intervals(graph, program):
    """(offset, bytes, value) -> [first step that touches it, last step], aliases counted as
    their source."""
    source = {n.outputs[0]: n.inputs[0] for n in graph.nodes
              if n.op in ALIAS_OPS and n.outputs[0] not in graph.outputs}
    live: dict[tuple, list] = {}
    for k, step in enumerate(program.steps):
        for name in step.args:
            while name in source:
                name = source[name]
            storage = program.storage(name)
            if storage.kind != "arena":
                continue
            b = program.buffers[name]
            size = int(np.prod(b.shape, dtype=np.int64)) * numpy_dtype(b.dtype).itemsize
            interval = live.setdefault((storage.index, size, name), [k, k])
            interval[1] = k
    return live


@pytest.mark.parametrize("model", ["squeezenet", "resnet50", "inception_v2"])
def test_values_live_at_once_never_share_bytes(model):
    graph = _light_graph(model)
    program = plan_program(graph, graph_kernels(graph, "cpu", LLVM).calls)
    intervals = sorted(_intervals(graph, program).items(), key=lambda kv: kv[1][0])
    for i, ((offset_a, size_a, name_a), (_, end_a)) in enumerate(intervals):
        for (offset_b, size_b, name_b), (start_b, _) in intervals[i + 1:]:
            if start_b > end_a:
                break
            if size_a == 0 or size_b == 0:
                continue
            overlap = offset_a < offset_b + size_b and offset_b < offset_a + size_a
            assert not overlap, f"{name_a} and {name_b} are live together and share bytes"
    assert program.arena_bytes < program.naive_bytes / 2


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_a_chain_reuses_two_buffers():
    nodes = [helper.make_node("Relu" if k % 2 else "Neg", [f"v{k}"], [f"v{k + 1}"])
             for k in range(8)]
    graph = import_onnx(_model(nodes, [_value("v0", [1024])], [_value("v8", [1024])]))
    program = plan_program(graph, graph_kernels(graph, "cpu", LLVM).calls)
    assert program.arena_bytes == 2 * 4096
    assert program.naive_bytes == 8 * 4096


def test_reshape_aliases_its_input_and_runs_no_kernel():
    shape = numpy_helper.from_array(np.array([4, 8], np.int64), "shape")
    nodes = [helper.make_node("Neg", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    model = _model(nodes, [_value("x", [32])], [_value("y", [4, 8])], [shape])
    graph = import_onnx(model)
    program = plan_program(graph, graph_kernels(graph, "cpu", LLVM).calls)
    assert [s.ops for s in program.steps] == [("neg",), ("relu",)]
    a, b = (n.outputs[0] for n in graph.nodes[:2])
    assert program.storage(a) == program.storage(b)
    x = np.linspace(-1, 1, 32, dtype=np.float32)
    np.testing.assert_array_equal(ember.compile(model).run({"x": x})[0],
                                  np.maximum(-x, 0).reshape(4, 8))


def test_outputs_that_are_inputs_constants_reshapes_or_repeated():
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
    const = numpy_helper.from_array(np.arange(3, dtype=np.float32), "c")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["rr"]),
             helper.make_node("Identity", ["c"], ["ci"])]
    model = _model(nodes, [_value("x", [4])],
                   [_value("r", [4]), _value("rr", [2, 2]), _value("ci", [3])], [shape, const])
    module = ember.compile(model)
    x = np.array([-1, 2, -3, 4], np.float32)
    r, rr, ci = module.run({"x": x})
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_array_equal(rr, np.maximum(x, 0).reshape(2, 2))
    np.testing.assert_array_equal(ci, np.arange(3, dtype=np.float32))
    r2, _, _ = module.run({"x": -x})
    np.testing.assert_array_equal(r, np.maximum(x, 0))  # earlier results are not overwritten
    np.testing.assert_array_equal(r2, np.maximum(-x, 0))

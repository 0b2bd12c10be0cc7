"""Fused kernels (compiler/ops/fused.py): one kernel per group of nodes, checked against the
numpy reference of the unfused graph on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.backends.llvm import build as llvm_build
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.kernels import graph_kernels
from ember.target import Target

LLVM = Target.parse("llvm")
RNG = np.random.default_rng(0)


def _const(name, shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inputs, output_shape, initializers):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def check_as_one_group(model, expected_kernels=1):
    graph = import_onnx(model)
    kernels = graph_kernels(graph, "cpu", LLVM, [list(range(len(graph.nodes)))])
    assert len(kernels.calls) == expected_kernels, [c.ops for c in kernels.calls]
    module = llvm_build.build(graph, LLVM, kernels)
    reference = ember.compile(model, target="reference", opt_level=0)
    feeds = {spec.name: RNG.standard_normal(spec.shape).astype(np.float32)
             for spec in reference.inputs}
    np.testing.assert_allclose(module.run(feeds)[0], reference.run(feeds)[0],
                               rtol=1e-4, atol=1e-5)
    return kernels


@pytest.mark.parametrize("group", [1, 2])
def test_conv_with_producer_and_epilogue(group):
    nodes = [helper.make_node("Relu", ["x"], ["x1"]),
             helper.make_node("Conv", ["x1", "w"], ["c"], pads=[1, 1, 1, 1], group=group),
             helper.make_node("Add", ["c", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Add", ["r", "skip"], ["y"])]
    model = _model(nodes, [("x", [1, 8, 10, 12]), ("skip", [1, 16, 10, 12])], [1, 16, 10, 12],
                   [_const("w", [16, 8 // group, 3, 3]), _const("b", [1, 16, 1, 1])])
    kernels = check_as_one_group(model)
    assert kernels.calls[0].ops == ("relu", "conv", "add", "relu", "add")


def test_depthwise_conv_with_clip_epilogue():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], group=8,
                              strides=[2, 2]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    lo = numpy_helper.from_array(np.array(0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(6, np.float32), "hi")
    check_as_one_group(_model(nodes, [("x", [1, 8, 15, 15])], [1, 8, 8, 8],
                              [_const("w", [8, 1, 3, 3]), lo, hi]))


@pytest.mark.parametrize("m", [1, 7, 64])
def test_matmul_with_bias_and_gelu_epilogue(m):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["a"]),
             helper.make_node("Erf", ["a"], ["e"]),
             helper.make_node("Mul", ["a", "e"], ["y"])]
    check_as_one_group(_model(nodes, [("x", [m, 48])], [m, 40],
                              [_const("w", [48, 40]), _const("b", [40])]))


def test_injective_chain_is_one_kernel():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Add", ["t", "b"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Mul", ["s", "a"], ["y"])]
    check_as_one_group(_model(nodes, [("x", [2, 33, 17])], [2, 17, 33], [_const("b", [33])]))


def test_pool_epilogue_runs_as_its_own_kernel():
    # pooling's template takes no epilogue: the group becomes the pool and an injective kernel
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["y"])]
    check_as_one_group(_model(nodes, [("x", [1, 4, 8, 8])], [1, 4, 4, 4],
                              [_const("s", [1, 4, 1, 1])]), expected_kernels=2)


def test_equal_groups_share_one_kernel():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["y"])]
    model = _model(nodes, [("x", [1, 8, 6, 6])], [1, 8, 6, 6],
                   [_const("w", [8, 8, 3, 3]), _const("w2", [8, 8, 3, 3])])
    graph = import_onnx(model)
    kernels = graph_kernels(graph, "cpu", LLVM, [[0, 1], [2, 3]])
    assert len(kernels.calls) == 2 and len(kernels.names) == 1
    module = llvm_build.build(graph, LLVM, kernels)
    x = RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(module.run({"x": x})[0],
                               ember.compile(model, target="reference").run({"x": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_conv_with_bias_input_and_residual_epilogue():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "skip"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    check_as_one_group(_model(nodes, [("x", [1, 8, 9, 9]), ("skip", [1, 8, 9, 9])],
                              [1, 8, 9, 9], [_const("w", [8, 8, 3, 3]), _const("b", [8])]))

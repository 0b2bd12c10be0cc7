"""Fusion partitioning (compiler/passes/fusion.py): TVM's rules on small graphs, the plan's
invariants that the fused-kernel code generator relies on, and the light models' kernel counts."""

import logging

import numpy as np
import onnx
import pytest
from support import evaluate

from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.passes import FusedGroup, FusionPlan, fuse, optimize
from ember.ir.builder import GraphBuilder
from ember.ir.graph import Graph, TensorType
from ember.ir.ops import Pattern, get_op
from ember.workloads.light import LIGHT_MODELS, light_model_path

F32 = "float32"
CONV = {"strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1)}


def check_plan(graph: Graph, plan: FusionPlan, max_group_size: int = 256) -> None:
    """Assert every invariant the fused-kernel code generator relies on."""
    seen = sorted(i for group in plan.groups for i in group.nodes)
    assert seen == list(range(len(graph.nodes))), "every node in exactly one group"
    group_of = plan.group_of()
    outputs = set(graph.outputs)
    for g, group in enumerate(plan.groups):
        nodes = group.nodes
        assert list(nodes) == sorted(nodes) and 1 <= len(nodes) <= max_group_size
        for i in nodes[:-1]:  # only the last node's value leaves the group
            node = graph.nodes[i]
            assert not outputs.intersection(node.outputs), (g, node)
            for out in node.outputs:
                assert all(group_of[graph.nodes.index(r)] == g
                           for r in graph.consumers.get(out, ())), (g, node)
        patterns = [get_op(graph.nodes[i].op).pattern for i in nodes]
        heavy = [i for i, p in zip(nodes, patterns) if p > Pattern.INJECTIVE]
        assert len(heavy) <= 1, [graph.nodes[i].op for i in nodes]
        if len(nodes) > 1:
            assert Pattern.OPAQUE not in patterns
            assert all(len(graph.nodes[i].outputs) == 1 for i in nodes)
        if heavy:
            anchor = heavy[0]
            assert group.anchor == anchor
            shape = graph.types[graph.nodes[anchor].outputs[0]].shape
            for i, p in zip(nodes, patterns):
                if i != anchor:
                    assert p <= Pattern.BROADCAST
                if i > anchor:
                    assert graph.types[graph.nodes[i].outputs[0]].shape == shape
        else:
            assert group.anchor == nodes[-1]
        # dependence order: every group's inputs come from earlier groups
        for i in nodes:
            for value in graph.nodes[i].inputs:
                producer = graph.producers.get(value)
                if producer is not None:
                    assert group_of[graph.nodes.index(producer)] <= g


def ops_of(graph: Graph, plan: FusionPlan) -> list[list[str]]:
    return [[graph.nodes[i].op for i in group.nodes] for group in plan.groups]


def planned(graph: Graph) -> tuple[list[list[str]], FusionPlan]:
    plan = fuse(graph)
    check_plan(graph, plan)
    return ops_of(graph, plan), plan


def conv_input(b: GraphBuilder, channels: int = 4) -> tuple[str, str]:
    x = b.add_input("x", TensorType((1, channels, 6, 6), F32))
    w = b.add_constant(np.ones((channels, channels, 3, 3), np.float32), "w")
    return x, w


# ----------------------------------------------------------------------------- TVM's rules


def test_conv_bias_relu_is_one_kernel():
    b = GraphBuilder()
    x, w = conv_input(b)
    bias = b.add_constant(np.ones((4, 1, 1), np.float32), "bias")
    (y,) = b.add_node("conv", [x, w], CONV)
    (y,) = b.add_node("add", [y, bias])
    (y,) = b.add_node("relu", [y])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["conv", "add", "relu"]]
    assert plan.groups == (FusedGroup((0, 1, 2), 0),)
    assert plan.refused == ()


def test_two_convs_never_chain():
    b = GraphBuilder()
    x, w = conv_input(b)
    (y,) = b.add_node("conv", [x, w], CONV)
    (y,) = b.add_node("relu", [y])
    (y,) = b.add_node("conv", [y, w], CONV)
    (y,) = b.add_node("relu", [y])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["conv", "relu"], ["conv", "relu"]]
    (refusal,) = plan.refused
    assert "not elementwise" in refusal.reason


def test_residual_add_joins_the_second_conv():
    b = GraphBuilder()
    x, w = conv_input(b)
    (a,) = b.add_node("conv", [x, w], CONV)
    (a,) = b.add_node("relu", [a])
    (c,) = b.add_node("conv", [a, w], CONV)
    (y,) = b.add_node("add", [c, a])
    (y,) = b.add_node("relu", [y])
    graph = b.build([y])
    groups, _ = planned(graph)
    assert groups == [["conv", "relu"], ["conv", "add", "relu"]]


def test_broadcasting_epilogue_is_refused():
    # The add broadcasts the conv's output up: not elementwise, so not an epilogue.
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 4, 1, 1), F32))
    other = b.add_input("other", TensorType((1, 4, 6, 6), F32))
    w = b.add_constant(np.ones((4, 4, 1, 1), np.float32), "w")
    (y,) = b.add_node("conv", [x, w], {**CONV, "pads": (0, 0, 0, 0)})
    (y,) = b.add_node("add", [y, other])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["conv"], ["add"]]
    assert "not elementwise (broadcast on the way)" in plan.refused[0].reason


def test_elementwise_prologue_fuses_into_a_reduction_which_never_starts_one():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 8), F32))
    (y,) = b.add_node("exp", [x])
    (y,) = b.add_node("mul", [y, y])
    (s,) = b.add_node("reduce_sum", [y], {"axes": (1,)})
    (s,) = b.add_node("sqrt", [s])
    graph = b.build([s])
    groups, plan = planned(graph)
    assert groups == [["exp", "mul", "reduce_sum"], ["sqrt"]]
    assert plan.groups[0].anchor == 2
    assert [r.reason for r in plan.refused] == ["a reduction never starts a fusion"]


def test_injective_chain_is_one_kernel_anchored_at_its_last_node():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3, 4), F32))
    (y,) = b.add_node("relu", [x])
    (y,) = b.add_node("transpose", [y], {"perm": (0, 2, 1)})
    (y,) = b.add_node("reshape", [y], {"shape": (2, 12)})
    (y,) = b.add_node("sigmoid", [y])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["relu", "transpose", "reshape", "sigmoid"]]
    assert plan.groups[0].anchor == 3


def test_injective_op_does_not_feed_a_conv_or_matmul():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3, 4), F32))
    w = b.add_constant(np.ones((12, 5), np.float32), "w")
    (y,) = b.add_node("reshape", [x], {"shape": (2, 12)})
    (y,) = b.add_node("matmul", [y, w])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["reshape"], ["matmul"]]
    assert "out_elemwise_fusable" in plan.refused[0].reason


def test_diamond_fuses_at_its_post_dominator():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((4, 4), F32))
    (a,) = b.add_node("exp", [x])
    (left,) = b.add_node("relu", [a])
    (right,) = b.add_node("neg", [a])
    (y,) = b.add_node("add", [left, right])
    graph = b.build([y])
    groups, _ = planned(graph)
    assert groups == [["exp", "relu", "neg", "add"]]


def test_diamond_through_a_conv_is_refused():
    b = GraphBuilder()
    x, w = conv_input(b)
    (a,) = b.add_node("relu", [x])
    (c,) = b.add_node("conv", [a, w], CONV)
    (y,) = b.add_node("add", [c, a])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["relu"], ["conv", "add"]]
    assert any(r.node == plan_label(graph, 0) and "out_elemwise_fusable" in r.reason
               for r in plan.refused)


def plan_label(graph: Graph, index: int) -> str:
    from ember.compiler.passes.fusion import node_label

    return node_label(graph, index)


def test_graph_output_ends_its_group():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((4, 4), F32))
    (a,) = b.add_node("exp", [x])
    (y,) = b.add_node("relu", [a])
    graph = b.build([a, y])
    groups, plan = planned(graph)
    assert groups == [["exp"], ["relu"]]
    assert plan.refused[0].reason == "its value is a graph output, so it ends its group"
    assert plan.refused[0].into == plan_label(graph, 1)


def test_opaque_and_multi_output_nodes_stay_alone():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((4, 6), F32))
    (a,) = b.add_node("exp", [x])
    (c,) = b.add_node("cumsum", [a], {"axis": 1})
    (c,) = b.add_node("relu", [c])
    values, _ = b.add_node("topk", [c], {"k": 2, "axis": 1})
    (y,) = b.add_node("neg", [values])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["exp"], ["cumsum"], ["relu"], ["topk"], ["neg"]]
    reasons = " | ".join(r.reason for r in plan.refused)
    assert "opaque" in reasons and "multi-output" in reasons


def test_side_producer_of_an_epilogue_is_refused():
    b = GraphBuilder()
    x, w = conv_input(b)
    other = b.add_input("other", TensorType((1, 4, 6, 6), F32))
    (c,) = b.add_node("conv", [x, w], CONV)
    (side,) = b.add_node("sigmoid", [other])
    (y,) = b.add_node("add", [c, side])
    graph = b.build([y])
    groups, plan = planned(graph)
    assert groups == [["sigmoid"], ["conv", "add"]]
    assert "side input" in plan.refused[0].reason


def test_group_size_limit():
    b = GraphBuilder()
    (y,) = (b.add_input("x", TensorType((4,), F32)),)
    for _ in range(10):
        (y,) = b.add_node("neg", [y])
    graph = b.build([y])
    plan = fuse(graph, max_group_size=4)
    check_plan(graph, plan, max_group_size=4)
    assert [len(g.nodes) for g in plan.groups] == [4, 4, 2]
    assert "more than 4" in plan.refused[0].reason


def test_refusals_are_logged(caplog):
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 8), F32))
    (s,) = b.add_node("reduce_sum", [x], {"axes": (1,)})
    (s,) = b.add_node("sqrt", [s])
    graph = b.build([s])
    with caplog.at_level(logging.DEBUG, logger="ember.fusion"):
        fuse(graph)
    assert "a reduction never starts a fusion" in caplog.text


def test_empty_graph_and_single_node():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2,), F32))
    assert fuse(b.build([x])) == FusionPlan((), ())
    (y,) = b.add_node("relu", [x])
    assert fuse(b.build([y])).groups == (FusedGroup((0,), 0),)


# ----------------------------------------------------------------------------- whole models


def _light_graph(name: str) -> Graph:
    # The shipped weights: fusion depends on structure, not values.
    return import_onnx(onnx.load(light_model_path(name)))




#: Their import materializes hundreds of MB of (constant) weights: slow tier.
BIG_WEIGHTS = ("bvlc_alexnet", "vgg19", "zfnet512")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in BIG_WEIGHTS else name
    for name in LIGHT_MODELS
])
def test_light_models_plans_hold_the_invariants(name):
    graph = optimize(_light_graph(name), 2)
    plan = fuse(graph)
    check_plan(graph, plan)
    assert len(plan.groups) < len(graph.nodes)
    if name == "resnet50":
        # 53 convolutions, two poolings, the dense (+ its reshape) and the softmax
        assert len(plan.groups) <= 62
        assert sum(graph.nodes[g.anchor].op == "conv" for g in plan.groups) == 53


# ----------------------------------------------------------------------------- the CLI


def test_inspect_fusion_lists_groups_and_refusals(capsys):
    from ember.__main__ import main

    assert main(["inspect", light_model_path("resnet50"), "--fusion"]) == 0
    out = capsys.readouterr().out
    assert "177 nodes imported, 177 after the opt level 2 passes" in out
    assert "kernel    0  conv             [conv, add, relu]" in out
    assert "kernel    5  conv             [conv, add, add, relu]" in out
    assert "refused fusions (57):" in out
    assert "is not elementwise" in out
    assert out.rstrip().endswith("177 nodes -> 58 kernels")


# ----------------------------------------------------------------------------- random graphs


def random_graph(seed: int) -> Graph:
    """A random DAG over one (1, 4, 6, 6) value shape, mixing every pattern kind, with
    extra graph outputs in the middle and values read several times."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    shape = (1, 4, 6, 6)
    values = [b.add_input("x", TensorType(shape, F32)), b.add_input("z", TensorType(shape, F32))]
    w = b.add_constant((rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32), "w")
    c = b.add_constant(rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32), "c")
    for _ in range(int(rng.integers(3, 25))):
        a = values[int(rng.integers(len(values)))]
        other = values[int(rng.integers(len(values)))]
        kind = int(rng.integers(10))
        if kind == 0:
            (y,) = b.add_node("conv", [a, w], CONV)
        elif kind == 1:
            (y,) = b.add_node("add", [a, other])
        elif kind == 2:
            (y,) = b.add_node("mul", [a, c])
        elif kind == 3:
            (y,) = b.add_node("relu", [a])
        elif kind == 4:
            (y,) = b.add_node("transpose", [a], {"perm": (0, 1, 3, 2)})
        elif kind == 5:
            (s,) = b.add_node("reduce_sum", [a], {"axes": (1,)})
            (y,) = b.add_node("add", [a, s])
        elif kind == 6:
            (y,) = b.add_node("softmax", [a], {"axis": 3})
        elif kind == 7:
            (y,) = b.add_node("cumsum", [a], {"axis": 2})
        elif kind == 8:
            (r,) = b.add_node("reshape", [a], {"shape": (1, 4, 36)})
            (y,) = b.add_node("reshape", [r], {"shape": shape})
        else:
            y, _ = b.add_node("topk", [a], {"k": 6, "axis": 3})
        values.append(y)
    extra = [v for v in values[2:-1] if rng.random() < 0.15]
    return b.build([values[-1], *extra])


@pytest.mark.parametrize("seed", range(60))
def test_random_graphs_give_valid_plans(seed):
    graph = random_graph(seed)
    plan = fuse(graph)
    check_plan(graph, plan)
    small = fuse(graph, max_group_size=3)
    check_plan(graph, small, max_group_size=3)


@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_random_graphs_keep_their_values_through_the_pipeline(seed):
    graph = random_graph(seed)
    rng = np.random.default_rng(seed)
    feeds = {n: rng.standard_normal(graph.types[n].shape).astype(np.float32)
             for n in graph.inputs}
    expected = evaluate(graph, feeds)
    for level in (1, 2):
        optimized = optimize(graph, level, check=True)
        assert optimized.outputs == graph.outputs
        check_plan(optimized, fuse(optimized))
        for a, e in zip(evaluate(optimized, feeds), expected):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()))

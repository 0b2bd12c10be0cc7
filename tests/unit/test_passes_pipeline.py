"""Constant folding, dead-code and common-subexpression elimination (Before/Expected graphs),
the opt-level pipelines, and whole-model numerics through the reference target."""

import numpy as np
import pytest
from support import assert_graphs_match

import ember
from ember.compiler.passes import (
    PASSES,
    PIPELINES,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_constants,
    fuse,
    optimize,
)
from ember.errors import EmberError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import Graph, TensorType
from ember.ir.verify import verify
from ember.workloads.light import LIGHT_MODELS, light_model

F32 = "float32"


# ----------------------------------------------------------------------------- folding


def test_fold_constants_evaluates_all_constant_nodes():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    c = b.add_constant(np.array([1.0, 4.0, 9.0], np.float32), "c")
    (s,) = b.add_node("sqrt", [c], hint="s")
    (t,) = b.add_node("add", [s, s], hint="t")
    (y,) = b.add_node("mul", [x, t], hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((3,), F32))
    t = e.add_constant(np.array([2.0, 4.0, 6.0], np.float32), "t")
    (y,) = e.add_node("mul", [x, t], hint="y")
    assert_graphs_match(fold_constants(before), e.build([y]))


def test_fold_constants_leaves_a_graph_without_foldable_nodes_alone():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    (y,) = b.add_node("relu", [x])
    graph = b.build([y])
    assert fold_constants(graph) is graph


def test_fold_constants_keeps_an_output_name():
    b = GraphBuilder()
    c = b.add_constant(np.ones((2,), np.float32), "c")
    (y,) = b.add_node("neg", [c], hint="y")
    after = fold_constants(b.build([y]))
    verify(after)
    assert after.outputs == ("y",) and not after.nodes
    np.testing.assert_array_equal(after.constants["y"], -np.ones(2))


def test_fold_constants_does_not_blow_up_parameters():
    b = GraphBuilder()
    c = b.add_constant(np.ones((1,), np.float32), "c")
    (big,) = b.add_node("broadcast_to", [c], {"shape": (512, 512)}, hint="big")
    x = b.add_input("x", TensorType((512, 512), F32))
    (y,) = b.add_node("add", [x, big], hint="y")
    graph = b.build([y])
    assert fold_constants(graph) is graph


# ----------------------------------------------------------------------------- dead code


def test_dead_code_goes():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    unused = b.add_constant(np.ones(3, np.float32), "unused")
    (dead,) = b.add_node("add", [x, unused], hint="dead")
    (dead,) = b.add_node("exp", [dead], hint="dead2")
    (y,) = b.add_node("relu", [x], hint="y")
    graph = Graph("main", ("x",), (y,), tuple(b.nodes), dict(b.types), dict(b.constants))
    verify(graph)

    e = GraphBuilder()
    x = e.add_input("x", TensorType((3,), F32))
    (y,) = e.add_node("relu", [x], hint="y")
    after = eliminate_dead_code(graph)
    assert_graphs_match(after, e.build([y]))
    assert set(after.types) == {"x", "y"}
    assert eliminate_dead_code(after) is after


# ----------------------------------------------------------------------------- CSE


def test_common_subexpressions_merge():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    c1 = b.add_constant(np.full(3, 2.0, np.float32), "c1")
    c2 = b.add_constant(np.full(3, 2.0, np.float32), "c2")
    (a1,) = b.add_node("mul", [x, c1], hint="a1")
    (a2,) = b.add_node("mul", [x, c2], hint="a2")
    (e1,) = b.add_node("exp", [a1], hint="e1")
    (e2,) = b.add_node("exp", [a2], hint="e2")
    (y,) = b.add_node("add", [e1, e2], hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((3,), F32))
    c1 = e.add_constant(np.full(3, 2.0, np.float32), "c1")
    (a1,) = e.add_node("mul", [x, c1], hint="a1")
    (e1,) = e.add_node("exp", [a1], hint="e1")
    (y,) = e.add_node("add", [e1, e1], hint="y")
    assert_graphs_match(eliminate_common_subexpressions(before), e.build([y]))


def test_cse_keeps_different_attributes_apart_and_two_outputs_named():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (s0,) = b.add_node("reduce_sum", [x], {"axes": (0,)}, hint="s0")
    (s1,) = b.add_node("reduce_sum", [x], {"axes": (1,)}, hint="s1")
    (r1,) = b.add_node("relu", [x], hint="r1")
    (r2,) = b.add_node("relu", [x], hint="r2")
    before = b.build([s0, s1, r1, r2])
    after = eliminate_common_subexpressions(before)
    verify(after)
    assert after.outputs == before.outputs
    assert [n.op for n in after.nodes] == ["reduce_sum", "reduce_sum", "relu", "identity"]


# ----------------------------------------------------------------------------- pipelines


def test_pipelines_are_lists_of_pass_names():
    assert PIPELINES[0] == []
    assert PIPELINES[1] == ["simplify", "eliminate_dead_code"]
    assert set(PIPELINES[1]) < set(PIPELINES[2]) <= set(PIPELINES[3])
    assert {"fold_constants", "eliminate_common_subexpressions"} <= set(PIPELINES[2])
    assert all(name in PASSES for names in PIPELINES.values() for name in names)


def test_unknown_opt_level():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    with pytest.raises(EmberError, match="opt level 7 does not exist"):
        optimize(b.build([x]), 7)


def random_feeds(graph: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for name in graph.inputs:
        t = graph.types[name]
        if t.dtype.startswith(("int", "uint")):  # token ids, positions: zeros are valid
            feeds[name] = np.zeros(t.shape, t.dtype)
        else:
            feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
    return feeds


def distinct_levels() -> list[int]:
    """One opt level per distinct pipeline."""
    levels: dict[tuple[str, ...], int] = {}
    for level, names in PIPELINES.items():
        levels.setdefault(tuple(names), level)
    return sorted(levels.values())


def check_numerics(graph: Graph) -> None:
    """Every opt level's graph gives the unoptimized graph's outputs on the reference target."""
    feeds = random_feeds(graph)
    expected = ember.compile(graph, target="reference", opt_level=0).run(feeds)
    for level in distinct_levels()[1:]:
        optimized = optimize(graph, level, check=True)
        actual = ember.compile(optimized, target="reference", opt_level=0).run(feeds)
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()))


def light_logits(name: str) -> Graph:
    """The light model with seeded random weights, cut before its softmax (a saturated softmax
    would hide differences)."""
    from ember.compiler.frontend.onnx import import_onnx

    graph = import_onnx(light_model(name))
    last = graph.producers[graph.outputs[0]]
    return graph.replace(outputs=(last.inputs[0],)) if last.op == "softmax" else graph


def zoo_graph(name: str) -> Graph:
    from ember.compiler.frontend.onnx import import_onnx
    from ember.workloads import zoo

    return import_onnx(zoo.build(name))


@pytest.mark.parametrize("name", ["gpt2-tiny-prefill", "llama-tiny-decode", "xr-kd"])
def test_zoo_model_numerics_hold_at_every_level(name):
    check_numerics(zoo_graph(name))


@pytest.mark.parametrize("name", ["resnet50", "squeezenet"])
def test_light_model_numerics_hold_at_every_level(name):
    graph = light_logits(name)
    check_numerics(graph)
    if name == "resnet50":
        ops = [node.op for node in optimize(graph, 2).nodes]
        assert "batch_norm" not in ops and ops.count("conv") == 53  # folded: conv + bias add
        assert len(fuse(optimize(graph, 2)).groups) == 57  # 58 with the softmax


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_every_light_model_numerics(name):
    check_numerics(light_logits(name))


@pytest.mark.slow
def test_every_zoo_model_numerics():
    from ember.workloads import zoo

    for name in zoo.names():
        check_numerics(zoo_graph(name))


def test_cse_leaves_constant_outputs_alone():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    c1 = b.add_constant(np.ones(3, np.float32), "c1")
    c2 = b.add_constant(np.ones(3, np.float32), "c2")
    (y,) = b.add_node("add", [x, c1], hint="y")
    graph = b.build([y, c2])
    assert eliminate_common_subexpressions(graph) is graph

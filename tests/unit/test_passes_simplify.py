"""simplify (compiler/passes/simplify.py): each rewrite as a Before/Expected graph pair,
compared structurally, and checked for numerics through the node references."""

import numpy as np
import pytest
import support
from support import evaluate

from ember.compiler.passes import simplify
from ember.ir.builder import GraphBuilder
from ember.ir.graph import Graph, TensorType
from ember.ir.verify import verify

F32 = "float32"
CONV = {"strides": (1, 1), "dilations": (1, 1), "pads": (0, 0, 0, 0)}


def assert_graphs_match(actual: Graph, expected: Graph) -> None:
    """support.assert_graphs_match at the tolerance these tests use for folded constants."""
    support.assert_graphs_match(actual, expected, rtol=1e-5, atol=1e-6)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(graph.types[n].shape).astype(graph.types[n].dtype)
            for n in graph.inputs}


def assert_same_numerics(before: Graph, after: Graph) -> None:
    feeds = random_feeds(before)
    for a, b in zip(evaluate(before, feeds), evaluate(after, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_identity_removed():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (y,) = b.add_node("identity", [x], hint="y")
    (z,) = b.add_node("relu", [y], hint="z")
    before = b.build([z])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((2, 3), F32))
    (z,) = e.add_node("relu", [x], hint="z")
    assert_graphs_match(simplify(before), e.build([z]))


def test_identity_feeding_a_graph_output_keeps_the_output_name():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (r,) = b.add_node("relu", [x], hint="r")
    (y,) = b.add_node("identity", [r], hint="y")
    before = b.build([y])
    after = simplify(before)
    assert after.outputs == ("y",)
    assert [n.op for n in after.nodes] == ["relu"]
    # ... but an identity of a graph input stays: the output must be its own value
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (y,) = b.add_node("identity", [x], hint="y")
    before = b.build([y])
    assert simplify(before) is before


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_batch_norm_folds_into_conv(with_bias, groups):
    rng = np.random.default_rng(1)
    params = [rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(4)]
    weight = rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32)
    conv_bias = rng.standard_normal(4).astype(np.float32)
    attrs = {**CONV, "groups": groups}

    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 4, 5, 5), F32))
    w = b.add_constant(weight, "w")
    inputs = [x, w] + ([b.add_constant(conv_bias, "cb")] if with_bias else [])
    (c,) = b.add_node("conv", inputs, attrs, hint="c")
    names = [b.add_constant(p, k) for p, k in zip(params, ("scale", "bias", "mean", "var"))]
    (y,) = b.add_node("batch_norm", [c, *names], {"epsilon": 1e-3}, hint="y")
    (z,) = b.add_node("relu", [y], hint="z")
    before = b.build([z])

    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    factor = scale / np.sqrt(var + 1e-3)
    base = conv_bias.astype(np.float64) if with_bias else 0.0
    e = GraphBuilder()
    x = e.add_input("x", TensorType((1, 4, 5, 5), F32))
    w = e.add_constant((weight * factor[:, None, None, None]).astype(np.float32), "w:folded")
    shift = ((base - mean) * factor + bias).astype(np.float32).reshape(4, 1, 1)
    bb = e.add_constant(shift, "y:bias")
    (c,) = e.add_node("conv", [x, w], attrs, hint="c:1")  # %c is the old conv's name
    (y,) = e.add_node("add", [c, bb], hint="y")  # the canonical conv + bias add
    (z,) = e.add_node("relu", [y], hint="z")
    after = simplify(before)
    assert_graphs_match(after, e.build([z]))
    assert_same_numerics(before, after)


def test_batch_norm_stays_when_the_conv_output_has_another_reader():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 2, 3, 3), F32))
    w = b.add_constant(np.ones((2, 2, 1, 1), np.float32), "w")
    (c,) = b.add_node("conv", [x, w], CONV, hint="c")
    params = [b.add_constant(np.ones(2, np.float32), k) for k in ("s", "b", "m", "v")]
    (y,) = b.add_node("batch_norm", [c, *params], hint="y")
    (z,) = b.add_node("add", [y, c], hint="z")
    before = b.build([z])
    assert simplify(before) is before


@pytest.mark.parametrize("bias_shape", [None, (3,), (1, 3)])
def test_batch_norm_folds_into_matmul_and_its_bias(bias_shape):
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 5), F32))
    w = b.add_constant(rng.standard_normal((5, 3)).astype(np.float32), "w")
    (y,) = b.add_node("matmul", [x, w], hint="mm")
    if bias_shape is not None:
        c = b.add_constant(rng.standard_normal(bias_shape).astype(np.float32), "c")
        (y,) = b.add_node("add", [y, c], hint="biased")
    params = [b.add_constant(rng.uniform(0.5, 1.5, 3).astype(np.float32), k)
              for k in ("s", "b", "m", "v")]
    (y,) = b.add_node("batch_norm", [y, *params], hint="y")
    before = b.build([y])
    after = simplify(before)
    verify(after)
    assert [n.op for n in after.nodes] == ["matmul", "add"]
    assert after.outputs == ("y",)
    assert_same_numerics(before, after)


def test_constant_first_operand_is_moved_second():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 5), F32))
    w = b.add_constant(np.ones((5, 3), np.float32), "w")
    c = b.add_constant(np.ones(3, np.float32), "c")
    (m,) = b.add_node("matmul", [x, w], hint="m")
    (y,) = b.add_node("add", [c, m], hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((2, 5), F32))
    w = e.add_constant(np.ones((5, 3), np.float32), "w")
    c = e.add_constant(np.ones(3, np.float32), "c")
    (m,) = e.add_node("matmul", [x, w], hint="m")
    (y,) = e.add_node("add", [m, c], hint="y")
    assert_graphs_match(simplify(before), e.build([y]))


def test_non_commutative_op_keeps_its_order():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F32))
    c = b.add_constant(np.ones(3, np.float32), "c")
    (y,) = b.add_node("sub", [c, x], hint="y")
    before = b.build([y])
    assert simplify(before) is before


def test_reshapes_merge_and_a_same_shape_reshape_goes():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3, 4), F32))
    (y,) = b.add_node("reshape", [x], {"shape": (6, 4)}, hint="a")
    (y,) = b.add_node("reshape", [y], {"shape": (24,)}, hint="b")
    (y,) = b.add_node("reshape", [y], {"shape": (24,)}, hint="c")
    (y,) = b.add_node("relu", [y], hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((2, 3, 4), F32))
    (y,) = e.add_node("reshape", [x], {"shape": (24,)}, hint="c")
    (y,) = e.add_node("relu", [y], hint="y")
    after = simplify(before)
    assert_graphs_match(after, e.build([y]))
    assert_same_numerics(before, after)


def test_reshape_back_to_the_input_shape_disappears():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (y,) = b.add_node("reshape", [x], {"shape": (3, 2)}, hint="a")
    (y,) = b.add_node("reshape", [y], {"shape": (2, 3)}, hint="b")
    (y,) = b.add_node("exp", [y], hint="y")
    before = b.build([y])
    after = simplify(before)
    assert [n.op for n in after.nodes] == ["exp"]
    assert after.nodes[0].inputs == ("x",)


@pytest.mark.parametrize("first, second, expected", [
    ((1, 0, 2), (1, 0, 2), None),             # inverse pair: gone
    ((0, 2, 1), (2, 0, 1), (1, 0, 2)),
    ((2, 0, 1), (1, 2, 0), None),
    ((1, 2, 0), (1, 2, 0), (2, 0, 1)),
])
def test_transposes_compose(first, second, expected):
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3, 4), F32))
    (y,) = b.add_node("transpose", [x], {"perm": first}, hint="t1")
    (y,) = b.add_node("transpose", [y], {"perm": second}, hint="t2")
    (y,) = b.add_node("neg", [y], hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((2, 3, 4), F32))
    if expected is not None:
        (x,) = e.add_node("transpose", [x], {"perm": expected}, hint="t2")
    (y,) = e.add_node("neg", [x], hint="y")
    after = simplify(before)
    assert_graphs_match(after, e.build([y]))
    assert_same_numerics(before, after)


def test_identity_transpose_removed():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (y,) = b.add_node("transpose", [x], {"perm": (0, 1)}, hint="t")
    (y,) = b.add_node("neg", [y], hint="y")
    after = simplify(b.build([y]))
    assert [n.op for n in after.nodes] == ["neg"]


def test_simplify_reaches_a_fixed_point():
    # identity -> transpose pair -> identity: needs the transposes to meet after identities go
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    (y,) = b.add_node("transpose", [x], {"perm": (1, 0)}, hint="t1")
    (y,) = b.add_node("identity", [y], hint="i")
    (y,) = b.add_node("transpose", [y], {"perm": (1, 0)}, hint="t2")
    (y,) = b.add_node("exp", [y], hint="y")
    after = simplify(b.build([y]))
    assert [n.op for n in after.nodes] == ["exp"]
    assert simplify(after) is after


@pytest.mark.parametrize("op, shape", [
    ("mul", (4, 1, 1)), ("add", (1, 4, 1, 1)), ("mul", ()), ("add", (1,)),
])
def test_per_channel_scale_and_shift_fold_into_conv(op, shape):
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 3, 5, 5), F32))
    w = b.add_constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    (c,) = b.add_node("conv", [x, w], CONV, hint="c")
    k = b.add_constant(rng.uniform(0.5, 2, shape).astype(np.float32), "k")
    (y,) = b.add_node(op, [k, c], hint="y")  # constant first: the operands' order is free
    before = b.build([y])
    after = simplify(before)
    verify(after)
    assert after.outputs == ("y",)
    if op == "mul":
        assert [n.op for n in after.nodes] == ["conv"]
        assert after.nodes[0].inputs[1] == "w:folded"
    else:  # conv + add is the canonical form already: only the operands turn around
        assert [(n.op, n.inputs) for n in after.nodes] == [("conv", ("x", "w")),
                                                            ("add", ("c", "k"))]
    assert_same_numerics(before, after)


@pytest.mark.parametrize("second", ["add", "mul"])
def test_scale_and_shift_chain_after_a_biased_conv_folds_to_one_bias_add(second):
    # inception v2 and densenet: conv -> batch_norm -> mul -> add (batch norm spelled out)
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 3, 5, 5), F32))
    w = b.add_constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    cb = b.add_constant(rng.standard_normal(4).astype(np.float32), "cb")
    (y,) = b.add_node("conv", [x, w, cb], CONV)
    for op in ("mul", "add", second):
        k = b.add_constant(rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32), op)
        (y,) = b.add_node(op, [y, k])
    (y,) = b.add_node("relu", [y], hint="y")
    before = b.build([y])
    after = simplify(before)
    verify(after)
    assert [n.op for n in after.nodes] == ["conv", "add", "relu"]
    assert len(after.nodes[0].inputs) == 2
    assert_same_numerics(before, after)


def test_spatial_constant_does_not_fold_into_conv():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 3, 5, 5), F32))
    w = b.add_constant(np.ones((4, 3, 3, 3), np.float32), "w")
    (c,) = b.add_node("conv", [x, w], CONV, hint="c")
    k = b.add_constant(np.ones((1, 1, 3, 3), np.float32), "k")
    (y,) = b.add_node("add", [c, k], hint="y")
    before = b.build([y])
    assert simplify(before) is before


@pytest.mark.parametrize("shape", [(), (3,), (1, 3)])
def test_column_scale_folds_into_matmul(shape):
    rng = np.random.default_rng(4)
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 5), F32))
    w = b.add_constant(rng.standard_normal((5, 3)).astype(np.float32), "w")
    (m,) = b.add_node("matmul", [x, w], hint="m")
    k = b.add_constant(rng.uniform(0.5, 2, shape).astype(np.float32), "k")
    (y,) = b.add_node("mul", [m, k], hint="y")
    before = b.build([y])
    after = simplify(before)
    verify(after)
    assert [n.op for n in after.nodes] == ["matmul"] and after.outputs == ("y",)
    assert_same_numerics(before, after)


def test_integer_matmul_is_not_rescaled():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 5), "int32"))
    w = b.add_constant(np.ones((5, 3), np.int32), "w")
    (m,) = b.add_node("matmul", [x, w], hint="m")
    k = b.add_constant(np.full(3, 2, np.int32), "k")
    (y,) = b.add_node("mul", [m, k], hint="y")
    before = b.build([y])
    assert simplify(before) is before

"""convert_layout (compiler/passes/layout.py): Before/Expected graphs compared structurally,
and numerics through the node references."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_graphs_match, evaluate

from ember.compiler.passes import PIPELINES
from ember.compiler.passes.layout import convert_layout
from ember.ir.builder import GraphBuilder
from ember.ir.graph import Graph, TensorType
from ember.ir.ops.layout import pack_conv_weight, to_blocked

F32 = "float32"
BLOCK = 16
IN = {"src_layout": "NCHW", "dst_layout": "NCHW16c"}
OUT = {"src_layout": "NCHW16c", "dst_layout": "NCHW"}


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_attrs(pad=0, stride=1, groups=None):
    attrs = {"strides": (stride, stride), "dilations": (1, 1), "pads": (pad,) * 4}
    return attrs if groups is None else {**attrs, "groups": groups}


def assert_same_numerics(before: Graph, after: Graph) -> None:
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(before.types[n].shape).astype(np.float32)
             for n in before.inputs}
    for a, b in zip(evaluate(before, feeds), evaluate(after, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


W1, W2 = rand((32, 16, 3, 3), 1), rand((16, 32, 1, 1), 2)


def test_conv_relu_conv_has_one_transform_in_and_one_out():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 16, 8, 8), F32))
    w1, w2 = b.add_constant(W1, "w1"), b.add_constant(W2, "w2")
    (c,) = b.add_node("conv", [x, w1], {**conv_attrs(1), "groups": 1}, hint="c")
    (r,) = b.add_node("relu", [c], hint="r")
    (y,) = b.add_node("conv", [r, w2], {**conv_attrs(), "groups": 1}, hint="y")
    before = b.build([y])

    e = GraphBuilder()
    x = e.add_input("x", TensorType((1, 16, 8, 8), F32))
    (xb,) = e.add_node("layout_transform", [x], IN, hint="x:NCHW16c")
    w1 = e.add_constant(pack_conv_weight(W1, BLOCK, BLOCK), "w1:NCHW16c")
    (c,) = e.add_node("conv2d_nchwc", [xb, w1], conv_attrs(1), hint="c:NCHW16c")
    (r,) = e.add_node("relu", [c], hint="r:NCHW16c")
    w2 = e.add_constant(pack_conv_weight(W2, BLOCK, BLOCK), "w2:NCHW16c")
    (yb,) = e.add_node("conv2d_nchwc", [r, w2], conv_attrs(), hint="y:NCHW16c")
    (y,) = e.add_node("layout_transform", [yb], OUT, hint="y")
    after = convert_layout(before, BLOCK)
    assert_graphs_match(after, e.build([y]))
    assert_same_numerics(before, after)


def test_transforms_that_meet_cancel():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 32, 4, 4), F32))
    (t1,) = b.add_node("layout_transform", [x], IN, hint="t1")
    (t2,) = b.add_node("layout_transform", [t1], OUT, hint="t2")
    (y,) = b.add_node("relu", [t2], hint="y")
    w = b.add_constant(rand((16, 32, 1, 1)), "w")
    (z,) = b.add_node("conv", [y, w], {**conv_attrs(), "groups": 1}, hint="z")
    (xb,) = b.add_node("layout_transform", [z], IN, hint="zb")
    (back,) = b.add_node("layout_transform", [xb], OUT, hint="out")
    before = b.build([back])
    after = convert_layout(before, BLOCK)
    # relu reads x itself; the conv's result leaves the blocked layout once, for the output
    assert ops(after) == ["relu", "layout_transform", "conv2d_nchwc", "layout_transform"]
    assert after.nodes[0].inputs == ("x",)
    assert_same_numerics(before, after)


def test_blocked_input_round_trip_cancels():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 2, 4, 4, 16), F32))
    (t1,) = b.add_node("layout_transform", [x], OUT, hint="t1")
    (t2,) = b.add_node("layout_transform", [t1], IN, hint="t2")
    w = b.add_constant(rand((16, 32, 3, 3)), "w")
    (c,) = b.add_node("conv", [t1, w], {**conv_attrs(1), "groups": 1}, hint="c")
    (y,) = b.add_node("layout_transform", [c], IN, hint="y")
    (z,) = b.add_node("relu", [t2], hint="z")
    before = b.build([y, z])
    after = convert_layout(before, BLOCK)
    # the conv reads x directly; y is the conv's blocked result; z = relu(x)
    assert ops(after) == ["conv2d_nchwc", "relu"]
    assert after.nodes[0].inputs[0] == "x" and after.nodes[1].inputs == ("x",)
    assert_same_numerics(before, after)


def test_epilogue_stays_blocked_until_a_reshape_reads():
    """Bias add (per-channel constant), residual add of two blocked convs, a scalar clip and
    an add of an NCHW graph input stay blocked; reshape reads through one transform out."""
    shape = (1, 16, 8, 8)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(shape, F32))
    skip = b.add_input("skip", TensorType((1, 32, 8, 8), F32))
    w1, w2 = b.add_constant(W1, "w1"), b.add_constant(rand((32, 16, 1, 1), 3), "w2")
    bias = b.add_constant(rand((32, 1, 1), 4), "bias")
    (c1,) = b.add_node("conv", [x, w1], {**conv_attrs(1), "groups": 1}, hint="c1")
    (a1,) = b.add_node("add", [c1, bias], hint="a1")
    (c2,) = b.add_node("conv", [x, w2, b.add_constant(rand((32,), 5), "b2")],
                       {**conv_attrs(), "groups": 1}, hint="c2")
    (s,) = b.add_node("add", [a1, c2], hint="s")
    (r,) = b.add_node("clip", [s], {"min": 0.0, "max": 6.0}, hint="r")
    (m,) = b.add_node("mul", [r, b.add_constant(np.float32(0.5), "half")], hint="m")
    (k,) = b.add_node("add", [m, skip], hint="k")
    (p,) = b.add_node("reshape", [k], {"shape": (1, 2048)}, hint="p")
    before = b.build([p, k])
    after = convert_layout(before, BLOCK)
    assert ops(after) == ["layout_transform", "conv2d_nchwc", "add", "conv2d_nchwc", "add",
                          "add", "clip", "mul", "layout_transform", "add", "layout_transform",
                          "reshape"]
    transforms = [n for n in after.nodes if n.op == "layout_transform"]
    assert [n.inputs[0] for n in transforms] == ["x", "skip", "k:NCHW16c"]
    assert after.types["bias:NCHW16c"].shape == (1, 2, 1, 1, 16)
    assert after.outputs == ("p", "k")
    assert_same_numerics(before, after)


@pytest.mark.parametrize("case", ["groups", "channels", "weight", "float64"])
def test_convs_that_stay_nchw(case):
    channels, groups, dtype = 16, 1, F32
    if case == "groups":
        groups = 2
    if case == "channels":
        channels = 20  # padding to 32 would add more than a third
    if case == "float64":
        dtype = "float64"
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, channels, 6, 6), dtype))
    weight = rand((16, channels // groups, 3, 3)).astype(dtype)
    w = (b.add_input("w", TensorType.of(weight)) if case == "weight"
         else b.add_constant(weight, "w"))
    (y,) = b.add_node("conv", [x, w], conv_attrs(1, groups=groups), hint="y")
    before = b.build([y])
    assert convert_layout(before, BLOCK) is before


def test_opt_level_3_runs_the_layout_pass_last():
    assert PIPELINES[3][:len(PIPELINES[2])] == PIPELINES[2]
    assert PIPELINES[3][-1] == "convert_layout"


def test_blocked_constant_broadcasts_like_the_original():
    bias = rand((1, 32, 1, 1))
    blocked = to_blocked(bias, BLOCK)
    data = rand((2, 32, 3, 3), 1)
    np.testing.assert_array_equal(to_blocked(data + bias, BLOCK), to_blocked(data, BLOCK) + blocked)


def test_pool_concat_and_batch_norm_stay_blocked():
    """max_pool as a 3-D pool with a one-wide window on the block axis, a channel concat of
    blocked values (and of a transformed NCHW input), batch_norm as a blocked scale and
    shift, average_pool; one transform out at the end."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 16, 9, 9), F32))
    side = b.add_input("side", TensorType((1, 16, 4, 4), F32))
    (c,) = b.add_node("conv", [x, b.add_constant(W1, "w")], {**conv_attrs(1), "groups": 1},
                      hint="c")
    (p,) = b.add_node("max_pool", [c], {"kernel_shape": (3, 3), "strides": (2, 2),
                                        "pads": (1, 0, 0, 1), "dilations": (1, 1)}, hint="p")
    (j,) = b.add_node("concat", [p, side], {"axis": 1}, hint="j")
    stats = [b.add_constant(rand((48,), k) ** 2 + 0.5, f"s{k}") for k in range(4)]
    (n,) = b.add_node("batch_norm", [j, *stats], {"epsilon": 1e-3}, hint="n")
    (y,) = b.add_node("average_pool", [n], {"kernel_shape": (2, 2), "strides": (1, 1),
                                            "pads": (0,) * 4, "dilations": (1, 1)}, hint="y")
    before = b.build([y])
    after = convert_layout(before, BLOCK)
    assert ops(after) == ["layout_transform", "conv2d_nchwc", "max_pool", "layout_transform",
                          "concat", "mul", "add", "average_pool", "layout_transform"]
    pool = after.nodes[2]
    assert pool.attrs.kernel_shape == (3, 3, 1) and pool.attrs.pads == (1, 0, 0, 0, 1, 0)
    assert_same_numerics(before, after)


def test_concat_of_unblockable_channels_stays_nchw():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 16, 4, 4), F32))
    odd = b.add_input("odd", TensorType((1, 8, 4, 4), F32))
    (c,) = b.add_node("conv", [x, b.add_constant(W1, "w")], {**conv_attrs(1), "groups": 1},
                      hint="c")
    (y,) = b.add_node("concat", [c, odd], {"axis": 1}, hint="y")
    after = convert_layout(b.build([y]), BLOCK)
    assert ops(after) == ["layout_transform", "conv2d_nchwc", "layout_transform", "concat"]


def test_rgb_stem_reads_one_block_of_three_channels():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 3, 12, 12), F32))
    stem = rand((16, 3, 7, 7))
    (c,) = b.add_node("conv", [x, b.add_constant(stem, "w")],
                      {**conv_attrs(3, 2), "groups": 1}, hint="c")
    (y,) = b.add_node("relu", [c], hint="y")
    before = b.build([y])
    after = convert_layout(before, BLOCK)
    assert ops(after) == ["layout_transform", "conv2d_nchwc", "relu", "layout_transform"]
    assert after.nodes[0].attrs.dst_layout == "NCHW3c"
    assert after.types["x:NCHW3c"].shape == (1, 1, 12, 12, 3)
    np.testing.assert_array_equal(after.constants["w:NCHW16c"], pack_conv_weight(stem, 3, 16))
    assert_same_numerics(before, after)


def test_depthwise_conv_runs_blocked_only_after_a_blocked_value():
    """pointwise -> depthwise -> pointwise (MobileNet) stays blocked throughout; a depthwise
    conv reading an NCHW input (a graph input here) stays NCHW: it does too little work to pay
    for the transform."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 16, 8, 8), F32))
    (d0,) = b.add_node("conv", [x, b.add_constant(rand((16, 1, 3, 3), 7), "dw0")],
                       conv_attrs(1, groups=16), hint="d0")
    (p1,) = b.add_node("conv", [d0, b.add_constant(rand((32, 16, 1, 1), 8), "pw1")],
                       conv_attrs(groups=1), hint="p1")
    (d1,) = b.add_node("conv", [p1, b.add_constant(rand((32, 1, 3, 3), 9), "dw1")],
                       conv_attrs(1, 2, groups=32), hint="d1")
    (r,) = b.add_node("relu", [d1], hint="r")
    (y,) = b.add_node("conv", [r, b.add_constant(rand((16, 32, 1, 1), 10), "pw2")],
                      conv_attrs(groups=1), hint="y")
    before = b.build([y])
    after = convert_layout(before, BLOCK)
    assert ops(after) == ["conv", "layout_transform", "conv2d_nchwc", "depthwise_conv2d_nchwc",
                          "relu", "conv2d_nchwc", "layout_transform"]
    assert after.types["dw1:NCHW16c"].shape == (2, 3, 3, 16)
    assert_same_numerics(before, after)

"""Grouped convolutions in the blocked layout and the config space of ConvNCHWcTemplate
(compiler/ops/cpu/conv_nchwc.py): the grouped conv2d_nchwc reference against conv's, its
kernels through LLVM, the layout pass converting grouped convs whose groups are whole blocks
(and leaving the others NCHW), and non-default points of the enlarged space (loop orders,
parallel axes, unrolled reductions) computing the reference's answer."""

from __future__ import annotations

import random

import numpy as np
import pytest
from support import check_kernel

import ember
from ember.compiler.ops import Workload, get_schedule
from ember.compiler.passes.layout import convert_layout
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.ir.ops.layout import from_blocked, pack_conv_weight, pack_depthwise_weight, to_blocked
from ember.target import Target

LLVM = Target.parse("llvm")
TOL = {"rtol": 1e-4, "atol": 1e-4}
BLOCK = 16


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_attrs(stride=1, pad=0, groups=1):
    attrs = {"strides": (stride, stride), "dilations": (1, 1), "pads": (pad,) * 4}
    return {**attrs, "groups": groups} if groups > 1 else attrs


def workload_of(op, inputs, attrs):
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    types = tuple(TensorType.of(x) for x in inputs)
    return Workload(op, full, types, opdef.infer_types(full, types))


def space_of(op, inputs, attrs, target=LLVM):
    return get_schedule("cpu", op).space(workload_of(op, inputs, attrs), target)


# ----------------------------------------------------------------------------- grouped


GROUPED_CASES = {
    # name: (channels, size, filters, kernel, stride, pad, groups)
    "one_block_per_group": (32, 9, 32, 3, 1, 1, 2),
    "several_blocks_per_group": (96, 7, 64, 1, 1, 0, 2),  # 48 in, 32 out per group
    "three_groups_stride2": (48, (11, 13), 96, 3, 2, 1, 3),
    "alexnet_conv2": (96, 8, 256, 5, 1, 2, 2),
}


def grouped_inputs(channels, size, filters, kernel, groups, seed=0):
    height, width = (size, size) if isinstance(size, int) else size
    x = rand((1, channels, height, width), seed)
    w = rand((filters, channels // groups, kernel, kernel), seed + 1)
    return x, w, to_blocked(x, BLOCK), pack_conv_weight(w, BLOCK, BLOCK)


@pytest.mark.parametrize("case", GROUPED_CASES)
def test_grouped_reference_matches_conv(case):
    channels, size, filters, kernel, stride, pad, groups = GROUPED_CASES[case]
    x, w, xb, wb = grouped_inputs(channels, size, filters, kernel, groups)
    attrs = conv_attrs(stride, pad, groups)
    conv = get_op("conv")
    (expected,) = conv.evaluate(conv.make_attrs({**attrs, "groups": groups}), [x, w])
    op = get_op("conv2d_nchwc")
    (got,) = op.evaluate(op.make_attrs(attrs), [xb, wb])
    np.testing.assert_allclose(from_blocked(got), expected, **TOL)


@pytest.mark.parametrize("case", GROUPED_CASES)
def test_grouped_conv2d_nchwc_kernel(case):
    channels, size, filters, kernel, stride, pad, groups = GROUPED_CASES[case]
    _, _, xb, wb = grouped_inputs(channels, size, filters, kernel, groups)
    check_kernel("conv2d_nchwc", [xb, wb], conv_attrs(stride, pad, groups), **TOL)


def test_grouped_errors():
    op = get_op("conv2d_nchwc")
    with pytest.raises(ShapeError, match="groups=3 must divide"):
        op.infer_types(op.make_attrs(conv_attrs(groups=3)),
                       [TensorType((1, 4, 5, 5, 16), "float32"),
                        TensorType((3, 1, 1, 1, 16, 16), "float32")])
    with pytest.raises(ShapeError, match=r"expects 4 blocks of 16 \(2 groups\)"):
        op.infer_types(op.make_attrs(conv_attrs(groups=2)),
                       [TensorType((1, 2, 5, 5, 16), "float32"),
                        TensorType((2, 2, 1, 1, 16, 16), "float32")])


def grouped_graph(channels, filters, groups, second_groups=None):
    """conv(groups) -> relu [-> conv(second_groups)]: a float32 graph with constant weights."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, channels, 6, 7), "float32"))
    w1 = b.add_constant(rand((filters, channels // groups, 3, 3), 1), "w1")
    (c,) = b.add_node("conv", [x, w1], {**conv_attrs(1, 1), "groups": groups}, hint="c")
    (y,) = b.add_node("relu", [c], hint="r")
    if second_groups:
        w2 = b.add_constant(rand((filters, filters // second_groups, 1, 1), 2), "w2")
        (y,) = b.add_node("conv", [y, w2], {**conv_attrs(), "groups": second_groups},
                          hint="y")
    return b.build([y])


def test_layout_pass_blocks_grouped_convs_of_whole_blocks():
    graph = grouped_graph(64, 64, 2, second_groups=4)
    blocked = convert_layout(graph, BLOCK)
    ops = [node.op for node in blocked.nodes]
    # one transform in and one out; both convs blocked (32 and 16 channels per group)
    assert ops == ["layout_transform", "conv2d_nchwc", "relu", "conv2d_nchwc",
                   "layout_transform"]
    assert [node.attrs.groups for node in blocked.nodes if node.op == "conv2d_nchwc"] == [2, 4]
    feeds = {"x": rand((1, 64, 6, 7), 3)}
    plain = ember.compile(graph, target="reference", opt_level=0).run(feeds)[0]
    native = ember.compile(graph, target="llvm", opt_level=3).run(feeds)[0]
    np.testing.assert_allclose(native, plain, **TOL)


@pytest.mark.parametrize("channels,filters,groups", [(272, 272, 4), (32, 32, 4), (48, 32, 2)])
def test_grouped_convs_splitting_blocks_stay_nchw(channels, filters, groups):
    """68, 8 or 24 input channels per group: no whole blocks, the conv stays NCHW."""
    graph = grouped_graph(channels, filters, groups)
    assert convert_layout(graph, BLOCK) is graph


def test_mixed_grouped_convs_compile_and_match():
    """A blocked grouped conv feeding one that stays NCHW (8 channels per group)."""
    graph = grouped_graph(32, 32, 2, second_groups=4)
    ops = [node.op for node in convert_layout(graph, BLOCK).nodes]
    assert ops.count("conv2d_nchwc") == 1 and ops.count("conv") == 1
    feeds = {"x": rand((1, 32, 6, 7), 4)}
    plain = ember.compile(graph, target="reference", opt_level=0).run(feeds)[0]
    native = ember.compile(graph, target="llvm", opt_level=3).run(feeds)[0]
    np.testing.assert_allclose(native, plain, **TOL)


# ----------------------------------------------------------------------------- padding


def padded_graph(channels=24, middle=184, divisor=None):
    """conv(channels -> middle) + bias -> hard-swish-like chain (add, clip, mul, div) ->
    conv(middle -> channels) -> relu: the middle value's last block is padded."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, channels, 5, 4), "float32"))
    w1 = b.add_constant(rand((middle, channels, 1, 1), 1), "w1")
    bias = b.add_constant(rand((middle,), 2), "b1")
    (c,) = b.add_node("conv", [x, w1, bias], {**conv_attrs(), "groups": 1}, hint="c")
    three = b.add_constant(np.array(3.0, np.float32), "three")
    (shifted,) = b.add_node("add", [c, three], hint="shifted")
    (clipped,) = b.add_node("clip", [shifted], {"min": 0.0, "max": 6.0}, hint="clipped")
    (hs,) = b.add_node("mul", [c, clipped], hint="hs")
    scale = divisor if divisor is not None else rand((1, middle, 1, 1), 3) ** 2 + 1
    d = b.add_constant(scale.astype(np.float32), "scale")
    (hs,) = b.add_node("div", [hs, d], hint="scaled")
    w2 = b.add_constant(rand((channels, middle, 3, 3), 4), "w2")
    (c2,) = b.add_node("conv", [hs, w2], {**conv_attrs(1, 1), "groups": 1}, hint="c2")
    (y,) = b.add_node("relu", [c2], hint="y")
    return b.build([y, hs])


def test_layout_pass_pads_channels_that_split_blocks():
    graph = padded_graph()
    blocked = convert_layout(graph, BLOCK)
    ops = [node.op for node in blocked.nodes]
    assert ops.count("conv2d_nchwc") == 2 and "conv" not in ops
    outs = [node for node in blocked.nodes if node.op == "layout_transform"
            and node.attrs.dst_layout == "NCHW"]
    assert sorted(node.attrs.channels for node in outs) == [24, 184]
    feeds = {"x": rand((1, 24, 5, 4), 5)}
    plain = ember.compile(graph, target="reference", opt_level=0).run(feeds)
    native = ember.compile(graph, target="llvm", opt_level=3).run(feeds)
    for got, expected in zip(native, plain):
        np.testing.assert_allclose(got, expected, **TOL)


def test_padded_value_through_batch_norm_pool_and_residual_add():
    """A padded (24-channel) conv output through batch_norm, max_pool, a residual add of an
    NCHW input and out as a graph output: one transform in per input, one out."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 32, 8, 8), "float32"))
    skip = b.add_input("skip", TensorType((1, 24, 4, 4), "float32"))
    w = b.add_constant(rand((24, 32, 3, 3), 1), "w")
    (c,) = b.add_node("conv", [x, w], {**conv_attrs(1, 1), "groups": 1}, hint="c")
    stats = [b.add_constant(array, name) for array, name in
             [(rand((24,), 2), "scale"), (rand((24,), 3), "shift"), (rand((24,), 4), "mean"),
              (rand((24,), 5) ** 2 + 0.5, "var")]]
    (n,) = b.add_node("batch_norm", [c, *stats], hint="bn")
    (p,) = b.add_node("max_pool", [n], {"kernel_shape": (2, 2), "strides": (2, 2),
                                        "dilations": (1, 1), "pads": (0, 0, 0, 0)}, hint="p")
    (y,) = b.add_node("add", [p, skip], hint="y")
    graph = b.build([y])
    ops = [node.op for node in convert_layout(graph, BLOCK).nodes]
    assert ops.count("layout_transform") == 3 and "conv2d_nchwc" in ops
    feeds = {"x": rand((1, 32, 8, 8), 6), "skip": rand((1, 24, 4, 4), 7)}
    plain = ember.compile(graph, target="reference", opt_level=0).run(feeds)[0]
    native = ember.compile(graph, target="llvm", opt_level=3).run(feeds)[0]
    np.testing.assert_allclose(native, plain, **TOL)


@pytest.mark.parametrize("channels,middle", [(20, 184), (24, 8), (40, 20)])
def test_channels_padded_by_more_than_a_third_stay_nchw(channels, middle):
    graph = padded_graph(channels, middle)
    ops = [node.op for node in convert_layout(graph, BLOCK).nodes]
    assert "conv" in ops


def test_padded_values_stop_at_unsafe_ops():
    """exp is not in PADDING_SAFE: the padded conv output goes back to NCHW before it."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 32, 4, 4), "float32"))
    w = b.add_constant(rand((24, 32, 1, 1), 1), "w")
    (c,) = b.add_node("conv", [x, w], {**conv_attrs(), "groups": 1}, hint="c")
    (y,) = b.add_node("exp", [c], hint="y")
    graph = b.build([y])
    ops = [node.op for node in convert_layout(graph, BLOCK).nodes]
    assert ops == ["layout_transform", "conv2d_nchwc", "layout_transform", "exp"]


def test_squeeze_excite_block_stays_blocked():
    """conv -> relu -> mean over H, W -> 1x1 convs -> sigmoid -> scale the features: the
    mean runs blocked and the (N, C, 1, 1) scale broadcasts blocked (no transforms inside);
    40 channels pad to 48."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType((1, 40, 6, 5), "float32"))
    w = b.add_constant(rand((40, 40, 3, 3), 1), "w")
    (c,) = b.add_node("conv", [x, w], {**conv_attrs(1, 1), "groups": 1}, hint="c")
    (r,) = b.add_node("relu", [c], hint="r")
    (m,) = b.add_node("reduce_mean", [r], {"axes": (2, 3), "keepdims": True}, hint="m")
    w1 = b.add_constant(rand((32, 40, 1, 1), 2), "w1")
    (s,) = b.add_node("conv", [m, w1], {**conv_attrs(), "groups": 1}, hint="s")
    (s,) = b.add_node("relu", [s], hint="s_relu")
    w2 = b.add_constant(rand((40, 32, 1, 1), 3), "w2")
    (s,) = b.add_node("conv", [s, w2], {**conv_attrs(), "groups": 1}, hint="e")
    (s,) = b.add_node("sigmoid", [s], hint="gate")
    (y,) = b.add_node("mul", [r, s], hint="y")
    graph = b.build([y])
    ops = [node.op for node in convert_layout(graph, BLOCK).nodes]
    assert ops == ["layout_transform", "conv2d_nchwc", "relu", "reduce_mean", "conv2d_nchwc",
                   "relu", "conv2d_nchwc", "sigmoid", "mul", "layout_transform"]
    feeds = {"x": rand((1, 40, 6, 5), 4)}
    plain = ember.compile(graph, target="reference", opt_level=0).run(feeds)[0]
    native = ember.compile(graph, target="llvm", opt_level=3).run(feeds)[0]
    np.testing.assert_allclose(native, plain, **TOL)


# ----------------------------------------------------------------------------- the space


def resnet_3x3(size=56, channels=64):
    xb = np.zeros((1, channels // BLOCK, size + 2, size + 2, BLOCK), np.float32)
    wb = np.zeros((channels // BLOCK, channels // BLOCK, 3, 3, BLOCK, BLOCK), np.float32)
    return [xb, wb], conv_attrs()


def depthwise_3x3(size=112, channels=32):
    xb = np.zeros((1, channels // BLOCK, size, size, BLOCK), np.float32)
    wb = np.zeros((channels // BLOCK, 3, 3, BLOCK), np.float32)
    return [xb, wb], conv_attrs(1, 1)


def test_spaces_are_large_enough_to_tune_and_keep_their_defaults():
    conv_space = space_of("conv2d_nchwc", *resnet_3x3())
    depthwise_space = space_of("depthwise_conv2d_nchwc", *depthwise_3x3())
    for space in (conv_space, depthwise_space):
        assert space.is_valid(space.default)
        assert sum(space.is_valid(config) for config in space) >= 800
    assert len(conv_space) >= 5000
    default = conv_space.default
    assert (default["tile_ob"], default["tile_oh"], default["tile_ow"]) == (2, 1, 8)
    assert (default["outer_order"], default["parallel"], default["reduce_order"],
            default["unroll_ic"], default["unroll_kw"]) == ("ob_oh", "all", "blocks_outer",
                                                            1, True)


def test_filters_drop_spills_and_choices_that_change_nothing():
    space = space_of("conv2d_nchwc", *resnet_3x3())
    base = space.default.as_dict()
    assert not space.is_valid(space.from_values({**base, "tile_ob": 4, "tile_ow": 16}))
    one_by_one = space_of("conv2d_nchwc", [np.zeros((1, 4, 14, 14, 16), np.float32),
                                           np.zeros((4, 4, 1, 1, 16, 16), np.float32)],
                          conv_attrs())
    base = one_by_one.default.as_dict()
    assert not one_by_one.is_valid(one_by_one.from_values({**base, "unroll_kw": False}))
    assert not one_by_one.is_valid(one_by_one.from_values({**base,
                                                           "reduce_order": "taps_outer"}))
    # 4 channel blocks in tiles of 4: one iteration cannot run on two cores
    assert not space.is_valid(space.from_values({**space.default.as_dict(), "tile_ob": 4,
                                                 "tile_ow": 4, "parallel": "outer"}))


CONV_CONFIGS = [
    {"reduce_order": "taps_outer"},
    {"unroll_ic": 4, "tile_ob": 1, "tile_oh": 2},
    {"unroll_ic": 2, "outer_order": "oh_ob"},
    {"parallel": "outer", "outer_order": "oh_ob", "tile_oh": 3, "tile_ow": 4},
    {"parallel": "outer", "tile_ob": 1, "unroll_kw": False, "reduce_order": "taps_outer"},
]


@pytest.mark.parametrize("values", CONV_CONFIGS)
def test_conv2d_nchwc_non_default_configs(values):
    """Rows 10 by columns 12 leave guarded tails for several of these tiles."""
    x, w = rand((1, 32, 10, 12)), rand((32, 32, 3, 3), 1)
    inputs, attrs = [to_blocked(x, BLOCK), pack_conv_weight(w, BLOCK, BLOCK)], conv_attrs(1, 1)
    space = space_of("conv2d_nchwc", inputs, attrs)
    config = space.from_values({**space.default.as_dict(), **values})
    check_kernel("conv2d_nchwc", inputs, attrs, config=config, **TOL)


def test_grouped_conv2d_nchwc_sampled_configs():
    _, _, xb, wb = grouped_inputs(64, (7, 9), 64, 3, 2)
    attrs = conv_attrs(1, 1, 2)
    space = space_of("conv2d_nchwc", [xb, wb], attrs)
    for config in space.sample(3, random.Random(6)):
        check_kernel("conv2d_nchwc", [xb, wb], attrs, config=config, **TOL)


DEPTHWISE_CONFIGS = [
    {"unroll_kh": True},
    {"unroll_kh": True, "unroll_kw": False, "outer_order": "oh_ob", "tile_oh": 2},
    {"parallel": "outer", "outer_order": "oh_ob", "tile_ow": 4, "tile_oh": 3},
]


@pytest.mark.parametrize("values", DEPTHWISE_CONFIGS)
def test_depthwise_non_default_configs(values):
    x, w = rand((1, 32, 11, 13)), rand((32, 1, 3, 3), 1)
    inputs = [to_blocked(x, BLOCK), pack_depthwise_weight(w, BLOCK)]
    attrs = conv_attrs(1, 1)
    space = space_of("depthwise_conv2d_nchwc", inputs, attrs)
    config = space.from_values({**space.default.as_dict(), **values})
    check_kernel("depthwise_conv2d_nchwc", inputs, attrs, config=config, **TOL)


# ----------------------------------------------------------------------------- NCHW conv


@pytest.mark.parametrize("channels,size", [(19, (24, 13)), (23, (7, 9))])
def test_nchw_conv_with_prime_channels_tiles_them_with_a_tail(channels, size):
    """19 filters: a tile of 10 (one idle channel in the last), not of 1."""
    x, w = rand((1, channels, *size)), rand((channels, channels, 3, 3), 1)
    attrs = {**conv_attrs(1, 1), "groups": 1}
    space = space_of("conv", [x, w], attrs)
    assert space.default["tile_oc"] >= 4
    check_kernel("conv", [x, w], attrs, **TOL)


@pytest.mark.parametrize("kernel,stride,pad", [(1, 1, 0), (3, 2, 1)])
def test_nchw_grouped_conv_tiles_one_group(kernel, stride, pad):
    """4 groups of 28 filters (ShuffleNet's groups split blocks, so they stay NCHW): the
    default channel tile is one group."""
    x, w = rand((1, 24, 11, 13)), rand((112, 6, kernel, kernel), 1)
    attrs = {**conv_attrs(stride, pad), "groups": 4}
    assert space_of("conv", [x, w], attrs).default["tile_oc"] == 28
    check_kernel("conv", [x, w], attrs, **TOL)

"""The blocked-layout ops (ir/ops/layout.py) and their kernels: layout_transform through the
generic injective schedule, conv2d_nchwc and depthwise_conv2d_nchwc through ConvNCHWcTemplate
(compiler/ops/cpu/conv_nchwc.py), each checked against its numpy reference; the references
against conv's."""

from __future__ import annotations

import numpy as np
import pytest
from support import check_kernel

from ember.backends.llvm import build as llvm_build
from ember.compiler.kernels import graph_kernels
from ember.compiler.ops import Workload, get_schedule
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.ir.ops.layout import (
    from_blocked,
    pack_conv_weight,
    pack_depthwise_weight,
    to_blocked,
)
from ember.target import Target

LLVM = Target.parse("llvm")
TOL = {"rtol": 1e-4, "atol": 1e-4}


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_attrs(stride=1, pad=0, dilation=1, pads=None):
    return {"strides": (stride, stride), "dilations": (dilation, dilation),
            "pads": tuple(pads) if pads else (pad,) * 4}


def blocked_inputs(n, channels, size, filters, kernel, block=16, out_block=16, seed=0):
    height, width = (size, size) if isinstance(size, int) else size
    x = rand((n, channels, height, width), seed)
    w = rand((filters, channels, kernel, kernel), seed + 1)
    return x, w, to_blocked(x, block), pack_conv_weight(w, block, out_block)


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("block", [4, 16])
def test_blocked_round_trip(block):
    x = rand((2, 32, 3, 5))
    blocked = to_blocked(x, block)
    assert blocked.shape == (2, 32 // block, 3, 5, block)
    assert blocked[1, 1, 2, 4, 3] == x[1, block + 3, 2, 4]
    np.testing.assert_array_equal(from_blocked(blocked), x)


@pytest.mark.parametrize("stride,pads,dilation", [(1, (0, 0, 0, 0), 1), (2, (1, 1, 1, 1), 1),
                                                  (1, (2, 1, 0, 3), 2)])
def test_conv2d_nchwc_reference_matches_conv(stride, pads, dilation):
    x, w, xb, wb = blocked_inputs(2, 32, (9, 11), 48, 3)
    attrs = conv_attrs(stride, dilation=dilation, pads=pads)
    conv = get_op("conv")
    (expected,) = conv.evaluate(conv.make_attrs({**attrs, "groups": 1}), [x, w])
    op = get_op("conv2d_nchwc")
    (got,) = op.evaluate(op.make_attrs(attrs), [xb, wb])
    np.testing.assert_allclose(from_blocked(got), expected, rtol=1e-4, atol=1e-4)


def test_layout_errors():
    lt = get_op("layout_transform")
    with pytest.raises(ShapeError, match="'NHWC' is not supported"):
        lt.infer_types(lt.make_attrs({"src_layout": "NHWC", "dst_layout": "NCHW"}),
                       [TensorType((1, 4, 2, 2), "float32")])
    with pytest.raises(ShapeError, match="must have rank 4"):
        lt.infer_types(lt.make_attrs({"src_layout": "NCHW", "dst_layout": "NCHW16c"}),
                       [TensorType((24, 2, 2), "float32")])
    with pytest.raises(ShapeError, match="channels=8 must drop only the padding"):
        lt.infer_types(lt.make_attrs({"src_layout": "NCHW16c", "dst_layout": "NCHW",
                                      "channels": 8}),
                       [TensorType((1, 2, 2, 2, 16), "float32")])
    conv = get_op("conv2d_nchwc")
    with pytest.raises(ShapeError, match="2 blocks of 16 input channels but the weight"):
        conv.infer_types(conv.make_attrs(conv_attrs()),
                         [TensorType((1, 2, 5, 5, 16), "float32"),
                          TensorType((1, 3, 1, 1, 16, 16), "float32")])


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("shape,src,dst", [((1, 32, 7, 9), "NCHW", "NCHW16c"),
                                           ((2, 8, 5, 3), "NCHW", "NCHW4c"),
                                           ((1, 2, 7, 9, 16), "NCHW16c", "NCHW")])
def test_layout_transform_kernel(shape, src, dst):
    check_kernel("layout_transform", [rand(shape)], {"src_layout": src, "dst_layout": dst})


def test_layout_transform_pads_a_partial_block_and_drops_it():
    """24 channels: two blocks of 16 going in, the last half zeros; 24 channels coming out."""
    x = rand((1, 24, 3, 5))
    (blocked,) = check_kernel("layout_transform", [x],
                              {"src_layout": "NCHW", "dst_layout": "NCHW16c"})
    assert blocked.shape == (1, 2, 3, 5, 16) and not blocked[:, 1, :, :, 8:].any()
    (back,) = check_kernel("layout_transform", [blocked],
                           {"src_layout": "NCHW16c", "dst_layout": "NCHW", "channels": 24})
    np.testing.assert_array_equal(back, x)


CONV_CASES = {
    # name: (n, channels, size, filters, kernel, stride, pad)
    "resnet_3x3": (1, 64, 14, 64, 3, 1, 1),
    "resnet_1x1_expand": (1, 64, 14, 256, 1, 1, 0),
    "resnet_1x1_reduce": (1, 256, 7, 64, 1, 1, 0),
    "resnet_3x3_stride2": (1, 32, 15, 32, 3, 2, 1),
    "resnet_1x1_stride2": (1, 32, 14, 64, 1, 2, 0),
    "stage5_7x7": (1, 32, 7, 32, 3, 1, 1),
    "tail_ow_19": (2, 16, (6, 19), 16, 3, 1, 1),
    "prime_width_29": (1, 16, (3, 29), 32, 1, 1, 0),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_nchwc_kernel(case):
    n, channels, size, filters, kernel, stride, pad = CONV_CASES[case]
    _, _, xb, wb = blocked_inputs(n, channels, size, filters, kernel)
    check_kernel("conv2d_nchwc", [xb, wb], conv_attrs(stride, pad), **TOL)


def test_conv2d_nchwc_stem_7x7():
    """The ResNet stem: 3 input channels as one block of 3, 7x7, stride 2, pads 3."""
    _, _, xb, wb = blocked_inputs(1, 3, 20, 16, 7, block=3)
    check_kernel("conv2d_nchwc", [xb, wb], conv_attrs(2, 3), **TOL)


def test_conv2d_nchwc_on_avx2_splits_the_channel_block_into_two_vectors():
    _, _, xb, wb = blocked_inputs(1, 16, (6, 9), 32, 3)
    check_kernel("conv2d_nchwc", [xb, wb], conv_attrs(1, 1), target="llvm -mattr=-avx512f",
                 **TOL)


def test_conv2d_nchwc_dilation_and_uneven_pads():
    _, _, xb, wb = blocked_inputs(1, 16, (9, 12), 32, 3)
    check_kernel("conv2d_nchwc", [xb, wb], conv_attrs(1, dilation=2, pads=(2, 1, 0, 3)), **TOL)


@pytest.mark.parametrize("values", [{"tile_ow": 8, "tile_oh": 3}, {"tile_ow": 6, "tile_oh": 4},
                                    {"tile_ow": 1, "unroll_kw": False},
                                    {"tile_ob": 2, "tile_ow": 8, "tile_oh": 3}])
def test_conv2d_nchwc_configs(values):
    """Tiles that leave guarded tails (8 of 12 columns, 3 of 10 rows) stay correct."""
    _, _, xb, wb = blocked_inputs(1, 16, (10, 12), 32, 3)
    attrs = conv_attrs(1, 1)
    op = get_op("conv2d_nchwc")
    full = op.make_attrs(attrs)
    types = (TensorType.of(xb), TensorType.of(wb))
    workload = Workload("conv2d_nchwc", full, types, op.infer_types(full, types))
    space = get_schedule("cpu", "conv2d_nchwc").space(workload, LLVM)
    config = space.from_values({**space.default.as_dict(), **values})
    check_kernel("conv2d_nchwc", [xb, wb], attrs, config=config, **TOL)


def test_default_register_block():
    space_of = get_schedule("cpu", "conv2d_nchwc").space
    op = get_op("conv2d_nchwc")
    attrs = op.make_attrs(conv_attrs(1, 1))
    cases = [(4, 56, (2, 1, 8)), (4, 7, (2, 1, 7)), (4, 14, (2, 1, 7)), (4, 19, (2, 1, 8)),
             (3, 56, (1, 1, 14)), (3, 7, (1, 1, 7)), (3, 8, (1, 2, 8)), (1, 112, (1, 1, 16))]
    for blocks, size, expected in cases:
        types = (TensorType((1, 4, size, size, 16), "float32"),
                 TensorType((blocks, 4, 3, 3, 16, 16), "float32"))
        workload = Workload("conv2d_nchwc", attrs, types, op.infer_types(attrs, types))
        default = space_of(workload, LLVM).default
        assert (default["tile_ob"], default["tile_oh"], default["tile_ow"]) == expected


def test_conv2d_nchwc_with_epilogue_is_one_kernel():
    """conv2d_nchwc + blocked bias add + relu + residual add: one kernel (takes_epilogue)."""
    _, _, xb, wb = blocked_inputs(1, 32, (8, 10), 32, 3)
    b = GraphBuilder()
    x = b.add_input("x", TensorType.of(xb))
    skip = b.add_input("skip", TensorType((1, 2, 8, 10, 16), "float32"))
    w = b.add_constant(wb, "w")
    bias = b.add_constant(rand((1, 2, 1, 1, 16), 5), "bias")
    (c,) = b.add_node("conv2d_nchwc", [x, w], conv_attrs(1, 1), hint="c")
    (a,) = b.add_node("add", [c, bias], hint="a")
    (r,) = b.add_node("relu", [a], hint="r")
    (y,) = b.add_node("add", [r, skip], hint="y")
    graph = b.build([y])
    kernels = graph_kernels(graph, "cpu", LLVM, [list(range(len(graph.nodes)))])
    assert [call.ops for call in kernels.calls] == [("conv2d_nchwc", "add", "relu", "add")]
    module = llvm_build.build(graph, LLVM, kernels)
    feeds = {"x": xb, "skip": rand((1, 2, 8, 10, 16), 6)}
    op = get_op("conv2d_nchwc")
    (conv,) = op.evaluate(op.make_attrs(conv_attrs(1, 1)), [xb, wb])
    expected = np.maximum(conv + graph.constants[bias], 0) + feeds["skip"]
    np.testing.assert_allclose(module.run(feeds)[0], expected, **TOL)


# ----------------------------------------------------------------------------- depthwise


@pytest.mark.parametrize("stride,pads,dilation", [(1, (1, 1, 1, 1), 1), (2, (0, 1, 2, 1), 2)])
def test_depthwise_reference_matches_grouped_conv(stride, pads, dilation):
    x, w = rand((2, 32, 9, 11)), rand((32, 1, 3, 3), 1)
    attrs = conv_attrs(stride, dilation=dilation, pads=pads)
    conv = get_op("conv")
    (expected,) = conv.evaluate(conv.make_attrs({**attrs, "groups": 32}), [x, w])
    op = get_op("depthwise_conv2d_nchwc")
    (got,) = op.evaluate(op.make_attrs(attrs), [to_blocked(x, 16), pack_depthwise_weight(w, 16)])
    np.testing.assert_allclose(from_blocked(got), expected, rtol=1e-5, atol=1e-5)


DEPTHWISE_CASES = {
    # name: (channels, size, kernel, stride, pad, dilation)
    "mobilenet_3x3": (32, 14, 3, 1, 1, 1),
    "stride2_tail": (16, (15, 19), 3, 2, 1, 1),
    "5x5": (32, 9, 5, 1, 2, 1),
    "dilated": (16, 10, 3, 1, 2, 2),
}


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_conv2d_nchwc_kernel(case):
    channels, size, kernel, stride, pad, dilation = DEPTHWISE_CASES[case]
    height, width = (size, size) if isinstance(size, int) else size
    x, w = rand((1, channels, height, width)), rand((channels, 1, kernel, kernel), 1)
    check_kernel("depthwise_conv2d_nchwc", [to_blocked(x, 16), pack_depthwise_weight(w, 16)],
                 conv_attrs(stride, pad, dilation), **TOL)


def test_depthwise_errors():
    op = get_op("depthwise_conv2d_nchwc")
    with pytest.raises(ShapeError, match=r"needs a weight \(C/c, KH, KW, c\) with C/c = 2"):
        op.infer_types(op.make_attrs(conv_attrs()),
                       [TensorType((1, 2, 5, 5, 16), "float32"),
                        TensorType((1, 3, 3, 16), "float32")])

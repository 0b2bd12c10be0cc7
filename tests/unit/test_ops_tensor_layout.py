"""Pad, CenterCropPad, DepthToSpace, SpaceToDepth and Trilu against onnx's ReferenceEvaluator."""

import numpy as np
import pytest
from support import check_node
from test_ops_tensor import DTYPES, compile_node, ints, sample

from ember.errors import FrontendError, ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops import Pattern, get_op

# ----------------------------------------------------------------------------- pad

PADS = [  # on a (3, 4) input: all begins, then all ends
    [0, 1, 0, 2], [1, 0, 2, 1], [2, 3, 2, 3], [0, 0, 0, 0],
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("opset", [2, 11, 18])
def test_pad(pads, mode, opset, dtype):
    if (opset < 11 and dtype in ("int64", "bool")) or (opset < 13 and dtype == "bool"):
        pytest.skip(f"Pad-{opset} does not take {dtype}")
    x = sample((3, 4), dtype)
    if opset < 11:
        check_node("Pad", [("x", x)], {"pads": pads, "mode": mode}, opset=opset)
    else:
        check_node("Pad", [("x", x), ("pads", ints(*pads))], {"mode": mode},
                   initializers=["pads"], opset=opset)


@pytest.mark.parametrize("pads", PADS)
def test_pad_wrap(pads):
    check_node("Pad", [("x", sample((3, 4))), ("pads", ints(*pads))], {"mode": "wrap"},
               initializers=["pads"], opset=19)


@pytest.mark.parametrize("dtype", ["float32", "int64", "float16"])
@pytest.mark.parametrize("constant", ["initializer", "input"])
def test_pad_constant_value(constant, dtype):
    x = sample((2, 3, 2), dtype)
    value = np.array(7, dtype)
    check_node("Pad", [("x", x), ("pads", ints(1, 0, 2, 0, 1, 1)), ("v", value)],
               initializers=["pads"] + (["v"] if constant == "initializer" else []), opset=11)


def test_pad_value_attribute_opset2():
    check_node("Pad", [("x", sample((2, 3)))], {"pads": [1, 1, 0, 2], "value": 2.5}, opset=2)


@pytest.mark.parametrize("axes, pads", [([1], [2, 1]), ([-1, 0], [1, 0, 2, 1]), ([0], [0, 3])])
@pytest.mark.parametrize("mode", ["constant", "edge"])
def test_pad_axes(axes, pads, mode):
    check_node("Pad", [("x", sample((3, 4))), ("pads", ints(*pads)), ("v", None),
                       ("axes", ints(*axes))], {"mode": mode},
               initializers=["pads", "axes"], opset=18)


@pytest.mark.parametrize("pads", [[-1, 0, 0, -2], [-1, 2, 1, -1], [0, -4, 0, 0]])
def test_pad_negative_crops(pads):
    # onnx's reference cannot crop; compare with the crop written out
    x = sample((3, 4))
    module = compile_node("Pad", [("x", x), ("pads", ints(*pads))], computed=["pads"],
                          opset=13)
    (out,) = module.run({"x": x})
    before, after = pads[:2], pads[2:]
    expected = np.pad(x, [(max(b, 0), max(a, 0)) for b, a in zip(before, after)])
    window = tuple(slice(max(-b, 0), d - max(-a, 0) + max(b, 0) + max(a, 0))
                   for d, b, a in zip(x.shape, before, after))
    np.testing.assert_array_equal(out, expected[window])


def test_pad_unknown_mode_and_bad_pads_fail():
    with pytest.raises(FrontendError, match=r"mode 'mirror' is not supported; ember supports "
                                            r"constant, reflect, edge, wrap"):
        compile_node("Pad", [("x", sample((3,)))], {"pads": [1, 1], "mode": "mirror"}, opset=2)
    with pytest.raises(FrontendError, match=r"pads \[1, 1, 1\] must hold 2 x 2 amounts"):
        compile_node("Pad", [("x", sample((3, 4))), ("pads", ints(1, 1, 1))],
                     computed=["pads"], opset=13)


def test_pad_pads_from_a_graph_input_specializes():
    check_node("Pad", [("x", sample((3,))), ("pads", ints(1, 1))], opset=13)


def test_pad_op_rejects_padding_an_empty_axis_by_reflection():
    opdef = get_op("pad")
    with pytest.raises(ShapeError, match=r"mode 'reflect' cannot pad axis 0, which is empty"):
        opdef.infer_types(opdef.make_attrs({"pads": ((1, 0),), "mode": "reflect"}),
                          [TensorType((0,), "float32")])


@pytest.mark.parametrize("shape, target, axes", [
    ((4, 5), [2, 3], None), ((4, 5), [7, 8], None), ((4, 5), [3, 9], None),
    ((2, 5, 6), [4, 3], [1, 2]), ((2, 5, 6), [4, 3], [-1, 0]),
])
def test_center_crop_pad(shape, target, axes):
    attrs = {} if axes is None else {"axes": axes}
    check_node("CenterCropPad", [("x", sample(shape)), ("shape", ints(*target))], attrs,
               initializers=["shape"], opset=18)


# ----------------------------------------------------------------------------- block moves


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, opset", [(None, 1), ("DCR", 11), ("CRD", 11), ("CRD", 13)])
@pytest.mark.parametrize("block", [1, 2, 3])
def test_depth_to_space(block, mode, opset, dtype):
    x = sample((2, 2 * block * block, 3, 2), dtype)
    attrs = {"blocksize": block} if mode is None else {"blocksize": block, "mode": mode}
    check_node("DepthToSpace", [("x", x)], attrs, opset=opset)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, opset", [(None, 1), (None, 13), ("DCR", 28), ("CRD", 28)])
@pytest.mark.parametrize("block", [1, 2])
def test_space_to_depth(block, mode, opset, dtype):
    x = sample((2, 3, 4 * block, 2 * block), dtype)
    attrs = {"blocksize": block} if mode is None else {"blocksize": block, "mode": mode}
    check_node("SpaceToDepth", [("x", x)], attrs, opset=opset)


def test_depth_to_space_channel_mismatch_fails():
    with pytest.raises(FrontendError, match=r"6 channels are not a multiple of blocksize\^2"):
        compile_node("DepthToSpace", [("x", sample((1, 6, 2, 2)))], {"blocksize": 2},
                     opset=13)


# ----------------------------------------------------------------------------- trilu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 1, -1, 4, -7, 2**62])
@pytest.mark.parametrize("shape", [(3, 4), (2, 5, 3), (1, 1)])
def test_trilu(shape, k, upper, dtype):
    inputs = [("x", sample(shape, dtype))]
    if k is not None:
        inputs.append(("k", np.array(k, np.int64)))
    check_node("Trilu", inputs, {"upper": upper}, initializers=["k"], opset=14)


def test_trilu_pattern_and_rank_check():
    assert get_op("trilu").pattern == Pattern.INJECTIVE
    assert get_op("pad").pattern == Pattern.INJECTIVE
    opdef = get_op("trilu")
    with pytest.raises(ShapeError, match=r"trilu: the input must have rank >= 2"):
        opdef.infer_types(opdef.make_attrs(), [TensorType((3,), "float32")])

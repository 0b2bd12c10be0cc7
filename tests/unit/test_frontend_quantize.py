"""ONNX quantization ops (compiler/frontend/onnx/quantize.py) compiled for llvm against onnx's
reference evaluator: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from support import check_node, node_model

import ember

rng = np.random.default_rng(7)


def scale(*shape: int, dtype=np.float32) -> np.ndarray:
    return rng.uniform(0.05, 0.5, size=shape).astype(dtype)


def ints(dtype, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


# ----------------------------------------------------------------------------- QuantizeLinear


@pytest.mark.parametrize("zero_dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_quantize_per_tensor(zero_dtype):
    # halves (x.5 after the division) check round-half-to-even; large values saturate
    x = np.array([0.0, 0.5, 1.5, 2.5, -2.5, 1e6, -1e6, 3.3], np.float32)
    check_node("QuantizeLinear", [("x", x), ("s", np.array(1.0, np.float32)),
                                  ("z", np.array(3, zero_dtype))], opset=21, target="llvm")


@pytest.mark.parametrize("axis", [1, -2])
def test_quantize_per_axis(axis):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32) * 30
    check_node("QuantizeLinear", [("x", x), ("s", scale(3)), ("z", ints(np.int8, 3))],
               {"axis": axis}, opset=13, target="llvm")


def test_quantize_blocked_with_a_partial_block():
    x = rng.normal(size=(3, 5)).astype(np.float32) * 10
    check_node("QuantizeLinear", [("x", x), ("s", scale(3, 3)), ("z", ints(np.uint8, 3, 3))],
               {"axis": 1, "block_size": 2}, opset=21, target="llvm")


def test_quantize_without_zero_point_uses_output_dtype():
    x = rng.normal(size=(6,)).astype(np.float32) * 500
    check_node("QuantizeLinear", [("x", x), ("s", np.array(0.5, np.float32))],
               {"output_dtype": TensorProto.INT16}, opset=21, target="llvm")


def test_quantize_int32_input():
    x = rng.integers(-2000, 2000, size=(7,)).astype(np.int32)
    check_node("QuantizeLinear", [("x", x), ("s", np.array(7.0, np.float32)),
                                  ("z", np.array(-3, np.int8))], opset=13, target="llvm")


def test_quantize_opset10_default_uint8():
    x = rng.normal(size=(2, 3)).astype(np.float32) * 50
    check_node("QuantizeLinear", [("x", x), ("s", np.array(0.25, np.float32))], opset=10,
               target="llvm")


FLOAT8S = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"]


@pytest.mark.parametrize("name", FLOAT8S)
def test_quantize_to_float8_rounds_to_even_and_saturates(name):
    import ml_dtypes

    dtype = getattr(ml_dtypes, name)
    # every representable value, the midpoints between them (ties), tiny and huge values
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    finite = np.unique(np.abs(codes[np.isfinite(codes)]))
    x = np.concatenate([codes, (finite[1:] + finite[:-1]) / 2, -(finite[1:] + finite[:-1]) / 2,
                        [1e-12, -1e-12, 1e9, -1e9, np.inf, -np.inf, -0.0]]).astype(np.float32)
    check_node("QuantizeLinear", [("x", x), ("s", np.array(0.5, np.float32)),
                                  ("z", np.zeros(1, dtype))], opset=21, target="llvm")


@pytest.mark.parametrize("name", FLOAT8S)
def test_dequantize_float8(name):
    import ml_dtypes

    x = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, name))
    check_node("DequantizeLinear", [("x", x), ("s", np.array(2.0, np.float32))], opset=21,
               target="llvm")


def invalid(op_type: str, inputs, attrs=None, opset: int = 18):
    """A one-node model that ember must reject (the declared output only satisfies the
    checker)."""
    return node_model(op_type, inputs, attrs, opset=opset, output_arrays=[np.zeros(1)])


def test_quantize_rejects_a_scale_of_the_wrong_length():
    model = invalid("QuantizeLinear", [("x", np.zeros((2, 3), np.float32)),
                                       ("s", np.ones(4, np.float32))], {"axis": 1}, opset=13)
    with pytest.raises(ember.FrontendError, match=r"vector of the 3 elements of axis 1"):
        ember.compile(model, target="llvm")


def test_quantize_to_float8_rejects_saturate_0():
    model = invalid("QuantizeLinear", [("x", np.zeros(3, np.float32)),
                                       ("s", np.ones((), np.float32))],
                    {"output_dtype": TensorProto.FLOAT8E4M3FN, "saturate": 0}, opset=21)
    with pytest.raises(ember.FrontendError, match="saturate=0 is not supported"):
        ember.compile(model, target="llvm")


def test_quantize_rejects_conflicting_output_dtype():
    model = invalid("QuantizeLinear", [("x", np.zeros(3, np.float32)),
                                       ("s", np.ones((), np.float32)),
                                       ("z", np.zeros((), np.uint8))],
                    {"output_dtype": TensorProto.INT8}, opset=21)
    with pytest.raises(ember.FrontendError, match="output_dtype int8 and the zero point"):
        ember.compile(model, target="llvm")


# ----------------------------------------------------------------------------- DequantizeLinear


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32])
def test_dequantize_per_tensor(dtype):
    check_node("DequantizeLinear", [("x", ints(dtype, 2, 5)), ("s", scale()),
                                    ("z", ints(dtype))], opset=21, target="llvm")


def test_dequantize_per_axis_negative_axis():
    check_node("DequantizeLinear", [("x", ints(np.uint8, 2, 3, 4)), ("s", scale(4)),
                                    ("z", ints(np.uint8, 4))], {"axis": -1}, opset=19,
               target="llvm")


def test_dequantize_blocked_float16_scale():
    check_node("DequantizeLinear", [("x", ints(np.int8, 4, 6)),
                                    ("s", scale(2, 6, dtype=np.float16)),
                                    ("z", ints(np.int8, 2, 6))],
               {"axis": 0, "block_size": 3}, opset=21, target="llvm")


def test_dequantize_rejects_a_badly_blocked_scale():
    model = invalid("DequantizeLinear", [("x", np.zeros((4, 6), np.uint8)),
                                         ("s", np.ones((3, 6), np.float32))],
                    {"axis": 0, "block_size": 3}, opset=21)
    with pytest.raises(ember.FrontendError, match=r"expected shape \(2, 6\)"):
        ember.compile(model, target="llvm")


# ----------------------------------------------------------------------------- dynamic


@pytest.mark.parametrize("values", [
    rng.normal(size=(3, 4)) * 4,   # both signs
    np.abs(rng.normal(size=(7,))),  # all positive: the range starts at 0
    np.zeros((2, 2)),               # max == min: scale 1/255
])
def test_dynamic_quantize(values):
    check_node("DynamicQuantizeLinear", [("x", values.astype(np.float32))], outputs=3,
               opset=11, target="llvm")


# ----------------------------------------------------------------------------- integer products


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_matmul_integer_per_row_and_column_zero_points(dtype):
    # onnx's reference reads a per-row zero point as a column (M, 1); ember takes both forms
    check_node("MatMulInteger", [("a", ints(dtype, 4, 3)), ("b", ints(dtype, 3, 5)),
                                 ("za", ints(dtype, 4, 1)), ("zb", ints(dtype, 5))],
               opset=10, target="llvm")


def test_matmul_integer_batched_without_zero_points():
    check_node("MatMulInteger", [("a", ints(np.uint8, 2, 4, 3)), ("b", ints(np.uint8, 3, 2))],
               opset=10, target="llvm")


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 0, 1, 2], "strides": [2, 1]},
                                   {"auto_pad": "SAME_UPPER"}, {"group": 2}])
def test_conv_integer(attrs):
    x = ints(np.uint8, 1, 2, 5, 5)
    w = ints(np.uint8, 4, 2 // attrs.get("group", 1), 3, 3)
    check_node("ConvInteger", [("x", x), ("w", w), ("zx", np.array(128, np.uint8)),
                               ("zw", ints(np.uint8, 4))], attrs, opset=10, target="llvm")


@pytest.mark.parametrize("dtype,scale_dtype", [(np.uint8, np.float32), (np.int8, np.float16)])
def test_qlinear_matmul(dtype, scale_dtype):
    check_node("QLinearMatMul", [
        ("a", ints(dtype, 2, 3, 4)), ("sa", scale(1, dtype=scale_dtype)), ("za", ints(dtype, 1)),
        ("b", ints(dtype, 2, 4, 3)), ("sb", scale(1, dtype=scale_dtype)), ("zb", ints(dtype, 1)),
        ("sy", np.array([8.0], scale_dtype)), ("zy", ints(dtype, 1)),
    ], opset=21, target="llvm")


def test_qlinear_conv_per_channel_with_bias():
    check_node("QLinearConv", [
        ("x", ints(np.uint8, 1, 2, 6, 6)), ("sx", np.array(0.05, np.float32)),
        ("zx", np.array(120, np.uint8)), ("w", ints(np.uint8, 3, 2, 3, 3)),
        ("sw", scale(3)), ("zw", ints(np.uint8, 3)), ("sy", np.array(2.0, np.float32)),
        ("zy", np.array(100, np.uint8)), ("bias", rng.integers(-500, 500, 3).astype(np.int32)),
    ], {"pads": [1, 1, 1, 1]}, opset=10, target="llvm")


def test_qlinear_matmul_rejects_a_vector_output_scale():
    model = invalid("QLinearMatMul", [
        ("a", np.zeros((2, 2), np.uint8)), ("sa", np.ones((), np.float32)),
        ("za", np.zeros((), np.uint8)), ("b", np.zeros((2, 2), np.uint8)),
        ("sb", np.ones((), np.float32)), ("zb", np.zeros((), np.uint8)),
        ("sy", np.ones(2, np.float32)), ("zy", np.zeros((), np.uint8))], opset=10)
    with pytest.raises(ember.FrontendError, match="y_scale of shape .2,. must hold one value"):
        ember.compile(model, target="llvm")

"""Conv, ConvTranspose, MatMul, Gemm, the softmax family and Dropout against onnx's reference
evaluator (or a numpy statement of the ONNX spec where that evaluator is wrong), plus the
errors their converters and ops raise."""

import numpy as np
import onnx
import pytest
from support import check_node, node_model, onnx_reference, tolerance

import ember
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType


def rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_ember(op_type, inputs, attrs=None, *, initializers=(), outputs=1, opset=18):
    """ember's outputs for a one-node model (outputs typed by onnx's shape inference)."""
    model = onnx.shape_inference.infer_shapes(
        node_model(op_type, inputs, attrs, initializers=initializers, outputs=outputs,
                   opset=opset))
    for value in model.graph.output:  # onnx infers no type for old Dropout's mask: x's type
        if not value.type.HasField("tensor_type"):
            value.type.CopyFrom(model.graph.input[0].type)
    feeds = {n: a for n, a in inputs if a is not None and n not in initializers}
    return ember.compile(model, target="reference").run(feeds)


def assert_close(got, expected):
    rtol, atol = tolerance(expected.dtype)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- Conv

# (spatial shape, kernel, strides, dilations, pads)
CONV_WINDOWS = [
    ((9,), (3,), (1,), (1,), (0, 0)),
    ((11,), (4,), (2,), (2,), (1, 2)),
    ((7, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((9, 7), (3, 2), (2, 1), (1, 2), (0, 1, 2, 0)),
    ((5, 6, 7), (2, 3, 3), (1, 2, 1), (2, 1, 1), (1, 0, 1, 0, 1, 1)),
]


def conv_operands(spatial, kernel, groups, bias, dtype="float32", batch=2):
    channels = 4
    groups = channels if groups == "depthwise" else groups
    filters = 2 * channels if groups == channels else 6
    inputs = [("x", rand((batch, channels, *spatial), dtype, 1)),
              ("w", rand((filters, channels // groups, *kernel), dtype, 2))]
    if bias:
        inputs.append(("b", rand((filters,), dtype, 3)))
    return inputs, groups


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2, "depthwise"])
@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", CONV_WINDOWS)
def test_conv(spatial, kernel, strides, dilations, pads, groups, bias):
    inputs, groups = conv_operands(spatial, kernel, groups, bias)
    check_node("Conv", inputs, {"strides": strides, "dilations": dilations, "pads": pads,
                                "group": groups, "kernel_shape": kernel},
               initializers=["w"], opset=11, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("spatial,kernel,strides,dilations", [
    ((10,), (3,), (2,), (1,)),
    ((8, 9), (3, 2), (2, 3), (1, 1)),
    ((7, 8), (2, 3), (1, 2), (2, 1)),
    ((5, 4, 6), (3, 2, 2), (2, 1, 2), (1, 1, 1)),
])
def test_conv_auto_pad(spatial, kernel, strides, dilations, auto_pad):
    inputs, groups = conv_operands(spatial, kernel, 2, True)
    check_node("Conv", inputs, {"strides": strides, "dilations": dilations,
                                "auto_pad": auto_pad, "group": groups},
               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_same_stride_longer_than_window_crops(auto_pad):
    # ONNX's SAME formula gives a negative total padding here (stride 3, window 1): the input
    # is cropped, as ONNX Runtime does. Total -2 splits into -1/-1 for SAME_UPPER and 0/-2
    # for SAME_LOWER (C's truncating division).
    x, w = rand((1, 2, 6)), rand((3, 2, 1))
    (got,) = run_ember("Conv", [("x", x), ("w", w)], {"strides": [3], "auto_pad": auto_pad})
    start = 1 if auto_pad == "SAME_UPPER" else 0
    expected = np.einsum("ncl,mc->nml", x[:, :, start::3][:, :, :2], w[:, :, 0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_conv_dtypes(dtype):
    inputs, groups = conv_operands((6, 7), (3, 3), 2, True, dtype)
    check_node("Conv", inputs, {"pads": [1, 1, 1, 1], "group": groups, "strides": [2, 1]})


def test_conv_weight_as_graph_input():
    inputs, _ = conv_operands((8, 8), (3, 3), 1, True, batch=3)
    check_node("Conv", inputs, {"pads": [1, 1, 1, 1]}, rtol=1e-4, atol=1e-5)


def test_conv_reference_chunks_large_batches(monkeypatch):
    # Batches whose im2col matrix passes the budget run in chunks of images: shrink the budget
    # rather than build a huge input.
    from ember.ir.ops import get_op, nn

    x, w = rand((5, 3, 6, 6)), rand((4, 3, 3, 3))
    op = get_op("conv")
    attrs = op.make_attrs({"strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1)})
    (whole,) = op.evaluate(attrs, [x, w, None])
    monkeypatch.setattr(nn, "_IM2COL_BUDGET", 1)
    (chunked,) = op.evaluate(attrs, [x, w, None])
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


# ----------------------------------------------------------------------------- ConvTranspose


def conv_transpose_oracle(inputs, attrs, groups):
    """onnx's reference mishandles groups; run it per group and join the channels."""
    x, w = inputs[0][1], inputs[1][1]
    bias = inputs[2][1] if len(inputs) > 2 else None
    per_in, per_out = x.shape[1] // groups, w.shape[1]
    parts = []
    for g in range(groups):
        part = [("x", x[:, g * per_in:(g + 1) * per_in]), ("w", w[g * per_in:(g + 1) * per_in])]
        if bias is not None:
            part.append(("b", bias[g * per_out:(g + 1) * per_out]))
        model = node_model("ConvTranspose", part, {**attrs, "group": 1})
        parts.append(onnx_reference(model, dict(part))[0])
    return np.concatenate(parts, axis=1)


CONV_TRANSPOSE_CASES = [
    ((5,), (3,), {"strides": [2]}),
    ((4,), (2,), {"strides": [3], "dilations": [2], "pads": [1, 2], "output_padding": [1]}),
    ((4, 5), (3, 3), {"strides": [2, 1], "pads": [1, 0, 0, 1]}),
    ((3, 4), (2, 3), {"strides": [2, 3], "output_padding": [1, 2]}),
    ((3, 3), (3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((3, 4), (3, 2), {"strides": [2, 2], "dilations": [2, 1], "auto_pad": "SAME_UPPER"}),
    ((3, 4), (3, 2), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((3, 4), (3, 2), {"strides": [2, 1], "auto_pad": "VALID"}),
    ((3, 2, 3), (2, 2, 3), {"strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("spatial,kernel,attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose(spatial, kernel, attrs, groups, bias):
    x = rand((2, 4, *spatial), seed=1)
    w = rand((4, 3, *kernel), seed=2)
    inputs = [("x", x), ("w", w)] + ([("b", rand((3 * groups,), seed=3))] if bias else [])
    attrs = {**attrs, "group": groups}
    if groups == 1:
        check_node("ConvTranspose", inputs, attrs, initializers=["w"], rtol=1e-4, atol=1e-5)
        return
    (got,) = run_ember("ConvTranspose", inputs, attrs, initializers=["w"])
    np.testing.assert_allclose(got, conv_transpose_oracle(inputs, attrs, groups),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_conv_transpose_dtypes(dtype):
    inputs = [("x", rand((1, 2, 4, 4), dtype, 1)), ("w", rand((2, 3, 3, 3), dtype, 2)),
              ("b", rand((3,), dtype, 3))]
    check_node("ConvTranspose", inputs, {"strides": [2, 2], "pads": [1, 1, 0, 0]})


# ----------------------------------------------------------------------------- MatMul and Gemm


@pytest.mark.parametrize("a_shape,b_shape", [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (2, 4, 5)),
])
def test_matmul(a_shape, b_shape):
    check_node("MatMul", [("a", rand(a_shape, seed=1)), ("b", rand(b_shape, seed=2))],
               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int64", "uint32"])
def test_matmul_dtypes(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, (2, 3, 4)).astype(dtype), rng.integers(0, 5, (4, 2)).astype(dtype)
    check_node("MatMul", [("a", a), ("b", b)], opset=13)


C_SHAPES = [None, (), (1,), (5,), (1, 5), (3, 1), (3, 5)]


@pytest.mark.parametrize("c_shape", C_SHAPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (2.0, 0.0)])
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(trans_a, trans_b, alpha, beta, c_shape):
    a = rand((4, 3) if trans_a else (3, 4), seed=1)
    b = rand((5, 4) if trans_b else (4, 5), seed=2)
    inputs = [("a", a), ("b", b)] + ([("c", rand(c_shape, seed=3))] if c_shape else [])
    check_node("Gemm", inputs, {"transA": trans_a, "transB": trans_b, "alpha": alpha,
                                "beta": beta}, initializers=["b"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm_opsets(opset):
    inputs = [("a", rand((3, 4), seed=1)), ("b", rand((5, 4), seed=2)),
              ("c", rand((5,), seed=3))]
    check_node("Gemm", inputs, {"transB": 1, "alpha": 0.25}, opset=opset, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32"])
def test_gemm_dtypes(dtype):
    rng = np.random.default_rng(0)
    inputs = [("a", rng.integers(-3, 3, (3, 4)).astype(dtype)),
              ("b", rng.integers(-3, 3, (4, 2)).astype(dtype)),
              ("c", rng.integers(-3, 3, (2,)).astype(dtype))]
    check_node("Gemm", inputs, {"alpha": 2.0, "beta": 3.0}, opset=13)


def test_gemm_integer_with_fractional_alpha_fails():
    inputs = [("a", np.ones((2, 2), "int32")), ("b", np.ones((2, 2), "int32"))]
    with pytest.raises(ember.FrontendError, match=r"alpha=0.5 cannot scale a int32 Gemm"):
        run_ember("Gemm", inputs, {"alpha": 0.5}, opset=13)


# ----------------------------------------------------------------------------- softmax family


def coerced_2d(op_type, x, axis):
    """Opsets before 13: the op on x flattened to [prod(:axis), prod(axis:)]."""
    axis = axis % x.ndim
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1).astype(np.float64)
    if op_type == "Hardmax":
        out = np.zeros_like(flat)
        out[np.arange(flat.shape[0]), flat.argmax(axis=1)] = 1
    else:
        shifted = flat - flat.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        out = shifted - log_sum if op_type == "LogSoftmax" else np.exp(shifted - log_sum)
    return out.reshape(x.shape).astype(x.dtype)


SOFTMAX_OPS = ["Softmax", "LogSoftmax", "Hardmax"]


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -2, -4])
@pytest.mark.parametrize("op_type", SOFTMAX_OPS)
def test_softmax_opset13(op_type, axis):
    check_node(op_type, [("x", rand((2, 3, 4, 5)))], {"axis": axis}, opset=13)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 1, 4, 1), (3, 7)])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, None])
@pytest.mark.parametrize("op_type", SOFTMAX_OPS)
@pytest.mark.parametrize("opset", [1, 11])
def test_softmax_coerced_to_2d(op_type, axis, shape, opset):
    # onnx's reference evaluator does not implement the pre-13 semantics: compare with numpy.
    if axis is not None and not -len(shape) <= axis < len(shape):
        pytest.skip("axis out of range for this rank")
    x = rand(shape)
    attrs = {} if axis is None else {"axis": axis}
    (got,) = run_ember(op_type, [("x", x)], attrs, opset=opset)
    assert_close(got, coerced_2d(op_type, x, 1 if axis is None else axis))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("op_type", SOFTMAX_OPS)
def test_softmax_dtypes(op_type, dtype):
    check_node(op_type, [("x", rand((3, 6), dtype))], {"axis": 0}, opset=13)


def test_softmax_large_values_are_stable():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]], "float32")
    for op_type in ("Softmax", "LogSoftmax"):
        check_node(op_type, [("x", x)], opset=13)


def test_hardmax_picks_the_first_maximum():
    x = np.array([[3.0, 1.0, 3.0], [2.0, 2.0, 2.0]], "float32")
    (got,) = run_ember("Hardmax", [("x", x)], {"axis": -1}, opset=13)
    np.testing.assert_array_equal(got, [[1, 0, 0], [1, 0, 0]])


# ----------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opset", [12, 13, 22])
def test_dropout_inference(opset, mask):
    x = rand((2, 3, 4))
    check_node("Dropout", [("x", x)], outputs=2 if mask else 1, opset=opset)
    inputs = [("x", x), ("r", np.array(0.3, "float32")), ("t", np.array(False))]
    check_node("Dropout", inputs, initializers=["r", "t"], outputs=2 if mask else 1,
               opset=opset)


@pytest.mark.parametrize("opset", [1, 6, 7, 10])
def test_dropout_old_opsets(opset):
    x = rand((2, 3))
    attrs = {"ratio": 0.3, **({"is_test": 1} if opset < 7 else {})}
    y, mask = run_ember("Dropout", [("x", x)], attrs, outputs=2, opset=opset)
    np.testing.assert_array_equal(y, x)
    # The mask is the input's type before opset 10, bool from then on.
    assert mask.dtype == (np.bool_ if opset >= 10 else x.dtype) and mask.all()


def test_dropout_training_mode_with_zero_ratio_is_identity():
    x = rand((2, 3))
    inputs = [("x", x), ("r", np.array(0.0, "float32")), ("t", np.array(True))]
    y, mask = run_ember("Dropout", inputs, initializers=["r", "t"], outputs=2, opset=13)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()


def test_dropout_training_mode_fails():
    inputs = [("x", rand((2, 3))), ("r", np.array(0.5, "float32")), ("t", np.array(True))]
    with pytest.raises(ember.FrontendError, match=r"training_mode is true with ratio 0.5"):
        run_ember("Dropout", inputs, initializers=["r", "t"], opset=13)


def test_dropout_training_mode_from_a_graph_input_specializes():
    # the module specializes on training_mode at run time; true still asks for random dropout
    inputs = [("x", rand((2, 3))), ("r", np.array(0.5, "float32")), ("t", np.array(True))]
    with pytest.raises(ember.InputError, match=r"t=True.*random dropout is not supported"):
        run_ember("Dropout", inputs, initializers=["r"], opset=13)


# ----------------------------------------------------------------------------- errors


def test_conv_channel_mismatch():
    inputs = [("x", rand((1, 3, 5, 5))), ("w", rand((2, 4, 3, 3)))]
    # onnx's own shape inference does not check channels, so ember's message is the one seen
    with pytest.raises(ember.FrontendError,
                       match=r"input has 3 channels but the weight \(2, 4, 3, 3\) expects 4 "
                             r"\(groups=1\)"):
        run_ember("Conv", inputs, initializers=["w"], opset=13)


def test_conv_groups_must_divide_channels():
    inputs = [("x", rand((1, 4, 5, 5))), ("w", rand((3, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError, match=r"groups=2 must .* divide both"):
        run_ember("Conv", inputs, {"group": 2}, initializers=["w"], opset=13)


def test_conv_bad_auto_pad():
    inputs = [("x", rand((1, 2, 5, 5))), ("w", rand((2, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError,
                       match=r"auto_pad 'SAME' is not supported; ember supports NOTSET, "
                             r"SAME_UPPER, SAME_LOWER, VALID"):
        run_ember("Conv", inputs, {"auto_pad": "SAME"}, initializers=["w"], opset=13)


def test_conv_kernel_shape_must_match_weight():
    inputs = [("x", rand((1, 2, 5, 5))), ("w", rand((2, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError, match=r"kernel_shape \[2, 2\] does not match"):
        run_ember("Conv", inputs, {"kernel_shape": [2, 2]}, initializers=["w"], opset=13)


def test_conv_window_larger_than_input():
    inputs = [("x", rand((1, 2, 2, 5))), ("w", rand((2, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError, match=r"the window spans 3 elements"):
        run_ember("Conv", inputs, initializers=["w"], opset=13)


def test_conv_pads_contradicting_auto_pad():
    inputs = [("x", rand((1, 2, 5, 5))), ("w", rand((2, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError, match=r"contradict auto_pad 'VALID'"):
        run_ember("Conv", inputs, {"auto_pad": "VALID", "pads": [1, 1, 1, 1]},
                  initializers=["w"], opset=13)


def test_conv_transpose_channel_mismatch():
    inputs = [("x", rand((1, 3, 4, 4))), ("w", rand((2, 2, 3, 3)))]
    with pytest.raises(ember.FrontendError, match=r"input has 3 channels but the weight"):
        run_ember("ConvTranspose", inputs, initializers=["w"], opset=13)


def test_op_errors_quote_the_numbers():
    builder = GraphBuilder()
    a = builder.add_input("a", TensorType((2, 3), "float32"))
    b = builder.add_input("b", TensorType((4, 5), "float32"))
    with pytest.raises(ShapeError, match=r"contracted dimensions 3 and 4 differ"):
        builder.add_node("matmul", [a, b])
    with pytest.raises(ShapeError, match=r"strides \(1,\) has 1 entries; .* needs 2"):
        x = builder.add_input("x", TensorType((1, 2, 5, 5), "float32"))
        w = builder.add_input("w", TensorType((2, 2, 3, 3), "float32"))
        builder.add_node("conv", [x, w], {"strides": (1,), "dilations": (1, 1),
                                          "pads": (0, 0, 0, 0)})
    with pytest.raises(ShapeError, match=r"softmax: axis 2 is out of range"):
        builder.add_node("softmax", [a], {"axis": 2})
    i = builder.add_input("i", TensorType((2, 3), "int32"))
    with pytest.raises(ShapeError, match=r"softmax: input has dtype int32"):
        builder.add_node("softmax", [i], {"axis": 1})

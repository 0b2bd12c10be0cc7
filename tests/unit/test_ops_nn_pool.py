"""MaxPool, AveragePool, LpPool and the global pools against onnx's reference evaluator, and a
numpy statement of the ONNX spec where that evaluator is wrong or missing."""

import numpy as np
import onnx
import pytest
from support import check_node, node_model, onnx_reference

import ember
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType


def rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_ember(op_type, inputs, attrs=None, *, outputs=1, opset=19):
    """ember's outputs for a one-node model (outputs typed by onnx's shape inference)."""
    model = onnx.shape_inference.infer_shapes(
        node_model(op_type, inputs, attrs, outputs=outputs, opset=opset))
    for value in model.graph.output:  # where onnx infers nothing, let ember's error show
        if not value.type.HasField("tensor_type"):
            value.type.CopyFrom(model.graph.input[0].type)
    return ember.compile(model, target="reference").run(dict(inputs))


# (input spatial shape, kernel, strides, dilations, pads). Strides stay at most 2 where
# ceil_mode is on: onnx's reference shifts windows when ceil mode needs 2+ extra elements.
POOL_WINDOWS = [
    ((9,), (3,), (1,), (1,), (0, 0)),
    ((10,), (2,), (2,), (2,), (1, 0)),
    ((7, 8), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ((8, 7), (2, 3), (1, 2), (2, 1), (0, 1, 1, 0)),
    ((5, 6, 7), (2, 2, 3), (2, 1, 2), (1, 2, 1), (1, 0, 1, 0, 1, 1)),
]


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", POOL_WINDOWS)
def test_max_pool(spatial, kernel, strides, dilations, pads, ceil_mode):
    check_node("MaxPool", [("x", rand((2, 3, *spatial)))],
               {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                "pads": pads, "ceil_mode": ceil_mode}, opset=12)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", POOL_WINDOWS)
def test_average_pool(spatial, kernel, strides, dilations, pads, ceil_mode, count_include_pad):
    check_node("AveragePool", [("x", rand((2, 3, *spatial)))],
               {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                "pads": pads, "ceil_mode": ceil_mode, "count_include_pad": count_include_pad},
               opset=19)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", POOL_WINDOWS)
def test_lp_pool(spatial, kernel, strides, dilations, pads, p):
    check_node("LpPool", [("x", rand((2, 3, *spatial)))],
               {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                "pads": pads, "p": p}, opset=18, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool", "LpPool"])
@pytest.mark.parametrize("spatial,kernel,strides", [
    ((9,), (3,), (2,)), ((7, 8), (3, 2), (2, 3)), ((4, 5, 6), (2, 3, 2), (1, 2, 2)),
])
def test_pool_auto_pad(op_type, auto_pad, spatial, kernel, strides):
    x = rand((1, 2, *spatial))
    attrs = {"kernel_shape": kernel, "strides": strides, "auto_pad": auto_pad}
    if op_type == "MaxPool" and auto_pad == "SAME_LOWER":
        # onnx's reference gets MaxPool's SAME_LOWER shape wrong: compare with the explicit
        # pads it stands for (the odd unit of padding at the beginning).
        totals = [max(0, (-(-n // s) - 1) * s + k - n)
                  for n, k, s in zip(spatial, kernel, strides)]
        pads = [t - t // 2 for t in totals] + [t // 2 for t in totals]
        (got,) = run_ember(op_type, [("x", x)], attrs, opset=18)
        explicit = {**attrs, "auto_pad": "NOTSET", "pads": pads}
        expected = onnx_reference(node_model(op_type, [("x", x)], explicit, opset=18),
                                  {"x": x})[0]
        np.testing.assert_allclose(got, expected)
        return
    check_node(op_type, [("x", x)], attrs, opset=18, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint8"])
def test_max_pool_dtypes(dtype):
    x = np.random.default_rng(0).integers(0, 100, (2, 3, 6, 5)).astype(dtype)
    check_node("MaxPool", [("x", x)], {"kernel_shape": [3, 2], "strides": [2, 1]}, opset=12)
    # onnx's reference pads with NaN, which integers cannot hold: check padding by hand.
    (got,) = run_ember("MaxPool", [("x", x)], {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]},
                       opset=12)
    np.testing.assert_array_equal(got[:, :, 0, 0], x[:, :, 0, 0])
    np.testing.assert_array_equal(got[:, :, 1:, 1:], np.maximum(
        np.maximum(x[:, :, 1:, 1:], x[:, :, :-1, 1:]),
        np.maximum(x[:, :, 1:, :-1], x[:, :, :-1, :-1])))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("op_type", ["AveragePool", "LpPool", "GlobalAveragePool",
                                     "GlobalMaxPool"])
def test_pool_float_dtypes(op_type, dtype):
    attrs = {} if op_type.startswith("Global") else {"kernel_shape": [2, 2], "strides": [2, 1]}
    check_node(op_type, [("x", rand((2, 3, 6, 5), dtype))], attrs, opset=18)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", [
    ((9,), (3,), (2,), (1,), (1, 1)),
    ((7, 8), (3, 2), (2, 2), (1, 1), (1, 0, 1, 1)),
    ((6, 7), (2, 2), (2, 1), (2, 1), (0, 0, 0, 0)),
    ((4, 5, 6), (2, 2, 2), (2, 1, 2), (1, 2, 1), (1, 0, 1, 0, 1, 1)),
])
def test_max_pool_indices(spatial, kernel, strides, dilations, pads, storage_order):
    # onnx's reference computes Indices only where a stride or dilation is not 1.
    if storage_order and len(spatial) == 1:
        pytest.skip("storage order means nothing in 1-D")
    check_node("MaxPool", [("x", rand((2, 3, *spatial)))],
               {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                "pads": pads, "storage_order": storage_order}, outputs=2, opset=12)


def test_max_pool_indices_unit_strides():
    # Flat index into (N, C, H, W), row-major; the last axis varies fastest.
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    values, indices = run_ember("MaxPool", [("x", x)], {"kernel_shape": [2, 2]}, outputs=2,
                                opset=12)
    np.testing.assert_array_equal(values, x[:, :, 1:, 1:])
    np.testing.assert_array_equal(indices, np.arange(x.size).reshape(x.shape)[:, :, 1:, 1:])


def test_pool_ceil_mode_with_long_strides():
    # Ceil mode keeps a last window that starts inside the input (or its begin padding); its
    # part past the end padding counts for nothing, while count_include_pad counts the
    # explicit padding (PyTorch's and ONNX Runtime's rule). Length 9, kernel 3, stride 3,
    # pads 1/1: windows over -1..1, 2..4, 5..7 and 8..10, the last holding index 8, one end pad
    # and one element past it.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 9)
    attrs = {"kernel_shape": [3], "strides": [3], "pads": [1, 1], "ceil_mode": 1}
    (mean,) = run_ember("AveragePool", [("x", x)], attrs)
    np.testing.assert_allclose(mean[0, 0], [(1 + 2) / 2, 4, 7, 9])
    (mean,) = run_ember("AveragePool", [("x", x)], {**attrs, "count_include_pad": 1})
    np.testing.assert_allclose(mean[0, 0], [(1 + 2) / 3, 4, 7, 9 / 2])
    (peak,) = run_ember("MaxPool", [("x", x)], attrs)
    np.testing.assert_allclose(peak[0, 0], [2, 5, 8, 9])
    # Length 7, kernel 2, stride 3: the third window starts at 6 and holds only index 6.
    attrs = {"kernel_shape": [2], "strides": [3], "ceil_mode": 1}
    (peak,) = run_ember("MaxPool", [("x", x[:, :, :7])], attrs)
    np.testing.assert_allclose(peak[0, 0], [2, 5, 7])
    # A window that would start in the end padding is dropped: length 6, pads 0/2, kernel 2,
    # stride 3 keeps the windows at 0 and 3 only.
    (peak,) = run_ember("MaxPool", [("x", x[:, :, :6])], {**attrs, "pads": [0, 2]})
    np.testing.assert_allclose(peak[0, 0], [2, 5])


@pytest.mark.parametrize("auto_pad,start", [("SAME_UPPER", 1), ("SAME_LOWER", 0)])
@pytest.mark.parametrize("op_type", ["AveragePool", "LpPool"])
def test_pool_same_stride_longer_than_window_crops(op_type, auto_pad, start):
    # SAME with stride 3 over a window of 1: ONNX's formula gives total padding -2, which crops
    # (ONNX Runtime's reading); SAME_UPPER takes one element off each end.
    x = rand((1, 2, 6))
    (got,) = run_ember(op_type, [("x", x)],
                       {"kernel_shape": [1], "strides": [3], "auto_pad": auto_pad}, opset=18)
    expected = x[:, :, start::3][:, :, :2]
    np.testing.assert_allclose(got, np.abs(expected) if op_type == "LpPool" else expected,
                               rtol=1e-6)


def test_pool_same_with_dilation_uses_the_dilated_window():
    # ONNX's pad formula spans (kernel - 1) * dilation + 1: length 5, kernel 2, dilation 2,
    # stride 1 needs 2 pads, 1 each side for SAME_UPPER; output o is max(x[o - 1], x[o + 1]).
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    (got,) = run_ember("MaxPool", [("x", x)],
                       {"kernel_shape": [2], "dilations": [2], "auto_pad": "SAME_UPPER"})
    np.testing.assert_allclose(got[0, 0], [2, 3, 4, 5, 4])


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op_type, shape):
    x = rand(shape)
    if len(shape) == 4:
        check_node(op_type, [("x", x)])
    # onnx's reference GlobalMaxPool gives the wrong rank outside 2-D: check with numpy too.
    (got,) = run_ember(op_type, [("x", x)])
    reduce = np.mean if op_type == "GlobalAveragePool" else np.max
    np.testing.assert_allclose(got, reduce(x, axis=tuple(range(2, x.ndim)), keepdims=True),
                               rtol=1e-6)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5)])
def test_global_lp_pool(shape, p):
    # onnx's reference evaluator has no GlobalLpPool.
    x = rand(shape)
    (got,) = run_ember("GlobalLpPool", [("x", x)], {"p": p}, opset=18)
    axes = tuple(range(2, x.ndim))
    expected = (np.abs(x.astype(np.float64)) ** p).sum(axis=axes, keepdims=True) ** (1 / p)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("opset", [1, 7, 8, 10, 11])
def test_pool_old_opsets(opset):
    x = rand((1, 2, 7, 6))
    check_node("MaxPool", [("x", x)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                       "pads": [1, 1, 1, 1]}, opset=opset)
    # AveragePool-1 had no count_include_pad; ember reads it as 0 (as ONNX Runtime does),
    # onnx's reference as 1, so opset 1 is checked without padding.
    pads = [0, 0, 0, 0] if opset == 1 else [1, 0, 1, 1]
    check_node("AveragePool", [("x", x)], {"kernel_shape": [3, 2], "pads": pads}, opset=opset)


# ----------------------------------------------------------------------------- errors


def test_max_pool_indices_with_cropping_same_fails():
    with pytest.raises(ember.FrontendError, match=r"Indices output is not supported where "
                                                  r"auto_pad crops"):
        run_ember("MaxPool", [("x", rand((1, 1, 6)))],
                  {"kernel_shape": [1], "strides": [3], "auto_pad": "SAME_UPPER"}, outputs=2)


def test_pool_bad_auto_pad():
    with pytest.raises(ember.FrontendError, match=r"auto_pad 'same' is not supported"):
        run_ember("MaxPool", [("x", rand((1, 1, 6)))], {"kernel_shape": [2], "auto_pad": "same"})


def test_pool_op_errors_quote_the_numbers():
    builder = GraphBuilder()
    x = builder.add_input("x", TensorType((1, 2, 6, 6), "float32"))
    window = {"kernel_shape": (2, 2), "strides": (1, 1), "dilations": (1, 1),
              "pads": (0, 0, 0, 0)}
    with pytest.raises(ShapeError, match=r"strides \(1,\) has 1 entries; an input of shape "
                                         r"\(1, 2, 6, 6\) has 2 spatial axes, so it needs 2"):
        builder.add_node("average_pool", [x], {**window, "strides": (1,)})
    with pytest.raises(ShapeError, match=r"dilations \(0, 1\) must be positive"):
        builder.add_node("max_pool", [x], {**window, "dilations": (0, 1)})
    with pytest.raises(ShapeError, match=r"the window spans 7 elements \(kernel 4, dilation 2\) "
                                         r"but the padded input has only 6"):
        builder.add_node("lp_pool", [x], {**window, "kernel_shape": (4, 1),
                                          "dilations": (2, 1), "p": 2})
    flags = builder.add_input("flags", TensorType((1, 2, 6, 6), "bool"))
    with pytest.raises(ShapeError, match=r"max_pool: input has dtype bool"):
        builder.add_node("max_pool", [flags], window)


def test_global_pool_needs_spatial_axes():
    with pytest.raises(ember.FrontendError, match=r"at least one spatial axis"):
        run_ember("GlobalAveragePool", [("x", rand((2, 3)))])

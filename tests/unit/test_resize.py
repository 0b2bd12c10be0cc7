"""The `resize` op (ir/ops/resize.py, compiler/ops/compute/resize.py) and the ONNX Resize and
Upsample converters: compiled kernels against the numpy reference, whole nodes compiled for
llvm against onnx's reference evaluator, and ONNX Runtime's values where that evaluator has
no Resize-10."""

import numpy as np
import pytest
from support import check_kernel, check_node, node_model

import ember
from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops import get_op

COORDINATE_MODES = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                    "align_corners", "asymmetric"]


def rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def resize_inputs(x, scales=None, sizes=None, roi=None):
    return [("x", x), ("roi", None if roi is None else np.asarray(roi, np.float32)),
            ("scales", None if scales is None else np.asarray(scales, np.float32)),
            ("sizes", None if sizes is None else np.asarray(sizes, np.int64))]


def check_resize(inputs, attrs, opset=19, target="reference", constants=True):
    """check_node for Resize with roi, scales and sizes as initializers (or graph inputs)."""
    names = [n for n, a in inputs[1:] if a is not None] if constants else []
    return check_node("Resize", inputs, attrs, initializers=names, opset=opset, target=target)


# ----------------------------------------------------------------------------- the ember op


@pytest.mark.parametrize("mode,coordinate_mode", [
    ("nearest", "half_pixel"), ("nearest", "align_corners"), ("linear", "half_pixel"),
    ("linear", "pytorch_half_pixel"), ("cubic", "asymmetric"), ("cubic", "half_pixel_symmetric"),
])
def test_kernel_matches_reference(mode, coordinate_mode):
    x = rand((2, 3, 5, 7))
    check_kernel("resize", [x], {"sizes": (2, 3, 9, 4), "scales": (1.0, 1.0, 9 / 5, 4 / 7),
                                 "mode": mode, "coordinate_mode": coordinate_mode})


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil", "simple"])
@pytest.mark.parametrize("coordinate_mode", [*COORDINATE_MODES, "tf_half_pixel_for_nn"])
def test_kernel_nearest_whole_factors(coordinate_mode, nearest_mode):
    # where the kernel reads y // k instead of rounding a float coordinate, it must agree
    x = rand((1, 2, 3, 4))
    check_kernel("resize", [x], {"sizes": (1, 2, 6, 12), "scales": (1.0, 1.0, 2.0, 3.0),
                                 "coordinate_mode": coordinate_mode,
                                 "nearest_mode": nearest_mode})


@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
def test_kernel_linear_rational_coordinates(coordinate_mode):
    # 2x, 4x and 3 -> 4 take the integer coordinate path where the denominator allows
    x = rand((1, 3, 4, 3))
    check_kernel("resize", [x], {"sizes": (1, 6, 16, 4), "scales": (2.0, 2.0, 4.0, 4 / 3),
                                 "mode": "linear", "coordinate_mode": coordinate_mode})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_kernel_antialias_exclude_outside_crop(mode):
    x = rand((1, 2, 9, 8))
    check_kernel("resize", [x], {"sizes": (1, 2, 5, 5), "scales": (1.0, 1.0, 5 / 9, 0.625),
                                 "mode": mode, "antialias": True, "exclude_outside": True})
    check_kernel("resize", [x], {"sizes": (1, 2, 4, 6), "scales": (1.0, 1.0, 0.5, 0.75),
                                 "roi": (0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3), "mode": mode,
                                 "coordinate_mode": "tf_crop_and_resize",
                                 "extrapolation_value": 7.0})


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64", "float16"])
def test_kernel_dtypes(dtype):
    x = (np.random.default_rng(1).integers(0, 250, (1, 3, 4, 5))).astype(dtype)
    for mode in ("nearest", "linear"):
        check_kernel("resize", [x], {"sizes": (1, 3, 7, 9), "scales": (1.0, 1.0, 7 / 4, 9 / 5),
                                     "mode": mode})


def test_infer_rejects_bad_attributes():
    op = get_op("resize")
    x = TensorType((1, 2, 3), "float32")
    with pytest.raises(ShapeError, match="one entry per axis"):
        op.infer_types(op.make_attrs({"sizes": (1, 2), "scales": (1.0, 1.0)}), [x])
    with pytest.raises(ShapeError, match="mode 'area'"):
        op.infer_types(op.make_attrs({"sizes": (1, 2, 3), "scales": (1.0, 1.0, 1.0),
                                      "mode": "area"}), [x])
    with pytest.raises(ShapeError, match="dtype bool"):
        op.infer_types(op.make_attrs({"sizes": (1, 2, 3), "scales": (1.0, 1.0, 1.0)}),
                       [TensorType((1, 2, 3), "bool")])


# ----------------------------------------------------------------------------- ONNX Resize


# Sweeps run on the reference target (the converter's attribute resolution against onnx's
# evaluator); a representative case of each family also compiles for llvm.


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
def test_nearest(coordinate_mode, nearest_mode):
    target = "llvm" if coordinate_mode == "half_pixel" else "reference"
    check_resize(resize_inputs(rand((1, 2, 4, 5)), scales=[1, 1, 1.75, 0.6]),
                 {"mode": "nearest", "coordinate_transformation_mode": coordinate_mode,
                  "nearest_mode": nearest_mode}, target=target)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
def test_linear_cubic_sizes(mode, coordinate_mode):
    target = "llvm" if coordinate_mode in ("half_pixel", "align_corners") else "reference"
    check_resize(resize_inputs(rand((2, 3, 5, 4)), sizes=[2, 3, 8, 3]),
                 {"mode": mode, "coordinate_transformation_mode": coordinate_mode},
                 target=target)


def test_linear_3d_and_1d():
    check_resize(resize_inputs(rand((1, 2, 3, 4, 5)), scales=[1, 1, 2, 0.5, 1.5]),
                 {"mode": "linear"}, opset=13, target="llvm")
    check_resize(resize_inputs(rand((7,)), sizes=[12]), {"mode": "linear"}, opset=13)


@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("a", [-0.5, -0.75])
def test_cubic_coefficients(a, exclude_outside):
    check_resize(resize_inputs(rand((1, 1, 6, 6)), scales=[1, 1, 0.8, 1.5]),
                 {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude_outside})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias(mode):
    check_resize(resize_inputs(rand((1, 2, 9, 10)), sizes=[1, 2, 5, 6]),
                 {"mode": mode, "antialias": 1}, opset=18, target="llvm")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_tf_crop_and_resize(mode):
    roi = [0, 0, 0.2, -0.3, 1, 1, 0.8, 1.2]
    check_resize(resize_inputs(rand((1, 1, 6, 6)), roi=roi, sizes=[1, 1, 4, 5]),
                 {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
                  "extrapolation_value": 3.5}, target="llvm")


@pytest.mark.parametrize("axes", [[2, 3], [3, 2]])
@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_axes_and_aspect_ratio(axes, policy):
    check_resize(resize_inputs(rand((1, 2, 3, 5)), sizes=[4, 7]),
                 {"mode": "nearest", "axes": axes, "keep_aspect_ratio_policy": policy})


def test_axes_with_scales_and_roi():
    check_resize(resize_inputs(rand((1, 2, 4, 4)), roi=[0.1, 0.2, 0.7, 0.9], sizes=[3, 3]),
                 {"mode": "linear", "axes": [3, 2],
                  "coordinate_transformation_mode": "tf_crop_and_resize"})
    check_resize(resize_inputs(rand((1, 2, 4, 4)), scales=[0.5, 2.5]),
                 {"mode": "cubic", "axes": [2, 1]}, opset=18)


def test_negative_axes():
    # onnx's evaluator does not take negative axes: compare with the same positive axes
    x = rand((1, 2, 3, 5))
    model = node_model("Resize", resize_inputs(x, sizes=[4, 7]), {"axes": [-1, -2]},
                       initializers=["sizes"], output_arrays=[np.zeros((1, 2, 7, 4))])
    got = ember.compile(model, target="reference").run({"x": x})[0]
    want = check_resize(resize_inputs(x, sizes=[4, 7]), {"axes": [3, 2]})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64", "float16"])
def test_dtypes(dtype):
    x = np.random.default_rng(2).integers(0, 250, (1, 2, 3, 4)).astype(dtype)
    for mode in ("nearest", "linear"):
        check_resize(resize_inputs(x, scales=[1, 1, 2, 1.5]), {"mode": mode}, opset=13)


def test_empty_scales_and_graph_input_sizes():
    # Resize-11 passes an empty scales tensor when sizes are given
    inputs = [("x", rand((1, 1, 2, 3))), ("roi", np.zeros(0, np.float32)),
              ("scales", np.zeros(0, np.float32)), ("sizes", np.array([1, 1, 5, 4]))]
    check_resize(inputs, {"mode": "linear"}, opset=11)
    # sizes as a graph input: the module specializes on its value at run time
    check_resize(resize_inputs(rand((1, 1, 2, 3)), sizes=[1, 1, 3, 6]), {"mode": "nearest"},
                 target="llvm", constants=False)


def test_resize_10_and_upsample_match_onnxruntime():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 6)
    expected = {  # ONNX Runtime 1.32's outputs (onnx's reference has no Resize-10)
        ("nearest", 0.7): [0, 2, 3, 5],
        ("nearest", 1.5): [0, 0, 1, 2, 2, 3, 4, 4, 5],
        ("linear", 0.7): [0, 10 / 7, 20 / 7, 30 / 7],
        ("linear", 2.0): [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5],
    }
    from onnx import helper
    for (mode, scale), values in expected.items():
        node = helper.make_node("Resize", ["x", "scales"], ["y"], mode=mode)
        graph = helper.make_graph(
            [node], "resize10", [helper.make_tensor_value_info("x", 1, x.shape)],
            [helper.make_tensor_value_info("y", 1, [1, 1, 1, len(values)])],
            [helper.make_tensor("scales", 1, [4], [1, 1, 1, scale])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
        got = ember.compile(model, target="llvm").run({"x": x})[0]
        np.testing.assert_allclose(got.ravel(), values, rtol=1e-6)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "floor", "ceil"])
def test_tf_half_pixel_for_nn_matches_onnxruntime(nearest_mode):
    # Resize-11's tf_half_pixel_for_nn: x = (y + 0.5) / scale (onnx's evaluator lacks it)
    import onnxruntime

    x = rand((1, 2, 3, 5))
    inputs = [("x", x), ("roi", np.zeros(0, np.float32)),
              ("scales", np.array([1, 1, 1.5, 2], np.float32))]
    model = node_model("Resize", inputs, {"mode": "nearest", "nearest_mode": nearest_mode,
                                          "coordinate_transformation_mode":
                                              "tf_half_pixel_for_nn"},
                       initializers=["roi", "scales"], opset=11,
                       output_arrays=[np.zeros((1, 2, 4, 10), np.float32)])
    want = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ember.compile(model, target="llvm").run({"x": x})[0], want)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_nearest(opset):
    x = rand((1, 2, 3, 2))
    scales = np.array([1, 1, 2, 3], np.float32)
    if opset == 9:
        check_node("Upsample", [("x", x), ("scales", scales)], {"mode": "nearest"},
                   initializers=["scales"], opset=9, target="llvm")
        return
    # onnx's evaluator has no Upsample-7: nearest upsampling by whole factors repeats
    want = x.repeat(2, axis=2).repeat(3, axis=3)
    model = node_model("Upsample", [("x", x)], {"mode": "nearest", "scales": scales.tolist()},
                       opset=7, output_arrays=[want])
    np.testing.assert_array_equal(ember.compile(model, target="llvm").run({"x": x})[0], want)


# ----------------------------------------------------------------------------- errors


def _fails(attrs, inputs, match, opset=19):
    names = [n for n, a in inputs[1:] if a is not None]
    model = node_model("Resize", inputs, attrs, initializers=names, opset=opset,
                       output_arrays=[inputs[0][1]])
    with pytest.raises(ember.FrontendError, match=match):
        ember.compile(model, target="reference")


def test_errors():
    x = rand((1, 1, 2, 2))
    _fails({"mode": "area"}, resize_inputs(x, scales=[1, 1, 2, 2]),
           "mode 'area' is not supported")
    _fails({"mode": "nearest", "antialias": 1}, resize_inputs(x, scales=[1, 1, 2, 2]),
           "antialias is defined for the linear and cubic modes")
    _fails({"coordinate_transformation_mode": "tf_crop_and_resize"},
           resize_inputs(x, sizes=[1, 1, 3, 3]), "needs the roi input")
    _fails({}, resize_inputs(x, scales=[1, 1, 2]), "must have 4 entries")
    _fails({}, resize_inputs(x, scales=[1, 1, 0, 2]), "must be positive")
    _fails({"axes": [2, 2]}, resize_inputs(x, sizes=[3, 3]), "repeat an axis")
    _fails({}, resize_inputs(x), "exactly one of the inputs scales and sizes")

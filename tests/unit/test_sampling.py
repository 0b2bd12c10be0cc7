"""GridSample, RoiAlign (ember's grid_sample and roi_align ops), AffineGrid, Col2Im and MaxUnpool
(decomposed) against onnx's reference evaluator, and the two ops' kernels against their numpy
references."""

import numpy as np
import pytest
from support import check_kernel, check_node, node_model

import ember


def rand(shape, dtype="float32", seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


# ----------------------------------------------------------------------------- GridSample


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_grid_sample_2d(mode, padding_mode, align_corners):
    target = "llvm" if padding_mode == "reflection" else "reference"
    check_node("GridSample", [("x", rand((2, 3, 4, 5))), ("grid", rand((2, 3, 6, 2), seed=1,
                                                                         low=-1.4, high=1.4))],
               {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners},
               opset=20, target=target)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_grid_sample_3d(mode, padding_mode):
    check_node("GridSample", [("x", rand((1, 2, 3, 4, 3))), ("grid", rand((1, 2, 3, 2, 3), seed=2,
                                                                          low=-1.3, high=1.3))],
               {"mode": mode, "padding_mode": padding_mode}, opset=22)


@pytest.mark.parametrize("mode,later", [("bilinear", "linear"), ("nearest", "nearest"),
                                        ("bicubic", "cubic")])
def test_grid_sample_16_names(mode, later):
    # onnx's evaluator knows only opset 20's names: compare with those
    inputs = [("x", rand((1, 2, 3, 4))), ("grid", rand((1, 5, 2, 2), seed=3))]
    want = check_node("GridSample", inputs, {"mode": later}, opset=20)[0]
    model = node_model("GridSample", inputs, {"mode": mode}, opset=16, output_arrays=[want])
    got = ember.compile(model, target="reference").run(dict(inputs))[0]
    np.testing.assert_array_equal(got, want)


def test_grid_sample_float64():
    check_node("GridSample", [("x", rand((1, 2, 3, 4), "float64")),
                              ("grid", rand((1, 5, 2, 2), "float64", seed=3))],
               {"mode": "linear"}, opset=22, target="llvm", rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,padding_mode", [("linear", "reflection"), ("cubic", "border"),
                                               ("nearest", "zeros")])
def test_grid_sample_kernel(mode, padding_mode):
    x, grid = rand((2, 3, 5, 4)), rand((2, 4, 3, 2), seed=4, low=-1.5, high=1.5)
    check_kernel("grid_sample", [x, grid],
                 {"mode": mode, "padding_mode": padding_mode, "align_corners": False})


def test_grid_sample_errors():
    model = node_model("GridSample", [("x", rand((1, 2, 3, 4))), ("grid", rand((1, 5, 2, 3)))],
                       {"mode": "linear"}, opset=20, output_arrays=[rand((1, 2, 5, 2))])
    with pytest.raises(ember.FrontendError, match=r"grid must be \(N, O1..Ok, 2\)"):
        ember.compile(model, target="reference")
    model = node_model("GridSample", [("x", rand((1, 2, 3, 4))), ("grid", rand((1, 5, 2, 2)))],
                       {"mode": "bilinear"}, opset=20, output_arrays=[rand((1, 2, 5, 2))])
    with pytest.raises(ember.FrontendError, match="mode 'bilinear' is not supported at opset 20"):
        ember.compile(model, target="reference")


# ----------------------------------------------------------------------------- RoiAlign


def roi_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    corners = rng.uniform(-2, 10, (5, 2, 2)).astype(np.float32)
    rois = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    return [("x", x), ("rois", rois), ("batch_indices", np.array([0, 1, 1, 0, 1]))]


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coordinate_mode", ["half_pixel", "output_half_pixel"])
def test_roi_align(mode, coordinate_mode):
    check_node("RoiAlign", roi_inputs(),
               {"mode": mode, "coordinate_transformation_mode": coordinate_mode,
                "output_height": 3, "output_width": 4, "sampling_ratio": 2,
                "spatial_scale": 0.75}, opset=16, target="llvm", rtol=1e-5, atol=1e-5)


def test_roi_align_10_matches_onnxruntime():
    # RoiAlign-10 has no half-pixel offset (16's "output_half_pixel"), as ONNX Runtime
    # computes it; onnx's evaluator applies opset 16's default to it.
    import onnxruntime

    inputs = roi_inputs(1)
    model = node_model("RoiAlign", inputs, {"output_height": 2, "output_width": 2,
                                            "sampling_ratio": 3}, opset=10,
                       output_arrays=[np.zeros((5, 3, 2, 2), np.float32)])
    want = onnxruntime.InferenceSession(model.SerializeToString()).run(None, dict(inputs))[0]
    got = ember.compile(model, target="llvm").run(dict(inputs))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_kernel(mode):
    x, rois, batch_indices = (a for _, a in roi_inputs(2))
    check_kernel("roi_align", [x, rois, batch_indices],
                 {"mode": mode, "output_height": 2, "output_width": 3, "sampling_ratio": 2,
                  "spatial_scale": 0.5, "half_pixel": mode == "avg"}, rtol=1e-5, atol=1e-5)


def test_roi_align_adaptive_sampling_fails():
    inputs = roi_inputs()
    model = node_model("RoiAlign", inputs, {"sampling_ratio": 0}, opset=16,
                       output_arrays=[np.zeros((5, 3, 1, 1), np.float32)])
    with pytest.raises(ember.FrontendError, match="sampling_ratio 0"):
        ember.compile(model, target="reference")


# ----------------------------------------------------------------------------- AffineGrid


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 4, 2)])
def test_affine_grid(size, align_corners):
    k = len(size) - 2
    theta = rand((size[0], k, k + 1), seed=5)
    check_node("AffineGrid", [("theta", theta), ("size", np.array(size, np.int64))],
               {"align_corners": align_corners}, initializers=["size"], opset=20,
               target="llvm", rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Col2Im


@pytest.mark.parametrize("image,block,attrs", [
    ((5, 5), (2, 2), {}),
    ((5, 5), (2, 2), {"strides": [2, 2]}),
    ((5, 6), (2, 3), {"pads": [1, 0, 0, 2], "dilations": [2, 1]}),
    ((3, 4, 3), (2, 2, 1), {"strides": [1, 2, 1]}),
])
def test_col2im(image, block, attrs):
    k = len(image)
    strides = attrs.get("strides", [1] * k)
    dilations = attrs.get("dilations", [1] * k)
    pads = attrs.get("pads", [0] * 2 * k)
    blocks = [(image[i] + pads[i] + pads[i + k] - dilations[i] * (block[i] - 1) - 1)
              // strides[i] + 1 for i in range(k)]
    x = rand((2, 3 * int(np.prod(block)), int(np.prod(blocks))), seed=6)
    check_node("Col2Im", [("x", x), ("image", np.array(image, np.int64)),
                          ("block", np.array(block, np.int64))], attrs,
               initializers=["image", "block"], opset=18, target="llvm")


# ----------------------------------------------------------------------------- MaxUnpool


@pytest.mark.parametrize("with_shape", [False, True])
def test_max_unpool(with_shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    # one position inside each 2x2 window of the unpooled (2, 3, 4, 6) tensor
    n, c, h, w = np.indices(x.shape)
    row, col = 2 * h + rng.integers(0, 2, x.shape), 2 * w + rng.integers(0, 2, x.shape)
    indices = ((n * 3 + c) * 4 + row) * 6 + col
    inputs = [("x", x), ("indices", indices.astype(np.int64))]
    if with_shape:
        inputs.append(("shape", np.array([2, 3, 5, 7], np.int64)))
    check_node("MaxUnpool", inputs, {"kernel_shape": [2, 2], "strides": [2, 2]},
               initializers=["shape"] if with_shape else [], opset=11, target="llvm")

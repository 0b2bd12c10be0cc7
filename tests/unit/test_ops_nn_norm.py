"""BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization,
RMSNormalization, LRN and MeanVarianceNormalization against onnx's reference evaluator (or a
numpy statement of the ONNX spec where that evaluator is wrong), and their errors."""

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


def positive(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(dtype)


def run_ember(op_type, inputs, attrs=None, *, initializers=(), outputs=1, opset=18):
    """ember's outputs for a one-node model (outputs typed by onnx's shape inference)."""
    model = onnx.shape_inference.infer_shapes(
        node_model(op_type, inputs, attrs, initializers=initializers, outputs=outputs,
                   opset=opset))
    for value in model.graph.output:  # where onnx infers nothing, let ember's error show
        if not value.type.HasField("tensor_type"):
            value.type.CopyFrom(model.graph.input[0].type)
    feeds = {n: a for n, a in inputs if a is not None and n not in initializers}
    return ember.compile(model, target="reference").run(feeds)


SHAPES = [(3, 4), (2, 4, 5), (2, 4, 3, 5), (1, 4, 2, 3, 4)]


# ----------------------------------------------------------------------------- BatchNormalization


def batch_norm_inputs(shape, dtype="float32", param_dtype=None):
    channels = shape[1]
    param_dtype = param_dtype or dtype
    return [("x", rand(shape, dtype, 1)), ("scale", rand(channels, param_dtype, 2)),
            ("bias", rand(channels, param_dtype, 3)), ("mean", rand(channels, param_dtype, 4)),
            ("var", positive(channels, param_dtype, 5))]


@pytest.mark.parametrize("opset", [14, 15])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm(shape, opset):
    check_node("BatchNormalization", batch_norm_inputs(shape), {"epsilon": 1e-3},
               initializers=["scale", "bias", "mean", "var"], opset=opset, atol=1e-5)


@pytest.mark.parametrize("opset", [6, 7, 9])
def test_batch_norm_old_opsets(opset):
    # Opsets 1-9 in inference (one output Y) normalize with the given statistics; onnx's
    # reference evaluator runs them in its training reading, so compare with opset 15.
    inputs = batch_norm_inputs((2, 3, 4, 5))
    attrs = {"epsilon": 1e-3, **({"is_test": 1} if opset < 7 else {})}
    (got,) = run_ember("BatchNormalization", inputs, attrs, opset=opset,
                       initializers=["scale", "bias", "mean", "var"])
    model = node_model("BatchNormalization", inputs, {"epsilon": 1e-3}, opset=15)
    np.testing.assert_allclose(got, onnx_reference(model, dict(inputs))[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,param_dtype", [("float16", None), ("float64", None),
                                               ("float16", "float32")])
def test_batch_norm_dtypes(dtype, param_dtype):
    check_node("BatchNormalization", batch_norm_inputs((2, 3, 4, 4), dtype, param_dtype),
               opset=15)


def test_batch_norm_statistics_as_graph_inputs():
    check_node("BatchNormalization", batch_norm_inputs((2, 3, 5)), opset=15, atol=1e-5)


def test_batch_norm_training_mode_fails():
    with pytest.raises(ember.FrontendError, match=r"training_mode=1 .* is not supported; ember "
                                                  r"compiles inference graphs"):
        run_ember("BatchNormalization", batch_norm_inputs((2, 3, 4)), {"training_mode": 1},
                  outputs=3, opset=15)


def test_batch_norm_training_outputs_fail():
    with pytest.raises(ember.FrontendError, match=r"asks for the training outputs"):
        run_ember("BatchNormalization", batch_norm_inputs((2, 3, 4)), outputs=5, opset=9)


def test_norm_op_errors_quote_the_numbers():
    builder = GraphBuilder()
    x = builder.add_input("x", TensorType((2, 3, 4), "float32"))
    per_channel = builder.add_input("c", TensorType((3,), "float32"))
    wrong = builder.add_input("w", TensorType((4,), "float32"))
    with pytest.raises(ShapeError, match=r"batch_norm: scale must have shape \(3,\), one value "
                                         r"per channel of the input \(2, 3, 4\), got \(4,\)"):
        builder.add_node("batch_norm", [x, wrong, per_channel, per_channel, per_channel])
    with pytest.raises(ShapeError, match=r"group_norm: num_groups=2 must be positive and divide "
                                         r"the 3 channels"):
        builder.add_node("group_norm", [x, per_channel, per_channel], {"num_groups": 2})
    with pytest.raises(ShapeError, match=r"layer_norm: axis 3 is out of range"):
        builder.add_node("layer_norm", [x, wrong], {"axis": 3})
    with pytest.raises(ShapeError, match=r"lrn: size must be positive, got 0"):
        builder.add_node("lrn", [x], {"size": 0})


# ----------------------------------------------------------------------------- Instance / Group


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("shape", SHAPES[1:])
def test_instance_norm(shape, dtype):
    channels = shape[1]
    check_node("InstanceNormalization", [("x", rand(shape, dtype, 1)),
                                         ("scale", rand(channels, dtype, 2)),
                                         ("bias", rand(channels, dtype, 3))],
               {"epsilon": 1e-3}, opset=6, atol=1e-5 if dtype == "float32" else None)


@pytest.mark.parametrize("num_groups", [1, 2, 4])
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 5), (2, 4, 3, 5)])
def test_group_norm(shape, num_groups):
    channels = shape[1]
    check_node("GroupNormalization", [("x", rand(shape, seed=1)), ("scale", rand(channels, seed=2)),
                                      ("bias", rand(channels, seed=3))],
               {"num_groups": num_groups, "epsilon": 1e-4}, opset=21, atol=1e-5)


def test_group_norm_groups_must_divide_channels():
    inputs = [("x", rand((2, 4, 3))), ("scale", rand(4)), ("bias", rand(4))]
    with pytest.raises(ember.FrontendError, match=r"num_groups=3 must be positive and divide "
                                                  r"the 4 channels"):
        run_ember("GroupNormalization", inputs, {"num_groups": 3}, opset=21)


# ----------------------------------------------------------------------------- Layer / RMS


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_layer_norm(shape, axis, bias):
    normalized = shape[axis:]
    inputs = [("x", rand(shape, seed=1)), ("scale", rand(normalized, seed=2))]
    if bias:
        inputs.append(("bias", rand(normalized, seed=3)))
    check_node("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3}, opset=17,
               atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_layer_norm_statistics_outputs(axis):
    inputs = [("x", rand((2, 3, 4), seed=1)), ("scale", rand((4,), seed=2)),
              ("bias", rand((1, 4), seed=3))]
    if axis != -1:
        inputs[1] = ("scale", rand((2, 3, 4)[axis:], seed=2))
    check_node("LayerNormalization", inputs, {"axis": axis}, outputs=3, opset=17, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_layer_norm_dtypes(dtype):
    check_node("LayerNormalization", [("x", rand((3, 8), dtype)), ("scale", rand(8, dtype))],
               opset=17)


def test_layer_norm_statistics_are_float32():
    # ONNX's stash_type=1 makes Mean and InvStdDev float32 whatever X is (onnx's reference
    # evaluator gives them X's dtype, its shape inference float32).
    x = rand((2, 6), "float16")
    y, mean, inv_std = run_ember("LayerNormalization", [("x", x), ("scale", np.ones(6, "float16"))],
                                 outputs=3, opset=17)
    assert y.dtype == np.float16 and mean.dtype == inv_std.dtype == np.float32
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(mean[:, 0], x32.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(inv_std[:, 0], 1 / np.sqrt(x32.var(axis=1) + 1e-5), rtol=1e-5)


def test_layer_norm_stash_type_fails():
    with pytest.raises(ember.FrontendError, match=r"stash_type 11 is not supported"):
        run_ember("LayerNormalization", [("x", rand((2, 6))), ("scale", rand(6))],
                  {"stash_type": 11}, opset=17)


def test_layer_norm_scale_must_broadcast():
    with pytest.raises(ember.FrontendError, match=r"shapes \(2, 6\) and \(5,\) do not broadcast"):
        run_ember("LayerNormalization", [("x", rand((2, 6))), ("scale", rand(5))], opset=17)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rms_norm(axis, dtype):
    shape = (2, 3, 4)
    check_node("RMSNormalization", [("x", rand(shape, dtype, 1)),
                                    ("scale", rand(shape[axis:], dtype, 2))],
               {"axis": axis, "epsilon": 1e-4}, opset=23)


# ----------------------------------------------------------------------------- LRN and MVN


def lrn_spec(x, size, alpha, beta, bias):
    """ONNX's LRN: the sum of squares runs over channels c - floor((size - 1) / 2) through
    c + ceil((size - 1) / 2), clipped to the existing channels."""
    squares = (x.astype(np.float64)) ** 2
    total = np.zeros_like(squares)
    channels = x.shape[1]
    for c in range(channels):
        low, high = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        total[:, c] = squares[:, low:high + 1].sum(axis=1)
    return (x / (bias + alpha / size * total) ** beta).astype(x.dtype)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("shape", [(2, 7, 3), (1, 6, 3, 4), (2, 5, 2, 2, 3)])
def test_lrn(shape, size):
    # onnx's reference evaluator loops over the batch axis where it means channels, so it is
    # only right when N == C: compare with the spec in numpy.
    x = rand(shape)
    attrs = {"size": size, "alpha": 0.3, "beta": 0.6, "bias": 2.0}
    (got,) = run_ember("LRN", [("x", x)], attrs, opset=13)
    np.testing.assert_allclose(got, lrn_spec(x, **attrs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_lrn_oracle(dtype):
    check_node("LRN", [("x", rand((3, 3, 2, 3), dtype))], {"size": 3}, opset=13)


@pytest.mark.parametrize("axes", [[0, 2, 3], [1], [2, 3], [-1], [0, 1, 2, 3]])
def test_mean_variance_normalization(axes):
    check_node("MeanVarianceNormalization", [("x", rand((2, 3, 4, 5)))], {"axes": axes},
               opset=13, atol=1e-5)

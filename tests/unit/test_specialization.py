"""Run-time specialization: models whose shape-deciding inputs (Reshape's shape, Slice's
starts and ends, ...) are graph inputs compile once per distinct value, at run time."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.compiler.frontend.onnx import import_onnx
from ember.errors import FrontendError, InputError, SpecializationNeeded

TARGETS = ["reference", "llvm"]
X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def reshape_model():
    return model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [("x", TensorProto.FLOAT, [2, 3, 4]), ("shape", TensorProto.INT64, [2])],
                 [("y", TensorProto.FLOAT, ["a", "b"])])


@pytest.mark.parametrize("target", TARGETS)
def test_reshape_compiles_once_per_shape_value(target):
    module = ember.compile(reshape_model(), target=target)
    assert module.inputs == [ember.TensorSpec("x", (2, 3, 4), "float32"),
                             ember.TensorSpec("shape", (2,), "int64")]
    assert module.outputs == [ember.TensorSpec("y", (None, None), "float32")]
    assert str(module.outputs[0]) == "y: float32[?,?]"
    assert module.specializations == 0
    (y,) = module.run({"x": X, "shape": np.array([4, 6])})
    np.testing.assert_array_equal(y, X.reshape(4, 6))
    assert module.specializations == 1
    (y,) = module.run({"x": X, "shape": np.array([-1, 2])})
    np.testing.assert_array_equal(y, X.reshape(12, 2))
    assert module.specializations == 2
    y = module(X + 1, np.array([4, 6]))  # the first value again: a cache hit
    np.testing.assert_array_equal(y, (X + 1).reshape(4, 6))
    assert module.specializations == 2


@pytest.mark.parametrize("target", TARGETS)
def test_slice_specializes_on_starts_and_ends(target):
    # starts fails first; the variant then needs ends too, and the set grows to both
    m = model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
              [("x", TensorProto.FLOAT, [2, 3, 4]), ("starts", TensorProto.INT64, [2]),
               ("ends", TensorProto.INT64, [2])],
              [("y", TensorProto.FLOAT, [2, None, None])],
              initializers=[("axes", np.array([1, -1]))])
    module = ember.compile(m, target=target)
    assert module.outputs[0].shape == (2, None, None)
    for starts, ends in [([0, 1], [2, 3]), ([1, 0], [3, 4]), ([0, 1], [2, 3])]:
        (y,) = module.run({"x": X, "starts": np.array(starts), "ends": np.array(ends)})
        np.testing.assert_array_equal(y, X[:, starts[0]:ends[0], starts[1]:ends[1]])
    assert module.specializations == 2


@pytest.mark.parametrize("target", TARGETS)
def test_shape_computed_from_an_input(target):
    # shape = n * [1, 2] + [0, 0]: specialization follows the arithmetic back to n
    m = model([helper.make_node("Mul", ["n", "scale"], ["doubled"]),
               helper.make_node("Add", ["doubled", "zero"], ["shape"]),
               helper.make_node("Reshape", ["x", "shape"], ["y"]),
               helper.make_node("Relu", ["y"], ["z"])],
              [("x", TensorProto.FLOAT, [2, 3, 4]), ("n", TensorProto.INT64, [2])],
              [("z", TensorProto.FLOAT, [None, None])],
              initializers=[("scale", np.array([1, 2])), ("zero", np.array([0, 0]))])
    with pytest.raises(SpecializationNeeded) as info:
        import_onnx(m)
    assert info.value.inputs == ("n",)
    module = ember.compile(m, target=target)
    (z,) = module.run({"x": X - 10, "n": np.array([4, 3])})
    np.testing.assert_array_equal(z, np.maximum(X - 10, 0).reshape(4, 6))
    assert module.specializations == 1


def test_frontend_message_is_unchanged_and_names_the_inputs():
    with pytest.raises(FrontendError,
                       match=r"node 'y' \(Reshape, opset 13\): input 1 \(target shape, value "
                             r"'shape'\) must be known at compile time") as info:
        import_onnx(reshape_model())
    assert isinstance(info.value, SpecializationNeeded)
    assert info.value.inputs == ("shape",)


@pytest.mark.parametrize("target", TARGETS)
def test_bad_inputs_raise_input_error(target):
    module = ember.compile(reshape_model(), target=target)
    with pytest.raises(InputError, match=r"input 'shape' expects dtype int64, got int32"):
        module.run({"x": X, "shape": np.array([4, 6], np.int32)})
    with pytest.raises(InputError, match=r"input 'shape' expects shape \(2,\), got \(3,\)"):
        module.run({"x": X, "shape": np.array([4, 6, 1])})
    with pytest.raises(InputError, match=r"missing \['shape'\]"):
        module.run({"x": X})
    with pytest.raises(InputError, match=r"unknown \['w'\]"):
        module.run({"x": X, "shape": np.array([4, 6]), "w": X})
    with pytest.raises(InputError, match=r"input values shape=\[5, 5\].*cannot reshape"):
        module.run({"x": X, "shape": np.array([5, 5])})
    assert module.specializations == 0


def test_random_inputs_follow_the_declared_input_shapes():
    module = ember.compile(reshape_model(), target="reference")
    feeds = module.random_inputs()
    assert feeds["shape"].shape == (2,)

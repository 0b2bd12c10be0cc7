"""ember.onnx_backend: the onnx.backend.base.Backend interface over ember.compile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
import ember.onnx_backend as backend


def _add_relu_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["z"])]
    graph = helper.make_graph(
        nodes, "add_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
Y = np.full((2, 3), 0.5, dtype=np.float32)
EXPECTED = np.maximum(X + Y, 0)


@pytest.mark.parametrize("target", ["llvm", "reference"])
def test_prepare_runs_list_and_dict_inputs(target: str) -> None:
    rep = backend.prepare(_add_relu_model(), "CPU", target=target)
    by_position = rep.run([X, Y])
    by_name = rep.run({"y": Y, "x": X})
    for outputs in (by_position, by_name):
        assert len(outputs) == 1
        np.testing.assert_allclose(outputs[0], EXPECTED)
        np.testing.assert_allclose(outputs["z"], EXPECTED)
        np.testing.assert_allclose(outputs.z, EXPECTED)


def test_run_model_defaults_to_llvm() -> None:
    rep = backend.EmberBackend.prepare(_add_relu_model())
    assert "llvm" in str(rep.module.target)
    (z,) = backend.run_model(_add_relu_model(), [X, Y])
    np.testing.assert_allclose(z, EXPECTED)


def test_run_accepts_numpy_scalars() -> None:
    node = helper.make_node("Mul", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node], "mul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (c,) = backend.run_model(model, [np.float32(3.0), np.array(2.0, dtype=np.float32)])
    assert c.shape == () and c == np.float32(6.0)


def test_too_many_positional_inputs_fail() -> None:
    rep = backend.prepare(_add_relu_model(), target="reference")
    with pytest.raises(ember.InputError, match="takes 2 input"):
        rep.run([X, Y, X])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_run_node_add(dtype: type) -> None:
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    b = np.array([10, 20, 30], dtype=dtype)
    node = helper.make_node("Add", ["a", "b"], ["c"])
    outputs = backend.run_node(node, [a, b])
    assert outputs["c"].dtype == dtype
    np.testing.assert_array_equal(outputs[0], a + b)


def test_run_node_with_omitted_optional_input() -> None:
    x = np.array([-2.0, 0.5, 3.0], dtype=np.float32)
    high = np.array(1.0, dtype=np.float32)
    node = helper.make_node("Clip", ["x", "", "high"], ["y"])
    (y,) = backend.run_node(node, [x, high])
    np.testing.assert_array_equal(y, np.minimum(x, 1.0))


def test_supports_device() -> None:
    assert backend.supports_device("CPU")
    assert backend.EmberBackend.supports_device("CPU")
    assert not backend.supports_device("CUDA")
    assert not backend.supports_device("CUDA:1")
    assert not backend.supports_device("TPU")


def test_prepare_rejects_other_devices() -> None:
    with pytest.raises(ember.EmberError, match="CPU"):
        backend.prepare(_add_relu_model(), "CUDA")

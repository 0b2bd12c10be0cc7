"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (compiler/frontend/onnx/loss.py)
against onnx's reference evaluator."""

import numpy as np
import pytest
from support import check_node, node_model

import ember

SHAPES = [(3, 5), (2, 4, 3), (2, 3, 2, 2)]


def case(shape, ignore_index=None, weight=False, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    target = rng.integers(0, shape[1], (shape[0], *shape[2:])).astype(np.int64)
    if ignore_index is not None:
        target.reshape(-1)[::3] = ignore_index
    inputs = [("x", x), ("target", target)]
    if weight:
        inputs.append(("weight", rng.uniform(0.5, 2, shape[1]).astype(dtype)))
    return inputs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 1, -1])
def test_negative_log_likelihood_loss(shape, reduction, weight, ignore_index):
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check_node("NegativeLogLikelihoodLoss", case(shape, ignore_index, weight), attrs, opset=13)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2, -5])
@pytest.mark.parametrize("log_prob", [False, True])
def test_softmax_cross_entropy_loss(shape, reduction, weight, ignore_index, log_prob):
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check_node("SoftmaxCrossEntropyLoss", case(shape, ignore_index, weight), attrs,
               outputs=2 if log_prob else 1, opset=13, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_dtypes_and_llvm(op, dtype):
    check_node(op, case((3, 4, 2), 0, True, dtype), {"reduction": "mean", "ignore_index": 0},
               opset=12, target="llvm", rtol=1e-2 if dtype == "float16" else None,
               atol=1e-2 if dtype == "float16" else None)


def test_int32_target():
    inputs = case((3, 4, 2), -3, True)
    inputs[1] = ("target", inputs[1][1].astype(np.int32))
    check_node("SoftmaxCrossEntropyLoss", inputs, {"ignore_index": -3}, outputs=2, opset=13,
               target="llvm", rtol=1e-5, atol=1e-6)


def test_llvm_float32():
    check_node("SoftmaxCrossEntropyLoss", case((4, 6, 5), 3, False), {"ignore_index": 3},
               outputs=2, opset=13, target="llvm", rtol=1e-5, atol=1e-6)


def _fails(op, inputs, attrs, match):
    model = node_model(op, inputs, attrs, opset=13, output_arrays=[np.zeros((), np.float32)])
    with pytest.raises(ember.FrontendError, match=match):
        ember.compile(model, target="reference")


def test_errors():
    inputs = case((3, 4))
    _fails("NegativeLogLikelihoodLoss", inputs, {"reduction": "max"},
           "reduction 'max' is not supported")
    _fails("SoftmaxCrossEntropyLoss", [inputs[0], ("target", np.zeros(4, np.int64))], {},
           r"target is \(4,\)")
    _fails("SoftmaxCrossEntropyLoss", [*inputs, ("weight", np.ones(3, np.float32))], {},
           "one float32 per class")

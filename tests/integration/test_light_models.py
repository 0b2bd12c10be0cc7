"""Whole models: the onnx package's nine light models, compiled for the reference and llvm
targets, match ONNX Runtime on a seeded random input.

Each model gets seeded random weights (`ember.workloads.light.light_model`; its shipped weights
are one constant) and one extra graph output, the logits that enter its final Softmax, so a
wrong logit cannot hide behind a saturated or flattened softmax. Before ember runs, ONNX
Runtime's outputs are checked to be informative (logits that vary, depend on the input, and a
softmax neither uniform nor one-hot), so weights that made every model output the same thing
would fail here rather than let the comparison pass on nothing.

Tolerances: rtol 1e-3 and an absolute tolerance of 1e-5 times the largest magnitude of the
expected tensor. Both sides compute in float32 but sum in different orders (ONNX Runtime's
blocked GEMM kernels, numpy's BLAS), so results differ by rounding that grows with the depth
and the length of the dot products. A logit near zero carries the absolute error of sums at the
scale of its neighbours, so atol scales with the tensor (for a softmax, whose values are at
most 1, it is at most 1e-5). Measured on these models: the largest absolute difference is at
most 3e-6 of the tensor's largest magnitude (VGG-19's logits 1.3e-6, Inception v2's softmax
2.9e-6), and relative differences of values above 1e-3 of that magnitude stay below 7e-4.

Run time: about 30 s for the nine on 2 cores with `-n 2`; VGG-19 (140 M weights: making them,
ONNX Runtime and numpy) takes about 18 s of it, AlexNet and ZFNet-512 most of the rest.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ember
from ember.workloads.light import LIGHT_MODELS, light_model, light_model_path

onnxruntime = pytest.importorskip("onnxruntime")

RTOL = 1e-3
ATOL_SCALE = 1e-5
SEED = 0


def with_logits_output(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """`model` (changed in place) with the input of its final Softmax as an extra graph output,
    and that value's name. A model that ends without a Softmax (DenseNet-121 ends in its
    classifier convolution) already outputs its logits: its first output is returned."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    final = producer[graph.output[0].name]
    if final.op_type != "Softmax":
        return model, graph.output[0].name
    logits = final.input[0]
    # Softmax keeps its input's shape and type, so the output's declared type fits the logits.
    info = onnx.ValueInfoProto()
    info.CopyFrom(graph.output[0])
    info.name = logits
    graph.output.append(info)
    return model, logits


def smooth_image(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth coloured pattern: an input of other statistics than white noise. (White noise
    of another seed would not do: after global pooling most of these networks answer any two
    white-noise images nearly alike, whatever their weights.)"""
    _, channels, height, width = shape
    rows = np.sin(np.linspace(0.0, 6.0, height))[:, None]
    columns = np.cos(np.linspace(0.0, 9.0, width))[None, :]
    colour = np.linspace(1.0, -1.0, channels)[:, None, None]
    return np.broadcast_to(colour * rows * columns, shape).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    flat = logits.reshape(-1).astype(np.float64)
    exp = np.exp(flat - flat.max())
    return exp / exp.sum()


def assert_informative(name: str, logits: np.ndarray, other_logits: np.ndarray) -> None:
    """Fail when the random weights make the model's output (nearly) input-independent,
    constant, or its softmax uniform or one-hot: comparisons on such outputs prove little."""
    spread = float(logits.std())
    largest = float(np.abs(logits).max())
    # relative too: identical huge logits have a std of a few float32 ulps
    assert spread > 0.1 and spread > 0.01 * largest, (
        f"{name}: the logits' std is {spread:.3g} (largest magnitude {largest:.3g}); the weights "
        f"flatten them"
    )
    moved = float((logits - other_logits).std())
    assert moved > 0.1 * spread, (
        f"{name}: a different image moves the logits by std {moved:.3g} only (their std is "
        f"{spread:.3g}): the output hardly depends on the input"
    )
    probabilities = softmax(logits)
    top = float(probabilities.max())
    assert top > 2.0 / probabilities.size, f"{name}: the softmax is near uniform (max {top:.3g})"
    assert top < 0.99, f"{name}: the softmax is one-hot (max {top:.3g}); the logits blow up"


def assert_close(name: str, what: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape, f"{name} {what}: shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{name} {what}: dtype {got.dtype} != {expected.dtype}"
    atol = ATOL_SCALE * float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=atol,
                               err_msg=f"{name} {what}: ember vs ONNX Runtime")


@pytest.mark.parametrize("target", ["reference", "llvm"])
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name: str, target: str) -> None:
    model, logits_name = with_logits_output(light_model(name, seed=SEED))
    output_names = [value.name for value in model.graph.output]

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (input_info,) = session.get_inputs()
    x = np.random.default_rng(SEED).standard_normal(input_info.shape).astype(np.float32)
    other = smooth_image(input_info.shape)
    expected = dict(zip(output_names, session.run(None, {input_info.name: x})))
    other_logits = session.run([logits_name], {input_info.name: other})[0]
    assert_informative(name, expected[logits_name], other_logits)

    module = ember.compile(model, target=target)
    assert [spec.name for spec in module.inputs] == [input_info.name]
    assert [spec.name for spec in module.outputs] == output_names
    got = dict(zip(output_names, module.run({input_info.name: x})))
    for output in output_names:
        what = "logits" if output == logits_name else f"output {output!r}"
        assert_close(name, what, got[output], expected[output])


def test_degenerate_weights_are_caught() -> None:
    """The shipped weights (every one the same constant) must trip `assert_informative`."""
    shipped = onnx.load(light_model_path("squeezenet"))
    model, logits_name = with_logits_output(shipped)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (input_info,) = session.get_inputs()
    x = np.random.default_rng(SEED).standard_normal(input_info.shape).astype(np.float32)
    logits = session.run([logits_name], {input_info.name: x})[0]
    other = session.run([logits_name], {input_info.name: smooth_image(input_info.shape)})[0]
    with pytest.raises(AssertionError, match="squeezenet: the logits' std is"):
        assert_informative("squeezenet", logits, other)

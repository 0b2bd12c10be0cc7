"""Every zoo model, at full size: onnx.checker, ONNX Runtime, and ember (target llvm) against
ONNX Runtime at rtol 1e-3, atol 1e-4 (issue 4's bar). Whole models: the integration tier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ember.workloads import zoo
from ember.workloads.llm import config_of


def _zoo_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded inputs: valid tokens and positions for the LLMs, normal floats (zeros for
    integers) otherwise."""
    rng = np.random.default_rng(0)
    llm = any(prop.key == "ember.llm.config" for prop in model.metadata_props)
    vocab = config_of(model)[0].vocab if llm else 1
    feeds = {}
    for value in model.graph.input:
        shape = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if value.name == "input_ids":
            feeds[value.name] = rng.integers(0, vocab, shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            scale = 0.1 if llm else 1.0
            feeds[value.name] = (scale * rng.standard_normal(shape)).astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype)
    return feeds


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_compiles_and_matches_ort(name):
    ort = pytest.importorskip("onnxruntime")
    import ember

    model = zoo.build(name)
    onnx.checker.check_model(model)
    feeds = _zoo_feeds(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    actual = ember.compile(model, target="llvm").run(feeds)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

"""Every zoo model, at full size: onnx.checker, ONNX Runtime, and ember (target llvm) against
ONNX Runtime at rtol 1e-3, atol 1e-4 (issue 4's bar). Whole models: the integration tier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ember.runtime.bench import model_feeds
from ember.workloads import zoo


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_compiles_and_matches_ort(name):
    ort = pytest.importorskip("onnxruntime")
    import ember

    model = zoo.build(name)
    onnx.checker.check_model(model)
    module = ember.compile(model, target="llvm")
    feeds = model_feeds(model, module)  # valid token ids for the LLMs
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    actual = module.run(feeds)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

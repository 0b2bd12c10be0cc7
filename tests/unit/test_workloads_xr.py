"""XR workload models of workloads/xr.py: each passes onnx.checker, runs in ONNX Runtime with
informative outputs, and compiles for target llvm to match ONNX Runtime (rtol 1e-3, atol 1e-4).

The two largest zoo models (xr-ht: 4 G MACs, 212 convs; xr-asr: 10 G MACs, 76 M weights) take
15-30 s each to compile on 2 cores with a cold kernel cache, so their full-size test is in the
slow tier (`pytest -m slow`); the unit tier checks the same builders at reduced size (one stack
with a one-level hourglass; 2 Emformer layers), which exercise every layer kind of the full
models.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest

import ember
from ember.workloads import xr, zoo

onnxruntime = pytest.importorskip("onnxruntime")

RTOL = 1e-3
ATOL = 1e-4
OWN_MODELS = ("xr-ht", "xr-es", "xr-ge", "xr-kd", "xr-asr", "xr-as")
SLOW = pytest.mark.slow

CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "xr-kd": lambda: zoo.build("xr-kd"),
    "xr-as": lambda: zoo.build("xr-as"),
    "xr-ge": lambda: zoo.build("xr-ge"),
    "xr-es": lambda: zoo.build("xr-es"),
    "xr-ht-small": lambda: xr.build_ht_hand_graph_cnn_half(stacks=1, depth=1),
    "xr-asr-2layers": lambda: xr.build_asr_emformer(layers=2),
    "xr-ht": lambda: zoo.build("xr-ht"),
    "xr-asr": lambda: zoo.build("xr-asr"),
}
SLOW_CASES = {"xr-ht", "xr-asr"}


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_xr_models_lists_all_eleven_tasks():
    names = xr.xr_models()
    assert len(names) == len(set(names)) == 11
    assert set(OWN_MODELS) <= set(names)
    assert all(name.startswith("xr-") for name in names)


def test_importing_xr_registers_all_xr_models():
    # workloads/xr.py imports workloads/xr_dense.py: one import registers all eleven.
    assert set(zoo.names(kind="xr")) == set(xr.xr_models())


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=SLOW) if name in SLOW_CASES else name for name in CASES
])
def test_model_matches_onnxruntime(case: str):
    model = CASES[case]()
    onnx.checker.check_model(model)
    feeds = random_feeds(model)
    expected = run_ort(model, feeds)
    other = run_ort(model, random_feeds(model, seed=1))
    for value, output, output_other in zip(model.graph.output, expected, other):
        # Outputs must be informative: finite, O(1)-ish, varying, and input-dependent.
        assert np.isfinite(output).all(), value.name
        largest = float(np.abs(output).max())
        assert 1e-2 < largest < 1e4, (value.name, largest)
        assert float(output.std()) > 1e-3 * largest, value.name
        assert not np.allclose(output, output_other, rtol=1e-2, atol=1e-3 * largest), value.name

    module = ember.compile(model, target="llvm")
    actual = module.run(feeds)
    assert len(actual) == len(expected)
    for value, got, want in zip(model.graph.output, actual, expected):
        assert got.shape == want.shape, value.name
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=value.name)

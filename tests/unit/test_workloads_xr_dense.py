"""The XRBench dense-prediction and detection zoo models (workloads/xr_dense.py): each passes
onnx.checker, runs in ONNX Runtime with informative outputs, and compiles with ember for target
llvm to outputs that match ONNX Runtime's (rtol 1e-3, atol 1e-4).

Full-size xr-ss, xr-de, xr-dr and xr-pd (0.8 to 15 G MACs) take 15-30 s each to compile on 2
cores with a cold kernel cache, so their full-size test is in the slow tier (`pytest -m slow`);
the unit tier runs xr-od at full size and the other four builders at reduced size (fewer
branches, blocks or pixels), which still exercise every layer kind of the full models.
"""

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from ember.workloads import xr_dense, zoo

NAMES = list(xr_dense.MODELS)
SLOW = pytest.mark.slow

CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "xr-od": lambda: zoo.build("xr-od"),
    "xr-ss-3branches": lambda: xr_dense.ss_hrvit_b1(modules=((1,), (1, 1), (1, 1, 1), (1, 1, 1))),
    "xr-de-2repeats": lambda: xr_dense.de_midas_v21_small(max_repeats=2),
    "xr-dr-64x256": lambda: xr_dense.dr_rgbd_200(height=64, width=256),
    "xr-pd-96-small": lambda: xr_dense.pd_plane_rcnn_quarter(size=96, blocks=(1, 1, 2, 1)),
    "xr-ss": lambda: zoo.build("xr-ss"),
    "xr-de": lambda: zoo.build("xr-de"),
    "xr-dr": lambda: zoo.build("xr-dr"),
    "xr-pd": lambda: zoo.build("xr-pd"),
}
SLOW_CASES = {"xr-ss", "xr-de", "xr-dr", "xr-pd"}


def _feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        value.name: rng.standard_normal(
            [dim.dim_value for dim in value.type.tensor_type.shape.dim]).astype(np.float32)
        for value in model.graph.input
    }


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=SLOW) if name in SLOW_CASES else name for name in CASES
])
def test_model_matches_onnxruntime(case):
    model = CASES[case]()
    onnx.checker.check_model(model, full_check=True)
    feeds = _feeds(model)
    expected = _onnxruntime(model, feeds)
    other = _onnxruntime(model, _feeds(model, seed=2))
    for value, out, out_other in zip(model.graph.output, expected, other):
        # Weights are scaled so that outputs are O(1) and depend on the input.
        assert np.isfinite(out).all(), value.name
        largest = float(np.abs(out).max())
        assert 1e-2 < largest < 1e3, (value.name, largest)
        assert float(out.std()) > 1e-3 * largest, value.name
        assert not np.allclose(out, out_other, rtol=1e-2, atol=1e-3 * largest), value.name

    module = ember.compile(model, target="llvm", num_threads=2)
    got = module.run(feeds)
    assert len(got) == len(expected)
    for value, actual, want in zip(model.graph.output, got, expected):
        assert actual.shape == want.shape, value.name
        np.testing.assert_allclose(actual, want, rtol=1e-3, atol=1e-4, err_msg=value.name)


def test_models_are_registered_as_xr():
    assert set(NAMES) <= set(zoo.names("xr"))
    for name in NAMES:
        assert zoo.get(name).kind == "xr"


def test_builders_are_seeded():
    a = xr_dense.od_d2go_faster_rcnn(seed=3)
    b = xr_dense.od_d2go_faster_rcnn(seed=3)
    c = xr_dense.od_d2go_faster_rcnn(seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_model_stats_counts_conv_matmul_and_params():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Reshape", ["y", "shape"], ["z"]),
        helper.make_node("MatMul", ["z", "m"], ["out"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w"),
        onnx.numpy_helper.from_array(np.array([1, 256], np.int64), "shape"),
        onnx.numpy_helper.from_array(np.ones((256, 10), np.float32), "m"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stats = xr_dense.model_stats(model)
    # Grouped conv: 4 outputs x 2 inputs per group x 9 taps x 64 positions; matmul 256 x 10.
    assert stats == {"macs": 4 * 2 * 9 * 64 + 256 * 10, "params": 72 + 2560}

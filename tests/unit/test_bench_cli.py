"""`ember bench` and ember.runtime.bench: the comparison table against ONNX Runtime, the
top-kernel table, FLOP counting per kernel and the FMA floor. Timings are never asserted
(benchmarks are not tests): only that the tables print and the counts are right."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.__main__ import main
from ember.runtime import bench

pytest.importorskip("onnxruntime")

# conv 3->8 channels, 3x3 kernel on 8x8 (no pads): out (batch, 8, 6, 6); matmul 288 -> 10
CONV_FLOPS = 2 * 8 * 6 * 6 * 3 * 3 * 3
MATMUL_FLOPS = 2 * 8 * 6 * 6 * 10


def _tiny_model(batch: int | str = 1) -> onnx.ModelProto:
    """x -> conv -> relu -> reshape (batch, 288) -> matmul (288, 10)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((288, 10)).astype(np.float32), "m"),
        numpy_helper.from_array(np.array([-1, 288], np.int64), "s"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Reshape", ["r", "s"], ["f"]),
         helper.make_node("MatMul", ["f", "m"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    onnx.save(_tiny_model(), str(path))
    return str(path)


def test_bench_prints_the_row_and_the_top_kernels(tiny_path, capsys):
    assert main(["bench", tiny_path, "--threads", "1", "--repeat", "2", "--kernels", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 thread(s), median of 2 runs" in out
    assert "ember/ORT" in out and "max |diff|" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny.onnx"))
    assert row.split()[-1] == "ok"
    assert "GFLOP/s per core (measured FMA rate) x 1 thread(s)" in out
    assert "of floor" in out
    assert "conv" in out and "dense_packed" in out  # the matmul, its weight packed


def test_bench_without_kernels_prints_only_the_row(tiny_path, capsys):
    assert main(["bench", tiny_path, "--threads", "1", "--repeat", "1", "--kernels", "0"]) == 0
    out = capsys.readouterr().out
    assert "tiny.onnx" in out and "of floor" not in out


def test_bench_pins_symbolic_dimensions(tmp_path, capsys):
    path = tmp_path / "symbolic.onnx"
    onnx.save(_tiny_model("batch"), str(path))
    assert main(["bench", str(path), "--threads", "1", "--repeat", "1", "--kernels", "1",
                 "--input-shape", "x=2,3,8,8"]) == 0
    assert "symbolic.onnx" in capsys.readouterr().out


def test_bench_of_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "none.onnx")]) == 1
    assert "no ONNX model at" in capsys.readouterr().err


@pytest.mark.parametrize("batch", [1, 2])
def test_kernel_flops_count_the_conv_and_the_matmul(batch):
    flops = bench.kernel_flops(_tiny_model(batch))
    conv = [f for name, f in flops.items() if "conv" in name]
    matmul = [f for name, f in flops.items() if "dense_packed" in name]  # packed matmul
    assert conv == [batch * CONV_FLOPS]
    assert matmul == [batch * MATMUL_FLOPS]
    assert sum(flops.values()) == batch * (CONV_FLOPS + MATMUL_FLOPS)


@pytest.mark.parametrize("op, inputs, output, expected", [
    ("matmul", [(4, 16, 32), (32, 8)], (4, 16, 8), 2 * 4 * 16 * 8 * 32),
    ("conv", [(1, 4, 9, 9), (6, 2, 3, 3)], (1, 6, 7, 7), 2 * 6 * 49 * 2 * 9),  # groups=2
    ("conv2d_nchwc", [(1, 2, 9, 9, 8), (3, 2, 3, 3, 8, 16)], (1, 3, 7, 7, 16),
     2 * 48 * 49 * 16 * 9),
    ("depthwise_conv2d_nchwc", [(1, 2, 9, 9, 8), (2, 3, 3, 8)], (1, 2, 7, 7, 8),
     2 * 16 * 49 * 9),
    ("relu", [(1, 4)], (1, 4), 0),
])
def test_node_flops(op, inputs, output, expected):
    assert bench.node_flops(op, inputs, output) == expected


def test_top_kernels_join_the_profile_with_flops():
    comparison = bench.compare(_tiny_model(), threads=1, repeat=1)
    assert comparison.matches
    costs = bench.top_kernels(comparison, count=10)  # all of them
    assert sum(cost.flops for cost in costs) == CONV_FLOPS + MATMUL_FLOPS
    assert math.isclose(sum(cost.share for cost in costs), 1.0, rel_tol=1e-6)
    assert [cost.ms for cost in costs] == sorted((cost.ms for cost in costs), reverse=True)
    assert bench.format_kernels(costs, 100.0).count("\n") == len(costs)


def test_fma_floor_is_positive():
    assert 0 < bench.fma_gflops_per_core() < math.inf


def test_model_feeds_give_tokens_below_the_vocabulary():
    import ember
    from ember.workloads import zoo

    model = zoo.build("gpt2-tiny-decode")
    module = ember.compile(model)
    feeds = bench.model_feeds(model, module)
    assert set(feeds) == {spec.name for spec in module.inputs}
    from ember.workloads.llm import config_of

    assert feeds["input_ids"].max() < config_of(model)[0].vocab

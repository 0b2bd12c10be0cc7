"""The on-disk kernel cache: a second process reuses machine code, a damaged entry is rebuilt."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

SCRIPT = """
import json, sys, numpy as np, ember
from ember.backends.llvm.build import disk_cache
module = ember.compile(sys.argv[1], target="llvm", opt_level=0)  # one kernel per node
x = np.linspace(-2, 2, 96, dtype=np.float32).reshape(4, 24)
(y,) = module.run({"x": x})
print(json.dumps({"hits": disk_cache.hits, "misses": disk_cache.misses, "y": y.tolist()}))
"""


def _model(path: pathlib.Path) -> str:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    graph = helper.make_graph(nodes, "silu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 24])])
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def _compile_in_subprocess(model: str, cache: str) -> dict:
    env = {**os.environ, "EMBER_CACHE_DIR": cache}
    result = subprocess.run([sys.executable, "-c", SCRIPT, model], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_process_reuses_and_damaged_entries_are_rebuilt(tmp_path):
    model, cache = _model(tmp_path / "silu.onnx"), str(tmp_path / "cache")
    x = np.linspace(-2, 2, 96, dtype=np.float32).reshape(4, 24)
    expected = x / (1 + np.exp(-x))

    first = _compile_in_subprocess(model, cache)
    assert first["hits"] == 0 and first["misses"] == 2
    second = _compile_in_subprocess(model, cache)
    assert second["hits"] == 2 and second["misses"] == 0
    np.testing.assert_array_equal(second["y"], first["y"])
    np.testing.assert_allclose(second["y"], expected, rtol=1e-5, atol=1e-6)

    objects = sorted(pathlib.Path(cache).rglob("*.o"))
    assert len(objects) == 2
    damaged = bytearray(objects[0].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    objects[0].write_bytes(bytes(damaged))
    third = _compile_in_subprocess(model, cache)
    assert third["hits"] == 1 and third["misses"] == 1
    np.testing.assert_array_equal(third["y"], first["y"])


def test_cache_can_be_turned_off(tmp_path):
    model = _model(tmp_path / "silu.onnx")
    result = _compile_in_subprocess(model, "off")
    assert result["hits"] == 0 and result["misses"] == 0
    assert not (tmp_path / "off").exists()

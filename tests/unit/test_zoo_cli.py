"""The model zoo (ember.workloads.zoo) and its command line, `ember zoo list` and
`ember zoo export NAME -o model.onnx`: registration rules, parameter and FLOP counts, listing
with filters, export round trip, and errors as `ember: error: ...` with exit code 1. Every zoo
model at full size is checked in tests/integration/test_zoo_models.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.__main__ import main
from ember.errors import EmberError
from ember.workloads import zoo

LLM_TINY = ["gpt2-tiny-decode", "gpt2-tiny-prefill", "llama-tiny-decode", "llama-tiny-prefill"]


def _dense_model() -> onnx.ModelProto:
    """x[2,8] -> MatMul W[8,4] -> Gemm(transB) V[3,4] -> Conv on a reshaped copy (known FLOPs)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.random((8, 4), dtype=np.float32), "w"),
             numpy_helper.from_array(rng.random((3, 4), dtype=np.float32), "v"),
             numpy_helper.from_array(rng.random((5, 1, 2, 2), dtype=np.float32), "k"),
             numpy_helper.from_array(np.array([1, 1, 2, 3], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gemm", ["h", "v"], ["y"], transB=1),
             helper.make_node("Reshape", ["y", "shape"], ["img"]),
             helper.make_node("Conv", ["img", "k"], ["z"])]
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 5, 1, 2])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_llm_models_are_registered():
    assert set(LLM_TINY) <= set(zoo.names("llm"))
    assert {"gpt2-small-prefill", "gpt2-small-decode"} <= set(zoo.names())
    assert all(zoo.get(name).kind == "llm" for name in LLM_TINY)
    assert zoo.names("no-such-kind") == []


def test_build_returns_fresh_valid_models():
    first, second = zoo.build("gpt2-tiny-decode"), zoo.build("gpt2-tiny-decode")
    assert first is not second
    onnx.checker.check_model(first)


def test_unknown_name_lists_known_ones():
    with pytest.raises(EmberError, match="unknown zoo model 'nope'; known: .*gpt2-tiny-decode"):
        zoo.get("nope")


def test_register_rejects_a_clash_and_tolerates_a_reimport(monkeypatch):
    monkeypatch.setattr(zoo, "ZOO", dict(zoo.ZOO))

    def builder() -> onnx.ModelProto:
        return _dense_model()

    entry = zoo.register("test-dense", builder, "a test model", kind="test")
    assert zoo.register("test-dense", builder, "a test model", kind="test") is entry
    assert zoo.build("test-dense").graph.name == "dense"
    with pytest.raises(EmberError, match="'test-dense' is already registered"):
        zoo.register("test-dense", _dense_model, "another", kind="test")


def test_counts():
    model = _dense_model()
    assert zoo.count_params(model) == 8 * 4 + 3 * 4 + 5 * 4
    # MatMul 2*(2*4)*8, Gemm 2*(2*3)*4, Conv 2*(5*1*2)*(1*2*2)
    assert zoo.count_flops(model) == 128 + 48 + 80
    symbolic = _dense_model()
    symbolic.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert zoo.count_flops(symbolic) is None
    assert zoo.format_count(124_439_808) == "124M" and zoo.format_count(None) == "-"


def test_cli_list(capsys):
    assert main(["zoo", "list", "--kind", "llm", "*-tiny-*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "kind", "params", "FLOPs", "description"]
    assert [line.split()[0] for line in lines[1:]] == LLM_TINY
    gpt2_decode = lines[1].split()
    assert gpt2_decode[1:4] == ["llm", "121K", "524K"] and "decode" in lines[1]


def test_cli_list_no_match(capsys):
    assert main(["zoo", "list", "no-such-*"]) == 0
    assert "no zoo models matching 'no-such-*'" in capsys.readouterr().out


def test_cli_export_round_trip(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["zoo", "export", "llama-tiny-prefill", "-o", str(path)]) == 0
    assert "wrote llama-tiny-prefill" in capsys.readouterr().out
    onnx.checker.check_model(str(path))
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == zoo.build("llama-tiny-prefill").SerializeToString()


def test_cli_errors(tmp_path, capsys):
    assert main(["zoo", "export", "nope", "-o", str(tmp_path / "x.onnx")]) == 1
    assert "ember: error: unknown zoo model 'nope'" in capsys.readouterr().err
    assert main(["zoo", "export", "gpt2-tiny-decode", "-o",
                 str(tmp_path / "missing" / "x.onnx")]) == 1
    assert "ember: error: cannot write" in capsys.readouterr().err


def test_cli_entry_point():
    result = subprocess.run([sys.executable, "-m", "ember", "zoo", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "export" in result.stdout
    result = subprocess.run([sys.executable, "-m", "ember", "zoo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "ZOO_COMMAND" in result.stderr

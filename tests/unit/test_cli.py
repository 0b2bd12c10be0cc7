"""The `ember` command line: inspect, run, demo, --help, and errors as `ember: error: ...` with
exit code 1. Most tests call `ember.__main__.main(argv)` in-process (fast); a few run
`python -m ember` in a subprocess to check the real entry point and exit codes.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember.__main__ import main


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ember", *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    """y = relu(x + b), out2 = -x; x: float32[2,3] (a symbolic first dim in `symbolic_path`)."""
    path = tmp_path_factory.mktemp("cli") / "small.onnx"
    onnx.save(_small_model(2), str(path))
    return str(path)


@pytest.fixture(scope="module")
def symbolic_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "symbolic.onnx"
    onnx.save(_small_model("batch"), str(path))
    return str(path)


def _small_model(batch) -> onnx.ModelProto:
    bias = onnx.numpy_helper.from_array(np.array([0.5, -0.5, 0.0], np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["t"], name="add"),
         helper.make_node("Relu", ["t"], ["y"], name="relu"),
         helper.make_node("Neg", ["x"], ["out2"], name="neg")],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("out2", TensorProto.FLOAT, [batch, 3])],
        [bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


# -- inspect


def test_inspect_summary(model_path, capsys):
    assert main(["inspect", model_path]) == 0
    out = capsys.readouterr().out
    assert "graph 'small': 3 nodes, 1 constants (12 B of parameters)" in out
    assert "inputs:\n  x: " in out and "float32" in out
    assert "outputs:\n  y: " in out and "  out2: " in out
    assert "ops:" in out
    for op in ("add", "relu", "neg"):
        assert op in out


def test_inspect_ir(model_path, capsys):
    assert main(["inspect", model_path, "--ir"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "add" in out
    assert "graph 'small'" not in out  # the IR, not the summary


def test_inspect_with_pinned_shape(symbolic_path, capsys):
    assert main(["inspect", symbolic_path, "--input-shape", "x=4,3"]) == 0
    assert "4" in capsys.readouterr().out.split("inputs:")[1].splitlines()[1]


def test_inspect_unpinned_symbolic_shape_is_an_error(symbolic_path, capsys):
    assert main(["inspect", symbolic_path]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ember: error: graph input 'x' has symbolic shape ('batch', 3)")


# -- compile


def test_compile_reports_time_and_kernels(model_path, capsys):
    assert main(["compile", model_path]) == 0
    out = capsys.readouterr().out
    assert "for llvm in" in out and "2 kernel(s) for 2 step(s)" in out  # add+relu fused
    assert "  input  x: float32[2,3]" in out


def test_run_on_both_targets_agrees(model_path, tmp_path):
    for target in ("llvm", "reference"):
        assert main(["run", model_path, "--target", target, "-o",
                     str(tmp_path / f"{target}.npz")]) == 0
    with np.load(tmp_path / "llvm.npz") as ours, np.load(tmp_path / "reference.npz") as ref:
        for name in ref.files:
            np.testing.assert_allclose(ours[name], ref[name], rtol=1e-6)


# -- run


def test_run_on_random_inputs(model_path, capsys):
    assert main(["run", model_path]) == 0
    out = capsys.readouterr().out
    assert "compiled for llvm in" in out and "on random inputs (seed 0)" in out
    assert "  y: float32[2, 3]  sum=" in out
    assert "  out2: float32[2, 3]  sum=" in out


def test_run_with_inputs_file_and_output_file(model_path, tmp_path, capsys):
    x = np.array([[1.0, -2.0, 3.0], [-0.25, 0.0, 0.75]], np.float32)
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, x=x)
    assert main(["run", model_path, "--inputs", str(inputs), "-o", str(outputs)]) == 0
    out = capsys.readouterr().out
    assert "random" not in out
    assert f"outputs written to {outputs}" in out
    with np.load(outputs) as saved:
        assert sorted(saved.files) == ["out2", "y"]
        np.testing.assert_allclose(saved["y"], np.maximum(x + [0.5, -0.5, 0.0], 0), rtol=1e-6)
        np.testing.assert_array_equal(saved["out2"], -x)


def test_run_with_pinned_shape(symbolic_path, capsys):
    assert main(["run", symbolic_path, "--input-shape", "x=5,3"]) == 0
    assert "y: float32[5, 3]" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "{tmp}/missing.onnx"], "ember: error: no ONNX model at"),
    (["run", "{model}", "--inputs", "{tmp}/missing.npz"], "ember: error: cannot read inputs from"),
    (["run", "{model}", "--inputs", "{tmp}/wrong.npz"],
     "ember: error: inputs do not match the module: missing ['x']; unknown ['z']"),
    (["run", "{model}", "--input-shape", "x:2,3"],
     "ember: error: --input-shape 'x:2,3' must look like name=1,3,224,224"),
    (["run", "{model}", "--target", "no-such-target"], "ember: error: "),
    (["inspect", "{tmp}/garbage.onnx"], "ember: error: "),
])
def test_errors_exit_1_with_a_message(argv, message, model_path, tmp_path, capsys):
    np.savez(tmp_path / "wrong.npz", z=np.zeros((2, 3), np.float32))
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage\xff\xff")
    argv = [a.format(tmp=tmp_path, model=model_path) for a in argv]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message), captured.err
    assert "Traceback" not in captured.err


def test_bad_model_in_a_subprocess(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07garbage\xff\xff")
    result = run_cli("run", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"ember: error: {str(path)!r} is not a valid ONNX model")
    assert "Traceback" not in result.stderr


def test_run_in_a_subprocess(model_path, tmp_path):
    outputs = tmp_path / "out.npz"
    result = run_cli("run", model_path, "-o", str(outputs))
    assert result.returncode == 0, result.stderr
    assert "y: float32[2, 3]" in result.stdout
    with np.load(outputs) as saved:
        assert saved["y"].shape == (2, 3)


# -- help and usage


def test_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ember")
    for command in ("inspect", "run", "demo"):
        assert command in result.stdout


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: ember" in capsys.readouterr().err


# -- demo


def test_demo_unknown_model(capsys):
    assert main(["demo", "--model", "lenet", "--repeat", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ember: error: unknown light model 'lenet'")
    assert "squeezenet" in err


def test_demo_squeezenet(capsys):
    assert main(["demo", "--model", "squeezenet", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "model: light_squeezenet" in out
    assert "compiled for 'llvm'" in out
    assert "output vs reference executor: max abs difference" in out
    # checked against ONNX Runtime when it is installed (it is, in the test environment)
    pytest.importorskip("onnxruntime")
    assert "output vs ONNX Runtime: max abs difference" in out
    assert "(ok at rtol=" in out
    assert "MISMATCH" not in out

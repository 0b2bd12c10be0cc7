"""Models exported from PyTorch compile with ember and match ONNX Runtime.

The fixtures in tests/fixtures/torch (written by scripts/export_torch_fixtures.py with torch
2.13 CPU and transformers; seeded, nothing downloaded) are tiny BERT, GPT-2 and Llama models,
a MobileNet-ish CNN, a GRU+LSTM classifier and a ViT block, each exported twice: by the
TorchScript exporter (`*_ts`, opsets 11-17) and by the dynamo exporter (`*_dynamo`, opsets
18-20). Each `<name>.npz` holds the example inputs under their graph-input names and torch's
outputs as `output_<i>`.

For each fixture: onnx's checker accepts it, ONNX Runtime reproduces torch's stored outputs,
and ember (target llvm, the symbolic batch/sequence dimensions pinned to the stored inputs'
shapes through `input_shapes`) matches ONNX Runtime at rtol 1e-3, atol 1e-4. These runs do not
need torch. The `torch_export` test (deselected by default; `pytest -m torch_export`) re-runs
the export script into a temporary folder, checks the fresh exports the same way, and that
they are byte-identical to the committed ones.

Run time: about 10 s for the 12 fixtures on 2 cores with a cold kernel cache; the
`torch_export` test about 30 s more (110 s when the machine is busy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import ember

onnxruntime = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "torch"
SCRIPT = ROOT / "scripts" / "export_torch_fixtures.py"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.onnx"))
#: the fixtures must not grow past the repository's commit-size rule
MAX_BYTES = 5 * 1024 * 1024
RTOL, ATOL = 1e-3, 1e-4
#: ONNX Runtime against torch: the same float32 math in another order
TORCH_RTOL, TORCH_ATOL = 1e-4, 1e-5


def load(folder: Path, name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray],
                                           list[np.ndarray]]:
    """The model, its feeds by graph-input name, and torch's outputs in graph-output order."""
    model = onnx.load(str(folder / f"{name}.onnx"))
    with np.load(folder / f"{name}.npz") as data:
        feeds = {value.name: data[value.name] for value in model.graph.input}
        expected = [data[f"output_{i}"] for i in range(len(model.graph.output))]
    return model, feeds, expected


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_fixture(folder: Path, name: str) -> None:
    """Checker, ONNX Runtime against torch's outputs, ember (llvm) against ONNX Runtime."""
    model, feeds, torch_outputs = load(folder, name)
    onnx.checker.check_model(model, full_check=True)
    reference = run_onnxruntime(model, feeds)
    assert len(reference) == len(torch_outputs)
    for index, (ort_out, torch_out) in enumerate(zip(reference, torch_outputs)):
        np.testing.assert_allclose(ort_out, torch_out, rtol=TORCH_RTOL, atol=TORCH_ATOL,
                                   err_msg=f"{name}: ONNX Runtime vs torch, output {index}")
    module = ember.compile(model, target="llvm",
                           input_shapes={key: value.shape for key, value in feeds.items()})
    got = module.run(feeds)
    assert len(got) == len(reference)
    for spec, out, ref in zip(module.outputs, got, reference):
        assert out.shape == ref.shape and out.dtype == ref.dtype, (
            f"{name} output {spec.name}: ember gives {out.dtype}{list(out.shape)}, "
            f"ONNX Runtime {ref.dtype}{list(ref.shape)}")
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: ember vs ONNX Runtime, output {spec.name}")


def test_fixtures_are_committed_and_small():
    # three model families at least (a BERT, a decoder-only LM, a CNN), each export < 5 MB
    assert {"bert_tiny_ts", "gpt2_tiny_ts", "llama_tiny_ts", "cnn_small_ts"} <= set(NAMES)
    for name in NAMES:
        size = (FIXTURES / f"{name}.onnx").stat().st_size
        assert size < MAX_BYTES, f"{name}.onnx is {size} bytes, over the 5 MB fixture limit"
        assert (FIXTURES / f"{name}.npz").exists(), f"{name}.npz is missing"


def test_fixture_inputs_are_symbolic_where_natural():
    # ember must pin these: a fixture with only static inputs would not exercise input_shapes
    model, _, _ = load(FIXTURES, "bert_tiny_dynamo")
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_onnxruntime(name):
    check_fixture(FIXTURES, name)


@pytest.mark.torch_export
def test_regenerated_fixtures_compile_and_match(tmp_path):
    pytest.importorskip("torch", reason="the `export` extra (torch==2.13.0) is not installed")
    pytest.importorskip("transformers", reason="the `export` extra (transformers) is not installed")
    pytest.importorskip("onnxscript", reason="the `export` extra (onnxscript) is not installed")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-4000:]
    fresh = sorted(path.stem for path in tmp_path.glob("*.onnx"))
    # every committed fixture can still be made (a dynamo export that breaks is a regression)
    assert fresh == NAMES, f"exported {fresh}, committed {NAMES}:\n{result.stderr[-2000:]}"
    stale = [name for name in fresh if (tmp_path / f"{name}.onnx").read_bytes()
             != (FIXTURES / f"{name}.onnx").read_bytes()]
    for name in fresh:
        assert (tmp_path / f"{name}.onnx").stat().st_size < MAX_BYTES
        check_fixture(tmp_path, name)
    # the exports are deterministic (seeded weights, no stack-trace metadata); the .npz files
    # are not compared, since torch's float results may differ by a rounding across CPUs
    assert not stale, f"{stale} differ from the committed fixtures: rerun the export script"

"""Saved modules: save, load in a fresh process, identical outputs; damage is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.runtime.artifact import MANIFEST, _checksum, save


def small_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 8, 8])],
        [w, b, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def module():
    return ember.compile(small_cnn())


@pytest.fixture(scope="module")
def feeds():
    return {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}


@pytest.fixture(params=["shared-library", "objects"])
def saved(request, module, tmp_path) -> Path:
    return save(module, tmp_path / "model.ember", linker=request.param == "shared-library")


def _run_in_fresh_process(path: Path, feeds, out: Path) -> str:
    np.savez(out.with_suffix(".in.npz"), **feeds)
    code = (
        "import sys, numpy as np, ember\n"
        f"m = ember.load({str(path)!r})\n"
        f"feeds = dict(np.load({str(out.with_suffix('.in.npz'))!r}))\n"
        f"np.savez({str(out)!r}, *m.run(feeds))\n"
        "print(sorted(k for k in sys.modules if k.startswith(('ember.compiler', 'onnx', "
        "'ember.backends.llvm.codegen', 'ember.backends.llvm.jit'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_load_in_fresh_process_gives_identical_outputs(module, feeds, saved, tmp_path):
    expected = module.run(feeds)
    imported = _run_in_fresh_process(saved, feeds, tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as data:
        got = [data[f"arr_{k}"] for k in range(len(expected))]
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)  # the same object code: bit-identical
    assert imported == "[]", f"loading imported compiler modules: {imported}"


def test_loaded_module_has_the_signature(module, saved):
    loaded = ember.load(saved)
    assert loaded.inputs == module.inputs
    assert loaded.outputs == module.outputs
    assert loaded.target == module.target


def test_loaded_module_saves_again(module, feeds, saved, tmp_path):
    again = ember.load(saved).save(str(tmp_path / "again.ember"))
    for e, g in zip(module.run(feeds), ember.load(again).run(feeds)):
        assert np.array_equal(e, g)


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_every_byte_flip_and_truncation_is_refused(saved):
    for file in _files(saved):
        original = file.read_bytes()
        for damage in ("flip-first", "flip-middle", "flip-last", "truncate", "empty"):
            data = bytearray(original)
            if damage.startswith("flip"):
                at = {"flip-first": 0, "flip-middle": len(data) // 2,
                      "flip-last": len(data) - 1}[damage]
                data[at] ^= 0x01
            elif damage == "truncate":
                data = data[:len(data) // 2]
            else:
                data = bytearray()
            file.write_bytes(bytes(data))
            with pytest.raises(ember.ArtifactError, match=file.name):
                ember.load(saved)
        file.write_bytes(original)
    ember.load(saved)  # undamaged again


def test_missing_file_and_missing_directory(saved, tmp_path):
    with pytest.raises(ember.ArtifactError, match="no such artefact"):
        ember.load(tmp_path / "nothing.ember")
    victim = next(p for p in _files(saved) if p.name != MANIFEST)
    victim.unlink()
    with pytest.raises(ember.ArtifactError, match="missing"):
        ember.load(saved)


def _rewrite_manifest(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    manifest["checksum"] = _checksum(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_missing_cpu_features_are_refused(saved):
    def demand(manifest):
        manifest["cpu"]["features"] += ",+ember-imaginary-feature"

    _rewrite_manifest(saved, demand)
    with pytest.raises(ember.ArtifactError, match="ember-imaginary-feature"):
        ember.load(saved)


def test_other_architecture_and_format_version_are_refused(saved):
    _rewrite_manifest(saved, lambda m: m["cpu"].update(triple="riscv64-unknown-linux-gnu"))
    with pytest.raises(ember.ArtifactError, match="riscv64"):
        ember.load(saved)
    _rewrite_manifest(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ember.ArtifactError, match="format version 99"):
        ember.load(saved)


def test_reference_target_modules_say_they_cannot_be_saved(tmp_path):
    module = ember.compile(small_cnn(), target="reference")
    with pytest.raises(ember.EmberError, match="target 'llvm'"):
        module.save(str(tmp_path / "ref.ember"))


def reshape_by_input_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
        "dynamic_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_specializing_module_keeps_its_variants(tmp_path):
    module = ember.compile(reshape_by_input_model())
    x = np.arange(12, dtype=np.float32).reshape(2, 6) - 6
    module.run({"x": x, "s": np.array([3, 4])})
    module.run({"x": x, "s": np.array([6, 2])})
    path = module.save(str(tmp_path / "dyn.ember"))
    code = (
        "import sys, numpy as np, ember\n"
        f"m = ember.load({path!r})\n"
        "x = np.arange(12, dtype=np.float32).reshape(2, 6) - 6\n"
        "a = m.run({'x': x, 's': np.array([3, 4])})[0]\n"
        "b = m.run({'x': x, 's': np.array([6, 2])})[0]\n"
        "print(m.specializations, any(k.startswith('ember.compiler') for k in sys.modules))\n"
        "c = m.run({'x': x, 's': np.array([4, 3])})[0]\n"
        "assert np.array_equal(c, np.maximum(x, 0).reshape(4, 3))\n"
        "assert np.array_equal(a, np.maximum(x, 0).reshape(3, 4))\n"
        "print(m.specializations)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False", "3"]

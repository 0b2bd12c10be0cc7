"""Saved modules: `Module.save(path)` writes an artefact directory, `ember.load(path)` reads it.

    model.ember/
      manifest.json   format and ember version, target and CPU features, the signature, the
                      SHA-256 of every other file, and a checksum of its own content
      program.json    the kernel calls and the memory plan (runtime/program.py)
      params.npz      the constants, in the program's param order
      kernels.so      the kernels and the entry function, linked by the system C compiler
                      (or objects/*.o, linked by LLVM's JIT at load, where no C compiler is)

A module that specializes on input values at run time saves every variant compiled so far
under variants/N/ and the ONNX model beside them, so a loaded one can still compile new ones.

Loading checks everything before it runs anything: the manifest's checksum, each file's hash,
the format version and the host CPU's features. Any mismatch raises `ArtifactError` naming the
file. Loading imports no compiler: the backend's loader part (e.g. backends/llvm/loader.py)
turns the files into an executor.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ArtifactError, EmberError
from ember.runtime.module import Module, TensorSpec
from ember.runtime.program import Program

FORMAT = "ember-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRAM = "program.json"
PARAMS = "params.npz"

#: backend name in a manifest -> the module that loads its executors
LOADERS = {"llvm": "ember.backends.llvm.loader"}


def save(module: Module, path: str | os.PathLike, linker: bool = True) -> Path:
    """Write `module` as an artefact directory at `path` (replacing what is there). With
    `linker` False the code is saved as object files even where a C compiler exists."""
    saver = getattr(module._executor, "save_artifact", None)
    if saver is None:
        raise EmberError(f"modules for target {module.target!r} cannot be saved; compile for "
                         f"target 'llvm' to get a module that can")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        body = saver(scratch, linker)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ember_version": _version(),
            "target": module.target,
            "inputs": [_spec_json(s) for s in module.inputs],
            "outputs": [_spec_json(s) for s in module.outputs],
            **body,
            "files": {name: _sha256(scratch / name) for name in _files(scratch)},
        }
        manifest["checksum"] = _checksum(manifest)
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(scratch, path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike) -> Module:
    """The module saved at `path`; ArtifactError when the artefact is damaged, of another
    format version, or built for CPU features this machine lacks."""
    path = Path(path)
    manifest = read_manifest(path)
    executor = load_executor(path, manifest)
    inputs = [_spec_from_json(s) for s in manifest["inputs"]]
    outputs = [_spec_from_json(s) for s in manifest["outputs"]]
    return Module(executor, inputs, outputs, manifest["target"])


def load_executor(directory: Path, body: Mapping[str, Any]):
    """The executor for one saved program (or a specializing module's variants)."""
    if body.get("module") == "specializing":
        from ember.runtime.specialized import load_specialized

        return load_specialized(directory, body)
    backend = body.get("backend")
    if backend not in LOADERS:
        raise ArtifactError(f"{directory / MANIFEST}: unknown backend {backend!r}; this ember "
                            f"loads {', '.join(LOADERS)}")
    return importlib.import_module(LOADERS[backend]).load_executor(directory, body)


def read_manifest(path: Path) -> dict[str, Any]:
    """The checked manifest: its own checksum, the format, and every file's SHA-256."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artefact directory (save one with "
                            f"Module.save or `ember compile model.onnx -o {path}`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{manifest_path}: missing; {path} is not an ember artefact "
                            f"(or it was damaged)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({error}); the artefact is "
                            f"damaged: save it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path}: not an ember artefact manifest")
    if manifest.get("checksum") != _checksum(manifest):
        raise ArtifactError(f"{manifest_path}: its checksum does not match its content; the "
                            f"manifest was modified or damaged: save the module again")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{manifest_path}: format version {manifest.get('format_version')}"
                            f" (ember {manifest.get('ember_version')}); this ember "
                            f"({_version()}) reads version {FORMAT_VERSION}: recompile")
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file}: missing (the manifest lists it)")
        actual = _sha256(file)
        if actual != digest:
            raise ArtifactError(f"{file}: SHA-256 {actual[:16]}... does not match the "
                                f"manifest's {digest[:16]}...; the file is damaged or was "
                                f"replaced: save the module again")
    return manifest


# -- the pieces every backend's saver and loader share


def write_program(directory: Path, program: Program, params: Sequence[np.ndarray]) -> None:
    (directory / PROGRAM).write_text(json.dumps(program.to_json()) + "\n")
    with open(directory / PARAMS, "wb") as f:
        np.savez(f, **{f"p{k}": np.asarray(a) for k, a in enumerate(params)})


def read_program(directory: Path) -> tuple[Program, list[np.ndarray]]:
    program_path, params_path = directory / PROGRAM, directory / PARAMS
    try:
        program = Program.from_json(json.loads(program_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{program_path}: not a valid program ({error})") from None
    try:
        with np.load(params_path, allow_pickle=False) as data:
            params = [data[f"p{k}"] for k in range(len(program.params))]
    except (OSError, ValueError, KeyError) as error:
        raise ArtifactError(f"{params_path}: not the program's parameters ({error})") from None
    for name, array in zip(program.params, params):
        buffer = program.buffers[name]
        if tuple(array.shape) != buffer.shape:
            raise ArtifactError(f"{params_path}: parameter {name!r} has shape {array.shape}, "
                                f"the program expects {buffer.shape}")
    return program, params


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum(manifest: Mapping[str, Any]) -> str:
    content = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": None if spec.shape is None else list(spec.shape),
            "dtype": spec.dtype}


def _spec_from_json(data: Mapping[str, Any]) -> TensorSpec:
    shape = data["shape"]
    return TensorSpec(data["name"], None if shape is None else tuple(shape), data["dtype"])


def _version() -> str:
    from ember import __version__

    return __version__

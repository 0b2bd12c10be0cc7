"""The llvm backend's loader part: a saved program's files -> a ProgramExecutor.

It checks that this machine can run the code (same architecture, every CPU feature the code
was compiled for), then binds the kernels and the entry function: from the shared library with
ctypes, or, for an artefact saved without a C compiler, from the object files through LLVM's
JIT linker. Nothing here generates code.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ember.backends.llvm.executor import ENTRY_SYMBOL, ProgramExecutor
from ember.backends.llvm.runtime import Kernel, KernelSignature, _sync_exported_runtime
from ember.errors import ArtifactError
from ember.runtime.artifact import MANIFEST, PARAMS, PROGRAM, read_program

SHARED_LIBRARY = "kernels.so"
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def load_executor(directory: Path, body: Mapping[str, Any]) -> ProgramExecutor:
    check_cpu(directory, body["cpu"])
    program, params = read_program(directory)
    signatures = [KernelSignature.from_json(s) for s in body["kernels"]]
    code = body["code"]
    if code["kind"] == "shared-library":
        path = directory / code["files"][0]
        try:
            handle = ctypes.CDLL(str(path.resolve()))
        except OSError as error:
            raise ArtifactError(f"{path}: cannot be loaded as a shared library ({error})"
                                ) from None
        _sync_exported_runtime(handle)

        def address(symbol: str) -> int:
            try:
                return ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value
            except AttributeError:
                raise ArtifactError(f"{path}: has no symbol {symbol!r} that the manifest "
                                    f"names") from None
        owner: Any = handle
    elif code["kind"] == "objects":
        from ember.backends.llvm.host import object_engine, resolve_target
        from ember.backends.llvm.parallel import get_runtime

        get_runtime()
        objects = [(directory / name).read_bytes() for name in code["files"]]
        owner = object_engine(objects, resolve_target("llvm"), str(directory))
        address = owner.get_function_address
    else:
        raise ArtifactError(f"{directory / MANIFEST}: unknown code kind {code['kind']!r}")
    kernels = {s.name: Kernel(s, address(s.symbol), owner) for s in signatures}
    missing = sorted({step.kernel for step in program.steps} - set(kernels))
    if missing:
        raise ArtifactError(f"{directory / MANIFEST}: the program calls kernels it does not "
                            f"list: {missing[:5]}")
    return ProgramExecutor(program, address(ENTRY_SYMBOL), kernels, params, owner=owner,
                           code=SavedCode(directory, body))


class SavedCode:
    """The code of a loaded module: saving it again copies the files."""

    def __init__(self, directory: Path, body: Mapping[str, Any]):
        self.directory = directory
        self.body = dict(body)

    def save(self, directory: Path, params, linker: bool = True) -> dict:
        import shutil

        for name in (PROGRAM, PARAMS, *self.body["code"]["files"]):
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.directory / name, directory / name)
        return self.body


def check_cpu(directory: Path, cpu: Mapping[str, str]) -> None:
    """ArtifactError unless this machine has the saved code's architecture and features."""
    arch = cpu["triple"].split("-")[0]
    host_arch = _ARCH_ALIASES.get(platform.machine().lower(), platform.machine().lower())
    if arch != host_arch:
        raise ArtifactError(f"{directory}: compiled for {cpu['triple']} ({cpu['name']}); this "
                            f"machine is {host_arch}: recompile the model here")
    required = {f[1:] for f in cpu["features"].split(",") if f.startswith("+")}
    if not required:
        return
    import llvmlite.binding as llvm

    host = {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",")
            if f.startswith("+")}
    missing = sorted(required - host)
    if missing:
        raise ArtifactError(f"{directory}: compiled for CPU {cpu['name']} with features this "
                            f"CPU lacks: {', '.join(missing)}; recompile the model here (or for "
                            f"an older -mcpu)")

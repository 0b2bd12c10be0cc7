"""The llvm target's build step: the graph's kernels + graph -> a runnable Module.

Each distinct kernel compiles to object code once: a kernel found in this process's memory or
in the on-disk cache (cache.py) is neither lowered nor compiled again; the others are lowered
through the compiler's callback and compiled, one LLVM module each so each can be cached. The
memory planner (compiler/memory_plan.py) places every buffer, aot.py writes the entry function
that calls the kernels in order, and one MCJIT engine links the kernels' objects with the
entry's: a run is one call (executor.py). `Module.save` links the same objects into a shared
library (artifact.py), so a saved module runs the very code the in-process one does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import llvmlite

from ember.backends.llvm.aot import entry_object
from ember.backends.llvm.cache import DiskKernelCache, default_cache_dir
from ember.backends.llvm.executor import ENTRY_SYMBOL, ProgramExecutor
from ember.backends.llvm.host import TargetInfo, object_engine, resolve_target
from ember.backends.llvm.jit import compile_primfuncs, find_linker, link_shared_library
from ember.backends.llvm.loader import SHARED_LIBRARY
from ember.backends.llvm.parallel import get_runtime, set_num_threads
from ember.backends.llvm.runtime import Kernel, KernelSignature
from ember.compiler.memory_plan import plan_program
from ember.ir.graph import Graph
from ember.runtime.artifact import write_program
from ember.runtime.module import Module, graph_signature
from ember.target import Target

#: the schedule-template family this backend's kernels come from
TEMPLATE_FAMILY = "cpu"

#: kernel key -> (signature, object code)
_COMPILED: dict[str, tuple[KernelSignature, bytes]] = {}
disk_cache = DiskKernelCache(default_cache_dir())


def check_target(target: Target) -> None:
    """TargetError for a target this backend cannot compile for (before any work is done)."""
    resolve_target(str(target))


def kernel_key(identity: str, target: Target, info: TargetInfo) -> str:
    text = "\n".join([identity, str(target), info.triple, info.cpu, info.features,
                      llvmlite.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_kernels(kernels, target: Target) -> dict[str, tuple[KernelSignature, bytes]]:
    """Object code for each distinct kernel of `kernels` (the compiler's GraphKernels)."""
    info = resolve_target(str(target))
    out = {}
    for name in kernels.names:
        key = kernel_key(kernels.identities[name], target, info)
        if key not in _COMPILED:
            cached = disk_cache.get(key)
            if cached is not None:
                data, signature = cached
            else:
                library = compile_primfuncs([kernels.lower(name)], info)
                data, signature = b"".join(library.object_code), library.get(name).signature
                disk_cache.put(key, data, signature)
            _COMPILED[key] = (signature, data)
        out[name] = _COMPILED[key]
    return out


class CompiledProgram:
    """A program with its machine code: the kernels' objects and the entry's, and the target
    they were compiled for. `executor()` links them in this process; artifact.py saves them."""

    def __init__(self, program, objects: dict[str, tuple[KernelSignature, bytes]],
                 info: TargetInfo, target: Target):
        self.program = program
        self.signatures = {name: signature for name, (signature, _) in objects.items()}
        self.kernel_objects = [data for _, data in objects.values()]
        self.entry_object = entry_object(program, self.signatures, info)
        self.info = info
        self.target = target

    def save(self, directory: Path, params, linker: bool = True) -> dict:
        """Write the program, `params` and the machine code into `directory`; returns the
        manifest's backend part. The code is a shared library linked by the system C compiler,
        or, when there is none (or `linker` is False), the object files themselves."""
        write_program(directory, self.program, params)
        body = {
            "backend": "llvm",
            "cpu": {"triple": self.info.triple, "name": self.info.cpu,
                    "features": self.info.features},
            "kernels": [s.to_json() for s in self.signatures.values()],
        }
        if linker and find_linker() is not None:
            link_shared_library([*self.kernel_objects, self.entry_object], self.info,
                                str(directory / SHARED_LIBRARY))
            body["code"] = {"kind": "shared-library", "files": [SHARED_LIBRARY]}
        else:
            (directory / "objects").mkdir()
            files = []
            for k, data in enumerate([*self.kernel_objects, self.entry_object]):
                files.append(f"objects/{k:04d}.o")
                (directory / files[-1]).write_bytes(data)
            body["code"] = {"kind": "objects", "files": files}
        return body

    def executor(self, params) -> ProgramExecutor:
        get_runtime()  # the kernels' parallel loops bind to this process's runtime
        engine = object_engine([*self.kernel_objects, self.entry_object], self.info,
                               "the model's kernels")
        kernels = {name: Kernel(s, engine.get_function_address(s.symbol), engine)
                   for name, s in self.signatures.items()}
        return ProgramExecutor(self.program, engine.get_function_address(ENTRY_SYMBOL),
                               kernels, params, owner=engine, code=self)


def build(graph: Graph, target: Target, kernels, num_threads: int | None = None) -> Module:
    info = resolve_target(str(target))
    program = plan_program(graph, kernels.calls)
    compiled = CompiledProgram(program, compile_kernels(kernels, target), info, target)
    if num_threads is not None:
        set_num_threads(num_threads)
    executor = compiled.executor([graph.constants[name] for name in program.params])
    inputs, outputs = graph_signature(graph)
    return Module(executor, inputs, outputs, str(target))

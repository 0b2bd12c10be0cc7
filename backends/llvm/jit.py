"""Compile PrimFuncs in-process: code generation, LLVM's optimization pipeline, the MCJIT
engine, and object/shared-library emission for export.

    lib = compile_primfuncs([func_a, func_b], target="llvm")
    lib.get("func_a")(x, y, out)          # numpy arrays, see runtime.py
    lib.llvm_ir, lib.optimized_ir, lib.assembly()
    lib.emit_object()                     # position-independent ELF object (bytes)
    export_library(lib, "kernels.so")     # + the parallel runtime, linked with `cc -shared`

The pipeline is LLVM's default module pipeline at -O3 (new pass manager), for the target's CPU
and features; functions carry "prefer-vector-width"="512" on AVX-512 CPUs so that the loop and
SLP vectorizers use the full register width (LLVM's tuning for Intel AVX-512 CPUs otherwise
auto-vectorizes with 256-bit vectors; explicit <16 x float> code is 512-bit either way).
After linking, every symbol the machine code needs is checked: MCJIT would silently bind an
unknown one to address 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import llvmlite.binding as llvm

from ember.backends.llvm import codegen
from ember.backends.llvm.host import (
    TargetInfo,
    jit_engine,
    resolve_target,
    target_machine,
)
from ember.backends.llvm.parallel import get_runtime, load_libgomp, runtime_module_ir
from ember.backends.llvm.runtime import DEFAULT_ALIGN, CompiledLibrary, Kernel
from ember.errors import CodegenError, EmberError
from ember.ir.loop import PrimFunc
from ember.target import Target


def parse_and_verify(text: str, names: Sequence[str]) -> llvm.ModuleRef:
    """Parse generated IR and run LLVM's verifier; CodegenError names the kernels."""
    try:
        module = llvm.parse_assembly(text)
        module.verify()
    except RuntimeError as error:
        raise CodegenError(f"LLVM rejected the code generated for {', '.join(names)}: "
                           f"{str(error).strip()}") from None
    return module


def optimize(module: llvm.ModuleRef, info: TargetInfo) -> None:
    """Run LLVM's default -O<opt_level> module pipeline (new pass manager) in place."""
    if info.opt_level == 0:
        return
    options = llvm.create_pipeline_tuning_options(speed_level=info.opt_level)
    options.loop_vectorization = True
    options.slp_vectorization = True
    options.loop_unrolling = True
    builder = llvm.create_pass_builder(target_machine(info), options)
    builder.getModulePassManager().run(module, builder)


class JitLibrary(CompiledLibrary):
    """A CompiledLibrary whose kernels live in an MCJIT engine of this process."""

    def __init__(self, kernels: dict[str, Kernel], engine: llvm.ExecutionEngine,
                 info: TargetInfo, llvm_ir: str, optimized_ir: str):
        super().__init__(kernels, engine)
        self.engine = engine
        self.info = info
        self.llvm_ir = llvm_ir
        self.optimized_ir = optimized_ir
        #: the machine code MCJIT made, loadable again with `host.object_engine`
        self.object_code: list[bytes] = []

    def assembly(self) -> str:
        """The optimized module as the target's assembly text."""
        module = llvm.parse_assembly(self.optimized_ir)
        return target_machine(self.info).emit_assembly(module)

    def emit_object(self) -> bytes:
        """The optimized module as a position-independent object file."""
        module = llvm.parse_assembly(self.optimized_ir)
        return target_machine(self.info, pic=True).emit_object(module)


def compile_primfuncs(funcs: Sequence[PrimFunc], target: str | Target | TargetInfo = "llvm", *,
                      name: str = "ember", param_align: int = DEFAULT_ALIGN) -> JitLibrary:
    """Compile PrimFuncs in final form into one library of kernels callable on numpy arrays.

    Args:
        funcs: the kernels (names must be unique; each becomes an exported symbol).
        target: an "llvm" target: "llvm" (the host), "llvm -mcpu=NAME -mattr=+f,-g", or a
            host.TargetInfo.
        name: the LLVM module name.
        param_align: the byte alignment kernels assume for their buffers (a power of two);
            the runtime copies arrays that are not aligned so.
    Raises CodegenError for IR the backend cannot translate, TargetError for bad targets.
    """
    info = resolve_target(target)
    if info.triple != llvm.get_process_triple():
        raise EmberError(f"target {info.cpu} {info.triple} is not "
                         f"this machine ({llvm.get_process_triple()}): use emit_object to "
                         f"cross-compile")
    # A named CPU (-mcpu=haswell) runs here only if this CPU has its features: the caller's call.
    get_runtime()  # defines __ember_parallel_launch for the JIT's symbol lookup
    module_ir, signatures = codegen.build_module(funcs, info, name, param_align)
    text = str(module_ir)
    module = parse_and_verify(text, [f.name for f in funcs])
    optimize(module, info)
    optimized = str(module)
    engine, objects = jit_engine(module, info, ", ".join(s.name for s in signatures))
    kernels = {}
    for signature in signatures:
        address = engine.get_function_address(signature.symbol)
        kernels[signature.name] = Kernel(signature, address, engine, param_align)
    library = JitLibrary(kernels, engine, info, text, optimized)
    library.object_code = objects
    return library


def emit_object(funcs: Sequence[PrimFunc], target: str | Target | TargetInfo = "llvm", *,
                name: str = "ember", param_align: int = DEFAULT_ALIGN) -> bytes:
    """Compile PrimFuncs for any llvm target (cross-compiling too) into an object file."""
    info = resolve_target(target)
    module_ir, _ = codegen.build_module(funcs, info, name, param_align)
    module = parse_and_verify(str(module_ir), [f.name for f in funcs])
    optimize(module, info)
    return target_machine(info, pic=True).emit_object(module)


def export_library(library: JitLibrary, path: str, compiler: str | None = None) -> str:
    """Write `library` as a shared library at `path`: its kernels plus a copy of the parallel
    runtime, linked by the system C compiler (`cc -shared`). Load it with
    `CompiledLibrary.from_shared_library(path, library.signatures)`."""
    return link_shared_library([library.emit_object()], library.info, path, compiler)


def find_linker() -> str | None:
    """The system C compiler driver that links shared libraries, None when there is none."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def link_shared_library(objects: Sequence[bytes], info: TargetInfo, path: str,
                        compiler: str | None = None) -> str:
    """Link object files (and a copy of the parallel runtime, compiled for `info`) into a
    shared library at `path` with the system C compiler driver."""
    compiler = compiler or find_linker()
    if compiler is None:
        raise EmberError("exporting a shared library needs a C compiler driver (cc) to link; "
                         "none was found on PATH")
    gomp = load_libgomp()
    runtime = llvm.parse_assembly(runtime_module_ir(info, gomp))
    optimize(runtime, info)
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for k, data in enumerate([*objects, target_machine(info, pic=True).emit_object(runtime)]):
            paths.append(os.path.join(scratch, f"part{k}.o"))
            with open(paths[-1], "wb") as f:
                f.write(data)
        command = [compiler, "-shared", "-o", path, *paths, "-lm", "-lpthread"]
        if gomp:
            command.append("-l:" + "libgomp.so.1")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise EmberError(f"linking {path} failed ({' '.join(command)}):\n{result.stderr}")
    return path

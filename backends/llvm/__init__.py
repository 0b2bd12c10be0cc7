"""The LLVM CPU backend: loop-IR PrimFuncs to machine code through llvmlite, run in-process.

    from ember.backends.llvm import compile_primfuncs, empty_aligned, set_num_threads
    lib = compile_primfuncs(funcs, "llvm")    # PrimFuncs in final form (ir/passes pipeline)
    out = empty_aligned(1024, "float32")      # 64-byte aligned: no staging copy
    lib.get("add")(a, b, out)                 # numpy arrays in param order; outputs in place
    set_num_threads(4)                        # parallel loops' threads (default: one per core)

Contract (codegen.py's [Note: kernel calling convention]): a kernel takes one pointer per param
buffer, each assumed `noalias` and 64-byte aligned. `Kernel.__call__` checks dtypes and element
counts (InputError) and stages through an aligned copy any array that is misaligned, not
C-contiguous, or (for outputs) overlapping another argument. `Kernel.raw(*addresses)` skips
all of that. Exported kernels are named `ember_<name>`.

The codegen part: host.py (target machine), codegen.py + exprs.py + intrinsics.py (PrimFunc ->
LLVM IR), jit.py (optimization, MCJIT, object and shared-library export), aot.py (a program's
entry function), build.py (graph -> Module). The loader part, all that loading a saved module
imports: runtime.py (calling kernels on numpy arrays), parallel.py (the thread pool that runs
parallel loops), executor.py (running a program), loader.py (artefact files -> executor).
"""

__all__ = [
    "CodegenError", "CompiledLibrary", "JitLibrary", "Kernel", "compile_primfuncs",
    "emit_object", "empty_aligned", "export_library", "get_num_threads",
    "get_parallel_backend", "set_num_threads", "set_parallel_backend", "zeros_aligned",
]

# Loaded on first use, so that loading a saved module (loader.py) imports no code generator.
_LAZY = {
    "JitLibrary": "jit", "compile_primfuncs": "jit", "emit_object": "jit",
    "export_library": "jit", "get_num_threads": "parallel", "get_parallel_backend": "parallel",
    "set_num_threads": "parallel", "set_parallel_backend": "parallel",
    "CompiledLibrary": "runtime", "Kernel": "runtime", "empty_aligned": "runtime",
    "zeros_aligned": "runtime",
}


def __getattr__(name: str):
    if name == "CodegenError":
        from ember.errors import CodegenError

        return CodegenError
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"ember.backends.llvm.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ember.backends.llvm' has no attribute {name!r}")

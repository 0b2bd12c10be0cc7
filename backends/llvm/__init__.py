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

Modules: host.py (target machine), codegen.py + exprs.py + intrinsics.py (PrimFunc -> LLVM
IR), jit.py (optimization, MCJIT, object and shared-library export), runtime.py (calling
kernels on numpy arrays), parallel.py (the thread pool that runs parallel loops).
"""

from ember.backends.llvm.jit import JitLibrary, compile_primfuncs, emit_object, export_library
from ember.backends.llvm.parallel import (
    get_num_threads,
    get_parallel_backend,
    set_num_threads,
    set_parallel_backend,
)
from ember.backends.llvm.runtime import CompiledLibrary, Kernel, empty_aligned, zeros_aligned
from ember.errors import CodegenError

__all__ = [
    "CodegenError", "CompiledLibrary", "JitLibrary", "Kernel", "compile_primfuncs",
    "emit_object", "empty_aligned", "export_library", "get_num_threads",
    "get_parallel_backend", "set_num_threads", "set_parallel_backend", "zeros_aligned",
]

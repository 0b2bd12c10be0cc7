"""The llvm target's build step: lowered kernels + graph -> a runnable Module.

Kernels compile to machine code once per process and target (cached by name: names are
workload hashes); a model's missing kernels compile together in one LLVM module. The module
runs on the stepwise executor with 64-byte-aligned buffers.
"""

from __future__ import annotations

from ember.backends.llvm.host import resolve_target
from ember.backends.llvm.jit import compile_primfuncs
from ember.backends.llvm.parallel import set_num_threads
from ember.backends.llvm.runtime import Kernel, empty_aligned
from ember.ir.graph import Graph
from ember.runtime.module import Module, graph_signature
from ember.runtime.stepwise import StepwiseExecutor
from ember.target import Target

#: the schedule-template family this backend's kernels come from
TEMPLATE_FAMILY = "cpu"

_COMPILED: dict[tuple[str, Target], Kernel] = {}


def compile_kernels(funcs, target: Target) -> dict[str, Kernel]:
    """Machine code for each PrimFunc (final form), reusing kernels compiled before."""
    missing = [f for f in funcs if (f.name, target) not in _COMPILED]
    if missing:
        library = compile_primfuncs(missing, resolve_target(str(target)))
        for func in missing:
            _COMPILED[(func.name, target)] = library.get(func.name)
    return {f.name: _COMPILED[(f.name, target)] for f in funcs}


def build(graph: Graph, target: Target, kernels, num_threads: int | None = None) -> Module:
    """`kernels` is the compiler's GraphKernels for `graph` (ember.compiler.kernels)."""
    compiled = compile_kernels(kernels.funcs, target)
    if num_threads is not None:
        set_num_threads(num_threads)
    executor = StepwiseExecutor(
        graph, [compiled[name] for name in kernels.node_kernels], empty_aligned,
        kernel_names=kernels.node_kernels, set_num_threads=set_num_threads,
    )
    inputs, outputs = graph_signature(graph)
    return Module(executor, inputs, outputs, str(target))

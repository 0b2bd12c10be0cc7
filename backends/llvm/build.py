"""The llvm target's build step: the graph's kernels + graph -> a runnable Module.

Each distinct kernel compiles to machine code once: a kernel found in this process's memory or
in the on-disk cache (cache.py) is neither lowered nor compiled again; the others are lowered
through the compiler's callback and compiled, one LLVM module each so each can be cached. The
module runs on the stepwise executor with 64-byte-aligned buffers.
"""

from __future__ import annotations

import hashlib

import llvmlite

from ember.backends.llvm.cache import DiskKernelCache, default_cache_dir
from ember.backends.llvm.host import TargetInfo, resolve_target
from ember.backends.llvm.jit import compile_primfuncs, load_objects
from ember.backends.llvm.parallel import set_num_threads
from ember.backends.llvm.runtime import Kernel, empty_aligned
from ember.ir.graph import Graph
from ember.runtime.module import Module, graph_signature
from ember.runtime.stepwise import StepwiseExecutor
from ember.target import Target

#: the schedule-template family this backend's kernels come from
TEMPLATE_FAMILY = "cpu"

_COMPILED: dict[str, Kernel] = {}
disk_cache = DiskKernelCache(default_cache_dir())


def check_target(target: Target) -> None:
    """TargetError for a target this backend cannot compile for (before any work is done)."""
    resolve_target(str(target))


def kernel_key(identity: str, target: Target, info: TargetInfo) -> str:
    text = "\n".join([identity, str(target), info.triple, info.cpu, info.features,
                      llvmlite.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_kernels(kernels, target: Target) -> dict[str, Kernel]:
    """Machine code for each distinct kernel of `kernels` (the compiler's GraphKernels)."""
    info = resolve_target(str(target))
    out: dict[str, Kernel] = {}
    for name in dict.fromkeys(kernels.node_kernels):
        key = kernel_key(kernels.identities[name], target, info)
        if key not in _COMPILED:
            cached = disk_cache.get(key)
            if cached is not None:
                data, signature = cached
                _COMPILED[key] = load_objects([data], [signature], info).get(signature.name)
            else:
                library = compile_primfuncs([kernels.lower(name)], info)
                _COMPILED[key] = library.get(name)
                disk_cache.put(key, b"".join(library.object_code), _COMPILED[key].signature)
        out[name] = _COMPILED[key]
    return out


def build(graph: Graph, target: Target, kernels, num_threads: int | None = None) -> Module:
    compiled = compile_kernels(kernels, target)
    if num_threads is not None:
        set_num_threads(num_threads)
    executor = StepwiseExecutor(
        graph, [compiled[name] for name in kernels.node_kernels], empty_aligned,
        kernel_names=kernels.node_kernels, set_num_threads=set_num_threads,
    )
    inputs, outputs = graph_signature(graph)
    return Module(executor, inputs, outputs, str(target))

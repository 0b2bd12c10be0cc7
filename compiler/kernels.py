"""Lowering a graph's kernels: one per node, shared by nodes with equal workloads.

Lowered kernels are cached in memory by (workload, template family, target), so a shape that
repeats in a model, or across models compiled in one process, lowers once. Kernel names are
`<op>_<workload hash>`: stable across runs, so backends can cache compiled code by name.
"""

from __future__ import annotations

import dataclasses

from ember.compiler.ops import Workload, instantiate
from ember.ir.graph import Graph
from ember.ir.loop import PrimFunc
from ember.target import Target

_LOWERED: dict[tuple[Workload, str, Target], PrimFunc] = {}


@dataclasses.dataclass(frozen=True)
class GraphKernels:
    """The distinct kernels of a graph and, per node, the name of the kernel that runs it."""

    funcs: tuple[PrimFunc, ...]
    node_kernels: tuple[str, ...]


def kernel_name(workload: Workload) -> str:
    return f"{workload.op}_{workload.key}"


def lower_kernel(workload: Workload, family: str, target: Target) -> PrimFunc:
    key = (workload, family, target)
    if key not in _LOWERED:
        _LOWERED[key] = instantiate(workload, family, target, name=kernel_name(workload))
    return _LOWERED[key]


def lower_graph_kernels(graph: Graph, family: str, target: Target) -> GraphKernels:
    funcs: dict[str, PrimFunc] = {}
    names = []
    for node in graph.nodes:
        workload = Workload.of(node, graph.types)
        name = kernel_name(workload)
        if name not in funcs:
            funcs[name] = lower_kernel(workload, family, target)
        names.append(name)
    return GraphKernels(tuple(funcs.values()), tuple(names))

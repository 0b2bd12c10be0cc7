"""A graph's kernels: one per node, shared by nodes with equal workloads, lowered on demand.

`GraphKernels` tells a backend which kernel runs each node, what each kernel's identity is
(its workload, template family and the ember build that lowers it: equal identities give equal
code, so backends can cache machine code by it), and how to lower a kernel it does not have.
Lowered kernels are also cached in memory by (workload, family, target).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

from ember.compiler.ops import Workload, instantiate
from ember.ir.graph import Graph
from ember.ir.loop import PrimFunc
from ember.target import Target

_LOWERED: dict[tuple[Workload, str, Target], PrimFunc] = {}

#: folders whose code decides what a kernel compiles to
_CODE_FOLDERS = ("ir", "compiler", "backends")


@functools.cache
def build_id() -> str:
    """A hash of ember's compiler and backend sources: cached code from another build of
    ember never counts as a hit."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in _CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class GraphKernels:
    node_kernels: tuple[str, ...]
    identities: Mapping[str, str]
    lower: Callable[[str], PrimFunc]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(self.node_kernels))


def kernel_name(workload: Workload) -> str:
    return f"{workload.op}_{workload.key}"


def lower_kernel(workload: Workload, family: str, target: Target) -> PrimFunc:
    key = (workload, family, target)
    if key not in _LOWERED:
        _LOWERED[key] = instantiate(workload, family, target, name=kernel_name(workload))
    return _LOWERED[key]


def graph_kernels(graph: Graph, family: str, target: Target) -> GraphKernels:
    workloads: dict[str, Workload] = {}
    names = []
    for node in graph.nodes:
        workload = Workload.of(node, graph.types)
        name = kernel_name(workload)
        workloads.setdefault(name, workload)
        names.append(name)
    identities = {name: f"{build_id()}|{family}|{workload!r}"
                  for name, workload in workloads.items()}
    return GraphKernels(tuple(names), identities,
                        lambda name: lower_kernel(workloads[name], family, target))

"""A graph's kernels: one per fused group (or per node), shared by equal workloads, lowered on
demand.

`GraphKernels` tells a backend which kernel calls run the graph (`calls`, in order: the kernel,
the graph ops it computes, the values it reads and writes), what each kernel's identity is (its
workload, template family and the ember build that lowers it: equal identities give equal code,
so backends can cache machine code by it), and how to lower a kernel it does not have. Lowered
kernels are also cached in memory by (kernel name, family, target).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ember.compiler.ops import Workload, instantiate
from ember.compiler.ops.fused import FusedWorkload, instantiate_fused
from ember.compiler.ops.registry import get_schedule, has_compute
from ember.ir.graph import Graph, Node
from ember.ir.loop import PrimFunc
from ember.ir.ops import Pattern, get_op
from ember.target import Target

#: (kernel name, family, target) -> lowered kernel. Keyed by name, not by workload: workloads
#: compare attributes by value (0 == 0.0) but their keys, which name kernels, by repr.
_LOWERED: dict[tuple[str, str, Target], PrimFunc] = {}

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
class KernelCall:
    """One call of a kernel: params are `inputs` (present ones, in order), then `outputs`."""

    kernel: str
    ops: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class GraphKernels:
    calls: tuple[KernelCall, ...]
    identities: Mapping[str, str]
    lower: Callable[[str], PrimFunc]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(call.kernel for call in self.calls))


def kernel_name(workload: Workload | FusedWorkload) -> str:
    if isinstance(workload, FusedWorkload):
        return f"fused_{'_'.join(w.op for w in workload.nodes)[:48]}_{workload.key}"
    return f"{workload.op}_{workload.key}"


def lower_kernel(workload: Workload | FusedWorkload, family: str, target: Target) -> PrimFunc:
    key = (kernel_name(workload), family, target)
    if key not in _LOWERED:
        make = instantiate_fused if isinstance(workload, FusedWorkload) else instantiate
        _LOWERED[key] = make(workload, family, target, name=kernel_name(workload))
    return _LOWERED[key]


def graph_kernels(graph: Graph, family: str, target: Target,
                  groups: Sequence[Sequence[int]] | None = None) -> GraphKernels:
    """The kernel calls that run `graph`: one per group of node indices (each group's nodes
    in order, its last node's outputs the only values it writes), or one per node."""
    groups = [[k] for k in range(len(graph.nodes))] if groups is None else groups
    workloads: dict[str, Workload | FusedWorkload] = {}
    calls = []
    for group in groups:
        for part in _kernel_groups(graph, family, group):
            workload, inputs = group_workload(graph, part)
            name = kernel_name(workload)
            workloads.setdefault(name, workload)
            nodes = [graph.nodes[k] for k in part]
            calls.append(KernelCall(name, tuple(n.op for n in nodes), inputs,
                                    tuple(nodes[-1].outputs)))
    identities = {name: f"{build_id()}|{family}|{workload!r}"
                  for name, workload in workloads.items()}
    return GraphKernels(tuple(calls), identities,
                        lambda name: lower_kernel(workloads[name], family, target))


def _anchor(graph: Graph, group: Sequence[int]) -> int:
    """The position in `group` of its anchor: its one node that is not at most injective,
    else its last."""
    for position, k in enumerate(group):
        if get_op(graph.nodes[k].op).pattern > Pattern.INJECTIVE:
            return position
    return len(group) - 1


def _kernel_groups(graph: Graph, family: str, group: Sequence[int]) -> list[list[int]]:
    """`group` as the kernels that compute it: itself, or, where a template cannot take part
    of it (an extern op; an epilogue after an anchor whose template takes none), the anchor's
    part and the epilogue as two kernels, or one kernel per node."""
    group = list(group)
    if len(group) == 1:
        return [group]
    if not all(has_compute(graph.nodes[k].op) for k in group):
        return [[k] for k in group]
    anchor = _anchor(graph, group)
    template = get_schedule(family, graph.nodes[group[anchor]].op)
    if anchor < len(group) - 1 and not getattr(template, "takes_epilogue", False):
        return [group[:anchor + 1], group[anchor + 1:]]
    return [group]


def group_workload(graph: Graph, group: Sequence[int]
                   ) -> tuple[Workload | FusedWorkload, tuple[str, ...]]:
    """The workload of the kernel computing `group`, and the values it reads in param order."""
    nodes: list[Node] = [graph.nodes[k] for k in group]
    if len(nodes) == 1:
        node = nodes[0]
        return Workload.of(node, graph.types), tuple(v for v in node.inputs if v)
    made = {v: (j, m) for j, node in enumerate(nodes) for m, v in enumerate(node.outputs)}
    args: dict[str, int] = {}
    sources = []
    for node in nodes:
        node_sources = []
        for value in node.inputs:
            if not value:
                node_sources.append(None)
            elif value in made:
                node_sources.append(("node", *made[value]))
            else:
                node_sources.append(("arg", args.setdefault(value, len(args))))
        sources.append(tuple(node_sources))
    workload = FusedWorkload(tuple(Workload.of(n, graph.types) for n in nodes), tuple(sources),
                             _anchor(graph, group))
    return workload, tuple(args)


__all__ = ["GraphKernels", "KernelCall", "build_id", "graph_kernels", "kernel_name",
           "lower_kernel"]

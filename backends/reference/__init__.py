"""The reference target: runs a graph with the ops' numpy references (no code generation)."""

from __future__ import annotations

from ember.errors import TargetError
from ember.ir.graph import Graph
from ember.runtime.module import Module, graph_signature
from ember.runtime.reference import ReferenceExecutor
from ember.target import Target

#: the reference target runs the graph as it is: no kernels
TEMPLATE_FAMILY = None


def check_target(target: Target) -> None:
    if target.options:
        raise TargetError(f"the reference target takes no options, got {str(target)!r}")


def build(graph: Graph, target: Target, kernels=None, num_threads: int | None = None) -> Module:
    check_target(target)
    inputs, outputs = graph_signature(graph)
    return Module(ReferenceExecutor(graph), inputs, outputs, str(target))

"""The reference target: runs a graph with the ops' numpy references (no code generation)."""

from __future__ import annotations

from ember.errors import TargetError
from ember.ir.graph import Graph
from ember.runtime.module import Module, TensorSpec
from ember.runtime.reference import ReferenceExecutor
from ember.target import Target


def signature(graph: Graph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(name: str) -> TensorSpec:
        t = graph.types[name]
        return TensorSpec(name, t.shape, t.dtype)

    return [spec(n) for n in graph.inputs], [spec(n) for n in graph.outputs]


def build(graph: Graph, target: Target) -> Module:
    if target.options:
        raise TargetError(f"the reference target takes no options, got {str(target)!r}")
    inputs, outputs = signature(graph)
    return Module(ReferenceExecutor(graph), inputs, outputs, str(target))

"""Rebuilding a graph node by node: the shared machinery of the graph passes.

A pass walks the old graph's nodes in order and, for each, either keeps it (`keep`), emits
other nodes in its place (`emit`) or replaces its value by another (`alias`). `finish()` builds
the new graph through a GraphBuilder, so every node is typed again by its op's inference and
nothing dead survives. Value names are kept wherever they are free, and the graph's outputs
always keep their names (a value replaced by a graph input or another output is copied by an
identity node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.ir.builder import GraphBuilder
from ember.ir.graph import Graph, Node


class Rewriter:
    """Builds the rewritten copy of `graph`."""

    def __init__(self, graph: Graph, fold_constants: bool = False):
        self.graph = graph
        self.builder = GraphBuilder(graph.name, fold_constants=fold_constants)
        #: old value name -> its name in the new graph
        self.values: dict[str, str] = {}
        for name in graph.inputs:
            self.builder.add_input(name, graph.types[name])
        for name, array in graph.constants.items():
            self.values[name] = self.builder.add_constant(array, hint=name)

    # -- reading the new graph

    def value(self, old: str) -> str:
        """The new graph's name for the old graph's value `old` ("" stays "")."""
        return self.values.get(old, old) if old else old

    def constant(self, new: str) -> np.ndarray | None:
        """The array of value `new` of the new graph when it is a constant, else None."""
        return self.builder.constants.get(new)

    def type(self, new: str):
        return self.builder.types[new]

    # -- writing it

    def keep(self, node: Node) -> tuple[str, ...]:
        """Copy `node`, reading the new names of its inputs."""
        return self.emit(node.op, [self.value(v) for v in node.inputs], node.attrs, node.name,
                         replaces=node)

    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None,
             name: str = "", replaces: Node | None = None, hint: str | None = None
             ) -> tuple[str, ...]:
        """Append `op(inputs)`; when it `replaces` an old node, its outputs take that node's
        value names (where free) and stand for them from now on; else they are named after
        `hint`."""
        if replaces is not None and replaces.outputs:
            hint = replaces.outputs[0]
        start = len(self.builder.nodes)
        outputs = list(self.builder.add_node(op, list(inputs), attrs, name=name, hint=hint))
        if replaces is not None:
            for k, (new, old) in enumerate(zip(outputs, replaces.outputs)):
                if new != old and old not in self.builder.types:
                    self.builder.rename(new, old, since_node=start)
                    outputs[k] = old
                self.values[old] = outputs[k]
        return tuple(outputs)

    def add_constant(self, array: np.ndarray, hint: str = "const") -> str:
        return self.builder.add_constant(array, hint=hint)

    def alias(self, old: str, new: str) -> None:
        """From now on, the old graph's value `old` is the new graph's value `new`."""
        self.values[old] = new

    def finish(self) -> Graph:
        """The new graph; its outputs keep the old graph's output names."""
        outputs = []
        for old in self.graph.outputs:
            new = self.value(old)
            if new != old:
                new = self._restore_name(old, new, outputs)
            outputs.append(new)
        return self.builder.build(outputs)

    def _restore_name(self, old: str, new: str, taken: list[str]) -> str:
        produced = {out for node in self.builder.nodes for out in node.outputs}
        is_output_elsewhere = new in taken or new in self.graph.outputs
        if old not in self.builder.types and new in produced and not is_output_elsewhere:
            self.builder.rename(new, old)
            for key, value in self.values.items():
                if value == new:
                    self.values[key] = old
            return old
        (copy,) = self.builder.add_node("identity", [new], hint=old)
        return copy

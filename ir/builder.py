"""GraphBuilder: the one mutable way to make a `Graph`.

The frontend and graph passes append inputs, constants and nodes; each node's output types come
from its op's shape inference, so a built graph is typed by construction. With
`fold_constants=True`, a node whose inputs are all constants is evaluated with the op's numpy
reference right away and becomes a constant (this is how shape arithmetic such as
Shape -> Gather -> Concat -> Reshape turns into static shapes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import IRError
from ember.ir.graph import Graph, Node, TensorType, frozen_array
from ember.ir.ops import get_op


class GraphBuilder:
    def __init__(self, name: str = "main", fold_constants: bool = False):
        self.name = name
        self.fold_constants = fold_constants
        self.inputs: list[str] = []
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        #: Every value name in the order it was made (the frontend renames new values).
        self.created: list[str] = []

    # -- names

    def fresh(self, hint: str = "v") -> str:
        """A value name not used yet: `hint` itself when free, else `hint:1`, `hint:2`, ..."""
        hint = hint or "v"
        if hint not in self.types:
            return hint
        k = 1
        while f"{hint}:{k}" in self.types:
            k += 1
        return f"{hint}:{k}"

    # -- values

    def add_input(self, name: str, type: TensorType) -> str:
        if name in self.types:
            raise IRError(f"value %{name} is defined twice")
        self.inputs.append(name)
        self.types[name] = type
        self.created.append(name)
        return name

    def add_constant(self, array: Any, hint: str = "const") -> str:
        name = self.fresh(hint)
        array = frozen_array(array)
        self.constants[name] = array
        self.types[name] = TensorType.of(array)
        self.created.append(name)
        return name

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: Mapping[str, Any] | None = None,
        name: str = "",
        hint: str | None = None,
    ) -> tuple[str, ...]:
        """Append `op(inputs){attrs}` and return its output names.

        Raises ShapeError when the op rejects the inputs' types or the attributes.
        """
        opdef = get_op(op)
        full_attrs = opdef.make_attrs(attrs)
        for value in inputs:
            if value and value not in self.types:
                raise IRError(f"{op}: input %{value} is not defined")
        input_types = [self.types[v] if v else None for v in inputs]
        output_types = opdef.infer_types(full_attrs, input_types)
        hint = hint or name or op
        present = [v for v in inputs if v]
        if self.fold_constants and opdef.foldable and all(v in self.constants for v in present):
            arrays = [self.constants[v] if v else None for v in inputs]
            results = opdef.evaluate(full_attrs, arrays)
            for result, expected in zip(results, output_types):
                if TensorType.of(result) != expected:
                    raise IRError(
                        f"{op}: the numpy reference gave {TensorType.of(result)} where shape "
                        f"inference gives {expected}; one of the two is wrong"
                    )
            return tuple(self.add_constant(r, hint) for r in results)
        outputs = []
        for t in output_types:
            out = self.fresh(hint)
            self.types[out] = t
            self.created.append(out)
            outputs.append(out)
        self.nodes.append(Node(op, tuple(inputs), tuple(outputs), full_attrs, name))
        return tuple(outputs)

    def rename(self, old: str, new: str, since_node: int = 0) -> None:
        """Rename value `old` (a node output or a constant) to the unused name `new`, in the
        nodes appended from index `since_node` on (its producer and users must lie there)."""
        if new in self.types:
            raise IRError(f"cannot rename %{old} to %{new}: the name is taken")
        if old in self.inputs:
            raise IRError(f"cannot rename graph input %{old}")
        self.types[new] = self.types.pop(old)
        self.created[self.created.index(old)] = new
        if old in self.constants:
            self.constants[new] = self.constants.pop(old)
        for i in range(since_node, len(self.nodes)):
            node = self.nodes[i]
            if old in node.inputs or old in node.outputs:
                self.nodes[i] = node.replace(
                    inputs=tuple(new if v == old else v for v in node.inputs),
                    outputs=tuple(new if v == old else v for v in node.outputs),
                )

    def build(self, outputs: Sequence[str]) -> Graph:
        """The graph with these outputs; nodes and constants nothing depends on are dropped."""
        live = set(outputs)
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if live.intersection(node.outputs):
                kept.append(node)
                live.update(v for v in node.inputs if v)
        kept.reverse()
        used = live | set(self.inputs) | {out for node in kept for out in node.outputs}
        return Graph(
            name=self.name,
            inputs=tuple(self.inputs),
            outputs=tuple(outputs),
            nodes=tuple(kept),
            types={k: v for k, v in self.types.items() if k in used},
            constants={k: v for k, v in self.constants.items() if k in live},
        )

"""The graph verifier: checks a graph's invariants and prints the graph when one breaks.

Tests run it after every pass. It checks single assignment, that every value is defined before
use (topological order), that every value has a type, that constants agree with their types,
that each node names a registered op with a valid arity and attribute set, and that each node's
recorded output types are what the op's shape inference gives.
"""

from __future__ import annotations

from ember.errors import EmberError, IRError
from ember.ir.graph import Graph, Node, TensorType, format_graph
from ember.ir.ops import get_op


def verify(graph: Graph) -> Graph:
    """Return `graph` unchanged if it is well formed, else raise IRError."""
    defined: set[str] = set()

    def fail(message: str, node: Node | None = None) -> None:
        where = f" at node {node.name or node.outputs[0]!r} ({node.op})" if node else ""
        raise IRError(f"invalid graph {graph.name!r}{where}: {message}\n{format_graph(graph)}")

    def define(name: str, node: Node | None = None) -> None:
        if not name:
            fail("a value has an empty name", node)
        if name in defined:
            fail(f"value %{name} is assigned twice", node)
        if name not in graph.types:
            fail(f"value %{name} has no type", node)
        defined.add(name)

    for name in graph.inputs:
        define(name)
    for name, array in graph.constants.items():
        define(name)
        if TensorType.of(array) != graph.types[name]:
            fail(f"constant %{name} holds {TensorType.of(array)} but is typed {graph.types[name]}")
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in defined:
                fail(f"input %{name} is used before it is defined (or never defined)", node)
        try:
            op = get_op(node.op)
        except KeyError:
            fail(f"unknown op {node.op!r}", node)
        try:
            attrs = op.make_attrs(node.attrs)
            if attrs != node.attrs:
                fail(f"attributes {node.attrs} are not complete (expected {attrs})", node)
            inferred = op.infer_types(
                node.attrs, [graph.types[i] if i else None for i in node.inputs]
            )
        except EmberError as error:
            fail(str(error), node)
        if len(inferred) != len(node.outputs):
            fail(f"op gives {len(inferred)} outputs, node has {len(node.outputs)}", node)
        for name, expected in zip(node.outputs, inferred):
            define(name, node)
            if graph.types[name] != expected:
                fail(f"%{name} is typed {graph.types[name]}, inference gives {expected}", node)
    for name in graph.outputs:
        if name not in defined:
            fail(f"graph output %{name} is never defined")
    return graph

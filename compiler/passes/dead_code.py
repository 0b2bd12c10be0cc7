"""Dead-code elimination: drop the nodes, constants and types no graph output depends on."""

from __future__ import annotations

from ember.ir.graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """`graph` without the nodes whose values no graph output needs (side-effect free IR:
    even a random-number node nothing reads goes)."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if live.intersection(node.outputs):
            kept.append(node)
            live.update(v for v in node.inputs if v)
    kept.reverse()
    if len(kept) == len(graph.nodes) and set(graph.constants) <= live:
        return graph
    used = live | set(graph.inputs) | {out for node in kept for out in node.outputs}
    return graph.replace(
        nodes=tuple(kept),
        types={k: v for k, v in graph.types.items() if k in used},
        constants={k: v for k, v in graph.constants.items() if k in live},
    )

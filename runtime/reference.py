"""The reference executor: runs a graph node by node with each op's numpy reference.

It is the oracle the compiled targets are checked against, and the `reference` target.
Values are dropped after their last use, so peak memory stays near the model's working set.
"""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.ops import get_op


class ReferenceExecutor:
    def __init__(self, graph: Graph):
        self.graph = graph
        self._ops = [get_op(node.op) for node in graph.nodes]
        last_use: dict[str, int] = {}
        for index, node in enumerate(graph.nodes):
            for name in node.inputs:
                last_use[name] = index
        keep = set(graph.outputs) | set(graph.constants)
        #: values to drop after each node
        self._dead_after = [
            [v for v in dict.fromkeys(node.inputs) if v and last_use.get(v) == i and v not in keep]
            for i, node in enumerate(graph.nodes)
        ]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(zip(self.graph.inputs, inputs))
        for node, op, dead in zip(self.graph.nodes, self._ops, self._dead_after):
            args = [env[name] if name else None for name in node.inputs]
            try:
                results = op.evaluate(node.attrs, args)
            except EmberError:
                raise
            except Exception as error:
                raise EmberError(
                    f"node {node.name or node.outputs[0]!r} ({node.op}) failed on its inputs "
                    f"{[None if a is None else f'{a.dtype}{list(a.shape)}' for a in args]}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            env.update(zip(node.outputs, results))
            for name in dead:
                del env[name]
        return [np.array(env[name], copy=True) for name in self.graph.outputs]

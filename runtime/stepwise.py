"""The stepwise executor: runs a compiled graph one kernel call at a time.

Every value gets a buffer allocated once (aligned, reused across runs); constants are bound at
load; a run copies the inputs in, calls each kernel on its argument buffers in graph order, and
returns copies of the outputs. It is target-agnostic: a kernel is any callable that writes its
outputs in place. (The one-call AOT executor and the static memory plan are a later step.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.graph import Graph, numpy_dtype

Kernel = Callable[..., None]
Allocator = Callable[[tuple[int, ...], np.dtype], np.ndarray]


class Step:
    __slots__ = ("kernel", "name", "op", "args")

    def __init__(self, kernel: Kernel, name: str, op: str, args: list[np.ndarray]):
        self.kernel = kernel
        self.name = name
        self.op = op
        self.args = args


class StepwiseExecutor:
    def __init__(self, graph: Graph, kernels: Sequence[Kernel], allocate: Allocator,
                 kernel_names: Sequence[str] | None = None,
                 set_num_threads: Callable[[int], None] | None = None):
        """`kernels[i]` runs `graph.nodes[i]`; its arguments are the node's present inputs,
        then its outputs."""
        self.graph = graph
        self._set_num_threads = set_num_threads
        buffers: dict[str, np.ndarray] = {}
        for name, array in graph.constants.items():
            buffers[name] = np.ascontiguousarray(array)
        for name in (*graph.inputs, *(o for n in graph.nodes for o in n.outputs)):
            if name not in buffers:
                t = graph.types[name]
                buffers[name] = allocate(t.shape, numpy_dtype(t.dtype))
        self._buffers = buffers
        names = kernel_names or [n.op for n in graph.nodes]
        self.steps = [
            Step(kernel, kernel_name, node.op,
                 [buffers[v] for v in node.inputs if v] + [buffers[v] for v in node.outputs])
            for node, kernel, kernel_name in zip(graph.nodes, kernels, names)
        ]

    def set_num_threads(self, count: int) -> None:
        if self._set_num_threads is not None:
            self._set_num_threads(count)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for name, array in zip(self.graph.inputs, inputs):
            self._buffers[name][...] = array
        for step in self.steps:
            step.kernel(*step.args)
        return [self._buffers[name].copy() for name in self.graph.outputs]

    def profile(self, inputs: list[np.ndarray], repeat: int = 5) -> list[tuple[str, str, float]]:
        """(kernel name, op, median ms) per step."""
        for name, array in zip(self.graph.inputs, inputs):
            self._buffers[name][...] = array
        rows = []
        for step in self.steps:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                step.kernel(*step.args)
                times.append((time.perf_counter() - start) * 1e3)
            rows.append((step.name, step.op, float(np.median(times))))
        return rows

"""The static memory plan: a graph plus its kernels -> a `Program` with every buffer placed.

Intermediate values live in one scratch arena. Planning walks the nodes in order with a pool of
storage tokens, as TVM's graph memory planner does: a node's outputs take free tokens (the
smallest free token at least as large, within a factor of `MATCH_RANGE`; else the largest
smaller one, grown; else a new token), and after the node every value whose last reader it was
returns its token. A node's outputs are placed before its inputs are released, so no kernel
ever reads and writes overlapping bytes (kernels assume their buffers do not alias). Tokens are
then laid out one after another, each aligned to 64 bytes; the arena is their sum.

A reshape (or identity) kernel call of a value that is not itself a graph output is an alias:
it shares its source's storage and runs no kernel. The source stays live until the alias's last
reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.compiler.kernels import KernelCall
from ember.ir.graph import Graph
from ember.runtime.program import ALIGN, Buffer, Program, Step, Storage

#: ops whose output is their input's bytes under another shape
ALIAS_OPS = frozenset({"reshape", "identity"})

#: a free token is reused for a request within this factor of its size (TVM's match_range)
MATCH_RANGE = 16


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


class _TokenPool:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.free: list[int] = []

    def take(self, size: int) -> int:
        fits = [t for t in self.free if size <= self.sizes[t] <= size * MATCH_RANGE]
        if fits:
            token = min(fits, key=lambda t: self.sizes[t])
        else:
            smaller = [t for t in self.free if self.sizes[t] < size
                       and self.sizes[t] * MATCH_RANGE >= size]
            if smaller:
                token = max(smaller, key=lambda t: self.sizes[t])
                self.sizes[token] = size
            else:
                self.sizes.append(size)
                return len(self.sizes) - 1
        self.free.remove(token)
        return token

    def give_back(self, token: int) -> None:
        self.free.append(token)


def plan_program(graph: Graph, calls: Sequence[KernelCall]) -> Program:
    """The program that runs `graph` by `calls` (compiler/kernels.py), with every
    intermediate value placed in the arena."""
    outputs = set(graph.outputs)
    storage: dict[str, Storage] = {}
    for index, name in enumerate(graph.inputs):
        storage[name] = Storage("input", index)
    params = tuple(graph.constants)
    for index, name in enumerate(params):
        storage[name] = Storage("param", index)

    # Aliases: a value -> the value whose bytes it is.
    root: dict[str, str] = {}
    for call in calls:
        if (len(call.ops) == 1 and call.ops[0] in ALIAS_OPS and len(call.inputs) == 1
                and call.outputs[0] not in outputs):
            source = call.inputs[0]
            root[call.outputs[0]] = root.get(source, source)

    last_use: dict[str, int] = {}
    for k, call in enumerate(calls):
        if call.outputs[0] in root:
            continue  # an alias reads nothing; its readers keep its source live
        for name in call.inputs:
            last_use[root.get(name, name)] = k

    output_slots: list[str] = []
    pool = _TokenPool()
    token_of: dict[str, int] = {}
    steps: list[Step] = []
    naive = 0
    for k, call in enumerate(calls):
        if call.outputs[0] in root:
            continue  # an alias: no kernel, no bytes
        for name in call.outputs:
            naive += _aligned(graph.types[name].nbytes)
            if name in outputs:
                storage[name] = Storage("output", len(output_slots))
                output_slots.append(name)
            else:
                token_of[name] = pool.take(_aligned(graph.types[name].nbytes))
        steps.append(Step(call.kernel, call.ops, call.inputs + call.outputs))
        for name in call.outputs:  # a value nobody reads is free at once
            if name in token_of and last_use.get(name, k) <= k:
                pool.give_back(token_of[name])
        for name in dict.fromkeys(call.inputs):
            source = root.get(name, name)
            if source in token_of and last_use[source] == k:
                pool.give_back(token_of[source])

    offsets, arena = [], 0
    for size in pool.sizes:
        offsets.append(arena)
        arena += _aligned(size)
    for name, token in token_of.items():
        storage[name] = Storage("arena", offsets[token])
    for alias, source in root.items():
        storage[alias] = storage[source]

    buffers = {}
    for name, place in storage.items():
        t = graph.types[name]
        buffers[name] = Buffer(name, tuple(t.shape), t.dtype, place)
    return Program(tuple(graph.inputs), tuple(graph.outputs), tuple(output_slots), params,
                   buffers, tuple(steps), arena, naive)

"""A compiled model's program: what to call, on which buffers, in which order.

The program is the part of a compiled model that is neither code nor parameters: every value's
shape, dtype and storage, and the kernel calls in order. It is plain data (JSON in a saved
artefact), so running a model needs no compiler: a backend's executor turns it into calls.

Storage kinds (`Storage.kind`):
- "input": the caller's array for graph input `index`;
- "output": a fresh array per run for output slot `index` (each distinct value a node computes
  that is a graph output);
- "param": constant `index` (weights), bound once at load;
- "arena": byte `index` of the run's scratch arena (the static memory plan: values whose
  lifetimes do not overlap share bytes).
Values that alias another (a reshape of an intermediate value) have their source's storage and
no step of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ember.ir.graph import TensorType

STORAGE_KINDS = ("input", "output", "param", "arena")

#: every arena buffer starts on this boundary (the kernels' alignment contract)
ALIGN = 64


@dataclasses.dataclass(frozen=True)
class Storage:
    kind: str
    index: int


@dataclasses.dataclass(frozen=True)
class Buffer:
    name: str
    shape: tuple[int, ...]
    dtype: str
    storage: Storage

    @property
    def nbytes(self) -> int:
        return TensorType(self.shape, self.dtype).nbytes


@dataclasses.dataclass(frozen=True)
class Step:
    """One kernel call: `kernel(*args)` on the named values (present inputs, then outputs);
    `ops` are the graph ops the kernel computes (one, or a fused group)."""

    kernel: str
    ops: tuple[str, ...]
    args: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Program:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]  # graph outputs in order; may repeat, may be inputs or params
    output_slots: tuple[str, ...]  # the values with "output" storage, in slot order
    params: tuple[str, ...]  # constant values in param order
    buffers: Mapping[str, Buffer]
    steps: tuple[Step, ...]
    arena_bytes: int
    naive_bytes: int  # what one buffer per intermediate value would take

    def storage(self, name: str) -> Storage:
        return self.buffers[name].storage

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "output_slots": list(self.output_slots),
            "params": list(self.params),
            "buffers": [[b.name, list(b.shape), b.dtype, b.storage.kind, b.storage.index]
                        for b in self.buffers.values()],
            "steps": [[s.kernel, list(s.ops), list(s.args)] for s in self.steps],
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Program:
        """The program `to_json` wrote; ValueError or KeyError or TypeError when the data is
        not one (the artefact loader turns these into ArtifactError)."""
        buffers = {}
        for name, shape, dtype, kind, index in data["buffers"]:
            if kind not in STORAGE_KINDS:
                raise ValueError(f"value {name!r} has unknown storage kind {kind!r}")
            buffers[name] = Buffer(name, tuple(int(d) for d in shape), dtype,
                                   Storage(kind, int(index)))
        program = Program(
            tuple(data["inputs"]), tuple(data["outputs"]), tuple(data["output_slots"]),
            tuple(data["params"]), buffers,
            tuple(Step(k, tuple(ops), tuple(args)) for k, ops, args in data["steps"]),
            int(data["arena_bytes"]), int(data["naive_bytes"]),
        )
        program.check()
        return program

    def check(self) -> None:
        """ValueError when the program refers to values it does not describe or puts an arena
        buffer outside the arena."""
        named = [*self.inputs, *self.outputs, *self.output_slots, *self.params,
                 *(a for s in self.steps for a in s.args)]
        unknown = sorted({n for n in named if n not in self.buffers})
        if unknown:
            raise ValueError(f"the program uses values it does not describe: {unknown[:5]}")
        for b in self.buffers.values():
            if b.storage.kind == "arena" and b.storage.index + b.nbytes > self.arena_bytes:
                raise ValueError(f"buffer {b.name!r} ends past the arena "
                                 f"({b.storage.index} + {b.nbytes} > {self.arena_bytes})")


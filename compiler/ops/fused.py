"""Fused kernels: one kernel for a group of graph nodes (compiler/passes/fusion.py's groups).

A group is an anchor (conv, matmul, a pooling, a reduction, ...) with elementwise or broadcast
producers feeding it and elementwise consumers after it (an epilogue: bias add, relu, residual
add), or a DAG of injective ops. Its kernel is written as TVM writes one:

- every node's compute is instantiated on the tensors of the nodes before it, so the group is
  one tensor-expression DAG from the group's external inputs to its last node's output;
- every stage but the anchor and the last is inlined into its readers (producers into the
  anchor's reads, epilogue steps into the final expression);
- the anchor's schedule template schedules the group's *last* tensor: templates that take an
  epilogue (conv, matmul: see `accumulator` in cpu/matmul.py) keep their loop structure and
  registers, and the epilogue is applied to each result as it is stored, not in another pass
  over memory. For injective groups the last node's template schedules the composed expression.

`FusedWorkload` names such a kernel (its key covers every node and the wiring between them), so
kernels cache and tune like single-op ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from ember.compiler.ops.registry import (
    Workload,
    checked_compute,
    get_schedule,
    schedule_and_lower,
)
from ember.compiler.space import Config
from ember.ir import te
from ember.ir.graph import Attrs, TensorType
from ember.ir.loop import PrimFunc
from ember.ir.visitor import substitute, transform
from ember.target import Target

#: where a node input comes from: ("arg", k) the kernel's k-th input, ("node", j, m) output m
#: of the group's j-th node, or None for an omitted optional input
Source = tuple | None


@dataclasses.dataclass(frozen=True)
class FusedWorkload:
    nodes: tuple[Workload, ...]
    sources: tuple[tuple[Source, ...], ...]  # per node, per input
    anchor: int  # position in `nodes` of the node whose template schedules the kernel

    @property
    def op(self) -> str:
        return "+".join(w.op for w in self.nodes)

    @property
    def attrs(self) -> Attrs:
        return self.nodes[self.anchor].attrs

    @property
    def input_types(self) -> tuple[TensorType, ...]:
        types: dict[int, TensorType] = {}
        for workload, sources in zip(self.nodes, self.sources):
            for source, t in zip(sources, workload.input_types):
                if source is not None and source[0] == "arg":
                    types[source[1]] = t
        return tuple(types[k] for k in range(len(types)))

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return self.nodes[-1].output_types

    @property
    def anchor_workload(self) -> Workload:
        return self.nodes[self.anchor]

    @property
    def key(self) -> str:
        text = repr([(w.op, tuple(w.attrs.items()), w.input_types, w.output_types)
                     for w in self.nodes] + [self.sources, self.anchor])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"fused[{' -> '.join(str(w) for w in self.nodes)}]"


def build_fused_tensors(workload: FusedWorkload
                        ) -> tuple[list[te.Tensor], list[list[te.Tensor]]]:
    """The kernel's input placeholders and every node's output tensors."""
    args = [te.placeholder(t.shape, t.dtype, name=f"in{k}")
            for k, t in enumerate(workload.input_types)]
    produced: list[list[te.Tensor]] = []
    for node, sources in zip(workload.nodes, workload.sources):
        inputs = [None if s is None else args[s[1]] if s[0] == "arg" else produced[s[1]][s[2]]
                  for s in sources]
        produced.append(checked_compute(node, inputs))
    return args, produced


def instantiate_fused(workload: FusedWorkload, family: str, target: Target,
                      config: Config | None = None, name: str | None = None) -> PrimFunc:
    """The final-form kernel of a fused group: params are its inputs, then its outputs."""
    name = name or f"fused_{workload.key}"
    args, produced = build_fused_tensors(workload)
    last = len(workload.nodes) - 1
    # The epilogue's steps are substituted into the last one, which then reads the anchor's
    # result directly: the form the anchor's template recognizes as an epilogue.
    epilogue = {id(t.op) for p in range(workload.anchor + 1, last) for t in produced[p]}
    if workload.anchor < last:
        # an anchor whose compute ends in its own elementwise stage (conv's bias add) joins
        # the epilogue: the template then finds the reduction right under the last stage
        epilogue |= {id(t.op) for t in produced[workload.anchor]
                     if isinstance(t.op, te.ComputeOp) and not t.op.reduce_axis}
    outputs = compose(produced[last], epilogue)
    anchor = workload.anchor_workload
    return schedule_and_lower(get_schedule(family, anchor.op), anchor, target, config, args,
                              outputs, name,
                              inline=[t for tensors in produced[:workload.anchor]
                                      for t in tensors])


def compose(outputs: Sequence[te.Tensor], inline: set[int]) -> list[te.Tensor]:
    """`outputs`' compute rebuilt with every read of an operation in `inline` (by id)
    replaced by that operation's body, transitively (elementwise stages: no reductions)."""
    if not inline:
        return list(outputs)
    bodies: dict[int, tuple] = {}

    def body_of(op: te.ComputeOp) -> tuple:
        if id(op) not in bodies:
            def rewrite(node):
                if isinstance(node, te.TensorRead) and id(node.tensor.op) in inline:
                    producer = node.tensor.op
                    source = body_of(producer)[node.tensor.value_index]
                    return substitute(source, {iv.var: i for iv, i in
                                               zip(producer.axis, node.indices)})
                return None

            bodies[id(op)] = tuple(transform(b, rewrite) for b in op.body)
        return bodies[id(op)]

    op = outputs[0].op
    return list(te.ComputeOp(op.name, op.axis, body_of(op), op.tag, op.attrs).outputs)

"""Op templates: how each graph-IR op becomes a kernel.

A template has two halves, registered separately, as TVM's topi separates them:

- a **compute** (target-independent): the op as tensor expressions over placeholders,
  `compute(workload, inputs) -> list[te.Tensor]`, registered with `@register_compute("conv")`;
- a **schedule** per target family ("cpu", later "cuda", "vta"): a class with
  `space(workload, target) -> ConfigSpace` (the knobs the autotuner searches, with a default
  chosen from the shape and the hardware) and `schedule(workload, config, sch, outputs, target)`,
  registered with `@register_schedule("cpu", "conv")`. An op without its own schedule uses its
  family's default for the op's fusion pattern (`register_schedule("cpu", Pattern.INJECTIVE)`).

Ops that tensor expressions cannot state (scatter, scans) register an **extern** instead:
`@register_extern("scatter_nd")` on `fn(workload, name) -> PrimFunc` building the lowered-form
loop IR directly (params: present inputs, then outputs), as TVM's `te.extern` does.

`instantiate(workload, family, target, config=None)` runs compute, schedule, lowering and the
loop-IR pipeline and returns a final-form PrimFunc for the backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ember.compiler.space import Config, ConfigSpace
from ember.errors import EmberError, IRError
from ember.ir import te
from ember.ir.graph import Attrs, Node, TensorType
from ember.ir.loop import PrimFunc
from ember.ir.lower import lower
from ember.ir.ops import Pattern, get_op
from ember.ir.passes import run_pipeline
from ember.ir.schedule import Schedule, create_schedule
from ember.target import Target


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one kernel computes: an op, its attributes and its input and output types.

    Workloads are hashable; equal workloads compile to the same kernel (the compile cache and
    tuning records are keyed by `key`)."""

    op: str
    attrs: Attrs
    input_types: tuple[TensorType | None, ...]
    output_types: tuple[TensorType, ...]

    @staticmethod
    def of(node: Node, types: Any) -> Workload:
        return Workload(node.op, node.attrs,
                        tuple(types[i] if i else None for i in node.inputs),
                        tuple(types[o] for o in node.outputs))

    @property
    def key(self) -> str:
        text = repr((self.op, tuple(self.attrs.items()), self.input_types, self.output_types))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        ins = ", ".join(str(t) if t else "_" for t in self.input_types)
        return f"{self.op}({ins}){{{self.attrs}}}"


ComputeFn = Callable[[Workload, Sequence["te.Tensor | None"]], Sequence["te.Tensor"]]


class ScheduleTemplate(Protocol):
    """A schedule template. It may also define `function_attrs(workload) -> dict`, attributes
    of the generated function for the backend (e.g. {"fast_math": ("contract",)} for ops whose
    semantics allow fusing a multiply and an add into one FMA), and `finish_lowered(func) ->
    PrimFunc`, a rewrite of its final-form loops that schedules cannot state (the injective
    template turns lane-uniform selects into branches)."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace: ...

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None: ...


ExternFn = Callable[[Workload, str], PrimFunc]

class ContractsToFMA:
    """For templates of sums of products (conv, matmul): contracting a*b + c into one fused
    multiply-add (one rounding instead of two) is within these ops' semantics, and faster."""

    def function_attrs(self, workload: Workload) -> dict[str, Any]:
        return {"fast_math": ("contract",)}


_COMPUTES: dict[str, ComputeFn] = {}
_EXTERNS: dict[str, ExternFn] = {}
_SCHEDULES: dict[tuple[str, str | Pattern], ScheduleTemplate] = {}


def register_compute(*ops: str) -> Callable[[ComputeFn], ComputeFn]:
    def register(fn: ComputeFn) -> ComputeFn:
        for op in ops:
            if op in _COMPUTES:
                raise ValueError(f"two computes for op {op!r}")
            _COMPUTES[op] = fn
        return fn

    return register


def register_extern(*ops: str) -> Callable[[ExternFn], ExternFn]:
    def register(fn: ExternFn) -> ExternFn:
        for op in ops:
            if op in _EXTERNS or op in _COMPUTES:
                raise ValueError(f"op {op!r} already has a template")
            _EXTERNS[op] = fn
        return fn

    return register


def has_template(op: str) -> bool:
    return op in _COMPUTES or op in _EXTERNS


def has_compute(op: str) -> bool:
    """Whether `op` is stated as tensor expressions (an extern's loops cannot be fused)."""
    return op in _COMPUTES


def register_schedule(family: str, *keys: str | Pattern):
    """Register a schedule template class (instantiated once) for ops or fusion patterns."""

    def register(cls: type) -> type:
        instance = cls()
        for key in keys:
            if (family, key) in _SCHEDULES:
                raise ValueError(f"two {family} schedules for {key!r}")
            _SCHEDULES[(family, key)] = instance
        return cls

    return register


def get_compute(op: str) -> ComputeFn:
    if op not in _COMPUTES:
        raise EmberError(f"no compute template for op {op!r}; every registered op needs one "
                         f"(see ember/compiler/ops/)")
    return _COMPUTES[op]


def get_schedule(family: str, op: str) -> ScheduleTemplate:
    for key in (op, get_op(op).pattern):
        if (family, key) in _SCHEDULES:
            return _SCHEDULES[(family, key)]
    raise EmberError(f"no {family} schedule for op {op!r} or its pattern "
                     f"{get_op(op).pattern.name}")


def computes() -> dict[str, ComputeFn]:
    return dict(_COMPUTES)


def make_placeholders(workload: Workload) -> list[te.Tensor | None]:
    return [te.placeholder(t.shape, t.dtype, name=f"in{k}") if t is not None else None
            for k, t in enumerate(workload.input_types)]


def build_tensors(workload: Workload) -> tuple[list[te.Tensor | None], list[te.Tensor]]:
    """Placeholders and the compute's outputs, checked against the workload's output types."""
    inputs = make_placeholders(workload)
    return inputs, checked_compute(workload, inputs)


def checked_compute(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    """The op's compute on `inputs`, checked against the workload's inferred output types."""
    outputs = list(get_compute(workload.op)(workload, inputs))
    got = [TensorType(t.static_shape, t.dtype) for t in outputs]
    if got != list(workload.output_types):
        raise IRError(f"the compute of {workload} gives {[str(t) for t in got]}, but shape "
                      f"inference gives {[str(t) for t in workload.output_types]}")
    return outputs


def instantiate(workload: Workload, family: str, target: Target,
                config: Config | None = None, name: str | None = None) -> PrimFunc:
    """The final-form kernel of `workload`: params are the present inputs, then the outputs."""
    name = name or f"{workload.op}_{workload.key}"
    if workload.op in _EXTERNS:
        return run_pipeline(_EXTERNS[workload.op](workload, name))
    inputs, outputs = build_tensors(workload)
    return schedule_and_lower(get_schedule(family, workload.op), workload, target, config,
                              [t for t in inputs if t is not None], outputs, name)


def schedule_and_lower(template: ScheduleTemplate, workload: Workload, target: Target,
                       config: Config | None, inputs: Sequence[te.Tensor],
                       outputs: Sequence[te.Tensor], name: str,
                       inline: Sequence[te.Tensor] = ()) -> PrimFunc:
    """`template`'s schedule (at `config`, else its space's default) of the computes of
    `outputs`, with the `inline` stages inlined first, lowered to a final-form kernel whose
    params are `inputs`, then `outputs`."""
    config = config if config is not None else template.space(workload, target).default
    sch = create_schedule(list(outputs))
    for tensor in inline:
        sch[tensor].compute_inline()
    template.schedule(workload, config, sch, outputs, target)
    func = lower(sch, [*inputs, *outputs], name)
    function_attrs = getattr(template, "function_attrs", None)
    if function_attrs is not None:
        func = func.replace(attrs=tuple(sorted(function_attrs(workload).items())))
    finish = getattr(template, "finish_lowered", None)
    return run_pipeline(func) if finish is None else finish(run_pipeline(func))

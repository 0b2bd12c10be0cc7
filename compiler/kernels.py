"""A graph's kernels: one per fused group (or per node), shared by equal workloads, lowered on
demand.

`GraphKernels` tells a backend which kernel calls run the graph (`calls`, in order: the kernel,
the graph ops it computes, the values it reads and writes), what each kernel's identity is (its
workload, template family and the ember build that lowers it: equal identities give equal code,
so backends can cache machine code by it), and how to lower a kernel it does not have. Lowered
kernels are also cached in memory by (kernel name, family, target, config).

Tuning records reach the kernels here: `graph_kernels(..., configs=...)` takes the best
recorded knob values per kernel name, checks them against the kernel's space, lowers the kernel
at that config and makes the config part of the kernel's identity, so a disk cache never hands
out untuned code for a tuned kernel or the other way round. `TuningReport` says which tunable
kernels got a record.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ember.compiler.ops import Workload, instantiate
from ember.compiler.ops.fused import FusedWorkload, instantiate_fused
from ember.compiler.ops.registry import get_schedule, has_compute
from ember.compiler.space import Config, ConfigSpace, SpaceError
from ember.ir.graph import Graph, Node
from ember.ir.loop import PrimFunc
from ember.ir.ops import Pattern, get_op
from ember.target import Target

#: (kernel name, family, target, config values or None) -> lowered kernel. Keyed by name, not
#: by workload: workloads compare attributes by value (0 == 0.0) but their keys, which name
#: kernels, by repr.
_LOWERED: dict[tuple[str, str, Target, tuple | None], PrimFunc] = {}

#: folders whose code decides what a kernel compiles to
_CODE_FOLDERS = ("ir", "compiler", "backends")


@functools.cache
def build_id() -> str:
    """A hash of ember's compiler and backend sources: cached code from another build of
    ember never counts as a hit."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in _CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class KernelCall:
    """One call of a kernel: params are `inputs` (present ones, in order), then `outputs`."""

    kernel: str
    ops: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class TuningWarning(UserWarning):
    """A tuning record that could not be applied, or tunable kernels compiled without one."""


@dataclasses.dataclass(frozen=True)
class TuningReport:
    """Which of a graph's tunable kernels (space of more than one config) were compiled at a
    tuning record's config. `skipped` names kernels whose record no longer fits the template's
    space (they are also `untuned`), with the reason."""

    tuned: tuple[str, ...]
    untuned: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def tunable(self) -> int:
        return len(self.tuned) + len(self.untuned)

    def __str__(self) -> str:
        text = (f"tuning records applied to {len(self.tuned)} of {self.tunable} tunable "
                f"kernel(s); {len(self.untuned)} had none (template defaults)")
        if self.skipped:
            text += f"; {len(self.skipped)} record(s) skipped as no longer fitting the space"
        return text


@dataclasses.dataclass(frozen=True)
class GraphKernels:
    calls: tuple[KernelCall, ...]
    identities: Mapping[str, str]
    lower: Callable[[str], PrimFunc]
    #: kernel name -> what it computes
    workloads: Mapping[str, Workload | FusedWorkload] = dataclasses.field(default_factory=dict)
    #: kernel name -> the tuning record's config it is lowered at (absent: template default)
    configs: Mapping[str, Config] = dataclasses.field(default_factory=dict)
    #: set when records were given (graph_kernels' `configs`), else None
    tuning: TuningReport | None = None

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(call.kernel for call in self.calls))


def kernel_name(workload: Workload | FusedWorkload) -> str:
    if isinstance(workload, FusedWorkload):
        return f"fused_{'_'.join(w.op for w in workload.nodes)[:48]}_{workload.key}"
    return f"{workload.op}_{workload.key}"


def anchor_workload(workload: Workload | FusedWorkload) -> Workload:
    """The workload whose schedule template schedules the kernel (and owns its space)."""
    return workload.anchor_workload if isinstance(workload, FusedWorkload) else workload


def kernel_space(workload: Workload | FusedWorkload, family: str, target: Target
                 ) -> ConfigSpace:
    """The config space of a kernel: its anchor template's (one config for an extern)."""
    anchor = anchor_workload(workload)
    if not has_compute(anchor.op):
        return ConfigSpace()
    return get_schedule(family, anchor.op).space(anchor, target)


def lower_kernel(workload: Workload | FusedWorkload, family: str, target: Target,
                 config: Config | None = None) -> PrimFunc:
    """The final-form kernel of `workload`, at `config` (default: the template's default)."""
    key = (kernel_name(workload), family, target, None if config is None else config.values)
    if key not in _LOWERED:
        make = instantiate_fused if isinstance(workload, FusedWorkload) else instantiate
        _LOWERED[key] = make(workload, family, target, config=config,
                             name=kernel_name(workload))
    return _LOWERED[key]


def _recorded_configs(workloads: Mapping[str, Workload | FusedWorkload], family: str,
                      target: Target, configs: Mapping[str, Mapping[str, Any]]
                      ) -> tuple[dict[str, Config], TuningReport]:
    """The recorded configs that fit their kernel's space, and the report of what applied."""
    chosen: dict[str, Config] = {}
    untuned, skipped = [], []
    for name, workload in workloads.items():
        space = kernel_space(workload, family, target)
        if len(space) <= 1:
            continue
        if name not in configs:
            untuned.append(name)
            continue
        try:
            values = dict(configs[name])
            extra = sorted(set(values) - set(space.knobs))
            if extra:
                raise SpaceError(f"the template has no knob(s) {extra}")
            chosen[name] = space.from_values(values)
        except SpaceError as error:
            warnings.warn(f"tuning record for kernel {name} ({workload}) skipped: its config "
                          f"no longer fits the template's space ({error}); the kernel uses "
                          f"the template default. Re-tune it to get a record.",
                          TuningWarning, stacklevel=3)
            untuned.append(name)
            skipped.append((name, str(error)))
    return chosen, TuningReport(tuple(chosen), tuple(untuned), tuple(skipped))


def graph_kernels(graph: Graph, family: str, target: Target,
                  groups: Sequence[Sequence[int]] | None = None,
                  configs: Mapping[str, Mapping[str, Any]] | None = None) -> GraphKernels:
    """The kernel calls that run `graph`: one per group of node indices (each group's nodes
    in order, its last node's outputs the only values it writes), or one per node.

    `configs` (kernel name -> knob values, the best tuning record of each kernel) lowers
    those kernels at the recorded config; the result's `tuning` then reports what applied."""
    groups = [[k] for k in range(len(graph.nodes))] if groups is None else groups
    workloads: dict[str, Workload | FusedWorkload] = {}
    calls = []
    for group in groups:
        for part in _kernel_groups(graph, family, group):
            workload, inputs = group_workload(graph, part)
            name = kernel_name(workload)
            workloads.setdefault(name, workload)
            nodes = [graph.nodes[k] for k in part]
            calls.append(KernelCall(name, tuple(n.op for n in nodes), inputs,
                                    tuple(nodes[-1].outputs)))
    chosen: dict[str, Config] = {}
    report = None
    if configs is not None:
        chosen, report = _recorded_configs(workloads, family, target, configs)
    identities = {name: _identity(family, workload, chosen.get(name))
                  for name, workload in workloads.items()}
    return GraphKernels(tuple(calls), identities,
                        lambda name: lower_kernel(workloads[name], family, target,
                                                  chosen.get(name)),
                        workloads, chosen, report)


def _identity(family: str, workload: Workload | FusedWorkload, config: Config | None) -> str:
    identity = f"{build_id()}|{family}|{workload!r}"
    # untuned kernels keep their identity (and their cached code); a tuned one adds its knobs
    return identity if config is None else f"{identity}|config={config.values!r}"


def _anchor(graph: Graph, group: Sequence[int]) -> int:
    """The position in `group` of its anchor: its one node that is not at most injective,
    else its last."""
    for position, k in enumerate(group):
        if get_op(graph.nodes[k].op).pattern > Pattern.INJECTIVE:
            return position
    return len(group) - 1


def _kernel_groups(graph: Graph, family: str, group: Sequence[int]) -> list[list[int]]:
    """`group` as the kernels that compute it: itself, or, where a template cannot take part
    of it (an extern op; an epilogue after an anchor whose template takes none), the anchor's
    part and the epilogue as two kernels, or one kernel per node."""
    group = list(group)
    if len(group) == 1:
        return [group]
    if not all(has_compute(graph.nodes[k].op) for k in group):
        return [[k] for k in group]
    anchor = _anchor(graph, group)
    template = get_schedule(family, graph.nodes[group[anchor]].op)
    if anchor < len(group) - 1 and not getattr(template, "takes_epilogue", False):
        return [group[:anchor + 1], group[anchor + 1:]]
    return [group]


def group_workload(graph: Graph, group: Sequence[int]
                   ) -> tuple[Workload | FusedWorkload, tuple[str, ...]]:
    """The workload of the kernel computing `group`, and the values it reads in param order."""
    nodes: list[Node] = [graph.nodes[k] for k in group]
    if len(nodes) == 1:
        node = nodes[0]
        return Workload.of(node, graph.types), tuple(v for v in node.inputs if v)
    made = {v: (j, m) for j, node in enumerate(nodes) for m, v in enumerate(node.outputs)}
    args: dict[str, int] = {}
    sources = []
    for node in nodes:
        node_sources = []
        for value in node.inputs:
            if not value:
                node_sources.append(None)
            elif value in made:
                node_sources.append(("node", *made[value]))
            else:
                node_sources.append(("arg", args.setdefault(value, len(args))))
        sources.append(tuple(node_sources))
    workload = FusedWorkload(tuple(Workload.of(n, graph.types) for n in nodes), tuple(sources),
                             _anchor(graph, group))
    return workload, tuple(args)


__all__ = ["GraphKernels", "KernelCall", "TuningReport", "TuningWarning", "anchor_workload",
           "build_id", "graph_kernels", "kernel_name", "kernel_space", "lower_kernel"]

"""`ember.compile`: model -> graph IR -> target backend -> runtime Module.

With `records=` (a tuning log or a list of records: ember/autotune/records.py) the best
record per kernel for the target and CPU picks that kernel's config; `module.tuning` (a
`compiler.kernels.TuningReport`) says how many tunable kernels had a record.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from ember.backends import get_backend
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.frontend.onnx.importer import ModelLike, load_model
from ember.compiler.host_program import build_host_module, needs_host_program
from ember.compiler.kernels import GraphKernels, TuningWarning, graph_kernels
from ember.errors import SpecializationNeeded
from ember.ir.graph import Graph
from ember.ir.verify import verify
from ember.runtime.module import Module
from ember.target import Target

DEFAULT_TARGET = "llvm"

#: 0: no graph passes; 1: simplify; 2: + constant folding and operator fusion; 3: + the
#: blocked NCHW[x]c layout for convolutions (ResNet-50: 20 ms at level 3, 43 ms at level 2)
DEFAULT_OPT_LEVEL = 3

#: kernel name -> knob values: the configs chosen from tuning records
KernelConfigs = Mapping[str, Mapping[str, Any]]

#: a tuning log's path, or records (ember.autotune.records.Record)
RecordsLike = str | os.PathLike | Iterable[Any]

_log = logging.getLogger("ember")


def compile(
    model: ModelLike | Graph,
    target: str | Target = DEFAULT_TARGET,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
    opt_level: int = DEFAULT_OPT_LEVEL,
    records: RecordsLike | None = None,
) -> Module:
    """Compile a model for a target.

    Args:
        model: a path to an .onnx file, its bytes, an onnx.ModelProto, or an ember Graph.
        target: a target string ("llvm", "llvm -mcpu=skylake-avx512", "reference") or an
            `ember.Target`.
        input_shapes: static shapes for inputs with symbolic dimensions, by input name.
        num_threads: threads for parallel loops (default: one per core).
        opt_level: graph optimization level (compiler/passes): 0 none, 1 simplify, 2 +
            constant folding and operator fusion, 3 (the default) + blocked conv layout.
        records: tuning records (`ember tune --log tune.jsonl`): the log's path or a list of
            `ember.autotune.Record`. Each kernel with a record for this target and CPU is
            compiled at its fastest recorded config; a record that no longer fits its
            template's space is skipped with a warning. `module.tuning` reports how many
            tunable kernels had a record (a warning names the count that had none).

    Returns:
        a `Module`; `module.run({"input": x})` runs it. When a shape-deciding input of a node
        (Reshape's shape, Slice's starts, ...) is computed from graph inputs, the module
        compiles the model at run time, once per distinct value of those inputs (cached);
        its `outputs` then show None for dimensions only known at run time.
    """
    target = Target.parse(target)
    backend = get_backend(target)
    backend.check_target(target)
    configs = _configs_from_records(records, target)
    if isinstance(model, Graph):
        return _build(verify(model), target, num_threads, opt_level, configs)
    proto = load_model(model)
    if needs_host_program(proto):
        # Control flow, sequences or optionals: tensor segments compile, the host runs the rest.
        if configs is not None:
            warnings.warn("tuning records are not applied to models with control flow, "
                          "sequences or optionals (their tensor segments compile untuned)",
                          TuningWarning, stacklevel=2)
        return build_host_module(proto, target, input_shapes, num_threads)
    try:
        return compile_static(proto, input_shapes or {}, target, num_threads, opt_level,
                              configs)
    except SpecializationNeeded as needed:
        # A shape-deciding value comes from graph inputs: compile per value, at run time.
        from ember.compiler.specialize import specializing_module

        # (its `tuning` stays None: records are applied per variant, at run time)
        return specializing_module(proto, needed.inputs, str(target), input_shapes,
                                   num_threads, opt_level, configs)


def _configs_from_records(records: RecordsLike | None, target: Target) -> KernelConfigs | None:
    """Kernel name -> knob values of the best record per kernel (None: no records given)."""
    if records is None:
        return None
    if get_backend(target).TEMPLATE_FAMILY is None:
        return {}
    from ember.autotune.records import records_for_compile

    return records_for_compile(records, target)


def compile_static(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                   target: str | Target, num_threads: int | None = None,
                   opt_level: int = DEFAULT_OPT_LEVEL,
                   configs: KernelConfigs | None = None) -> Module:
    """Compile a model whose shapes are all static once `input_shapes` are pinned (else
    SpecializationNeeded). `configs`: kernel name -> knob values from tuning records."""
    target = Target.parse(target)
    return _build(import_onnx(proto, input_shapes), target, num_threads, opt_level, configs)


def plan_kernels(graph: Graph, target: Target, opt_level: int = DEFAULT_OPT_LEVEL,
                 configs: KernelConfigs | None = None
                 ) -> tuple[Graph, GraphKernels | None]:
    """The graph after `opt_level`'s passes, and the kernel calls that run it (one per fused
    group from level 2; None for a target that runs no kernels). `configs` (kernel name ->
    knob values, from tuning records) lowers those kernels at their recorded config."""
    from ember.compiler.passes import fuse, optimize

    graph = optimize(graph, opt_level)
    backend = get_backend(target)
    if backend.TEMPLATE_FAMILY is None:
        return graph, None
    groups = [group.nodes for group in fuse(graph).groups] if opt_level >= 2 else None
    return graph, graph_kernels(graph, backend.TEMPLATE_FAMILY, target, groups, configs)


def _build(graph: Graph, target: Target, num_threads: int | None, opt_level: int,
           configs: KernelConfigs | None = None) -> Module:
    graph, kernels = plan_kernels(graph, target, opt_level, configs)
    module = get_backend(target).build(graph, target, kernels, num_threads=num_threads)
    report = kernels.tuning if kernels is not None else None
    module.tuning = report
    if report is not None:
        if report.untuned:
            warnings.warn(f"{report}: compile with records of every kernel for the best "
                          f"speed (`ember tune`)", TuningWarning, stacklevel=4)
        else:
            _log.info("%s", report)
    return module

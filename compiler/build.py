"""`ember.compile`: model -> graph IR -> target backend -> runtime Module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from ember.backends import get_backend
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.frontend.onnx.importer import ModelLike, load_model
from ember.compiler.host_program import build_host_module, needs_host_program
from ember.compiler.kernels import GraphKernels, graph_kernels
from ember.errors import SpecializationNeeded
from ember.ir.graph import Graph
from ember.ir.verify import verify
from ember.runtime.module import Module
from ember.target import Target

DEFAULT_TARGET = "llvm"

#: 0: no graph passes; 1: simplify; 2: + constant folding and operator fusion; 3: + the
#: blocked NCHW[x]c layout for convolutions (ResNet-50: 20 ms at level 3, 43 ms at level 2)
DEFAULT_OPT_LEVEL = 3


def compile(
    model: ModelLike | Graph,
    target: str | Target = DEFAULT_TARGET,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
    opt_level: int = DEFAULT_OPT_LEVEL,
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

    Returns:
        a `Module`; `module.run({"input": x})` runs it. When a shape-deciding input of a node
        (Reshape's shape, Slice's starts, ...) is computed from graph inputs, the module
        compiles the model at run time, once per distinct value of those inputs (cached);
        its `outputs` then show None for dimensions only known at run time.
    """
    target = Target.parse(target)
    backend = get_backend(target)
    backend.check_target(target)
    if isinstance(model, Graph):
        return _build(verify(model), target, num_threads, opt_level)
    proto = load_model(model)
    if needs_host_program(proto):
        # Control flow, sequences or optionals: tensor segments compile, the host runs the rest.
        return build_host_module(proto, target, input_shapes, num_threads)
    try:
        return compile_static(proto, input_shapes or {}, target, num_threads, opt_level)
    except SpecializationNeeded as needed:
        # A shape-deciding value comes from graph inputs: compile per value, at run time.
        from ember.compiler.specialize import specializing_module

        return specializing_module(proto, needed.inputs, str(target), input_shapes,
                                   num_threads, opt_level)


def compile_static(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                   target: str | Target, num_threads: int | None = None,
                   opt_level: int = DEFAULT_OPT_LEVEL) -> Module:
    """Compile a model whose shapes are all static once `input_shapes` are pinned (else
    SpecializationNeeded)."""
    target = Target.parse(target)
    return _build(import_onnx(proto, input_shapes), target, num_threads, opt_level)


def plan_kernels(graph: Graph, target: Target, opt_level: int = DEFAULT_OPT_LEVEL
                 ) -> tuple[Graph, GraphKernels | None]:
    """The graph after `opt_level`'s passes, and the kernel calls that run it (one per fused
    group from level 2; None for a target that runs no kernels)."""
    from ember.compiler.passes import fuse, optimize

    graph = optimize(graph, opt_level)
    backend = get_backend(target)
    if backend.TEMPLATE_FAMILY is None:
        return graph, None
    groups = [group.nodes for group in fuse(graph).groups] if opt_level >= 2 else None
    return graph, graph_kernels(graph, backend.TEMPLATE_FAMILY, target, groups)


def _build(graph: Graph, target: Target, num_threads: int | None, opt_level: int) -> Module:
    graph, kernels = plan_kernels(graph, target, opt_level)
    return get_backend(target).build(graph, target, kernels, num_threads=num_threads)

"""`ember.compile`: model -> graph IR -> target backend -> runtime Module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from ember.backends import get_backend
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.frontend.onnx.importer import ModelLike, load_model
from ember.errors import SpecializationNeeded
from ember.ir.graph import Graph
from ember.ir.verify import verify
from ember.runtime.module import Module
from ember.target import Target

DEFAULT_TARGET = "llvm"


def compile(
    model: ModelLike | Graph,
    target: str | Target = DEFAULT_TARGET,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
) -> Module:
    """Compile a model for a target.

    Args:
        model: a path to an .onnx file, its bytes, an onnx.ModelProto, or an ember Graph.
        target: a target string ("llvm", "llvm -mcpu=skylake-avx512", "reference") or an
            `ember.Target`.
        input_shapes: static shapes for inputs with symbolic dimensions, by input name.
        num_threads: threads for parallel loops (default: one per core).

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
        return _build(verify(model), target, num_threads)
    proto = load_model(model)

    def compile_static(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> Module:
        return _build(import_onnx(proto, shapes), target, num_threads)

    try:
        return compile_static(proto, input_shapes or {})
    except SpecializationNeeded as needed:
        # A shape-deciding value comes from graph inputs: compile per value, at run time.
        from ember.compiler.specialize import specializing_module

        return specializing_module(proto, needed.inputs, compile_static, input_shapes,
                                   str(target), num_threads)


def _build(graph: Graph, target: Target, num_threads: int | None) -> Module:
    backend = get_backend(target)
    kernels = None
    if backend.TEMPLATE_FAMILY is not None:
        from ember.compiler.kernels import graph_kernels

        kernels = graph_kernels(graph, backend.TEMPLATE_FAMILY, target)
    return backend.build(graph, target, kernels, num_threads=num_threads)

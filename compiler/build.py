"""`ember.compile`: model -> graph IR -> target backend -> runtime Module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ember.backends import get_backend
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.frontend.onnx.importer import ModelLike
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
        a `Module`; `module.run({"input": x})` runs it.
    """
    target = Target.parse(target)
    backend = get_backend(target)
    backend.check_target(target)
    graph = verify(model) if isinstance(model, Graph) else import_onnx(model, input_shapes)
    kernels = None
    if backend.TEMPLATE_FAMILY is not None:
        from ember.compiler.kernels import graph_kernels

        kernels = graph_kernels(graph, backend.TEMPLATE_FAMILY, target)
    return backend.build(graph, target, kernels, num_threads=num_threads)

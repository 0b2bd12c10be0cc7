"""Run-time specialization: modules for models whose shapes depend on input values.

When a shape-deciding input of a node (Reshape's shape, Slice's starts, Range's limit, a
reduction's axes) is computed from graph inputs, the model has no static shapes, and the
frontend raises `SpecializationNeeded` naming those inputs. `ember.compile` then returns a
module whose executor waits for the values: each run looks the values of the specialized
inputs up in a cache (by dtype, shape and bytes) and, on a miss, compiles the model with those
inputs turned into initializers. The compiled variant then runs on the remaining inputs.

A variant may need more inputs specialized (a second shape-deciding value, from another
input): the set grows to the union and the lookup starts over. Configs from tuning records
(`ember.compile(..., records=...)`) travel in the module's source, so every variant, also those
a saved and loaded module compiles, gets them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.compiler.build import DEFAULT_OPT_LEVEL, KernelConfigs, compile_static
from ember.compiler.frontend.onnx.importer import elem_dtype, input_type
from ember.errors import FrontendError, InputError, SpecializationNeeded
from ember.runtime.module import Module, TensorSpec
from ember.runtime.specialized import SpecializingExecutor, VariantCompiler


def with_initializers(model: onnx.ModelProto, values: Mapping[str, np.ndarray]
                      ) -> onnx.ModelProto:
    """A copy of `model` in which the graph inputs named in `values` are initializers."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    if proto.ir_version >= 4:  # before IR 4 every initializer must also be a graph input
        kept = [v for v in proto.graph.input if v.name not in values]
        del proto.graph.input[:]
        proto.graph.input.extend(kept)
    for name, array in values.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return proto


def variant_compiler(source: Mapping[str, Any]) -> VariantCompiler:
    """Compiles `source["model"]` (ONNX bytes) with given inputs' values turned into
    initializers, for `source["target"]` with the other inputs pinned to
    `source["input_shapes"]`. SpecializationNeeded passes through (the executor grows its set);
    a model that cannot compile for the values is the caller's InputError."""
    model = onnx.load_from_string(source["model"])
    input_shapes = source.get("input_shapes") or {}
    configs = _configs(source.get("configs"))

    def compile_variant(fixed: Mapping[str, np.ndarray]) -> Module:
        shapes = {k: v for k, v in input_shapes.items() if k not in fixed}
        try:
            return compile_static(with_initializers(model, fixed), shapes, source["target"],
                                  source.get("num_threads"),
                                  source.get("opt_level", DEFAULT_OPT_LEVEL), configs)
        except SpecializationNeeded:
            raise
        except FrontendError as error:
            shown = ", ".join(f"{n}={v.tolist()!r}" for n, v in fixed.items())
            raise InputError(
                f"the model cannot be compiled for the input values {shown}: {error}"
            ) from None

    return compile_variant


def _configs(saved: Mapping[str, Mapping[str, Any]] | None) -> KernelConfigs | None:
    """Kernel configs as the source keeps them, with the tuples (split factors) that a saved
    module's JSON turned into lists restored."""
    if saved is None:
        return None

    def restore(value: Any) -> Any:
        return tuple(restore(v) for v in value) if isinstance(value, list) else value

    return {kernel: {knob: restore(v) for knob, v in values.items()}
            for kernel, values in saved.items()}


def _output_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    try:
        dtype = elem_dtype(tensor.elem_type, f"graph output {value.name!r}")
    except FrontendError:
        dtype = "unknown"
    if not tensor.HasField("shape"):
        return TensorSpec(value.name, None, dtype)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, dims, dtype)


def specializing_module(model: onnx.ModelProto, specialized: Iterable[str], target: str,
                        input_shapes: Mapping[str, Sequence[int]] | None,
                        num_threads: int | None = None,
                        opt_level: int = DEFAULT_OPT_LEVEL,
                        configs: KernelConfigs | None = None) -> Module:
    """A module that compiles `model` once per distinct value of the `specialized` inputs.

    Its signature lists every graph input with its declared (or pinned) shape, and every output
    with its declared shape: None where a dimension is only known at run time. `configs`
    (kernel name -> knob values, from tuning records) apply to every variant.
    """
    input_shapes = {k: list(v) for k, v in (input_shapes or {}).items()}
    initializers = {init.name for init in model.graph.initializer}
    initializers |= {sparse.values.name for sparse in model.graph.sparse_initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        t = input_type(value, input_shapes.get(value.name))
        inputs.append(TensorSpec(value.name, t.shape, t.dtype))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        inferred = model
    outputs = [_output_spec(v) for v in inferred.graph.output]
    source = {"model": model.SerializeToString(), "target": target,
              "input_shapes": input_shapes, "num_threads": num_threads, "opt_level": opt_level}
    if configs is not None:
        source["configs"] = {kernel: dict(values) for kernel, values in configs.items()}
    executor = SpecializingExecutor([s.name for s in inputs], specialized,
                                    variant_compiler(source), source)
    if num_threads is not None:
        executor.set_num_threads(num_threads)
    return Module(executor, inputs, outputs, target)

"""Run-time specialization: modules for models whose shapes depend on input values.

When a shape-deciding input of a node (Reshape's shape, Slice's starts, Range's limit, a
reduction's axes) is computed from graph inputs, the model has no static shapes, and the
frontend raises `SpecializationNeeded` naming those inputs. `ember.compile` then returns a
module whose executor waits for the values: each run looks the values of the specialized
inputs up in a cache (by dtype, shape and bytes) and, on a miss, compiles the model with those
inputs turned into initializers. The compiled variant then runs on the remaining inputs.

A variant may need more inputs specialized (a second shape-deciding value, from another
input): the set grows to the union and the lookup starts over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.compiler.frontend.onnx.importer import elem_dtype, input_type
from ember.errors import FrontendError, InputError, SpecializationNeeded
from ember.ir.graph import dtype_name
from ember.runtime.module import Module, TensorSpec

#: compiles a model with static shapes (input_shapes pinned, by name); may raise
#: SpecializationNeeded when the model still needs run-time values
StaticCompiler = Callable[[onnx.ModelProto, Mapping[str, Sequence[int]]], Module]


def _value_key(array: np.ndarray) -> tuple[Any, ...]:
    if array.dtype == object:  # strings: bytes of an object array are pointers
        return (dtype_name(array.dtype), array.shape, tuple(array.ravel().tolist()))
    return (dtype_name(array.dtype), array.shape, np.ascontiguousarray(array).tobytes())


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


class SpecializingExecutor:
    """Runs the variant compiled for the values of the specialized inputs."""

    def __init__(self, model: onnx.ModelProto, input_names: Sequence[str],
                 specialized: Iterable[str], compile_static: StaticCompiler,
                 input_shapes: Mapping[str, Sequence[int]]):
        self.model = model
        self.input_names = list(input_names)
        self.specialized: set[str] = set(specialized)
        self.compilations = 0
        self._compile_static = compile_static
        self._input_shapes = dict(input_shapes)
        self._cache: dict[tuple[Any, ...], Module] = {}
        self._num_threads: int | None = None

    def variant(self, values: Mapping[str, np.ndarray]) -> Module:
        """The module compiled for these input values (cached)."""
        while True:
            names = sorted(self.specialized)
            key = tuple((name, *_value_key(values[name])) for name in names)
            module = self._cache.get(key)
            if module is not None:
                return module
            fixed = {name: values[name] for name in names}
            shapes = {k: v for k, v in self._input_shapes.items() if k not in fixed}
            try:
                module = self._compile_static(with_initializers(self.model, fixed), shapes)
            except SpecializationNeeded as error:
                more = set(error.inputs) - self.specialized
                if not more:
                    raise
                self.specialized |= more
                continue
            except FrontendError as error:
                shown = ", ".join(f"{n}={fixed[n].tolist()!r}" for n in names)
                raise InputError(
                    f"the model cannot be compiled for the input values {shown}: {error}"
                ) from None
            if self._num_threads is not None:
                module.set_num_threads(self._num_threads)
            self.compilations += 1
            self._cache[key] = module
            return module

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values = dict(zip(self.input_names, inputs))
        module = self.variant(values)
        return module.run({n: v for n, v in values.items() if n not in self.specialized})

    def set_num_threads(self, count: int) -> None:
        self._num_threads = count
        for module in self._cache.values():
            module.set_num_threads(count)


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


def specializing_module(model: onnx.ModelProto, specialized: Iterable[str],
                        compile_static: StaticCompiler,
                        input_shapes: Mapping[str, Sequence[int]] | None, target: str,
                        num_threads: int | None = None) -> Module:
    """A module that compiles `model` once per distinct value of the `specialized` inputs.

    Its signature lists every graph input with its declared (or pinned) shape, and every output
    with its declared shape: None where a dimension is only known at run time.
    """
    input_shapes = dict(input_shapes or {})
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
    executor = SpecializingExecutor(model, [s.name for s in inputs], specialized,
                                    compile_static, input_shapes)
    if num_threads is not None:
        executor.set_num_threads(num_threads)
    return Module(executor, inputs, outputs, target)

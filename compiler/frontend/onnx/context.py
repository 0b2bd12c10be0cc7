"""ConvertContext: what a converter sees of the ONNX node it converts and of the graph so far.

A converter reads the node's attributes (`ctx.attr`), its inputs' ember values, types and, where
they are constants, their values (`ctx.input`, `ctx.type`, `ctx.const`), and appends ember
nodes with `ctx.emit`. Nodes whose inputs are all constants fold to constants as they are
emitted, so shape arithmetic becomes static. Errors name the ONNX node, its op and the opset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.errors import FrontendError, SpecializationNeeded
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType

_MISSING: Any = object()


def attribute_value(attr: onnx.AttributeProto) -> Any:
    """An ONNX attribute as a Python value: tensors as numpy arrays, strings as str."""
    value = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(v) for v in value]
    if attr.type == onnx.AttributeProto.STRING:
        return value.decode()
    if attr.type == onnx.AttributeProto.STRINGS:
        return [v.decode() for v in value]
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        return dense_array(value)
    return value


def dense_array(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """The dense array of a sparse tensor (indices are flat, or one row per value)."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


class ConvertContext:
    """The conversion state for one ONNX node."""

    def __init__(self, builder: GraphBuilder, env: Mapping[str, str], node: onnx.NodeProto,
                 opset: int):
        self.builder = builder
        self.node = node
        self.opset = opset
        self._env = env
        self._attrs = {a.name: a for a in node.attribute}

    # -- the node

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def name(self) -> str:
        return self.node.name or (self.node.output[0] if self.node.output else self.op_type)

    @property
    def num_inputs(self) -> int:
        """Inputs given, counting omitted optional ones ("") before the last given one."""
        return len(self.node.input)

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = _MISSING) -> Any:
        """The attribute's value, or `default`; raises FrontendError when required and absent."""
        if name in self._attrs:
            return attribute_value(self._attrs[name])
        if default is _MISSING:
            self.fail(f"attribute {name!r} is required")
        return default

    # -- inputs

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def input(self, index: int) -> str:
        """The ember value of input `index`, or "" when it is omitted."""
        if not self.has_input(index):
            return ""
        return self._env[self.node.input[index]]

    def inputs(self) -> list[str]:
        return [self.input(i) for i in range(self.num_inputs)]

    def type(self, index: int) -> TensorType:
        if not self.has_input(index):
            self.fail(f"input {index} is required")
        return self.builder.types[self.input(index)]

    def const(self, index: int) -> np.ndarray | None:
        """The value of input `index` when it is a constant (after folding), else None."""
        return self.builder.constants.get(self.input(index)) if self.has_input(index) else None

    def require_const(self, index: int, what: str) -> np.ndarray:
        """The value of input `index`, which must be known at compile time.

        When it is computed from graph inputs, raises SpecializationNeeded naming them, so that
        `ember.compile` can specialize the module on their values at run time.
        """
        value = self.const(index)
        if value is None:
            source = self.node.input[index] if self.has_input(index) else "(missing)"
            self.needs_values(
                [index],
                f"input {index} ({what}, value {source!r}) must be known at compile time, but it "
                f"is computed from the graph's inputs at run time; make it a constant or "
                f"initializer, or pin the shapes it is computed from with input_shapes",
            )
        return value

    def needs_values(self, indices: Sequence[int], message: str) -> NoReturn:
        """Fail because inputs `indices` must be constants but are not: SpecializationNeeded
        with the graph inputs they are computed from, or a plain FrontendError when they
        depend on none (then no run-time value can help)."""
        values = [self.input(i) for i in indices if self.has_input(i)]
        sources = self.graph_inputs_of(values)
        full = f"node {self.name!r} ({self.op_type}, opset {self.opset}): {message}"
        if sources:
            raise SpecializationNeeded(full, sources)
        raise FrontendError(full)

    def graph_inputs_of(self, values: Sequence[str]) -> tuple[str, ...]:
        """The graph inputs that `values` are computed from, in graph-input order."""
        producers = {out: node for node in self.builder.nodes for out in node.outputs}
        inputs = set(self.builder.inputs)
        found: set[str] = set()
        seen: set[str] = set()
        stack = [v for v in values if v]
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            if value in inputs:
                found.add(value)
            elif value in producers:
                stack.extend(v for v in producers[value].inputs if v)
        return tuple(name for name in self.builder.inputs if name in found)

    # -- building

    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None) -> str:
        """Append an ember node with one output and return that output."""
        (out,) = self.emit_multi(op, inputs, attrs)
        return out

    def emit_multi(self, op: str, inputs: Sequence[str],
                   attrs: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        hint = self.node.output[0] if self.node.output and self.node.output[0] else op
        return self.builder.add_node(op, inputs, attrs, name=self.node.name, hint=hint)

    def constant(self, array: Any, dtype: Any = None) -> str:
        """A new constant value."""
        return self.builder.add_constant(np.asarray(array, dtype=dtype), hint=f"{self.name}:const")

    # -- errors

    def fail(self, message: str) -> NoReturn:
        raise FrontendError(
            f"node {self.name!r} ({self.op_type}, opset {self.opset}): {message}"
        )

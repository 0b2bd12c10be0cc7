"""Host programs: compile models with control flow, sequences and optionals.

One tensor graph cannot hold If, Loop, Scan, sequence or optional values, so `ember.compile`
builds a model that has any of them (`needs_host_program`) into a `HostProgram`
(runtime/host.py) instead:

1. the nodes, in topological order, are partitioned into maximal runs of ordinary tensor nodes
   (segments) and host nodes (`HOST_OPS`, and an Identity of a sequence or optional);
2. initializers and Constant nodes become constants, handed to every segment that reads them
   as initializers, so shape arithmetic on them still folds;
3. every graph attribute (If's branches, Loop's, Scan's and SequenceMap's body) is built the
   same way, recursively; the names a body reads from enclosing graphs are its captures;
4. a segment compiles with `ember.compile` (same target and threads) on first use, as a model
   of its own whose inputs have the shapes and dtypes of the values it gets, and again for each
   new input signature (a loop-carried value that grows), cached per signature. Its
   shape-deciding inputs go through run-time specialization as in any model.

Unsupported ops anywhere, bodies included, fail at compile time; everything else about a
segment (shapes, dtypes) is checked when it first compiles, and errors name the host node and
body it sits in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.compiler.frontend.onnx.context import attribute_value, dense_array
from ember.compiler.frontend.onnx.control_flow import HOST_OPS
from ember.compiler.frontend.onnx.importer import (
    check_and_infer,
    elem_dtype,
    model_opsets,
    unsupported_message,
)
from ember.compiler.frontend.onnx.registry import canonical_domain, find_converter
from ember.errors import FrontendError, UnsupportedOpError
from ember.ir.graph import dtype_name
from ember.runtime.host import HostExecutor, HostModule, HostNode, HostProgram, OutputType
from ember.runtime.module import Module, TensorSpec
from ember.target import Target

#: compiled variants a segment keeps (one per input signature), oldest dropped first
MAX_VARIANTS = 64

#: ops that make a sequence or optional value from tensors
_SEQUENCE_MAKERS = {"SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase",
                    "SplitToSequence", "SequenceMap", "Optional"}


def _is_host_op(node: onnx.NodeProto) -> bool:
    return canonical_domain(node.domain) == "" and node.op_type in HOST_OPS


def _subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append((attr.name, attr.g))
        found.extend((attr.name, g) for g in attr.graphs)
    return found


def needs_host_program(model: onnx.ModelProto) -> bool:
    """Whether the model's top-level graph (or a local function it calls, which the import
    inlines) holds a host op, or the graph has a non-tensor input or output."""
    graph = model.graph
    nodes = [*graph.node, *(node for function in model.functions for node in function.node)]
    return any(_is_host_op(node) for node in nodes) or any(
        value.type.WhichOneof("value") not in (None, "tensor_type")
        for value in [*graph.input, *graph.output]
    )


def free_names(graph: onnx.GraphProto) -> set[str]:
    """Names `graph` (with its nested bodies) reads but does not define: its captures."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    free: set[str] = set()
    for node in graph.node:
        reads = set(filter(None, node.input))
        for _, body in _subgraphs(node):
            reads |= free_names(body)
        free |= reads - defined
        defined.update(node.output)
    return free


def _find_unsupported(graph: onnx.GraphProto, opsets: Mapping[str, int], path: str,
                      found: dict[tuple[str, str, int], list[str]]) -> None:
    for index, node in enumerate(graph.node):
        domain = canonical_domain(node.domain)
        opset = opsets.get(domain, 1)
        name = node.name or (node.output[0] if node.output else f"#{index}")
        if find_converter(domain, node.op_type, opset) is None:
            found.setdefault((domain, node.op_type, opset), []).append(path + name)
        for attr, body in _subgraphs(node):
            _find_unsupported(body, opsets, f"{path}{name}.{attr}/", found)


def _value_types(graph: onnx.GraphProto, into: dict[str, onnx.TypeProto]) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.WhichOneof("value") is not None:
            into.setdefault(value.name, value.type)
    for node in graph.node:
        for _, body in _subgraphs(node):
            _value_types(body, into)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node, or None for a form left to the converter."""
    if len(node.attribute) != 1 or len(node.output) != 1:
        return None
    attr = node.attribute[0]
    value = attribute_value(attr)
    if attr.name in ("value", "sparse_value"):
        return np.asarray(value)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    return None  # strings stay nodes


def _declared(value_type: onnx.TypeProto | None) -> OutputType:
    if value_type is None or value_type.WhichOneof("value") != "tensor_type":
        return OutputType(None, None)
    tensor = value_type.tensor_type
    try:
        dtype = elem_dtype(tensor.elem_type, "a body output")
    except FrontendError:
        dtype = None
    if not tensor.HasField("shape"):
        return OutputType(dtype, None)
    return OutputType(dtype, tuple(d.dim_value if d.HasField("dim_value") else None
                                   for d in tensor.shape.dim))


def _give_ranks(model: onnx.ModelProto, outputs: Sequence[onnx.ValueInfoProto],
                inputs: Sequence[np.ndarray]) -> None:
    """Give `outputs` shapes of symbolic dimensions, of the rank they have for `inputs`.

    onnx's checker wants a shape on every graph output, and onnx's inference cannot always
    tell the rank (an Expand to a shape that is an input's value); onnx's reference evaluator
    runs the segment once to find it. The dimensions stay symbolic: a segment that specializes
    on input values may give other sizes for other values.
    """
    from onnx.reference import ReferenceEvaluator

    names = [output.name for output in outputs]
    try:
        values = ReferenceEvaluator(model).run(names, {
            value.name: x for value, x in zip(model.graph.input, inputs)})
    except Exception as error:  # the nodes cannot run on these inputs: say why, in onnx's words
        try:
            onnx.shape_inference.infer_shapes(model, strict_mode=True)
            reason = f"{type(error).__name__}: {error}"
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as strict:
            reason = str(strict).strip()
        shapes = ", ".join(f"{v.name}: {x.dtype}{list(x.shape)}"
                           for v, x in zip(model.graph.input, inputs))
        raise FrontendError(f"the nodes of {model.graph.name!r} cannot run on inputs "
                            f"({shapes}): {reason}") from None
    for output, value in zip(outputs, values):
        shape = output.type.tensor_type.shape
        for axis in range(np.ndim(value)):
            shape.dim.add().dim_param = f"{output.name}_dim{axis}"


class CompiledSegment:
    """A run of tensor nodes, compiled with `ember.compile` once per input signature."""

    def __init__(self, name: str, nodes: Sequence[onnx.NodeProto], inputs: Sequence[str],
                 outputs: Sequence[str], constants: Mapping[str, np.ndarray],
                 model: onnx.ModelProto, target: Target, num_threads: int | None,
                 value_types: Mapping[str, onnx.TypeProto]):
        self.name = name
        self.nodes = list(nodes)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.constants = dict(constants)
        self.compilations = 0
        self._opsets = list(model.opset_import)
        self._ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4
        self._target = target
        self._num_threads = num_threads
        self._value_types = value_types
        self._modules: dict[tuple[Any, ...], Module] = {}

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        key = tuple((dtype_name(x.dtype), x.shape) for x in inputs)
        module = self._modules.get(key)
        if module is None:
            module = self._compile(inputs)
            if len(self._modules) >= MAX_VARIANTS:  # a value that grows every iteration
                del self._modules[next(iter(self._modules))]
            self._modules[key] = module
        return module.run(dict(zip(self.inputs, inputs)))

    def set_num_threads(self, count: int) -> None:
        self._num_threads = count
        for module in self._modules.values():
            module.set_num_threads(count)

    def model(self, inputs: Sequence[np.ndarray]) -> onnx.ModelProto:
        """The segment as a model of its own, for inputs like `inputs`."""
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype),
                                           x.shape) for name, x in zip(self.inputs, inputs)],
            [onnx.ValueInfoProto(name=name) for name in self.outputs],
            [numpy_helper.from_array(value, name) for name, value in self.constants.items()],
        )
        model = helper.make_model(graph, opset_imports=self._opsets,
                                  ir_version=self._ir_version)
        # Graph outputs need a type; onnx infers it from the typed inputs.
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
            types = {v.name: v.type for v in [*inferred.value_info, *inferred.output]
                     if v.type.WhichOneof("value") is not None}
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
            types = {}
        for output in model.graph.output:
            known = types.get(output.name) or self._value_types.get(output.name)
            if known is None:
                raise FrontendError(f"the type of {output.name!r} is unknown: give the model "
                                    f"a value_info for it")
            output.type.CopyFrom(known)
        unshaped = [output for output in model.graph.output
                    if not output.type.tensor_type.HasField("shape")]
        if unshaped:
            _give_ranks(model, unshaped, inputs)
        return model

    def _compile(self, inputs: Sequence[np.ndarray]) -> Module:
        from ember.compiler.build import compile as compile_model

        module = compile_model(self.model(inputs), self._target, num_threads=self._num_threads)
        self.compilations += 1
        return module


class _ProgramBuilder:
    """Builds the host programs of one model (its top-level graph and every body)."""

    def __init__(self, model: onnx.ModelProto, target: Target, num_threads: int | None):
        self.model = model
        self.opsets = model_opsets(model)
        self.target = target
        self.num_threads = num_threads
        self.value_types: dict[str, onnx.TypeProto] = {}
        _value_types(model.graph, self.value_types)

    def _non_tensor(self, name: str, made_here: set[str]) -> bool:
        known = self.value_types.get(name)
        if known is not None:
            return known.WhichOneof("value") != "tensor_type"
        return name in made_here

    def build(self, graph: onnx.GraphProto, formal_inputs: Sequence[str],
              outer_names: set[str], outer_constants: Mapping[str, np.ndarray]) -> HostProgram:
        """The program of `graph`; `outer_names` are the names enclosing graphs define."""
        # A body's own inputs hide enclosing values of the same name.
        constants = {k: v for k, v in outer_constants.items() if k not in formal_inputs}
        for init in graph.initializer:
            try:
                constants[init.name] = numpy_helper.to_array(init)
            except (ValueError, TypeError, RuntimeError, IndexError) as error:
                raise FrontendError(f"initializer {init.name!r} of graph {graph.name!r} "
                                    f"cannot be read: {error}") from None
        for sparse in graph.sparse_initializer:
            constants[sparse.values.name] = dense_array(sparse)
        defined = set(formal_inputs) | set(constants)
        captures: list[str] = []
        non_tensors: set[str] = set()
        # Each item: a host node, or a list of tensor nodes (a segment in the making).
        items: list[onnx.NodeProto | list[onnx.NodeProto]] = []
        for node in graph.node:
            if node.op_type == "Constant" and canonical_domain(node.domain) == "":
                value = _constant_value(node)
                if value is not None:
                    constants[node.output[0]] = value
                    defined.add(node.output[0])
                    continue
            reads = [name for name in node.input if name]
            for _, body in _subgraphs(node):
                reads += sorted(free_names(body))
            for name in reads:
                if name in defined:
                    continue
                if name not in outer_names:
                    label = node.name or node.op_type
                    raise FrontendError(
                        f"node {label!r} ({node.op_type}) in graph {graph.name!r} reads "
                        f"{name!r}, which no graph input, initializer or earlier node defines"
                    )
                captures.append(name)
                defined.add(name)
            values = [name for name in [*node.input, *node.output] if name]
            if _is_host_op(node) or (node.op_type == "Identity" and any(
                    self._non_tensor(name, non_tensors) for name in values)):
                if node.op_type in _SEQUENCE_MAKERS:
                    non_tensors.update(node.output)
                items.append(node)
            elif items and isinstance(items[-1], list):
                items[-1].append(node)
            else:
                items.append([node])
            for name in filter(None, node.output):
                constants.pop(name, None)  # a node output hides an enclosing constant
                defined.add(name)
        outputs = [v.name for v in graph.output]
        for name in outputs:
            if name not in defined and name in outer_names:
                captures.append(name)
                defined.add(name)
        steps = self._steps(graph, items, outputs, constants, defined | outer_names)
        return HostProgram(
            name=graph.name, inputs=tuple(formal_inputs), captures=tuple(dict.fromkeys(captures)),
            constants=constants, steps=tuple(steps), outputs=tuple(outputs),
            output_types=tuple(_declared(v.type if v.type.WhichOneof("value") else None)
                               for v in graph.output),
        )

    def _steps(self, graph: onnx.GraphProto, items: list, outputs: list[str],
               constants: Mapping[str, np.ndarray], visible: set[str]) -> list:
        # What each item reads, to know which values a segment must hand on.
        reads_after: list[set[str]] = [set(outputs)]
        for item in reversed(items):
            nodes = item if isinstance(item, list) else [item]
            reads = set(reads_after[-1])
            for node in nodes:
                reads.update(filter(None, node.input))
                for _, body in _subgraphs(node):
                    reads |= free_names(body)
            reads_after.append(reads)
        reads_after.reverse()  # reads_after[i]: what items i, i+1, ... and the outputs read
        steps = []
        for index, item in enumerate(items):
            if isinstance(item, list):
                segment = self._segment(graph, index, item, reads_after[index + 1], constants)
                if segment is not None:
                    steps.append(segment)
            else:
                steps.append(self._host_node(item, visible, constants))
        return steps

    def _segment(self, graph: onnx.GraphProto, index: int, nodes: list[onnx.NodeProto],
                 needed_later: set[str], constants: Mapping[str, np.ndarray]
                 ) -> CompiledSegment | None:
        produced: set[str] = set()
        inputs: list[str] = []
        used_constants: dict[str, np.ndarray] = {}
        for node in nodes:
            for name in filter(None, node.input):
                if name in produced:
                    continue
                if name in constants:
                    used_constants[name] = constants[name]
                elif name not in inputs:
                    inputs.append(name)
            produced.update(filter(None, node.output))
        outputs = [name for node in nodes for name in node.output
                   if name and name in needed_later]
        if not outputs:
            return None  # nothing reads what it computes
        name = f"{graph.name or 'main'}_part{index}"
        return CompiledSegment(name, nodes, inputs, list(dict.fromkeys(outputs)),
                               used_constants, self.model, self.target, self.num_threads,
                               self.value_types)

    def _host_node(self, node: onnx.NodeProto, visible: set[str],
                   constants: Mapping[str, np.ndarray]) -> HostNode:
        bodies = {}
        for attr, body in _subgraphs(node):
            formal = [v.name for v in body.input]
            bodies[attr] = self.build(body, formal, visible, constants)
        attrs = {a.name: attribute_value(a) for a in node.attribute
                 if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                                   onnx.AttributeProto.TYPE_PROTO)}
        name = node.name or next(iter(filter(None, node.output)), node.op_type)
        return HostNode(op_type=node.op_type, name=name,
                        opset=self.opsets.get(canonical_domain(node.domain), 1),
                        inputs=tuple(node.input), outputs=tuple(node.output), attrs=attrs,
                        bodies=bodies)


def _spec(value: onnx.ValueInfoProto, pinned: Sequence[int] | None = None) -> TensorSpec:
    """A signature entry: shapes from the value info (None where unknown), non-tensor kinds
    spelled in the dtype ("sequence(float32)", "optional(sequence(int64))")."""

    def dtype_of(value_type: onnx.TypeProto) -> str:
        kind = value_type.WhichOneof("value")
        if kind == "sequence_type":
            return f"sequence({dtype_of(value_type.sequence_type.elem_type)})"
        if kind == "optional_type":
            return f"optional({dtype_of(value_type.optional_type.elem_type)})"
        if kind == "tensor_type":
            try:
                return elem_dtype(value_type.tensor_type.elem_type, f"{value.name!r}")
            except FrontendError:
                return "unknown"
        return "unknown"

    dtype = dtype_of(value.type)
    if value.type.WhichOneof("value") != "tensor_type":
        return TensorSpec(value.name, None, dtype)
    if pinned is not None:
        return TensorSpec(value.name, tuple(int(d) for d in pinned), dtype)
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return TensorSpec(value.name, None, dtype)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, dims, dtype)


def build_host_module(model: onnx.ModelProto, target: Target,
                      input_shapes: Mapping[str, Sequence[int]] | None = None,
                      num_threads: int | None = None) -> Module:
    """A module that runs `model` as a host program (see the module docstring).

    Args:
        model: the model; its top-level graph holds host ops (`needs_host_program`).
        target: the target every segment compiles for.
        input_shapes: shapes for inputs with symbolic dimensions (they only narrow the
            signature: segments compile for the shapes they get).
        num_threads: threads for the segments' parallel loops.
    """
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    opsets = model_opsets(model)
    unsupported: dict[tuple[str, str, int], list[str]] = {}
    _find_unsupported(model.graph, opsets, "", unsupported)
    if unsupported:
        raise UnsupportedOpError(
            unsupported_message(unsupported),
            {(d, op): nodes for (d, op, _), nodes in unsupported.items()},
        )
    inferred = check_and_infer(model)
    initializers = {init.name for init in model.graph.initializer}
    initializers |= {sparse.values.name for sparse in model.graph.sparse_initializer}
    real_inputs = [v for v in model.graph.input if v.name not in initializers]
    input_shapes = dict(input_shapes or {})
    unknown = sorted(set(input_shapes) - {v.name for v in real_inputs})
    if unknown:
        raise FrontendError(f"input_shapes names {unknown}, which are not graph inputs; the "
                            f"inputs are {[v.name for v in real_inputs]}")
    builder = _ProgramBuilder(inferred, target, num_threads)
    program = builder.build(inferred.graph, [v.name for v in real_inputs], set(), {})
    inputs = [_spec(v, input_shapes.get(v.name)) for v in real_inputs]
    outputs = [_spec(v) for v in inferred.graph.output]
    return HostModule(HostExecutor(program), inputs, outputs, str(target))

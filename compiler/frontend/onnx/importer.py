"""ONNX model -> ember graph IR.

The steps, in order:

1. load the model (path, bytes or ModelProto); inline local functions;
2. scan every node for ops ember cannot convert and report all of them at once
   (onnx's checker would stop at the first unknown op);
3. check the model with onnx's checker and shape inference;
4. make graph inputs (symbolic dimensions pinned by `input_shapes`) and constants (initializers);
5. convert each node with its op's converter, folding constant subgraphs as it goes;
6. name the graph outputs as the model names them, drop what nothing uses, and verify.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ember.compiler.frontend.onnx.context import ConvertContext, dense_array
from ember.compiler.frontend.onnx.registry import (
    canonical_domain,
    find_converter,
    first_supported_opset,
)
from ember.errors import EmberError, FrontendError, IRError, ShapeError, UnsupportedOpError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import DTYPES, Graph, TensorType, dtype_name
from ember.ir.verify import verify

ModelLike = str | os.PathLike | bytes | onnx.ModelProto


def load_model(model: ModelLike) -> onnx.ModelProto:
    """Read a model from a path, serialized bytes or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        try:
            return onnx.load_from_string(model)
        except (DecodeError, ValueError, RuntimeError) as error:
            raise FrontendError(f"the bytes given are not a valid ONNX model: {error}") from None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FrontendError(f"no ONNX model at {path!r}: the file does not exist")
        try:
            return onnx.load(path)
        except (DecodeError, ValueError, RuntimeError, OSError) as error:
            raise FrontendError(
                f"{path!r} is not a valid ONNX model (protobuf parse failed: {error}); "
                f"check that the file is complete and is an .onnx file"
            ) from None
    raise FrontendError(
        f"a model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}"
    )


def model_opsets(model: onnx.ModelProto) -> dict[str, int]:
    opsets = {canonical_domain(o.domain): o.version for o in model.opset_import}
    if "" not in opsets:
        opsets[""] = 1 if model.ir_version < 3 else 0
    return opsets


def find_unsupported(model: onnx.ModelProto) -> dict[tuple[str, str, int], list[str]]:
    """(domain, op_type, opset) -> names of the nodes ember has no converter for."""
    opsets = model_opsets(model)
    unsupported: dict[tuple[str, str, int], list[str]] = {}
    for index, node in enumerate(model.graph.node):
        domain = canonical_domain(node.domain)
        opset = opsets.get(domain, 1)
        if find_converter(domain, node.op_type, opset) is None:
            name = node.name or (node.output[0] if node.output else f"#{index}")
            unsupported.setdefault((domain, node.op_type, opset), []).append(name)
    return unsupported


def unsupported_message(unsupported: Mapping[tuple[str, str, int], list[str]]) -> str:
    lines = [f"the model uses {len(unsupported)} operator(s) ember cannot convert:"]
    for (domain, op_type, opset), nodes in sorted(unsupported.items()):
        shown = ", ".join(repr(n) for n in nodes[:5]) + (" ..." if len(nodes) > 5 else "")
        first = first_supported_opset(domain, op_type)
        why = f"; ember supports it from opset {first}" if first is not None else ""
        lines.append(
            f"  {op_type} (domain {domain or 'ai.onnx'!r}, opset {opset}{why}): "
            f"{len(nodes)} node(s): {shown}"
        )
    lines.append(
        "Rewrite these nodes with supported operators (docs/onnx-coverage.md lists them), or "
        "re-export the model at a supported opset."
    )
    return "\n".join(lines)


def _check_declarations(graph: onnx.GraphProto) -> None:
    """What onnx's C++ checker and shape inference would crash on rather than refuse: negative
    declared dimensions (a segfault in GatherND's inference) and a Split whose num_outputs
    contradicts its outputs (an abort)."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim
                    if d.HasField("dim_value")]
            if any(d < 0 for d in dims):
                raise FrontendError(f"value {value.name!r} is declared with a negative "
                                    f"dimension: {dims}")
    for node in graph.node:
        if node.op_type == "Split" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "num_outputs" and attr.i != len(node.output):
                    raise FrontendError(
                        f"node {node.name or 'Split'!r} (Split) has num_outputs={attr.i} but "
                        f"{len(node.output)} outputs"
                    )


def check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's checker and shape inference, after ember's own checks for what would crash them;
    FrontendError for anything they reject."""
    _check_declarations(model.graph)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise FrontendError(
            f"the model is not valid ONNX (onnx.checker): {str(error).strip()}"
        ) from None
    try:
        # Not strict: strict mode also rejects some of onnx's own function bodies (MVN-13);
        # type errors still fail here, and ember's own inference checks every shape.
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError,
            MemoryError) as error:
        # ValueError: an element type number onnx does not know ("Invalid tensor data type");
        # MemoryError: an absurd attribute (num_outputs=2**40) sizing inference's vectors
        raise FrontendError(
            f"ONNX shape inference rejects the model: {str(error).strip()}"
        ) from None


def elem_dtype(elem_type: int, what: str) -> str:
    try:
        dtype = dtype_name(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = None
    if dtype not in DTYPES:
        known = elem_type in onnx.TensorProto.DataType.values()
        label = onnx.TensorProto.DataType.Name(elem_type) if known else "unknown"
        raise FrontendError(
            f"{what} has element type {elem_type} ({label}), which ember does not support; "
            f"supported: {', '.join(DTYPES)}"
        )
    return dtype


def input_type(value: onnx.ValueInfoProto, pinned: Sequence[int] | None) -> TensorType:
    if not value.type.HasField("tensor_type"):
        raise FrontendError(
            f"graph input {value.name!r} is not a tensor ({value.type.WhichOneof('value')}); "
            f"ember takes tensor inputs only"
        )
    tensor = value.type.tensor_type
    dtype = elem_dtype(tensor.elem_type, f"graph input {value.name!r}")
    if not tensor.HasField("shape"):
        if pinned is None:
            raise FrontendError(
                f"graph input {value.name!r} has no shape; give it one with "
                f"input_shapes={{{value.name!r}: (...)}}"
            )
        return TensorType(tuple(pinned), dtype)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tensor.shape.dim]
    if pinned is None:
        symbolic = [d for d in dims if not isinstance(d, int)]
        if symbolic:
            shown = tuple(d if isinstance(d, int) else str(d) for d in dims)
            raise FrontendError(
                f"graph input {value.name!r} has symbolic shape {shown}; pin its dimensions with "
                f"input_shapes={{{value.name!r}: (...)}}"
            )
        return TensorType(tuple(dims), dtype)
    pinned = tuple(int(d) for d in pinned)
    if len(pinned) != len(dims) or any(
        isinstance(d, int) and d != p for d, p in zip(dims, pinned)
    ):
        raise FrontendError(
            f"input_shapes gives {value.name!r} the shape {pinned}, which does not fit its "
            f"declared shape {tuple(dims)}"
        )
    if any(p < 0 for p in pinned):
        raise FrontendError(f"input_shapes gives {value.name!r} a negative dimension: {pinned}")
    return TensorType(pinned, dtype)


def _check_order(graph: onnx.GraphProto, known: set[str]) -> None:
    """Every node input must be defined before use; say what is missing or cyclic."""
    defined = set(known)
    produced_later = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                label = node.name or node.op_type
                if name in produced_later:
                    raise FrontendError(
                        f"node {label!r} ({node.op_type}) reads {name!r} before the node that "
                        f"produces it: the graph has a cycle or is not in topological order"
                    )
                raise FrontendError(
                    f"node {label!r} ({node.op_type}) reads {name!r}, which is neither a graph "
                    f"input, an initializer nor any node's output (missing initializer?)"
                )
        defined.update(node.output)


def import_onnx(model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Convert an ONNX model to a verified ember graph with static shapes.

    Args:
        model: a path to an .onnx file, its bytes, or an onnx.ModelProto.
        input_shapes: shapes for graph inputs whose dimensions are symbolic, by input name.
    """
    proto = load_model(model)
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    unsupported = find_unsupported(proto)
    if unsupported:
        raise UnsupportedOpError(
            unsupported_message(unsupported),
            {(d, op): nodes for (d, op, _), nodes in unsupported.items()},
        )
    # Before onnx's checker, whose message for both is "must be topologically sorted".
    _check_order(proto.graph, {v.name for v in proto.graph.input}
                 | {init.name for init in proto.graph.initializer}
                 | {sparse.values.name for sparse in proto.graph.sparse_initializer})
    proto = check_and_infer(proto)
    opsets = model_opsets(proto)
    graph = proto.graph
    input_shapes = dict(input_shapes or {})

    initializers = {init.name: init for init in graph.initializer}
    for sparse in graph.sparse_initializer:
        initializers[sparse.values.name] = sparse
    real_inputs = [v for v in graph.input if v.name not in initializers]
    unknown = sorted(set(input_shapes) - {v.name for v in real_inputs})
    if unknown:
        raise FrontendError(
            f"input_shapes names {unknown}, which are not graph inputs; the inputs are "
            f"{[v.name for v in real_inputs]}"
        )

    builder = GraphBuilder(name=graph.name or "main", fold_constants=True)
    env: dict[str, str] = {}
    for value in real_inputs:
        pinned = input_shapes.get(value.name)
        env[value.name] = builder.add_input(value.name, input_type(value, pinned))
    for name, init in initializers.items():
        try:
            array = dense_array(init) if isinstance(init, onnx.SparseTensorProto) \
                else numpy_helper.to_array(init)
        except (ValueError, TypeError, RuntimeError, IndexError) as error:
            raise FrontendError(f"initializer {name!r} cannot be read: {error}") from None
        env[name] = builder.add_constant(array, hint=name)

    for node in graph.node:
        opset = opsets.get(canonical_domain(node.domain), 1)
        convert = find_converter(node.domain, node.op_type, opset)
        assert convert is not None  # find_unsupported ran
        ctx = ConvertContext(builder, env, node, opset)
        first_new_node, first_new_value = len(builder.nodes), len(builder.created)
        try:
            results = convert(ctx)
        except FrontendError:
            raise
        except (ShapeError, IRError) as error:
            ctx.fail(str(error))
        except EmberError:
            raise
        except Exception as error:  # a numpy failure while folding, a malformed attribute
            ctx.fail(f"conversion failed: {type(error).__name__}: {error}")
        results = (results,) if isinstance(results, str) else tuple(results)
        if len(results) < len(node.output):
            ctx.fail(f"the converter gave {len(results)} outputs for {len(node.output)}")
        created_here = set(builder.created[first_new_value:])
        for onnx_name, value in zip(node.output, results):
            if not onnx_name:
                continue
            # Keep the model's own names where the value is new, so printed IR reads like it
            # and graph outputs keep their names. A converter that emits several nodes names
            # the first after the ONNX output (the hint): move that intermediate aside.
            if value in created_here and value != onnx_name and onnx_name in created_here \
                    and onnx_name not in results:
                builder.rename(onnx_name, builder.fresh(onnx_name), since_node=first_new_node)
            if value in created_here and value != onnx_name and onnx_name not in builder.types:
                builder.rename(value, onnx_name, since_node=first_new_node)
                value = onnx_name
            env[onnx_name] = value

    outputs = []
    for value in graph.output:
        if value.name not in env:
            raise FrontendError(f"graph output {value.name!r} is not produced by any node")
        outputs.append(_output_value(builder, env[value.name], value.name, outputs))
    return verify(builder.build(outputs))


def _output_value(builder: GraphBuilder, value: str, name: str, taken: list[str]) -> str:
    """The ember value for graph output `name`: the value itself when it is a node output of
    that name, else an identity copy (an input, a constant, or an output listed twice)."""
    if value == name and value not in builder.inputs and value not in taken \
            and value not in builder.constants:
        return value
    if name in builder.types:
        name = builder.fresh(name)
    saved, builder.fold_constants = builder.fold_constants, False
    (out,) = builder.add_node("identity", [value], hint=name)
    builder.fold_constants = saved
    return out

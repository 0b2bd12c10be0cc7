"""The model zoo: named ONNX workload models that ember compiles, tests and benchmarks.

A zoo entry is a builder that returns an `onnx.ModelProto` (seeded random weights, no
downloads) plus a description and a kind ("llm", "xr", ...). Workload modules register their
models at import time:

    from ember.workloads.zoo import register
    register("hand-tracking", build_hand_tracking, "XRBench hand tracking (...)", kind="xr")

`names()`, `get()` and `build()` import the built-in workload modules first (`llm`, `xr`), so
callers never need to know which module defines which model. `ember zoo list` and
`ember zoo export NAME -o model.onnx` are the command-line face of this module.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import helper

from ember.errors import EmberError

# Modules whose import registers built-in zoo models; a missing one is skipped (a module may
# not exist yet on a given branch), any other import error is a real bug and propagates.
BUILTIN_MODULES = ("ember.workloads.llm", "ember.workloads.xr")


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: `builder()` returns a fresh, checker-valid ONNX model."""

    name: str
    builder: Callable[[], onnx.ModelProto]
    description: str
    kind: str


ZOO: dict[str, ZooEntry] = {}

_loaded = False
# Initializers up to this many elements keep their values in shape inference's weight-free copy.
_SMALL_CONSTANT = 64


def register(
    name: str,
    builder: Callable[[], onnx.ModelProto],
    description: str,
    kind: str = "xr",
) -> ZooEntry:
    """Add a model to the zoo under `name`.

    Args:
        name: unique, lower-case, dash-separated name (`gpt2-tiny-prefill`).
        builder: zero-argument callable returning an `onnx.ModelProto`.
        description: one line shown by `ember zoo list`.
        kind: the workload family ("llm", "xr", ...).
    Re-registering a name with a builder of the same qualified name is a no-op (a module
    imported twice, e.g. under two package names); any other clash is an error.
    """
    existing = ZOO.get(name)
    if existing is not None:
        if _qualname(existing.builder) == _qualname(builder) and existing.kind == kind:
            return existing
        raise EmberError(f"zoo model {name!r} is already registered "
                         f"(kind {existing.kind!r}, builder {_qualname(existing.builder)})")
    entry = ZooEntry(name, builder, description, kind)
    ZOO[name] = entry
    return entry


def _qualname(builder: Callable) -> str:
    # The module's last component only: the same file imported as `ember.workloads.xr` and
    # as `<clone>.workloads.xr` must compare equal.
    module = str(getattr(builder, "__module__", "?")).rsplit(".", 1)[-1]
    return f"{module}.{getattr(builder, '__qualname__', builder)!s}"


def load_builtin() -> None:
    """Import the built-in workload modules so that their models are registered."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    _loaded = True


def names(kind: str | None = None) -> list[str]:
    """Sorted names of the zoo models (of one `kind` when given)."""
    load_builtin()
    return sorted(name for name, entry in ZOO.items() if kind is None or entry.kind == kind)


def get(name: str) -> ZooEntry:
    """The entry for `name`; an unknown name raises EmberError listing the known ones."""
    load_builtin()
    try:
        return ZOO[name]
    except KeyError:
        raise EmberError(
            f"unknown zoo model {name!r}; known: {', '.join(names()) or '(none)'}"
        ) from None


def build(name: str) -> onnx.ModelProto:
    """Build the zoo model `name` (a fresh ModelProto each call)."""
    return get(name).builder()


def count_params(model: onnx.ModelProto) -> int:
    """Number of weight elements: initializers plus Constant-node tensors, leaving out int64
    and int32 tensors (shapes, axes, indices; quantized weights are int8/uint8)."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [attr.t for attr in node.attribute if attr.name == "value"]
    return sum(_numel(tensor.dims) for tensor in tensors
               if tensor.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32))


def count_flops(model: onnx.ModelProto) -> int | None:
    """Multiply-add FLOPs (2 per MAC) of the MatMul, Gemm and Conv nodes, from ONNX shape
    inference; None when a needed shape is not static. Elementwise work is not counted: for the
    zoo's models it is a rounding error next to the matrix products."""
    shapes = _static_shapes(model)
    flops = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        ins = [shapes.get(name) for name in node.input[:2]]
        out = shapes.get(node.output[0])
        if out is None or any(shape is None for shape in ins):
            return None
        if node.op_type == "MatMul":
            a = ins[0]
            flops += 2 * _numel(out) * (a[-1] if len(a) > 0 else 1)
        elif node.op_type == "Gemm":
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            k = ins[0][0] if trans_a else ins[0][1]
            flops += 2 * _numel(out) * k
        else:
            weight = ins[1]
            flops += 2 * _numel(out) * _numel(weight[1:])
    return flops


def _numel(dims) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """value name -> static shape, by ONNX shape inference on a weight-free copy (initializers
    become typed inputs, so a 500 MB model infers in milliseconds)."""
    graph = model.graph
    inputs = list(graph.input)
    known = {value.name for value in inputs}
    kept = []
    for init in graph.initializer:
        if _numel(init.dims) <= _SMALL_CONSTANT:
            kept.append(init)  # shapes, axes, indices: inference needs their values
        elif init.name not in known:
            inputs.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    light = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output),
                              initializer=kept, value_info=list(graph.value_info))
    light_model = helper.make_model(light, opset_imports=list(model.opset_import),
                                    ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(light_model)
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    values = list(inferred.graph.input) + list(inferred.graph.value_info) \
        + list(inferred.graph.output)
    for value in values:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tensor.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = tuple(dim.dim_value for dim in dims)
    return shapes


def format_count(count: int | None) -> str:
    """1234567 -> '1.23M'; None -> '-'."""
    if count is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


def run_zoo_command(args) -> None:
    """`ember zoo list [--kind K]` and `ember zoo export NAME -o PATH` (args from argparse)."""
    if args.zoo_command == "list":
        rows = []
        pattern = getattr(args, "pattern", None) or "*"
        if not any(char in pattern for char in "*?["):
            pattern = f"*{pattern}*"  # a plain word matches anywhere in the name
        for name in fnmatch.filter(names(args.kind), pattern):
            entry = ZOO[name]
            model = entry.builder()
            rows.append((name, entry.kind, format_count(count_params(model)),
                         format_count(count_flops(model)), entry.description))
        if not rows:
            print("no zoo models" + (f" of kind {args.kind!r}" if args.kind else "")
                  + (f" matching {pattern!r}" if pattern != "*" else ""))
            return
        header = ("name", "kind", "params", "FLOPs", "description")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
        return
    model = build(args.name)
    try:
        onnx.save(model, args.output)
    except OSError as error:
        raise EmberError(f"cannot write {args.output!r}: {error}") from None
    print(f"wrote {args.name} to {args.output} ({format_count(count_params(model))} params)")

"""Tuning tasks: the kernels of a compiled model that a tuner can search.

A `Task` is one distinct kernel of a compiled graph: its workload (one op or a fused group),
the target and template family it is lowered for, and how often one model run calls it. Its
`key` is the kernel's name, which carries the workload's structural hash, so tuning records
written for a task apply to every model that compiles to the same kernel. The task's search
space is its anchor template's `ConfigSpace`; `instantiate(config)` lowers the kernel at one
point of that space, exactly as `ember.compile` would lower it with a tuning record.

`extract_tasks` runs the compiler up to kernel planning (`compiler/build.plan_kernels`) and
keeps the kernels whose space has a choice; `op_task` does the same for one ONNX operator
built into a one-node model, so an operator is tuned as the model compiler would compile it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.compiler.kernels import anchor_workload, kernel_name, kernel_space
from ember.compiler.ops.fused import FusedWorkload, instantiate_fused
from ember.compiler.ops.registry import Workload, instantiate
from ember.compiler.space import Config, ConfigSpace
from ember.errors import EmberError, SpecializationNeeded
from ember.ir.graph import Graph
from ember.ir.loop import PrimFunc
from ember.target import Target


class TuningError(EmberError):
    """A tuning request that cannot be carried out: a model without tunable kernels, an
    unknown operator, a damaged records file (`RecordError`)."""


#: (task name, family, target) -> the anchor template's space. Spaces hold filter closures,
#: which do not pickle, so tasks keep them here rather than on themselves.
_SPACES: dict[tuple[str, str, Target], ConfigSpace] = {}


@dataclasses.dataclass(frozen=True)
class Task:
    """One kernel to tune: what it computes, where it runs, and its calls per model run."""

    workload: Workload | FusedWorkload
    target: Target
    family: str = "cpu"
    weight: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.target, Target):
            object.__setattr__(self, "target", Target.parse(self.target))

    @property
    def name(self) -> str:
        """The kernel's name (`compiler.kernels.kernel_name`): op names and structural hash."""
        return kernel_name(self.workload)

    @property
    def key(self) -> str:
        """The key of this task's tuning records (its kernel name)."""
        return self.name

    @property
    def anchor(self) -> Workload:
        """The workload whose schedule template owns the kernel's space."""
        return anchor_workload(self.workload)

    @functools.cached_property
    def flops(self) -> int:
        """Multiply-add FLOPs of one call (2 per MAC; 0 for memory-bound ops): the model
        benchmarks' count (runtime/bench.node_flops), else the multiply-accumulate
        reductions of the op's compute (ops that count has not learnt yet)."""
        from ember.runtime.bench import node_flops

        nodes = (self.workload.nodes if isinstance(self.workload, FusedWorkload)
                 else (self.workload,))
        return sum(node_flops(node.op, [t.shape if t is not None else None
                                        for t in node.input_types],
                              node.output_types[0].shape) or _reduction_flops(node)
                   for node in nodes)

    def space(self) -> ConfigSpace:
        """The anchor template's config space (an empty space, one config, for an extern)."""
        cache_key = (self.name, self.family, self.target)
        if cache_key not in _SPACES:
            _SPACES[cache_key] = kernel_space(self.workload, self.family, self.target)
        return _SPACES[cache_key]

    def instantiate(self, config: Config) -> PrimFunc:
        """The final-form kernel at `config` (params: present inputs, then outputs). Not
        cached: a tune lowers each config once, and thousands of them would pile up in
        compiler/kernels.py's cache of the kernels a compile uses."""
        make = instantiate_fused if isinstance(self.workload, FusedWorkload) else instantiate
        return make(self.workload, self.family, self.target, config=config, name=self.name)

    def describe(self) -> str:
        """The workload, readable: op(s), input types and attributes."""
        return str(self.workload)

    def __str__(self) -> str:
        return f"{self.name} x{self.weight}: {self.describe()}"


def _reduction_flops(node: Workload) -> int:
    """2 x output elements x reduction extent for each sum-of-products stage of the op's
    compute (a dense, a matmul, a convolution in any layout); 0 for other ops."""
    from ember.compiler.ops.registry import build_tensors, has_compute
    from ember.ir import expr, te

    if not has_compute(node.op):
        return 0
    try:
        _, outputs = build_tensors(node)
    except EmberError:
        return 0
    total, seen, stack = 0, set(), list(outputs)
    while stack:
        op = stack.pop().op
        if id(op) in seen or not isinstance(op, te.ComputeOp):
            continue
        seen.add(id(op))
        stack.extend(op.input_tensors)
        for body in op.body:
            if not (isinstance(body, te.Reduce) and body.combiner.name == "sum"):
                continue
            source = body.source[0]
            while isinstance(source, expr.Cast):
                source = source.value
            if not isinstance(source, expr.Mul):
                continue
            extents = [iv.dom.extent for iv in body.axis]
            if all(isinstance(e, expr.IntImm) for e in extents):
                total += 2 * math.prod(op.output(0).static_shape) * math.prod(
                    e.value for e in extents)
    return total


def _import_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    from ember.compiler.frontend.onnx import import_onnx
    from ember.compiler.frontend.onnx.importer import load_model
    from ember.compiler.host_program import needs_host_program
    from ember.ir.verify import verify

    if isinstance(model, Graph):
        return verify(model)
    proto = load_model(model)
    if needs_host_program(proto):
        raise TuningError("the model has control flow, sequences or optionals, whose tensor "
                          "segments compile separately; tuning whole such models is not "
                          "supported: tune its expensive operators with op_task "
                          "(`ember tune --op ...`)")
    try:
        return import_onnx(proto, input_shapes)
    except SpecializationNeeded as needed:
        raise TuningError(
            f"the model's shapes depend on the values of input(s) {', '.join(needed.inputs)}, "
            f"so its kernels are only known per value: make them constants (initializers) "
            f"for the values you run with, then tune that model") from None


def extract_tasks(model: Any, target: str | Target = "llvm",
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  opt_level: int = 3) -> list[Task]:
    """The tunable kernels of `model` compiled for `target`, most FLOPs x calls first.

    Args:
        model: a path to an .onnx file, its bytes, an onnx.ModelProto or an ember Graph.
        target: the compilation target ("llvm", "llvm -mcpu=skylake-avx512", a Target).
        input_shapes: static shapes for inputs with symbolic dimensions.
        opt_level: the graph optimization level the model will be compiled at.

    Returns:
        one Task per distinct kernel whose space has more than one config; `weight` is its
        calls per model run. Kernels of equal FLOPs x calls keep the model's order.
    """
    from ember.backends import get_backend
    from ember.compiler.build import plan_kernels

    target = Target.parse(target)
    family = get_backend(target).TEMPLATE_FAMILY
    if family is None:
        raise TuningError(f"target {str(target)!r} runs no kernels, so it has nothing to "
                          f"tune; use an llvm target")
    graph, kernels = plan_kernels(_import_graph(model, input_shapes), target, opt_level)
    calls = Counter(call.kernel for call in kernels.calls)
    tasks = [Task(kernels.workloads[name], target, family, calls[name])
             for name in kernels.names]
    tasks = [task for task in tasks if len(task.space()) > 1]
    return sorted(tasks, key=lambda task: task.flops * task.weight, reverse=True)


#: friendly names for ONNX operators (`ember tune --op conv2d`)
OP_ALIASES = {
    "conv": "Conv", "conv2d": "Conv", "depthwise_conv2d": "Conv", "conv_transpose": "ConvTranspose",
    "matmul": "MatMul", "dense": "Gemm", "gemm": "Gemm", "pool": "MaxPool",
    "max_pool": "MaxPool", "avg_pool": "AveragePool", "softmax": "Softmax",
}


def onnx_op_type(op: str) -> str:
    """The ONNX operator type for `op`: an alias (conv2d, matmul, dense) or an ONNX name."""
    return OP_ALIASES.get(op.lower(), op)


def op_model(op: str, shapes: Sequence[Sequence[int]], attrs: Mapping[str, Any] | None = None,
             dtype: str = "float32", seed: int = 0) -> Any:
    """A one-node ONNX model of `op` whose first input is the graph input and whose other
    inputs are initializers of seeded random values (as weights are in a model)."""
    import onnx
    from onnx import helper, numpy_helper

    if not shapes:
        raise TuningError(f"operator {op!r} needs the shapes of its inputs (--shape ...)")
    op_type = onnx_op_type(op)
    try:
        onnx.defs.get_schema(op_type)
    except onnx.defs.SchemaError:
        raise TuningError(f"unknown operator {op!r}: give an ONNX operator type (Conv, MatMul, "
                          f"Gemm, ...) or one of {sorted(OP_ALIASES)}") from None
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(seed)
    names = [f"in{k}" for k in range(len(shapes))]
    weights = [numpy_helper.from_array(rng.standard_normal(tuple(shape)).astype(dtype) * 0.1,
                                       name)
               for name, shape in zip(names[1:], shapes[1:])]
    node = helper.make_node(op_type, names, ["out"], name=f"{op_type.lower()}0",
                            **dict(attrs or {}))
    graph = helper.make_graph([node], f"{op_type.lower()}_task",
                              [helper.make_tensor_value_info(names[0], elem, list(shapes[0]))],
                              [helper.make_tensor_value_info("out", elem, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    try:
        # the output's shape, which the checker wants declared, comes from shape inference
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        shown = ", ".join("x".join(map(str, s)) for s in shapes)
        raise TuningError(f"operator {op_type} with inputs {shown} and attributes "
                          f"{dict(attrs or {})} is not valid ONNX: {error}") from None


def op_task(op: str, shapes: Sequence[Sequence[int]], attrs: Mapping[str, Any] | None = None,
            dtype: str = "float32", target: str | Target = "llvm") -> Task:
    """The task of the most expensive kernel of one operator, compiled as in a model.

    Args:
        op: an ONNX operator type ("Conv", "MatMul", "Gemm") or an alias ("conv2d", "matmul",
            "dense"); a depthwise convolution is "conv2d" with attrs {"group": channels}.
        shapes: the shapes of its inputs, in ONNX order; the first is the graph input, the
            others (weights, bias) are constants, so layout passes pack them as in a model.
        attrs: ONNX attributes (e.g. {"pads": [1, 1, 1, 1], "strides": [2, 2]}).
        dtype: element type of every input.
        target: the compilation target.

    Returns:
        the tunable kernel with the most FLOPs (at opt level 3 a conv2d is its NCHW16c kernel).
    """
    model = op_model(op, shapes, attrs, dtype)
    tasks = extract_tasks(model, target)
    if not tasks:
        raise TuningError(f"operator {op} on inputs {[list(s) for s in shapes]} compiles to "
                          f"no kernel with a choice to tune")
    return max(tasks, key=lambda task: task.flops)


__all__ = ["OP_ALIASES", "Task", "TuningError", "extract_tasks", "onnx_op_type", "op_model",
           "op_task"]

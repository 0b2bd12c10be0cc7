"""Shared test helpers: build one-node ONNX models and check ember against an oracle.

The oracle for ops is onnx's own `onnx.reference.ReferenceEvaluator`, independent of ember's
numpy references; whole models are checked against ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.ir.graph import Graph, dtype_name, format_graph, is_float
from ember.ir.verify import verify
from ember.runtime.reference import ReferenceExecutor

#: (rtol, atol) by dtype for comparing ember with an oracle
TOLERANCES = {
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
    "float32": (1e-5, 1e-6),
    "float64": (1e-10, 1e-12),
}


def tolerance(dtype: Any) -> tuple[float, float]:
    return TOLERANCES.get(np.dtype(dtype).name, (0.0, 0.0))


def _value_info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(array.dtype)
    return helper.make_tensor_value_info(name, elem, array.shape)


def node_model(
    op_type: str,
    inputs: Sequence[tuple[str, np.ndarray | None]],
    attrs: Mapping[str, Any] | None = None,
    *,
    initializers: Sequence[str] = (),
    outputs: Sequence[str] | int = 1,
    output_arrays: Sequence[np.ndarray] | None = None,
    opset: int = 18,
    domain: str = "",
) -> onnx.ModelProto:
    """A model with one node. `inputs` are (name, array) pairs; a None array is an omitted
    optional input (""). Inputs named in `initializers` become initializers (constants)."""
    if isinstance(outputs, int):
        output_names = [f"out{i}" for i in range(outputs)]
    else:
        output_names = list(outputs)
    node = helper.make_node(op_type, [n if a is not None else "" for n, a in inputs],
                            output_names, domain=domain or None, **(attrs or {}))
    graph_inputs = [_value_info(n, a) for n, a in inputs if a is not None and n not in initializers]
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in inputs if n in initializers]
    if output_arrays is None:
        graph_outputs = [helper.make_empty_tensor_value_info(n) for n in output_names]
    else:
        graph_outputs = [_value_info(n, a) for n, a in zip(output_names, output_arrays)]
    graph = helper.make_graph([node], f"{op_type}_test", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def onnx_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, dict(feeds))]


def check_node(
    op_type: str,
    inputs: Sequence[tuple[str, np.ndarray | None]],
    attrs: Mapping[str, Any] | None = None,
    *,
    initializers: Sequence[str] = (),
    outputs: Sequence[str] | int = 1,
    opset: int = 18,
    rtol: float | None = None,
    atol: float | None = None,
    target: str = "reference",
) -> list[np.ndarray]:
    """Compile a one-node model with ember and check every output against onnx's reference
    evaluator: same shapes, same dtypes, values allclose at the dtype's tolerance (NaNs equal).
    Ember's declared output types are checked too. Returns ember's outputs."""
    feeds = {n: a for n, a in inputs if a is not None and n not in initializers}
    probe = node_model(op_type, inputs, attrs, initializers=initializers, outputs=outputs,
                       opset=opset)
    expected = onnx_reference(probe, feeds)
    model = node_model(op_type, inputs, attrs, initializers=initializers, outputs=outputs,
                       opset=opset, output_arrays=expected)
    module = ember.compile(model, target=target)
    got = module.run(feeds)
    assert len(got) == len(expected)
    for spec, out, ref in zip(module.outputs, got, expected):
        assert out.shape == ref.shape, f"{spec.name}: shape {out.shape} != oracle {ref.shape}"
        assert out.dtype == ref.dtype, f"{spec.name}: dtype {out.dtype} != oracle {ref.dtype}"
        assert spec.shape == ref.shape and spec.dtype == dtype_name(out.dtype), (
            f"{spec.name}: declared {spec} but produced {out.dtype}{list(out.shape)}")
        assert_values_match(out, ref, rtol, atol, f"{op_type} output {spec.name}")
    return got


def assert_values_match(out: np.ndarray, ref: np.ndarray, rtol: float | None,
                        atol: float | None, what: str) -> None:
    """Floats allclose at the dtype's tolerance (unless given; NaNs equal), strings and
    integers exactly."""
    default_rtol, default_atol = tolerance(ref.dtype)
    r = default_rtol if rtol is None else rtol
    a = default_atol if atol is None else atol
    if is_float(dtype_name(ref.dtype)) or ref.dtype.kind == "c":
        # bfloat16 and float8 (ml_dtypes) compare through float32: numpy cannot directly
        widen = ref.dtype.kind == "V"
        np.testing.assert_allclose(out.astype(np.float32) if widen else out,
                                   ref.astype(np.float32) if widen else ref,
                                   rtol=r, atol=a, equal_nan=True, err_msg=what)
    elif dtype_name(ref.dtype) == "string":
        assert out.astype(object).tolist() == ref.astype(object).tolist(), what
    else:
        np.testing.assert_array_equal(out, ref, err_msg=what)


def check_kernel(
    op: str,
    inputs: Sequence[np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    target: str = "llvm",
    family: str = "cpu",
    config: Any = None,
    interpret: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
) -> list[np.ndarray]:
    """Compile one graph-IR op through its template (compute, schedule, lowering, passes) and
    check it against the op's numpy reference: natively through LLVM, or with the loop-IR
    interpreter when `interpret`. None inputs are omitted optional inputs."""
    from ember.compiler.ops import Workload, instantiate
    from ember.ir.graph import TensorType, numpy_dtype
    from ember.ir.interpreter import run_primfunc
    from ember.ir.ops import get_op
    from ember.target import Target

    opdef = get_op(op)
    full_attrs = opdef.make_attrs(attrs)
    input_types = tuple(TensorType.of(x) if x is not None else None for x in inputs)
    output_types = opdef.infer_types(full_attrs, input_types)
    workload = Workload(op, full_attrs, input_types, output_types)
    func = instantiate(workload, family, Target.parse(target), config)
    expected = opdef.evaluate(full_attrs, list(inputs))
    outputs = [np.zeros(t.shape, numpy_dtype(t.dtype)) for t in output_types]
    args = [x for x in inputs if x is not None] + outputs
    if interpret:
        run_primfunc(func, args)
    else:
        from ember.backends.llvm import compile_primfuncs

        compile_primfuncs([func], target).get(func.name)(*args)
    for index, (out, ref) in enumerate(zip(outputs, expected)):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert_values_match(out, ref, rtol, atol, f"{op} output {index}")
    return outputs


def check_lowered(sch: Any, tensors: Sequence[Any], reference: Any, name: str = "f",
                  func: Any = None, seed: int = 3) -> Any:
    """Lower `sch` (unless `func` is given), run it with the loop-IR interpreter on seeded
    random inputs, and compare the outputs with `reference(*inputs)`. Returns the function."""
    from ember.ir import te
    from ember.ir.interpreter import run_primfunc
    from ember.ir.lower import lower

    func = func or lower(sch, tensors, name)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(t.static_shape).astype(t.dtype) for t in tensors
              if isinstance(t.op, te.PlaceholderOp)]
    outputs = [np.zeros(t.static_shape, t.dtype) for t in tensors
               if not isinstance(t.op, te.PlaceholderOp)]
    run_primfunc(func, inputs + outputs)
    expected = reference(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return func


def evaluate(graph: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """`graph`'s outputs on `feeds` (input name -> array), by the reference executor: the
    oracle of the graph-pass tests (a pass must not change what a graph computes)."""
    return ReferenceExecutor(graph).run([feeds[name] for name in graph.inputs])


def assert_graphs_match(actual: Graph, expected: Graph, rtol: float = 1e-6,
                        atol: float = 0.0) -> None:
    """`actual` verifies and has `expected`'s nodes, names and types; constants equal by
    name within `rtol`/`atol`."""
    verify(actual)
    assert format_graph(actual, show_constants=False) == format_graph(
        expected, show_constants=False)
    assert sorted(actual.constants) == sorted(expected.constants)
    for name, array in expected.constants.items():
        np.testing.assert_allclose(actual.constants[name], array, rtol=rtol, atol=atol)

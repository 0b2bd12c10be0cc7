"""Reductions, ArgMax/ArgMin and CumSum (ir/ops/reduce.py, frontend/onnx/reduce.py), checked
against onnx's ReferenceEvaluator."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from support import check_node, node_model, onnx_reference

import ember
from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops import Pattern, get_op

# onnx's reference (and numpy under it) warns on empty means and overflows
pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning:onnx.reference.*"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy.*")]

RNG = np.random.default_rng(1)

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
#: the first opset where each op takes its axes as an input
AXES_INPUT_SINCE = {op: 13 if op == "ReduceSum" else 18 for op in REDUCE_OPS}
#: ops whose inputs must be positive (log of a sum)
POSITIVE = {"ReduceLogSum"}


def data(op, shape, dtype="float32"):
    if dtype.startswith(("int", "uint")):
        low = 0 if dtype.startswith("u") or op in POSITIVE else -5
        return RNG.integers(low, 6, size=shape).astype(dtype)
    if op in POSITIVE:
        return RNG.uniform(0.1, 2, size=shape).astype(dtype)
    if op == "ReduceProd":
        return RNG.uniform(0.5, 1.5, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def check_reduce(op, x, axes, keepdims=1, noop=None, opset=18, axes_as_input=None):
    """Check op over `axes` (None: the attribute/input is left out)."""
    if axes_as_input is None:
        axes_as_input = opset >= AXES_INPUT_SINCE[op]
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    inputs = [("x", x)]
    if axes_as_input:
        inputs.append(("axes", None if axes is None else np.array(axes, np.int64)))
    elif axes is not None:
        attrs["axes"] = axes
    return check_node(op, inputs, attrs, initializers=["axes"] if axes is not None else [],
                      opset=opset)


AXES = [None, [1], [-1], [0, 2], [2, -3], [0, 1, 2]]


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_input(op, axes, keepdims):
    check_reduce(op, data(op, (2, 3, 4)), axes, keepdims, opset=18)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [None, [1], [0, -1]])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_attribute(op, axes, keepdims):
    check_reduce(op, data(op, (3, 2, 5)), axes, keepdims, opset=11)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int64", "uint32", "uint64"])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_dtypes(op, dtype):
    if dtype[0] in "iu" and op in ("ReduceLogSum", "ReduceLogSumExp"):
        pytest.skip("defined through exp/log: floats only")
    if op == "ReduceSumSquare" and dtype in ("int32", "uint32"):
        pytest.skip("onnx's reference ReduceSumSquare widens 32-bit integers to 64 bits")
    check_reduce(op, data(op, (4, 6), dtype), [1], 0, opset=18)
    check_reduce(op, data(op, (4, 6), dtype), None, 1, opset=18)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "bool"])
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_min_small_types(op, dtype):
    x = RNG.random((3, 4)) < 0.5 if dtype == "bool" else data(op, (3, 4), dtype)
    check_reduce(op, x, [0], 1, opset=20)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_scalar(op):
    x = np.array(0.75, np.float32)
    if op == "ReduceLogSumExp":  # onnx's reference ReduceLogSumExp fails on rank 0
        model = node_model(op, [("x", x)], opset=18, output_arrays=[x])
        assert ember.compile(model, target="reference").run({"x": x})[0] == x
        return
    check_reduce(op, x, None, 1, opset=18)
    check_reduce(op, x, None, 0, opset=11)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_empty_set(op, keepdims):
    # Reducing a zero-size axis gives the reduction's identity (-inf for a log of 0, ...).
    x = np.zeros((2, 0, 4), np.float32)
    check_reduce(op, x, [1], keepdims, opset=18)
    check_reduce(op, x, [0, 2], keepdims, opset=18)  # zero-size, but not a reduced axis


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_bfloat16(op):
    # check_node compares ml_dtypes exactly; compare at bfloat16's precision here
    x = data(op, (3, 5)).astype(ml_dtypes.bfloat16)
    inputs = [("x", x), ("axes", np.array([1], np.int64))]
    probe = node_model(op, inputs, initializers=["axes"], opset=18)
    (expected,) = onnx_reference(probe, {"x": x})
    model = node_model(op, inputs, initializers=["axes"], opset=18, output_arrays=[expected])
    (got,) = ember.compile(model, target="reference").run({"x": x})
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32),
                               rtol=2e-2, atol=1e-2)


def test_reduce_mean_empty_set_is_nan():
    out = check_reduce("ReduceMean", np.zeros((2, 0), np.float32), [1], 0)[0]
    assert np.isnan(out).all()


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_with_empty_axes(op):
    # No axes and noop_with_empty_axes: nothing is reduced, the elementwise part applies.
    check_reduce(op, data(op, (3, 4)), None, 1, noop=1, opset=18)
    check_reduce(op, data(op, (3, 4)), [], 0, noop=1, opset=18)
    check_reduce(op, data(op, (3, 4)), [], 0, noop=0, opset=18)


def test_reduce_sum_noop_with_axes_attribute_opset_13():
    check_reduce("ReduceSum", data("ReduceSum", (3, 4)), None, 1, noop=1, opset=13)


def test_reduce_log_sum_exp_is_stable():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, 0.0], [np.inf, 1.0, 2.0]],
                 np.float32)
    out = check_reduce("ReduceLogSumExp", x, [1], 0)[0]
    assert np.isfinite(out[:2]).all() and out[2] == np.inf
    for dtype in ["float16", "float64"]:
        check_reduce("ReduceLogSumExp", (RNG.standard_normal((4, 5)) * 5).astype(dtype), [0])


def test_reduce_l2_float16_squares_do_not_overflow():
    # 300**2 overflows float16; the composition squares in float32.
    x = np.full((2, 4), 300.0, np.float16)
    (out,) = ember.compile(node_model("ReduceL2", [("x", x)], {"keepdims": 0}, opset=11,
                                      output_arrays=[np.zeros((), np.float16)])).run({"x": x})
    np.testing.assert_allclose(out.astype(np.float32), 300.0 * np.sqrt(8), rtol=1e-3)


def test_reduce_mean_float16_accumulates_in_float32():
    x = np.full((4096,), 60.0, np.float16)  # the sum, 245760, overflows float16
    out = get_op("reduce_mean").evaluate(get_op("reduce_mean").make_attrs({"axes": (0,)}), [x])
    assert out[0] == np.float16(60.0)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_runtime_axes_specialize(op):
    # axes from a graph input: the module specializes on their value at run time
    check_node(op, [("x", data(op, (2, 3))), ("axes", np.array([1], np.int64))], opset=18)


def test_repeated_axes_fail():
    x = data("ReduceSum", (2, 3))
    model = node_model("ReduceSum", [("x", x), ("axes", np.array([1, -1], np.int64))],
                       initializers=["axes"], opset=13,
                       output_arrays=[np.zeros((2, 1), np.float32)])
    with pytest.raises(ember.FrontendError, match=r"axes \[1, -1\] name an axis twice"):
        ember.compile(model)


def test_log_reductions_reject_integers():
    x = np.ones((2, 3), np.int32)
    model = node_model("ReduceLogSumExp", [("x", x)], {"axes": [1]}, opset=13,
                       output_arrays=[np.zeros((2, 1), np.int32)])
    with pytest.raises(ember.FrontendError, match="input has dtype int32; ReduceLogSumExp"):
        ember.compile(model)


# ----------------------------------------------------------------------------- argmax/argmin


@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1, -3])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce(op, axis, keepdims, select_last_index):
    x = RNG.integers(0, 3, size=(3, 4, 5)).astype(np.float32)  # many ties
    check_node(op, [("x", x)],
               {"axis": axis, "keepdims": keepdims, "select_last_index": select_last_index},
               opset=13)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint8", "int64", "uint64"])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce_dtypes(op, dtype):
    x = RNG.integers(0, 50, size=(4, 6)).astype(dtype)
    check_node(op, [("x", x)], {"axis": 1}, opset=13)
    check_node(op, [("x", x)], {}, opset=11)  # default axis 0


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce_edge_shapes(op):
    check_node(op, [("x", RNG.standard_normal((5,)).astype(np.float32))], {"keepdims": 0})
    check_node(op, [("x", np.zeros((0, 3), np.float32))], {"axis": 1})


def test_arg_reduce_rejects_empty_axis():
    argmax = get_op("argmax")
    with pytest.raises(ShapeError, match=r"argmax: axis 0 of shape \(0, 3\) is empty"):
        argmax.infer_types(argmax.make_attrs({"axis": 0}), [TensorType((0, 3), "float32")])


# ----------------------------------------------------------------------------- cumsum


@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int32", "int64", "uint32"])
def test_cumsum(dtype, axis, exclusive, reverse):
    x = RNG.integers(0, 10, size=(3, 4)).astype(dtype)
    if dtype.startswith("float"):
        x = x + RNG.random((3, 4)).astype(dtype)
    for axis_dtype in [np.int64, np.int32]:
        check_node("CumSum", [("x", x), ("axis", np.array(axis, axis_dtype))],
                   {"exclusive": exclusive, "reverse": reverse}, initializers=["axis"], opset=14)


def test_cumsum_zero_size_and_1d():
    check_node("CumSum", [("x", np.zeros((0, 3), np.float32)), ("axis", np.array(0))],
               {"exclusive": 1}, initializers=["axis"], opset=14)
    check_node("CumSum", [("x", np.arange(6, dtype=np.float32)), ("axis", np.array(0))],
               {"reverse": 1, "exclusive": 1}, initializers=["axis"], opset=11)


def test_cumsum_runtime_axis_specializes():
    check_node("CumSum", [("x", np.ones((2, 3), np.float32)), ("axis", np.array(1))], opset=14)


# ----------------------------------------------------------------------------- the op table


@pytest.mark.parametrize("op,dtype", [("reduce_sum", "int8"), ("reduce_mean", "bool"),
                                      ("reduce_max", "int16"), ("reduce_prod", "string"),
                                      ("cumsum", "int8"), ("argmax", "bool")])
def test_reduce_rejects_dtype(op, dtype):
    opdef = get_op(op)
    attrs = opdef.make_attrs({"axis": 0} if op in ("cumsum", "argmax") else {"axes": (0,)})
    with pytest.raises(ShapeError, match=f"{op}: input has dtype {dtype}; {op} accepts"):
        opdef.infer_types(attrs, [TensorType((2, 3), dtype)])


@pytest.mark.parametrize("axes", [(1, 0), (0, 0), (2,), (-1,)])
def test_reduce_rejects_unresolved_axes(axes):
    op = get_op("reduce_sum")
    with pytest.raises(ShapeError, match=r"reduce_sum: axes .* must be distinct, ascending"):
        op.infer_types(op.make_attrs({"axes": axes}), [TensorType((2, 3), "float32")])


def test_pattern_kinds():
    for op in ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "argmax",
               "argmin"]:
        assert get_op(op).pattern == Pattern.REDUCE, op
    assert get_op("cumsum").pattern == Pattern.OPAQUE

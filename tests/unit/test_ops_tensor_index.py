"""Indexing ops (Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND, OneHot,
Compress, ReverseSequence) against onnx's ReferenceEvaluator, with run-time index tensors."""

import numpy as np
import pytest
from support import check_node
from test_ops_tensor import DTYPES, STRINGS, check_strings, compile_node, ints, sample

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops import Pattern, get_op


def indices(shape, dim, seed=0, dtype="int64", negative=True):
    """Random valid indices into an axis of size `dim` (negative ones too when asked)."""
    low = -dim if negative else 0
    return np.random.default_rng(seed).integers(low, dim, shape).astype(dtype)


# ----------------------------------------------------------------------------- gathers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("index_shape", [(), (4,), (2, 3)])
def test_gather(axis, index_shape, dtype):
    x = sample((3, 4, 5), dtype)
    idx = indices(index_shape, x.shape[axis])
    check_node("Gather", [("x", x), ("i", idx)], {"axis": axis}, opset=13)


@pytest.mark.parametrize("opset", [1, 11, 13])
def test_gather_constant_int32_indices(opset):
    x = sample((5, 3), "float32")
    check_node("Gather", [("x", x), ("i", np.array([[4, -1], [0, 2]], np.int32))],
               initializers=["i"], opset=opset)


def test_gather_strings():
    check_strings("Gather", [("x", STRINGS), ("i", ints(2, 0, -1))], {"axis": 1})


def test_gather_out_of_range_index_fails_at_run_time():
    module = compile_node("Gather", [("x", sample((3, 2))), ("i", ints(0, 1))], opset=13)
    with pytest.raises(ShapeError, match=r"gather: index 3 is out of range for axis 0 of size 3"):
        module.run({"x": sample((3, 2)), "i": ints(0, 3)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("length", [1, 3, 6])
def test_gather_elements(axis, length, dtype):
    x = sample((3, 4), dtype)
    shape = list(x.shape)
    shape[axis] = length  # onnx's reference wants the other dims equal to the data's
    idx = indices(shape, x.shape[axis])
    check_node("GatherElements", [("x", x), ("i", idx)], {"axis": axis}, opset=13)


def test_gather_elements_negative_axis():  # onnx's reference mishandles axis=-1
    inputs = [("x", sample((3, 4))), ("i", indices((3, 2), 4))]
    expected = check_node("GatherElements", inputs, {"axis": 1}, opset=13)
    module = compile_node("GatherElements", inputs, {"axis": -1}, opset=13)
    np.testing.assert_array_equal(module.run(dict(inputs))[0], expected[0])


def test_gather_elements_rank3_int32():
    x = sample((2, 3, 4), "int64")
    idx = indices((2, 2, 4), 3, dtype="int32")
    check_node("GatherElements", [("x", x), ("i", idx)], {"axis": -2}, opset=11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_shape, index_shape, batch_dims", [
    ((4, 5), (3, 2), 0), ((4, 5), (3, 1), 0), ((4, 5, 6), (2, 2, 2), 0), ((4,), (1,), 0),
    ((2, 4, 5), (2, 3, 1), 1), ((2, 3, 4, 5), (2, 3, 2), 2), ((2, 4, 5), (2, 2), 1),
])
def test_gather_nd(data_shape, index_shape, batch_dims, dtype):
    x = sample(data_shape, dtype)
    depth = index_shape[-1]
    rows = [indices(index_shape[:-1], data_shape[batch_dims + j], seed=j) for j in range(depth)]
    idx = np.stack(rows, axis=-1)
    check_node("GatherND", [("x", x), ("i", idx)], {"batch_dims": batch_dims}, opset=13)


def test_gather_nd_opset11():
    check_node("GatherND", [("x", sample((3, 4))), ("i", ints([0, 1], [2, -1]))], opset=11)


# ----------------------------------------------------------------------------- scatters


def distinct_indices(shape, dim, axis, seed=0):
    """Indices along `axis` without repeats within any line (ONNX leaves repeats without a
    reduction undefined); some negative."""
    rng = np.random.default_rng(seed)
    lines = np.moveaxis(np.zeros(shape, np.int64), axis, -1)
    flat = lines.reshape(-1, shape[axis])
    for row in flat:
        row[:] = rng.permutation(dim)[: shape[axis]]
    flat[::2] -= dim
    return np.moveaxis(flat.reshape(lines.shape), -1, axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(axis, dtype):
    x = sample((4, 5), dtype)
    shape = [2, 3]
    idx = distinct_indices(shape, x.shape[axis], axis % 2)
    updates = sample(shape, dtype, seed=1)
    check_node("ScatterElements", [("x", x), ("i", idx), ("u", updates)], {"axis": axis},
               opset=13)


@pytest.mark.parametrize("reduction, opset", [("none", 16), ("add", 16), ("mul", 16),
                                              ("max", 18), ("min", 18)])
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_scatter_elements_reductions_with_repeats(reduction, opset, dtype):
    x = sample((3, 4), dtype)
    idx = ints([1, 1, 0, -1], [2, 2, 2, 0]) if reduction != "none" else ints([1, 0, 2, -1])
    updates = sample(idx.shape, dtype, seed=2)
    check_node("ScatterElements", [("x", x), ("i", idx), ("u", updates)],
               {"axis": 0, "reduction": reduction}, opset=opset)


@pytest.mark.parametrize("opset", [9, 10])
def test_scatter_deprecated(opset):  # onnx's reference lacks Scatter: compare to its successor
    inputs = [("x", sample((3, 3))), ("i", ints([1, 0, 2], [0, 2, -1])),
              ("u", sample((2, 3), seed=3))]
    expected = check_node("ScatterElements", inputs, {"axis": 1}, opset=11)
    module = compile_node("Scatter", inputs, {"axis": 1}, opset=opset)
    np.testing.assert_array_equal(module.run(dict(inputs))[0], expected[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_shape, index_shape", [
    ((8,), (4, 1)), ((4, 4, 4), (2, 1)), ((4, 5, 6), (2, 3, 2)), ((3, 4), (2,)),
])
def test_scatter_nd(data_shape, index_shape, dtype):
    x = sample(data_shape, dtype)
    depth = index_shape[-1]
    count = int(np.prod(index_shape[:-1]))
    # distinct rows: take distinct flat positions over the indexed axes
    positions = np.random.default_rng(0).permutation(int(np.prod(data_shape[:depth])))[:count]
    idx = np.stack(np.unravel_index(positions, data_shape[:depth]), -1).reshape(index_shape)
    idx[..., 0] -= data_shape[0] * (idx[..., 0] % 2)  # some negative indices
    updates = sample(index_shape[:-1] + data_shape[depth:], dtype, seed=4)
    check_node("ScatterND", [("x", x), ("i", idx), ("u", updates)], opset=13)


@pytest.mark.parametrize("reduction, opset", [("add", 16), ("mul", 16), ("max", 18),
                                              ("min", 18)])
def test_scatter_nd_reductions_with_repeats(reduction, opset):
    x = sample((4, 3))
    idx = ints([1], [1], [-1], [0])
    check_node("ScatterND", [("x", x), ("i", idx), ("u", sample((4, 3), seed=5))],
               {"reduction": reduction}, opset=opset)


def test_scatter_is_opaque_and_gather_injective():
    assert get_op("scatter_elements").pattern == Pattern.OPAQUE
    assert get_op("scatter_nd").pattern == Pattern.OPAQUE
    for name in ["gather", "gather_elements", "gather_nd", "one_hot", "reverse_sequence"]:
        assert get_op(name).pattern == Pattern.INJECTIVE


def test_unknown_scatter_reduction_fails():
    with pytest.raises(ShapeError, match=r"reduction 'avg' is not one of"):
        opdef = get_op("scatter_nd")
        t = TensorType((4,), "float32")
        opdef.infer_types(opdef.make_attrs({"reduction": "avg"}),
                          [t, TensorType((1, 1), "int64"), TensorType((1,), "float32")])


# ----------------------------------------------------------------------------- one_hot and others


@pytest.mark.parametrize("axis", [-1, 0, 1, -2, 2])
@pytest.mark.parametrize("index_dtype, value_dtype", [("int64", "float32"), ("float32", "int64"),
                                                      ("int32", "float16")])
def test_one_hot(axis, index_dtype, value_dtype):
    idx = np.array([[0, 3, -1], [-4, 7, 2]]).astype(index_dtype)  # 7 and -5 are out of range
    values = np.array([-2, 5]).astype(value_dtype)
    check_node("OneHot", [("i", idx), ("depth", np.array(4, np.int64)), ("v", values)],
               {"axis": axis}, initializers=["depth"], opset=11)


def test_one_hot_float_depth_opset9():
    check_node("OneHot", [("i", ints(1, 0, 2)), ("depth", np.array(3.0, np.float32)),
                          ("v", np.array([0.0, 1.0], np.float32))],
               initializers=["depth"], opset=9)


def test_one_hot_depth_from_a_graph_input_specializes():
    check_node("OneHot", [("i", ints(1, 0)), ("depth", np.array(3, np.int64)),
                          ("v", np.array([0.0, 1.0], np.float32))], opset=11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress(axis, dtype):
    x = sample((3, 4), dtype)
    size = x.size if axis is None else x.shape[axis]
    condition = np.arange(size - 1) % 3 != 1  # shorter than the axis, as numpy allows
    attrs = {} if axis is None else {"axis": axis}
    check_node("Compress", [("x", x), ("c", condition)], attrs, initializers=["c"], opset=11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_axis, time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis, dtype):
    x = sample((4, 4, 3) if time_axis == 0 else (3, 5, 2), dtype)
    lengths = ints(4, 3, 1, 2) if time_axis == 0 else ints(5, 1, 3)
    check_node("ReverseSequence", [("x", x), ("lengths", lengths)],
               {"batch_axis": batch_axis, "time_axis": time_axis}, opset=10)

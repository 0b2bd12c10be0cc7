"""Kernels of the injective ops (ir/ops/tensor.py, ir/ops/index.py) and of the scatters:
every op compiled through its template (compiler/ops/compute/injective.py with the CPU
injective schedule; scatters as externs, compiler/ops/cpu/scan.py) with the LLVM backend, and a
few through the loop-IR interpreter, checked against the op's numpy reference over shapes
(rank 0 where the op takes it, size-1 dims, lengths that are not a multiple of the vector
width, empty dims) and dtypes (float32, float16, int32, int64, bool).

Gathers and scatters clamp indices the reference would reject (compiled code never reads or
writes outside a buffer): `test_out_of_range_indices_are_clamped` pins that behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import check_kernel
from test_templates_elementwise import kernel, loops, vector_stores

from ember.compiler.ops import Workload, instantiate
from ember.ir import loop as L
from ember.ir.expr import Ramp
from ember.ir.graph import TensorType
from ember.ir.interpreter import run_primfunc
from ember.ir.ops import get_op
from ember.ir.visitor import collect
from ember.target import Target

RNG = np.random.default_rng(5)
DTYPES = ("float32", "float16", "int32", "int64", "bool")


def sample(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    if dtype == "bool":
        return RNG.random(shape) < 0.5
    if dtype.startswith("int"):
        return RNG.integers(-100, 100, shape).astype(dtype)
    return (RNG.standard_normal(shape) * 3).astype(dtype)


def indices(shape: tuple[int, ...], dim: int, dtype: str = "int64") -> np.ndarray:
    """Valid indices of an axis of size `dim`, negative ones included."""
    return RNG.integers(-dim, dim, shape).astype(dtype)


# ----------------------------------------------------------------------------- shape ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (37,), (2, 0, 3), (2, 3, 17)], ids=str)
def test_identity(shape, dtype):
    check_kernel("identity", [sample(shape, dtype)])


@pytest.mark.parametrize("shape, target", [
    ((2, 3, 4, 5), (6, 20)), ((2, 3, 4, 5), (2, 60)), ((2, 3, 4, 5), (120,)),
    ((2, 3, 4, 5), (3, 2, 5, 4)), ((2, 3, 4, 5), (1, 2, 1, 60, 1)), ((120,), (2, 3, 4, 5)),
    ((), (1, 1)), ((1, 1), ()), ((0, 3), (3, 0)), ((6, 35), (210,)),
], ids=str)
def test_reshape(shape, target):
    check_kernel("reshape", [sample(shape)], {"shape": target})


@pytest.mark.parametrize("dtype", ["float16", "int64", "bool"])
def test_reshape_dtypes(dtype):
    check_kernel("reshape", [sample((4, 9, 5), dtype)], {"shape": (36, 5)})


@pytest.mark.parametrize("shape, perm", [((2, 3, 4, 5), (0, 2, 3, 1)),
                                         ((2, 3, 4, 5), (3, 2, 1, 0)), ((37, 19), (1, 0)),
                                         ((1, 5), (1, 0)), ((3, 0, 2), (2, 0, 1)),
                                         ((4,), (0,))], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_transpose(shape, perm, dtype):
    check_kernel("transpose", [sample(shape, dtype)], {"perm": perm})


@pytest.mark.parametrize("shapes, axis", [
    (((2, 3, 4), (2, 5, 4), (2, 1, 4)), 1), (((2, 3, 4), (2, 3, 17)), 2),
    (((3,), (5,)), 0), (((2, 0), (2, 3)), 1), (((2, 3),), 0), (((0, 3), (0, 3)), 1),
    (((1, 7), (2, 7)), 0),
], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
def test_concat(shapes, axis, dtype):
    check_kernel("concat", [sample(s, dtype) for s in shapes], {"axis": axis})


@pytest.mark.parametrize("shape, starts, ends, steps", [
    ((2, 5, 37), (0, 1, 3), (2, 4, 37), (1, 1, 1)),
    ((2, 5, 37), (1, 4, 36), (0, -1, -1), (-1, -2, -3)),
    ((6, 7), (0, 0), (6, 7), (2, 3)),
    ((6, 7), (3, 2), (3, 2), (1, 1)),  # empty
    ((4,), (3,), (-1,), (-1,)),
], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_slice(shape, starts, ends, steps, dtype):
    check_kernel("slice", [sample(shape, dtype)],
                 {"starts": starts, "ends": ends, "steps": steps})


@pytest.mark.parametrize("shape, repeats", [((2, 3, 4), (1, 2, 3)), ((5,), (4,)),
                                            ((), ()), ((2, 3), (0, 2)), ((1, 17), (3, 1))],
                         ids=str)
@pytest.mark.parametrize("dtype", ["float32", "bool"])
def test_tile(shape, repeats, dtype):
    check_kernel("tile", [sample(shape, dtype)], {"repeats": repeats})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape, pads", [
    ((2, 3, 4, 5), ((0, 0), (1, 2), (3, 1), (2, 7))),
    ((6,), ((5, 9),)),
    ((1, 4), ((2, 2), (0, 0))),
    ((3, 17), ((0, 0), (0, 0))),
], ids=str)
def test_pad(shape, pads, mode):
    check_kernel("pad", [sample(shape)], {"pads": pads, "mode": mode})


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "bool"])
def test_pad_with_value(dtype):
    value = sample((), dtype)
    check_kernel("pad", [sample((3, 5), dtype), value], {"pads": ((1, 0), (2, 3))})


def test_pad_empty_input():
    check_kernel("pad", [sample((0, 3))], {"pads": ((1, 1), (0, 2))})
    check_kernel("pad", [sample((0, 3)), sample(())], {"pads": ((2, 0), (1, 1))})


@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize("k", [-2, 0, 3])
@pytest.mark.parametrize("shape", [(2, 5, 7), (4, 4), (3, 1), (2, 0, 3)], ids=str)
def test_trilu(shape, k, upper):
    check_kernel("trilu", [sample(shape)], {"upper": upper, "k": k})


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_trilu_dtypes(dtype):
    check_kernel("trilu", [sample((5, 6), dtype)], {"upper": False, "k": 1})


# ----------------------------------------------------------------------------- gathers


@pytest.mark.parametrize("data_shape, index_shape, axis", [
    ((5, 37), (4,), 0), ((5, 37), (3, 2), 1), ((2, 3, 4), (), 1), ((4, 6), (0,), 0),
    ((7,), (2, 3, 5), 0), ((3, 1), (4,), 1),
], ids=str)
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_gather(data_shape, index_shape, axis, index_dtype):
    idx = indices(index_shape, data_shape[axis], index_dtype)
    check_kernel("gather", [sample(data_shape), idx], {"axis": axis})


@pytest.mark.parametrize("dtype", ["float16", "int32", "bool"])
def test_gather_dtypes(dtype):
    check_kernel("gather", [sample((6, 5), dtype), indices((3,), 5)], {"axis": 1})


@pytest.mark.parametrize("data_shape, index_shape, axis", [
    ((4, 5, 6), (4, 5, 6), 1), ((4, 5, 6), (2, 7, 3), 1), ((4, 5, 6), (4, 5, 9), 2),
    ((5,), (8,), 0), ((3, 4), (0, 4), 0),
], ids=str)
def test_gather_elements(data_shape, index_shape, axis):
    idx = indices(index_shape, data_shape[axis], "int32")
    check_kernel("gather_elements", [sample(data_shape), idx], {"axis": axis})


@pytest.mark.parametrize("data_shape, index_shape, batch_dims", [
    ((4, 5, 6), (3, 2), 0), ((4, 5, 6), (2, 2, 3), 0), ((4, 5, 6), (7, 1), 0),
    ((4, 5, 6), (4, 2, 1), 1), ((4, 5, 6), (4, 5, 1), 2), ((4, 5), (3, 0), 0),
    ((3, 5), (3, 0), 1),
], ids=str)
def test_gather_nd(data_shape, index_shape, batch_dims):
    depth = index_shape[-1]
    dims = data_shape[batch_dims:batch_dims + depth]
    idx = np.stack([indices(index_shape[:-1], d) for d in dims], axis=-1) if depth else \
        np.zeros(index_shape, np.int64)
    check_kernel("gather_nd", [sample(data_shape), idx.astype(np.int64)],
                 {"batch_dims": batch_dims})


def test_gather_from_an_empty_axis():
    check_kernel("gather", [sample((0, 3)), indices((0,), 1)], {"axis": 0})
    check_kernel("gather_elements", [sample((2, 0)), np.zeros((2, 0), np.int64)], {"axis": 1})


def gather_kernel(op, inputs, attrs):
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    types = tuple(TensorType.of(x) for x in inputs)
    outs = opdef.infer_types(full, types)
    func = instantiate(Workload(op, full, types, outs), "cpu", Target.parse("llvm"))
    result = np.zeros(outs[0].shape, outs[0].dtype)
    run_primfunc(func, [*inputs, result])  # the interpreter raises on an out-of-bounds access
    return result


def test_out_of_range_indices_are_clamped():
    data = np.arange(10, dtype=np.float32).reshape(2, 5)
    out = gather_kernel("gather", [data, np.array([-9, -1, 4, 7, 100], np.int64)], {"axis": 1})
    np.testing.assert_array_equal(out, data[:, [0, 4, 4, 4, 4]])
    out = gather_kernel("gather_nd", [data, np.array([[5, -20]], np.int64)], {})
    np.testing.assert_array_equal(out, [data[1, 0]])


@pytest.mark.parametrize("index_dtype", ["int64", "int32", "float32"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_one_hot(axis, index_dtype):
    idx = RNG.integers(-6, 6, (3, 4)).astype(index_dtype)
    check_kernel("one_hot", [idx, np.array([-1.5, 2.0], np.float32)],
                 {"depth": 5, "axis": axis})


def test_one_hot_values_dtype_and_scalar_indices():
    check_kernel("one_hot", [np.array(2, np.int64), np.array([0, 7], np.int32)],
                 {"depth": 3, "axis": 0})


@pytest.mark.parametrize("batch_axis, time_axis", [(1, 0), (0, 1)])
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_reverse_sequence(batch_axis, time_axis, dtype):
    shape = [0, 0, 5]
    shape[batch_axis], shape[time_axis] = 3, 6
    lengths = np.array([1, 6, 3], np.int64)
    check_kernel("reverse_sequence", [sample(tuple(shape), dtype), lengths],
                 {"batch_axis": batch_axis, "time_axis": time_axis})


# ----------------------------------------------------------------------------- scatters

REDUCTIONS = ["none", "add", "mul", "max", "min"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis, index_shape", [(0, (7, 4, 5)), (1, (3, 7, 6)), (2, (4, 5, 9))],
                         ids=str)
def test_scatter_elements(axis, index_shape, reduction):
    data = sample((4, 5, 6))
    idx = indices(index_shape, data.shape[axis])
    check_kernel("scatter_elements", [data, idx, sample(index_shape)],
                 {"axis": axis, "reduction": reduction})


@pytest.mark.parametrize("dtype", ["float16", "int32", "bool"])
@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_elements_dtypes(dtype, reduction):
    data = sample((3, 37), dtype)
    check_kernel("scatter_elements", [data, indices((2, 37), 3, "int32"),
                                      sample((2, 37), dtype)], {"axis": 0, "reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("index_shape", [(3, 2), (2, 2, 1), (4, 3), (2, 0)], ids=str)
def test_scatter_nd(index_shape, reduction):
    data = sample((4, 5, 6))
    depth = index_shape[-1]
    idx = np.stack([indices(index_shape[:-1], d) for d in data.shape[:depth]], axis=-1) \
        if depth else np.zeros(index_shape, np.int64)
    updates = sample(index_shape[:-1] + data.shape[depth:])
    check_kernel("scatter_nd", [data, idx.astype(np.int64), updates], {"reduction": reduction})


@pytest.mark.parametrize("dtype", ["float16", "int64", "bool"])
def test_scatter_nd_dtypes(dtype):
    data = sample((6, 37), dtype)
    check_kernel("scatter_nd", [data, indices((4, 1), 6), sample((4, 37), dtype)],
                 {"reduction": "add" if dtype != "bool" else "none"})


def test_scatter_edge_shapes():
    check_kernel("scatter_nd", [sample(()), np.zeros((0,), np.int64), sample(())])
    check_kernel("scatter_nd", [sample((3, 4)), np.zeros((0, 1), np.int64), sample((0, 4))])
    check_kernel("scatter_elements", [sample((3, 4)), np.zeros((0, 4), np.int64),
                                      sample((0, 4))], {"axis": 0})
    check_kernel("scatter_elements", [sample(()).reshape(1), np.zeros((1,), np.int64),
                                      sample((1,))], {"axis": 0})


def test_large_scatter_nd_runs_slices_in_parallel():
    data = sample((64, 4096))
    idx = indices((100, 1), 64)
    check_kernel("scatter_nd", [data, idx, sample((100, 4096))], {"reduction": "add"})
    func = kernel("scatter_nd", [((64, 4096), "float32"), ((100, 1), "int64"),
                                 ((100, 4096), "float32")], {"reduction": "add"})
    assert loops(func, L.ForKind.PARALLEL) and vector_stores(func)


# ----------------------------------------------------------------------------- interpreter


@pytest.mark.parametrize("op, inputs, attrs", [
    ("reshape", [sample((2, 3, 4))], {"shape": (4, 6)}),
    ("transpose", [sample((2, 3, 4))], {"perm": (2, 0, 1)}),
    ("concat", [sample((2, 3)), sample((2, 5))], {"axis": 1}),
    ("pad", [sample((3, 4))], {"pads": ((1, 2), (3, 1)), "mode": "reflect"}),
    ("slice", [sample((5, 6))], {"starts": (4, 1), "ends": (0, 6), "steps": (-2, 2)}),
    ("gather", [sample((4, 5)), indices((3,), 5)], {"axis": 1}),
    ("gather_nd", [sample((4, 5)), indices((2, 1), 4)], {}),
    ("one_hot", [indices((3,), 4), np.array([0, 1], np.int64)], {"depth": 4, "axis": 1}),
    ("scatter_elements", [sample((3, 4)), indices((2, 4), 3), sample((2, 4))],
     {"axis": 0, "reduction": "add"}),
    ("scatter_nd", [sample((4, 5)), indices((2, 1), 4), sample((2, 5))], {}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_interpreted(op, inputs, attrs):
    check_kernel(op, inputs, attrs, interpret=True)


# ----------------------------------------------------------------------------- schedule


def test_large_transpose_is_parallel_and_vectorized():
    func = kernel("transpose", [((64, 64, 32, 32), "float32")], {"perm": (0, 2, 3, 1)})
    assert len(loops(func, L.ForKind.PARALLEL)) == 1
    assert vector_stores(func)


def test_channel_concat_reads_whole_vectors():
    func = kernel("concat", [((8, 32, 28, 28), "float32"), ((8, 16, 28, 28), "float32")],
                  {"axis": 1})
    stores = vector_stores(func)  # one per input: the concat's select became a branch
    assert len(stores) == 2
    for store in stores:
        assert store.indices[0].stride.value == 1
        assert len(collect(store.value, L.Load)) == 1


def test_flatten_copies_contiguous_vectors():
    # merging (C, H, W) into one axis reads through div/mod; the reshape schedule splits the
    # merged axis along the input's axes, so loads are contiguous too, not gathers
    func = kernel("reshape", [((8, 64, 32, 32), "float32")], {"shape": (8, 65536)})
    (store,) = vector_stores(func)
    (load,) = collect(store.value, L.Load)
    assert isinstance(load.indices[0], Ramp) and load.indices[0].stride.value == 1

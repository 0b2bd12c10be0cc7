"""Kernels of the reductions (reduce_sum/mean/prod/max/min, argmax, argmin) and of cumsum:
compiled through their templates (compiler/ops/compute/reduce.py with the CPU reduce
schedule; cumsum as an extern, compiler/ops/cpu/scan.py) with the LLVM backend, and a few
through the loop-IR interpreter, checked against the ops' numpy references over axes
(innermost, outer, several, none, all), keepdims, shapes (rank 0, size 1, non-multiples of
the vector width, empty reduced and kept axes) and dtypes (float32, float16, int32, int64,
bool where taken).
"""

from __future__ import annotations

import numpy as np
import pytest
from support import check_kernel
from test_templates_elementwise import kernel, loops, vector_stores

from ember.errors import ShapeError
from ember.ir import loop as L
from ember.ir.graph import TensorType
from ember.ir.ops import get_op

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(3)
REDUCTIONS = ["reduce_sum", "reduce_mean", "reduce_prod", "reduce_max", "reduce_min"]


def sample(shape: tuple[int, ...], dtype: str = "float32", op: str = "") -> np.ndarray:
    if dtype == "bool":
        return RNG.random(shape) < 0.5
    if dtype.startswith(("int", "uint")):
        return RNG.integers(-3 if op == "reduce_prod" else -100, 4 if op == "reduce_prod"
                            else 100, shape).astype(dtype)
    scale = 0.2 if op == "reduce_prod" else 1.0  # products of many normals overflow
    x = RNG.standard_normal(shape) * scale + (1.0 if op == "reduce_prod" else 0.0)
    return x.astype(dtype)


def accepts(op: str, dtype: str) -> bool:
    opdef = get_op(op)
    try:
        opdef.infer_types(opdef.make_attrs({"axes": (0,)}), [TensorType((2,), dtype)])
    except ShapeError:
        return False
    return True


AXES = [(2,), (1,), (0,), (0, 2), (1, 2), (0, 1, 2), ()]


@pytest.mark.parametrize("axes, keepdims", [(axes, k % 2 == 0) for k, axes in enumerate(AXES)]
                         + [((1,), False), ((0, 2), True)], ids=str)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reduce_axes(op, axes, keepdims):
    x = sample((3, 5, 37), op=op)
    # sums round differently from numpy's pairwise summation: allow for cancellation
    atol = 1e-4 if op in ("reduce_sum", "reduce_mean") else None
    check_kernel(op, [x], {"axes": axes, "keepdims": keepdims}, atol=atol)


DTYPE_CASES = [(op, d) for op in REDUCTIONS for d in ("float16", "int32", "int64", "bool")
               if accepts(op, d)]


@pytest.mark.parametrize("axes", [(1,), (2,)], ids=str)
@pytest.mark.parametrize("op, dtype", DTYPE_CASES)
def test_reduce_dtypes(op, dtype, axes):
    check_kernel(op, [sample((4, 6, 19), dtype, op)], {"axes": axes})


@pytest.mark.parametrize("shape, axes", [((), ()), ((1, 1, 1), (1,)), ((2, 0, 3), (1,)),
                                         ((2, 0, 3), (0,)), ((4, 1), (0, 1))], ids=str)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reduce_edge_shapes(op, shape, axes):
    check_kernel(op, [sample(shape, op=op)], {"axes": axes, "keepdims": False})


@pytest.mark.parametrize("op", ["reduce_mean", "reduce_min", "reduce_prod"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_empty_integer_reductions(op, dtype):
    check_kernel(op, [np.zeros((2, 0, 3), dtype)], {"axes": (1,)})


def test_integer_mean_truncates_toward_zero():
    x = np.array([[-7, 0, 0], [7, 0, 0], [-1, -1, 0], [5, 5, 5]], np.int32)
    check_kernel("reduce_mean", [x], {"axes": (1,)})


def test_half_mean_does_not_overflow():
    x = np.full((2, 64), 60000, np.float16)
    (out,) = check_kernel("reduce_mean", [x], {"axes": (1,)})
    assert np.all(out == 60000)


def test_max_and_min_propagate_nan():
    x = sample((4, 33))
    x[1, 5] = x[2, 32] = np.nan
    x[3, :] = -np.inf
    for op in ("reduce_max", "reduce_min"):
        check_kernel(op, [x], {"axes": (1,)})
        check_kernel(op, [x], {"axes": (0,)})


def test_large_sums():
    x = sample((64, 4099))
    check_kernel("reduce_sum", [x], {"axes": (1,)}, rtol=1e-4, atol=1e-4)
    check_kernel("reduce_sum", [x], {"axes": (0,)}, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- argmax, argmin


@pytest.mark.parametrize("select_last_index", [False, True])
@pytest.mark.parametrize("axis, keepdims", [(0, True), (1, False), (2, True)])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reduce(op, axis, keepdims, select_last_index):
    x = np.round(sample((3, 5, 37)) * 2)  # small integers: many ties
    check_kernel(op, [x], {"axis": axis, "keepdims": keepdims,
                           "select_last_index": select_last_index})


@pytest.mark.parametrize("select_last_index", [False, True])
@pytest.mark.parametrize("dtype", ["float16", "int32", "int64", "uint8"])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reduce_dtypes(op, dtype, select_last_index):
    x = RNG.integers(0, 4, (6, 19)).astype(dtype)
    axis = int(select_last_index)  # both axes over the two cases
    check_kernel(op, [x], {"axis": axis, "select_last_index": select_last_index})


@pytest.mark.parametrize("select_last_index", [False, True])
@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reduce_specials(op, select_last_index):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [-np.inf, -np.inf, -np.inf, -np.inf],
                  [np.inf, 2.0, np.inf, 0.0], [np.nan, np.nan, 1.0, 1.0]], np.float32)
    attrs = {"axis": 1, "select_last_index": select_last_index}
    check_kernel(op, [x], attrs)
    check_kernel(op, [x.T.copy()], {**attrs, "axis": 0})


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_reduce_edge_shapes(op):
    check_kernel(op, [sample((1,))], {"axis": 0, "keepdims": False})
    check_kernel(op, [sample((0, 3))], {"axis": 1})
    check_kernel(op, [sample((4, 1, 2))], {"axis": 1})


# ----------------------------------------------------------------------------- cumsum


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cumsum(axis, exclusive, reverse):
    check_kernel("cumsum", [sample((3, 5, 37))],
                 {"axis": axis, "exclusive": exclusive, "reverse": reverse})


@pytest.mark.parametrize("dtype", ["float16", "int32", "int64", "uint32"])
@pytest.mark.parametrize("axis", [0, 1])
def test_cumsum_dtypes(dtype, axis):
    x = RNG.integers(0, 50, (7, 19)).astype(dtype)
    check_kernel("cumsum", [x], {"axis": axis, "exclusive": True})


@pytest.mark.parametrize("shape", [(1,), (37,), (0, 3), (3, 0), (1, 1, 1)], ids=str)
def test_cumsum_shapes(shape):
    check_kernel("cumsum", [sample(shape)], {"axis": 0, "reverse": True})


def test_large_cumsum():
    check_kernel("cumsum", [sample((300, 257))], {"axis": 0}, rtol=1e-4, atol=1e-4)
    check_kernel("cumsum", [sample((257, 300))], {"axis": 1}, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- interpreter


@pytest.mark.parametrize("op, attrs, dtype", [
    ("reduce_sum", {"axes": (1,)}, "float32"), ("reduce_sum", {"axes": (0, 2)}, "float32"),
    ("reduce_mean", {"axes": (2,)}, "int32"), ("reduce_mean", {"axes": (0,)}, "float16"),
    ("reduce_max", {"axes": (1,), "keepdims": False}, "bool"),
    ("reduce_prod", {"axes": ()}, "int64"),
    ("argmax", {"axis": 2, "select_last_index": True}, "float32"),
    ("argmin", {"axis": 0}, "int32"),
    ("cumsum", {"axis": 1, "exclusive": True, "reverse": True}, "float32"),
    ("cumsum", {"axis": 2}, "float16"),
])
def test_interpreted(op, attrs, dtype):
    check_kernel(op, [np.round(sample((2, 3, 5), dtype, op))], attrs, interpret=True)


# ----------------------------------------------------------------------------- schedule


def test_column_reduction_is_vectorized_across_outputs_and_parallel():
    func = kernel("reduce_sum", [((64, 128, 256), "float32")], {"axes": (1,)})
    stores = vector_stores(func)
    assert stores and all(s.indices[0].lanes == 16 for s in stores)
    assert len(loops(func, L.ForKind.PARALLEL)) == 1


def test_row_reduction_is_parallel_over_outputs():
    func = kernel("reduce_max", [((512, 1000), "float32")], {"axes": (1,)})
    (parallel,) = loops(func, L.ForKind.PARALLEL)
    assert parallel.extent.value == 512


def test_half_accumulator_is_one_block():
    # the float32 accumulator is computed inside the output's loop over blocks: one block
    # that stays in the L1 cache, not a buffer of the output's size
    from ember.compiler.ops.cpu.reduce import L1_BLOCK_BYTES

    func = kernel("reduce_sum", [((64, 128, 256), "float16")], {"axes": (1,)})
    (allocation,) = collect_allocations(func)
    assert allocation.buffer.dtype == "float32"
    assert allocation.buffer.shape[0] * 4 <= L1_BLOCK_BYTES


def collect_allocations(func) -> list[L.Allocate]:
    from ember.ir.visitor import collect

    return collect(func.body, L.Allocate)


def test_large_cumsum_is_parallel_and_vectorized():
    func = kernel("cumsum", [((1024, 4096), "float32")], {"axis": 0})
    assert loops(func, L.ForKind.PARALLEL) and vector_stores(func)

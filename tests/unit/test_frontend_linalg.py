"""ONNX linear-algebra and neighbouring ops (compiler/frontend/onnx/linalg.py) compiled for llvm
against onnx's reference evaluator: Einsum, LpNormalization, Det, CumProd, TopK, BitCast; and
the kernels of the ember ops cumprod, topk and det against their numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from support import check_kernel, check_node, node_model

import ember

rng = np.random.default_rng(11)


def normal(*shape: int, dtype=np.float32) -> np.ndarray:
    return rng.normal(size=shape).astype(dtype)


def invalid(op_type: str, inputs, attrs=None, opset: int = 18, outputs: int = 1):
    """A one-node model that ember must reject (the declared outputs only satisfy the
    checker)."""
    return node_model(op_type, inputs, attrs, opset=opset, outputs=outputs,
                      output_arrays=[np.zeros(1)] * outputs)


# ----------------------------------------------------------------------------- Einsum


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("i,i", [(6,), (6,)]),                       # implicit scalar output
    ("ij->ji", [(3, 4)]),
    ("ij", [(3, 4)]),                            # implicit: letters used once, sorted
    ("ji", [(3, 4)]),                            # implicit output is "ij": a transpose
    ("ii->i", [(4, 4)]),                         # diagonal
    ("ii", [(4, 4)]),                            # trace
    ("...ii->...i", [(2, 3, 3)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),  # broadcast ellipsis
    ("i,j->ij", [(3,), (4,)]),                   # outer product
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),
    ("ab,bc,cd->", [(2, 3), (3, 4), (4, 2)]),         # everything summed
    ("abz,bc,c->a", [(2, 3, 4), (3, 5), (5,)]),       # z summed before any product
    ("ijk,jil->kl", [(3, 2, 4), (2, 3, 5)]),     # contraction over permuted letters
    (" b i j , b j k -> b i k ", [(2, 2, 3), (2, 3, 2)]),
    ("->", [()]),
])
def test_einsum(equation, shapes):
    inputs = [(f"x{k}", normal(*shape, dtype=np.float64)) for k, shape in enumerate(shapes)]
    check_node("Einsum", inputs, {"equation": equation}, opset=12, target="llvm")


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_einsum_dtypes(dtype):
    a = rng.integers(-5, 5, size=(3, 4)).astype(dtype)
    b = rng.integers(-5, 5, size=(4, 2)).astype(dtype)
    check_node("Einsum", [("a", a), ("b", b)], {"equation": "ij,jk->ik"}, opset=12,
               target="llvm")


def test_einsum_rejects_a_letter_of_two_sizes():
    model = invalid("Einsum", [("a", normal(3, 4)), ("b", normal(5, 2))],
                    {"equation": "ij,jk->ik"}, opset=12)
    with pytest.raises(ember.FrontendError, match="letter 'j' names axes of sizes 4 and 5"):
        ember.compile(model, target="llvm")


# ----------------------------------------------------------------------------- LpNormalization


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the oracle's
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization(p, axis):
    # onnx's reference sums x ** p, not |x| ** p: for p = 1 it only agrees on positive data
    x = np.abs(normal(3, 4)) if p == 1 else normal(3, 4)
    x[1] = 0  # a zero row: zero norm along axis -1 gives zeros
    check_node("LpNormalization", [("x", x)], {"p": p, "axis": axis}, opset=1, target="llvm")


def test_lp_normalization_rejects_p3():
    model = invalid("LpNormalization", [("x", normal(2, 2))], {"p": 3}, opset=1)
    with pytest.raises(ember.FrontendError, match="p 3 is not supported"):
        ember.compile(model, target="llvm")


# ----------------------------------------------------------------------------- Det


@pytest.mark.parametrize("shape", [(2, 2), (3, 3, 3), (2, 2, 5, 5), (1, 1)])
def test_det(shape):
    check_node("Det", [("x", normal(*shape))], opset=11, target="llvm", rtol=1e-4, atol=1e-5)


def test_det_needs_pivoting():
    # a zero first pivot, and a singular matrix
    x = np.array([[[0, 2, 1], [3, 1, 0], [1, 1, 1]],
                  [[1, 2, 3], [2, 4, 6], [0, 1, 1]]], np.float64)
    check_node("Det", [("x", x)], opset=11, target="llvm")


# ----------------------------------------------------------------------------- CumProd


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_cumprod(exclusive, reverse, axis):
    x = rng.uniform(-2, 2, size=(3, 5)).astype(np.float64)
    x[1, 2] = 0  # zeros and signs are where exp(sum(log)) breaks
    check_node("CumProd", [("x", x), ("axis", np.array(axis, np.int32))],
               {"exclusive": exclusive, "reverse": reverse}, initializers=["axis"], opset=26,
               target="llvm")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_cumprod_dtypes(dtype):
    x = rng.integers(-4, 5, size=(2, 3, 4)).astype(dtype)
    check_node("CumProd", [("x", x), ("axis", np.array(1, np.int64))], initializers=["axis"],
               opset=26, target="llvm")


@pytest.mark.parametrize("op,x,attrs", [
    ("cumprod", rng.integers(-100, 100, size=(4, 9)).astype(np.int8), {"axis": 1}),  # wraps
    ("cumprod", normal(3, 5, dtype=np.float16), {"axis": 0, "reverse": True}),
    ("cumprod", normal(3, 0, 4), {"axis": 1}),
    ("cumprod", rng.integers(-3, 4, size=(40, 600)).astype(np.int64), {"axis": 1}),  # parallel
    ("topk", normal(3, 4), {"axis": 1, "k": 0}),
    ("topk", normal(3, 4, dtype=np.float16), {"axis": 0, "k": 3}),
    ("topk", rng.integers(0, 3, size=(5,)).astype(np.uint8), {"axis": 0, "k": 5}),
    ("det", normal(2, 0, 0), {}),
    ("det", normal(3, 3, dtype=np.float16), {}),
    ("det", normal(2000, 3, 3, dtype=np.float64), {}),  # parallel
])
def test_kernels_edge_cases(op, x, attrs):
    check_kernel(op, [x], attrs)


# ----------------------------------------------------------------------------- TopK


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_topk(largest, axis):
    x = normal(4, 6)
    check_node("TopK", [("x", x), ("k", np.array([3], np.int64))],
               {"axis": axis, "largest": largest}, initializers=["k"], outputs=2, opset=11,
               target="llvm")


def test_topk_ties_keep_the_lower_index_first():
    x = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 0, 0, 0, 0]], np.int64)
    for largest in (0, 1):
        check_node("TopK", [("x", x), ("k", np.array([4], np.int64))], {"largest": largest},
                   initializers=["k"], outputs=2, opset=11, target="llvm")


def test_topk_opset1_k_attribute():
    check_node("TopK", [("x", normal(3, 5))], {"k": 2}, outputs=2, opset=1, target="llvm")


def test_topk_uint64():
    x = rng.integers(0, 1 << 40, size=(3, 5)).astype(np.uint64)
    check_node("TopK", [("x", x), ("k", np.array([2], np.int64))], initializers=["k"],
               outputs=2, opset=11, target="llvm")


def test_topk_k_from_a_graph_input_specializes():
    check_node("TopK", [("x", normal(2, 7)), ("k", np.array([5], np.int64))], outputs=2,
               opset=11, target="llvm")


def test_topk_kernel_nan_is_largest():
    x = np.array([[1, np.nan, 3, np.nan, 2]], np.float32)
    check_kernel("topk", [x], {"k": 4, "axis": 1})
    check_kernel("topk", [x], {"k": 4, "axis": 1, "largest": False})


def test_topk_rejects_k_beyond_the_axis():
    model = invalid("TopK", [("x", normal(2, 3))], {"k": 4}, opset=1, outputs=2)
    with pytest.raises(ember.FrontendError, match=r"k=4 must lie in \[0, 3\]"):
        ember.compile(model, target="llvm")


# ----------------------------------------------------------------------------- BitCast


@pytest.mark.parametrize("x,to", [
    (np.array([1.5, -0.0, np.inf, np.nan], np.float32), TensorProto.INT32),
    (np.array([[1, -1], [1 << 30, 7]], np.int64), TensorProto.DOUBLE),
    (np.array([True, False, True]), TensorProto.UINT8),
    (np.array([0, 1, 1], np.uint8), TensorProto.BOOL),
    (np.array([0x3C00, 0x7BFF, 0x8001], np.uint16), TensorProto.FLOAT16),
    (np.array(3.0, np.float32), TensorProto.UINT32),
])
def test_bitcast(x, to):
    check_node("BitCast", [("x", x)], {"to": to}, opset=26, target="llvm")


def test_bitcast_rejects_unequal_widths():
    model = invalid("BitCast", [("x", normal(3))], {"to": TensorProto.INT64}, opset=26)
    with pytest.raises(ember.FrontendError, match="float32 has 32 bits but int64 has 64"):
        ember.compile(model, target="llvm")


def test_bitcast_reference_keeps_rank_0():
    check_node("BitCast", [("x", np.array(-2.0, np.float64))], {"to": TensorProto.INT64},
               opset=26)

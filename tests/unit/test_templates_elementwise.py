"""Kernels of the elementwise ops (ir/ops/elementwise.py): every op compiled through its
template (compiler/ops/compute/elementwise.py, the CPU injective schedule) with the LLVM
backend, and a few through the loop-IR interpreter, checked against the op's numpy reference
over shapes (rank 0, size 1, lengths that are not a multiple of the vector width, empty) and
every dtype the op accepts among float32, float16, int32, int64 and bool (and more for cast).
"""

from __future__ import annotations

import numpy as np
import pytest
from support import check_kernel

from ember.compiler.ops import Workload, instantiate
from ember.compiler.ops.compute.elementwise import UNARY
from ember.errors import ShapeError
from ember.ir import loop as L
from ember.ir.expr import Expr, Ramp
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.ir.visitor import collect
from ember.target import Target

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(7)
DTYPES = ("float32", "float16", "int32", "int64", "bool")
SHAPES = [(), (1,), (37,), (3, 0, 5), (2, 3, 17)]


def accepts(op: str, dtype: str, attrs: dict | None = None) -> bool:
    opdef = get_op(op)
    try:
        opdef.infer_types(opdef.make_attrs(attrs), [TensorType((2,), dtype)])
    except ShapeError:
        return False
    return True


def sample(op: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Inputs inside the op's domain where the answer would otherwise be NaN everywhere."""
    if dtype == "bool":
        return RNG.random(shape) < 0.5
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return RNG.integers(max(info.min, -50), min(info.max, 50), shape).astype(dtype)
    x = RNG.standard_normal(shape) * 2
    if op in ("asin", "acos", "atanh"):
        x = np.tanh(x) * 0.99
    elif op == "acosh":
        x = 1 + np.abs(x)
    elif op in ("log", "sqrt"):
        x = np.abs(x) + 0.05
    return x.astype(dtype)


ELEMENTWISE_OPS = sorted(UNARY)
CASES = [(op, dtype) for op in ELEMENTWISE_OPS for dtype in DTYPES if accepts(op, dtype)]


def test_every_elementwise_op_has_a_case():
    covered = {op for op, _ in CASES}
    assert covered == set(UNARY)
    assert len(UNARY) + 2 == 34  # with clip and cast below


@pytest.mark.parametrize("op, dtype", CASES)
def test_unary_op(op, dtype):
    check_kernel(op, [sample(op, (3, 37), dtype)])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", ["relu", "exp", "abs", "sigmoid", "logical_not", "is_nan"])
def test_unary_shapes(op, shape):
    dtype = "bool" if op == "logical_not" else "float32"
    check_kernel(op, [sample(op, shape, dtype)])


SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 0.5, -2.5,
                     1.5, 2.5, -0.5, 3.0, 1e-30], np.float32)


@pytest.mark.parametrize("op", ["abs", "neg", "sign", "relu", "floor", "ceil", "round", "exp",
                                "tanh", "sigmoid", "softplus", "is_nan", "is_inf", "gelu",
                                "leaky_relu", "reciprocal", "erf"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_special_values(op, dtype):
    check_kernel(op, [np.tile(SPECIALS, 3).astype(dtype)])


def test_round_is_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 4.5], np.float32)
    (out,) = check_kernel("round", [x])
    np.testing.assert_array_equal(out, [0, 2, 2, -0, -2, -2, 4, 4])


@pytest.mark.parametrize("attrs", [{"approximate": "none"}, {"approximate": "tanh"}])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gelu(attrs, dtype):
    check_kernel("gelu", [sample("gelu", (5, 19), dtype)], attrs)


@pytest.mark.parametrize("attrs", [{"detect_negative": False}, {"detect_positive": False},
                                   {"detect_negative": False, "detect_positive": False}])
def test_is_inf_directions(attrs):
    check_kernel("is_inf", [SPECIALS], attrs)


def test_leaky_relu_alpha():
    check_kernel("leaky_relu", [sample("leaky_relu", (4, 9), "float32")], {"alpha": 0.2})


@pytest.mark.parametrize("op, dtype", [
    (op, dtype) for op in ("abs", "neg", "sign", "relu", "bitwise_not")
    for dtype in ("int8", "uint8", "int16", "uint32", "int64") if accepts(op, dtype)])
def test_integer_edges(op, dtype):
    info = np.iinfo(dtype)
    x = np.array([info.min, info.min + 1, -1, 0, 1, info.max - 1, info.max] * 3)
    check_kernel(op, [x.astype(dtype)])


# ----------------------------------------------------------------------------- clip


@pytest.mark.parametrize("bounds", [{"min": -0.5, "max": 0.5}, {"min": 0.1}, {"max": -1.0},
                                    {}, {"min": 1.0, "max": -1.0}])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64"])
def test_clip(bounds, dtype):
    x = sample("clip", (3, 37), dtype)
    if dtype.startswith("int"):
        bounds = {k: int(v * 10) for k, v in bounds.items()}
    check_kernel("clip", [x], bounds)


def test_clip_keeps_nan():
    check_kernel("clip", [SPECIALS], {"min": -1.0, "max": 1.0})


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_clip_shapes(shape):
    check_kernel("clip", [sample("clip", shape, "float32")], {"min": 0.0, "max": 1.0})


# ----------------------------------------------------------------------------- cast

CAST_SOURCES = ["float32", "float16", "float64", "int32", "int64", "uint8", "bool"]
CAST_TARGETS = ["float32", "float16", "bfloat16", "float64", "int8", "int32", "int64",
                "uint8", "bool"]


def cast_input(source: str, target: str) -> np.ndarray:
    """Values every target represents after truncation: numpy's float -> int conversion of
    out-of-range values is undefined (the LLVM backend saturates them)."""
    if source == "bool":
        return RNG.random((3, 37)) < 0.5
    low = 0 if target.startswith("uint") or source.startswith("uint") else -120
    x = RNG.uniform(low, 120, (3, 37))
    x[0, :4] = [0, -0.0 if low else 0, 0.75, 119.9]
    return (x if source.startswith("float") else np.trunc(x)).astype(source)


@pytest.mark.parametrize("target", CAST_TARGETS)
@pytest.mark.parametrize("source", CAST_SOURCES)
def test_cast(source, target):
    check_kernel("cast", [cast_input(source, target)], {"to": target})


def test_cast_integers_wrap():
    x = np.array([300, -300, 127, 128, -129, 65535, 2**40 + 5], np.int64)
    check_kernel("cast", [x], {"to": "int8"})
    check_kernel("cast", [x], {"to": "uint8"})


def test_cast_float_specials_to_bool_and_half():
    check_kernel("cast", [SPECIALS], {"to": "bool"})
    check_kernel("cast", [SPECIALS.astype(np.float64) * 1.0000001], {"to": "float16"})


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cast_shapes(shape):
    check_kernel("cast", [sample("cast", shape, "float32")], {"to": "int32"})


# ----------------------------------------------------------------------------- interpreter


@pytest.mark.parametrize("op, attrs, dtype", [
    ("exp", None, "float32"), ("sigmoid", None, "float16"), ("sign", None, "int32"),
    ("bitwise_not", None, "int64"), ("clip", {"min": -1.0, "max": 1.0}, "float32"),
    ("cast", {"to": "int32"}, "float32"), ("is_inf", {"detect_negative": False}, "float32"),
    ("logical_not", None, "bool"), ("gelu", {"approximate": "tanh"}, "float32"),
])
def test_interpreted(op, attrs, dtype):
    x = sample(op, (2, 19), dtype)
    check_kernel(op, [x], attrs, interpret=True)


# ----------------------------------------------------------------------------- schedule


def kernel(op: str, types: list[tuple[tuple[int, ...], str]], attrs: dict | None = None):
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    inputs = tuple(TensorType(shape, dtype) for shape, dtype in types)
    workload = Workload(op, full, inputs, opdef.infer_types(full, inputs))
    return instantiate(workload, "cpu", Target.parse("llvm"))


def vector_stores(func) -> list[L.Store]:
    return [s for s in collect(func.body, L.Store) if isinstance(s.indices[0], Ramp)]


def loops(func, kind: L.ForKind) -> list[L.For]:
    return [f for f in collect(func.body, L.For) if f.kind is kind]


def test_large_elementwise_kernel_is_vectorized_and_parallel():
    func = kernel("exp", [((512, 1000), "float32")])
    stores = vector_stores(func)
    assert stores and all(s.indices[0].lanes == 16 for s in stores)
    assert len(loops(func, L.ForKind.PARALLEL)) == 1


def test_small_elementwise_kernel_stays_on_one_thread():
    func = kernel("relu", [((4, 100), "float32")])
    assert vector_stores(func)
    assert not loops(func, L.ForKind.PARALLEL)


def test_half_precision_computes_in_float32_and_rounds_once():
    func = kernel("sigmoid", [((64,), "float16")])
    (store,) = collect(func.body, L.Store)
    assert store.value.dtype == "float16x16"
    assert "float32x16" in {e.dtype for e in collect(store.value, Expr)}


def test_every_generic_op_has_a_template():
    from ember.compiler.ops import has_template
    from ember.ir.ops import Pattern, all_ops

    generic = (Pattern.ELEMWISE, Pattern.BROADCAST, Pattern.INJECTIVE, Pattern.REDUCE,
               Pattern.OPAQUE)
    missing = [name for name, op in all_ops().items()
               if op.pattern in generic and not has_template(name)]
    assert not missing

"""Elementwise and broadcasting ops (ir/ops/elementwise.py, ir/ops/broadcast.py) and their ONNX
converters (frontend/onnx/math.py, logic.py), checked against onnx's ReferenceEvaluator."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from support import check_node, node_model, onnx_reference

import ember
from ember.errors import ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import TensorType
from ember.ir.ops import Pattern, get_op

# onnx's reference warns on overflow and NaN results; ember's references do not
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:onnx.reference.*")

RNG = np.random.default_rng(0)
SHAPES = [(), (3, 4), (2, 0, 3)]


def normal(shape, dtype="float32", scale=2.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def integers(shape, dtype, low=-20, high=20) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(max(low, info.min), min(high, info.max), size=shape).astype(dtype)


def check_loose(op_type, inputs, attrs=None, *, initializers=(), opset=18,
                rtol=2e-2, atol=1e-2):
    """check_node for outputs numpy cannot compare as floats (bfloat16, float8: their dtype
    kind is 'V') or as arrays of one string dtype (onnx gives '<U', ember object)."""
    feeds = {n: a for n, a in inputs if a is not None and n not in initializers}
    probe = node_model(op_type, inputs, attrs, initializers=initializers, opset=opset)
    expected = onnx_reference(probe, feeds)
    declared = [e.astype(object) if e.dtype.kind in "US" else e for e in expected]
    model = node_model(op_type, inputs, attrs, initializers=initializers, opset=opset,
                       output_arrays=declared)
    got = ember.compile(model, target="reference").run(feeds)
    for out, ref in zip(got, declared):
        assert out.shape == ref.shape and out.dtype == ref.dtype, (out.dtype, ref.dtype)
        if ref.dtype == object:
            assert out.tolist() == ref.tolist()
        else:
            np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32),
                                       rtol=rtol, atol=atol, equal_nan=True)
    return got


# ----------------------------------------------------------------------------- unary math

# op: (low, high) of the inputs, inside the function's domain
FLOAT_UNARY = {
    "Exp": (-5, 5), "Log": (0.1, 10), "Sqrt": (0, 10), "Reciprocal": (0.5, 4),
    "Floor": (-5, 5), "Ceil": (-5, 5), "Sin": (-4, 4), "Cos": (-4, 4), "Tan": (-1.2, 1.2),
    "Asin": (-0.99, 0.99), "Acos": (-0.99, 0.99), "Atan": (-5, 5), "Sinh": (-3, 3),
    "Cosh": (-3, 3), "Asinh": (-5, 5), "Acosh": (1, 6), "Atanh": (-0.95, 0.95),
    "Erf": (-3, 3), "Tanh": (-4, 4), "Sigmoid": (-30, 30), "Relu": (-3, 3),
    "Softplus": (-30, 30), "Abs": (-3, 3), "Neg": (-3, 3), "Sign": (-3, 3),
}


def uniform(shape, low, high, dtype) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("op", sorted(FLOAT_UNARY))
def test_float_unary(op, dtype, shape):
    low, high = FLOAT_UNARY[op]
    # onnx's reference Erf computes in float32 whatever the input's dtype
    rtol = 1e-6 if (op, dtype) == ("Erf", "float64") else None
    check_node(op, [("x", uniform(shape, low, high, dtype))], rtol=rtol)


@pytest.mark.parametrize("op", ["Exp", "Log", "Sqrt", "Erf", "Tanh", "Sigmoid", "Sin", "Acosh"])
def test_float_unary_bfloat16(op):
    low, high = FLOAT_UNARY[op]
    x = uniform((4, 5), low, high, ml_dtypes.bfloat16)
    check_loose(op, [("x", x)], opset=22)


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.3, -4.51, 0.0, np.nan, np.inf], np.float32)
    check_node("Round", [("x", x)])
    check_node("Round", [("x", x.astype("float16"))])


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], np.float32)
    for op in ["Exp", "Log", "Sqrt", "Sigmoid", "Tanh", "Softplus", "Erf", "Sign", "Abs"]:
        check_node(op, [("x", x)])


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu"])
def test_signed_int_unary(op, dtype):
    check_node(op, [("x", integers((3, 5), dtype))])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("op", ["Abs", "Sign"])
def test_unsigned_int_unary(op, dtype):
    check_node(op, [("x", integers((7,), dtype, 0, 200))])


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "uint64"])
def test_bitwise_not(dtype):
    check_node("BitwiseNot", [("x", integers((2, 3), dtype, -100, 100))])


@pytest.mark.parametrize("shape", SHAPES)
def test_not(shape):
    check_node("Not", [("x", RNG.random(shape) < 0.5)])


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("detect", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_isinf_isnan(dtype, detect):
    x = np.array([[np.inf, -np.inf, np.nan], [0.0, -3.5, 7.0]], dtype)
    check_node("IsNaN", [("x", x)], opset=20)
    check_node("IsInf", [("x", x)],
               {"detect_negative": detect[0], "detect_positive": detect[1]}, opset=20)


# ----------------------------------------------------------------------------- activations

ACTIVATIONS = [
    ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}),
    ("Elu", {}), ("Elu", {"alpha": 0.5}),
    ("Selu", {}), ("Selu", {"alpha": 2.0, "gamma": 3.0}),
    ("Celu", {}), ("Celu", {"alpha": 2.0}),
    ("ThresholdedRelu", {}), ("ThresholdedRelu", {"alpha": 0.25}),
    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}),
    ("HardSwish", {}), ("Softsign", {}), ("Mish", {}),
    ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
    ("Shrink", {}), ("Shrink", {"lambd": 1.5, "bias": 0.5}),
]


@pytest.mark.parametrize("shape", [(), (2, 3, 4), (0, 5)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("op,attrs", ACTIVATIONS)
def test_activation(op, attrs, dtype, shape):
    # the newest opset each op has (older ones lack float16 for some)
    opset = {"Gelu": 20, "Celu": 28, "Shrink": 9}.get(op, 22)
    # onnx's reference runs some of these as function bodies with float32 constants (1/6 in
    # HardSwish) or in float32 (Gelu), so float64 agrees only to float32 precision
    rtol, atol = (1e-5, 1e-7) if dtype == "float64" else (None, None)
    if op == "Softsign" and shape == ():
        pytest.skip("onnx's reference Softsign fails on rank-0 inputs")
    check_node(op, [("x", normal(shape, dtype))], attrs, opset=opset, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op,attrs", [a for a in ACTIVATIONS if a[0] != "Shrink"])
def test_activation_bfloat16(op, attrs):
    opset = {"Gelu": 20, "Celu": 28}.get(op, 22)
    check_loose(op, [("x", normal((3, 4), ml_dtypes.bfloat16))], attrs, opset=opset)


@pytest.mark.parametrize("dtype", ["int8", "int32", "uint8", "int64"])
@pytest.mark.parametrize("attrs", [{}, {"lambd": 2.0, "bias": 1.0}, {"lambd": 1.5, "bias": 0.5}])
def test_shrink_integers(dtype, attrs):
    check_node("Shrink", [("x", integers((4, 5), dtype, -6 if dtype[0] == "i" else 0, 7))],
               attrs)


@pytest.mark.parametrize("slope_shape", [(5,), (4, 1), (1,), (), (3, 4, 5), (1, 4, 5)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int32"])
def test_prelu_broadcast(slope_shape, dtype):
    x = normal((3, 4, 5), dtype) if dtype != "int32" else integers((3, 4, 5), dtype)
    slope = normal(slope_shape, dtype, 0.5) if dtype != "int32" else integers(slope_shape, dtype)
    check_node("PRelu", [("x", x), ("slope", slope)])
    check_node("PRelu", [("x", x), ("slope", slope)], initializers=["slope"], opset=9)


def test_prelu_rejects_slope_that_widens_x():
    x, slope = normal((4, 1)), normal((4, 5))
    model = node_model("PRelu", [("x", x), ("slope", slope)], opset=16, output_arrays=[x])
    with pytest.raises(ember.FrontendError, match=r"slope of shape \(4, 5\) does not broadcast"):
        ember.compile(model)


def test_gelu_rejects_unknown_approximation():
    model = node_model("Gelu", [("x", normal((2,)))], {"approximate": "erf"}, opset=20,
                       output_arrays=[normal((2,))])
    with pytest.raises(ember.FrontendError, match="approximate 'erf' is not supported"):
        ember.compile(model)


# ----------------------------------------------------------------------------- binary

SHAPE_PAIRS = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),          # rank-expanding
    ((), (3,)),                 # scalar with a vector
    ((2, 1, 4), (3, 1)),        # both sides broadcast
    ((0, 3), (1, 3)),           # zero-size
    ((5,), ()),
]


def operands(dtype, shapes, nonzero=False):
    if dtype.startswith(("int", "uint")):
        low = 0 if dtype.startswith("u") else -20
        a, b = integers(shapes[0], dtype, low), integers(shapes[1], dtype, low)
        if nonzero:
            b = np.where(b == 0, 3, b).astype(dtype)
        return a, b
    a, b = normal(shapes[0], dtype), normal(shapes[1], dtype)
    if nonzero:
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(dtype)
    return a, b


BINARY_DTYPES = ["float32", "float16", "float64", "int8", "int32", "int64", "uint8", "uint64"]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS)
@pytest.mark.parametrize("dtype", BINARY_DTYPES)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic(op, dtype, shapes):
    a, b = operands(dtype, shapes, nonzero=op == "Div")
    check_node(op, [("a", a), ("b", b)])


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub", "Pow", "Max", "Min"])
def test_arithmetic_bfloat16(op):
    a, b = normal((3, 4), ml_dtypes.bfloat16), normal((4,), ml_dtypes.bfloat16)
    if op == "Pow":
        a = np.abs(a)
    check_loose(op, [("a", a), ("b", b)], opset=13 if op != "Pow" else 15)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_integer_division_truncates(dtype):
    a = np.array([7, -7, 7, -7, 6, -6, 0, 1, -1], dtype)
    b = np.array([2, 2, -2, -2, 3, -4, 5, -3, 3], dtype)
    check_node("Div", [("a", a), ("b", b)])


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint16", "float32", "float16"])
def test_mod(dtype, fmod):
    if dtype.startswith("float"):
        a = np.array([5.5, -5.5, 5.5, -5.5, 0.0, -0.0, 7.0, 3.0], dtype)
        b = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, np.inf, -np.inf], dtype)
        if fmod == 0:  # floats with fmod=0 are valid from Mod-28
            check_node("Mod", [("a", a), ("b", b)], {"fmod": fmod}, opset=28)
            return
    else:
        a, b = operands(dtype, ((3, 4), (4,)), nonzero=True)
    check_node("Mod", [("a", a), ("b", b)], {"fmod": fmod})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", ["uint8", "uint32", "uint64", "int8", "int32", "int64"])
def test_bit_shift(dtype, direction):
    bits = np.dtype(dtype).itemsize * 8
    low = 0 if dtype.startswith("u") else -100
    x = integers((2, 6), dtype, low, 100)
    y = np.array([0, 1, 3, bits - 1, bits, bits + 3], dtype)
    if dtype.startswith("int"):
        y[-1] = -2  # a negative shift amount
    # signed types are allowed from BitShift-28
    check_node("BitShift", [("x", x), ("y", y)], {"direction": direction}, opset=28)


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int64", "uint32"])
def test_bitwise(op, dtype):
    a, b = operands(dtype, ((2, 3, 4), (3, 1)))
    check_node(op, [("a", a), ("b", b)])


POW_TYPES = [
    ("float32", "float32"), ("float32", "int32"), ("float32", "int64"), ("float32", "uint64"),
    ("float16", "float32"), ("float64", "int8"), ("int32", "float32"), ("int32", "int32"),
    ("int64", "int64"), ("int64", "float32"), ("float16", "float16"),
]


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3), ()), ((), (4,))])
@pytest.mark.parametrize("base_dtype,exp_dtype", POW_TYPES)
def test_pow(base_dtype, exp_dtype, shapes):
    base = RNG.uniform(0.5, 3, size=shapes[0]).astype(base_dtype) if base_dtype[0] == "f" \
        else integers(shapes[0], base_dtype, -5, 6)
    exponent = RNG.uniform(-2, 3, size=shapes[1]).astype(exp_dtype) if exp_dtype[0] == "f" \
        else integers(shapes[1], exp_dtype, 0, 4)
    check_node("Pow", [("x", base), ("y", exponent)], opset=15)


def test_pow_integer_negative_exponent():
    # numpy refuses these; C gives the whole part of 1 / a**n
    pow_op = get_op("pow")
    a = np.array([1, -1, -1, 2, -3, 0], np.int32)
    b = np.array([-3, -3, -2, -1, -2, 2], np.int64)
    (out,) = pow_op.evaluate(pow_op.make_attrs(), [a, b])
    np.testing.assert_array_equal(out, [1, -1, 1, 0, 0, 0])
    assert out.dtype == np.int32


# ----------------------------------------------------------------------------- variadic


@pytest.mark.parametrize("shapes", [[(3, 4)], [(3, 4), (3, 4)], [(2, 3, 4), (4,), (3, 1)],
                                    [(3, 2), (), (2,), (1, 2)]])
@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(op, shapes):
    inputs = [(f"x{i}", normal(s)) for i, s in enumerate(shapes)]
    check_node(op, inputs)
    check_node(op, [(n, a.astype("float16")) for n, a in inputs])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "uint64", "int64"])
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_integers(op, dtype):
    a, b = operands(dtype, ((3, 4), (4,)))
    check_node(op, [("a", a), ("b", b), ("c", a[0])])


def test_max_min_propagate_nan():
    a = np.array([np.nan, 1.0, 2.0], np.float32)
    b = np.array([0.0, np.nan, 3.0], np.float32)
    check_node("Max", [("a", a), ("b", b)])
    check_node("Min", [("a", a), ("b", b)])


# ----------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize("shapes", SHAPE_PAIRS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int64", "uint32"])
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparison(op, dtype, shapes):
    a, b = operands(dtype, shapes)
    if a.size and b.size:  # make some elements equal
        b = b.copy()
        b.reshape(-1)[0] = a.reshape(-1)[0]
    check_node(op, [("a", a), ("b", b)])


def test_equal_bool_and_string():
    check_node("Equal", [("a", RNG.random((3, 4)) < 0.5), ("b", RNG.random((4,)) < 0.5)],
               opset=19)
    words = np.array([["a", "bc"], ["bc", ""]], dtype=object)
    check_node("Equal", [("a", words), ("b", np.array(["bc", ""], dtype=object))], opset=19)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((), (2,)), ((0,), (1,))])
@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op, shapes):
    check_node(op, [("a", RNG.random(shapes[0]) < 0.5), ("b", RNG.random(shapes[1]) < 0.5)])


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((2, 1, 4), (3, 1), ()),
                                    ((), (2, 3), (3,)), ((0, 2), (1, 2), (2,))])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "float16", "uint8"])
def test_where(dtype, shapes):
    cond = RNG.random(shapes[0]) < 0.5
    if dtype == "bool":
        x, y = RNG.random(shapes[1]) < 0.5, RNG.random(shapes[2]) < 0.5
    else:
        x, y = operands(dtype, shapes[1:])
    check_node("Where", [("c", cond), ("x", x), ("y", y)])


def test_where_strings():
    cond = np.array([[True, False], [False, True]])
    x = np.array(["a", "b"], dtype=object)
    y = np.array([["c", "d"], ["e", "f"]], dtype=object)
    check_loose("Where", [("c", cond), ("x", x), ("y", y)])


# ----------------------------------------------------------------------------- clip


@pytest.mark.parametrize("attrs", [{}, {"min": -0.5}, {"max": 0.5}, {"min": -1.0, "max": 1.0},
                                   {"min": 1.0, "max": -1.0}])
def test_clip_attributes(attrs):
    check_node("Clip", [("x", normal((3, 4)))], attrs, opset=6)


BOUNDS = [(None, None), (-0.5, None), (None, 0.5), (-1.0, 1.0), (1.0, -1.0), (0.2, 0.2)]


@pytest.mark.parametrize("opset", [11, 12, 13])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int32", "uint8", "int64"])
@pytest.mark.parametrize("bounds", BOUNDS)
def test_clip_constant_bounds(bounds, dtype, opset):
    if opset == 11 and dtype[0] != "f":
        pytest.skip("Clip takes integers from opset 12")
    x = normal((2, 5), dtype) if dtype[0] == "f" else integers((2, 5), dtype, 0, 20)
    lo, hi = [None if b is None else np.array(b * 10 if dtype[0] != "f" else b).astype(dtype)
              for b in bounds]
    if dtype[0] == "u" and lo is not None:
        lo, hi = np.array(5, dtype), np.array(12, dtype)
    given = [name for name, bound in [("lo", lo), ("hi", hi)] if bound is not None]
    check_node("Clip", [("x", x), ("lo", lo), ("hi", hi)], initializers=given, opset=opset)


@pytest.mark.parametrize("bounds", [(True, True), (True, False), (False, True)])
def test_clip_runtime_bounds(bounds):
    # A bound computed at run time becomes a maximum/minimum against its value.
    x = normal((3, 4))
    lo = np.array(-0.3, np.float32) if bounds[0] else None
    hi = np.array(0.4, np.float32) if bounds[1] else None
    check_node("Clip", [("x", x), ("lo", lo), ("hi", hi)], opset=13)
    if lo is not None:
        check_node("Clip", [("x", x), ("lo", lo), ("hi", hi)], initializers=["lo"], opset=13)


def test_clip_scalar_and_nan():
    check_node("Clip", [("x", np.array(3.5, np.float32)), ("lo", np.array(-1, np.float32)),
                        ("hi", np.array(1, np.float32))], initializers=["lo", "hi"], opset=13)
    x = np.array([np.nan, -5, 5], np.float32)
    check_node("Clip", [("x", x), ("lo", np.array(-1, np.float32)),
                        ("hi", np.array(1, np.float32))], initializers=["lo", "hi"], opset=13)


def test_clip_rejects_non_scalar_bound():
    x, lo = normal((3, 4)), normal((3, 4))
    model = node_model("Clip", [("x", x), ("lo", lo)], opset=10, output_arrays=[x])
    model.opset_import[0].version = 13
    # ONNX's checker accepts a (3, 4) min; ember insists on a scalar.
    with pytest.raises(ember.FrontendError, match=r"min must be a scalar, got shape \(3, 4\)"):
        ember.compile(model)


# ----------------------------------------------------------------------------- cast

CAST_DTYPES = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13,
}


def cast_input(dtype):
    if dtype == "bool":
        return RNG.random((3, 4)) < 0.5
    if dtype.startswith(("int", "uint")):
        return integers((3, 4), dtype, 0 if dtype[0] == "u" else -100, 100)
    return (RNG.uniform(-100, 100, size=(3, 4))).astype(dtype)


@pytest.mark.parametrize("to", sorted(CAST_DTYPES))
@pytest.mark.parametrize("source", sorted(CAST_DTYPES))
def test_cast(source, to):
    x = cast_input(source)
    if to.startswith("uint") and source[0] in "fi":
        x = np.abs(x)  # a negative float to an unsigned integer is undefined
    check_node("Cast", [("x", x)], {"to": CAST_DTYPES[to]}, opset=13)


def test_cast_wraps_integers_and_zero_is_false():
    check_node("Cast", [("x", np.array([200, -200, 300, 127], np.int32))], {"to": 3})
    check_node("Cast", [("x", np.array([0.0, -0.0, np.nan, 0.1], np.float32))], {"to": 9})


@pytest.mark.parametrize("source", ["float32", "float16", "float64", "int32", "bool"])
def test_cast_bfloat16(source):
    check_loose("Cast", [("x", cast_input(source))], {"to": 16}, opset=13)
    x = cast_input("float32").astype(ml_dtypes.bfloat16)
    check_node("Cast", [("x", x)], {"to": CAST_DTYPES[source]}, opset=13)


FLOAT8 = {"float8_e4m3fn": 17, "float8_e4m3fnuz": 18, "float8_e5m2": 19, "float8_e5m2fnuz": 20}


@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("source", ["float32", "float16"])
@pytest.mark.parametrize("to", sorted(FLOAT8))
def test_cast_float8(to, source, saturate):
    x = np.array([0.1, 1e20, np.nan, -3, 500, -1e6, np.inf, -np.inf, 1e-7, 0.0], np.float32)
    with np.errstate(over="ignore"):  # 1e20 is inf in float16
        x = x.astype(source)
    check_loose("Cast", [("x", x)], {"to": FLOAT8[to], "saturate": saturate}, opset=19,
                rtol=0, atol=0)
    back = x.astype(np.float32).astype(getattr(ml_dtypes, to))
    check_node("Cast", [("x", back)], {"to": 1}, opset=19)


def test_cast_strings():
    words = np.array(["1.5", "-inf", "NaN", "3", "+INF", "1E3", "-0.25"], dtype=object)
    check_node("Cast", [("x", words)], {"to": 1})
    check_node("Cast", [("x", np.array(["12", "-7", "0"], dtype=object))], {"to": 7})
    check_loose("Cast", [("x", np.array([0.1, 1e20, np.nan, -3], np.float32))], {"to": 8})
    check_loose("Cast", [("x", np.array([1, -5], np.int64))], {"to": 8})
    check_loose("Cast", [("x", np.array([True, False]))], {"to": 8})


@pytest.mark.parametrize("source,target", [("float32", "float16"), ("float16", "float64"),
                                           ("int64", "float32"), ("float32", "int32"),
                                           ("float32", "float32")])
def test_cast_like(source, target):
    check_node("CastLike", [("x", cast_input(source)), ("like", cast_input(target)[:1])])


@pytest.mark.parametrize("to,label", [(22, "INT4"), (21, "UINT4"), (24, "FLOAT8E8M0"),
                                      (23, "FLOAT4E2M1")])
def test_cast_to_unsupported_dtype_fails_clearly(to, label):
    model = node_model("Cast", [("x", normal((2,)))], {"to": to}, opset=25,
                       output_arrays=[normal((2,))])
    model.graph.output[0].type.tensor_type.elem_type = to
    with pytest.raises(ember.FrontendError, match=f"casting to {label} is not supported"):
        ember.compile(model)


# ----------------------------------------------------------------------------- the op table


@pytest.mark.parametrize("op,dtype", [
    ("sqrt", "int32"), ("exp", "int64"), ("neg", "uint8"), ("relu", "uint32"),
    ("abs", "bool"), ("bitwise_not", "float32"), ("logical_not", "int8"),
    ("is_nan", "int32"), ("sigmoid", "bool"), ("gelu", "int8"), ("clip", "bool"),
    ("cast", "complex64"),
])
def test_unary_rejects_dtype(op, dtype):
    opdef = get_op(op)
    attrs = opdef.make_attrs({"to": "float32"} if op == "cast" else {})
    with pytest.raises(ShapeError, match=f"{op}: input has dtype {dtype}; {op} accepts"):
        opdef.infer_types(attrs, [TensorType((2, 3), dtype)])


@pytest.mark.parametrize("op,dtype", [
    ("add", "bool"), ("div", "string"), ("bitwise_and", "float32"), ("bit_shift", "float16"),
    ("less", "bool"), ("logical_and", "int32"), ("maximum", "bool"), ("mod", "string"),
])
def test_binary_rejects_dtype(op, dtype):
    opdef = get_op(op)
    with pytest.raises(ShapeError, match=f"{op}: input has dtype {dtype}"):
        opdef.infer_types(opdef.make_attrs(), [TensorType((2,), dtype)] * 2)


def test_binary_rejects_mixed_and_pow_checks_both_sides():
    add = get_op("add")
    with pytest.raises(ShapeError, match=r"add: inputs must share one dtype"):
        add.infer_types(add.make_attrs(), [TensorType((2,), "float32"), TensorType((2,), "int32")])
    pow_op = get_op("pow")
    with pytest.raises(ShapeError, match="pow: base has dtype int8"):
        pow_op.infer_types(pow_op.make_attrs(),
                           [TensorType((2,), "int8"), TensorType((2,), "int8")])
    with pytest.raises(ShapeError, match="pow: exponent has dtype bool"):
        pow_op.infer_types(pow_op.make_attrs(),
                           [TensorType((2,), "float32"), TensorType((2,), "bool")])


@pytest.mark.parametrize("op", ["add", "less", "bit_shift", "pow"])
def test_non_broadcastable_shapes(op):
    builder = GraphBuilder()
    dtype = "int32" if op == "bit_shift" else "float32"
    a = builder.add_input("a", TensorType((2, 3), dtype))
    b = builder.add_input("b", TensorType((4, 3), dtype))
    with pytest.raises(ShapeError, match=rf"{op}: shapes \(2, 3\) and \(4, 3\) do not broadcast"):
        builder.add_node(op, [a, b])


def test_where_rejects_bad_condition_and_shapes():
    where = get_op("where")
    f32 = TensorType((3,), "float32")
    with pytest.raises(ShapeError, match="where: condition has dtype float32"):
        where.infer_types(where.make_attrs(), [f32, f32, f32])
    with pytest.raises(ShapeError, match="do not broadcast"):
        where.infer_types(where.make_attrs(), [TensorType((2,), "bool"), f32, f32])


def test_clip_rejects_bound_outside_integer_type():
    clip = get_op("clip")
    with pytest.raises(ShapeError, match="clip: bound min=-1 is not a uint8 value"):
        clip.infer_types(clip.make_attrs({"min": -1}), [TensorType((2,), "uint8")])


def test_frontend_error_names_node_for_rejected_dtype():
    # ONNX's checker lets Softsign-1 take any tensor; ember names the node and the dtype.
    x = integers((2,), "int32")
    model = node_model("Softsign", [("x", x)], opset=18, output_arrays=[x])
    with pytest.raises(ember.FrontendError, match="int32"):
        ember.compile(model)


def test_pattern_kinds():
    for op in ["abs", "exp", "relu", "gelu", "leaky_relu", "cast", "clip", "is_inf",
               "logical_not"]:
        assert get_op(op).pattern == Pattern.ELEMWISE, op
    for op in ["add", "div", "pow", "mod", "bit_shift", "equal", "logical_xor", "where",
               "maximum"]:
        assert get_op(op).pattern == Pattern.BROADCAST, op


def test_decomposed_activations_fold_to_few_ops():
    # Activations lower to a handful of elementwise ember ops (fusion makes them one kernel).
    from ember.compiler.frontend.onnx import import_onnx

    x = normal((2, 3), "float16")
    graph = import_onnx(node_model("HardSwish", [("x", x)], opset=18, output_arrays=[x]))
    ops = [node.op for node in graph.nodes if node.op != "identity"]
    assert ops == ["cast", "mul", "add", "clip", "mul", "cast"], ops

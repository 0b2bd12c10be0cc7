"""Elementwise ops: unary math, activations, tests (is_nan, is_inf), clip and cast.

Every op here maps each input element to one output element of the same shape (TVM's
"elementwise" pattern kind). Binary and ternary broadcasting ops live in `broadcast.py`.

Dtypes follow ONNX's type constraints for the matching ONNX op; `infer` raises ShapeError
naming the op, the dtype and what it accepts. The numpy references compute float16 and bfloat16
in float32 and round the result once (the "float16 storage, float32 arithmetic" rule of
DESIGN.md), which is what numpy's own float16 loops do for most functions too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import DTYPES, Attrs, TensorType, numpy_dtype
from ember.ir.ops.registry import REQUIRED, Pattern, define_op

# ----------------------------------------------------------------------------- dtype groups

FLOATS = ("float16", "bfloat16", "float32", "float64")
SIGNED_INTS = ("int8", "int16", "int32", "int64")
UNSIGNED_INTS = ("uint8", "uint16", "uint32", "uint64")
INTS = SIGNED_INTS + UNSIGNED_INTS
NUMERIC = FLOATS + INTS
FLOAT8S = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
#: What Cast converts between (ONNX's sub-byte and e8m0 types have no ember dtype).
CASTABLE = NUMERIC + FLOAT8S + ("bool", "string")

#: Dtypes whose arithmetic the references do in float32.
_HALF_FLOATS = ("float16", "bfloat16")


def check_dtype(op: str, t: TensorType, accepted: Collection[str], what: str = "input") -> None:
    """Raise ShapeError unless `t.dtype` is one of `accepted` (the message lists them)."""
    if t.dtype not in accepted:
        raise ShapeError(
            f"{op}: {what} has dtype {t.dtype}; {op} accepts {', '.join(accepted)}"
        )


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a reference computes `dtype` values in: float32 for the half floats."""
    return np.dtype(np.float32) if dtype.name in _HALF_FLOATS else dtype


def _upcast(x: np.ndarray) -> np.ndarray:
    return x.astype(compute_dtype(x.dtype), copy=False)


# ----------------------------------------------------------------------------- unary table

UnaryFn = Callable[[np.ndarray, Attrs], np.ndarray]


def define_unary(name: str, fn: UnaryFn, accepts: Collection[str] = FLOATS,
                 attrs: dict[str, Any] | None = None, result: str | None = None,
                 doc: str = "") -> None:
    """Register an elementwise op `fn(x, attrs)` that accepts the dtypes `accepts`; the result
    keeps x's dtype unless `result` names one (is_nan and is_inf give bool)."""
    op = define_op(name, Pattern.ELEMWISE, attrs=attrs, doc=doc)

    @op.infer
    def _(attrs: Attrs, x: TensorType) -> TensorType:
        check_dtype(name, x, accepts)
        return TensorType(x.shape, result or x.dtype)

    @op.reference
    def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):  # NaN and inf results are the defined answers
            out = np.asarray(fn(_upcast(x), attrs))
        return out.astype(numpy_dtype(result) if result else x.dtype, copy=False)


def _sigmoid(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    # exp(-|x|) never overflows; the two branches are the same function mirrored.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _erf(x: np.ndarray) -> np.ndarray:
    # scipy comes with xgboost, one of ember's dependencies; numpy has no erf ufunc.
    from scipy.special import erf

    return erf(x)


def _gelu(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    if attrs.approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + np.tanh(inner))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _leaky_relu(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    return np.where(x < 0, x * np.asarray(attrs.alpha, x.dtype), x)


def _is_inf(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    inf = np.isinf(x)
    if not attrs.detect_negative:
        inf &= x > 0
    if not attrs.detect_positive:
        inf &= x < 0
    return inf


_SIGNED = FLOATS + SIGNED_INTS

for _name, _fn, _accepts in [
    ("abs", lambda x, a: np.abs(x), NUMERIC),
    ("neg", lambda x, a: np.negative(x), _SIGNED),
    ("sign", lambda x, a: np.sign(x), NUMERIC),
    ("relu", lambda x, a: np.maximum(x, np.zeros((), x.dtype)), _SIGNED),
    ("exp", lambda x, a: np.exp(x), FLOATS),
    ("log", lambda x, a: np.log(x), FLOATS),
    ("sqrt", lambda x, a: np.sqrt(x), FLOATS),
    ("reciprocal", lambda x, a: np.reciprocal(x), FLOATS),
    ("floor", lambda x, a: np.floor(x), FLOATS),
    ("ceil", lambda x, a: np.ceil(x), FLOATS),
    ("round", lambda x, a: np.rint(x), FLOATS),  # rint rounds halves to even, as ONNX says
    ("sin", lambda x, a: np.sin(x), FLOATS),
    ("cos", lambda x, a: np.cos(x), FLOATS),
    ("tan", lambda x, a: np.tan(x), FLOATS),
    ("asin", lambda x, a: np.arcsin(x), FLOATS),
    ("acos", lambda x, a: np.arccos(x), FLOATS),
    ("atan", lambda x, a: np.arctan(x), FLOATS),
    ("sinh", lambda x, a: np.sinh(x), FLOATS),
    ("cosh", lambda x, a: np.cosh(x), FLOATS),
    ("asinh", lambda x, a: np.arcsinh(x), FLOATS),
    ("acosh", lambda x, a: np.arccosh(x), FLOATS),
    ("atanh", lambda x, a: np.arctanh(x), FLOATS),
    ("erf", lambda x, a: _erf(x), FLOATS),
    ("tanh", lambda x, a: np.tanh(x), FLOATS),
    ("sigmoid", _sigmoid, FLOATS),
    # log(1 + exp(x)) overflows for large x; logaddexp(0, x) is the stable form.
    ("softplus", lambda x, a: np.logaddexp(0, x), FLOATS),
    ("bitwise_not", lambda x, a: np.invert(x), INTS),
    ("logical_not", lambda x, a: np.logical_not(x), ("bool",)),
]:
    define_unary(_name, _fn, _accepts)

define_unary("leaky_relu", _leaky_relu, attrs={"alpha": 0.01},
             doc="x for x >= 0, alpha * x below.")
define_unary("gelu", _gelu, attrs={"approximate": "none"},
             doc="x * Phi(x), with Phi the normal CDF ('none': through erf) or its tanh "
                 "approximation ('tanh').")
define_unary("is_nan", lambda x, a: np.isnan(x), FLOATS + FLOAT8S, result="bool")
define_unary("is_inf", _is_inf, FLOATS + FLOAT8S, result="bool",
             attrs={"detect_negative": True, "detect_positive": True})


# ----------------------------------------------------------------------------- clip

clip = define_op(
    "clip", Pattern.ELEMWISE, attrs={"min": None, "max": None},
    doc="min(max(x, min), max); a None bound is absent. When min > max every element becomes "
        "max (ONNX's rule). Bounds are Python numbers exactly representable in x's dtype.",
)


@clip.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("clip", x, NUMERIC)
    if x.dtype in INTS:
        info = np.iinfo(x.dtype)
        for key in ("min", "max"):
            bound = attrs[key]
            if bound is not None and not (
                float(bound).is_integer() and info.min <= bound <= info.max
            ):
                raise ShapeError(f"clip: bound {key}={bound} is not a {x.dtype} value")
    return x


@clip.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    out = x
    # numpy.maximum/minimum propagate NaN, as ONNX's Clip does.
    if attrs.min is not None:
        out = np.maximum(out, np.asarray(attrs.min).astype(x.dtype))
    if attrs.max is not None:
        out = np.minimum(out, np.asarray(attrs.max).astype(x.dtype))
    return np.array(out, dtype=x.dtype)  # always a fresh array, even with no bounds


# ----------------------------------------------------------------------------- cast

cast = define_op(
    "cast", Pattern.ELEMWISE, attrs={"to": REQUIRED, "saturate": True},
    doc="Convert to dtype `to` with ONNX's rules: floats to ints truncate; ints wrap; "
        "anything nonzero is true; to float8 with `saturate`, values beyond the type's range "
        "(and infinities) become its largest finite value, without it NaN or inf (per type). "
        "Strings parse as numbers ('1e-3', 'INF', 'NaN'); numbers print as numpy prints them.",
)


@cast.infer
def _(attrs: Attrs, x: TensorType) -> TensorType:
    check_dtype("cast", x, CASTABLE)
    if attrs.to not in CASTABLE:
        known = f" (ember has no {attrs.to} dtype)" if attrs.to not in DTYPES else ""
        raise ShapeError(
            f"cast: cannot cast to {attrs.to}{known}; ember casts to {', '.join(CASTABLE)}"
        )
    return TensorType(x.shape, attrs.to)


def _parse_strings(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """Strings to numbers. Python's float() reads 'INF', '+inf', 'NaN' and '1E8' in any case,
    which is ONNX's rule; integers written as decimals ('100.5') go through float64."""
    if target.kind in "iu":
        try:
            return x.astype(target)
        except (ValueError, OverflowError):
            pass
    as_float = x.astype(np.float64)
    return as_float != 0 if target.kind == "b" else as_float.astype(target)


@cast.reference
def _(attrs: Attrs, x: np.ndarray) -> np.ndarray:
    if attrs.to == "string":
        # Numbers print the way numpy prints them ("0.1", "1e+20", "nan", "True").
        return np.asarray(x.astype(np.str_), dtype=object)
    target = numpy_dtype(attrs.to)
    with np.errstate(all="ignore"):
        if x.dtype == object:
            return _parse_strings(x, target)
        if attrs.to in FLOAT8S and attrs.saturate and x.dtype.name in NUMERIC + FLOAT8S:
            import ml_dtypes

            # Clip before rounding: whatever lies beyond the largest finite value (inf
            # included) lands on it; NaN passes np.clip unchanged.
            limit = float(ml_dtypes.finfo(target).max)
            x = np.clip(x.astype(np.float64), -limit, limit)
        return x.astype(target)

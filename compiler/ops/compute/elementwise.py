"""Computes of the elementwise ops (ir/ops/elementwise.py): one table of scalar expressions.

Each unary op is a function of one scalar expression (and the op's attributes) in `UNARY`;
`elementwise` maps it over the input, so the 32 unary ops, `clip` and `cast` share one compute.
The expressions follow the numpy references exactly where the result is exact (integer
arithmetic, signs, comparisons, rounding), and use the same formulas where it is not (sigmoid's
two mirrored branches, softplus as `max(x, 0) + log1p(exp(-|x|))`, gelu through erf or tanh).

Half precision: float16 and bfloat16 values are widened to float32, computed, and rounded
once at the end, as the references do (`arith_dtype`, `widen`).

Helpers shared by the broadcast and injective computes live here too: `arith_dtype`, `widen`,
`zero`/`one`, and `map_elements` (a te.compute over a tensor's own shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import Expr, call, const, select
from ember.ir.graph import Attrs, numpy_dtype

#: Dtypes whose arithmetic is done in float32 and rounded once (DESIGN.md).
HALF_FLOATS = ("float16", "bfloat16")


# ----------------------------------------------------------------------------- helpers


def arith_dtype(dtype: str) -> str:
    """The dtype arithmetic on `dtype` values is done in: float32 for the half floats."""
    return "float32" if dtype in HALF_FLOATS else dtype


def widen(x: Expr) -> Expr:
    """`x` converted to its arithmetic dtype (a no-op except for half floats)."""
    return E.cast(arith_dtype(x.dtype), x)


def is_float(dtype: str) -> bool:
    return E.is_float_dtype(dtype)


def is_unsigned(dtype: str) -> bool:
    return dtype.startswith("uint")


def zero(dtype: str) -> Expr:
    return const(False if dtype == "bool" else 0, dtype)


def one(dtype: str) -> Expr:
    return const(True if dtype == "bool" else 1, dtype)


def exact_constant(value: Any, dtype: str) -> Expr:
    """The immediate `value` rounded to `dtype` the way numpy's astype rounds it (a float16
    bound of clip is a float16 value, not the Python float it was written as)."""
    if dtype == "bool":
        return const(bool(value), dtype)
    rounded = np.asarray(value).astype(numpy_dtype(dtype))
    return const(rounded.item() if not is_float(dtype) else float(rounded), dtype)


def map_elements(x: te.Tensor, fn: Callable[[Expr], Expr], name: str) -> te.Tensor:
    """The tensor of x's shape whose elements are `fn(x[i...])`."""
    return te.compute(x.shape, lambda *i: fn(x[i]), name=name)


# ----------------------------------------------------------------------------- unary table
# Each entry takes the element widened to its arithmetic dtype (float32 for halfs) and the
# op's attributes; the result is converted to the output dtype by `elementwise`.

UnaryFn = Callable[[Expr, Attrs], Expr]


def _neg(x: Expr, attrs: Attrs) -> Expr:
    # -0.0 - x negates every float exactly (0.0 - 0.0 would give +0.0, not -0.0)
    return E.sub(const(-0.0 if is_float(x.dtype) else 0, x.dtype), x)


def _sign(x: Expr, attrs: Attrs) -> Expr:
    t = x.dtype
    if is_unsigned(t):
        return select(x > zero(t), one(t), zero(t))
    # zeros and NaN are their own sign (np.sign(nan) is nan)
    rest = x if is_float(t) else zero(t)
    return select(x > zero(t), one(t), select(x < zero(t), const(-1, t), rest))


def _sigmoid(x: Expr, attrs: Attrs) -> Expr:
    # exp(-|x|) never overflows; the two branches are one function mirrored
    e = call("exp", _neg(call("fabs", x), attrs))
    denominator = one(x.dtype) + e
    return select(x >= zero(x.dtype), one(x.dtype) / denominator, e / denominator)


def _softplus(x: Expr, attrs: Attrs) -> Expr:
    # log(1 + exp(x)) overflows for large x; this is numpy's logaddexp(0, x)
    tail = call("log1p", call("exp", _neg(call("fabs", x), attrs)))
    return E.max_(x, zero(x.dtype)) + tail


def _gelu(x: Expr, attrs: Attrs) -> Expr:
    t = x.dtype
    half = const(0.5, t) * x
    if attrs.approximate == "tanh":
        cube = const(0.044715, t) * x * x * x
        inner = const(math.sqrt(2 / math.pi), t) * (x + cube)
        return half * (one(t) + call("tanh", inner))
    return half * (one(t) + call("erf", x / const(math.sqrt(2), t)))


def _leaky_relu(x: Expr, attrs: Attrs) -> Expr:
    return select(x < zero(x.dtype), x * const(attrs.alpha, x.dtype), x)


def _is_inf(x: Expr, attrs: Attrs) -> Expr:
    found = call("isinf", x)
    if not attrs.detect_negative:
        found = found & (x > zero(x.dtype))
    if not attrs.detect_positive:
        found = found & (x < zero(x.dtype))
    return found


def bitwise_not(x: Expr) -> Expr:
    """~x, as all-ones minus x (ember's expressions have no bitwise operators)."""
    if is_unsigned(x.dtype):
        return const(int(np.iinfo(x.dtype).max), x.dtype) - x
    return const(-1, x.dtype) - x


def _call(name: str) -> UnaryFn:
    return lambda x, attrs: call(name, x)


UNARY: dict[str, UnaryFn] = {
    "abs": _call("fabs"),
    "neg": _neg,
    "sign": _sign,
    "relu": lambda x, attrs: E.max_(x, zero(x.dtype)),
    "exp": _call("exp"),
    "log": _call("log"),
    "sqrt": _call("sqrt"),
    "reciprocal": lambda x, attrs: one(x.dtype) / x,
    "floor": _call("floor"),
    "ceil": _call("ceil"),
    "round": _call("round"),  # half to even, as ONNX's Round and np.rint
    "sin": _call("sin"),
    "cos": _call("cos"),
    "tan": _call("tan"),
    "asin": _call("asin"),
    "acos": _call("acos"),
    "atan": _call("atan"),
    "sinh": _call("sinh"),
    "cosh": _call("cosh"),
    "asinh": _call("asinh"),
    "acosh": _call("acosh"),
    "atanh": _call("atanh"),
    "erf": _call("erf"),
    "tanh": _call("tanh"),
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "bitwise_not": lambda x, attrs: bitwise_not(x),
    "logical_not": lambda x, attrs: E.logical_not(x),
    "leaky_relu": _leaky_relu,
    "gelu": _gelu,
    "is_nan": _call("isnan"),
    "is_inf": _is_inf,
}


def _clip(x: Expr, attrs: Attrs) -> Expr:
    # max/min propagate NaN, as numpy.maximum/minimum and ONNX's Clip do; min > max gives max
    t = x.dtype
    if attrs.min is not None:
        x = E.max_(x, exact_constant(attrs.min, t))
    if attrs.max is not None:
        x = E.min_(x, exact_constant(attrs.max, t))
    return x


def convert(x: Expr, dtype: str) -> Expr:
    """`x` as `dtype` with the cast op's rules: to bool is `!= 0` (NaN is true); floats to
    integers truncate (the LLVM backend saturates out-of-range values, where numpy's result is
    undefined); integers wrap."""
    if dtype == "bool" and x.dtype != "bool":
        return E.ne(x, zero(x.dtype))
    return E.cast(dtype, x)


# ----------------------------------------------------------------------------- computes


@register_compute(*UNARY)
def elementwise(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    fn = UNARY[workload.op]
    out_dtype = workload.output_types[0].dtype
    result = map_elements(x, lambda v: E.cast(out_dtype, fn(widen(v), workload.attrs)),
                          workload.op)
    return [result]


@register_compute("clip")
def clip(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    return [map_elements(x, lambda v: _clip(v, workload.attrs), "clip")]


@register_compute("cast")
def cast(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    return [map_elements(x, lambda v: convert(v, workload.attrs.to), "cast")]

"""Broadcasting ops: binary arithmetic, bitwise ops, comparisons, logic and `where`.

Inputs broadcast numpy-style (multidirectionally) to the output shape; TVM's "broadcast"
pattern kind. Arithmetic keeps the inputs' dtype (both inputs share it, except `pow`'s
exponent); comparisons and logic give bool. Integer semantics are ONNX's, which are C's where
numpy differs: `div` truncates toward zero, `mod` with fmod=1 takes the dividend's sign,
shifts by a negative or too-large amount give the sign fill. Integer division or remainder by
zero is undefined in ONNX; the references give 0 (what numpy gives) rather than fail.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import DTYPES, Attrs, TensorType, numpy_dtype
from ember.ir.ops.elementwise import FLOATS, INTS, NUMERIC, check_dtype
from ember.ir.ops.registry import Pattern, broadcast_shapes, define_op, same_dtype

BinaryFn = Callable[[np.ndarray, np.ndarray, Attrs], np.ndarray]


def define_binary(name: str, fn: BinaryFn, accepts: Collection[str] = NUMERIC,
                  attrs: dict[str, Any] | None = None, result: str | None = None,
                  doc: str = "") -> None:
    """Register a broadcasting binary op `fn(a, b, attrs)` over inputs of one dtype; the
    result has that dtype unless `result` names one."""
    op = define_op(name, Pattern.BROADCAST, attrs=attrs, num_inputs=2, doc=doc)

    @op.infer
    def _(attrs: Attrs, a: TensorType, b: TensorType) -> TensorType:
        dtype = same_dtype(name, a, b)
        check_dtype(name, a, accepts)
        return TensorType(broadcast_shapes(name, a.shape, b.shape), result or dtype)

    @op.reference
    def _(attrs: Attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = np.asarray(fn(a, b, attrs))
        return out.astype(numpy_dtype(result) if result else a.dtype, copy=False)


# ----------------------------------------------------------------------------- arithmetic


def _divide(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    if a.dtype.kind == "u":
        return np.floor_divide(a, b)
    if a.dtype.kind == "i":
        # numpy floors; ONNX (and C) truncate, which is one more wherever the exact quotient
        # is negative (signs differ: the xor is negative) and not whole (a remainder is left).
        quotient = np.floor_divide(a, b)
        return quotient + ((np.fmod(a, b) != 0) & ((a ^ b) < 0))
    return np.divide(a, b)


def _mod(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    # fmod=1: C's fmod, the sign of the dividend; fmod=0: the floored modulo of Python (and
    # of ONNX's Mod-28 for floats), the sign of the divisor.
    return np.fmod(a, b) if attrs.fmod else np.mod(a, b)


def _shift(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    bits = a.dtype.itemsize * 8
    in_range = (b >= 0) & (b < bits)
    amount = np.where(in_range, b, 0)
    if attrs.direction == "left":
        # Shift the two's-complement bit pattern as unsigned: bits past the top are dropped.
        unsigned = np.dtype(f"uint{bits}")
        shifted = np.left_shift(a.astype(unsigned), amount.astype(unsigned)).astype(a.dtype)
        return np.where(in_range, shifted, 0)
    shifted = np.right_shift(a, amount.astype(a.dtype))  # arithmetic for signed types
    fill = np.where(a < 0, -1, 0) if a.dtype.kind == "i" else 0
    return np.where(in_range, shifted, fill)


for _name, _fn in [
    ("add", lambda a, b, attrs: np.add(a, b)),
    ("sub", lambda a, b, attrs: np.subtract(a, b)),
    ("mul", lambda a, b, attrs: np.multiply(a, b)),
    ("div", _divide),
    ("maximum", lambda a, b, attrs: np.maximum(a, b)),  # NaN wins, as in ONNX's Max
    ("minimum", lambda a, b, attrs: np.minimum(a, b)),
]:
    define_binary(_name, _fn)

define_binary("mod", _mod, attrs={"fmod": False},
              doc="Remainder: fmod=True truncates the quotient (sign of a), False floors it "
                  "(sign of b).")
define_binary("bit_shift", _shift, INTS, attrs={"direction": "left"},
              doc="a shifted by b bits ('left' or 'right', arithmetic for signed types); a "
                  "shift outside [0, bits) gives -1 for a negative a shifted right, else 0.")
define_binary("bitwise_and", lambda a, b, attrs: np.bitwise_and(a, b), INTS)
define_binary("bitwise_or", lambda a, b, attrs: np.bitwise_or(a, b), INTS)
define_binary("bitwise_xor", lambda a, b, attrs: np.bitwise_xor(a, b), INTS)


# ----------------------------------------------------------------------------- pow

POW_BASES = FLOATS + ("int32", "int64")

pow_ = define_op(
    "pow", Pattern.BROADCAST, num_inputs=2,
    doc="a ** b in a's dtype; the exponent may have any numeric dtype. Mixed dtypes compute "
        "in float32 or float64 (numpy's promotion), then convert (floats to ints truncate). "
        "An integer to a negative integer power is what C gives for 1 / a**n: 1, -1 or 0.",
)


@pow_.infer
def _(attrs: Attrs, a: TensorType, b: TensorType) -> TensorType:
    check_dtype("pow", a, POW_BASES, "base")
    check_dtype("pow", b, NUMERIC, "exponent")
    return TensorType(broadcast_shapes("pow", a.shape, b.shape), a.dtype)


@pow_.reference
def _(attrs: Attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            negative = b < 0
            # numpy refuses negative integer powers of integers; the whole part of 1 / a**n
            # is 1 for a = 1, (-1)**n for a = -1 and 0 otherwise.
            out = np.power(a, np.where(negative, 0, b).astype(np.result_type(a, b)))
            odd = (b % 2) != 0
            tiny = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
            out = np.where(negative, tiny, out)
        else:
            # numpy's promotion, extended to bfloat16: float32 when both are floats of at
            # most 32 bits, else float64 (an integer on either side needs its range).
            narrow = ("float16", "bfloat16", "float32")
            wide = not (a.dtype.name in narrow and b.dtype.name in narrow)
            common = np.float64 if wide else np.float32
            out = np.power(a.astype(common), b.astype(common))
        return np.asarray(out).astype(a.dtype)


# ----------------------------------------------------------------------------- comparisons


for _name, _fn, _accepts in [
    ("equal", lambda a, b, attrs: np.equal(a, b), NUMERIC + ("bool", "string")),
    ("less", lambda a, b, attrs: np.less(a, b), NUMERIC),
    ("less_equal", lambda a, b, attrs: np.less_equal(a, b), NUMERIC),
    ("greater", lambda a, b, attrs: np.greater(a, b), NUMERIC),
    ("greater_equal", lambda a, b, attrs: np.greater_equal(a, b), NUMERIC),
    ("logical_and", lambda a, b, attrs: np.logical_and(a, b), ("bool",)),
    ("logical_or", lambda a, b, attrs: np.logical_or(a, b), ("bool",)),
    ("logical_xor", lambda a, b, attrs: np.logical_xor(a, b), ("bool",)),
]:
    define_binary(_name, _fn, _accepts, result="bool")


# ----------------------------------------------------------------------------- where

where = define_op("where", Pattern.BROADCAST, num_inputs=3,
                  doc="x where the condition holds, else y; all three broadcast.")


@where.infer
def _(attrs: Attrs, condition: TensorType, x: TensorType, y: TensorType) -> TensorType:
    check_dtype("where", condition, ("bool",), "condition")
    dtype = same_dtype("where", x, y)
    if dtype not in DTYPES:
        raise ShapeError(f"where: unknown dtype {dtype}")
    return TensorType(broadcast_shapes("where", condition.shape, x.shape, y.shape), dtype)


@where.reference
def _(attrs: Attrs, condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(condition, x, y).astype(x.dtype, copy=False)

"""Scalar expressions: the language of tensor-expression bodies and loop-IR statements.

Nodes are frozen dataclasses with structural equality and a cached structural hash, so they
can key dictionaries (CSE, caches) and be compared in Before/Expected pass tests. Python
operators build expressions (`i * 4 + j`, `x < 0`, `-x`); `==` and `!=` are structural
comparisons, so build equality tests with `eq(a, b)` / `ne(a, b)`.

Dtypes are ember dtype names ("float32", "int64", "bool"); a vector of `n` lanes is written
"float32x16" (see `with_lanes`, `lanes_of`, `element_of`). Loop indices are "int64".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

INDEX = "int64"


# ----------------------------------------------------------------------------- dtypes


def lanes_of(dtype: str) -> int:
    base, sep, lanes = dtype.rpartition("x")
    return int(lanes) if sep and lanes.isdigit() and base else 1


def element_of(dtype: str) -> str:
    base, sep, lanes = dtype.rpartition("x")
    return base if sep and lanes.isdigit() and base else dtype


def with_lanes(dtype: str, lanes: int) -> str:
    base = element_of(dtype)
    return base if lanes == 1 else f"{base}x{lanes}"


def is_float_dtype(dtype: str) -> bool:
    return element_of(dtype).startswith(("float", "bfloat"))


def is_int_dtype(dtype: str) -> bool:
    return element_of(dtype).startswith(("int", "uint"))


# ----------------------------------------------------------------------------- base


@dataclasses.dataclass(frozen=True, eq=False)
class Expr:
    """Base class of scalar (and vector) expressions. Every node has a `dtype`."""

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((type(self).__name__, self._fields()))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self, other: object) -> bool:  # structural
        if self is other:
            return True
        return (type(self) is type(other) and hash(self) == hash(other)
                and self._fields() == other._fields())

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    @property
    def dtype(self) -> str:
        raise NotImplementedError

    # -- operator overloading builds expressions (with trivial constant folding)
    def __add__(self, o) -> Expr:
        return add(self, o)

    def __radd__(self, o) -> Expr:
        return add(o, self)

    def __sub__(self, o) -> Expr:
        return sub(self, o)

    def __rsub__(self, o) -> Expr:
        return sub(o, self)

    def __mul__(self, o) -> Expr:
        return mul(self, o)

    def __rmul__(self, o) -> Expr:
        return mul(o, self)

    def __truediv__(self, o) -> Expr:
        return div(self, o)

    def __rtruediv__(self, o) -> Expr:
        return div(o, self)

    def __floordiv__(self, o) -> Expr:
        return floordiv(self, o)

    def __rfloordiv__(self, o) -> Expr:
        return floordiv(o, self)

    def __mod__(self, o) -> Expr:
        return floormod(self, o)

    def __rmod__(self, o) -> Expr:
        return floormod(o, self)

    def __neg__(self) -> Expr:
        return sub(const(0, self.dtype), self)

    def __lt__(self, o) -> Expr:
        return LT(*_coerce(self, o))

    def __le__(self, o) -> Expr:
        return LE(*_coerce(self, o))

    def __gt__(self, o) -> Expr:
        return GT(*_coerce(self, o))

    def __ge__(self, o) -> Expr:
        return GE(*_coerce(self, o))

    def __and__(self, o) -> Expr:
        return And(*_coerce(self, o))

    def __or__(self, o) -> Expr:
        return Or(*_coerce(self, o))

    def __invert__(self) -> Expr:
        return Not(self)

    def __bool__(self) -> bool:
        raise TypeError("an ember expression has no truth value; use select(), and/or")

    def __str__(self) -> str:
        from ember.ir.printer import format_expr

        return format_expr(self)


# ----------------------------------------------------------------------------- leaves


@dataclasses.dataclass(frozen=True, eq=False)
class Var(Expr):
    """A named variable (loop index, shape symbol, let-bound value)."""

    name: str
    type: str = INDEX

    @property
    def dtype(self) -> str:
        return self.type


@dataclasses.dataclass(frozen=True, eq=False)
class IntImm(Expr):
    value: int
    type: str = INDEX

    @property
    def dtype(self) -> str:
        return self.type


@dataclasses.dataclass(frozen=True, eq=False)
class FloatImm(Expr):
    value: float
    type: str = "float32"

    def _fields(self) -> tuple[Any, ...]:
        # NaN must equal NaN structurally; -0.0 differs from 0.0.
        return (repr(self.value), self.type)

    @property
    def dtype(self) -> str:
        return self.type


def const(value: Any, dtype: str | None = None) -> Expr:
    """An immediate of `dtype` (default: int64 for ints, float32 for floats, bool for bools)."""
    if isinstance(value, Expr):
        return value
    if isinstance(getattr(value, "var", None), Var):  # a te.IterVar stands for its variable
        return value.var
    if dtype is None:
        if isinstance(value, bool):
            dtype = "bool"
        else:
            dtype = INDEX if isinstance(value, int) else "float32"
    if element_of(dtype) == "bool":
        value = bool(value)
        return IntImm(int(value), dtype)
    if is_float_dtype(dtype):
        return FloatImm(float(value), dtype)
    return IntImm(int(value), dtype)


# ----------------------------------------------------------------------------- operators


@dataclasses.dataclass(frozen=True, eq=False)
class BinaryOp(Expr):
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:
        return self.a.dtype


class Add(BinaryOp):
    """a + b"""


class Sub(BinaryOp):
    """a - b"""


class Mul(BinaryOp):
    """a * b"""


class Div(BinaryOp):
    """a / b: true division for floats, C (truncating) division for integers."""


class FloorDiv(BinaryOp):
    """floor(a / b) for integers."""


class FloorMod(BinaryOp):
    """a - floor(a / b) * b for integers (the sign of b)."""


class Min(BinaryOp):
    """min(a, b)"""


class Max(BinaryOp):
    """max(a, b)"""


class CompareOp(BinaryOp):
    """A comparison; its dtype is bool with the operands' lanes."""

    @property
    def dtype(self) -> str:
        return with_lanes("bool", lanes_of(self.a.dtype))


class EQ(CompareOp):
    """a == b"""


class NE(CompareOp):
    """a != b"""


class LT(CompareOp):
    """a < b"""


class LE(CompareOp):
    """a <= b"""


class GT(CompareOp):
    """a > b"""


class GE(CompareOp):
    """a >= b"""


class And(BinaryOp):
    """Logical and of bools."""


class Or(BinaryOp):
    """Logical or of bools."""


@dataclasses.dataclass(frozen=True, eq=False)
class Not(Expr):
    a: Expr

    @property
    def dtype(self) -> str:
        return self.a.dtype


@dataclasses.dataclass(frozen=True, eq=False)
class Select(Expr):
    """`true_value if condition else false_value`; both sides may be evaluated."""

    condition: Expr
    true_value: Expr
    false_value: Expr

    @property
    def dtype(self) -> str:
        return self.true_value.dtype


@dataclasses.dataclass(frozen=True, eq=False)
class Cast(Expr):
    type: str
    value: Expr

    @property
    def dtype(self) -> str:
        return self.type


#: Intrinsics `Call` accepts, with their arity. Math intrinsics keep the argument dtype.
INTRINSICS = {
    "exp": 1, "log": 1, "sqrt": 1, "rsqrt": 1, "tanh": 1, "sigmoid": 1, "erf": 1, "sin": 1,
    "cos": 1, "tan": 1, "asin": 1, "acos": 1, "atan": 1, "sinh": 1, "cosh": 1, "asinh": 1,
    "acosh": 1, "atanh": 1, "fabs": 1, "floor": 1, "ceil": 1, "round": 1, "trunc": 1,
    "log1p": 1, "expm1": 1, "pow": 2, "fmod": 2, "atan2": 2, "fma": 3, "isnan": 1, "isinf": 1,
}


@dataclasses.dataclass(frozen=True, eq=False)
class Call(Expr):
    """An intrinsic call such as exp, tanh, erf, pow or fma."""

    name: str
    args: tuple[Expr, ...]
    type: str

    @property
    def dtype(self) -> str:
        return self.type


@dataclasses.dataclass(frozen=True, eq=False)
class Let(Expr):
    var: Var
    value: Expr
    body: Expr

    @property
    def dtype(self) -> str:
        return self.body.dtype


# ----------------------------------------------------------------------------- vectors


@dataclasses.dataclass(frozen=True, eq=False)
class Ramp(Expr):
    """The vector [base, base + stride, ..., base + (lanes - 1) * stride]."""

    base: Expr
    stride: Expr
    lanes: int

    @property
    def dtype(self) -> str:
        return with_lanes(self.base.dtype, self.lanes)


@dataclasses.dataclass(frozen=True, eq=False)
class Broadcast(Expr):
    """A scalar repeated over `lanes` lanes."""

    value: Expr
    lanes: int

    @property
    def dtype(self) -> str:
        return with_lanes(self.value.dtype, self.lanes)


# ----------------------------------------------------------------------------- helpers


def _coerce(a: Any, b: Any) -> tuple[Expr, Expr]:
    """Both operands as expressions of one dtype; Python numbers take the other side's dtype."""
    a, b = (const(x) if isinstance(getattr(x, "var", None), Var) else x for x in (a, b))
    if isinstance(a, Expr) and not isinstance(b, Expr):
        b = const(b, a.dtype)
    elif isinstance(b, Expr) and not isinstance(a, Expr):
        a = const(a, b.dtype)
    elif not isinstance(a, Expr):
        a, b = const(a), const(b)
    if a.dtype != b.dtype:
        raise TypeError(f"operands have different dtypes: {a} is {a.dtype}, {b} is {b.dtype}; "
                        f"cast one of them")
    return a, b


def _value(e: Expr) -> int | float | None:
    return e.value if isinstance(e, (IntImm, FloatImm)) else None


def _fold(cls: type[BinaryOp], a: Any, b: Any) -> Expr:
    a, b = _coerce(a, b)
    x, y = _value(a), _value(b)
    if x is not None and y is not None and not is_float_dtype(a.dtype):
        if cls is Add:
            return const(x + y, a.dtype)
        if cls is Sub:
            return const(x - y, a.dtype)
        if cls is Mul:
            return const(x * y, a.dtype)
        if cls is FloorDiv and y != 0:
            return const(x // y, a.dtype)
        if cls is FloorMod and y != 0:
            return const(x % y, a.dtype)
        if cls is Min:
            return const(min(x, y), a.dtype)
        if cls is Max:
            return const(max(x, y), a.dtype)
    if cls in (Add, Sub) and y == 0 and not is_float_dtype(a.dtype):
        return a
    if cls is Add and x == 0 and not is_float_dtype(a.dtype):
        return b
    if cls in (Mul, FloorDiv) and y == 1 and not is_float_dtype(a.dtype):
        return a
    if cls is Mul and x == 1 and not is_float_dtype(a.dtype):
        return b
    return cls(a, b)


def add(a: Any, b: Any) -> Expr:
    return _fold(Add, a, b)


def sub(a: Any, b: Any) -> Expr:
    return _fold(Sub, a, b)


def mul(a: Any, b: Any) -> Expr:
    return _fold(Mul, a, b)


def div(a: Any, b: Any) -> Expr:
    return Div(*_coerce(a, b))


def floordiv(a: Any, b: Any) -> Expr:
    return _fold(FloorDiv, a, b)


def floormod(a: Any, b: Any) -> Expr:
    return _fold(FloorMod, a, b)


def min_(a: Any, b: Any) -> Expr:
    return _fold(Min, a, b)


def max_(a: Any, b: Any) -> Expr:
    return _fold(Max, a, b)


def eq(a: Any, b: Any) -> Expr:
    return EQ(*_coerce(a, b))


def ne(a: Any, b: Any) -> Expr:
    return NE(*_coerce(a, b))


def logical_and(a: Any, b: Any) -> Expr:
    return And(*_coerce(a, b))


def logical_or(a: Any, b: Any) -> Expr:
    return Or(*_coerce(a, b))


def logical_not(a: Expr) -> Expr:
    return Not(a)


def select(condition: Expr, true_value: Any, false_value: Any) -> Expr:
    t, f = _coerce(true_value, false_value)
    return Select(condition, t, f)


def cast(dtype: str, value: Any) -> Expr:
    value = const(value)
    return value if value.dtype == dtype else Cast(dtype, value)


def call(name: str, *args: Any) -> Expr:
    """An intrinsic: `call("exp", x)`, `call("fma", a, b, c)`."""
    if name not in INTRINSICS:
        raise ValueError(f"unknown intrinsic {name!r}; known: {sorted(INTRINSICS)}")
    if len(args) != INTRINSICS[name]:
        raise ValueError(f"intrinsic {name} takes {INTRINSICS[name]} arguments, got {len(args)}")
    exprs = [const(a) if not isinstance(a, Expr) else a for a in args]
    first = next((e for e in exprs if isinstance(e, Expr)), None)
    exprs = [const(_value(e), first.dtype) if _value(e) is not None and e.dtype != first.dtype
             else e for e in exprs]
    dtype = "bool" if name in ("isnan", "isinf") else first.dtype
    return Call(name, tuple(exprs), dtype)


def exp(x: Expr) -> Expr:
    return call("exp", x)


def log(x: Expr) -> Expr:
    return call("log", x)


def sqrt(x: Expr) -> Expr:
    return call("sqrt", x)


def tanh(x: Expr) -> Expr:
    return call("tanh", x)


def erf(x: Expr) -> Expr:
    return call("erf", x)


def power(x: Expr, y: Any) -> Expr:
    return call("pow", x, y)


def fma(a: Expr, b: Expr, c: Expr) -> Expr:
    return call("fma", a, b, c)


def min_value(dtype: str) -> Expr:
    """The identity of max-reductions: -inf for floats, the smallest integer otherwise."""
    if is_float_dtype(dtype):
        return FloatImm(-math.inf, dtype)
    import numpy as np

    return IntImm(int(np.iinfo(element_of(dtype)).min), dtype)


def max_value(dtype: str) -> Expr:
    if is_float_dtype(dtype):
        return FloatImm(math.inf, dtype)
    import numpy as np

    return IntImm(int(np.iinfo(element_of(dtype)).max), dtype)

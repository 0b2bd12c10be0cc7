"""Computes of the broadcasting ops (ir/ops/broadcast.py, and broadcast_to): arithmetic,
bitwise ops, shifts, pow, comparisons, logic and where.

Each input is read at its own broadcast index (`broadcast_read`): its dimensions align with the
output's last ones, and a size-1 dimension reads index 0. Binary ops are a table of scalar
expressions (`BINARY`) over operands widened to their arithmetic dtype (float32 for half
floats, rounded once at the end).

Integer semantics are the references' (ONNX's, which are C's where numpy differs): `div`
truncates toward zero, `mod` with fmod takes the dividend's sign and without it the divisor's,
division or remainder by zero gives 0 (numpy's answer), shifts by an amount outside [0, bits)
give 0 (or -1 for a negative value shifted right).

[Note: bitwise arithmetic] ember's scalar expressions have no bitwise operators (their And,
Or and Not are logical, on bools), so the bitwise ops are written with wrapping integer
arithmetic: `~x = -1 - x`, `a & b` bit by bit (`(a // 2**k) % 2`, which LLVM turns into shifts
and masks), `a | b = a + b - (a & b)`, `a ^ b = a + b - 2 * (a & b)`, `a << n = a * 2**n` and
`a >> n = a // 2**n` (floor division is the arithmetic shift). Correct, but slower than one
instruction: bitwise expression nodes are a requested change to ir/expr.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ember.compiler.ops.compute.elementwise import (
    is_float,
    is_unsigned,
    one,
    widen,
    zero,
)
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import Expr, Var, call, const, select
from ember.ir.graph import Attrs

# ----------------------------------------------------------------------------- indexing


def broadcast_index(shape: Sequence[int], index: Sequence[Expr]) -> tuple[Expr, ...]:
    """The index into a tensor of `shape` that output element `index` reads under numpy
    broadcasting: trailing dimensions align, size-1 dimensions read 0."""
    offset = len(index) - len(shape)
    return tuple(const(0) if dim == 1 else index[offset + d] for d, dim in enumerate(shape))


def broadcast_read(tensor: te.Tensor, index: Sequence[Expr]) -> Expr:
    return tensor[broadcast_index(tensor.static_shape, index)]


def broadcast_compute(output_shape: Sequence[int], inputs: Sequence[te.Tensor],
                      fn: Callable[..., Expr], name: str) -> te.Tensor:
    """The tensor of `output_shape` whose element is `fn(*each input at its broadcast index)`."""
    return te.compute(output_shape,
                      lambda *i: fn(*(broadcast_read(t, i) for t in inputs)), name=name)


# ----------------------------------------------------------------------------- integer helpers


def bits_of(dtype: str) -> int:
    return np.dtype(dtype).itemsize * 8


def _bit(x: Expr, k: int) -> Expr:
    """Bit k of integer x (0 or 1, in x's dtype), for k below the sign bit."""
    return E.floormod(E.floordiv(x, const(1 << k, x.dtype)), const(2, x.dtype))


def bitwise_and(a: Expr, b: Expr) -> Expr:
    """a & b in wrapping arithmetic (see [Note: bitwise arithmetic])."""
    t = a.dtype
    bits = bits_of(t)
    total = zero(t)
    for k in range(bits - 1):
        total = total + _bit(a, k) * _bit(b, k) * const(1 << k, t)
    if is_unsigned(t):
        top = const(1 << (bits - 1), t)
        both = (a >= top) & (b >= top)
        return total + select(both, top, zero(t))
    both = (a < zero(t)) & (b < zero(t))
    return total + select(both, const(-(1 << (bits - 1)), t), zero(t))


def wrapped_constant(value: int, dtype: str) -> Expr:
    """The integer `value` wrapped into `dtype` (two's complement for signed types)."""
    bits = bits_of(dtype)
    value %= 1 << bits
    if not is_unsigned(dtype) and value >= 1 << (bits - 1):
        value -= 1 << bits
    return const(value, dtype)


def power_of_two(n: Expr, dtype: str, largest: int) -> Expr:
    """2**n in `dtype` (wrapping) for 0 <= n <= largest, from the bits of n."""
    result = one(dtype)
    for j in range(max(1, largest.bit_length())):
        is_set = E.eq(_bit(n, j), const(1, n.dtype))
        result = select(is_set, result * wrapped_constant(1 << (1 << j), dtype), result)
    return result


def _shift(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    t = a.dtype
    bits = bits_of(t)
    in_range = (b >= zero(t)) & (b < const(bits, t))
    amount = select(in_range, b, zero(t))
    if attrs.direction == "left":
        # multiplying by 2**n drops the bits shifted past the top, as a shift does
        return select(in_range, a * power_of_two(amount, t, bits - 1), zero(t))
    # Floor division by 2**n is the arithmetic shift; 2**(bits - 1) does not fit a signed
    # type, so shift in two steps of at most half the width each.
    first = E.floordiv(amount, const(2, t))
    second = amount - first
    half = bits // 2
    shifted = E.floordiv(E.floordiv(a, power_of_two(first, t, half)),
                         power_of_two(second, t, half))
    fill = zero(t) if is_unsigned(t) else select(a < zero(t), const(-1, t), zero(t))
    return select(in_range, shifted, fill)


# ----------------------------------------------------------------------------- arithmetic


def _divide(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    return E.div(a, b)  # truncating for integers; a zero divisor gives 0 (LLVM backend)


def _float_floor_mod(a: Expr, b: Expr) -> Expr:
    # fmod, then a nonzero remainder moves into the divisor's sign (numpy's np.mod)
    r = call("fmod", a, b)
    t = a.dtype
    fix = E.ne(r, zero(t)) & E.ne(r < zero(t), b < zero(t))
    return select(fix, r + b, r)


def _mod(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    t = a.dtype
    if is_float(t):
        return call("fmod", a, b) if attrs.fmod else _float_floor_mod(a, b)
    if attrs.fmod:  # C's remainder: the dividend's sign; numpy's fmod(a, 0) is 0
        return select(E.eq(b, zero(t)), zero(t), a - E.div(a, b) * b)
    return E.floormod(a, b)


def _bitwise_or(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    return a + b - bitwise_and(a, b)


def _bitwise_xor(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    return a + b - bitwise_and(a, b) * const(2, a.dtype)


BinaryFn = Callable[[Expr, Expr, Attrs], Expr]

#: op name -> the element of the result from the two (widened) elements
BINARY: dict[str, BinaryFn] = {
    "add": lambda a, b, attrs: a + b,
    "sub": lambda a, b, attrs: a - b,
    "mul": lambda a, b, attrs: a * b,
    "div": _divide,
    "maximum": lambda a, b, attrs: E.max_(a, b),  # NaN wins, as in numpy and ONNX's Max
    "minimum": lambda a, b, attrs: E.min_(a, b),
    "mod": _mod,
    "bit_shift": _shift,
    "bitwise_and": lambda a, b, attrs: bitwise_and(a, b),
    "bitwise_or": _bitwise_or,
    "bitwise_xor": _bitwise_xor,
    "equal": lambda a, b, attrs: E.eq(a, b),
    "less": lambda a, b, attrs: a < b,
    "less_equal": lambda a, b, attrs: a <= b,
    "greater": lambda a, b, attrs: a > b,
    "greater_equal": lambda a, b, attrs: a >= b,
    "logical_and": lambda a, b, attrs: E.logical_and(a, b),
    "logical_or": lambda a, b, attrs: E.logical_or(a, b),
    "logical_xor": lambda a, b, attrs: E.ne(a, b),
}


@register_compute(*BINARY)
def binary(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    fn = BINARY[workload.op]
    out = workload.output_types[0]
    attrs = workload.attrs

    def element(a: Expr, b: Expr) -> Expr:
        return E.cast(out.dtype, fn(widen(a), widen(b), attrs))

    return [broadcast_compute(out.shape, inputs, element, workload.op)]


# ----------------------------------------------------------------------------- pow


def _int_power(a: Expr, n: Expr, exponent_bits: int) -> Expr:
    """a ** n in a's (integer) dtype, wrapping, for an int64 exponent whose magnitude fits
    `exponent_bits` bits; a negative exponent gives the whole part of 1 / a**|n|: 1, -1 or 0
    (the reference's rule)."""
    t = a.dtype
    squares: list[tuple[Var, Expr]] = []
    result: Expr = one(t)
    base: Expr = a
    # a**n is the product of a**(2**j) over the set bits j of n; each square is used twice
    # (in the product and in the next square), so squares are let-bound to keep the
    # expression linear in size.
    for j in range(exponent_bits):
        if j:
            square = Var(f"pow.square{j}", t)
            squares.append((square, base * base))
            base = square
        bit_set = E.eq(_bit(n, j), const(1, n.dtype))
        result = result * select(bit_set, base, one(t))
    odd = E.eq(E.floormod(n, const(2, n.dtype)), const(1, n.dtype))
    minus_one = select(odd, const(-1, t), one(t))
    tiny = select(E.eq(a, one(t)), one(t), select(E.eq(a, const(-1, t)), minus_one, zero(t)))
    body = select(n < const(0, n.dtype), tiny, result)
    for var, value in reversed(squares):
        body = E.Let(var, value, body)
    return body


_NARROW_FLOATS = ("float16", "bfloat16", "float32")


@register_compute("pow")
def power(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    base, exponent = inputs
    out = workload.output_types[0]

    def element(a: Expr, b: Expr) -> Expr:
        if not is_float(a.dtype) and not is_float(b.dtype):
            magnitude_bits = bits_of(b.dtype) - (0 if is_unsigned(b.dtype) else 1)
            return _int_power(a, E.cast("int64", b), min(magnitude_bits, 63))
        # numpy's promotion, extended to bfloat16: float32 when both are floats of at most
        # 32 bits, else float64
        narrow = a.dtype in _NARROW_FLOATS and b.dtype in _NARROW_FLOATS
        common = "float32" if narrow else "float64"
        return E.cast(out.dtype, call("pow", E.cast(common, a), E.cast(common, b)))

    return [broadcast_compute(out.shape, [base, exponent], element, "pow")]


# ----------------------------------------------------------------------------- where, broadcast_to


@register_compute("where")
def where(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    out = workload.output_types[0]
    return [broadcast_compute(out.shape, inputs, lambda c, x, y: select(c, x, y), "where")]


@register_compute("broadcast_to")
def broadcast_to(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    out = workload.output_types[0]
    return [broadcast_compute(out.shape, inputs, lambda x: x, "broadcast_to")]


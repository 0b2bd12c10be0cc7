"""The compute of `resize` (ir/ops/resize.py): index arithmetic, clamped gathers and weights.

Each output element maps its index on every resized axis to a float64 source coordinate with
the op's own formulas (`AxisMap`, shared with the numpy reference, so nearest rounding agrees
exactly), picks that axis's taps (clamped into the axis, so every read is in bounds) and
their weights, and sums the products over the tap combinations (see
[Note: resize as taps] in ir/ops/resize.py). The fusion pattern is injective, so the generic
CPU schedule vectorizes the innermost axis: nearest is a gather, linear 2**k weighted gathers.
Nearest upsampling by a whole factor k, where the rounding provably lands on y // k
(`whole_factor`), skips the float coordinate: the common 2x upsample of vision models is then
integer index arithmetic only; so does linear resizing whose coordinate is a ratio of
integers with a power-of-two denominator (`linear_rational`: 2x, 4x... with half_pixel or
asymmetric coordinates), at about half the float path's time.

Values are interpolated in float32 (float64 for float64 and integer data, whose results round
half to even and saturate as the reference's do). Cubic and antialiased weights are let-bound
per axis: each is used in many tap products, and a tree of copies grows with their product.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ember.compiler.ops.compute.injective import clamp
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import INDEX, Expr, Var, const, select
from ember.ir.graph import numpy_dtype
from ember.ir.ops.resize import AxisMap, axis_maps

COORDINATE = "float64"

Tap = tuple[Expr, Expr | None]  # (clamped input index, weight or None for weight 1)


def _floor(x: Expr) -> Expr:
    return E.call("floor", x)


def _fabs(x: Expr) -> Expr:
    return E.call("fabs", x)


def _where(condition: Expr, a: object, b: object) -> Expr:
    return select(condition, a, b)


def _index(position: Expr, dim: int) -> Expr:
    return clamp(E.cast(INDEX, position), 0, dim - 1)


def whole_factor(m: AxisMap) -> int | None:
    """k when nearest upsampling by the whole factor k reads input index y // k exactly, so
    the float coordinate can be skipped; else None.

    With out = k * in, half_pixel-like coordinates are x = y // k + d with |d| < 1/2, which
    the round modes take to y // k; asymmetric ones are y / k, which floor takes there."""
    k = round(m.scale)
    if m.mode != "nearest" or k < 1 or m.scale != k or m.out_dim != k * m.in_dim:
        return None
    rounds = m.nearest_mode in ("round_prefer_floor", "round_prefer_ceil")
    floors = m.nearest_mode == "floor" or m.nearest_mode == "simple"
    half_pixel = m.coordinate_mode in ("half_pixel", "half_pixel_symmetric") or (
        m.coordinate_mode == "pytorch_half_pixel" and m.out_dim > 1)
    asymmetric = m.coordinate_mode in ("asymmetric", "tf_half_pixel_for_nn")
    # asymmetric y / 2 is q or q + 1/2, which round_prefer_floor also takes to q
    halves = (m.coordinate_mode == "asymmetric" and k <= 2
              and m.nearest_mode == "round_prefer_floor")
    if (half_pixel and rounds) or (floors and asymmetric) or halves:
        return k
    return None


def linear_rational(m: AxisMap) -> tuple[int, int, int] | None:
    """(a, b, d) when the source coordinate of plain linear resizing is x = (a * y + b) / d
    with integers, so that floor(x) and its fraction are integer arithmetic (no float64
    coordinate per element); else None.

    That holds when scale is out / in: half_pixel x = (2 in y + in - out) / (2 out),
    asymmetric x = in y / out, align_corners x = (in - 1) y / (out - 1). The fraction is then
    exact (rem / d with d a power of two), where the float path rounds a little earlier.
    Upsampling by 2, 4, ... with half_pixel or asymmetric coordinates takes this path."""
    n, out = m.in_dim, m.out_dim
    if (m.mode != "linear" or m.antialias or m.exclude_outside or out < 2
            or m.scale * n != out or m.scale != out / n):
        return None
    if m.coordinate_mode in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel"):
        a, b, d = 2 * n, n - out, 2 * out
    elif m.coordinate_mode == "asymmetric":
        a, b, d = n, 0, out
    elif m.coordinate_mode == "align_corners":
        a, b, d = n - 1, 0, out - 1
    else:
        return None
    g = math.gcd(a, b, d)
    a, b, d = a // g, b // g, d // g
    # a power-of-two d makes the division a shift; a vector division by another constant
    # costs more than the float64 coordinate it replaces
    return (a, b, d) if d & (d - 1) == 0 else None


class _AxisTaps:
    """The taps of one resized axis at output index `y`, with the let-bindings they need."""

    def __init__(self, axis: int, m: AxisMap, y: Expr, work: str):
        self.bindings: list[tuple[Var, Expr]] = []
        self.outside: Expr | None = None
        k = whole_factor(m)
        if k is not None:
            self.taps: list[Tap] = [(E.floordiv(y, const(k)), None)]
            return
        rational = linear_rational(m)
        if rational is not None:
            a, b, d = rational
            numerator = y * const(a) + const(b)
            low_index = E.floordiv(numerator, const(d))
            fraction = E.cast(work, E.floormod(numerator, const(d))) * (1.0 / d)
            self.taps = [(clamp(low_index, 0, m.in_dim - 1), 1.0 - fraction),
                         (clamp(low_index + const(1), 0, m.in_dim - 1), fraction)]
            return
        x = m.coordinate(E.cast(COORDINATE, y))
        bind = m.taps > 2 or m.normalizes
        if bind:
            x = self._bind(f"resize.x{axis}", x)
        self.outside = m.outside(x)
        if m.mode == "nearest":
            self.taps = [(_index(m.nearest(x, _floor, _where), m.in_dim), None)]
            return
        low = _floor(x)
        if bind:
            low = self._bind(f"resize.low{axis}", low)
        positions = m.positions(low)
        weights = m.weights(x, low, _fabs, _where)
        if m.exclude_outside:
            weights = [select((j < 0.0) | (j > float(m.in_dim - 1)), 0.0, w)
                       for j, w in zip(positions, weights)]
        if bind:
            weights = [self._bind(f"resize.w{axis}.{k}", w) for k, w in enumerate(weights)]
        if m.normalizes:
            total = weights[0]
            for w in weights[1:]:
                total = total + w
            total = self._bind(f"resize.total{axis}", select(E.eq(total, 0.0), 1.0, total))
            weights = [w / total for w in weights]
        if bind:
            weights = [self._bind(f"resize.cw{axis}.{k}", E.cast(work, w))
                       for k, w in enumerate(weights)]
        else:
            weights = [E.cast(work, w) for w in weights]
        self.taps = [(_index(j, m.in_dim), w) for j, w in zip(positions, weights)]

    def _bind(self, name: str, value: Expr) -> Var:
        var = Var(name, value.dtype)
        self.bindings.append((var, value))
        return var


def _work_dtype(dtype: str) -> str:
    return "float32" if dtype in ("float16", "bfloat16", "float32") else "float64"


def _saturate(value: Expr, dtype: str) -> Expr:
    """An interpolated float as `dtype`: integers round half to even and saturate."""
    if E.is_float_dtype(dtype):
        return E.cast(dtype, value)
    info = np.iinfo(numpy_dtype(dtype))
    rounded = E.call("round", value)
    bounded = E.min_(E.max_(rounded, const(float(info.min), value.dtype)),
                     const(float(info.max), value.dtype))
    return E.cast(dtype, bounded)


@register_compute("resize")
def resize(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (data,) = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    maps = axis_maps(attrs, data.static_shape)
    work = _work_dtype(out.dtype)
    interpolates = any(m.mode != "nearest" for m in maps.values())

    def element(*i: Expr) -> Expr:
        per_axis: list[list[Tap]] = []
        bindings: list[tuple[Var, Expr]] = []
        outside: Expr | None = None
        for axis, index in enumerate(i):
            if axis not in maps:
                per_axis.append([(index, None)])
                continue
            axis_taps = _AxisTaps(axis, maps[axis], index, work)
            bindings.extend(axis_taps.bindings)
            per_axis.append(axis_taps.taps)
            if axis_taps.outside is not None:
                outside = (axis_taps.outside if outside is None
                           else outside | axis_taps.outside)
        if not interpolates:
            value = data[tuple(index for ((index, _),) in per_axis)]
        else:
            total: Expr | None = None
            for combination in itertools.product(*per_axis):
                term = E.cast(work, data[tuple(index for index, _ in combination)])
                for _, weight in combination:
                    if weight is not None:
                        term = term * weight
                total = term if total is None else total + term
            value = _saturate(total, out.dtype)
        if outside is not None:
            fill = const(float(attrs.extrapolation_value), COORDINATE)
            value = select(outside, _saturate(fill, out.dtype), value)
        for var, bound in reversed(bindings):
            value = E.Let(var, bound, value)
        return value

    return [te.compute(out.shape, element, name="resize")]

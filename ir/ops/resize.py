"""The `resize` op: nearest, linear and cubic interpolation of a tensor to a new static shape.

Attributes are fully resolved by the ONNX converter (Resize, Upsample): `sizes` is the whole
output shape, `scales` the per-axis factor the coordinate mapping divides by, `roi` the
crop box of tf_crop_and_resize ((starts..., ends...) over every axis, or () when unused).
Axes whose size, scale and crop box leave them unchanged are copied (`axis_maps`).

[Note: resize as taps] Every resized axis maps output index y to a source coordinate x
(`AxisMap.coordinate`, float64, with the same operations in the same order as onnx's
reference, so that nearest rounding agrees exactly) and reads `taps` input positions
j = floor(x) + first + k (k = 0..taps-1), clamped into the axis (edge padding), weighted by
kernel(s * (j - x)), where s = min(scale, 1) for antialias and 1 otherwise:

- nearest: one tap, the position nearest_mode rounds x to;
- linear: the triangle kernel, 2 taps (more when antialiasing a downscale);
- cubic: Keys' kernel with coefficient a (`cubic_coeff_a`), 4 taps (more when antialiasing).

Antialiased weights are normalized to sum 1; `exclude_outside` zeroes taps outside the axis
and normalizes. tf_crop_and_resize gives `extrapolation_value` wherever some axis's x falls
outside [0, dim - 1]. Interpolation is separable: the n-D result is the sum over tap
combinations of the product of the per-axis weights. The numpy reference resizes one axis
at a time in float64; integer results round half to even and saturate, as onnx's does.

The same `AxisMap` formulas serve the reference (on numpy arrays) and the compiled kernel
(on tensor expressions, compiler/ops/compute/resize.py), so both agree by construction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.elementwise import FLOATS, INTS
from ember.ir.ops.registry import REQUIRED, Pattern, define_op, require_dtype

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
#: "simple" is Resize-10's and Upsample's rule (as ONNX Runtime implements it): floor when
#: upsampling an axis, ceil when downsampling it.
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")

resize = define_op(
    "resize", Pattern.INJECTIVE,
    attrs={
        "sizes": REQUIRED,  # the output shape, every axis
        "scales": REQUIRED,  # per axis: the factor source coordinates are divided by
        "roi": (),  # tf_crop_and_resize's box: (start per axis..., end per axis...)
        "mode": "nearest",
        "coordinate_mode": "half_pixel",
        "nearest_mode": "round_prefer_floor",
        "cubic_coeff_a": -0.75,
        "exclude_outside": False,
        "extrapolation_value": 0.0,
        "antialias": False,
    },
    doc="Nearest, linear or cubic resampling to a static output shape (see [Note: resize as "
        "taps]).",
)


@dataclasses.dataclass(frozen=True)
class AxisMap:
    """How one resized axis maps output indices to input coordinates and taps."""

    in_dim: int
    out_dim: int
    scale: float
    roi: tuple[float, float] | None
    mode: str
    coordinate_mode: str
    nearest_mode: str
    cubic_coeff_a: float
    exclude_outside: bool
    antialias: bool

    @property
    def out_width(self) -> float:
        """The output length the coordinate formulas use: scale * in_dim, not rounded (onnx's
        reference, whose conformance data ember is checked against, does so)."""
        return self.scale * self.in_dim

    def unscale(self, v: Any) -> Any:
        """v / scale; a multiplication where 1 / scale is exact (a power of two), which gives
        the same value and costs a fraction of a division in the kernel."""
        mantissa, _ = math.frexp(self.scale)
        return v * (1.0 / self.scale) if mantissa == 0.5 else v / self.scale

    def coordinate(self, y: Any) -> Any:
        """The source coordinate of output index `y` (float64 array or expression)."""
        mode, width = self.coordinate_mode, self.out_width
        if mode == "align_corners":
            return y * 0.0 if width == 1 else y * (self.in_dim - 1) / (width - 1)
        if mode == "asymmetric":
            return self.unscale(y)
        if mode == "tf_half_pixel_for_nn":
            return self.unscale(y + 0.5)
        if mode == "pytorch_half_pixel":
            return y * 0.0 - 0.5 if width == 1 else self.unscale(y + 0.5) - 0.5
        if mode == "half_pixel":
            return self.unscale(y + 0.5) - 0.5
        if mode == "half_pixel_symmetric":
            offset = self.in_dim / 2 * (1 - self.out_dim / width)
            return offset + self.unscale(y + 0.5) - 0.5
        if mode == "tf_crop_and_resize":
            start, end = self.roi if self.roi is not None else (0.0, 1.0)
            if width == 1:
                x = y * 0.0 + (end - start) * (self.in_dim - 1) / 2
            else:
                x = y * (end - start) * (self.in_dim - 1) / (width - 1)
            return x + start * (self.in_dim - 1)
        raise ShapeError(f"resize: unknown coordinate mode {mode!r}")

    @property
    def kernel_scale(self) -> float:
        """s in kernel(s * (j - x)): antialiasing widens the kernel when downscaling."""
        return min(self.scale, 1.0) if self.antialias else 1.0

    @property
    def first_tap(self) -> int:
        """The offset of the first tap from floor(x)."""
        if self.mode == "nearest":
            return 0
        reach = 1 if self.mode == "linear" else 2
        return math.floor(-reach / self.kernel_scale) + 1 if self.antialias else 1 - reach

    @property
    def taps(self) -> int:
        return 1 if self.mode == "nearest" else 2 - 2 * self.first_tap

    @property
    def normalizes(self) -> bool:
        return self.mode != "nearest" and (self.antialias or self.exclude_outside)

    def nearest(self, x: Any, floor: Callable[[Any], Any],
                where: Callable[[Any, Any, Any], Any]) -> Any:
        """The (unclamped, float) position nearest_mode rounds x to."""
        low = floor(x)
        frac = x - low
        mode = self.nearest_mode
        if mode == "simple":
            mode = "ceil" if self.scale < 1 else "floor"
        if mode == "floor":
            return low
        if mode == "ceil":
            return where(frac > 0.0, low + 1.0, low)
        if mode == "round_prefer_ceil":
            return where(frac < 0.5, low, low + 1.0)
        return where(frac <= 0.5, low, low + 1.0)  # round_prefer_floor

    def kernel(self, d: Any, absolute: Callable[[Any], Any],
               where: Callable[[Any, Any, Any], Any]) -> Any:
        """The interpolation weight at distance `d` (before normalization)."""
        d = absolute(d * self.kernel_scale) if self.kernel_scale != 1.0 else absolute(d)
        if self.mode == "linear":
            return where(d < 1.0, 1.0 - d, d * 0.0)
        a = self.cubic_coeff_a
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return where(d <= 1.0, near, where(d < 2.0, far, d * 0.0))

    def positions(self, low: Any) -> list[Any]:
        """The (float) positions of the taps of a coordinate whose floor is `low`."""
        return [low if self.first_tap + k == 0 else low + float(self.first_tap + k)
                for k in range(self.taps)]

    def weights(self, x: Any, low: Any, absolute: Callable[[Any], Any],
                where: Callable[[Any, Any, Any], Any]) -> list[Any]:
        """The taps' weights (before normalization) at coordinate x, whose floor is `low`.
        Plain linear weights are 1 - f and f for the fraction f = x - low (the triangle
        kernel's values, to the last bit or one ulp, at a fraction of the work)."""
        if self.mode == "linear" and not self.antialias:
            fraction = x - low
            return [1.0 - fraction, fraction]
        return [self.kernel(j - x, absolute, where) for j in self.positions(low)]

    def outside(self, x: Any) -> Any:
        """Where tf_crop_and_resize extrapolates (None in the other modes)."""
        if self.coordinate_mode != "tf_crop_and_resize":
            return None
        return (x < 0.0) | (x > float(self.in_dim - 1))


def axis_maps(attrs: Any, in_shape: tuple[int, ...]) -> dict[int, AxisMap]:
    """The resized axes and their maps; axes left out are copied unchanged."""
    rank = len(in_shape)
    maps = {}
    for axis in range(rank):
        roi = (tuple(attrs.roi[axis::rank]) if attrs.roi else None)
        unchanged = (math.isclose(attrs.scales[axis], 1.0)
                     and attrs.sizes[axis] == in_shape[axis]
                     and (roi is None or (math.isclose(roi[0], 0.0)
                                          and math.isclose(roi[1], 1.0))))
        if unchanged or attrs.sizes[axis] == 0:
            continue
        maps[axis] = AxisMap(in_shape[axis], attrs.sizes[axis], float(attrs.scales[axis]), roi,
                             attrs.mode, attrs.coordinate_mode, attrs.nearest_mode,
                             float(attrs.cubic_coeff_a), bool(attrs.exclude_outside),
                             bool(attrs.antialias))
    return maps


@resize.infer
def _(attrs, x: TensorType) -> TensorType:
    require_dtype("resize", x, FLOATS + INTS)
    sizes, scales, roi = tuple(attrs.sizes), tuple(attrs.scales), tuple(attrs.roi)
    if len(sizes) != x.rank or len(scales) != x.rank:
        raise ShapeError(f"resize: input has rank {x.rank} but sizes {sizes} and scales "
                         f"{scales} must have one entry per axis")
    if roi and len(roi) != 2 * x.rank:
        raise ShapeError(f"resize: roi {roi} must have 2 * {x.rank} entries")
    if any(s < 0 for s in sizes) or any(not s > 0 for s, n in zip(scales, sizes) if n):
        raise ShapeError(f"resize: sizes {sizes} must be >= 0 and scales {scales} > 0")
    for name, value, allowed in (("mode", attrs.mode, MODES),
                                 ("coordinate_mode", attrs.coordinate_mode, COORDINATE_MODES),
                                 ("nearest_mode", attrs.nearest_mode, NEAREST_MODES)):
        if value not in allowed:
            raise ShapeError(f"resize: {name} {value!r} is not one of {allowed}")
    if attrs.antialias and attrs.mode == "nearest":
        raise ShapeError("resize: antialias applies to linear and cubic modes, not nearest")
    if any(d == 0 for axis, d in enumerate(x.shape) if sizes[axis] > 0 and d != sizes[axis]):
        raise ShapeError(f"resize: cannot resize the empty axes of {x.shape} to {sizes}")
    return TensorType(sizes, x.dtype)


def _resize_axis(data: np.ndarray, axis: int, m: AxisMap, extrapolation: float) -> np.ndarray:
    y = np.arange(m.out_dim, dtype=np.float64)
    x = np.asarray(m.coordinate(y), dtype=np.float64)
    if m.mode == "nearest":
        position = m.nearest(x, np.floor, np.where)
        index = np.clip(position, 0, m.in_dim - 1).astype(np.intp)[:, None]
        weights = np.ones((m.out_dim, 1))
    else:
        low = np.floor(x)
        j = np.stack(m.positions(low), axis=1)
        weights = np.stack(m.weights(x, low, np.abs, np.where), axis=1)
        if m.exclude_outside:
            weights = np.where((j < 0) | (j > m.in_dim - 1), 0.0, weights)
        if m.normalizes:
            total = weights.sum(axis=1, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
        index = np.clip(j, 0, m.in_dim - 1).astype(np.intp)
    gathered = np.take(data, index, axis=axis)  # axis becomes (out, taps)
    shape = (1,) * axis + weights.shape + (1,) * (data.ndim - axis - 1)
    result = (gathered * weights.reshape(shape)).sum(axis=axis + 1)
    outside = m.outside(x)
    if outside is not None:
        mask = outside.reshape((1,) * axis + (m.out_dim,) + (1,) * (data.ndim - axis - 1))
        result = np.where(mask, extrapolation, result)
    return result


@resize.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    dtype = x.dtype
    result = x.astype(np.float64)
    for axis, m in axis_maps(attrs, x.shape).items():
        result = _resize_axis(result, axis, m, float(attrs.extrapolation_value))
    if result.shape != tuple(attrs.sizes):  # axes resized to zero length
        result = np.zeros(tuple(attrs.sizes))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    return result.astype(dtype)

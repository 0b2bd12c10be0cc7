"""Sampling ops: `grid_sample`, interpolation of a tensor at the positions a grid gives, and
`roi_align`, bilinear pooling of regions of interest (see [Note: roi align samples]).

grid_sample(x (N, C, D1..Dk), grid (N, O1..Ok, k)) -> (N, C, O1..Ok): grid[n, o, :] holds
normalized coordinates in [-1, 1], innermost spatial axis first (x, y, z), as ONNX's
GridSample (and PyTorch's grid_sample) order them.

[Note: grid sample coordinates] Each spatial axis of length L maps a normalized g to
x = (g + 1) / 2 * (L - 1) with align_corners, else ((g + 1) * L - 1) / 2, in float32 (as
onnx's reference does). Nearest rounds x half to even first. A coordinate outside the borders
([0, L - 1] with align_corners, else [-0.5, L - 0.5]) is clamped into [0, L - 1] ("border")
or reflected about them ("reflection"); "zeros" leaves it. Then the taps (1 for nearest, 2
for linear, 4 for cubic: Keys' kernel with a = -0.75) read the input, each tap's integer index
handled by the padding mode again: zero outside ("zeros"), clamped ("border") or reflected.

The formulas are written once over a small math namespace (`NUMPY_MATH` here, the
tensor-expression one in compiler/ops/compute/sampling.py), so the numpy reference and the
compiled kernel compute the same thing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.elementwise import FLOATS
from ember.ir.ops.registry import Pattern, define_op, require_dtype

GRID_MODES = ("nearest", "linear", "cubic")
PADDING_MODES = ("zeros", "border", "reflection")
CUBIC_A = -0.75


class SampleMath:
    """The operations the sampling formulas use, on numpy arrays or expressions."""

    def __init__(self, floor: Callable, trunc: Callable, rint: Callable, where: Callable,
                 to_f32: Callable, to_f64: Callable, to_int: Callable, to_float: Callable,
                 equal: Callable, maximum: Callable):
        self.floor, self.trunc, self.rint, self.where = floor, trunc, rint, where
        self.equal = equal  # expressions' == is structural equality, not a comparison
        self.maximum = maximum
        self.to_f32, self.to_f64, self.to_int, self.to_float = to_f32, to_f64, to_int, to_float


NUMPY_MATH = SampleMath(
    floor=np.floor, trunc=np.trunc, rint=np.rint, where=np.where,
    to_f32=lambda v: np.asarray(v, np.float32), to_f64=lambda v: np.asarray(v, np.float64),
    to_int=lambda v: np.asarray(v).astype(np.int64), to_float=lambda v: np.asarray(v, np.float64),
    equal=np.equal, maximum=np.maximum,
)


def borders(length: int, align_corners: bool) -> tuple[float, float]:
    return (0.0, length - 1.0) if align_corners else (-0.5, length - 0.5)


def reflect(x: Any, low: float, high: float, m: SampleMath) -> Any:
    """x (float64) reflected about [low, high] until inside (x itself when inside)."""
    span = high - low
    if span <= 0:
        return x * 0.0 + low
    below = x < low
    dx = m.where(below, low - x, x - high)
    flips = m.trunc(dx / span)
    rest = dx - flips * span
    even = m.equal(m.floor(flips * 0.5) * 2.0, flips)
    low_side = m.where(even, low + rest, high - rest)
    high_side = m.where(even, high - rest, low + rest)
    return m.where(below, low_side, m.where(x > high, high_side, x))


def source_coordinate(g: Any, length: int, mode: str, padding: str, align_corners: bool,
                      m: SampleMath) -> Any:
    """The float32 input coordinate of normalized grid value g (float32) on one axis."""
    x = (g + 1.0) / 2.0 * float(length - 1) if align_corners else (
        ((g + 1.0) * float(length) - 1.0) / 2.0)
    if mode == "nearest":
        x = m.rint(x)
    low, high = borders(length, align_corners)
    outside = (x < low) | (x > high)
    if padding == "border":
        clamped = m.where(x < 0.0, x * 0.0, m.where(x > length - 1.0, x * 0.0 + (length - 1.0),
                                                     x))
        return m.where(outside, clamped, x)
    if padding == "reflection":
        return m.where(outside, m.to_f32(reflect(m.to_f64(x), low, high, m)), x)
    return x


def tap_index(j: Any, length: int, padding: str, align_corners: bool,
              m: SampleMath) -> tuple[Any, Any]:
    """(index in [0, length), in-bounds mask or None) of integer tap position j."""
    if padding == "zeros":
        return j, (j >= 0) & (j < length)
    if padding == "reflection":
        low, high = borders(length, align_corners)
        j = m.to_int(m.trunc(reflect(m.to_float(j), low, high, m)))
    return j, None


def taps(x: Any, mode: str, m: SampleMath) -> list[tuple[Any, Any]]:
    """[(integer position, weight or None), ...] of float32 coordinate x on one axis."""
    if mode == "nearest":
        return [(m.to_int(m.trunc(x)), None)]
    low = m.floor(x)
    t = x - low
    base = m.to_int(low)
    if mode == "linear":
        return [(base, 1.0 - t), (base + 1, t)]
    a = CUBIC_A
    u, v, w = t + 1.0, 1.0 - t, 2.0 - t
    weights = [((a * u - 5 * a) * u + 8 * a) * u - 4 * a,
               ((a + 2) * t - (a + 3)) * t * t + 1.0,
               ((a + 2) * v - (a + 3)) * v * v + 1.0,
               ((a * w - 5 * a) * w + 8 * a) * w - 4 * a]
    return [(base + (k - 1), weight) for k, weight in enumerate(weights)]


grid_sample = define_op(
    "grid_sample", Pattern.INJECTIVE,
    attrs={"mode": "linear", "padding_mode": "zeros", "align_corners": False},
    num_inputs=2,
    doc="Interpolates x at the normalized positions of grid (see [Note: grid sample "
        "coordinates]).",
)


@grid_sample.infer
def _(attrs, x: TensorType, grid: TensorType) -> TensorType:
    require_dtype("grid_sample", x, FLOATS)
    require_dtype("grid_sample", grid, FLOATS, "grid")
    k = x.rank - 2
    if k < 1 or grid.rank != k + 2 or grid.shape[-1] != k or grid.shape[0] != x.shape[0]:
        raise ShapeError(f"grid_sample: x {x.shape} is (N, C, D1..Dk) so grid must be "
                         f"(N, O1..Ok, k) with N = {x.shape[0] if x.rank else '?'} and "
                         f"k = {k}, got {grid.shape}")
    if attrs.mode not in GRID_MODES or attrs.padding_mode not in PADDING_MODES:
        raise ShapeError(f"grid_sample: mode {attrs.mode!r} must be one of {GRID_MODES} and "
                         f"padding_mode {attrs.padding_mode!r} one of {PADDING_MODES}")
    if any(d == 0 for d in x.shape[2:]) and math.prod(grid.shape[:-1]) > 0:
        raise ShapeError(f"grid_sample: cannot sample the empty input {x.shape}")
    return TensorType((x.shape[0], x.shape[1], *grid.shape[1:-1]), x.dtype)


@grid_sample.reference
def _(attrs, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    n, c, *dims = x.shape
    k = len(dims)
    out_spatial = grid.shape[1:-1]
    out = np.zeros((n, *out_spatial, c), dtype=np.float64)
    if out.size == 0:
        return np.zeros((n, c, *out_spatial), x.dtype)
    m = NUMPY_MATH
    per_axis = []
    for axis, length in enumerate(dims):
        g = grid[..., k - 1 - axis].astype(np.float32)
        coordinate = source_coordinate(g, length, attrs.mode, attrs.padding_mode,
                                       bool(attrs.align_corners), m)
        axis_taps = []
        for position, weight in taps(coordinate, attrs.mode, m):
            index, valid = tap_index(position, length, attrs.padding_mode,
                                     bool(attrs.align_corners), m)
            index = np.clip(index, 0, length - 1)
            weight = np.ones(g.shape, np.float32) if weight is None else weight
            if valid is not None:
                weight = np.where(valid, weight, np.float32(0))
            axis_taps.append((index, weight.astype(x.dtype)))
        per_axis.append(axis_taps)
    batch = np.arange(n).reshape((n,) + (1,) * len(out_spatial))
    for combination in itertools.product(*per_axis):
        weight = np.ones((), x.dtype)
        for _, w in combination:
            weight = weight * w
        values = x[(batch, slice(None), *(index for index, _ in combination))]
        # advanced indices around a slice move to the front: (N, O..., C)
        out += (values * weight[..., None]).astype(np.float64)
    return np.moveaxis(out, -1, 1).astype(x.dtype)


# ----------------------------------------------------------------------------- roi_align
# [Note: roi align samples] Output (r, c, ph, pw) averages (or maxes) a static grid of
# sampling_ratio x sampling_ratio bilinear samples in bin (ph, pw) of roi r, read from image
# batch_indices[r]. In float32, as onnx's reference computes: the roi box is
# rois * spatial_scale - offset (0.5 for half_pixel); without half_pixel a box is at least
# 1 x 1; sample (iy, ix) of the bin sits at start + p * bin + (i + 0.5) * bin / grid. A sample
# outside [-1, H] x [-1, W] counts as 0; inside, it is clamped to the image and interpolates
# its 4 neighbours. "max" takes the largest weighted neighbour (w * v), the reference's rule.

ROI_MODES = ("avg", "max")

roi_align = define_op(
    "roi_align", Pattern.INJECTIVE,
    attrs={"mode": "avg", "output_height": 1, "output_width": 1, "sampling_ratio": 1,
           "spatial_scale": 1.0, "half_pixel": True},
    num_inputs=3,
    doc="Average or max of bilinear samples in each bin of each region of interest (see "
        "[Note: roi align samples]).",
)


def roi_bins(x1: Any, y1: Any, x2: Any, y2: Any, attrs: Any, m: SampleMath) -> tuple:
    """(start_h, start_w, bin_h, bin_w) of rois with corners (x1, y1), (x2, y2)."""
    offset = 0.5 if attrs.half_pixel else 0.0
    scale = float(attrs.spatial_scale)
    start_w, start_h = x1 * scale - offset, y1 * scale - offset
    width, height = x2 * scale - offset - start_w, y2 * scale - offset - start_h
    if not attrs.half_pixel:
        width, height = m.maximum(width, 1.0), m.maximum(height, 1.0)
    return (start_h, start_w, height / float(attrs.output_height),
            width / float(attrs.output_width))


def sample_position(start: Any, bin_size: Any, p: Any, i: int, grid: int) -> Any:
    return start + p * bin_size + (i + 0.5) * bin_size / float(grid)


def bilinear_axis(y: Any, size: int, m: SampleMath) -> tuple:
    """(outside, low index, high index, fraction toward high) of sample coordinate y."""
    outside = (y < -1.0) | (y > float(size))
    clamped = m.maximum(y, 0.0)
    low_float = m.floor(clamped)
    low = m.to_int(low_float)
    edge = low >= size - 1
    fraction = m.where(edge, clamped * 0.0, clamped - low_float)
    return outside, m.where(edge, size - 1, low), m.where(edge, size - 1, low + 1), fraction


@roi_align.infer
def _(attrs, x: TensorType, rois: TensorType, batch_indices: TensorType) -> TensorType:
    require_dtype("roi_align", x, FLOATS)
    require_dtype("roi_align", rois, FLOATS, "rois")
    require_dtype("roi_align", batch_indices, ("int32", "int64"), "batch_indices")
    if x.rank != 4 or rois.rank != 2 or rois.shape[1] != 4 or batch_indices.shape != (
            rois.shape[0],):
        raise ShapeError(f"roi_align: x {x.shape} must be (N, C, H, W), rois {rois.shape} "
                         f"(R, 4) and batch_indices {batch_indices.shape} (R,)")
    if attrs.mode not in ROI_MODES or attrs.sampling_ratio < 1:
        raise ShapeError(f"roi_align: mode {attrs.mode!r} must be one of {ROI_MODES} and "
                         f"sampling_ratio {attrs.sampling_ratio} at least 1")
    if attrs.output_height < 1 or attrs.output_width < 1:
        raise ShapeError(f"roi_align: output size {attrs.output_height} x "
                         f"{attrs.output_width} must be positive")
    return TensorType((rois.shape[0], x.shape[1], attrs.output_height, attrs.output_width),
                      x.dtype)


@roi_align.reference
def _(attrs, x: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray) -> np.ndarray:
    m = NUMPY_MATH
    work = np.float64 if x.dtype == np.float64 else np.float32
    _, _, height, width = x.shape
    r = rois.astype(work)
    grid = int(attrs.sampling_ratio)
    start_h, start_w, bin_h, bin_w = roi_bins(r[:, 0], r[:, 1], r[:, 2], r[:, 3], attrs, m)
    ph = np.arange(attrs.output_height, dtype=work)[None, :, None]
    pw = np.arange(attrs.output_width, dtype=work)[None, None, :]
    batch = np.clip(batch_indices.astype(np.int64), 0, x.shape[0] - 1)[:, None, None]
    data = x.astype(work)
    result = None
    for iy in range(grid):
        y = sample_position(start_h[:, None, None], bin_h[:, None, None], ph, iy, grid)
        out_y, y_low, y_high, ly = bilinear_axis(y, height, m)
        for ix in range(grid):
            xx = sample_position(start_w[:, None, None], bin_w[:, None, None], pw, ix, grid)
            out_x, x_low, x_high, lx = bilinear_axis(xx, width, m)
            hy, hx = 1.0 - ly, 1.0 - lx

            def at(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
                # (R, oh, ow, C): advanced indices around the channel slice come first
                return data[batch, :, yi, xi]

            terms = [(hy * hx)[..., None] * at(y_low, x_low),
                     (hy * lx)[..., None] * at(y_low, x_high),
                     (ly * hx)[..., None] * at(y_high, x_low),
                     (ly * lx)[..., None] * at(y_high, x_high)]
            outside = (out_y | out_x)[..., None]
            if attrs.mode == "avg":
                value = np.where(outside, 0, terms[0] + terms[1] + terms[2] + terms[3])
                result = value if result is None else result + value
            else:
                value = np.where(outside, 0, np.maximum(np.maximum(terms[0], terms[1]),
                                                        np.maximum(terms[2], terms[3])))
                result = value if result is None else np.maximum(result, value)
    if attrs.mode == "avg":
        result = result / work(grid * grid)
    return np.moveaxis(result, -1, 1).astype(x.dtype)

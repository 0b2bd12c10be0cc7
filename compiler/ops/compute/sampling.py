"""Computes of the sampling ops (ir/ops/sampling.py): `grid_sample` and `roi_align`.

Every output element reads its grid entry, maps it to an input coordinate per spatial axis
and sums the weighted taps, with the op's own formulas (`source_coordinate`, `taps`,
`tap_index`) evaluated on tensor expressions through `EXPR_MATH`. Tap indices are clamped
after the padding mode has decided the weight, so every read is in bounds. Coordinates and
tap weights are let-bound: each feeds many tap products.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ember.compiler.ops.compute.injective import clamp
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import INDEX, Expr, Var, const, select
from ember.ir.ops.sampling import (
    SampleMath,
    bilinear_axis,
    roi_bins,
    sample_position,
    source_coordinate,
    tap_index,
    taps,
)

EXPR_MATH = SampleMath(
    floor=lambda v: E.call("floor", v), trunc=lambda v: E.call("trunc", v),
    rint=lambda v: E.call("round", v), where=select,
    to_f32=lambda v: E.cast("float32", v), to_f64=lambda v: E.cast("float64", v),
    to_int=lambda v: E.cast(INDEX, v), to_float=lambda v: E.cast("float64", v), equal=E.eq,
    maximum=E.max_,
)


@register_compute("grid_sample")
def grid_sample(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, grid = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    dims = x.static_shape[2:]
    k = len(dims)
    work = "float64" if x.dtype == "float64" else "float32"
    align = bool(attrs.align_corners)

    def element(*index: Expr) -> Expr:
        n, c, *o = index
        bindings: list[tuple[Var, Expr]] = []

        def bind(name: str, value: Expr) -> Var:
            var = Var(name, value.dtype)
            bindings.append((var, value))
            return var

        per_axis = []
        for axis, length in enumerate(dims):
            g = E.cast("float32", grid[(n, *o, const(k - 1 - axis))])
            coordinate = bind(f"grid.x{axis}", source_coordinate(
                g, length, attrs.mode, attrs.padding_mode, align, EXPR_MATH))
            axis_taps = []
            for t, (position, weight) in enumerate(taps(coordinate, attrs.mode, EXPR_MATH)):
                index, valid = tap_index(position, length, attrs.padding_mode, align, EXPR_MATH)
                index = bind(f"grid.i{axis}.{t}", clamp(index, 0, length - 1))
                if weight is None and valid is not None:
                    weight = const(1.0, "float32")
                if weight is not None:
                    if valid is not None:
                        weight = select(valid, weight, 0.0)
                    weight = bind(f"grid.w{axis}.{t}", E.cast(work, weight))
                axis_taps.append((index, weight))
            per_axis.append(axis_taps)
        total: Expr | None = None
        for combination in itertools.product(*per_axis):
            term = E.cast(work, x[(n, c, *(index for index, _ in combination))])
            for _, weight in combination:
                if weight is not None:
                    term = term * weight
            total = term if total is None else total + term
        value = E.cast(out.dtype, total)
        for var, bound in reversed(bindings):
            value = E.Let(var, bound, value)
        return value

    return [te.compute(out.shape, element, name="grid_sample")]


@register_compute("roi_align")
def roi_align(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, rois, batch_indices = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    batches, _, height, width = x.static_shape
    work = "float64" if x.dtype == "float64" else "float32"
    grid = int(attrs.sampling_ratio)
    m = EXPR_MATH

    def element(r: Expr, c: Expr, ph: Expr, pw: Expr) -> Expr:
        bindings: list[tuple[Var, Expr]] = []

        def bind(name: str, value: Expr) -> Var:
            var = Var(name, value.dtype)
            bindings.append((var, value))
            return var

        corners = [bind(f"roi.{k}", E.cast(work, rois[(r, const(k))])) for k in range(4)]
        start_h, start_w, bin_h, bin_w = (
            bind(f"roi.{name}", value) for name, value in
            zip(("start_h", "start_w", "bin_h", "bin_w"), roi_bins(*corners, attrs, m)))
        batch = bind("roi.batch", clamp(E.cast(INDEX, batch_indices[(r,)]), 0, batches - 1))
        rows = []
        for iy in range(grid):
            y = sample_position(start_h, bin_h, E.cast(work, ph), iy, grid)
            rows.append([bind(f"roi.y{iy}.{k}", v)
                         for k, v in enumerate(bilinear_axis(y, height, m))])
        columns = []
        for ix in range(grid):
            xx = sample_position(start_w, bin_w, E.cast(work, pw), ix, grid)
            columns.append([bind(f"roi.x{ix}.{k}", v)
                            for k, v in enumerate(bilinear_axis(xx, width, m))])
        result: Expr | None = None
        for out_y, y_low, y_high, ly in rows:
            for out_x, x_low, x_high, lx in columns:
                hy, hx = 1.0 - ly, 1.0 - lx

                def at(yi: Expr, xi: Expr) -> Expr:
                    return E.cast(work, x[(batch, c, yi, xi)])

                terms = [hy * hx * at(y_low, x_low), hy * lx * at(y_low, x_high),
                         ly * hx * at(y_high, x_low), ly * lx * at(y_high, x_high)]
                if attrs.mode == "avg":
                    value = terms[0] + terms[1] + terms[2] + terms[3]
                else:
                    value = E.max_(E.max_(terms[0], terms[1]), E.max_(terms[2], terms[3]))
                value = select(out_y | out_x, 0.0, value)
                if result is None:
                    result = value
                elif attrs.mode == "avg":
                    result = result + value
                else:
                    result = E.max_(result, value)
        if attrs.mode == "avg":
            result = result / float(grid * grid)
        value = E.cast(out.dtype, result)
        for var, bound in reversed(bindings):
            value = E.Let(var, bound, value)
        return value

    return [te.compute(out.shape, element, name="roi_align")]

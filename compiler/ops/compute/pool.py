"""Tensor-expression computes of the pooling ops of `ember.ir.ops.nn_pool`: max_pool (with
its optional int64 indices), average_pool and lp_pool.

Each is a window reduction over a padded copy of the input (a stage tagged PAD_TAG that a
schedule computes next to its reader), the shape of a convolution without weights:

- max_pool pads with the dtype's lowest value (padding never wins). Its indices come from a
  second reduction, the smallest tap whose value equals the maximum (or is NaN, as np.argmax
  finds NaNs first), then a stage turning that tap into a flat input index. Both reductions
  vectorize, where a (value, index) tuple reduction would not.
- average_pool sums zero-padded windows and divides by the number of counted elements, a
  product of one small per-axis count stage per spatial axis (count_include_pad counts the
  explicit padding, never the extra end padding ceil_mode adds).
- lp_pool raises |x| to the p-th power once per input element, in the padding stage.

With ceil_mode the padding stage grows at the end so the last, partial window reads padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import (
    STATS_TAG,
    compute_dtype,
    named_compute,
    pad_input,
    spatial_names,
    upcast,
)
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import te
from ember.ir.expr import (
    Expr,
    call,
    cast,
    const,
    eq,
    logical_and,
    logical_or,
    min_value,
    select,
)


def _effective_pads(attrs, in_spatial: Sequence[int], out_spatial: Sequence[int]) -> list[int]:
    """Begin pads, then end pads grown so that every window (ceil_mode's last one included)
    lies inside the padded input."""
    spatial = len(in_spatial)
    ends = []
    for d in range(spatial):
        needed = ((out_spatial[d] - 1) * attrs.strides[d]
                  + (attrs.kernel_shape[d] - 1) * attrs.dilations[d] + 1)
        ends.append(max(attrs.pads[spatial + d], needed - in_spatial[d] - attrs.pads[d]))
    return [*attrs.pads[:spatial], *ends]


def _window_stage(name: str, data: te.Tensor, out_shape: Sequence[int], attrs,
                  reducer, tag: str = "") -> te.Tensor:
    """reducer(data[n, c, o * stride + k * dilation]) over the window taps k."""
    kernel = attrs.kernel_shape
    spatial = len(kernel)
    taps = [te.reduce_axis(k, n) for k, n in zip(kernel, spatial_names("rk", spatial))]

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        pos = [o[d] * attrs.strides[d] + taps[d].var * attrs.dilations[d]
               for d in range(spatial)]
        return reducer(data[(n, c, *pos)], axis=taps)

    return named_compute(out_shape, ["n", "c", *spatial_names("o", spatial)], body, name, tag)


def _padded(x: te.Tensor, workload: Workload, value: float, acc: str, name: str,
            transform=None) -> te.Tensor:
    attrs = workload.attrs
    out_spatial = workload.output_types[0].shape[2:]
    pads = _effective_pads(attrs, x.static_shape[2:], out_spatial)
    if not any(pads) and transform is None and acc == x.dtype:
        return x
    return pad_input(x, pads, value, acc, name, transform)


def _lowest(dtype: str) -> float:
    """The padding of max_pool: -inf, or the smallest integer (it never wins a window)."""
    return min_value(dtype).value


@register_compute("max_pool")
def max_pool(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs
    out_type = workload.output_types[0]
    # max is exact in any precision: no upcast for the half floats
    data = _padded(x, workload, _lowest(x.dtype), x.dtype, "max_pool_pad")
    values = _window_stage("max_pool", data, out_type.shape, attrs, te.max)
    if not attrs.return_indices:
        return [values]
    kernel = attrs.kernel_shape
    spatial = len(kernel)
    taps = [te.reduce_axis(k, n) for k, n in zip(kernel, spatial_names("rk", spatial))]
    count = math.prod(kernel)
    floating = x.dtype.startswith(("float", "bfloat"))

    def first_tap(n: Expr, c: Expr, *o: Expr) -> Expr:
        pos = [o[d] * attrs.strides[d] + taps[d].var * attrs.dilations[d]
               for d in range(spatial)]
        value = data[(n, c, *pos)]
        hit = eq(value, values[(n, c, *o)])
        if floating:
            hit = logical_or(hit, call("isnan", value))
        tap = taps[0].var
        for d in range(1, spatial):
            tap = tap * kernel[d] + taps[d].var
        return te.min(select(hit, tap, const(count)), axis=taps)

    names = ["n", "c", *spatial_names("o", spatial)]
    first = named_compute(out_type.shape, names, first_tap, "max_pool_tap", tag=STATS_TAG)
    in_spatial = x.static_shape[2:]
    plane = math.prod(in_spatial)
    channels = x.static_shape[1]

    def index(n: Expr, c: Expr, *o: Expr) -> Expr:
        tap = first[(n, c, *o)]
        flat = (n * channels + c) * plane
        for d in range(spatial):
            inner = math.prod(kernel[d + 1:])
            offset = (tap // inner) % kernel[d] if d else tap // inner
            coord = o[d] * attrs.strides[d] + offset * attrs.dilations[d] - attrs.pads[d]
            if attrs.storage_order == 0:
                stride = math.prod(in_spatial[d + 1:])
            else:
                stride = math.prod(in_spatial[:d])
            flat = flat + coord * stride
        return flat

    indices = named_compute(out_type.shape, names, index, "max_pool_indices")
    return [values, indices]


def _count_stage(workload: Workload, d: int) -> te.Tensor:
    """How many taps of the window at each output position along spatial axis `d` count."""
    attrs = workload.attrs
    spatial = len(attrs.kernel_shape)
    size = workload.input_types[0].shape[2 + d]
    lo, hi = 0, size
    if attrs.count_include_pad:
        lo, hi = -attrs.pads[d], size + attrs.pads[spatial + d]
    k = te.reduce_axis(attrs.kernel_shape[d], "k")
    out_size = workload.output_types[0].shape[2 + d]

    def body(o: Expr) -> Expr:
        pos = o * attrs.strides[d] + k.var * attrs.dilations[d] - attrs.pads[d]
        inside = logical_and(pos >= lo, pos < hi)
        return te.sum(select(inside, const(1), const(0)), axis=k)

    return named_compute((out_size,), ["o"], body, f"average_pool_count{d}", tag=STATS_TAG)


@register_compute("average_pool")
def average_pool(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs
    out_type = workload.output_types[0]
    acc = compute_dtype(x.dtype)
    data = _padded(x, workload, 0.0, acc, "average_pool_pad")
    sums = _window_stage("average_pool_sum", data, out_type.shape, attrs, te.sum)
    spatial = len(attrs.kernel_shape)
    counts = [_count_stage(workload, d) for d in range(spatial)]

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        divisor = counts[0][o[0]]
        for d in range(1, spatial):
            divisor = divisor * counts[d][o[d]]
        return upcast(sums[(n, c, *o)] / cast(acc, divisor), x.dtype)

    names = ["n", "c", *spatial_names("o", spatial)]
    return [named_compute(out_type.shape, names, body, "average_pool")]


@register_compute("lp_pool")
def lp_pool(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs
    out_type = workload.output_types[0]
    acc = compute_dtype(x.dtype)
    p = float(attrs.p)
    data = _padded(x, workload, 0.0, acc, "lp_pool_pad",
                   transform=lambda v: call("pow", call("fabs", v), const(p, acc)))
    sums = _window_stage("lp_pool_sum", data, out_type.shape, attrs, te.sum)
    names = ["n", "c", *spatial_names("o", len(attrs.kernel_shape))]
    root = const(1 / p, acc)
    return [named_compute(out_type.shape, names,
                          lambda *i: upcast(call("pow", sums[i], root), x.dtype), "lp_pool")]

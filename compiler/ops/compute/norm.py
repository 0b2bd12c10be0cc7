"""Tensor-expression computes of the normalization ops of `ember.ir.ops.nn_norm`: batch_norm,
group_norm, layer_norm, rms_norm and lrn.

Statistics are stages of their own, tagged STATS_TAG, over the reduced shape (one value per
row, group or channel), so a schedule computes them inside the loop over rows, next to the
elementwise stage that uses them. Like the references, the variance is the mean of the squared
deviations from the mean (two passes over the row), and half-precision inputs are computed in
float32 and rounded once by the last stage.

batch_norm folds its four per-channel parameters into one scale and one shift per channel
(two tiny stages), then is a multiply-add per element, as the reference computes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import (
    STATS_TAG,
    broadcast_read,
    compute_dtype,
    named_compute,
    row_reduce,
    upcast,
)
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import te
from ember.ir.expr import Expr, call, const, logical_and
from ember.ir.ops.nn_norm import STATS_DTYPE


def _names(rank: int) -> list[str]:
    return [f"i{d}" for d in range(rank)]


@register_compute("batch_norm")
def batch_norm(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, scale, bias, mean, var = inputs
    acc = compute_dtype(x.dtype)
    eps = const(workload.attrs.epsilon, acc)
    channels = x.static_shape[1]
    factor = named_compute(
        (channels,), ["c"],
        lambda c: upcast(scale[c], acc) / call("sqrt", upcast(var[c], acc) + eps),
        "batch_norm_factor", tag=STATS_TAG)
    shift = named_compute(
        (channels,), ["c"],
        lambda c: upcast(bias[c], acc) - upcast(mean[c], acc) * factor[c],
        "batch_norm_shift", tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        return upcast(upcast(x[i], acc) * factor[i[1]] + shift[i[1]], x.dtype)

    return [named_compute(x.static_shape, _names(x.ndim), body, "batch_norm")]


def _row_statistics(x: te.Tensor, outer: Sequence[int], reduce_shape: Sequence[int],
                    read, acc: str, prefix: str) -> tuple[te.Tensor, te.Tensor]:
    """The mean and 1/sqrt(var + eps)-ready variance of the elements `read(outer_indices,
    reduce_vars)` over `reduce_shape`, one value per outer index (two-pass)."""
    count = const(float(math.prod(reduce_shape)), acc)
    names = [f"o{d}" for d in range(len(outer))]
    if len(reduce_shape) == 1:
        # one contiguous axis: row_reduce splits long rows into vectorizable partial sums
        def centered_square(o: Sequence[Expr], r: Expr) -> Expr:
            centered = read(o, [r]) - mean[tuple(o)]
            return centered * centered

        total = row_reduce(te.sum, outer, names, reduce_shape[0],
                           lambda o, r: read(o, [r]), f"{prefix}_sum")
        mean = named_compute(outer, names, lambda *o: total[o] / count, f"{prefix}_mean",
                             tag=STATS_TAG)
        square_sum = row_reduce(te.sum, outer, names, reduce_shape[0], centered_square,
                                f"{prefix}_square_sum")
    else:
        r1 = [te.reduce_axis(e, f"r{d}") for d, e in enumerate(reduce_shape)]
        total = named_compute(outer, names,
                              lambda *o: te.sum(read(o, [r.var for r in r1]), axis=r1),
                              f"{prefix}_sum", tag=STATS_TAG)
        mean = named_compute(outer, names, lambda *o: total[o] / count, f"{prefix}_mean",
                             tag=STATS_TAG)
        r2 = [te.reduce_axis(e, f"r{d}") for d, e in enumerate(reduce_shape)]

        def squares(*o: Expr) -> Expr:
            centered = read(o, [r.var for r in r2]) - mean[o]
            return te.sum(centered * centered, axis=r2)

        square_sum = named_compute(outer, names, squares, f"{prefix}_square_sum",
                                   tag=STATS_TAG)
    var = named_compute(outer, names, lambda *o: square_sum[o] / count, f"{prefix}_var",
                        tag=STATS_TAG)
    return mean, var


@register_compute("group_norm")
def group_norm(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, scale, bias = inputs
    acc = compute_dtype(x.dtype)
    shape = x.static_shape
    groups = workload.attrs.num_groups
    per_group = shape[1] // groups
    eps = const(workload.attrs.epsilon, acc)

    def read(o: Sequence[Expr], r: Sequence[Expr]) -> Expr:
        n, g = o
        return upcast(x[(n, g * per_group + r[0], *r[1:])], acc)

    mean, var = _row_statistics(x, (shape[0], groups), (per_group, *shape[2:]), read, acc,
                                "group_norm")
    std = named_compute((shape[0], groups), ["o0", "o1"],
                        lambda n, g: call("sqrt", var[n, g] + eps), "group_norm_std",
                        tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        n, c = i[:2]
        g = c // per_group
        normalized = (upcast(x[i], acc) - mean[n, g]) / std[n, g]
        return upcast(normalized * upcast(scale[c], acc) + upcast(bias[c], acc), x.dtype)

    return [named_compute(shape, _names(x.ndim), body, "group_norm")]


@register_compute("layer_norm")
def layer_norm(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, scale, bias = (list(inputs) + [None])[:3]
    attrs = workload.attrs
    acc = compute_dtype(x.dtype)
    shape = x.static_shape
    axis = attrs.axis
    outer = shape[:axis]
    eps = const(attrs.epsilon, acc)

    def read(o: Sequence[Expr], r: Sequence[Expr]) -> Expr:
        return upcast(x[(*o, *r)], acc)

    mean, var = _row_statistics(x, outer, shape[axis:], read, acc, "layer_norm")
    names = [f"o{d}" for d in range(axis)]
    inv_std = named_compute(outer, names,
                            lambda *o: const(1.0, acc) / call("sqrt", var[o] + eps),
                            "layer_norm_inv_std", tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        o = i[:axis]
        y = (upcast(x[i], acc) - mean[o]) * inv_std[o] * upcast(broadcast_read(scale, i), acc)
        if bias is not None:
            y = y + upcast(broadcast_read(bias, i), acc)
        return upcast(y, x.dtype)

    y = named_compute(shape, _names(x.ndim), body, "layer_norm")
    if not attrs.with_stats:
        return [y]
    stats_shape = workload.output_types[1].shape
    stats_names = _names(len(stats_shape))
    mean_out = named_compute(stats_shape, stats_names,
                             lambda *i: upcast(mean[i[:axis]], STATS_DTYPE), "layer_norm_mean")
    inv_std_out = named_compute(stats_shape, stats_names,
                                lambda *i: upcast(inv_std[i[:axis]], STATS_DTYPE),
                                "layer_norm_inv_std_dev")
    return [y, mean_out, inv_std_out]


@register_compute("rms_norm")
def rms_norm(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, scale = inputs
    attrs = workload.attrs
    acc = compute_dtype(x.dtype)
    shape = x.static_shape
    axis = attrs.axis
    outer, inner = shape[:axis], shape[axis:]
    names = [f"o{d}" for d in range(axis)]
    if len(inner) == 1:
        def square(o: Sequence[Expr], r: Expr) -> Expr:
            v = upcast(x[(*o, r)], acc)
            return v * v

        square_sum = row_reduce(te.sum, outer, names, inner[0], square, "rms_norm_square_sum")
    else:
        r = [te.reduce_axis(e, f"r{d}") for d, e in enumerate(inner)]

        def squares(*o: Expr) -> Expr:
            v = upcast(x[(*o, *[a.var for a in r])], acc)
            return te.sum(v * v, axis=r)

        square_sum = named_compute(outer, names, squares, "rms_norm_square_sum",
                                   tag=STATS_TAG)
    count = const(float(math.prod(inner)), acc)
    eps = const(attrs.epsilon, acc)
    inv_rms = named_compute(
        outer, names,
        lambda *o: const(1.0, acc) / call("sqrt", square_sum[o] / count + eps),
        "rms_norm_inv_rms", tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        y = upcast(x[i], acc) * inv_rms[i[:axis]] * upcast(broadcast_read(scale, i), acc)
        return upcast(y, x.dtype)

    return [named_compute(shape, _names(x.ndim), body, "rms_norm")]


@register_compute("lrn")
def lrn(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs
    acc = compute_dtype(x.dtype)
    shape = x.static_shape
    channels = shape[1]
    before = (attrs.size - 1) // 2
    r = te.reduce_axis(attrs.size, "r")

    def squares(n: Expr, c: Expr, *s: Expr) -> Expr:
        source = c - before + r.var
        v = upcast(x[(n, source, *s)], acc)
        inside = logical_and(source >= 0, source < channels)
        # the condition guards the load: channels outside [0, C) are never read
        return te.sum(v * v, axis=r, where=inside)

    names = _names(x.ndim)
    square_sum = named_compute(shape, names, squares, "lrn_square_sum", tag=STATS_TAG)
    bias = const(attrs.bias, acc)
    alpha = const(attrs.alpha / attrs.size, acc)
    beta = const(attrs.beta, acc)

    def body(*i: Expr) -> Expr:
        base = bias + alpha * square_sum[i]
        return upcast(upcast(x[i], acc) / call("pow", base, beta), x.dtype)

    return [named_compute(shape, names, body, "lrn")]

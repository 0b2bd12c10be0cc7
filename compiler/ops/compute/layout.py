"""Tensor-expression computes of the blocked-layout ops of `ember.ir.ops.layout`:
layout_transform (an index mapping, scheduled by the generic injective schedule),
conv2d_nchwc (a padding stage, tag `PAD_TAG`, then the reduction over input-channel blocks (of
the output block's group when grouped), the kernel taps and the channels of a block; its output
is the accumulator itself, so an epilogue fuses straight onto it) and depthwise_conv2d_nchwc
(the same with a reduction over the taps only).
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.compiler.ops.compute.nn import PAD_TAG, all_of, guarded_copy, named_compute
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import te
from ember.ir.expr import Expr, min_, select
from ember.ir.ops.layout import block_of


@register_compute("layout_transform")
def layout_transform(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    out = workload.output_types[0]
    dst = block_of(workload.attrs.dst_layout)
    if dst:
        channels = x.static_shape[1]

        def to_blocked(n: Expr, cb: Expr, h: Expr, w: Expr, ci: Expr) -> Expr:
            c = cb * dst + ci
            if channels % dst == 0:
                return x[(n, c, h, w)]
            # a partial last block: zeros past the channels, the read clamped in bounds
            return select(c < channels, x[(n, min_(c, channels - 1), h, w)], 0.0)

        body, names = to_blocked, ["n", "cb", "h", "w", "ci"]
    else:
        src = block_of(workload.attrs.src_layout)

        def from_blocked(n: Expr, c: Expr, h: Expr, w: Expr) -> Expr:
            return x[(n, c // src, h, w, c % src)]

        body, names = from_blocked, ["n", "c", "h", "w"]
    return [named_compute(out.shape, names, body, "layout_transform")]


def pad_blocked(x: te.Tensor, pads: Sequence[int], name: str) -> te.Tensor:
    """Blocked data (N, C/c, H, W, c) zero-padded on H and W (pads: top, left, bottom, right):
    a guarded copy (compute/nn.py), so padding positions never load."""
    n_, cb_, height, width, block = x.static_shape
    top, left, bottom, right = pads
    step = te.reduce_axis(1, "rp")
    reducer = guarded_copy(0.0, x.dtype)

    def body(n: Expr, cb: Expr, ph: Expr, pw: Expr, ci: Expr) -> Expr:
        conditions = []
        h = ph - top if top else ph
        w = pw - left if left else pw
        if top:
            conditions.append(h >= 0)
        if bottom:
            conditions.append(h < height)
        if left:
            conditions.append(w >= 0)
        if right:
            conditions.append(w < width)
        return reducer(x[(n, cb, h, w, ci)], axis=step, where=all_of(conditions))

    shape = (n_, cb_, height + top + bottom, width + left + right, block)
    return named_compute(shape, ["n", "cb", "ph", "pw", "ci"], body, name, tag=PAD_TAG)


def _position(o: Expr, stride: int, tap: te.IterVar, taps: int, dilation: int) -> Expr:
    """The input row (column) output row `o` reads at `tap`; a one-tap axis adds nothing, so
    1x1 convolutions index the data like a matrix."""
    base = o * stride if stride != 1 else o
    if taps == 1:
        return base
    return base + (tap.var * dilation if dilation != 1 else tap.var)


@register_compute("conv2d_nchwc")
def conv2d_nchwc(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, w = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    data = pad_blocked(x, attrs.pads, "conv_nchwc_pad") if any(attrs.pads) else x
    out_blocks, in_blocks, kh, kw, in_block, _ = w.static_shape
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    # grouped: output block ob reads the input blocks of its group
    group_out = out_blocks // attrs.groups
    rb = te.reduce_axis(in_blocks, "rb")
    rh = te.reduce_axis(kh, "rh")
    rw = te.reduce_axis(kw, "rw")
    ri = te.reduce_axis(in_block, "ri")

    def body(n: Expr, ob: Expr, oh: Expr, ow: Expr, oi: Expr) -> Expr:
        h = _position(oh, sh, rh, kh, dh)
        col = _position(ow, sw, rw, kw, dw)
        block = rb.var if attrs.groups == 1 else ob // group_out * in_blocks + rb.var
        product = data[(n, block, h, col, ri.var)] * w[(ob, rb.var, rh.var, rw.var, ri.var, oi)]
        return te.sum(product, axis=[rb, rh, rw, ri])

    return [named_compute(out.shape, ["n", "ob", "oh", "ow", "oi"], body, "conv_nchwc")]


@register_compute("depthwise_conv2d_nchwc")
def depthwise_conv2d_nchwc(workload: Workload, inputs: Sequence[te.Tensor | None]
                           ) -> list[te.Tensor]:
    x, w = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    data = pad_blocked(x, attrs.pads, "depthwise_nchwc_pad") if any(attrs.pads) else x
    _, kh, kw, _ = w.static_shape
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    rh = te.reduce_axis(kh, "rh")
    rw = te.reduce_axis(kw, "rw")

    def body(n: Expr, cb: Expr, oh: Expr, ow: Expr, ci: Expr) -> Expr:
        h = _position(oh, sh, rh, kh, dh)
        col = _position(ow, sw, rw, kw, dw)
        return te.sum(data[(n, cb, h, col, ci)] * w[(cb, rh.var, rw.var, ci)], axis=[rh, rw])

    return [named_compute(out.shape, ["n", "ob", "oh", "ow", "oi"], body, "depthwise_nchwc")]

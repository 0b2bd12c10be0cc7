"""Blocked-layout ops: `layout_transform` between NCHW and NCHW[x]c, and `conv2d_nchwc`, the
2-D convolution of a blocked input with pre-packed weights.

The CPU layout pass (compiler/passes/layout.py) rewrites float32 convolutions into these ops:

- NCHW{b}c splits the channel axis into blocks of b: element [n, c, h, w] of an (N, C, H, W)
  tensor sits at [n, c // b, h, w, c % b] of the (N, C/b, H, W, b) tensor. Layouts are named as
  TVM names them: "NCHW" and "NCHW16c" (the upper-case letters are whole axes, "16c" the inner
  block of C). Only these two kinds exist here. C need not divide into blocks: the last block
  is then padded (zeros going in; `channels` names the true count coming out), and padded
  weights (`pack_conv_weight`) make the padding channels add nothing to a conv.
- conv2d_nchwc reads data (N, IC/ic, H, W, ic) and a weight packed as (OC/oc, IC/ic, KH, KW,
  ic, oc), and writes (N, OC/oc, OH, OW, oc); the block sizes are the shapes' last axes. It is
  a convolution with explicit strides, pads (begins then ends, ONNX's order) and
  dilations, all resolved; the layout pass packs the weight with numpy at compile time
  (`pack_conv_weight`). With groups > 1 each group's input and output channels are whole
  blocks: the weight is (OC/oc, IC/(groups*ic), KH, KW, ic, oc) and output block `ob` reads
  the input blocks of its group, starting at (ob // (OC/(groups*oc))) * IC/(groups*ic).
- depthwise_conv2d_nchwc is the depthwise case (groups = channels, one filter per channel):
  data and output (N, C/c, H, W, c), weight packed as (C/c, KH, KW, c)
  (`pack_depthwise_weight`).
"""

from __future__ import annotations

import re

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.nn import check_window_attrs, sliding_windows, window_output_shape
from ember.ir.ops.registry import REQUIRED, Pattern, define_op, same_dtype

_BLOCKED = re.compile(r"^NCHW([1-9][0-9]*)c$")


def block_of(layout: str) -> int:
    """The channel block of a layout name: 0 for "NCHW", b for "NCHW{b}c"; ShapeError for
    anything else."""
    if layout == "NCHW":
        return 0
    match = _BLOCKED.match(layout)
    if match is None:
        raise ShapeError(
            f"layout_transform: layout {layout!r} is not supported; ember knows 'NCHW' and "
            f"'NCHW<b>c' (e.g. 'NCHW16c')"
        )
    return int(match.group(1))


def blocked_layout(block: int) -> str:
    return f"NCHW{block}c"


def padded_channels(channels: int, block: int) -> int:
    """`channels` rounded up to whole blocks."""
    return -(-channels // block) * block


def pad_axis(x: np.ndarray, axis: int, size: int, fill: float = 0.0) -> np.ndarray:
    """`x` with axis `axis` extended to `size` by `fill`."""
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return np.pad(x, widths, constant_values=fill)


def to_blocked(x: np.ndarray, block: int, fill: float = 0.0) -> np.ndarray:
    """(N, C, H, W) -> (N, ceil(C/block), H, W, block); channels past C (a last block only
    partly filled) hold `fill`."""
    x = pad_axis(x, 1, padded_channels(x.shape[1], block), fill)
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(x: np.ndarray, channels: int = 0) -> np.ndarray:
    """(N, C/b, H, W, b) -> (N, C, H, W), or its first `channels` channels when nonzero."""
    n, cb, h, w, b = x.shape
    plain = x.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w)
    return np.ascontiguousarray(plain[:, :channels] if channels else plain)


def pack_conv_weight(w: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """An OIHW conv weight (OC, IC, KH, KW) packed as (OC/oc, IC/ic, KH, KW, ic, oc); output
    and input channels past whole blocks are padded with zero weights (so a padded input
    channel adds nothing and a padded output channel is zero)."""
    w = pad_axis(pad_axis(w, 0, padded_channels(w.shape[0], out_block)), 1,
                 padded_channels(w.shape[1], in_block))
    oc, ic, kh, kw = w.shape
    packed = w.reshape(oc // out_block, out_block, ic // in_block, in_block, kh, kw)
    return np.ascontiguousarray(packed.transpose(0, 2, 4, 5, 3, 1))


def pack_depthwise_weight(w: np.ndarray, block: int) -> np.ndarray:
    """A depthwise conv weight (C, 1, KH, KW) packed as (C/c, KH, KW, c), zero weights for
    the channels of a last partial block."""
    w = pad_axis(w, 0, padded_channels(w.shape[0], block))
    channels, _, kh, kw = w.shape
    packed = w.reshape(channels // block, block, kh, kw)
    return np.ascontiguousarray(packed.transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------- layout_transform

layout_transform = define_op(
    "layout_transform", Pattern.INJECTIVE,
    attrs={"src_layout": REQUIRED, "dst_layout": REQUIRED, "channels": 0},
    doc="The input in another layout: NCHW -> NCHW{b}c (split channels into blocks of b, "
        "the block innermost; a last partial block is zero-padded) or NCHW{b}c -> NCHW (its "
        "first `channels` channels when nonzero: the padding dropped).",
)


@layout_transform.infer
def _(attrs, x: TensorType) -> TensorType:
    src, dst = block_of(attrs.src_layout), block_of(attrs.dst_layout)
    if (src == 0) == (dst == 0):
        raise ShapeError(
            f"layout_transform: {attrs.src_layout!r} -> {attrs.dst_layout!r} is not supported; "
            f"one side must be 'NCHW' and the other 'NCHW<b>c'"
        )
    if src == 0:
        if x.rank != 4:
            raise ShapeError(
                f"layout_transform: an NCHW input must have rank 4, got shape {x.shape}"
            )
        n, c, h, w = x.shape
        return TensorType((n, -(-c // dst), h, w, dst), x.dtype)
    if x.rank != 5 or x.shape[4] != src:
        raise ShapeError(
            f"layout_transform: an {attrs.src_layout} input must have shape (N, C/{src}, H, W, "
            f"{src}), got {x.shape}"
        )
    n, cb, h, w, b = x.shape
    channels = attrs.channels or cb * b
    if not cb * b - b < channels <= cb * b:
        raise ShapeError(
            f"layout_transform: channels={attrs.channels} must drop only the padding of the "
            f"last block: between {cb * b - b + 1} and {cb * b} for input shape {x.shape}"
        )
    return TensorType((n, channels, h, w), x.dtype)


@layout_transform.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    dst = block_of(attrs.dst_layout)
    return to_blocked(x, dst) if dst else from_blocked(x, attrs.channels)


# ----------------------------------------------------------------------------- conv2d_nchwc

conv2d_nchwc = define_op(
    "conv2d_nchwc", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"strides": REQUIRED, "dilations": REQUIRED, "pads": REQUIRED, "groups": 1},
    num_inputs=2,
    doc="2-D convolution of blocked data (N, IC/ic, H, W, ic) with a packed weight "
        "(OC/oc, IC/(groups*ic), KH, KW, ic, oc), giving (N, OC/oc, OH, OW, oc); each group's "
        "channels are whole blocks.",
)


@conv2d_nchwc.infer
def _(attrs, x: TensorType, w: TensorType) -> TensorType:
    op = "conv2d_nchwc"
    if x.dtype != "float32":
        raise ShapeError(f"{op}: data has dtype {x.dtype}; {op} accepts float32")
    same_dtype(op, x, w)
    if x.rank != 5 or w.rank != 6:
        raise ShapeError(
            f"{op}: data must be (N, IC/ic, H, W, ic) and the weight (OC/oc, IC/ic, KH, KW, ic, "
            f"oc), got shapes {x.shape} and {w.shape}"
        )
    groups = attrs.groups
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise ShapeError(
            f"{op}: groups={groups} must divide the data's {x.shape[1]} input-channel blocks "
            f"and the weight's {w.shape[0]} output-channel blocks (each group whole blocks)"
        )
    if w.shape[1] * groups != x.shape[1] or w.shape[4] != x.shape[4]:
        raise ShapeError(
            f"{op}: the data has {x.shape[1]} blocks of {x.shape[4]} input channels but the "
            f"weight {w.shape} expects {w.shape[1] * groups} blocks of {w.shape[4]}"
            f"{f' ({groups} groups)' if groups > 1 else ''}"
        )
    plane = TensorType(x.shape[:4], x.dtype)
    check_window_attrs(op, plane, strides=attrs.strides, dilations=attrs.dilations,
                       pads=attrs.pads)
    out = window_output_shape(op, x.shape[2:4], w.shape[2:4], attrs.strides, attrs.dilations,
                              attrs.pads)
    return TensorType((x.shape[0], w.shape[0], *out, w.shape[5]), x.dtype)


@conv2d_nchwc.reference
def _(attrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    groups = attrs.groups
    if groups == 1:
        return _dense_nchwc_reference(attrs, x, w)
    in_step, out_step = x.shape[1] // groups, w.shape[0] // groups
    parts = [_dense_nchwc_reference(attrs, x[:, g * in_step:(g + 1) * in_step],
                                    w[g * out_step:(g + 1) * out_step])
             for g in range(groups)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _dense_nchwc_reference(attrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    n, in_blocks, _, _, in_block = x.shape
    out_blocks, _, kh, kw, _, out_block = w.shape
    out_shape = window_output_shape("conv2d_nchwc", x.shape[2:4], (kh, kw), attrs.strides,
                                    attrs.dilations, attrs.pads)
    # the blocked data as NCHW windows (N, C, OH, OW, KH, KW), C = in_blocks * in_block
    plain = from_blocked(x)
    windows = sliding_windows(plain, (kh, kw), attrs.strides, attrs.dilations, attrs.pads,
                              out_shape, 0)
    # the packed weight back to (C * KH * KW, OC) in the windows' (C, KH, KW) order
    weight = w.transpose(1, 4, 2, 3, 0, 5).reshape(in_blocks * in_block * kh * kw,
                                                   out_blocks * out_block)
    cols = np.moveaxis(windows, 1, 3).reshape(n * out_shape[0] * out_shape[1], -1)
    y = (cols @ weight).reshape(n, *out_shape, out_blocks, out_block)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2, 4)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- depthwise

depthwise_conv2d_nchwc = define_op(
    "depthwise_conv2d_nchwc", Pattern.OUT_ELEMWISE_FUSABLE,
    attrs={"strides": REQUIRED, "dilations": REQUIRED, "pads": REQUIRED},
    num_inputs=2,
    doc="Depthwise 2-D convolution (one filter per channel) of blocked data (N, C/c, H, W, c) "
        "with a packed weight (C/c, KH, KW, c), giving (N, C/c, OH, OW, c).",
)


@depthwise_conv2d_nchwc.infer
def _(attrs, x: TensorType, w: TensorType) -> TensorType:
    op = "depthwise_conv2d_nchwc"
    if x.dtype != "float32":
        raise ShapeError(f"{op}: data has dtype {x.dtype}; {op} accepts float32")
    same_dtype(op, x, w)
    if x.rank != 5 or w.rank != 4 or (w.shape[0], w.shape[3]) != (x.shape[1], x.shape[4]):
        raise ShapeError(
            f"{op}: data (N, C/c, H, W, c) {x.shape} needs a weight (C/c, KH, KW, c) with "
            f"C/c = {x.shape[1] if x.rank == 5 else '?'} and c = "
            f"{x.shape[4] if x.rank == 5 else '?'}, got {w.shape}"
        )
    plane = TensorType(x.shape[:4], x.dtype)
    check_window_attrs(op, plane, strides=attrs.strides, dilations=attrs.dilations,
                       pads=attrs.pads)
    out = window_output_shape(op, x.shape[2:4], w.shape[1:3], attrs.strides, attrs.dilations,
                              attrs.pads)
    return TensorType((x.shape[0], x.shape[1], *out, x.shape[4]), x.dtype)


@depthwise_conv2d_nchwc.reference
def _(attrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, kh, kw, _ = w.shape
    out_shape = window_output_shape("depthwise_conv2d_nchwc", x.shape[2:4], (kh, kw),
                                    attrs.strides, attrs.dilations, attrs.pads)
    plain = from_blocked(x)
    windows = sliding_windows(plain, (kh, kw), attrs.strides, attrs.dilations, attrs.pads,
                              out_shape, 0)  # (N, C, OH, OW, KH, KW)
    weight = w.transpose(0, 3, 1, 2).reshape(plain.shape[1], kh, kw)  # (C, KH, KW)
    y = np.zeros((*plain.shape[:2], *out_shape), np.float32)
    for i in range(kh):  # a loop over the taps, each a whole-tensor multiply-add
        for j in range(kw):
            y += windows[..., i, j] * weight[:, i, j][None, :, None, None]
    return to_blocked(y, x.shape[4]).astype(x.dtype, copy=False)

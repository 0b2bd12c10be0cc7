"""CPU schedules of conv and conv_transpose (N-d, NCHW), and the window-reduction schedule
pooling shares (`schedule_window`).

A window reduction is an output (N, M, *spatial) computed by a reduction over input channels
and/or kernel taps, reading a padded input stage. The direct NCHW schedule (TVM's x86 conv2d
without a packed layout):

    parallel for (n, m.outer, outer spatial axes, oh.outer) fused
      pad = the input rows this block reads (all its channels), padded   # compute_at
      for ow.outer
        local acc[tile_oc, tile_oh, tile_ow]                             # registers
        for rc, rkh, rkw (rkw unrolled)
          for m.inner, oh.inner (unrolled), ow.inner (vectorized)
            acc += pad[n, c, oh * s + rkh * d, ow * s + rkw * d] * w[m, rc, rkh, rkw]
        out[block] = acc (+ bias; rounding for half dtypes), ow vectorized

Output width is the vector axis (contiguous in NCHW; strided loads when the stride is not 1).
The padded copy is computed per parallel block, never for the whole input: a block's rows,
a few kilobytes. Knobs (`ConvTemplate.space`): tile_oc, tile_oh, tile_ow (one vector register
block of oc x oh x ow/lanes accumulators; the defaults aim at ~16-24 of AVX-512's 32
registers), unroll_kw. 1-D and 3-D convolutions use the same schedule (no oh tile in 1-D; the
depth axis joins the parallel loop in 3-D). Depthwise convolutions (one input channel per
group) get their own template: no channel reduction, so tiles of rows of a single channel.

conv_transpose's compute is a stride-1 convolution over a dilated, padded input
(compute/nn.py), so it is scheduled by the same template.

Later, packed layouts (NCHW[x]c with packed weights) replace this template for speed; they
only need to register another template with the same knobs plus a layout factor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import PAD_TAG, compute_dtype
from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.cpu.matmul import (
    ACCUMULATOR_REGISTERS,
    MAX_UNROLLED_VECTORS,
    accumulator,
    add_default_knob,
    fuse_parallel,
    row_tile,
    tile_choices,
    vector_length,
)
from ember.compiler.ops.registry import ContractsToFMA, Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace, divisors
from ember.ir import te
from ember.ir.schedule import Schedule, Stage
from ember.target import Target

#: kernel widths up to this are unrolled by default
UNROLL_KW_LIMIT = 7
#: grouped convs with at most this many output channels per group take one group as their
#: default channel tile
GROUP_TILE_LIMIT = 48
#: the default channel tile is at least this many channels (with a guarded tail when no
#: divisor of the channels is as large), where the channels allow it
MIN_CHANNEL_TILE = 4


@dataclasses.dataclass(frozen=True)
class WindowTiles:
    """The output block one accumulator holds: channels x rows x columns."""

    oc: int
    oh: int
    ow: int
    unroll_kw: bool = True


def find_stage(tensor: te.Tensor, tag: str) -> te.Tensor | None:
    """The first tensor tagged `tag` that `tensor` reads, searching producers breadth-first."""
    frontier, seen = [tensor], set()
    while frontier:
        current = frontier.pop(0)
        for t in current.op.input_tensors:
            if id(t.op) in seen:
                continue
            seen.add(id(t.op))
            if getattr(t.op, "tag", "") == tag:
                return t
            frontier.append(t)
    return None


def schedule_pad(stage: Stage, lanes: int) -> None:
    """A padding stage (a guarded copy, compute/nn.py) computed inside a block: its last axis
    vectorized (a guarded tail for a ragged width), so its guard becomes a load mask."""
    *outer, last = stage.op.axis
    steps = list(stage.op.reduce_axis)
    width = int(last.dom.extent.value)
    if width <= 1:
        return
    if width <= lanes:
        stage.reorder(*outer, *steps, last)
        stage.vectorize(last)
        return
    lo, inner = stage.split(last, factor=lanes)
    stage.reorder(*outer, lo, *steps, inner)
    stage.vectorize(inner)


def schedule_window(sch: Schedule, out: te.Tensor, tiles: WindowTiles, facts: CpuFacts,
                    lanes: int, work: int, pad_in_block: bool = True, group: int = 0) -> None:
    """Schedule the window reduction computing `out` (N, M, *spatial) with `tiles` (see the
    module docstring). Works for any spatial rank >= 1. The padded input is computed inside
    each parallel block, or once at root when `pad_in_block` is false (another stage reads
    it too)."""
    shape = out.static_shape
    if 0 in shape:
        return
    acc, _ = accumulator(sch, out)
    pad = find_stage(out, PAD_TAG)
    stage = sch[out]
    n, m, *spatial = stage.op.axis
    rows = spatial[-2] if len(spatial) >= 2 else None
    cols = spatial[-1]
    if group and group % tiles.oc == 0 and group > tiles.oc:
        # tiles inside one group's channels: the group index is its own loop
        g, m = stage.split(m, factor=group)
        mo, mi = stage.split(m, factor=tiles.oc)
        outer, inner = [n, g, mo, *spatial[:-2]], [mi]
    else:
        mo, mi = stage.split(m, factor=tiles.oc)
        outer, inner = [n, mo, *spatial[:-2]], [mi]
    if rows is not None:
        ro, ri = stage.split(rows, factor=tiles.oh)
        outer.append(ro)
        inner.append(ri)
    co, ci = stage.split(cols, factor=tiles.ow)
    inner.append(ci)
    stage.reorder(*outer, co, *inner)
    block = fuse_parallel(stage, outer, work, facts)
    copy_width = min(tiles.ow, shape[-1])
    length = vector_length(copy_width, lanes)
    if length < copy_width:
        _, ci = stage.split(ci, factor=length)
    if length > 1:
        stage.vectorize(ci)
    acc_stage = sch[acc]
    acc_stage.compute_at(stage, co)
    _schedule_accumulator(acc_stage, tiles, lanes, min(tiles.ow, shape[-1]))
    if pad is not None:
        pad_stage = sch[pad]
        if pad_in_block:
            pad_stage.compute_at(stage, block)
        schedule_pad(pad_stage, lanes)


def _schedule_accumulator(acc: Stage, tiles: WindowTiles, lanes: int, width: int) -> None:
    """Reductions outside, the register block (m, rows, vectors) unrolled inside them, the
    output width vectorized innermost."""
    n, m, *spatial = acc.op.axis
    reduce_axes = list(acc.op.reduce_axis)
    rows = spatial[-2] if len(spatial) >= 2 else None
    cols = spatial[-1]
    block = [m] + ([rows] if rows is not None else [])
    length = vector_length(width, lanes)
    serial = []
    if length < width:
        vectors, cols = acc.split(cols, factor=length)
        # a row of many short vectors (a prime width) loops rather than unrolls
        (block if width // length <= MAX_UNROLLED_VECTORS else serial).append(vectors)
    acc.reorder(n, *spatial[:-2], *reduce_axes, *block, *serial, cols)
    for axis in block:
        acc.unroll(axis)
    if tiles.unroll_kw and reduce_axes:
        kernel_width = int(reduce_axes[-1].dom.extent.value)
        if 1 < kernel_width <= UNROLL_KW_LIMIT:
            acc.unroll(reduce_axes[-1])
    if length > 1:
        acc.vectorize(cols)


# ----------------------------------------------------------------------------- conv


def _reduced_channels(workload: Workload) -> int:
    """Input channels each output channel reduces over (per group)."""
    x, w = workload.input_types[:2]
    if workload.op == "conv_transpose":
        return x.shape[1] // workload.attrs.groups
    return w.shape[1]


def _is_depthwise(workload: Workload) -> bool:
    """One input channel per group: each output channel reads one input plane."""
    return workload.attrs.groups > 1 and _reduced_channels(workload) == 1


def _acc_dtype(workload: Workload) -> str:
    return compute_dtype(workload.input_types[0].dtype)


def default_tiles(out_shape: Sequence[int], lanes: int,
                  channel_limit: int = 16) -> WindowTiles:
    """A register block for an output (N, M, *spatial): one vector of a row, times up to 16
    output channels (each reuses the loaded input vector), then more vectors of the row and
    more rows while the accumulators stay within ACCUMULATOR_REGISTERS."""
    spatial = out_shape[2:]
    width = spatial[-1]
    ow = row_tile(width, lanes)
    channels = out_shape[1]
    oc = max(d for d in divisors(max(channels, 1)) if d <= channel_limit)
    if oc < MIN_CHANNEL_TILE < channels and channel_limit >= MIN_CHANNEL_TILE:
        oc = _ragged_channel_tile(channels, channel_limit)
    vectors = 1
    # few channels: widen the block along the row, then over rows
    while (oc * vectors * 2 <= ACCUMULATOR_REGISTERS // 2 and width % (ow * 2) == 0
           and ow * 2 <= 4 * lanes):
        ow, vectors = ow * 2, vectors * 2
    oh = 1
    if len(spatial) >= 2:
        oh = max(d for d in divisors(spatial[-2])
                 if d <= 8 and d * oc * vectors <= ACCUMULATOR_REGISTERS // 2 or d == 1)
    return WindowTiles(oc, oh, ow)


def _ragged_channel_tile(channels: int, limit: int) -> int:
    """A channel tile for a channel count without a useful divisor (19, 23: prime): the one
    of MIN_CHANNEL_TILE..limit that leaves the fewest channels of its guarded last tile
    idle, the largest of those (19 -> 10: two tiles, one idle channel). A tile of one
    channel would load each input vector for a single multiply-add."""
    def idle(tile: int) -> int:
        return -(-channels // tile) * tile - channels

    return min(range(MIN_CHANNEL_TILE, limit + 1), key=lambda tile: (idle(tile), -tile))


def window_space(out_shape: Sequence[int], default: WindowTiles, lanes: int,
                 channel_choices: Sequence[int] | None = None) -> ConfigSpace:
    """The knobs of a window schedule: tile_oc, tile_oh, tile_ow (sizes of the accumulator
    block; those not dividing their axis leave guarded tails) and unroll_kw."""
    spatial = out_shape[2:]
    space = ConfigSpace()
    if channel_choices is None:
        channel_choices = tile_choices(out_shape[1], range(1, 17), 64)
    add_default_knob(space, "tile_oc", channel_choices, default.oc)
    rows = spatial[-2] if len(spatial) >= 2 else 1
    add_default_knob(space, "tile_oh", tile_choices(rows, range(1, 9), 32), default.oh)
    add_default_knob(space, "tile_ow",
                     tile_choices(spatial[-1], [*range(1, lanes + 1), 2 * lanes, 3 * lanes,
                                                4 * lanes], 8 * lanes),
                     default.ow)
    space.define_knob("unroll_kw", [True, False])
    space.set_default("unroll_kw", default.unroll_kw)
    return space


def tiles_of(config: Config) -> WindowTiles:
    return WindowTiles(config["tile_oc"], config["tile_oh"], config["tile_ow"],
                       config["unroll_kw"])


def _work(workload: Workload) -> int:
    taps = math.prod(workload.input_types[1].shape[2:])
    return 2 * math.prod(workload.output_types[0].shape) * _reduced_channels(workload) * taps


class DepthwiseConvTemplate:
    """Depthwise convolution (one input channel per group): no channel reduction, so a block
    is rows of a single output channel (or of the few channels of one group, with a channel
    multiplier), many vectors wide, and the padded rows a block reads are that channel's
    only. ConvTemplate hands depthwise workloads to it."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        lanes = cpu_facts(target).lanes(_acc_dtype(workload))
        out_shape = workload.output_types[0].shape
        multiplier = out_shape[1] // workload.attrs.groups
        default = default_tiles(out_shape, lanes, channel_limit=1)
        return window_space(out_shape, default, lanes, divisors(max(multiplier, 1)))

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        schedule_window(sch, outputs[0], tiles_of(config), facts, lanes, _work(workload))


_DEPTHWISE = DepthwiseConvTemplate()


@register_schedule("cpu", "conv", "conv_transpose")
class ConvTemplate(ContractsToFMA):
    """Direct NCHW convolution (see the module docstring); depthwise convolutions are
    `DepthwiseConvTemplate`'s. Takes an elementwise epilogue (compiler/ops/fused.py): the
    output stage may compute a function of the accumulator (`accumulator`)."""

    takes_epilogue = True

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        if _is_depthwise(workload):
            return _DEPTHWISE.space(workload, target)
        lanes = cpu_facts(target).lanes(_acc_dtype(workload))
        out_shape = workload.output_types[0].shape
        default = default_tiles(out_shape, lanes)
        choices = tile_choices(out_shape[1], range(1, 17), 64)
        groups = workload.attrs.groups
        if groups > 1 and workload.op == "conv":
            # channel tiles inside one group (the schedule loops over groups, then tiles):
            # every channel of a tile reads the same input rows, which the simplifier then
            # sees, so each loaded input vector feeds the whole tile. Measured 2-7x faster
            # on ShuffleNet's 1x1 grouped convs (28-136 channels per group) with a tile of
            # up to GROUP_TILE_LIMIT channels than with 16 that straddle groups.
            group_out = out_shape[1] // groups
            group_tiles = [d for d in divisors(group_out) if d <= GROUP_TILE_LIMIT]
            choices = sorted({*choices, *group_tiles, group_out})
            if max(group_tiles) > default.oc:
                default = dataclasses.replace(default, oc=max(group_tiles), oh=1)
        return window_space(out_shape, default, lanes, choices)

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        if _is_depthwise(workload):
            _DEPTHWISE.schedule(workload, config, sch, outputs, target)
            return
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        group = (workload.output_types[0].shape[1] // workload.attrs.groups
                 if workload.op == "conv" and workload.attrs.groups > 1 else 0)
        schedule_window(sch, outputs[0], tiles_of(config), facts, lanes, _work(workload),
                        group=group)

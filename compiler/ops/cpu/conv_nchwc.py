"""CPU schedule of conv2d_nchwc: the blocked-layout 2-D convolution (TVM's x86 conv2d_NCHWc).

Data (N, IC/ic, H, W, ic), packed weight (OC/oc, IC/ic, KH, KW, ic, oc), output
(N, OC/oc, OH, OW, oc) with oc one vector register of float32 (16 lanes with AVX-512):

    parallel for (n, ob.outer, oh.outer) fused
      pad = the padded input rows this block reads (all input-channel blocks)  # compute_at
      for ow.outer
        local acc[tile_ob, tile_oh, tile_ow, oc]                               # registers
        for ic block, kh, kw (kw unrolled), ic lane
          for ob.inner, oh.inner, ow.inner (unrolled)
            acc[ob, oh, ow, :] += pad[n, icb, oh*s + kh*d, ow*s + kw*d, ic]
                                  * w[ob, icb, kh, kw, ic, :]
        out[block] = acc (+ the fused epilogue), oc vectorized

Each step of the reduction loads tile_ob weight vectors (the oc outputs of one input channel
and tap per channel block) and broadcasts one input scalar per (row, column) of the block:
tile_ob x tile_oh x tile_ow fused multiply-adds. A 1x1 convolution at stride 1 is a GEMM in
this form: rows are output pixels, K the input channels, N the oc lanes.

Knobs (`ConvNCHWcTemplate.space`): tile_ob, tile_oh, tile_ow (the register block: channel
blocks x rows x columns; row and column tiles not dividing their axis leave guarded tails),
unroll_kw. The default (`default_tiles`) pairs two channel blocks with a piece of a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import PAD_TAG
from ember.compiler.ops.cpu.conv import UNROLL_KW_LIMIT, find_stage, schedule_pad
from ember.compiler.ops.cpu.hardware import cpu_facts
from ember.compiler.ops.cpu.matmul import (
    ACCUMULATOR_REGISTERS,
    accumulator,
    add_default_knob,
    fuse_parallel,
    tile_choices,
    vector_length,
    vectorize_inner,
)
from ember.compiler.ops.registry import ContractsToFMA, Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace, divisors
from ember.ir import te
from ember.ir.schedule import Schedule, Stage
from ember.target import Target

#: columns of a register block of two channel blocks (16 accumulators)
PAIRED_COLUMNS = 8


def default_tiles(out_blocks: int, out_height: int, out_width: int) -> tuple[int, int, int]:
    """(tile_ob, tile_oh, tile_ow). Two channel blocks by a row piece of up to
    `PAIRED_COLUMNS` (a divisor of OW: 56 -> 8, 28 -> 7) where the channel blocks pair up:
    each broadcast input then feeds two FMAs, and 14-16 accumulators hide the FMA latency
    (measured 5-15% faster than one block by 14 columns on ResNet-50's layers). Else one
    channel block by the largest divisor of OW that fits the accumulator registers, and as
    many rows as still fit."""
    if out_blocks % 2 == 0:
        tile_ow = max(d for d in divisors(out_width) if d <= PAIRED_COLUMNS)
        if tile_ow < PAIRED_COLUMNS // 2 and out_width > PAIRED_COLUMNS:
            tile_ow = PAIRED_COLUMNS  # a prime width: one guarded tail instead
        return 2, 1, tile_ow
    tile_ow = max(d for d in divisors(out_width) if d <= ACCUMULATOR_REGISTERS)
    if tile_ow < 4 and out_width > ACCUMULATOR_REGISTERS:
        tile_ow = ACCUMULATOR_REGISTERS // 2
    tile_oh = max(d for d in divisors(out_height) if d * tile_ow <= ACCUMULATOR_REGISTERS
                  or d == 1)
    return 1, tile_oh, tile_ow


def _work(workload: Workload) -> int:
    w = workload.input_types[1].shape
    if workload.op == "depthwise_conv2d_nchwc":
        return 2 * math.prod(workload.output_types[0].shape) * w[1] * w[2]
    in_channels, taps = w[1] * w[4], w[2] * w[3]
    return 2 * math.prod(workload.output_types[0].shape) * in_channels * taps


@register_schedule("cpu", "conv2d_nchwc", "depthwise_conv2d_nchwc")
class ConvNCHWcTemplate(ContractsToFMA):
    """Blocked 2-D convolution (see the module docstring), and its depthwise form (the same
    loops without the input-channel reduction: data and weight are both vectors of the
    channel lanes). Takes an elementwise epilogue (compiler/ops/fused.py) through
    `accumulator`."""

    takes_epilogue = True

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        _, out_blocks, out_height, out_width, _ = workload.output_types[0].shape
        # depthwise: each input vector feeds one channel block only, so no pairing
        pairs = out_blocks if workload.op == "conv2d_nchwc" else 1
        tile_ob, tile_oh, tile_ow = default_tiles(pairs, out_height, out_width)
        space = ConfigSpace()
        add_default_knob(space, "tile_ob", [d for d in divisors(out_blocks) if d <= 4], tile_ob)
        add_default_knob(space, "tile_ow",
                         tile_choices(out_width, [8, 12, 16, 24, 28, 32], 32), tile_ow)
        add_default_knob(space, "tile_oh", tile_choices(out_height, range(1, 5), 8), tile_oh)
        space.define_knob("unroll_kw", [True, False])
        space.set_default("unroll_kw", True)
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        out = outputs[0]
        shape = out.static_shape
        if 0 in shape:
            return
        facts = cpu_facts(target)
        lanes = facts.lanes("float32")
        acc, _ = accumulator(sch, out)
        pad = find_stage(out, PAD_TAG)
        stage = sch[out]
        n, ob, oh, ow, oi = stage.op.axis
        tile_oh, tile_ow = min(config["tile_oh"], shape[2]), min(config["tile_ow"], shape[3])
        obo, obi = stage.split(ob, factor=config["tile_ob"])
        oho, ohi = stage.split(oh, factor=tile_oh)
        owo, owi = stage.split(ow, factor=tile_ow)
        stage.reorder(n, obo, oho, owo, obi, ohi, owi, oi)
        block = fuse_parallel(stage, [n, obo, oho], _work(workload), facts)
        vectorize_inner(stage, oi, shape[4], lanes)
        acc_stage = sch[acc]
        acc_stage.compute_at(stage, owo)
        _schedule_accumulator(acc_stage, config["unroll_kw"], shape[4], lanes)
        if pad is not None:
            sch[pad].compute_at(stage, block)
            schedule_pad(sch[pad], lanes)


def _schedule_accumulator(acc: Stage, unroll_kw: bool, block: int, lanes: int) -> None:
    """Reductions outside; the register block (rows, columns, and the vectors of a channel
    block wider than a register) unrolled inside them; the channel lanes vectorized."""
    n, ob, oh, ow, oi = acc.op.axis
    reduce_axes = list(acc.op.reduce_axis)
    (rw,) = [r for r in reduce_axes if r.var.name == "rw"]
    unrolled = [ob, oh, ow]
    length = vector_length(block, lanes)
    if length < block:
        vectors, oi = acc.split(oi, factor=length)
        unrolled.append(vectors)
    acc.reorder(n, *reduce_axes, *unrolled, oi)
    for axis in unrolled:
        acc.unroll(axis)
    kernel_width = int(rw.dom.extent.value)
    if unroll_kw and 1 < kernel_width <= UNROLL_KW_LIMIT:
        acc.unroll(rw)
    if length > 1:
        acc.vectorize(oi)

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
this form: rows are output pixels, K the input channels, N the oc lanes. A grouped
conv2d_nchwc (groups of whole blocks) is the same loop nest: the compute indexes the input
blocks of the output block's group.

Knobs (`ConvNCHWcTemplate.space`): tile_ob, tile_oh, tile_ow (the register block: channel
blocks x rows x columns; row and column tiles not dividing their axis leave guarded tails),
unroll_kw, outer_order (channel-block tiles outside row tiles or inside), parallel (both
outer tile loops fused parallel, or only the outer one), and for conv2d_nchwc reduce_order
(input-channel blocks outside the taps or inside) and unroll_ic (the channel lanes of the
reduction unrolled by 1, 2 or 4), for depthwise_conv2d_nchwc unroll_kh (the kernel rows
unrolled too). A filter drops spilling register blocks and choices that
change nothing for the shape. The default (`default_tiles`, then the first value of each
other knob) pairs two channel blocks with a piece of a row; a ResNet-50 3x3 layer at 56x56
has some 10,000 configs (3,600 valid).
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
#: register-block widths the space offers beyond the divisors of the output width (the others
#: leave a guarded tail)
COLUMN_TILES = (2, 4, 6, 8, 12, 16, 24, 28, 32)
#: vector registers of AVX-512 (and of AVX2's 16 doubled by two-vector blocks): register
#: blocks of more accumulators spill, so the space leaves them out
REGISTER_FILE = 32
#: order of the two outer tile loops: channel blocks outside rows (each weight block stays
#: in cache over the rows) or rows outside channel blocks (each input row over the filters)
OUTER_ORDERS = ("ob_oh", "oh_ob")
#: which outer tile loops run in parallel: both (fused), or only the outer one
PARALLEL_CHOICES = ("all", "outer")
#: reduction order: input-channel blocks outside the kernel taps, or taps outside blocks
REDUCE_ORDERS = ("blocks_outer", "taps_outer")


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
        _, out_blocks, out_height, out_width, out_block = workload.output_types[0].shape
        depthwise = workload.op == "depthwise_conv2d_nchwc"
        # depthwise: each input vector feeds one channel block only, so no pairing
        pairs = 1 if depthwise else out_blocks
        tile_ob, tile_oh, tile_ow = default_tiles(pairs, out_height, out_width)
        space = ConfigSpace()
        add_default_knob(space, "tile_ob", [d for d in divisors(out_blocks) if d <= 4], tile_ob)
        add_default_knob(space, "tile_ow",
                         tile_choices(out_width, COLUMN_TILES, 32), tile_ow)
        add_default_knob(space, "tile_oh", tile_choices(out_height, range(1, 5), 8), tile_oh)
        space.define_knob("unroll_kw", [True, False])
        space.set_default("unroll_kw", True)
        space.define_knob("outer_order", OUTER_ORDERS)
        space.define_knob("parallel", PARALLEL_CHOICES)
        if depthwise:
            # no channel reduction: the taps are the whole reduction, rows of them unrolled
            space.define_knob("unroll_kh", [False, True])
        else:
            in_block = workload.input_types[1].shape[4]
            space.define_knob("reduce_order", REDUCE_ORDERS)
            space.define_knob("unroll_ic", [d for d in divisors(in_block) if d <= 4])
        _add_filters(space, workload, target)
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
        outer = [obo, oho] if config["outer_order"] == "ob_oh" else [oho, obo]
        stage.reorder(n, *outer, owo, obi, ohi, owi, oi)
        # "outer": only the first tile loop runs in parallel; the padded rows a block reads
        # are then computed once for all of the second loop's tiles
        parallel = [n, *outer] if config["parallel"] == "all" else [n, outer[0]]
        block = fuse_parallel(stage, parallel, _work(workload), facts)
        vectorize_inner(stage, oi, shape[4], lanes)
        acc_stage = sch[acc]
        acc_stage.compute_at(stage, owo)
        _schedule_accumulator(acc_stage, config, shape[4], lanes)
        if pad is not None:
            sch[pad].compute_at(stage, block)
            schedule_pad(sch[pad], lanes)


def _knob(config: Config, name: str, default):
    """A knob's value, or `default` for a knob this workload's space does not have."""
    return config.as_dict().get(name, default)


def _add_filters(space: ConfigSpace, workload: Workload, target: Target) -> None:
    """Remove configs that cannot be good: register blocks that spill (more accumulator
    vectors than the register file holds), choices that change nothing for this shape
    (unroll_kw of a one-wide kernel, the order of a one-tap reduction), and a parallel loop
    with fewer iterations than cores."""
    n, out_blocks, out_height, out_width, out_block = workload.output_types[0].shape
    facts = cpu_facts(target)
    vectors = -(-out_block // vector_length(out_block, facts.lanes("float32")))
    kernel = workload.input_types[1].shape
    taps = kernel[2] * kernel[3] if workload.op == "conv2d_nchwc" else kernel[1] * kernel[2]
    kernel_width = kernel[3] if workload.op == "conv2d_nchwc" else kernel[2]

    def registers(config: Config) -> int:
        tile_oh, tile_ow = min(config["tile_oh"], out_height), min(config["tile_ow"], out_width)
        return config["tile_ob"] * tile_oh * tile_ow * vectors

    # never below the default's block (24 accumulators of two vectors each on AVX2)
    limit = max(REGISTER_FILE, registers(space.default))

    def valid(config: Config) -> bool:
        tile_oh = min(config["tile_oh"], out_height)
        if registers(config) > limit:
            return False
        if kernel_width == 1 and not config["unroll_kw"]:
            return False
        if _knob(config, "unroll_kh", False) and not 1 < taps // kernel_width <= UNROLL_KW_LIMIT:
            return False
        if taps == 1 and _knob(config, "reduce_order", "blocks_outer") != "blocks_outer":
            return False
        if config["parallel"] == "outer":
            first = (out_blocks // config["tile_ob"] if config["outer_order"] == "ob_oh"
                     else -(-out_height // tile_oh))
            if n * first < facts.cores:
                return False
        return True

    space.add_filter(valid)


def _schedule_accumulator(acc: Stage, config: Config, block: int, lanes: int) -> None:
    """Reductions outside (input-channel blocks or kernel taps outermost, the channel lanes
    innermost, optionally unrolled by unroll_ic); the register block (rows, columns, and the
    vectors of a channel block wider than a register) unrolled inside them; the channel lanes
    vectorized."""
    n, ob, oh, ow, oi = acc.op.axis
    axes = {r.var.name: r for r in acc.op.reduce_axis}
    rw = axes["rw"]
    if _knob(config, "reduce_order", "blocks_outer") == "taps_outer":
        names = ["rh", "rw", "rb", "ri"]
    else:
        names = ["rb", "rh", "rw", "ri"]
    reduce_axes = [axes[name] for name in names if name in axes]
    unroll_ic = _knob(config, "unroll_ic", 1)
    unrolled_reduction = []
    if unroll_ic > 1 and "ri" in axes:
        rio, rii = acc.split(axes["ri"], factor=unroll_ic)
        reduce_axes[-1:] = [rio, rii]
        unrolled_reduction.append(rii)
    unrolled = [ob, oh, ow]
    length = vector_length(block, lanes)
    if length < block:
        vectors, oi = acc.split(oi, factor=length)
        unrolled.append(vectors)
    acc.reorder(n, *reduce_axes, *unrolled, oi)
    for axis in unrolled_reduction + unrolled:
        acc.unroll(axis)
    kernel_width = int(rw.dom.extent.value)
    if config["unroll_kw"] and 1 < kernel_width <= UNROLL_KW_LIMIT:
        acc.unroll(rw)
    if _knob(config, "unroll_kh", False):
        acc.unroll(axes["rh"])
    if length > 1:
        acc.vectorize(oi)

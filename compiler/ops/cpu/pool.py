"""CPU schedules of max_pool, average_pool and lp_pool: the window-reduction schedule of
conv.py with a block of one channel (pooling reads one input plane per channel, so blocking
channels reuses nothing):

    parallel for (n, c, outer spatial axes, oh.outer) fused
      pad = the padded input rows this block reads                     # compute_at
      for ow.outer
        local acc[tile_oh, tile_ow]                                    # registers
        for rkh, rkw (unrolled)
          for oh.inner (unrolled), ow.inner (vectorized)
            acc = max(acc, pad[n, c, oh * s + rkh * d, ow * s + rkw * d])
        out[block] = acc (average: / count; lp: ^ (1/p))

Knobs are conv's (tile_oc is the channel block, default 1). max_pool's indices output is an
elementwise stage over the output, vectorized along the width, with the first-matching-tap
reduction computed per output row block; the padded input is then computed once at root,
since both reductions read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import STATS_TAG, compute_dtype
from ember.compiler.ops.cpu.conv import (
    default_tiles,
    find_stage,
    schedule_window,
    tiles_of,
    window_space,
)
from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.cpu.matmul import fuse_parallel, vector_length
from ember.compiler.ops.registry import Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace
from ember.ir import te
from ember.ir.schedule import Schedule
from ember.target import Target


def _acc_dtype(workload: Workload) -> str:
    dtype = workload.input_types[0].dtype
    return dtype if workload.op == "max_pool" else compute_dtype(dtype)


@register_schedule("cpu", "max_pool", "average_pool", "lp_pool")
class PoolTemplate:
    """Window reductions over one channel at a time (see the module docstring)."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        lanes = cpu_facts(target).lanes(_acc_dtype(workload))
        out_shape = workload.output_types[0].shape
        return window_space(out_shape, default_tiles(out_shape, lanes, channel_limit=1), lanes)

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        out_shape = workload.output_types[0].shape
        if 0 in out_shape:
            return
        work = math.prod(out_shape) * math.prod(workload.attrs.kernel_shape)
        with_indices = len(outputs) > 1
        schedule_window(sch, outputs[0], tiles_of(config), facts, lanes, work,
                        pad_in_block=not with_indices)
        if with_indices:
            self._schedule_indices(sch, outputs[1], facts, lanes, work)

    @staticmethod
    def _schedule_indices(sch: Schedule, indices: te.Tensor, facts: CpuFacts, lanes: int,
                          work: int) -> None:
        """max_pool's indices: vectorized along the width, the first-matching-tap
        reduction computed per row block (or per vector of a long row)."""
        first = find_stage(indices, STATS_TAG)
        stage = sch[indices]
        n, c, *spatial = stage.op.axis
        width = indices.static_shape[-1]
        block = fuse_parallel(stage, [n, c, *spatial[:-1]], work, facts)
        length = vector_length(width, lanes) if width > lanes else width
        if length < width:
            attach, inner = stage.split(spatial[-1], factor=length)
        else:
            attach, inner = block, spatial[-1]
        if length > 1:
            stage.vectorize(inner)
        first_stage = sch[first]
        if attach is not None:
            first_stage.compute_at(stage, attach)
        fn, fc, *fs = first_stage.op.axis
        first_stage.reorder(fn, fc, *fs[:-1], *first_stage.op.reduce_axis, fs[-1])
        if length > 1:
            first_stage.vectorize(fs[-1])

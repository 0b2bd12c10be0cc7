"""The CPU schedule of reductions (reduce_*, argmax, argmin): parallel over the outputs, and
vectorized across an output axis when the input's innermost axis is not reduced.

Two loop nests, by where the input's innermost axis goes:
- reduced (a row reduction, `sum(x, axis=-1)`): one loop over the fused output axes, parallel
  when the input is large, around a serial reduction that walks memory contiguously;
- kept (a column reduction, `sum(x, axis=0)` of a matrix, or over C of NCHW): the last output
  axis is cut into blocks of vectors (`block_vectors`: as many as keep the accumulators in L1
  and still give every core a block); for each block the reduction walks the input one row
  at a time and accumulates a vector of neighbouring outputs per instruction:

      for parallel rows_and_blocks:
          acc[block] = 0                                           # vectors
          for r in reduced:
              for chunk in block: acc[chunk] += x[..., r, ..., chunk]   # vector

A later issue adds rfactor-style vector reductions for the first kind. Reduction loops always
run serially in ascending order, which arg-reductions rely on (compute/reduce.py's
[Note: arg-reductions run in order]).

When the op finishes its result in a second stage (half floats accumulate in float32, means
divide, arg-reductions pick an index from two reductions), the reductions are computed inside
the output stage's outer loop (`compute_at`), so their accumulators are one block, not
buffers of the output's size.

Knobs: `lanes` (the vector width of column reductions), `parallel` and `block` (vectors per
block, 0: automatic).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from ember.compiler.ops.cpu.injective import (
    ITEMSIZE,
    PARALLEL_MIN_ELEMENTS,
    InjectiveSchedule,
    inline_injective_stages,
    vector_lanes,
    workload_dtypes,
)
from ember.compiler.ops.registry import Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace
from ember.ir import te
from ember.ir.expr import Var
from ember.ir.ops import Pattern
from ember.ir.schedule import Schedule, Stage, is_reduction
from ember.ir.te import ComputeOp, IterVar, TensorRead
from ember.ir.visitor import collect
from ember.target import Target

#: The accumulators of one block of a column reduction stay within this much of the L1 cache.
L1_BLOCK_BYTES = 8 * 1024


def innermost_is_reduced(op: ComputeOp) -> bool:
    """Whether the reduction walks the innermost axis of what it reads: then vectorizing
    across outputs would read memory with a stride."""
    reduce_vars = {iv.var for iv in op.reduce_axis}
    for body in op.body:
        for read in collect(body, TensorRead):
            if read.indices and set(collect(read.indices[-1], Var)) & reduce_vars:
                return True
    return False


def _fuse(stage: Stage, axes: Sequence[IterVar]) -> IterVar | None:
    if not axes:
        return None
    return stage.fuse(*axes) if len(axes) > 1 else axes[0]


def block_vectors(rows: int, chunks: int, lanes: int, accumulator_bytes: int,
                  parallel: bool) -> int:
    """How many vectors of outputs one block of a column reduction accumulates: as many as
    fit `L1_BLOCK_BYTES`, but few enough that rows x blocks keeps every core busy."""
    budget = max(1, L1_BLOCK_BYTES // max(1, lanes * accumulator_bytes))
    threads = os.cpu_count() or 1
    wanted_blocks = -(-threads // rows) if parallel and rows < threads else 1
    return max(1, min(budget, -(-chunks // wanted_blocks)))


def schedule_reduction(sch: Schedule, reductions: Sequence[te.Tensor], output: te.Tensor,
                       lanes: int, parallel: bool, block: int = 0) -> None:
    """Schedule `reductions` (te reduction stages over the output's shape) and `output` (the
    op's result: the only reduction itself, or an elementwise stage reading the reductions at
    its own index). `block` is the number of vectors of outputs a column reduction
    accumulates at once (0: automatic)."""
    host = sch[output]
    stages = [sch[r] for r in reductions]
    shape = output.static_shape
    host_axes = list(host.op.axis)
    parallel = parallel and math.prod(shape) > 1
    if any(innermost_is_reduced(s.op) for s in stages) or not shape or shape[-1] == 1:
        fused = _fuse(host, host_axes)
        if fused is None:
            return  # one output element; the reductions stay root stages
        if parallel:
            host.parallel(fused)
        for stage in stages:
            if stage is not host:
                stage.compute_at(host, fused)
        return
    # A column reduction: blocks of the last output axis, each accumulated over the reduced
    # axes one row of the input at a time, a vector of outputs per instruction.
    lanes = max(1, min(lanes, shape[-1]))
    rows = math.prod(shape[:-1])
    accumulator_bytes = sum(ITEMSIZE.get(t.dtype, 8) for s in stages for t in s.op.outputs)
    block = block or block_vectors(rows, -(-shape[-1] // lanes), lanes, accumulator_bytes,
                                   parallel)
    blocks, within = host.split(host_axes[-1], factor=lanes * block)
    chunks, vector = host.split(within, factor=lanes)
    if host in stages:
        host.reorder(*host_axes[:-1], blocks, *host.op.reduce_axis, chunks, vector)
    fused = _fuse(host, [*host_axes[:-1], blocks])
    host.vectorize(vector)
    if parallel:
        host.parallel(fused)
    for stage in stages:
        if stage is host:
            continue
        # the accumulation of one block runs inside the output's loop over blocks: its
        # accumulators are one block, not a buffer of the output's size
        stage.compute_at(host, fused)
        data = list(stage.op.axis)
        stage_chunks, stage_vector = stage.split(data[-1], factor=lanes)
        stage.reorder(*data[:-1], *stage.op.reduce_axis, stage_chunks, stage_vector)
        stage.vectorize(stage_vector)


@register_schedule("cpu", Pattern.REDUCE)
class ReduceSchedule:
    """See the module docstring."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        space = ConfigSpace()
        lanes = vector_lanes(workload_dtypes(workload), target)
        space.define_knob("lanes", sorted({max(1, lanes // 2), lanes, lanes * 2}))
        space.set_default("lanes", lanes)
        space.define_knob("parallel", [False, True])
        space.define_knob("block", [0, 1, 2, 4, 8, 16, 32, 64, 128])
        work = max((math.prod(t.shape) for t in workload.input_types if t is not None),
                   default=0)
        space.set_default("parallel", work >= PARALLEL_MIN_ELEMENTS)
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        inline_injective_stages(sch, outputs)  # elementwise producers compute in place
        reductions = [s for s in sch.stages if is_reduction(s.op)]
        (output,) = outputs
        if not reductions:  # reducing over no axes is a copy
            injective = InjectiveSchedule()
            injective.schedule(workload, injective.space(workload, target).default, sch,
                               outputs, target)
            return
        schedule_reduction(sch, [s.op.output(0) for s in reductions], output,
                           config["lanes"], config["parallel"], config["block"])

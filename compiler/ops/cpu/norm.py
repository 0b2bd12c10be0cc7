"""CPU schedules of the row-statistics ops: softmax, log_softmax, hardmax (compute/nn.py),
layer_norm, rms_norm, group_norm, lrn and batch_norm (compute/norm.py).

They share one shape (`schedule_rows`): an elementwise output stage over rows, whose per-row
statistics (maximum, sum, mean, variance: the stages tagged STATS_TAG) are computed inside the
row loop, right before the row's elementwise epilogue reads them:

    parallel for rows (the axes before the normalized ones, fused)
      stats = reductions over this row                # compute_at the row loop
      out[row] = f(x[row], stats) (vectorized)

For softmax along a non-last axis, a "row" is a slice of the last axis (x[..., :, ..., j:j+t]):
the statistics of a whole slice are vectorized across it, the reduction loop outside the
vector. Along the last axis (softmax family, layer_norm and rms_norm over one axis), a row
of 64 or more elements is reduced in two stages made by the compute (compute/nn.py's
`row_reduce`, a hand-written rfactor): interleaved partial results, vectorized across the
partials with the reduction loop outside (`schedule_partial`: one or four vector chains),
then a short serial reduction of the partials. Shorter rows, and the norms over several
axes, reduce in serial scalar loops. The elementwise stages (the output, softmax's
exponentials) are always vectorized along the last axis.

Knobs: `row_chunk`, the width of a last-axis slice when the rows alone are too few to feed
every core (softmax family only); `lanes`, `unroll_partials` and `parallel` (softmax family,
layer_norm, rms_norm: see `add_row_knobs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ember.compiler.ops.compute.nn import PARTIAL_SUFFIX, STATS_TAG, compute_dtype
from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.cpu.matmul import (
    PARALLEL_MIN_WORK,
    add_default_knob,
    fuse_inner,
    fuse_parallel,
    row_tile,
    tile_choices,
)
from ember.compiler.ops.registry import Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace
from ember.ir import te
from ember.ir.schedule import Schedule, Stage
from ember.target import Target


def _acc_dtype(workload: Workload) -> str:
    return compute_dtype(workload.input_types[0].dtype)


def stats_stages(out: te.Tensor) -> list[te.Tensor]:
    """Every STATS_TAG stage `out` depends on, producers first."""
    found: dict[int, te.Tensor] = {}

    def visit(t: te.Tensor) -> None:
        for source in t.op.input_tensors:
            if id(source.op) in found or getattr(source.op, "tag", "") != STATS_TAG:
                continue
            visit(source)
            found[id(source.op)] = source

    visit(out)
    return list(found.values())


def vectorize_width(stage: Stage, axis: te.IterVar, width: int, lanes: int) -> None:
    """Vectorize loop `axis` whose extent is `width`: vectors of at most `lanes` (a divisor
    of the width when one fills 3/4 of a vector, else full vectors and a masked tail)."""
    if width <= 1:
        return
    if width <= lanes:
        stage.vectorize(axis)
        return
    _, inner = stage.split(axis, factor=row_tile(width, lanes))
    stage.vectorize(inner)


def schedule_stat(stage: Stage, vector_last: bool, width: int, lanes: int) -> None:
    """A statistics stage computed inside the row loop: its reductions just outside its last
    axis, which is vectorized when it spans more than one element (`vector_last`)."""
    data = list(stage.op.axis)
    reduce_axes = list(stage.op.reduce_axis)
    if not vector_last or not data:
        return  # a serial reduction per row: loops in their natural order
    stage.reorder(*data[:-1], *reduce_axes, data[-1])
    vectorize_width(stage, data[-1], width, lanes)


def is_partial(t: te.Tensor) -> bool:
    """Whether `t` holds the partial results of a split row reduction (compute/nn.py's
    `row_reduce`): its last axis indexes interleaved partial accumulators."""
    return t.op.name.endswith(PARTIAL_SUFFIX)


def schedule_partial(stage: Stage, lanes: int, unroll: bool = True) -> None:
    """The partial results of a row reduction: the reduction loop outside, the partials
    inside as vectors (each vector an independent accumulator chain, unrolled when
    `unroll`)."""
    data = list(stage.op.axis)
    reduce_axes = list(stage.op.reduce_axis)
    extent = stage.op.output(0).static_shape[-1]
    if extent <= lanes:
        stage.reorder(*data[:-1], *reduce_axes, data[-1])
        stage.vectorize(data[-1])
        return
    chains, vector = stage.split(data[-1], factor=lanes)
    stage.reorder(*data[:-1], *reduce_axes, chains, vector)
    if unroll:
        stage.unroll(chains)
    stage.vectorize(vector)


def rows_loop(stage: Stage, axes: Sequence[te.IterVar], work: int, facts: CpuFacts,
              parallel: bool | None = None) -> te.IterVar | None:
    """Fuse the row `axes` into one loop: parallel as `parallel` says, or (None) when `work`
    pays for a launch."""
    if parallel is not None:
        work = PARALLEL_MIN_WORK if parallel else 0
    return fuse_parallel(stage, axes, work, facts)


def add_row_knobs(space: ConfigSpace, lanes: int, work: int) -> None:
    """The knobs every row schedule shares: `lanes` (vector width of the elementwise stages
    and the partial sums: half a register, one, or two unrolled), `unroll_partials` (the
    vectors of partial results as independent unrolled chains, or a loop) and `parallel`
    (rows across cores; default when the work pays for a launch)."""
    add_default_knob(space, "lanes", sorted({max(1, lanes // 2), lanes, 2 * lanes}), lanes)
    add_default_knob(space, "unroll_partials", [False, True], True)
    add_default_knob(space, "parallel", [False, True], work >= PARALLEL_MIN_WORK)


def schedule_rows(sch: Schedule, out: te.Tensor, row_rank: int, facts: CpuFacts, lanes: int,
                  work: int, chunk: int | None = None, along: int | None = None,
                  parallel: bool | None = None, unroll: bool = True) -> None:
    """Schedule `out` and its statistics: the first `row_rank` axes of `out` fused into the
    (parallel) row loop, the statistics computed in it, the remaining axes fused and
    vectorized. With `along` (softmax: the reduced axis, >= row_rank), the axes between
    `along` and the last one join the row loop too, the last axis is cut into slices of
    `chunk` (joining the row loop), and statistics are vectorized across a slice. `parallel`
    and `unroll`: see `add_row_knobs`."""
    shape = out.static_shape
    if 0 in shape:
        return
    stage = sch[out]
    axes = list(stage.op.axis)
    stats = stats_stages(out)
    if along is not None and along < len(axes) - 1:
        last = axes[-1]
        row_axes = axes[:along] + axes[along + 1:-1]
        width = shape[-1]
        if chunk is not None and chunk < width:
            lo, last = stage.split(last, factor=chunk)
            row_axes.append(lo)
            width = chunk
        stage.reorder(*row_axes, axes[along], last)
        rows = rows_loop(stage, row_axes, work, facts, parallel)
        vectorize_width(stage, last, width, lanes)
        for t in stats:
            _attach(sch, t, stage, rows)
            schedule_stat(sch[t], True, width, lanes)
        return
    rows = rows_loop(stage, axes[:row_rank], work, facts, parallel)
    inner = axes[row_rank:]
    if inner:
        fused, extent = fuse_inner(stage, inner, shape[row_rank:])
        vectorize_width(stage, fused, extent, lanes)
    for t in stats:
        _attach(sch, t, stage, rows)
        if is_partial(t):
            schedule_partial(sch[t], lanes, unroll)
            continue
        # a stage keeping the normalized axis (softmax's exponentials) is elementwise along it
        keeps_axis = along is not None and t.ndim == out.ndim
        schedule_stat(sch[t], keeps_axis, shape[-1], lanes)


def _attach(sch: Schedule, t: te.Tensor, stage: Stage, rows: te.IterVar | None) -> None:
    if rows is not None:
        sch[t].compute_at(stage, rows)


# ----------------------------------------------------------------------------- softmax family


@register_schedule("cpu", "softmax", "log_softmax", "hardmax")
class SoftmaxTemplate:
    """Per-row statistics at the row loop, elementwise epilogue vectorized (module docstring)."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        shape = workload.input_types[0].shape
        axis = workload.attrs.axis
        space = ConfigSpace()
        width = max(shape[-1], 1) if shape else 1
        chunk = width
        if axis < len(shape) - 1:
            rows = math.prod(shape[:axis]) * math.prod(shape[axis + 1:-1])
            # too few rows for the cores: cut the last axis into slices of whole vectors
            while rows * math.ceil(width / chunk) < 2 * facts.cores and chunk > 4 * lanes:
                chunk = max(4 * lanes, (chunk // 2) // lanes * lanes)
        add_default_knob(space, "row_chunk", tile_choices(width, [lanes * k for k in (1, 2, 4, 8)],
                                                          width), chunk)
        add_row_knobs(space, lanes, 8 * math.prod(shape))
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        shape = workload.input_types[0].shape
        work = 8 * math.prod(shape)
        axis = workload.attrs.axis
        values = config.as_dict()  # records from before a knob existed lack it
        schedule_rows(sch, outputs[0], axis, facts, values.get("lanes", lanes), work,
                      chunk=values["row_chunk"], along=axis, parallel=values.get("parallel"),
                      unroll=values.get("unroll_partials", True))


# ----------------------------------------------------------------------------- norms


@register_schedule("cpu", "layer_norm", "rms_norm")
class LastAxesNormTemplate:
    """Normalization over the trailing axes axis..rank-1: rows are the leading axes."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        space = ConfigSpace()
        lanes = cpu_facts(target).lanes(_acc_dtype(workload))
        add_row_knobs(space, lanes, 6 * math.prod(workload.input_types[0].shape))
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        shape = workload.input_types[0].shape
        values = config.as_dict()  # records from before a knob existed lack it
        lanes = values.get("lanes", facts.lanes(_acc_dtype(workload)))
        parallel = values.get("parallel")
        unroll = values.get("unroll_partials", True)
        work = 6 * math.prod(shape)
        axis = workload.attrs.axis
        if len(outputs) == 1:
            schedule_rows(sch, outputs[0], axis, facts, lanes, work, parallel=parallel,
                          unroll=unroll)
            return
        # with_stats: the mean and inverse deviation are outputs too, so every stage is
        # computed at root (each parallel over rows), the statistics before their readers
        stage = sch[outputs[0]]
        axes = list(stage.op.axis)
        rows_loop(stage, axes[:axis], work, facts, parallel)
        inner = axes[axis:]
        if inner:
            fused, extent = fuse_inner(stage, inner, shape[axis:])
            vectorize_width(stage, fused, extent, lanes)
        for t in stats_stages(outputs[0]):
            st = sch[t]
            if not st.op.axis:
                continue
            if is_partial(t):  # rows in parallel, vector partials inside
                rows_loop(st, st.op.axis[:-1], work, facts, parallel)
                schedule_partial(st, lanes, unroll)
            elif st.op.reduce_axis:  # a row reduction: rows in parallel, serial inside
                rows_loop(st, st.op.axis, work, facts, parallel)
            elif math.prod(t.static_shape) >= lanes:
                fused, extent = fuse_inner(st, st.op.axis, t.static_shape)
                vectorize_width(st, fused, extent, lanes)


@register_schedule("cpu", "group_norm")
class GroupNormTemplate:
    """Rows are (sample, group): the output's channel axis is split by the group size, and a
    group's channels and spatial axes form one vectorized inner loop."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        return ConfigSpace()

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        shape = workload.input_types[0].shape
        out = outputs[0]
        if 0 in shape:
            return
        per_group = shape[1] // workload.attrs.num_groups
        stage = sch[out]
        n, c, *spatial = stage.op.axis
        group, channel = stage.split(c, factor=per_group)
        rows = fuse_parallel(stage, [n, group], 6 * math.prod(shape), facts)
        fused, extent = fuse_inner(stage, [channel, *spatial], (per_group, *shape[2:]))
        vectorize_width(stage, fused, extent, lanes)
        for t in stats_stages(out):
            sch[t].compute_at(stage, rows)


@register_schedule("cpu", "lrn")
class LrnTemplate:
    """Rows are (sample, channel): the window sum of squares of a row is computed in the row
    loop, vectorized over the spatial axes with the window loop outside."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        return ConfigSpace()

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        shape = workload.input_types[0].shape
        out = outputs[0]
        if 0 in shape:
            return
        work = (4 + 2 * workload.attrs.size) * math.prod(shape)
        schedule_rows(sch, out, 2, facts, lanes, work)
        for t in stats_stages(out):
            st = sch[t]
            n, c, *spatial = st.op.axis
            fused, extent = fuse_inner(st, spatial, shape[2:])
            st.reorder(*st.op.reduce_axis, fused)
            vectorize_width(st, fused, extent, lanes)


@register_schedule("cpu", "batch_norm")
class BatchNormTemplate:
    """A per-channel multiply-add: (sample, channel) rows, the spatial axes fused and
    vectorized; for (N, C) inputs the channel axis is the vector axis."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        return ConfigSpace()

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        facts = cpu_facts(target)
        lanes = facts.lanes(_acc_dtype(workload))
        shape = workload.input_types[0].shape
        out = outputs[0]
        if 0 in shape:
            return
        stage = sch[out]
        axes = list(stage.op.axis)
        plane = math.prod(shape[2:])
        row_rank = 2 if plane >= lanes // 2 else 1
        work = 2 * math.prod(shape)
        fuse_parallel(stage, axes[:row_rank], work, facts)
        fused, extent = fuse_inner(stage, axes[row_rank:], shape[row_rank:])
        vectorize_width(stage, fused, extent, lanes)
        # the folded per-channel factor and shift are computed once, at root

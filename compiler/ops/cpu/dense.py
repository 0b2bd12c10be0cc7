"""CPU schedule of `dense_packed` (ir/ops/dense.py): x @ B with B packed in column panels
W (ceil(N/nb), K, nb), TVM's x86 `dense_pack` for an LLM's and a dense layer's weights.

The schedule (panel order, the default for weights larger than the L2 cache):

    parallel for (batch..., panel p, row block i.outer[, column block]) fused
      local acc[tile_m, tile_n]                           # registers
      for k.outer, k.inner (unrolled by unroll_k)
        for i.inner (unrolled), vectors (unrolled), lanes (vectorized)
          acc += x[i, k] * W[p, k, lanes]                 # broadcast x, contiguous W vector
      out[block] = epilogue(acc)                          # guarded for the last panel

Each panel is K * nb contiguous floats: the weights stream once, in order, and a panel stays
in L1/L2 while every row block of x passes it. Row order ("rows") puts the row blocks outside
instead, for weights that fit the L2 cache anyway. With few rows (an LLM's decode: a GEMV,
memory-bound) the register block holds every row and the parallel loop splits the panels
between the cores, each streaming its own contiguous half of the weights.

Knobs (`space`): `tile_m` rows and `tile_n` columns (a multiple of the vector width dividing
nb) of the register block, `unroll_k`, `order` ("panels" or "rows": which of panels and row
blocks is the outer loop), `panel_group` (panels a row block passes at a time, in panel
order), `parallel` ("outer": only the outer of the two loops is parallel, so each core keeps
its own panels / rows; "all": both, fused, for more chunks; "none": serial, for kernels
shorter than a parallel launch) and `unroll_rows` (the register block's rows unrolled).
The panel width nb itself is the layout (`panel_width`), chosen when the weights are packed
(compiler/passes/pack_weights.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.cpu.matmul import (
    ACCUMULATOR_REGISTERS,
    L2_BYTES,
    MAX_UNROLLED_VECTORS,
    PARALLEL_MIN_WORK,
    accumulator,
    add_default_knob,
    fuse_parallel,
    tile_choices,
    vector_length,
)
from ember.compiler.ops.registry import ContractsToFMA, Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace, divisors
from ember.ir import te
from ember.ir.schedule import Schedule, Stage, is_reduction
from ember.target import Target

#: rows of x up to which a product is a GEMV: memory-bound, every row in one register block
GEMV_ROWS = 4


def panel_width(rows: int, k: int, n: int, facts: CpuFacts) -> int:
    """The panel width nb the weights of a (rows x k) @ (k x n) product are packed with: two
    vectors for a GEMM (register blocks up to 12 x 2 vectors, one panel of K = 4096
    weights in 512 KiB of L2), four for a GEMV (long contiguous streams, four accumulators per
    row to cover the FMA latency); one for n of a vector or less. A GEMV's panels are the
    parallel loop, so it narrows them until every core has two; a GEMM's row blocks share the
    cores instead (two vectors measured 5-10% faster than one on 160 x 192 x 64 and
    3136 x 32 x 64)."""
    lanes = facts.lanes("float32")
    if n <= lanes:
        return lanes
    if rows > GEMV_ROWS:
        return 2 * lanes
    vectors = 4
    # enough panels for every core (a decode GEMV of 768 columns: 12 panels of 64)
    while vectors > 1 and math.ceil(n / (vectors * lanes)) < 2 * facts.cores:
        vectors //= 2
    return vectors * lanes


@dataclasses.dataclass(frozen=True)
class _DenseShape:
    batch: tuple[int, ...]
    m: int | None  # None: a 1-D x (no row axis)
    n: int
    k: int
    nb: int
    panels: int

    @staticmethod
    def of(workload: Workload) -> _DenseShape:
        x, w = workload.input_types
        out = workload.output_types[0].shape
        panels, k, nb = w.shape
        m = out[-2] if len(out) >= 2 else None
        return _DenseShape(tuple(out[:-2]), m, out[-1], k, nb, panels)

    @property
    def rows(self) -> int:
        return math.prod(self.batch) * (self.m or 1)


def _accumulator(sch: Schedule, out: te.Tensor) -> te.Tensor:
    """The reduction `out` is computed from, in local storage: matmul's `accumulator`, or the
    padded-width reduction (compute/dense.py) an output of N columns copies from."""
    if is_reduction(out.op):
        return accumulator(sch, out)[0]
    for t in out.op.input_tensors:
        if is_reduction(t.op):
            sch[t].set_scope("local")
            return t
    raise ValueError(f"{out.name} reads no reduction")


@register_schedule("cpu", "dense_packed")
class DensePackedTemplate(ContractsToFMA):
    """Register-blocked product with panel-packed weights (see the module docstring). Takes an
    elementwise epilogue (bias, GELU, residual add) through `accumulator`."""

    takes_epilogue = True

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        shape = _DenseShape.of(workload)
        facts = cpu_facts(target)
        lanes = facts.lanes("float32")
        m = shape.m or 1
        nb = shape.nb
        space = ConfigSpace()
        # column blocks: whole vectors dividing the panel (the panel itself when narrower)
        widths = [d for d in divisors(nb) if d % lanes == 0] or [nb]
        gemv = shape.rows <= GEMV_ROWS
        tile_n = nb if gemv else min(widths, key=lambda w: abs(w - 2 * lanes))
        vectors = math.ceil(tile_n / lanes)
        if gemv:
            tile_m = m
        else:
            rows = max(1, ACCUMULATOR_REGISTERS // vectors)
            # a divisor: a guarded row tail guards every multiply-add (measured 7x slower)
            tile_m = max((d for d in divisors(m) if d <= rows), default=1)
        add_default_knob(space, "tile_m",
                         tile_choices(m, [*range(1, 17), 24, 32], 64), tile_m)
        add_default_knob(space, "tile_n", widths, tile_n)
        add_default_knob(space, "unroll_k", [u for u in (1, 2, 4, 8) if shape.k % u == 0],
                         next(u for u in (4, 2, 1) if shape.k % u == 0))
        # Weights larger than L2 stream from memory once per row block in row order; in
        # panel order once in all.
        w_bytes = shape.k * shape.panels * nb * 4
        add_default_knob(space, "order", ["panels", "rows"],
                         "panels" if w_bytes > L2_BYTES or gemv else "rows")
        # Panels in groups: each row block passes a group of panels, so the output is written
        # in rows of group * nb columns rather than one panel's. For the tuner: one panel at a
        # time measured faster on every shape tried (1.5-1.8x on 1024^3 and 128x768x3072),
        # so the default is 1. Only divisors: a guarded group tail reaches into the register
        # block.
        groups = [g for g in divisors(shape.panels) if g <= 64]
        group = 1
        add_default_knob(space, "panel_group", groups, group)
        space.add_filter(lambda c: c["order"] == "panels" or c["panel_group"] == 1)
        outer_chunks = (math.ceil(shape.panels / group) if w_bytes > L2_BYTES or gemv
                        else math.prod(shape.batch) * math.ceil(m / tile_m))
        work = 2 * shape.rows * shape.n * shape.k
        add_default_knob(space, "parallel", ["outer", "all", "none"],
                         "none" if work < PARALLEL_MIN_WORK or facts.cores == 1
                         else "outer" if outer_chunks >= 4 * facts.cores else "all")
        # the register block's rows unrolled (all accumulators in registers) or a loop (a
        # tall block whose accumulators spill either way: less code)
        add_default_knob(space, "unroll_rows", [True, False], True)
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        shape = _DenseShape.of(workload)
        facts = cpu_facts(target)
        lanes = facts.lanes("float32")
        out = outputs[0]
        if 0 in workload.output_types[0].shape or shape.k == 0:
            return
        acc = _accumulator(sch, out)
        stage = sch[out]
        axes = list(stage.op.axis)
        batch_axes = axes[:len(shape.batch)]
        m_axis = axes[len(shape.batch)] if shape.m is not None else None
        tile_n = min(config["tile_n"], shape.nb)
        tile_m = min(config["tile_m"], shape.m or 1)
        work = 2 * shape.rows * shape.n * shape.k
        # j = panel * nb + block * tile_n + lane: the panel index of W is the outer loop
        panel, within = stage.split(axes[-1], factor=shape.nb)
        column_blocks = []
        if tile_n < shape.nb:
            block, within = stage.split(within, factor=tile_n)
            column_blocks = [block]
        row_blocks, inner = [], [within]
        if m_axis is not None:
            mo, mi = stage.split(m_axis, factor=tile_m)
            row_blocks, inner = [mo], [mi, within]
        if config["order"] == "panels":
            group = min(config["panel_group"], shape.panels)
            if group > 1:
                panel, grouped = stage.split(panel, factor=group)
                column_blocks = [grouped, *column_blocks]
            first, second = [*batch_axes, panel], [*row_blocks, *column_blocks]
        else:
            first, second = [*batch_axes, *row_blocks], [panel, *column_blocks]
        stage.reorder(*first, *second, *inner)
        if config["parallel"] == "none":
            loops = [*first, *second]
            attach = stage.fuse(*loops) if len(loops) > 1 else loops[0]
        elif config["parallel"] == "all" or not first or not second:
            attach = fuse_parallel(stage, [*first, *second], work, facts)
        else:
            fuse_parallel(stage, first, work, facts)
            attach = stage.fuse(*second) if len(second) > 1 else second[0]
        length = vector_length(tile_n, lanes)
        if length > 1:
            if length < tile_n:
                _, lane = stage.split(within, factor=length)
                stage.vectorize(lane)
            else:
                stage.vectorize(within)
        acc_stage = sch[acc]
        acc_stage.compute_at(stage, attach)
        self._schedule_block(acc_stage, shape, config, lanes, tile_n)

    @staticmethod
    def _schedule_block(acc: Stage, shape: _DenseShape, config: Config, lanes: int,
                        tile_n: int) -> None:
        """The register block: reduction outside, rows unrolled, columns vectorized."""
        axes = list(acc.op.axis)
        (k,) = acc.op.reduce_axis
        batch_axes = axes[:len(shape.batch)]
        rows = [axes[len(shape.batch)]] if shape.m is not None else []
        unroll_k = config["unroll_k"]
        reduce_loops = list(acc.split(k, factor=unroll_k)) if unroll_k > 1 else [k]
        length = vector_length(tile_n, lanes)
        serial: list[te.IterVar] = []
        block = list(rows)
        vector = axes[-1]
        if length < tile_n:
            vectors, vector = acc.split(axes[-1], factor=length)
            if tile_n // length > MAX_UNROLLED_VECTORS:
                group, vectors = acc.split(vectors, factor=MAX_UNROLLED_VECTORS)
                serial.append(group)
            block.append(vectors)
        acc.reorder(*batch_axes, *reduce_loops, *serial, *block, vector)
        if unroll_k > 1:
            acc.unroll(reduce_loops[-1])
        for axis in block if config["unroll_rows"] else block[len(rows):]:
            acc.unroll(axis)
        if length > 1:
            acc.vectorize(vector)

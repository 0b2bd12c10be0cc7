"""CPU schedule of matmul (numpy semantics: batched, broadcast, 1-D operands), and the
hardware facts and schedule helpers the other NN schedules (conv.py, pool.py, norm.py) share.

The matmul schedule is the classic register-blocked one (TVM's x86 dense default):

    parallel for (batch..., m.outer[, n.outer]) fused        # blocks of the output
      for n.outer
        local acc[tile_m, tile_n]                            # cache_write: registers
        for k.outer, k.inner (unrolled by unroll_k)
          for m.inner (unrolled), n.vectors (unrolled), n.lanes (vectorized)
            acc += A[m, k] * B[k, n]                         # broadcast A, vector B row
        C[block] = acc (vectorized copy-out; rounding for half dtypes)

Knobs (`space`): `tile_m` rows of the register block, `tile_n` its columns (a multiple of the
vector width where the shape allows), `unroll_k` the unrolled reduction steps, and
`parallel_n` whether output column blocks join the parallel loop. The default holds about 16
to 24 vector accumulators, half to three quarters of AVX-512's 32 registers. GEMV shapes
(one row: M = 1 or a 1-D first operand) get tile_m = 1 and parallelize over column blocks. A
1-D second operand (no N) vectorizes over rows instead, with strided loads of A.

Products whose B is packed into column panels do not come here: opt level 3's
compiler/passes/pack_weights.py turns a matmul with a constant 2-D float32 B (a model's
weights), or a large one with a computed 2-D B (packed at run time), into `dense_packed`
(compiler/ops/cpu/dense.py), which streams each panel contiguously. This template keeps the
batched products (attention's), the small ones and the other dtypes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ember.compiler.ops.cpu.hardware import CpuFacts, cpu_facts
from ember.compiler.ops.registry import ContractsToFMA, Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace, divisors
from ember.ir import te
from ember.ir.schedule import Schedule, Stage, is_reduction
from ember.target import Target

#: accumulator registers a default register block aims at (of AVX-512's 32; the others hold
#: operands)
ACCUMULATOR_REGISTERS = 24
#: vectors of one register block row unrolled at most (wider blocks loop over groups)
MAX_UNROLLED_VECTORS = 8
#: kernels doing fewer scalar operations than this stay serial: a parallel launch costs
#: about 4 us, some 10K cycles, more than such a vectorized kernel runs
PARALLEL_MIN_WORK = 1 << 18
#: a second operand larger than this does not stay in one core's L2 cache (1 MiB on this
#: machine's Zen cores; 1-2 MiB on current x86 server cores)
L2_BYTES = 1 << 20


# ----------------------------------------------------------------------------- helpers


def vector_length(width: int, lanes: int) -> int:
    """The lanes of the vectors a block row of `width` elements is cut into: the largest
    divisor of `width` that fits one register (LLVM splits a wider or odd-sized vector into
    element inserts, which is slow)."""
    return max(d for d in divisors(width) if d <= lanes) if width > 0 else 1


def row_tile(width: int, lanes: int) -> int:
    """The output-row block of one accumulator: the whole row when it fits a vector, one full
    vector when the row is a multiple of it, else the largest divisor filling at least half a
    vector (56 -> 14, 100 -> 10: measured 3x faster than 16 lanes with a guarded tail on a
    1x1 conv of width 100), else one vector with a guarded (masked) tail."""
    if width <= lanes:
        return width
    if width % lanes == 0:
        return lanes
    fitting = [d for d in divisors(width) if d <= lanes and 2 * d >= lanes]
    return max(fitting) if fitting else lanes


def vector_tile(extent: int, lanes: int, max_vectors: int = 4) -> int:
    """A tile of a vectorized axis: up to `max_vectors` vectors of `row_tile`'s length,
    dividing `extent` (one vector, with its guarded tail, when none does)."""
    length = row_tile(extent, lanes)
    count = max((k for k in range(1, max_vectors + 1) if extent % (length * k) == 0),
                default=1)
    return length * count


def tile_choices(extent: int, extra: Sequence[int] = (), limit: int = 256) -> list[int]:
    """Candidate tile sizes of an axis: its divisors up to `limit` and `extra` sizes (which
    leave guarded tails), sorted."""
    values = {d for d in divisors(max(extent, 1)) if d <= limit}
    values.update(e for e in extra if 1 <= e <= max(extent, 1))
    return sorted(values)


def add_default_knob(space: ConfigSpace, name: str, values: Sequence, default) -> None:
    values = list(values)
    if default not in values:
        values.append(default)
    space.define_knob(name, values)
    space.set_default(name, default)


def accumulator(sch: Schedule, out: te.Tensor) -> tuple[te.Tensor, bool]:
    """The reduction `out` is computed from, kept in local storage: `out`'s own cache when it
    is the reduction (cache_write), else the reduction it reads (an epilogue computes `out`).
    Returns the accumulator and whether `out` is a copy of it (cache_write)."""
    if is_reduction(out.op):
        return sch.cache_write(out, "local"), True
    for t in out.op.input_tensors:  # the reduction over out's own shape, not a statistic
        if is_reduction(t.op) and t.static_shape == out.static_shape:
            sch[t].set_scope("local")
            return t, False
    raise ValueError(f"{out.name} reads no reduction")


def fuse_parallel(stage: Stage, axes: Sequence[te.IterVar], work: int,
                  facts: CpuFacts) -> te.IterVar | None:
    """Fuse the outer `axes` into one loop, parallel when `work` (scalar operations of the
    whole kernel) pays for the launch and the loop has more than one iteration."""
    if not axes:
        return None
    fused = stage.fuse(*axes) if len(axes) > 1 else axes[0]
    if work >= PARALLEL_MIN_WORK and facts.cores > 1:
        stage.parallel(fused)
    return fused


def fuse_inner(stage: Stage, axes: Sequence[te.IterVar], shape: Sequence[int]
               ) -> tuple[te.IterVar, int]:
    """Fuse the contiguous inner `axes` (of extents `shape`) into one loop to vectorize:
    only the last two, because the loop-IR simplifier merges the index of two fused axes
    back into one contiguous ramp but not yet that of three when the vector length does not
    divide the inner extents; the others stay serial loops around it. Returns the fused
    loop and its extent."""
    if len(axes) == 1:
        return axes[0], shape[-1]
    return stage.fuse(axes[-2], axes[-1]), shape[-2] * shape[-1]


def vectorize_inner(stage: Stage, axis: te.IterVar, extent: int, lanes: int) -> None:
    """Vectorize loop `axis` (of `extent`) as vectors of `vector_length` lanes: split off a
    serial loop over the vectors when the extent holds several."""
    length = vector_length(extent, lanes)
    if length <= 1:
        return
    if length < extent:
        _, axis = stage.split(axis, factor=length)
    stage.vectorize(axis)


# ----------------------------------------------------------------------------- matmul


@dataclasses.dataclass(frozen=True)
class _MatmulShape:
    batch: tuple[int, ...]
    m: int | None  # None: 1-D first operand (no row axis)
    n: int | None  # None: 1-D second operand (no column axis)
    k: int
    dtype: str  # the accumulation dtype

    @staticmethod
    def of(workload: Workload) -> _MatmulShape:
        a, b = workload.input_types
        out = workload.output_types[0].shape
        m = None if a.rank == 1 else a.shape[-2]
        n = None if b.rank == 1 else b.shape[-1]
        batch = out[:len(out) - (m is not None) - (n is not None)]
        dtype = "float32" if a.dtype in ("float16", "bfloat16") else a.dtype
        return _MatmulShape(tuple(batch), m, n, a.shape[-1], dtype)


@register_schedule("cpu", "matmul")
class MatmulTemplate(ContractsToFMA):
    """Register-blocked matmul / batch matmul / GEMV (see the module docstring). Takes an
    elementwise epilogue (compiler/ops/fused.py) through `accumulator`."""

    takes_epilogue = True

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        shape = _MatmulShape.of(workload)
        facts = cpu_facts(target)
        lanes = facts.lanes(shape.dtype)
        space = ConfigSpace()
        m, n = shape.m or 1, shape.n or 1
        if shape.n is not None:
            tile_n = vector_tile(n, lanes, max_vectors=2)
            vectors = math.ceil(tile_n / lanes)
            rows = max(1, ACCUMULATOR_REGISTERS // vectors)
            tile_m = max((d for d in divisors(m) if d <= rows), default=1)
            if m == 1:
                tile_n = vector_tile(n, lanes, max_vectors=16)
        else:  # matrix-vector: rows are the vector axis
            tile_n, tile_m = 1, vector_tile(m, lanes, max_vectors=4)
        add_default_knob(space, "tile_m", tile_choices(m, [*range(1, 17), 24, 32], 64), tile_m)
        add_default_knob(space, "tile_n",
                         tile_choices(n, [v * lanes for v in range(1, 5)], 128 * lanes), tile_n)
        # K is split and its inner steps unrolled: two k steps per loop iteration
        add_default_knob(space, "unroll_k", [u for u in (1, 2, 4, 8) if shape.k % u == 0],
                         2 if shape.k % 2 == 0 and shape.k > 2 else 1)
        # With few row blocks, column blocks must share the cores too.
        row_blocks = math.prod(shape.batch) * math.ceil(m / tile_m)
        space.define_knob("parallel_n", [False, True])
        space.set_default("parallel_n", row_blocks < 4 * facts.cores)
        # A second operand larger than the L2 cache is streamed from memory once per row
        # block unless the column blocks are the outer loop (an LLM's vocabulary projection:
        # 768 x 50257 floats, re-read 16 times, ran at 26 GFLOP/s).
        space.define_knob("n_outer", [False, True])
        b_bytes = shape.k * n * 4
        space.set_default("n_outer", shape.n is not None and b_bytes > L2_BYTES
                          and math.ceil(m / tile_m) > 1)
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        shape = _MatmulShape.of(workload)
        facts = cpu_facts(target)
        lanes = facts.lanes(shape.dtype)
        out = outputs[0]
        if 0 in workload.output_types[0].shape or shape.k == 0:
            return
        acc, _ = accumulator(sch, out)
        stage = sch[out]
        axes = list(stage.op.axis)
        batch_axes = axes[:len(shape.batch)]
        m_axis = axes[len(shape.batch)] if shape.m is not None else None
        n_axis = axes[-1] if shape.n is not None else None
        tile_m, tile_n = config["tile_m"], config["tile_n"]
        work = 2 * math.prod(shape.batch) * (shape.m or 1) * (shape.n or 1) * shape.k
        outer, inner = list(batch_axes), []
        if m_axis is not None:
            mo, mi = stage.split(m_axis, factor=tile_m)
            outer.append(mo)
            inner.append(mi)
        if n_axis is not None:
            no, ni = stage.split(n_axis, factor=tile_n)
            inner.append(ni)
            if config["n_outer"]:  # each column panel once, every row block inside it
                outer = [*batch_axes, no, *outer[len(batch_axes):]]
                stage.reorder(*outer, *inner)
                attach = fuse_parallel(stage, outer, work, facts)
            elif config["parallel_n"]:
                outer.append(no)
                stage.reorder(*outer, *inner)
                attach = fuse_parallel(stage, outer, work, facts)
            else:
                stage.reorder(*outer, no, *inner)
                fuse_parallel(stage, outer, work, facts)
                attach = no
            vectorize_inner(stage, ni, min(tile_n, shape.n), lanes)
        else:
            stage.reorder(*outer, *inner)
            attach = fuse_parallel(stage, outer, work, facts)
            if inner:
                vectorize_inner(stage, inner[-1], min(tile_m, shape.m), lanes)
        if attach is None:  # a dot product of two vectors: nothing to tile
            return
        acc_stage = sch[acc]
        acc_stage.compute_at(stage, attach)
        self._schedule_block(acc_stage, shape, config, lanes)

    @staticmethod
    def _schedule_block(acc: Stage, shape: _MatmulShape, config: Config, lanes: int) -> None:
        """The register block: reduction outside, rows unrolled, columns vectorized."""
        axes = list(acc.op.axis)
        (k,) = acc.op.reduce_axis
        batch_axes = axes[:len(shape.batch)]
        m_axis = axes[len(shape.batch)] if shape.m is not None else None
        n_axis = axes[-1] if shape.n is not None else None
        unroll_k = config["unroll_k"]
        reduce_loops = [k]
        if unroll_k > 1:
            reduce_loops = list(acc.split(k, factor=unroll_k))
        block: list[te.IterVar] = []
        serial: list[te.IterVar] = []
        vector = None
        if n_axis is not None:
            tile_n = min(config["tile_n"], shape.n)
            length = vector_length(tile_n, lanes)
            rows = [m_axis] if m_axis is not None else []
            if length < tile_n:
                nv, vector = acc.split(n_axis, factor=length)
                if tile_n // length > MAX_UNROLLED_VECTORS:
                    # a wide (GEMV) block: groups of vectors in a serial loop, its
                    # accumulators in L1 rather than registers
                    group, nv = acc.split(nv, factor=MAX_UNROLLED_VECTORS)
                    serial.append(group)
                block = rows + [nv]
            else:
                vector = n_axis
                block = rows
        elif m_axis is not None:
            vector = m_axis
        acc.reorder(*batch_axes, *reduce_loops, *serial, *block, *([vector] if vector else []))
        if unroll_k > 1:
            acc.unroll(reduce_loops[-1])
        for axis in block:
            acc.unroll(axis)
        if vector is not None:
            acc.vectorize(vector)

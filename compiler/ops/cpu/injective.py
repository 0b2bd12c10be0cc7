"""The CPU schedule of elementwise, broadcast and injective ops (and of any compute whose
fusion pattern is one of those, such as batch_norm): one vectorized, parallel loop nest.

    for parallel outer in range(rows * chunks):      # the other axes and the vector chunks
        out[outer..., ramp(chunk * lanes, 1, lanes)] = ...   # one SIMD register per store

The trailing output axes are fused into one "vector axis" (as many as every input reads
contiguously, see `aligned_axes`), split by the vector width, and the inner part vectorized; a
length that is not a multiple of the width leaves a masked tail. Size-1 axes move outside
first, so an (N, C, 1, 1) output vectorizes over C. Everything outside is fused into one
loop, parallel when the output is large (`PARALLEL_MIN_ELEMENTS`): below that the launch
costs more than it saves. Intermediate (non-output) stages are inlined.

reshape has its own schedule (`ReshapeSchedule`): where it merges input axes into one output
axis, that axis is split along the input's axes, so both sides of the copy stay contiguous.

transpose has one too (`TransposeSchedule`): when the input's innermost axis moves, the output
is written in tiles, so the strided reads of a tile share their cache lines.

Knobs (`InjectiveSchedule.space`): `vector_axes` (0 = decide from the reads), `lanes`,
`parallel` and `inner_chunks` (whether the loop over the vectors of a run stays a serial loop
inside the parallel one); transpose adds `tile`.

[Note: fused vector axes] Fusing k trailing axes leaves `(f // c) * c + f % c`-shaped indices
that the loop-IR simplifier must merge back into `f` for the vectorizer to see a contiguous
ramp. It merges nested chains too (`(f // 63) * 63 + (f // 9) % 7 * 9 + f % 9` -> `f`), so
three fused axes vectorize; `MAX_VECTOR_AXES` caps the vector loop at three axes, enough for
every layout ember's ops produce, and keeps the per-element index arithmetic of the fallback
path small.

[Note: uniform selects]
Concat (and pad, and where-like selects on positions) computes `select(i < end0, a[..],
select(i < end1, b[..], c[..]))`: a select evaluates both arms, so every output element reads
every input, 12x the memory traffic for a 12-way concat of the KV cache. When the condition
is the same for all lanes of the store and reads no memory (`i` is an outer loop variable),
`branch_uniform_selects` (run on the lowered kernel, `finish_lowered`) turns the store into
`if i < end0: out = a[..] elif ...`: one compare and a predictable branch per vector, and a
plain vector copy from the one input it reads. `MAX_SELECT_BRANCHES` bounds the code growth
when several such selects meet in one store.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from ember.compiler.ops.compute.injective import reshape_groups
from ember.compiler.ops.cpu.hardware import cpu_facts
from ember.compiler.ops.registry import Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace
from ember.ir import loop as L
from ember.ir import te
from ember.ir.expr import (
    GE,
    LT,
    Add,
    Broadcast,
    Expr,
    IntImm,
    Let,
    Max,
    Min,
    Mul,
    Ramp,
    Select,
    Sub,
    Var,
    lanes_of,
)
from ember.ir.ops import Pattern
from ember.ir.passes.simplify import simplify
from ember.ir.schedule import Schedule, Stage, is_reduction
from ember.ir.te import ComputeOp, IterVar, TensorRead
from ember.ir.visitor import collect, transform
from ember.target import Target

#: Outputs with fewer elements run on one thread: a parallel launch costs a few microseconds.
PARALLEL_MIN_ELEMENTS = 16 * 1024
#: How many trailing axes may be fused into the vectorized loop (see [Note: fused vector axes]).
MAX_VECTOR_AXES = 3

#: A store whose value holds uniform selects becomes at most this many branches (see
#: [Note: uniform selects]); concat's chain has one select per input.
MAX_SELECT_BRANCHES = 64

#: Bytes per element of each dtype a kernel computes with.
ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2,
            "bfloat16": 2, "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8,
            "float64": 8}


# ----------------------------------------------------------------------------- the machine


def vector_bytes(target: Target) -> int:
    """The width of one SIMD register in bytes for `target` (the host's: 64 with AVX-512)."""
    return cpu_facts(target).vector_bytes


def vector_lanes(dtypes: Iterable[str], target: Target) -> int:
    """Lanes of one SIMD register for the widest of `dtypes`; half floats count as float32,
    the dtype their arithmetic is done in."""
    widest = max((max(ITEMSIZE.get(d, 8), 4 if d in ("float16", "bfloat16") else 1)
                  for d in dtypes), default=4)
    return max(1, vector_bytes(target) // widest)


def workload_dtypes(workload: Workload) -> list[str]:
    return [t.dtype for t in (*workload.input_types, *workload.output_types) if t is not None]


def output_dtypes(workload: Workload) -> list[str]:
    return [t.dtype for t in workload.output_types]


def extent_of(shape: Sequence[int]) -> int:
    return math.prod(shape)


# ----------------------------------------------------------------------------- analysis


def _read_is_contiguous(read: TensorRead, trailing: Sequence[Var],
                        dims: Sequence[int]) -> bool:
    """Whether `read` indexes the trailing output axes exactly (the same variables over the
    same sizes, in its last dimensions not counting size-1 ones) or not at all: then fusing
    those axes keeps its index a ramp (or a scalar)."""
    used_by = [set(collect(index, Var)) for index in read.indices]
    if not any(v in used for used in used_by for v in trailing):
        return True  # invariant along the fused axes: a broadcast scalar
    # a size-1 dimension has no extent in memory: it cannot break contiguity
    kept = [k for k, dim in enumerate(read.tensor.static_shape) if dim != 1]
    count = len(trailing)
    tail = kept[-count:] if len(kept) >= count else []
    if [read.indices[k] for k in tail] != list(trailing):
        return False
    if [read.tensor.static_shape[k] for k in tail] != list(dims):
        return False
    return not any(v in used_by[k] for k in range(len(read.indices)) if k not in tail
                   for v in trailing)


def aligned_axes(op: ComputeOp, axes: Sequence[IterVar], limit: int = MAX_VECTOR_AXES) -> int:
    """How many of the trailing `axes` of `op` (at least 1, at most `limit`) every read
    indexes contiguously or not at all, so they can be fused into one vectorized loop."""
    variables = [iv.var for iv in axes]
    shape = tuple(int(iv.dom.extent.value) for iv in axes)
    reads = [r for body in op.body for r in collect(body, TensorRead)]
    best = 1
    for k in range(2, min(limit, len(variables)) + 1):
        if not all(_read_is_contiguous(r, variables[-k:], shape[-k:]) for r in reads):
            break
        best = k
    return best


# ----------------------------------------------------------------------------- uniform selects


def _multiple_of(e: Expr, n: int) -> bool:
    """Whether the integer `e` is known to be a multiple of `n`."""
    if isinstance(e, IntImm):
        return e.value % n == 0
    if isinstance(e, Mul):
        return _multiple_of(e.a, n) or _multiple_of(e.b, n)
    if isinstance(e, (Add, Sub)):
        return _multiple_of(e.a, n) and _multiple_of(e.b, n)
    return False


def _lane_uniform(condition: Expr) -> Expr | None:
    """`ramp(base, 1, lanes) < broadcast(c)` (or >=) as the scalar `base < c` when base and c
    are multiples of `lanes`: no lane boundary falls inside the vector (a channel concat
    whose parts are whole channel blocks)."""
    if not isinstance(condition, (LT, GE)):
        return None
    ramp, bound = condition.a, condition.b
    if not (isinstance(ramp, Ramp) and isinstance(bound, Broadcast)
            and isinstance(ramp.stride, IntImm) and ramp.stride.value == 1
            and isinstance(bound.value, IntImm)):
        return None
    if not (_multiple_of(ramp.base, ramp.lanes) and bound.value.value % ramp.lanes == 0):
        return None
    return type(condition)(ramp.base, bound.value)


def _uniform_condition(select: Select) -> Expr | None:
    """The scalar condition of `select` when it is the same for every lane and reads no
    memory (loop variables only), so branching on it costs one compare per store."""
    condition = select.condition
    if isinstance(condition, Broadcast):
        condition = condition.value
    elif lanes_of(condition.dtype) > 1:
        condition = _lane_uniform(condition)
        if condition is None:
            return None
    if condition.dtype != "bool" or collect(condition, L.Load):
        return None
    return condition


def _branch_select(value: Expr) -> tuple[Select, Expr] | None:
    """The outermost select of `value` worth a branch: a uniform condition and a memory read
    in one of its arms (a select of two computed values stays a select)."""
    bound = {let.var for let in collect(value, Let)}
    for select in collect(value, Select):
        condition = _uniform_condition(select)
        if condition is None or any(v in bound for v in collect(condition, Var)):
            continue
        if collect(select.true_value, L.Load) or collect(select.false_value, L.Load):
            return select, condition
    return None


def _resolve(value: Expr, condition: Expr, holds: bool) -> Expr:
    """`value` with every select on `condition` (a value read twice selects twice) replaced
    by the arm it takes when `condition` is `holds`."""
    def rewrite(node: object) -> Expr | None:
        if isinstance(node, Select) and _uniform_condition(node) == condition:
            return node.true_value if holds else node.false_value
        return None

    return transform(value, rewrite)


def _offset_from(e: Expr, base: Expr) -> int | None:
    """k when `e` is `base + k` (or `base - k`, or `base`), else None."""
    if e == base:
        return 0
    if isinstance(e, (Add, Sub)) and e.a == base and isinstance(e.b, IntImm):
        return e.b.value if isinstance(e, Add) else -e.b.value
    return None


def _drop_clamps(value: Expr, base: Expr, low: int | None, high: int | None) -> Expr:
    """Remove `min(ramp(base + k), m)` / `max(ramp(base + k), m)` clamps that cannot bind
    when `low <= base < high` (both multiples of the ramp's lanes, as the branch conditions
    of `_lane_uniform`): concat clamps each input's index, and once a branch has chosen the
    input its clamp only turns a contiguous load into a gather."""
    def rewrite(node: object) -> Expr | None:
        if not isinstance(node, (Min, Max)) or not isinstance(node.b, Broadcast):
            return None
        ramp, bound = node.a, node.b.value
        if not (isinstance(ramp, Ramp) and isinstance(bound, IntImm)):
            return None
        offset = _offset_from(ramp.base, base)
        if offset is None or not (isinstance(ramp.stride, IntImm) and ramp.stride.value == 1):
            return None
        if isinstance(node, Min) and high is not None and high - 1 + offset <= bound.value:
            return ramp
        if isinstance(node, Max) and low is not None and low + offset >= bound.value:
            return ramp
        return None

    return transform(value, rewrite)


def _branch_store(store: L.Store, stores: list[int],
                  ranges: dict[Expr, tuple[int | None, int | None]] | None = None) -> L.Stmt:
    """`store` with its uniform selects as branches; `stores` counts the copies of the
    store made so far (one list shared by the recursion), up to MAX_SELECT_BRANCHES;
    `ranges` holds what the enclosing branches proved about vector bases."""
    ranges = ranges or {}
    found = _branch_select(store.value) if stores[0] < MAX_SELECT_BRANCHES else None
    if found is None:
        value = store.value
        for base, (low, high) in ranges.items():
            value = _drop_clamps(value, base, low, high)
        if value is store.value:
            return store
        # broadcast(row) + ramp(column) is a ramp again: a contiguous load, not a gather
        return dataclasses.replace(store, value=simplify(value))
    select, condition = found
    stores[0] += 1
    then_case = dataclasses.replace(store, value=_resolve(store.value, condition, True))
    else_case = dataclasses.replace(store, value=_resolve(store.value, condition, False))
    then_ranges, else_ranges = dict(ranges), dict(ranges)
    if isinstance(condition, (LT, GE)) and isinstance(condition.b, IntImm) and \
            not isinstance(select.condition, Broadcast):  # a lane-uniform ramp compare
        base, bound = condition.a, condition.b.value
        low, high = ranges.get(base, (None, None))
        below = (low, bound if high is None else min(high, bound))
        above = (bound if low is None else max(low, bound), high)
        then_ranges[base], else_ranges[base] = (below, above) if isinstance(condition, LT) \
            else (above, below)
    return L.IfThenElse(condition, _branch_store(then_case, stores, then_ranges),
                        _branch_store(else_case, stores, else_ranges))


def _hoist_branch(loop: L.For) -> L.Stmt | None:
    """`for v: if c: A else: B` -> `if c: for v: A else: for v: B` when `c` does not
    depend on `v` (a serial loop only: a parallel one would be outlined once per arm)."""
    body = loop.body
    if loop.kind is not L.ForKind.SERIAL or not isinstance(body, L.IfThenElse):
        return None
    if loop.var in collect(body.condition, Var) or collect(body.condition, L.Load):
        return None  # (a read could see the loop's own stores)
    return L.IfThenElse(body.condition, dataclasses.replace(loop, body=body.then_case),
                        None if body.else_case is None else
                        dataclasses.replace(loop, body=body.else_case))


def branch_uniform_selects(func: L.PrimFunc) -> L.PrimFunc:
    """Turn selects on a loop-uniform condition into branches around the store, and move
    the branches out of the serial loops they do not depend on (see [Note: uniform
    selects])."""
    def rewrite(node: object) -> L.Stmt | None:
        if isinstance(node, L.Store) and collect(node.value, Select):
            branched = _branch_store(node, [1])
            return None if branched is node else branched
        if isinstance(node, L.For):
            hoisted = _hoist_branch(node)
            if hoisted is not None:  # the arms may hold branches to hoist in turn
                return L.IfThenElse(hoisted.condition, rewrite(hoisted.then_case) or
                                    hoisted.then_case,
                                    hoisted.else_case and (rewrite(hoisted.else_case) or
                                                           hoisted.else_case))
        return None

    return func.with_body(transform(func.body, rewrite))


# ----------------------------------------------------------------------------- scheduling


def inline_injective_stages(sch: Schedule, outputs: Sequence[te.Tensor]) -> None:
    """Inline every intermediate stage that is not a reduction (their loops would only
    store what the consumer can compute in place)."""
    output_ops = {id(t.op) for t in outputs}
    for stage in sch.stages:
        if stage.is_placeholder or id(stage.op) in output_ops or is_reduction(stage.op):
            continue
        if stage in sch.output_stages:
            continue
        stage.compute_inline()


def schedule_vector_loop(stage: Stage, axes: Sequence[IterVar], shape: Sequence[int],
                         lanes: int, vector_axes: int = 0, inner_chunks: int = 1,
                         min_outer: int = 8) -> tuple[IterVar | None, IterVar | None]:
    """Fuse the trailing `vector_axes` of `axes` (0: as many as `aligned_axes` allows), split
    them by `lanes` and vectorize the inner part; size-1 axes move outside first, so that an
    (N, C, 1, 1) output vectorizes over C. Returns (the loop over everything outside the
    vector, fused into one; the vectorized loop), either None when it has no loop.

    `inner_chunks` 1 fuses the loop over the vector chunks into that outer loop; 2 keeps it
    as a serial loop inside (long runs of plain vector copies, the index arithmetic and any
    branch on the outer position once per run, see [Note: uniform selects]); 0 does so when
    the outer loop has at least `min_outer` iterations (enough to share among the threads)."""
    if not axes:
        return None, None
    units = [a for a, d in zip(axes, shape) if d == 1]
    wide = [(a, d) for a, d in zip(axes, shape) if d != 1]
    if not wide:
        return (stage.fuse(*units) if len(units) > 1 else units[0]), None
    if units:
        stage.reorder(*units, *(a for a, _ in wide))
    axes, shape = [a for a, _ in wide], [d for _, d in wide]
    k = vector_axes or aligned_axes(stage.op, axes, min(len(axes), MAX_VECTOR_AXES))
    k = max(1, min(k, len(axes)))
    inner = stage.fuse(*axes[-k:]) if k > 1 else axes[-1]
    lanes = max(1, min(lanes, extent_of(shape[-k:])))
    outer = [*units, *axes[:-k]]
    vector = None
    if lanes > 1:
        chunk, vector = stage.split(inner, factor=lanes)
        stage.vectorize(vector)
    else:
        chunk = inner
    outer_extent = extent_of(shape[:-k])
    separate = inner_chunks == 2 or (inner_chunks == 0 and outer_extent >= min_outer)
    if not separate or outer_extent == 1:
        outer.append(chunk)
    return (stage.fuse(*outer) if len(outer) > 1 else outer[0]), vector


def schedule_injective(sch: Schedule, output: te.Tensor, target: Target, lanes: int,
                       vector_axes: int = 0, parallel: bool | None = None,
                       inner_chunks: int = 1) -> None:
    """The default CPU schedule of one injective output (see the module docstring)."""
    stage = sch[output]
    shape = output.static_shape
    outer, _ = schedule_vector_loop(stage, stage.op.axis, shape, lanes, vector_axes,
                                    inner_chunks, 4 * cpu_facts(target).cores)
    if parallel is None:
        parallel = extent_of(shape) >= PARALLEL_MIN_ELEMENTS
    if outer is not None and parallel:
        stage.parallel(outer)


@register_schedule("cpu", Pattern.ELEMWISE, Pattern.BROADCAST, Pattern.INJECTIVE)
class InjectiveSchedule:
    """Vectorized inner loop, parallel outer loop; see the module docstring."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        space = ConfigSpace()
        rank = max((len(t.shape) for t in workload.output_types), default=0)
        space.define_knob("vector_axes", [0, *range(1, min(rank, MAX_VECTOR_AXES) + 1)])
        # The output's dtype sets the width: inputs are read at the same lanes (wider ones
        # take two registers), and index inputs of gathers are read once per vector.
        lanes = vector_lanes(output_dtypes(workload), target)
        choices = sorted({max(1, lanes // 4), max(1, lanes // 2), lanes, lanes * 2})
        space.define_knob("lanes", choices)
        space.set_default("lanes", lanes)
        space.define_knob("parallel", [False, True])
        size = max((extent_of(t.shape) for t in workload.output_types), default=0)
        space.set_default("parallel", size >= PARALLEL_MIN_ELEMENTS)
        # 0: a serial loop over the vector chunks inside the parallel one when the axes
        # outside the vector have enough iterations for the threads; 1: never; 2: always
        space.define_knob("inner_chunks", [0, 1, 2])
        return space

    def finish_lowered(self, func: L.PrimFunc) -> L.PrimFunc:
        """The lowered kernel's last rewrite: see [Note: uniform selects]."""
        return branch_uniform_selects(func)

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        inline_injective_stages(sch, outputs)
        scheduled: set[int] = set()
        for output in outputs:
            if id(output.op) not in scheduled:  # the outputs of one op share its loops
                scheduled.add(id(output.op))
                schedule_injective(sch, output, target, config["lanes"], config["vector_axes"],
                                   config["parallel"], config["inner_chunks"])


@register_schedule("cpu", "reshape")
class ReshapeSchedule(InjectiveSchedule):
    """Reshape reads its input through div/mod of the output index where it merges axes
    (flattening NCHW to (N, C*H*W)). Splitting each merged output axis along the input's
    axes gives one loop per input axis, whose indices the simplifier reduces to the loop
    variables: both sides of the copy become contiguous vectors, not gathers."""

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        (output,) = outputs
        source = workload.input_types[0].shape
        shape = output.static_shape
        stage = sch[output]
        leaves: list[tuple[IterVar, int]] = []
        merged = False
        for s_axes, t_axes in reshape_groups(source, shape) if extent_of(shape) else []:
            dims = [source[a] for a in s_axes if source[a] != 1]
            targets = [a for a in t_axes if shape[a] != 1]
            if len(targets) != 1 or len(dims) < 2:
                leaves += [(stage.op.axis[a], shape[a]) for a in t_axes]
                continue
            merged = True
            leaves += [(stage.op.axis[a], 1) for a in t_axes if a < targets[0]]
            rest = stage.op.axis[targets[0]]
            for k in range(len(dims) - 1):
                outer, rest = stage.split(rest, factor=math.prod(dims[k + 1:]))
                leaves.append((outer, dims[k]))
            leaves.append((rest, dims[-1]))
            leaves += [(stage.op.axis[a], 1) for a in t_axes if a > targets[0]]
        if not merged:
            super().schedule(workload, config, sch, outputs, target)
            return
        # size-1 loops go outside, so that the vector runs over the last real input axis
        units = [axis for axis, extent in leaves if extent == 1]
        wide = [(axis, extent) for axis, extent in leaves if extent != 1]
        if units:
            stage.reorder(*units, *(axis for axis, _ in wide))
        axes = units + [axis for axis, _ in wide]
        lanes = max(1, min(config["lanes"], wide[-1][1]))
        if lanes > 1:
            chunk, vector = stage.split(axes[-1], factor=lanes)
            stage.vectorize(vector)
            axes[-1] = chunk
        outer = stage.fuse(*axes) if len(axes) > 1 else axes[0]
        if config["parallel"]:
            stage.parallel(outer)


@register_schedule("cpu", "transpose")
class TransposeSchedule(InjectiveSchedule):
    """A transpose that moves the input's innermost axis away from the output's innermost
    one reads each output vector with a gather of stride `row` (the input's row length).
    Walking a whole output row gathers from as many input rows, so with long rows every
    vector misses the cache and the TLB. Tiling keeps `tile` output rows (the input's
    contiguous axis) by one vector of columns together: the `tile` gathers of a tile touch
    the same `lanes` input cache lines (`tile` floats each), read once from memory.

    Knob `tile`: the rows of a tile (0: the plain injective schedule). The default tiles
    when the input's innermost axis moves, with one cache line of the input per row."""

    def space(self, workload: Workload, target: Target) -> ConfigSpace:
        space = super().space(workload, target)
        moves = _moved_axes(workload) is not None
        line = max(1, 64 // ITEMSIZE.get(workload.input_types[0].dtype, 4))
        space.define_knob("tile", [0, 4, 8, 16, 32, 64])
        space.set_default("tile", line if moves and line in (4, 8, 16, 32, 64) else 0)
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        moved = _moved_axes(workload)
        (output,) = outputs
        lanes = config["lanes"]
        if not config["tile"] or moved is None or lanes <= 1:
            super().schedule(workload, config, sch, outputs, target)
            return
        row_axis, column_axis = moved
        stage = sch[output]
        axes = list(stage.op.axis)
        row_outer, row_inner = stage.split(axes[row_axis], factor=config["tile"])
        column_outer, column_inner = stage.split(axes[column_axis], factor=lanes)
        others = [axis for k, axis in enumerate(axes) if k not in (row_axis, column_axis)]
        stage.reorder(*others, row_outer, column_outer, row_inner, column_inner)
        stage.vectorize(column_inner)
        outer = stage.fuse(*others, row_outer, column_outer)
        if config["parallel"]:
            stage.parallel(outer)


def _moved_axes(workload: Workload) -> tuple[int, int] | None:
    """(the output axis that walks the input's innermost axis, the output's innermost axis),
    size-1 axes not counted; None when they are the same axis (a contiguous copy)."""
    perm = tuple(workload.attrs.perm)
    source = workload.input_types[0].shape
    shape = workload.output_types[0].shape
    wide_in = [k for k, d in enumerate(source) if d != 1]
    wide_out = [k for k, d in enumerate(shape) if d != 1]
    if not wide_in or not wide_out:
        return None
    row_axis, column_axis = perm.index(wide_in[-1]), wide_out[-1]
    return None if row_axis == column_axis else (row_axis, column_axis)

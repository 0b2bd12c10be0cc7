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

Knobs (`InjectiveSchedule.space`): `vector_axes` (0 = decide from the reads), `lanes` and
`parallel`.

[Note: fused vector axes] Fusing k trailing axes leaves `(f // c) * c + f % c`-shaped indices
that the loop-IR simplifier must merge back into `f` for the vectorizer to see a contiguous
ramp. It merges nested chains too (`(f // 63) * 63 + (f // 9) % 7 * 9 + f % 9` -> `f`), so
three fused axes vectorize; `MAX_VECTOR_AXES` caps the vector loop at three axes, enough for
every layout ember's ops produce, and keeps the per-element index arithmetic of the fallback
path small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ember.compiler.ops.compute.injective import reshape_groups
from ember.compiler.ops.cpu.hardware import cpu_facts
from ember.compiler.ops.registry import Workload, register_schedule
from ember.compiler.space import Config, ConfigSpace
from ember.ir import te
from ember.ir.expr import Var
from ember.ir.ops import Pattern
from ember.ir.schedule import Schedule, Stage, is_reduction
from ember.ir.te import ComputeOp, IterVar, TensorRead
from ember.ir.visitor import collect
from ember.target import Target

#: Outputs with fewer elements run on one thread: a parallel launch costs a few microseconds.
PARALLEL_MIN_ELEMENTS = 16 * 1024
#: How many trailing axes may be fused into the vectorized loop (see [Note: fused vector axes]).
MAX_VECTOR_AXES = 3

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
                         lanes: int, vector_axes: int = 0) -> tuple[IterVar | None, IterVar | None]:
    """Fuse the trailing `vector_axes` of `axes` (0: as many as `aligned_axes` allows), split
    them by `lanes` and vectorize the inner part; size-1 axes move outside first, so that an
    (N, C, 1, 1) output vectorizes over C. Returns (the loop over everything outside the
    vector, fused into one; the vectorized loop), either None when it has no loop."""
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
        outer.append(chunk)
    else:
        outer.append(inner)
    return (stage.fuse(*outer) if len(outer) > 1 else outer[0]), vector


def schedule_injective(sch: Schedule, output: te.Tensor, target: Target, lanes: int,
                       vector_axes: int = 0, parallel: bool | None = None) -> None:
    """The default CPU schedule of one injective output (see the module docstring)."""
    stage = sch[output]
    shape = output.static_shape
    outer, _ = schedule_vector_loop(stage, stage.op.axis, shape, lanes, vector_axes)
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
        return space

    def schedule(self, workload: Workload, config: Config, sch: Schedule,
                 outputs: Sequence[te.Tensor], target: Target) -> None:
        inline_injective_stages(sch, outputs)
        scheduled: set[int] = set()
        for output in outputs:
            if id(output.op) not in scheduled:  # the outputs of one op share its loops
                scheduled.add(id(output.op))
                schedule_injective(sch, output, target, config["lanes"], config["vector_axes"],
                                   config["parallel"])


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

"""Schedules: how the tensor expressions of `ember.ir.te` are computed (loop order, tiling,
where intermediate results live), without changing what they compute.

    s = create_schedule(C)
    i, j = s[C].op.axis
    io, ii = s[C].split(i, factor=4)
    s[C].reorder(io, j, ii)
    s[C].vectorize(ii)
    func = ember.ir.lower.lower(s, [A, B, C], "matmul")

A `Schedule` holds one `Stage` per operation, in topological order (placeholders included, as
stages without loops). A stage starts with one loop per compute axis then reduction axis;
`split`, `fuse` and `reorder` rewrite that loop list (`leaf_axes`), recording `Split`/`Fuse`
relations from which lowering recovers the compute axes. `compute_at`, `compute_inline` and
`compute_root` decide where a stage's loops are emitted; `cache_read`/`cache_write` rewrite the
dataflow (new stages that copy through a storage scope). Annotations (`vectorize`, `unroll`,
`parallel`, `bind`, `pragma`, `tensorize`) mark single loops. Every misuse raises
`ScheduleError` naming the stage and the axis.

Axes are `te.IterVar`s identified by object identity (two stages may both have an axis "i").
Axes created by split/fuse have no domain (`dom is None`): their extents come from bound
inference at lowering time.
"""

from __future__ import annotations

import dataclasses
import enum
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from ember.errors import ScheduleError
from ember.ir.expr import INDEX, Expr, Var, const
from ember.ir.loop import ForKind, Stmt
from ember.ir.te import (
    ComputeOp,
    IterKind,
    IterVar,
    Operation,
    PlaceholderOp,
    Range,
    Reduce,
    Tensor,
    TensorRead,
)
from ember.ir.visitor import transform

#: Thread tags `bind` accepts: GPU grid and block axes, and virtual threads (VTA, CUDA).
THREAD_TAGS = frozenset({
    "blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z",
    "vthread", "vthread.x", "vthread.y", "vthread.z", "cthread",
})


class AttachKind(enum.Enum):
    ROOT = "root"  # its own loop nest at function level
    INLINE = "inline"  # substituted into its consumers, no loops
    SCOPE = "scope"  # emitted inside a loop of another stage (compute_at)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """`parent` = `outer` * factor + `inner`; exactly one of factor / nparts is given."""

    parent: IterVar
    outer: IterVar
    inner: IterVar
    factor: int | None
    nparts: int | None


@dataclasses.dataclass(frozen=True, eq=False)
class Fuse:
    """`fused` runs over `outer` x `inner`: outer = fused // |inner|, inner = fused % |inner|."""

    outer: IterVar
    inner: IterVar
    fused: IterVar


@dataclasses.dataclass
class LoopAnnotation:
    """What a schedule says about one loop: its kind, GPU thread tag, pragmas, intrinsic."""

    kind: ForKind = ForKind.SERIAL
    thread_tag: str = ""
    pragmas: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    intrinsic: TensorIntrinsic | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class BufferRegion:
    """The part of a buffer a tensorized loop nest touches: `begin` (one index per buffer
    dimension, in the buffer's own coordinates) and constant `extents`."""

    buffer: Any  # ember.ir.loop.Buffer
    begin: tuple[Expr, ...]
    extents: tuple[int, ...]

    def address(self) -> Expr:
        """The address of the region's first element, for an intrinsic call's arguments:
        `address_of(buffer[begin])` (flattening rewrites the index like any other load)."""
        from ember.ir.expr import Call
        from ember.ir.loop import Load

        return Call("address_of", (Load(self.buffer, self.begin),), "handle")

    def load(self, *offsets: Any) -> Expr:
        """The element at `begin + offsets`."""
        from ember.ir.loop import Load

        return Load(self.buffer, tuple(b + const(o) for b, o in zip(self.begin, offsets)))


#: emit(inputs, outputs) -> the statement (or expression, wrapped in Evaluate) that replaces
#: the tensorized loop nest; inputs in the order the intrinsic's compute reads its tensors.
EmitFn = Callable[[list[BufferRegion], list[BufferRegion]], "Stmt | Expr"]


@dataclasses.dataclass(frozen=True, eq=False)
class TensorIntrinsic:
    """A hardware instruction (or library call) that computes a small fixed-shape tensor.

    `output` is a te compute over placeholders describing what the instruction computes; a
    tensorized loop nest must compute the same expression over regions of the same shapes.
    `emit` builds the replacement; for a reduction whose reduce loops are partly outside the
    tensorized nest, `emit_update` builds the accumulate-only form (the initialization is then
    lowered as ordinary loops).
    """

    name: str
    output: Tensor
    emit: EmitFn | None
    emit_update: EmitFn | None = None

    @property
    def inputs(self) -> list[Tensor]:
        return self.output.op.input_tensors


def decl_tensor_intrin(output: Tensor, emit: EmitFn | None, name: str | None = None,
                       emit_update: EmitFn | None = None) -> TensorIntrinsic:
    """Declare a tensor intrinsic (see `TensorIntrinsic`)."""
    if not isinstance(output.op, ComputeOp):
        raise TypeError("a tensor intrinsic is described by a te.compute, not a placeholder")
    return TensorIntrinsic(name or output.op.name, output, emit, emit_update)


# ----------------------------------------------------------------------------- stages


def _names(axes: Sequence[IterVar]) -> str:
    return ", ".join(iv.name for iv in axes) or "none"


def _position(axes: Sequence[IterVar], axis: IterVar) -> int:
    for k, iv in enumerate(axes):
        if iv is axis:
            return k
    return -1


class Stage:
    """The schedule of one operation. Build through `Schedule[tensor]`."""

    def __init__(self, op: Operation, schedule: Schedule):
        self.op = op
        self.origin_op = op
        self.schedule = schedule
        self.scope = "global"
        self.attach = AttachKind.ROOT
        self.attach_stage: Stage | None = None
        self.attach_axis: IterVar | None = None
        self.relations: list[Split | Fuse] = []
        self.annotations: dict[int, LoopAnnotation] = {}
        self._reset_axes()

    def _reset_axes(self) -> None:
        if isinstance(self.op, ComputeOp):
            roots = [*self.op.axis, *self.op.reduce_axis]
        else:
            roots = []
        self.all_axes: list[IterVar] = list(roots)
        self.leaf_axes: list[IterVar] = list(roots)
        self.relations = []
        self.annotations = {}

    @property
    def name(self) -> str:
        return self.origin_op.name

    @property
    def is_placeholder(self) -> bool:
        return isinstance(self.op, PlaceholderOp)

    @property
    def root_axes(self) -> list[IterVar]:
        return [*self.op.axis, *self.op.reduce_axis] if isinstance(self.op, ComputeOp) else []

    def __repr__(self) -> str:
        return f"Stage({self.name}, loops=[{_names(self.leaf_axes)}])"

    # -- checks

    def _fail(self, message: str) -> ScheduleError:
        return ScheduleError(f"stage {self.name!r}: {message}")

    def _require_compute(self, primitive: str) -> None:
        if self.is_placeholder:
            raise self._fail(f"{primitive}: a placeholder (an input) has no loops to schedule")

    def _require_leaf(self, axis: Any, primitive: str) -> int:
        self._require_compute(primitive)
        if not isinstance(axis, IterVar):
            raise self._fail(f"{primitive}: expected an axis (IterVar), got {axis!r}")
        pos = _position(self.leaf_axes, axis)
        if pos >= 0:
            return pos
        if _position(self.all_axes, axis) >= 0:
            raise self._fail(f"{primitive}: axis {axis.name!r} is no longer a loop of this stage "
                             f"(it was split or fused); its loops are: {_names(self.leaf_axes)}")
        raise self._fail(f"{primitive}: axis {axis.name!r} does not belong to this stage (it is "
                         f"another stage's axis); its loops are: {_names(self.leaf_axes)}")

    def _annotation(self, axis: IterVar) -> LoopAnnotation:
        return self.annotations.setdefault(id(axis), LoopAnnotation())

    def annotation(self, axis: IterVar) -> LoopAnnotation:
        """The annotation of `axis` (a default one when it has none)."""
        return self.annotations.get(id(axis), LoopAnnotation())

    # -- loop structure

    def split(self, axis: IterVar, factor: int | None = None,
              nparts: int | None = None) -> tuple[IterVar, IterVar]:
        """Split `axis` into (outer, inner): inner runs `factor` times, or outer `nparts`
        times. A factor that does not divide the extent leaves a guarded tail."""
        pos = self._require_leaf(axis, "split")
        if (factor is None) == (nparts is None):
            raise self._fail(f"split of axis {axis.name!r}: give exactly one of factor and "
                             f"nparts (got factor={factor}, nparts={nparts})")
        amount, what = (factor, "factor") if factor is not None else (nparts, "nparts")
        if isinstance(amount, Expr):
            amount = getattr(amount, "value", amount)
        if isinstance(amount, numbers.Integral) and not isinstance(amount, bool):
            amount = int(amount)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise self._fail(f"split of axis {axis.name!r}: {what} must be a positive integer, "
                             f"got {amount!r}")
        outer = IterVar(Var(f"{axis.name}.outer", INDEX), None, axis.kind)  # type: ignore[arg-type]
        inner = IterVar(Var(f"{axis.name}.inner", INDEX), None, axis.kind)  # type: ignore[arg-type]
        split = Split(axis, outer, inner, amount if factor is not None else None,
                      amount if nparts is not None else None)
        self.relations.append(split)
        self.all_axes += [outer, inner]
        self.leaf_axes[pos:pos + 1] = [outer, inner]
        return outer, inner

    def tile(self, x: IterVar, y: IterVar, x_factor: int,
             y_factor: int) -> tuple[IterVar, IterVar, IterVar, IterVar]:
        """Split `x` and `y` and order the loops (x.outer, y.outer, x.inner, y.inner)."""
        xo, xi = self.split(x, factor=x_factor)
        yo, yi = self.split(y, factor=y_factor)
        self.reorder(xo, yo, xi, yi)
        return xo, yo, xi, yi

    def fuse(self, *axes: IterVar) -> IterVar:
        """Fuse adjacent loops (outermost first) into one loop over their product."""
        if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
            axes = tuple(axes[0])
        if not axes:
            raise self._fail("fuse: give at least one axis")
        positions = [self._require_leaf(a, "fuse") for a in axes]
        for (a, pa), (b, pb) in zip(zip(axes, positions), zip(axes[1:], positions[1:])):
            if pb != pa + 1:
                raise self._fail(f"fuse: axes {a.name!r} and {b.name!r} are not adjacent loops "
                                 f"in this order (loops: {_names(self.leaf_axes)}); reorder first")
            if a.kind is not b.kind:
                raise self._fail(f"fuse: cannot fuse reduction and data-parallel axes "
                                 f"({a.name!r} and {b.name!r})")
        fused = axes[0]
        for inner in axes[1:]:
            outer = fused
            fused = IterVar(Var(f"{outer.name}.{inner.name}.fused", INDEX), None,  # type: ignore[arg-type]
                            outer.kind)
            self.relations.append(Fuse(outer, inner, fused))
            self.all_axes.append(fused)
            pos = _position(self.leaf_axes, outer)
            self.leaf_axes[pos:pos + 2] = [fused]
        return fused

    def reorder(self, *axes: IterVar) -> None:
        """Put `axes` in this order, in the loop positions they occupy now."""
        if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
            axes = tuple(axes[0])
        positions = [self._require_leaf(a, "reorder") for a in axes]
        if len(set(positions)) != len(positions):
            twice = next(a for k, a in enumerate(axes) if positions.index(positions[k]) != k)
            raise self._fail(f"reorder: axis {twice.name!r} is given twice")
        for pos, axis in zip(sorted(positions), axes):
            self.leaf_axes[pos] = axis

    # -- where the stage is computed

    def compute_at(self, parent: Stage, axis: IterVar) -> None:
        """Compute this stage inside loop `axis` of `parent`, only the part that `parent`'s
        iteration needs (bound inference finds the region)."""
        self._require_compute("compute_at")
        if not isinstance(parent, Stage):
            raise self._fail(f"compute_at: expected a Stage, got {parent!r}")
        if parent is self:
            raise self._fail("compute_at: a stage cannot be computed at itself")
        parent._require_leaf(axis, f"compute_at of stage {self.name!r}")
        if self in self.schedule.output_stages:
            raise self._fail(f"compute_at {parent.name!r} axis {axis.name!r}: an output stage is "
                             f"computed at root")
        if not self.schedule._depends_on(parent, self):
            raise self._fail(f"compute_at {parent.name!r} axis {axis.name!r}: stage "
                             f"{parent.name!r} does not consume this stage's output (directly "
                             f"or through other stages), so it cannot host its computation")
        self.attach = AttachKind.SCOPE
        self.attach_stage, self.attach_axis = parent, axis

    def compute_inline(self) -> None:
        """Substitute this stage's expression into its consumers (no storage, no loops)."""
        self._require_compute("compute_inline")
        if self.op.reduce_axis:
            raise self._fail(f"compute_inline: the stage reduces over axis "
                             f"{self.op.reduce_axis[0].name!r}; only reduction-free stages can "
                             f"be inlined")
        if self in self.schedule.output_stages:
            raise self._fail("compute_inline: an output stage cannot be inlined")
        self.attach = AttachKind.INLINE
        self.attach_stage = self.attach_axis = None

    def compute_root(self) -> None:
        """Compute the whole stage in its own loop nest at function level (the default)."""
        self._require_compute("compute_root")
        self.attach = AttachKind.ROOT
        self.attach_stage = self.attach_axis = None

    def set_scope(self, scope: str) -> None:
        """Store this stage's result in `scope` ("global", "shared", "local", or an
        accelerator's buffer scope)."""
        self._require_compute("set_scope")
        if not isinstance(scope, str) or not scope:
            raise self._fail(f"set_scope: the scope must be a non-empty string, got {scope!r}")
        self.scope = scope

    # -- loop annotations

    def _annotate_kind(self, axis: IterVar, kind: ForKind, primitive: str,
                       allow_reduce: bool) -> None:
        self._require_leaf(axis, primitive)
        if axis.kind is IterKind.REDUCE and not allow_reduce:
            raise self._fail(f"{primitive}: axis {axis.name!r} is a reduction axis; a reduction "
                             f"cannot be {primitive}d (its iterations depend on each other)")
        note = self._annotation(axis)
        if note.thread_tag:
            raise self._fail(f"{primitive}: axis {axis.name!r} is already bound to "
                             f"{note.thread_tag}")
        note.kind = kind

    def vectorize(self, axis: IterVar) -> None:
        """Run loop `axis` as vector instructions (lanes = its extent)."""
        self._annotate_kind(axis, ForKind.VECTORIZED, "vectorize", allow_reduce=False)

    def unroll(self, axis: IterVar) -> None:
        """Unroll loop `axis` completely (reduction axes allowed)."""
        self._annotate_kind(axis, ForKind.UNROLLED, "unroll", allow_reduce=True)

    def parallel(self, axis: IterVar) -> None:
        """Run the iterations of loop `axis` on the CPU thread pool."""
        self._annotate_kind(axis, ForKind.PARALLEL, "parallelize", allow_reduce=False)

    def bind(self, axis: IterVar, thread_tag: str) -> None:
        """Map loop `axis` to a GPU grid/block axis or a virtual thread ("blockIdx.x",
        "threadIdx.y", "vthread", ...)."""
        self._require_leaf(axis, "bind")
        if thread_tag not in THREAD_TAGS:
            raise self._fail(f"bind of axis {axis.name!r}: unknown thread tag {thread_tag!r}; "
                             f"known: {', '.join(sorted(THREAD_TAGS))}")
        if axis.kind is IterKind.REDUCE:
            raise self._fail(f"bind: axis {axis.name!r} is a reduction axis; cross-thread "
                             f"reductions are not supported")
        for other in self.leaf_axes:
            if other is not axis and self.annotation(other).thread_tag == thread_tag:
                raise self._fail(f"bind of axis {axis.name!r}: loop {other.name!r} is already "
                                 f"bound to {thread_tag}")
        note = self._annotation(axis)
        note.kind, note.thread_tag = ForKind.THREAD_BINDING, thread_tag

    def pragma(self, axis: IterVar, name: str, value: Any = None) -> None:
        """Attach pragma `name` (with an optional value) to loop `axis`; lowering wraps the
        loop in `AttrStmt("pragma_<name>", value)`."""
        self._require_leaf(axis, "pragma")
        if not isinstance(name, str) or not name.isidentifier():
            raise self._fail(f"pragma on axis {axis.name!r}: the name must be an identifier, "
                             f"got {name!r}")
        value = const(1) if value is None else value
        if isinstance(value, (bool, int, float)):
            value = const(value)
        self._annotation(axis).pragmas.append((name, value))

    def tensorize(self, axis: IterVar, intrinsic: TensorIntrinsic) -> None:
        """Replace loop `axis` and every loop inside it by `intrinsic` (checked at lowering:
        the nest must compute the intrinsic's expression over regions of its shapes)."""
        self._require_leaf(axis, "tensorize")
        if not isinstance(intrinsic, TensorIntrinsic):
            raise self._fail(f"tensorize of axis {axis.name!r}: expected a TensorIntrinsic "
                             f"(see decl_tensor_intrin), got {intrinsic!r}")
        for other in self.leaf_axes:
            if other is not axis and self.annotation(other).intrinsic is not None:
                raise self._fail(f"tensorize of axis {axis.name!r}: loop {other.name!r} is "
                                 f"already tensorized")
        self._annotation(axis).intrinsic = intrinsic


# ----------------------------------------------------------------------------- schedules


def _replace_reads(op: ComputeOp, mapping: dict[Tensor, Tensor]) -> ComputeOp:
    """`op` reading mapping[t] wherever it read t (the same op when nothing changes). Axes
    and reduction axes are kept as objects, so a stage's loops stay valid."""

    def rewrite(node: Any) -> Any:
        if isinstance(node, TensorRead) and node.tensor in mapping:
            return TensorRead(mapping[node.tensor], node.indices)
        return None

    body = tuple(transform(b, rewrite) for b in op.body)
    if all(new is old for new, old in zip(body, op.body)):
        return op
    return ComputeOp(op.name, op.axis, body, op.tag, op.attrs)


class Schedule:
    """The stages of the operations that compute `outputs`, in topological order."""

    def __init__(self, outputs: Sequence[Operation]):
        self.outputs: list[Operation] = list(outputs)
        self.stages: list[Stage] = []
        self._by_op: dict[Operation, Stage] = {}
        for op in _topological_ops(self.outputs):
            stage = Stage(op, self)
            self.stages.append(stage)
            self._by_op[op] = stage

    @property
    def output_stages(self) -> list[Stage]:
        return [self._by_op[op] for op in self.outputs]

    def __getitem__(self, key: Tensor | Operation | Stage) -> Stage:
        if isinstance(key, Stage):
            return key
        op = key.op if isinstance(key, Tensor) else key
        stage = self._by_op.get(op)
        if stage is None:
            raise ScheduleError(f"{getattr(op, 'name', op)!r} is not computed by this schedule "
                                f"(its stages: {', '.join(s.name for s in self.stages)})")
        return stage

    def stage_of(self, op: Operation) -> Stage:
        return self[op]

    def current_tensor(self, tensor: Tensor) -> Tensor:
        """The tensor that now holds `tensor`'s values (cache_write/cache_read replace ops)."""
        return self[tensor].op.output(tensor.value_index)

    def _depends_on(self, consumer: Stage, producer: Stage) -> bool:
        """Whether `consumer` reads `producer`'s outputs, directly or through other stages."""
        seen: set[int] = set()
        stack = [consumer.op]
        while stack:
            op = stack.pop()
            for t in op.input_tensors:
                if t.op is producer.op:
                    return True
                if id(t.op) not in seen:
                    seen.add(id(t.op))
                    stack.append(t.op)
        return False

    def _register(self, stage: Stage, op: Operation) -> None:
        stage.op = op
        self._by_op[op] = stage

    def _replace_dataflow(self, mapping: dict[Tensor, Tensor], skip: Sequence[Stage] = ()) -> None:
        """Make every stage (except `skip`) read mapping[t] instead of t; stages whose op
        changes forward their own outputs to their consumers."""
        for stage in self.stages:
            if any(stage is s for s in skip) or not isinstance(stage.op, ComputeOp):
                continue
            new = _replace_reads(stage.op, mapping)
            if new is not stage.op:
                for old_t, new_t in zip(stage.op.outputs, new.outputs):
                    mapping[old_t] = new_t
                self.outputs = [new if op is stage.op else op for op in self.outputs]
                self._register(stage, new)

    def cache_read(self, tensor: Tensor, scope: str,
                   readers: Sequence[Tensor | Operation | Stage]) -> Tensor:
        """A copy of `tensor` in `scope`, read by `readers` instead of `tensor`. The copy is a
        new stage (named "<tensor>.<scope>", axes ax0, ax1, ...) to compute_at where needed."""
        producer = self[tensor]
        tensor = self.current_tensor(tensor)
        if not isinstance(readers, (list, tuple)):
            readers = [readers]
        reader_stages = [self[r] for r in readers]
        for stage in reader_stages:
            if not any(t is tensor for t in stage.op.input_tensors):
                raise ScheduleError(f"cache_read of {tensor.name!r}: stage {stage.name!r} does "
                                    f"not read it")
        axis = [IterVar(Var(f"ax{k}", INDEX), Range(const(0), d)) for k, d in
                enumerate(tensor.shape)]
        body = TensorRead(tensor, tuple(iv.var for iv in axis))
        cache_op = ComputeOp(f"{tensor.name}.{scope}", axis, [body], tag="cache_read")
        cache = Stage(cache_op, self)
        cache.scope = scope
        self._by_op[cache_op] = cache
        self.stages.insert(self.stages.index(producer) + 1, cache)

        mapping = {tensor: cache_op.output(0)}
        for stage in reader_stages:
            new = _replace_reads(stage.op, mapping)
            self.outputs = [new if op is stage.op else op for op in self.outputs]
            forwarded = dict(zip(stage.op.outputs, new.outputs))
            self._register(stage, new)
            self._replace_dataflow(forwarded, skip=[cache])
        return cache_op.output(0)

    def cache_write(self, tensor: Tensor | Sequence[Tensor], scope: str) -> Any:
        """Compute `tensor`'s stage into a cache in `scope` and copy the cache out.

        The cache is a new stage ("<name>.<scope>") holding the original computation (with
        the original reduction axes); the original stage becomes the copy, keeping its axes,
        so `s[C].op.axis` still names its loops. Returns the cache tensor (a tuple for a
        multi-output stage). Call it before splitting or reordering the stage.
        """
        tensors = list(tensor) if isinstance(tensor, (list, tuple)) else [tensor]
        stage = self[tensors[0]]
        if stage.is_placeholder:
            raise ScheduleError(f"cache_write of {stage.name!r}: a placeholder is not computed")
        reordered = any(a is not b for a, b in zip(stage.leaf_axes, stage.root_axes))
        if stage.relations or reordered:
            raise ScheduleError(f"stage {stage.name!r}: cache_write must come before split, "
                                f"fuse or reorder of the stage")
        op = stage.op
        assert isinstance(op, ComputeOp)
        if len(tensors) not in (1, len(op.outputs)):
            raise ScheduleError(f"cache_write of stage {stage.name!r}: give one tensor or all "
                                f"{len(op.outputs)} outputs")
        # The cache gets fresh data axes of the same names (so the body needs no rewriting:
        # variables compare by name) and keeps the reduction axes' objects.
        cache_axis = [IterVar(Var(iv.name, INDEX), iv.dom, iv.kind) for iv in op.axis]
        cache_op = ComputeOp(f"{op.name}.{scope}", cache_axis, op.body, op.tag, op.attrs)
        copy_body = [TensorRead(cache_op.output(k), tuple(iv.var for iv in op.axis))
                     for k in range(len(op.outputs))]
        copy_op = ComputeOp(op.name, op.axis, copy_body, op.tag, op.attrs)

        cache = Stage(cache_op, self)
        cache.scope = scope
        self._by_op[cache_op] = cache
        self.stages.insert(self.stages.index(stage), cache)
        self.outputs = [copy_op if o is op else o for o in self.outputs]
        forwarded = dict(zip(op.outputs, copy_op.outputs))
        self._register(stage, copy_op)
        stage._reset_axes()
        self._replace_dataflow(forwarded, skip=[stage, cache])
        outs = cache_op.outputs
        return outs[0] if len(outs) == 1 else outs


def _topological_ops(outputs: Sequence[Operation]) -> list[Operation]:
    order: list[Operation] = []
    visited: set[int] = set()

    def visit(op: Operation) -> None:
        if id(op) in visited:
            return
        visited.add(id(op))
        for t in op.input_tensors:
            visit(t.op)
        order.append(op)

    for op in outputs:
        visit(op)
    return order


def create_schedule(outputs: Tensor | Operation | Sequence[Tensor | Operation]) -> Schedule:
    """A schedule computing `outputs` (a tensor, an operation, or a list of them), every stage
    at root with its natural loop order."""
    items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    ops: list[Operation] = []
    for item in items:
        op = item.op if isinstance(item, Tensor) else item
        if not isinstance(op, (ComputeOp, PlaceholderOp)):
            raise TypeError(f"create_schedule takes tensors or operations, got {item!r}")
        if all(op is not o for o in ops):
            ops.append(op)
    return Schedule(ops)


def is_reduction(op: Operation) -> bool:
    return isinstance(op, ComputeOp) and any(isinstance(b, Reduce) for b in op.body)

"""Lowering: a schedule of tensor expressions -> one loop-IR PrimFunc in the "lowered" form.

    func = lower(s, [A, B, C], "matmul")

The lowered form (what `ember.ir.passes` consumes): loads and stores index buffers with one
index per dimension; loops carry the kinds the schedule gave them (vectorized, unrolled,
parallel, bound to a thread tag); each intermediate stage's storage is an `Allocate` at its
attach point (function level for root stages) in the stage's scope; non-divisible splits keep a
guarded tail (`IfThenElse`, only where a bound cannot be proven); pragmas become
`AttrStmt("pragma_<name>")` around their loop; tensorized loop nests become what the intrinsic
emits (an `Evaluate` of its call). Parameters are the `args` buffers in the caller's order.

How it works, stage by stage (consumers before producers, so each stage sees what its
consumers need):
1. Inlined stages are substituted into their consumers' bodies.
2. Bound inference: a root stage computes its whole domain; a stage attached with compute_at
   computes the region its consumers read while the loops enclosing the attach point stay
   fixed and every other loop runs over its range (`ember.ir.bound`). Its buffer is that region.
3. Loop extents follow from the region through the stage's splits and fuses; every loop gets a
   variable name unique in the function ("i", "i.outer", "i_1", "j.init", ...), and the compute
   axes are recovered from the loops (split: outer * factor + inner; fuse: div and mod).
4. The loop nest is built innermost-first: guards at the shallowest loop that binds their
   variables, attached stages at the start of their loop's body, a reduction's initialization
   just before its outermost reduction loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ember.errors import ScheduleError
from ember.ir import expr as E
from ember.ir.bound import (
    bound_of,
    const_int,
    constant_upper_bound,
    is_index,
    prove_less_equal,
    simplify_index,
)
from ember.ir.expr import Expr, Var
from ember.ir.loop import (
    Allocate,
    AttrStmt,
    Buffer,
    Evaluate,
    For,
    IfThenElse,
    LetStmt,
    Load,
    PrimFunc,
    Stmt,
    Store,
    seq,
)
from ember.ir.schedule import (
    AttachKind,
    BufferRegion,
    Schedule,
    Split,
    Stage,
    TensorIntrinsic,
)
from ember.ir.te import ComputeOp, IterKind, IterVar, PlaceholderOp, Reduce, Tensor, TensorRead
from ember.ir.visitor import collect, substitute, transform


@dataclasses.dataclass(eq=False)
class _Plan:
    """Everything lowering decides about one non-inlined compute stage."""

    stage: Stage
    op: ComputeOp
    bodies: tuple[Expr, ...]  # with inlined producers substituted
    reads: list[TensorRead]
    leaves: list[IterVar]
    path: list[Var] = dataclasses.field(default_factory=list)  # loops enclosing the nest
    loop_var: dict[int, Var] = dataclasses.field(default_factory=dict)  # id(leaf) -> var
    extent: dict[int, Expr] = dataclasses.field(default_factory=dict)  # id(axis) -> extent
    root_value: dict[Var, Expr] = dataclasses.field(default_factory=dict)  # axis var -> index
    conditions: list[Expr] = dataclasses.field(default_factory=list)
    buffers: list[Buffer] = dataclasses.field(default_factory=list)
    offsets: list[Expr] = dataclasses.field(default_factory=list)  # region min per dimension
    allocations: list[Buffer] = dataclasses.field(default_factory=list)  # not function params
    children: dict[int, list[_Plan]] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name

    def leaf_vars(self) -> list[Var]:
        return [self.loop_var[id(iv)] for iv in self.leaves]


def _full_dim(iv: IterVar) -> tuple[Expr, Expr]:
    return iv.dom.min, iv.dom.extent


def _relaxed_by_scope(scope: str, thread_tag: str) -> bool:
    """Whether a buffer in `scope` is shared across the loops bound to `thread_tag`, so its
    region must cover all of them: global memory across every thread, shared memory across
    the threads (and virtual threads) of a block, local memory across none."""
    if not thread_tag:
        return False
    if scope == "global":
        return True
    if scope == "shared":
        return thread_tag.startswith(("threadIdx", "vthread", "cthread"))
    return False


def _guard(conditions: Sequence[Expr], body: Stmt) -> Stmt:
    if not conditions:
        return body
    condition = conditions[0]
    for c in conditions[1:]:
        condition = E.logical_and(condition, c)
    return IfThenElse(condition, body)


class _Lowering:
    def __init__(self, schedule: Schedule, args: Sequence[Tensor]):
        self.schedule = schedule
        self.used_names: set[str] = set()
        self.buffer_names: set[str] = set()
        self.extent_of: dict[Var, Expr] = {}  # every loop variable -> its extent
        self.tag_of: dict[Var, str] = {}
        self.plans: dict[Stage, _Plan] = {}
        self.arg_buffers: dict[Tensor, Buffer] = {}
        self.params: list[Buffer] = []
        for t in args:
            if not isinstance(t, Tensor):
                raise TypeError(f"lower: args must be tensors, got {t!r}")
            current = schedule.current_tensor(t)
            if current in self.arg_buffers:
                raise ScheduleError(f"lower: tensor {t.name!r} is given twice in args")
            shape = tuple(const_int(d) if const_int(d) is not None else d for d in t.shape)
            buffer = Buffer(self._buffer_name(t.name), shape, t.dtype)
            self.arg_buffers[current] = buffer
            self.params.append(buffer)

    # -- names

    def _fresh(self, name: str) -> Var:
        candidate, k = name, 0
        while candidate in self.used_names:
            k += 1
            candidate = f"{name}_{k}"
        self.used_names.add(candidate)
        return Var(candidate, E.INDEX)

    def _buffer_name(self, name: str) -> str:
        candidate, k = name, 0
        while candidate in self.buffer_names:
            k += 1
            candidate = f"{name}_{k}"
        self.buffer_names.add(candidate)
        return candidate

    # -- the driver

    def run(self, name: str) -> PrimFunc:
        stages = self.schedule.stages
        self._check(stages)
        bodies = self._inline(stages)
        order = [s for s in stages if not s.is_placeholder and s.attach is not AttachKind.INLINE]
        for stage in order:
            op = stage.op
            tops = [isinstance(b, Reduce) for b in bodies[stage]]
            nested = [r for b in bodies[stage] if not isinstance(b, Reduce)
                      for r in collect(b, Reduce)]
            if nested or (any(tops) and not all(tops)):
                raise ScheduleError(f"stage {stage.name!r}: a reduction must be the whole body "
                                    f"of a compute (of every output); compute the reduction in "
                                    f"its own stage and use it in a second one")
            reads = [r for b in bodies[stage] for r in collect(b, TensorRead)]
            self.plans[stage] = _Plan(stage, op, bodies[stage], reads, list(stage.leaf_axes))
        self.consumers: dict[Stage, list[tuple[_Plan, TensorRead]]] = {s: [] for s in stages}
        for plan in self.plans.values():
            for read in plan.reads:
                self.consumers[self.schedule[read.tensor.op]].append((plan, read))
        for stage in reversed(order):
            self._infer(self.plans[stage])
        # Regions found through data-dependent indices (a gather) hold te reads: make them
        # loads now that every stage has its buffer.
        for plan in self.plans.values():
            plan.offsets = [self._materialize(o) for o in plan.offsets]
            plan.root_value = {v: self._materialize(e) for v, e in plan.root_value.items()}
            plan.conditions = [self._materialize(c) for c in plan.conditions]
        roots: list[_Plan] = []
        for stage in order:
            plan = self.plans[stage]
            if stage.attach is AttachKind.SCOPE:
                parent = self.plans[stage.attach_stage]
                pos = next(k for k, iv in enumerate(parent.leaves) if iv is stage.attach_axis)
                parent.children.setdefault(pos, []).append(plan)
            else:
                roots.append(plan)
        body = self._with_children(roots, None)
        return PrimFunc(name, tuple(self.params), body)

    def _check(self, stages: list[Stage]) -> None:
        for stage in self.schedule.output_stages:
            if stage.op.output(0) not in self.arg_buffers:
                raise ScheduleError(f"lower: output stage {stage.name!r} is not in args; pass "
                                    f"every output tensor (and every input placeholder)")
        for stage in stages:
            tensors_in_args = [t for t in stage.op.outputs if t in self.arg_buffers]
            if stage.is_placeholder:
                continue
            if tensors_in_args and stage.attach is not AttachKind.ROOT:
                raise ScheduleError(f"stage {stage.name!r} is a function argument, so it must "
                                    f"be computed at root (it is {stage.attach.value})")
            if stage.attach is AttachKind.SCOPE:
                parent, axis = stage.attach_stage, stage.attach_axis
                if parent.attach is AttachKind.INLINE:
                    raise ScheduleError(f"stage {stage.name!r} is computed at stage "
                                        f"{parent.name!r}, which is inlined and has no loops")
                if all(iv is not axis for iv in parent.leaf_axes):
                    raise ScheduleError(
                        f"stage {stage.name!r} is computed at axis {axis.name!r} of stage "
                        f"{parent.name!r}, which is no longer one of its loops (it was split or "
                        f"fused); loops: {', '.join(iv.name for iv in parent.leaf_axes)}")
            for t in stage.op.input_tensors:
                producer = self.schedule[t.op]
                if producer.is_placeholder and t not in self.arg_buffers:
                    raise ScheduleError(f"lower: stage {stage.name!r} reads placeholder "
                                        f"{t.name!r}, which is not in args")

    def _inline(self, stages: list[Stage]) -> dict[Stage, tuple[Expr, ...]]:
        """Each compute stage's bodies with inlined producers substituted (transitively)."""
        bodies: dict[Stage, tuple[Expr, ...]] = {}

        def rewrite(node: Any) -> Any:
            if not isinstance(node, TensorRead):
                return None
            producer = self.schedule[node.tensor.op]
            if producer.attach is not AttachKind.INLINE:
                return None
            source = bodies[producer][node.tensor.value_index]
            mapping = {iv.var: i for iv, i in zip(producer.op.axis, node.indices)}
            return substitute(source, mapping)

        for stage in stages:
            if not stage.is_placeholder:
                bodies[stage] = tuple(transform(b, rewrite) for b in stage.op.body)
        return bodies

    # -- bound inference

    def _relax_all(self, v: Var) -> tuple[Expr, Expr] | None:
        extent = self.extent_of.get(v)
        return None if extent is None else (E.const(0), simplify_index(extent - 1))

    def _infer(self, plan: _Plan) -> None:
        stage, op = plan.stage, plan.op
        if stage.attach is AttachKind.SCOPE:
            parent = self.plans[stage.attach_stage]
            pos = next(k for k, iv in enumerate(parent.leaves) if iv is stage.attach_axis)
            plan.path = parent.path + parent.leaf_vars()[:pos + 1]
            region = self._region_from_consumers(plan)
        else:
            region = [_full_dim(iv) for iv in op.axis]
        region += [_full_dim(iv) for iv in op.reduce_axis]
        roots = [*op.axis, *op.reduce_axis]
        for iv, (_, extent) in zip(roots, region):
            plan.extent[id(iv)] = extent
        guarded = self._pass_down(plan)
        for iv in plan.leaves:
            var = self._fresh(iv.name)
            note = stage.annotation(iv)
            plan.loop_var[id(iv)] = var
            self.extent_of[var] = plan.extent[id(iv)]
            self.tag_of[var] = note.thread_tag
        rel = self._pass_up(plan)
        for iv, (lo, _) in zip(roots, region):
            plan.root_value[iv.var] = simplify_index(lo + rel[id(iv)])
        for split in guarded:
            value = rel[id(split.parent)]
            plan.conditions.append(E.LT(value, plan.extent[id(split.parent)]))
        if stage.attach is AttachKind.SCOPE:
            self._domain_guards(plan)
        self._bind_buffers(plan, region[:len(op.axis)])

    def _region_from_consumers(self, plan: _Plan) -> list[tuple[Expr, Expr]]:
        """The region of each data axis that the consumers of `plan` read inside one
        iteration of the loops in `plan.path`."""
        stage = plan.stage
        fixed = {v for v in plan.path if not _relaxed_by_scope(stage.scope, self.tag_of[v])}

        def relax(v: Var) -> tuple[Expr, Expr] | None:
            return None if v in fixed else self._relax_all(v)

        ndim = len(plan.op.axis)
        lows: list[list[Expr]] = [[] for _ in range(ndim)]
        highs: list[list[Expr]] = [[] for _ in range(ndim)]
        unknown = [False] * ndim
        for consumer, read in self.consumers[stage]:
            scope = consumer.path + consumer.leaf_vars()
            if scope[:len(plan.path)] != plan.path:
                raise ScheduleError(
                    f"stage {stage.name!r} is computed at axis {stage.attach_axis.name!r} of "
                    f"stage {stage.attach_stage.name!r}, but stage {consumer.name!r} reads it "
                    f"outside that loop; compute it at a loop enclosing every reader, or at root")
            for d, index in enumerate(read.indices):
                b = bound_of(simplify_index(substitute(index, consumer.root_value)), relax)
                if b is None:
                    unknown[d] = True
                else:
                    lows[d].append(b[0])
                    highs[d].append(b[1])
        region = []
        for d, iv in enumerate(plan.op.axis):
            if unknown[d] or not lows[d]:
                region.append(_full_dim(iv))
                continue
            lo, hi = lows[d][0], highs[d][0]
            for other in lows[d][1:]:
                lo = simplify_index(E.min_(lo, other))
            for other in highs[d][1:]:
                hi = simplify_index(E.max_(hi, other))
            extent = simplify_index(hi - lo + 1)
            if const_int(extent) is None:  # e.g. a window through div/mod or min/max
                bound = constant_upper_bound(extent, self._relax_all)
                extent = E.const(bound) if bound is not None else extent
            dom_extent = const_int(iv.dom.extent)
            if const_int(extent) is None or (dom_extent is not None
                                             and const_int(extent) >= dom_extent):
                region.append(_full_dim(iv))
            else:
                region.append((lo, extent))
        return region

    def _pass_down(self, plan: _Plan) -> list[Split]:
        """Extents of split and fused axes; returns the splits that need a tail guard."""
        guarded = []
        for relation in plan.stage.relations:
            if isinstance(relation, Split):
                parent = plan.extent[id(relation.parent)]
                p = const_int(parent)
                if relation.factor is not None:
                    inner = relation.factor
                    if p is not None and inner >= p:
                        inner, outer = p, 1  # one iteration covers the whole extent: no tail
                    else:
                        outer = simplify_index(E.floordiv(parent + (inner - 1), inner))
                else:
                    outer = relation.nparts
                    inner = simplify_index(E.floordiv(parent + (outer - 1), outer))
                plan.extent[id(relation.outer)] = E.const(outer)
                plan.extent[id(relation.inner)] = E.const(inner)
                covered = simplify_index(E.mul(outer, inner))
                if const_int(covered) is None or p is None or const_int(covered) != p:
                    guarded.append(relation)
            else:
                plan.extent[id(relation.fused)] = simplify_index(
                    plan.extent[id(relation.outer)] * plan.extent[id(relation.inner)])
        return guarded

    def _pass_up(self, plan: _Plan) -> dict[int, Expr]:
        """Each axis's value relative to its range start, in the loop variables."""
        rel: dict[int, Expr] = {k: v for k, v in plan.loop_var.items()}
        for relation in reversed(plan.stage.relations):
            if isinstance(relation, Split):
                inner_extent = plan.extent[id(relation.inner)]
                rel[id(relation.parent)] = simplify_index(
                    rel[id(relation.outer)] * inner_extent + rel[id(relation.inner)])
            else:
                fused, inner_extent = rel[id(relation.fused)], plan.extent[id(relation.inner)]
                rel[id(relation.outer)] = simplify_index(E.floordiv(fused, inner_extent))
                rel[id(relation.inner)] = simplify_index(E.floormod(fused, inner_extent))
        return rel

    def _domain_guards(self, plan: _Plan) -> None:
        """A compute_at region can stick out of the stage's domain (a consumer's guarded
        tail asks for it): skip those points unless the bound is provable."""
        for iv in plan.op.axis:
            value = plan.root_value[iv.var]
            b = bound_of(value, self._relax_all)
            start = iv.dom.min
            end = simplify_index(iv.dom.min + iv.dom.extent)
            if b is None or not prove_less_equal(start, b[0]):
                plan.conditions.append(E.GE(value, start))
            if b is None or not prove_less_equal(b[1], end - 1):
                plan.conditions.append(E.LT(value, end))

    def _bind_buffers(self, plan: _Plan, region: list[tuple[Expr, Expr]]) -> None:
        stage = plan.stage
        for tensor in plan.op.outputs:
            if tensor in self.arg_buffers:
                plan.buffers.append(self.arg_buffers[tensor])
                continue
            shape = [const_int(extent) for _, extent in region]
            if any(d is None for d in shape):
                raise ScheduleError(f"stage {stage.name!r}: the extent of its region is not a "
                                    f"constant ({[str(e) for _, e in region]})")
            name = self._buffer_name(tensor.name)
            plan.buffers.append(Buffer(name, tuple(shape), tensor.dtype, stage.scope))
            plan.allocations.append(plan.buffers[-1])
        if stage.attach is AttachKind.SCOPE:
            plan.offsets = [lo for lo, _ in region]
        else:
            plan.offsets = [E.const(0)] * len(region)

    # -- expressions

    def _buffer_of(self, tensor: Tensor) -> tuple[Buffer, list[Expr]]:
        if isinstance(tensor.op, PlaceholderOp):
            return self.arg_buffers[tensor], [E.const(0)] * tensor.ndim
        plan = self.plans[self.schedule[tensor.op]]
        return plan.buffers[tensor.value_index], plan.offsets

    def _load(self, read: TensorRead) -> Load:
        """`read` (indices already over loop variables) as a load of its tensor's buffer."""
        buffer, offsets = self._buffer_of(read.tensor)
        return Load(buffer, tuple(simplify_index(i - self._materialize(o))
                                  for i, o in zip(read.indices, offsets)))

    def _materialize(self, e: Expr) -> Expr:
        """`e` with te reads turned into loads."""
        return transform(e, lambda node: self._load(node) if isinstance(node, TensorRead)
                         else None)

    def _lower_expr(self, e: Expr, plan: _Plan) -> Expr:
        """A body expression over the stage's axes -> loads over loop variables."""

        def rewrite(node: Any) -> Any:
            if isinstance(node, Var):
                return plan.root_value.get(node)
            if isinstance(node, TensorRead):
                return self._load(node)
            return None

        return transform(e, rewrite)

    def _store_indices(self, plan: _Plan) -> tuple[Expr, ...]:
        return tuple(simplify_index(plan.root_value[iv.var] - o)
                     for iv, o in zip(plan.op.axis, plan.offsets))

    # -- statements

    def _provide(self, plan: _Plan) -> Stmt:
        """The innermost statement: the stores of a compute, a reduction's update."""
        indices = self._store_indices(plan)
        if not isinstance(plan.bodies[0], Reduce):
            return seq(*(Store(buf, indices, self._lower_expr(b, plan))
                         for buf, b in zip(plan.buffers, plan.bodies)))
        first = plan.bodies[0]
        combiner = first.combiner
        slots = self._reduce_slots(plan)
        sources = [self._lower_expr(s, plan) for s in first.source]
        mapping: dict[Var, Expr] = {}
        for k, buffer in enumerate(slots):
            mapping[combiner.lhs[k]] = Load(buffer, indices)
            mapping[combiner.rhs[k]] = sources[k]
        results = [substitute(r, mapping) for r in combiner.result]
        if len(results) == 1:
            update: Stmt = Store(slots[0], indices, results[0])
        else:  # every slot's new value is computed from the old ones before any store
            temps = [self._fresh(f"{plan.name}.acc{k}") for k in range(len(results))]
            temps = [Var(t.name, r.dtype) for t, r in zip(temps, results)]
            update = seq(*(Store(buf, indices, t) for buf, t in zip(slots, temps)))
            for t, r in reversed(list(zip(temps, results))):
                update = LetStmt(t, r, update)
        if first.condition is not None:
            update = IfThenElse(self._lower_expr(first.condition, plan), update)
        return update

    def _reduce_slots(self, plan: _Plan) -> list[Buffer]:
        """The output buffer holding each value of the (possibly tuple) reducer."""
        first = plan.bodies[0]
        slots: dict[int, Buffer] = {}
        for buffer, body in zip(plan.buffers, plan.bodies):
            if not isinstance(body, Reduce) or body.combiner != first.combiner \
                    or body.source != first.source:
                raise ScheduleError(f"stage {plan.name!r}: every output of a reduction must be "
                                    f"the same reduction (another value of one tuple reducer)")
            slots[body.value_index] = buffer
        if sorted(slots) != list(range(len(first.combiner.result))):
            raise ScheduleError(f"stage {plan.name!r}: a tuple reduction must output each of "
                                f"its {len(first.combiner.result)} values once")
        return [slots[k] for k in range(len(slots))]

    def _init(self, plan: _Plan, level: int, conditions: list[Expr]) -> Stmt:
        """A reduction's initialization, placed before loop `level` (its outermost reduction
        loop): loops over the data axes inside that level, with fresh ".init" variables."""
        first = plan.bodies[0]
        inner = [iv for iv in plan.leaves[level + 1:] if iv.kind is IterKind.DATA_PAR]
        mapping = {plan.loop_var[id(iv)]: self._fresh(f"{plan.loop_var[id(iv)].name}.init")
                   for iv in inner}
        indices = tuple(substitute(i, mapping) for i in self._store_indices(plan))
        slots = self._reduce_slots(plan)
        stmt = seq(*(Store(buf, indices, first.combiner.identity[k])
                     for k, buf in enumerate(slots)))
        reduce_vars = {plan.loop_var[id(iv)] for iv in plan.leaves
                       if iv.kind is IterKind.REDUCE}
        init_vars = list(mapping.values())
        at_level: dict[int, list[Expr]] = {}
        for c in conditions:
            if not any(v in reduce_vars for v in collect(c, Var)):
                c = substitute(c, mapping)
                depth = max((init_vars.index(v) for v in collect(c, Var) if v in init_vars),
                            default=-1)
                at_level.setdefault(depth, []).append(c)
        for k in range(len(inner) - 1, -1, -1):
            iv, var = inner[k], init_vars[k]
            note = plan.stage.annotation(iv)
            self.extent_of[var] = plan.extent[id(iv)]
            stmt = For(var, E.const(0), plan.extent[id(iv)], note.kind,
                       _guard(at_level.get(k, []), stmt), note.thread_tag)
        return _guard(at_level.get(-1, []), stmt)

    def _with_children(self, children: list[_Plan], body: Stmt | None) -> Stmt:
        """The nests of `children` (attached stages) followed by `body`, inside the
        allocations of the children's buffers."""
        stmt = seq(*(self._build(c) for c in children), body)
        for child in reversed(children):
            for buffer in reversed(child.allocations):
                stmt = Allocate(buffer, stmt)
        return stmt

    def _build(self, plan: _Plan) -> Stmt:
        """The loop nest of one stage, with its attached stages inside."""
        leaves, stage = plan.leaves, plan.stage
        leaf_vars = plan.leaf_vars()
        position = {v: k for k, v in enumerate(leaf_vars)}

        def level(condition: Expr) -> int:
            return max((position.get(v, -1) for v in collect(condition, Var)), default=-1)

        at_level: dict[int, list[Expr]] = {}
        for c in plan.conditions:
            at_level.setdefault(level(c), []).append(c)
        reduce_level = next((k for k, iv in enumerate(leaves) if iv.kind is IterKind.REDUCE),
                            None)
        tensorized = next((k for k, iv in enumerate(leaves)
                           if stage.annotation(iv).intrinsic is not None), None)
        if tensorized is None:
            stmt = self._provide(plan)
            top = len(leaves) - 1
        else:
            stmt = self._tensorize(plan, tensorized, reduce_level, at_level)
            top = tensorized - 1
        for k in range(top, -1, -1):
            iv = leaves[k]
            note = stage.annotation(iv)
            body = _guard(at_level.get(k, []), self._with_children(plan.children.get(k, []), stmt))
            stmt = For(leaf_vars[k], E.const(0), plan.extent[id(iv)], note.kind, body,
                       note.thread_tag)
            for name, value in reversed(note.pragmas):
                stmt = AttrStmt(f"pragma_{name}", value, stmt)
            if k == reduce_level and (tensorized is None or tensorized > reduce_level):
                deeper = [c for lv, cs in at_level.items() if lv > k for c in cs]
                stmt = seq(self._init(plan, k, deeper), stmt)
        return _guard(at_level.get(-1, []), stmt)

    # -- tensorize

    def _tensorize(self, plan: _Plan, position: int, reduce_level: int | None,
                   at_level: dict[int, list[Expr]]) -> Stmt:
        """The statement the intrinsic emits for loop `position` and every loop inside it."""
        stage, axis = plan.stage, plan.leaves[position]
        intrinsic: TensorIntrinsic = stage.annotation(axis).intrinsic

        def fail(message: str) -> ScheduleError:
            return ScheduleError(f"stage {stage.name!r}: tensorize of axis {axis.name!r} with "
                                 f"{intrinsic.name!r}: {message}")

        if any(lv >= position for lv in at_level):
            raise fail("the loops it replaces need a tail guard (a split that does not divide "
                       "the extent); choose factors that divide it")
        if any(k >= position for k in plan.children):
            raise fail("another stage is computed inside the loops it replaces")
        inner = set(plan.leaf_vars()[position:])

        def relax(v: Var) -> tuple[Expr, Expr] | None:
            return self._relax_all(v) if v in inner else None

        def region(buffer: Buffer, index_lists: list[tuple[Expr, ...]]) -> BufferRegion:
            begins, extents = [], []
            for d in range(len(buffer.shape)):
                bounds = [bound_of(idx[d], relax) for idx in index_lists]
                if any(b is None for b in bounds):
                    raise fail(f"cannot bound the region of {buffer.name!r} it touches")
                lo = bounds[0][0]
                hi = bounds[0][1]
                for b in bounds[1:]:
                    lo, hi = simplify_index(E.min_(lo, b[0])), simplify_index(E.max_(hi, b[1]))
                extent = const_int(simplify_index(hi - lo + 1))
                if extent is None:
                    raise fail(f"the region of {buffer.name!r} it touches is not of constant "
                               f"size")
                begins.append(lo)
                extents.append(extent)
            return BufferRegion(buffer, tuple(begins), tuple(extents))

        reads: dict[Tensor, list[tuple[Expr, ...]]] = {}
        buffers: dict[Tensor, Buffer] = {}
        for read in plan.reads:
            load = self._lower_expr(read, plan)
            reads.setdefault(read.tensor, []).append(load.indices)
            buffers[read.tensor] = load.buffer
        inputs = [region(buffers[t], idx) for t, idx in reads.items()]
        store = self._store_indices(plan)
        outputs = [region(buf, [store]) for buf in plan.buffers]
        self._match_intrinsic(plan, intrinsic, list(reads), inputs, outputs, fail)
        covers_reduction = reduce_level is None or position <= reduce_level
        emit = intrinsic.emit if covers_reduction else intrinsic.emit_update
        if emit is None:
            raise fail("the reduction loops are not all inside the tensorized loop, and the "
                       "intrinsic has no emit_update for an accumulate-only call")
        result = emit(inputs, outputs)
        return Evaluate(result) if isinstance(result, Expr) else result

    def _match_intrinsic(self, plan: _Plan, intrinsic: TensorIntrinsic, tensors: list[Tensor],
                         inputs: list[BufferRegion], outputs: list[BufferRegion], fail) -> None:
        expected_inputs = intrinsic.inputs
        if len(expected_inputs) != len(inputs) or len(intrinsic.output.op.outputs) != \
                len(outputs):
            raise fail(f"the loops read {len(inputs)} tensors and write {len(outputs)}; the "
                       f"intrinsic reads {len(expected_inputs)} and writes "
                       f"{len(intrinsic.output.op.outputs)}")

        def squeeze(shape: Sequence[Any]) -> tuple[int, ...]:
            return tuple(int(const_int(d)) for d in shape if const_int(d) != 1)

        pairs = list(zip(inputs, expected_inputs)) + list(zip(outputs,
                                                              intrinsic.output.op.outputs))
        for got, want in pairs:
            if squeeze(got.extents) != squeeze(want.shape):
                raise fail(f"it touches a {list(got.extents)} region of {got.buffer.name!r} "
                           f"where the intrinsic's {want.name!r} is "
                           f"{[const_int(d) for d in want.shape]}")
        mine = [_skeleton(b, tensors) for b in plan.bodies]
        theirs = [_skeleton(b, expected_inputs) for b in intrinsic.output.op.body]
        if mine != theirs:
            raise fail("the loops compute a different expression than the intrinsic")


def _skeleton(e: Any, tensors: list[Tensor]) -> Any:
    """The shape of an expression with index arithmetic erased: what tensorize compares."""
    if isinstance(e, TensorRead):
        return ("read", next(k for k, t in enumerate(tensors) if t is e.tensor))
    if isinstance(e, Reduce):
        return ("reduce", e.combiner.name, e.value_index,
                tuple(_skeleton(s, tensors) for s in e.source))
    if isinstance(e, Var) or (isinstance(e, E.Expr) and is_index(e)
                              and not collect(e, TensorRead)):
        return ("index",)
    if isinstance(e, (E.IntImm, E.FloatImm)):
        return (type(e).__name__, e.dtype, e.value)
    if isinstance(e, E.Expr):
        parts = []
        for f in dataclasses.fields(e):
            value = getattr(e, f.name)
            if isinstance(value, tuple):
                parts.append(tuple(_skeleton(v, tensors) for v in value))
            elif isinstance(value, E.Expr):
                parts.append(_skeleton(value, tensors))
            else:
                parts.append(value)
        return (type(e).__name__, *parts)
    return e


def lower(schedule: Schedule, args: Sequence[Tensor], name: str = "main") -> PrimFunc:
    """Lower `schedule` to a PrimFunc named `name` whose parameters are the buffers of `args`
    (placeholder inputs then outputs, in the caller's order), in the lowered form described
    in this module's docstring. Raises ScheduleError for schedules that cannot be lowered."""
    return _Lowering(schedule, args).run(name)

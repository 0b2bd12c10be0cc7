"""Features of a tuning candidate, the cost model's inputs (autotune/cost_model.py).

Two families, as AutoTVM has:

- **knob features** (`knob_features`, `KnobFeaturizer`): each knob's value read off the config
  alone: numbers as themselves and their log2, split tuples as log2 of each factor, small
  choice lists one-hot, every knob also as its position in its list. Computing them costs
  microseconds and a whole batch of config indices is featurized at once with numpy, so
  simulated annealing can score thousands of points per step. They do not transfer between
  tasks whose templates have different knobs.
- **loop features** (`loop_features`): read off the final-form loop IR of the candidate
  (`task.instantiate(config)`): the main loop nest's loops (extent, nesting depth, kind,
  products of the extents above and below), per buffer its accesses (stride in the innermost
  loop, bytes touched by the innermost loops, reuse), and arithmetic counts (float and int
  operations, FMAs, vector lanes, guards), each weighted by how often it runs and log-scaled.
  They describe the program rather than the template, so they transfer between tasks.

Lowering one candidate takes 0.05-1.0 s in ember (measured 2026-11-28, load average 8 on 2
cores, medians of 5 random configs: ResNet-50 3x3 conv2d_nchwc 0.28 s, GPT-2 MLP dense 0.08 s,
depthwise 112x112 conv 0.39 s; the loop walk itself 3-23 ms), against about 1 us per config for
knob features: five orders of magnitude. So the tuner's annealing scores on knob features, and
loop features are computed only where a kernel is lowered anyway (`config_features`, cached
per task key and config index).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ember.compiler.space import Config, ConfigSpace
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.expr import element_of, is_float_dtype, lanes_of
from ember.ir.passes.arith import linear_form
from ember.ir.visitor import children

#: loops of the main nest described one by one (outermost first); the rest only in sums
TOP_LOOPS = 8
#: parameter buffers described one by one (inputs then outputs); locals are pooled
TOP_BUFFERS = 4
#: knobs with at most this many values are also one-hot encoded
ONE_HOT_LIMIT = 8

_KINDS = (L.ForKind.SERIAL, L.ForKind.PARALLEL, L.ForKind.VECTORIZED, L.ForKind.UNROLLED)


class TaskLike(Protocol):
    """What features need of an autotune Task (autotune/task.py)."""

    @property
    def key(self) -> str: ...

    def space(self) -> ConfigSpace: ...

    def instantiate(self, config: Config) -> L.PrimFunc: ...


def _log2(x: float) -> float:
    """log2(1 + |x|) with the sign of x: finite for every input, 0 at 0."""
    return math.copysign(math.log2(1.0 + abs(x)), x)


# ----------------------------------------------------------------------------- knob features


def _knob_value_features(values: Sequence[Any]) -> np.ndarray:
    """One row per value of a knob: its position, then value features, then a one-hot."""
    count = len(values)
    rows = []
    for position, value in enumerate(values):
        row = [position / max(1, count - 1)]
        if isinstance(value, (bool, np.bool_)):
            row += [float(value)]
        elif isinstance(value, (int, float, np.integer, np.floating)):
            row += [float(value), _log2(float(value))]
        elif isinstance(value, tuple) and all(isinstance(v, (int, np.integer)) for v in value):
            row += [_log2(float(v)) for v in value]
        if count <= ONE_HOT_LIMIT:
            row += [float(position == k) for k in range(count)]
        rows.append(row)
    width = max(len(r) for r in rows)
    return np.array([r + [0.0] * (width - len(r)) for r in rows], dtype=np.float64)


class KnobFeaturizer:
    """Knob features of many configs of one space at once (vectorized over indices)."""

    def __init__(self, space: ConfigSpace):
        self.space = space
        self.tables = [_knob_value_features(k.values) for k in space.knobs.values()]
        self.radices = [len(k) for k in space.knobs.values()]
        self.names = [f"{knob}.{j}" for knob, table in zip(space.knobs, self.tables)
                      for j in range(table.shape[1])]

    @property
    def width(self) -> int:
        return sum(t.shape[1] for t in self.tables)

    def digits(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each index's position in each knob's list (mixed radix, first knob most
        significant): an (n, knobs) int array."""
        remaining = np.asarray(indices, dtype=np.int64).copy()
        out = np.zeros((remaining.size, len(self.radices)), dtype=np.int64)
        for column in range(len(self.radices) - 1, -1, -1):
            remaining, out[:, column] = np.divmod(remaining, self.radices[column])
        return out

    def __call__(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.of_digits(self.digits(indices))

    def of_digits(self, digits: np.ndarray) -> np.ndarray:
        if not self.tables:
            return np.zeros((digits.shape[0], 0))
        return np.concatenate([table[digits[:, k]] for k, table in enumerate(self.tables)],
                              axis=1)

    def of_values(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Features of knob-value dicts that may come from another task's space (transfer
        learning): each value maps to the same value in this space, else to the nearest one
        (numbers and split tuples by log distance), else to the knob's first value."""
        knobs = list(self.space.knobs.values())
        digits = np.zeros((len(configs), len(knobs)), dtype=np.int64)
        for row, values in enumerate(configs):
            for column, knob in enumerate(knobs):
                digits[row, column] = _nearest(knob.values, values.get(knob.name))
        return self.of_digits(digits)


def _nearest(choices: Sequence[Any], value: Any) -> int:
    """The position in `choices` of `value`, or of the choice closest to it."""
    if value is None:
        return 0
    if isinstance(value, list):
        value = tuple(value)
    try:
        return choices.index(value)
    except ValueError:
        pass

    def numbers(v: Any) -> tuple[float, ...] | None:
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            return (float(v),)
        if isinstance(v, tuple) and all(isinstance(x, (int, float)) for x in v):
            return tuple(float(x) for x in v)
        return None

    target = numbers(value)
    if target is None:
        return 0
    best, best_distance = 0, math.inf
    for position, choice in enumerate(choices):
        have = numbers(choice)
        if have is None or len(have) != len(target):
            continue
        distance = sum(abs(_log2(a) - _log2(b)) for a, b in zip(have, target))
        if distance < best_distance:
            best, best_distance = position, distance
    return best


def knob_features(space: ConfigSpace, config: Config) -> np.ndarray:
    """The knob features of one config (see `KnobFeaturizer` for many)."""
    return KnobFeaturizer(space)([config.index])[0]


# ----------------------------------------------------------------------------- loop features


@dataclasses.dataclass
class _LoopInfo:
    extent: int
    depth: int
    kind: L.ForKind
    above: int          # product of the enclosing loops' extents (times this loop's runs)
    below: int = 0      # innermost-statement executions in one iteration of this loop


@dataclasses.dataclass
class _BufferStats:
    accesses: float = 0.0          # element accesses (lanes counted), over the whole kernel
    bytes_touched: float = 0.0     # most bytes one access touches in the innermost loops
    unit_stride: float = 0.0       # accesses whose innermost stride is 0 or 1 element
    large_stride: float = 0.0      # accesses with a larger or unknown innermost stride
    size_bytes: float = 0.0


@dataclasses.dataclass
class _Counts:
    float_ops: float = 0.0
    int_ops: float = 0.0
    fma: float = 0.0
    vector_ops: float = 0.0
    lanes: int = 1
    guards: float = 0.0
    selects: float = 0.0
    intrinsics: float = 0.0
    stores: float = 0.0


class _LoopWalker:
    """One pass over a PrimFunc gathering loops, accesses and operation counts, each weighted
    by the product of the enclosing loops' extents."""

    def __init__(self) -> None:
        self.loops: list[_LoopInfo] = []
        self.stack: list[tuple[Any, int, L.ForKind]] = []   # (var, extent, kind)
        self.buffers: dict[str, _BufferStats] = {}
        self.counts = _Counts()

    def runs(self) -> int:
        return math.prod(extent for _, extent, _ in self.stack)

    def stmt(self, s: Any) -> int:
        """Walk `s`; return how many innermost statements one execution of it runs."""
        if isinstance(s, L.For):
            extent = s.extent.value if isinstance(s.extent, E.IntImm) else 1
            info = _LoopInfo(extent, len(self.stack), s.kind, self.runs() * extent)
            self.loops.append(info)
            self.stack.append((s.var, extent, s.kind))
            info.below = self.stmt(s.body)
            self.stack.pop()
            return extent * info.below
        if isinstance(s, L.SeqStmt):
            return sum(self.stmt(x) for x in s.stmts)
        if isinstance(s, L.IfThenElse):
            self.counts.guards += self.runs()
            self.expr(s.condition, self.runs())
            done = self.stmt(s.then_case)
            return done + (self.stmt(s.else_case) if s.else_case is not None else 0)
        if isinstance(s, L.Store):
            runs = self.runs()
            self.counts.stores += runs
            self.access(s.buffer, s.indices, lanes_of(s.value.dtype), runs)
            self.expr(s.value, runs)
            for index in s.indices:
                self.expr(index, runs, index=True)
            return 1
        if isinstance(s, L.Allocate):
            self.buffers.setdefault(s.buffer.name, _BufferStats())
            return self.stmt(s.body)
        if isinstance(s, (L.LetStmt, L.AttrStmt)):
            if isinstance(s, L.LetStmt):
                self.expr(s.value, self.runs(), index=True)
            return self.stmt(s.body)
        if isinstance(s, L.Evaluate):
            self.expr(s.value, self.runs())
            return 1
        return sum(self.stmt(c) for c in children(s) if isinstance(c, L.Stmt))

    def access(self, buffer: L.Buffer, indices: Sequence[E.Expr], lanes: int, runs: int
               ) -> None:
        stats = self.buffers.setdefault(buffer.name, _BufferStats())
        item = _dtype_bytes(buffer.dtype)
        try:
            stats.size_bytes = buffer.size * item
        except (TypeError, ValueError):
            stats.size_bytes = 0.0
        stats.accesses += runs * lanes
        strides = _strides(indices[-1] if indices else E.const(0), [v for v, _, _ in self.stack])
        innermost = strides[-1] if strides else 0
        if innermost is not None and abs(innermost) <= 1:
            stats.unit_stride += runs
        else:
            stats.large_stride += runs
        # bytes touched by the innermost two loops: each loop the index depends on multiplies
        # the footprint by its extent (an unknown stride counts as dependent)
        touched = lanes * item
        for (_var, extent, _), stride in list(zip(self.stack, strides))[-2:]:
            if stride != 0:
                touched *= extent
        stats.bytes_touched = max(stats.bytes_touched, float(touched))

    def expr(self, e: Any, runs: int, index: bool = False) -> None:
        stack = [e]
        while stack:
            node = stack.pop()
            if isinstance(node, L.Load):
                self.access(node.buffer, node.indices, lanes_of(node.dtype), runs)
                stack.extend(node.indices)
                continue
            if isinstance(node, E.BinaryOp):
                lanes = lanes_of(node.dtype)
                if is_float_dtype(node.dtype) and not index:
                    self.counts.float_ops += runs * lanes
                    if isinstance(node, E.Add) and (isinstance(node.a, E.Mul)
                                                    or isinstance(node.b, E.Mul)):
                        self.counts.fma += runs * lanes
                else:
                    self.counts.int_ops += runs
                if lanes > 1:
                    self.counts.vector_ops += runs
                    self.counts.lanes = max(self.counts.lanes, lanes)
            elif isinstance(node, E.Select):
                self.counts.selects += runs
            elif isinstance(node, E.Call):
                self.counts.intrinsics += runs
                if node.name == "fma":
                    self.counts.fma += runs * lanes_of(node.dtype)
            if isinstance(node, E.Expr):
                stack.extend(c for c in children(node) if isinstance(c, E.Expr))


def _dtype_bytes(dtype: str) -> int:
    base = element_of(dtype)
    digits = "".join(ch for ch in base if ch.isdigit())
    return max(1, int(digits) // 8) if digits else 1


def _strides(index: E.Expr, variables: Sequence[Any]) -> list[int | None]:
    """The index's coefficient of each loop variable (0: independent; None: not linear)."""
    base = index.base if isinstance(index, E.Ramp) else index
    if lanes_of(base.dtype) > 1:
        return [None] * len(variables)
    try:
        terms, _ = linear_form(base)
    except (TypeError, AttributeError, ValueError):
        return [None] * len(variables)
    out: list[int | None] = []
    for var in variables:
        if var in terms:
            out.append(terms[var])
        elif any(_mentions(term, var) for term in terms):
            out.append(None)
        else:
            out.append(0)
    return out


def _mentions(e: Any, var: Any) -> bool:
    stack = [e]
    while stack:
        node = stack.pop()
        if node is var or (isinstance(node, E.Var) and node == var):
            return True
        stack.extend(children(node))
    return False


def _main_nest(loops: list[_LoopInfo]) -> list[_LoopInfo]:
    """The loops on the path that does the most work: from the outermost loop doing the most,
    repeatedly into its nested loop doing the most."""
    chain: list[_LoopInfo] = []
    depth = 0
    candidates = [lp for lp in loops if lp.depth == 0]
    while candidates:
        best = max(candidates, key=lambda lp: lp.above * max(1, lp.below))
        chain.append(best)
        depth += 1
        start = loops.index(best)
        candidates = []
        for lp in loops[start + 1:]:
            if lp.depth < depth:
                break
            if lp.depth == depth:
                candidates.append(lp)
    return chain


def loop_features(func: L.PrimFunc) -> np.ndarray:
    """Fixed-length features of a final-form kernel (see the module docstring).

    Layout: TOP_LOOPS loops x (log extent, depth, kind one-hot x 4, log above, log below);
    TOP_BUFFERS params + pooled locals x (log accesses, log bytes touched, log reuse,
    unit-stride share, large-stride share); then sums: loops per kind, log parallel extent,
    operation counts, guards, most vector lanes."""
    walker = _LoopWalker()
    walker.stmt(func.body)
    row: list[float] = []
    chain = _main_nest(walker.loops)
    for k in range(TOP_LOOPS):
        if k < len(chain):
            lp = chain[k]
            row += [_log2(lp.extent), float(lp.depth), *(float(lp.kind is kind) for kind in
                                                          _KINDS),
                    _log2(lp.above), _log2(lp.below)]
        else:
            row += [0.0] * 8
    params = [b.name for b in func.params][:TOP_BUFFERS]
    locals_ = _BufferStats()
    for name, stats in walker.buffers.items():
        if name not in params:
            locals_.accesses += stats.accesses
            locals_.bytes_touched = max(locals_.bytes_touched, stats.bytes_touched)
            locals_.unit_stride += stats.unit_stride
            locals_.large_stride += stats.large_stride
            locals_.size_bytes += stats.size_bytes
    for stats in [*(walker.buffers.get(name, _BufferStats()) for name in params),
                  *([_BufferStats()] * (TOP_BUFFERS - len(params))), locals_]:
        total = stats.unit_stride + stats.large_stride
        reuse = stats.accesses / max(1.0, stats.size_bytes)
        row += [_log2(stats.accesses), _log2(stats.bytes_touched), _log2(reuse),
                stats.unit_stride / total if total else 0.0,
                stats.large_stride / total if total else 0.0]
    counts = walker.counts
    parallel = math.prod(lp.extent for lp in walker.loops if lp.kind is L.ForKind.PARALLEL)
    row += [float(sum(lp.kind is kind for lp in walker.loops)) for kind in _KINDS]
    row += [float(max((lp.depth for lp in walker.loops), default=-1) + 1), _log2(parallel),
            _log2(counts.float_ops), _log2(counts.int_ops), _log2(counts.fma),
            _log2(counts.vector_ops), float(counts.lanes), _log2(counts.guards),
            _log2(counts.selects), _log2(counts.intrinsics), _log2(counts.stores)]
    return np.array(row, dtype=np.float64)


LOOP_FEATURE_WIDTH = TOP_LOOPS * 8 + (TOP_BUFFERS + 1) * 5 + 4 + 11


# ----------------------------------------------------------------------------- per task


class FeatureCache:
    """Features per (task key, config index), least recently used dropped past `capacity`."""

    def __init__(self, capacity: int = 65536):
        self.capacity = capacity
        self._rows: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()

    def get(self, key: tuple[str, int, str]) -> np.ndarray | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: tuple[str, int, str], row: np.ndarray) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)


#: the process's feature cache (features are pure functions of task key and config index)
DEFAULT_CACHE = FeatureCache()


def config_features(task: TaskLike, config: Config, cache: FeatureCache | None = None
                    ) -> np.ndarray:
    """Loop features of `task` lowered at `config`, then its knob features (fixed length per
    task: LOOP_FEATURE_WIDTH + the knobs' width). A config that fails to lower gets zero
    loop features."""
    cache = DEFAULT_CACHE if cache is None else cache
    key = (task.key, config.index, "loop+knob")
    row = cache.get(key)
    if row is None:
        try:
            loops = loop_features(task.instantiate(config))
        except Exception:  # noqa: BLE001 - an invalid candidate is the measurer's to report
            loops = np.zeros(LOOP_FEATURE_WIDTH)
        row = np.concatenate([loops, knob_features(task.space(), config)])
        row = np.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0)
        cache.put(key, row)
    return row


__all__ = ["DEFAULT_CACHE", "LOOP_FEATURE_WIDTH", "FeatureCache", "KnobFeaturizer",
           "config_features", "knob_features", "loop_features"]

"""Search strategies over a task's config space, and the tuning loops that drive them.

A `Tuner` proposes batches of unvisited valid configs (`next_batch`) and learns from their
measurements (`update`). `RandomTuner` draws without replacement, `GridTuner` enumerates in
index order, and `XGBTuner` follows AutoTVM's model-based search: an XGBoost cost model
(autotune/cost_model.py) on knob features (autotune/features.py) is refitted after every
batch, and a plan of the next 64 configs is chosen by parallel simulated annealing over the
space (128 walkers, a one-knob move per step, temperature falling linearly from 1 to 0,
stopped after 50 steps without a change to the best points found, walkers kept between
plans). Each pick is random instead with probability 5%. Where the pool to choose from is
small (a space of at most `exhaustive_limit` configs, or the `candidates` of a replayed
table) every unvisited point is scored instead: exact, and cheaper than annealing.

Transfer learning (AutoTVM's): a base model fitted on other tasks' records of the same
template leads the search before the task has measurements of its own. Half the picks stay
random until the first fit on the task's own data, and the base model keeps a say only as
far as it ranks those data well (cost_model.XGBCostModel), so a base model from tasks whose
best configs differ is dropped after a batch or two instead of steering the search.

Why knob features and not loop-IR features drive the search: lowering one candidate costs
0.05-1.0 s, so annealing over thousands of points per plan is only affordable on features
that the config alone determines (see autotune/features.py).

`tune_task` runs one task to a trial budget, appending one record per measurement to a
`RecordLog` as results arrive and resuming from the records already there; `tune_model`
tunes several tasks, measuring each default config first and giving each round's trials to
tasks by their share of the model's latency (calls per run x best cost so far).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from ember.autotune.annealing import SimulatedAnnealingExplorer
from ember.autotune.cost_model import XGBCostModel
from ember.autotune.features import KnobFeaturizer
from ember.autotune.records import matches
from ember.compiler.space import Config, SpaceError
from ember.errors import EmberError

#: a pool at most this large is shuffled once (random) or scored whole (XGBoost)
SHUFFLE_LIMIT = 1 << 20


class TunerError(EmberError):
    """A tuner asked for something it cannot do (an unknown tuner name, a bad budget)."""


def throughput(task: Any, result: Any) -> float:
    """Work per second of a measured result (FLOP/s, or runs/s for a task without FLOPs);
    0 for an error."""
    if not getattr(result, "ok", False) or not result.costs:
        return 0.0
    best = min(result.costs)
    if not best > 0 or not math.isfinite(best):
        return 0.0
    flops = getattr(task, "flops", 0) or 0
    return (flops if flops > 0 else 1.0) / best


# ----------------------------------------------------------------------------- tuners


class Tuner:
    """Base of the search strategies.

    Args:
        task: the task whose space is searched (needs `space()`, `flops`, `key`).
        seed: all random choices derive from it: equal seeds give equal proposals.
        candidates: the config indices that may be proposed (a measured table when
            replaying); None allows the whole space.
    """

    name = "base"

    def __init__(self, task: Any, seed: int = 0, candidates: Collection[int] | None = None):
        self.task = task
        self.space = task.space()
        self.seed = seed
        self.rng = random.Random(seed)
        self.candidates = None if candidates is None else sorted({int(i) for i in candidates})
        self._allowed_pool = None if candidates is None else set(self.candidates)
        self.visited: set[int] = set()
        self._invalid: set[int] = set()
        self.measured_indices: list[int] = []
        self.measured_throughputs: list[float] = []
        self.best_throughput = 0.0
        self.best_config: Config | None = None
        self._done = False

    # -- the pool of proposable points

    @property
    def pool_size(self) -> int:
        return len(self.candidates) if self.candidates is not None else len(self.space)

    def pool_index(self, position: int) -> int:
        return self.candidates[position] if self.candidates is not None else position

    def allowed(self, index: int) -> bool:
        """Unvisited, valid, and among the candidates (when given)."""
        if index in self.visited or index in self._invalid:
            return False
        if self._allowed_pool is not None and index not in self._allowed_pool:
            return False
        if not 0 <= index < len(self.space):
            return False
        if not self.space.is_valid(self.space.get(index)):
            self._invalid.add(index)
            return False
        return True

    # -- the protocol

    def next_batch(self, size: int) -> list[Config]:
        """Up to `size` unvisited valid configs (fewer, or none, when the pool runs out)."""
        if size <= 0 or self._done:
            return []
        out: list[Config] = []
        for index in self._propose(size):
            if self.allowed(index):
                self.visited.add(index)
                out.append(self.space.get(index))
                if len(out) == size:
                    break
        if not out:
            self._done = True
        return out

    def update(self, configs: Sequence[Config], results: Sequence[Any]) -> None:
        """Learn from measured configs (`results`: measure.MeasureResult, one per config)."""
        if len(configs) != len(results):
            raise TunerError(f"update got {len(configs)} configs but {len(results)} results")
        for config, result in zip(configs, results):
            self.visited.add(config.index)
            value = throughput(self.task, result)
            self.measured_indices.append(config.index)
            self.measured_throughputs.append(value)
            if value > self.best_throughput:
                self.best_throughput, self.best_config = value, config

    def has_next(self) -> bool:
        return not self._done and len(self.visited) + len(self._invalid) < self.pool_size

    def _propose(self, size: int) -> Any:
        """Indices to try in order; the base class filters them through `allowed`."""
        raise NotImplementedError


class GridTuner(Tuner):
    """Every config in index order (the candidates' order when given), each once."""

    name = "grid"

    def __init__(self, task: Any, seed: int = 0, candidates: Collection[int] | None = None):
        super().__init__(task, seed, candidates)
        self._position = 0

    def _propose(self, size: int) -> Any:
        while self._position < self.pool_size:
            self._position += 1
            yield self.pool_index(self._position - 1)


class RandomTuner(Tuner):
    """Uniform draws without replacement."""

    name = "random"

    def __init__(self, task: Any, seed: int = 0, candidates: Collection[int] | None = None):
        super().__init__(task, seed, candidates)
        self._order: list[int] | None = None
        self._position = 0

    def _propose(self, size: int) -> Any:
        if self.pool_size <= SHUFFLE_LIMIT:
            if self._order is None:
                self._order = [self.pool_index(k) for k in range(self.pool_size)]
                self.rng.shuffle(self._order)
            while self._position < len(self._order):
                self._position += 1
                yield self._order[self._position - 1]
            return
        misses = 0
        while misses < 100 * size + 1000:   # rejection sampling over a huge space
            index = self.pool_index(self.rng.randrange(self.pool_size))
            if self.allowed(index):
                misses = 0
                yield index
            else:
                misses += 1


class XGBTuner(Tuner):
    """Model-based search (see the module docstring).

    Args:
        plan_size: configs chosen per plan (AutoTVM: 64).
        epsilon: the chance that a pick is random rather than the model's.
        objective: the cost model's objective, "rank" or "reg".
        first_fit: measurements (random ones) before the first model fit.
        walkers, steps, patience: simulated annealing's parallel walkers, most steps per
            plan, and steps without a change to the best points after which it stops.
        exhaustive_limit: pools up to this size are scored whole instead of annealed.
        transfer: earlier records (records.Record) of similar tasks: a base model fitted on
            them seeds this task's model (cost_model.XGBCostModel.fit_base).
    """

    name = "xgb"

    def __init__(self, task: Any, seed: int = 0, candidates: Collection[int] | None = None,
                 plan_size: int = 64, epsilon: float = 0.05, objective: str = "rank",
                 first_fit: int = 16, walkers: int = 128, steps: int = 500,
                 patience: int = 50, exhaustive_limit: int = 4096,
                 transfer: Sequence[Any] | None = None):
        super().__init__(task, seed, candidates)
        self.plan_size = plan_size
        self.epsilon = epsilon
        self.first_fit = first_fit
        self.exhaustive_limit = exhaustive_limit
        self.featurizer = KnobFeaturizer(self.space)
        self.model = XGBCostModel(objective, seed=seed)
        self._plan: list[int] = []
        self._fitted_at = 0
        self.explorer = SimulatedAnnealingExplorer(self.featurizer, self.allowed, seed, walkers,
                                                   steps, patience)
        self._random = RandomTuner(task, seed + 7919, candidates)
        self._transfer_key: tuple[int, float] | None = None
        self._random_picks = 0
        if transfer:
            self.learn_from(transfer)

    def learn_from(self, records: Sequence[Any]) -> None:
        """Transfer: (re)fit the base model on other tasks' records (`transfer_records`),
        unless they are the ones it already learned from; the model on this task's own
        measurements is refitted over the new base."""
        key = (len(records), sum(record.timestamp for record in records))
        if not records or key == self._transfer_key:
            return
        self._transfer_key = key
        self._fit_transfer(records)
        if len(self.measured_indices) >= self.first_fit:
            self.model.fit(self.features(self.measured_indices), self.measured_throughputs)
            self._plan = []

    def _fit_transfer(self, records: Sequence[Any]) -> None:
        """Base model on earlier records, each task's throughputs normalized on its own."""
        by_task: dict[str, list[Any]] = {}
        for record in records:
            by_task.setdefault(record.task, []).append(record)
        rows, targets = [], []
        for task_records in by_task.values():
            values = [(record.flops or 1.0) / min(record.costs)
                      if record.error is None and record.costs and min(record.costs) > 0
                      else 0.0 for record in task_records]
            best = max(values, default=0.0)
            rows.append(self.featurizer.of_values([record.config for record in task_records]))
            targets.extend(v / best if best > 0 else 0.0 for v in values)
        if rows:
            self.model.fit_base(np.concatenate(rows), targets)

    def update(self, configs: Sequence[Config], results: Sequence[Any]) -> None:
        super().update(configs, results)
        fresh = len(self.measured_indices) - self._fitted_at
        if len(self.measured_indices) >= self.first_fit and fresh > 0 \
                and self.best_throughput > 0:
            self.model.fit(self.features(self.measured_indices), self.measured_throughputs)
            self._fitted_at = len(self.measured_indices)
            self._plan = self._make_plan()

    def features(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The cost model's feature rows of config indices (knob features)."""
        return self.featurizer(indices)

    def _propose(self, size: int) -> Any:
        while True:
            if not self.model.fitted and not self.model.has_base:
                yield from self._random._propose(size)
                return
            if self.rng.random() < self._explore_share():
                self._random.visited = self.visited
                pick = next(iter(self._random._propose(1)), None)
                if pick is not None:
                    self._random_picks += 1
                    yield pick
                    continue
            if not self._plan:
                self._plan = self._make_plan()
                if not self._plan:
                    return
            yield self._plan.pop(0)

    def _explore_share(self) -> float:
        """The chance that the next pick is random rather than the model's. Without transfer
        the first `first_fit` picks are random (before the first fit). A transfer model
        stands in for half of them: one pick in two stays random until `first_fit` of the
        task's own configs are measured, so the first fit sees configs outside the region
        the other tasks liked; if that fit then distrusts the transfer model, picks stay
        random until `first_fit` random ones are measured, as without transfer. Then
        `epsilon`."""
        if self.model.has_base:
            if len(self.measured_indices) < self.first_fit:
                return 0.5
            if self.model.base_weight == 0.0 and self._random_picks < self.first_fit:
                return 1.0
        return self.epsilon

    # -- planning

    def _make_plan(self) -> list[int]:
        """The model's best `plan_size` unvisited points (scored whole for a small pool,
        else by simulated annealing). The plan is made again after every measured batch."""
        if self.pool_size <= self.exhaustive_limit:
            return self._score_pool(self.plan_size)
        starts = [] if self.explorer.positions is not None else [
            self.pool_index(self.rng.randrange(self.pool_size))
            for _ in range(self.explorer.walkers)]
        return self.explorer.explore(self.model.predict, self.plan_size, starts)

    def _score_pool(self, count: int) -> list[int]:
        pool = np.array([self.pool_index(k) for k in range(self.pool_size)], dtype=np.int64)
        pool = pool[[int(i) not in self.visited for i in pool]] if self.visited else pool
        if pool.size == 0:
            return []
        scores = self.model.predict(self.features(pool))
        order = np.lexsort((pool, -scores))
        out = []
        for position in order:
            index = int(pool[position])
            if self.allowed(index):
                out.append(index)
                if len(out) == count:
                    break
        return out

def transfer_records(task: Any, records: Sequence[Any]) -> list[Any]:
    """The records of other tasks that an XGBTuner of `task` can learn from (its `transfer`
    argument): measured for the same target and CPU (any thread count), with exactly the
    knobs of `task`'s space (the same anchor template, another shape). The task's own
    records are for resuming instead."""
    knobs = set(task.space().knobs)
    return [record for record in records
            if record.task != task.key and set(record.config) == knobs
            and matches(record, task.target, same_threads=False)]


def _teach(tunings: Sequence[TaskTuning], log: Any) -> None:
    """Give every XGBoost tuner among `tunings` the log's records of its similar tasks
    (`transfer_records`), the log read once."""
    learners = [t for t in tunings if isinstance(t.tuner, XGBTuner)]
    if log is None or not learners:
        return
    by_knobs: dict[frozenset, list[Any]] = {}
    for record in log:
        by_knobs.setdefault(frozenset(record.config), []).append(record)
    for tuning in learners:
        group = by_knobs.get(frozenset(tuning.task.space().knobs), [])
        tuning.tuner.learn_from(transfer_records(tuning.task, group))


TUNERS: dict[str, type[Tuner]] = {"random": RandomTuner, "grid": GridTuner, "xgb": XGBTuner}


def make_tuner(name: str, task: Any, seed: int = 0,
               candidates: Collection[int] | None = None, **options: Any) -> Tuner:
    """A tuner by name: "xgb" (default of `ember tune`), "random" or "grid"."""
    if name not in TUNERS:
        raise TunerError(f"unknown tuner {name!r}; use one of {sorted(TUNERS)}")
    return TUNERS[name](task, seed=seed, candidates=candidates, **options)


# ----------------------------------------------------------------------------- tuning loops


@dataclasses.dataclass(frozen=True)
class TuneProgress:
    """Where a task's tuning stands, passed to the callback after each batch."""

    task: Any
    trials_done: int           # measured configs, resumed ones included
    trials: int                # the task's budget
    best_gflops: float
    best_config: Config | None
    elapsed_s: float
    left_s: float | None       # estimate from this run's seconds per trial
    errors: int


@dataclasses.dataclass
class TuneSummary:
    """The outcome of tuning one task."""

    task: Any
    trials: int = 0            # measured configs, resumed ones included
    resumed: int = 0           # of which read from the log
    best_config: Config | None = None
    best_cost: float = math.inf
    best_gflops: float = 0.0
    default_cost: float | None = None
    errors: Counter = dataclasses.field(default_factory=Counter)
    elapsed_s: float = 0.0
    curve: list[float] = dataclasses.field(default_factory=list)  # best GFLOP/s per trial
    stopped: str = ""          # "trials", "early_stopping" or "exhausted"

    @property
    def speedup(self) -> float | None:
        """Default cost / best cost, when the default was measured."""
        if self.default_cost is None or not math.isfinite(self.best_cost):
            return None
        return self.default_cost / self.best_cost


def _result_of(record: Any) -> Any:
    """A MeasureResult rebuilt from a log record (resuming)."""
    from ember.autotune.measure import ErrorClass, MeasureResult

    error = None
    if record.error is not None:
        try:
            error = ErrorClass(record.error)
        except ValueError:
            error = ErrorClass.RUNTIME
    return MeasureResult(costs=tuple(record.costs) if error is None else (), error=error,
                         message=record.message, timestamp=record.timestamp)


class TaskTuning:
    """The state of tuning one task: its tuner, measure function, log and summary; `run`
    continues it by a number of trials (tune_model calls it once per round)."""

    def __init__(self, task: Any, tuner: Tuner,
                 measure: Callable[[Sequence[Config]], list[Any]], log: Any = None,
                 callback: Callable[[TuneProgress], None] | None = None,
                 early_stopping: int | None = None, batch_size: int | None = None):
        self.task = task
        self.tuner = tuner
        self.measure = measure
        self.log = log
        self.callback = callback
        self.early_stopping = early_stopping
        self.batch_size = batch_size or 16
        self.summary = TuneSummary(task)
        self._best_trial = 0
        self._measured_s = 0.0
        self._measured_now = 0

    @property
    def finished(self) -> bool:
        return self.summary.stopped in ("early_stopping", "exhausted")

    def resume(self) -> int:
        """Feed the log's records of this task to the tuner; they count as trials done."""
        if self.log is None:
            return 0
        space = self.task.space()
        configs, results = [], []
        seen: set[int] = set()
        for record in self.log:
            if record.task != self.task.key or not matches(record, self.task.target):
                continue
            try:
                config = space.from_values(record.config)
            except SpaceError:   # the template's space changed since: a stale record
                continue
            if config.index in self.tuner.visited or config.index in seen:
                continue
            seen.add(config.index)
            configs.append(config)
            results.append(_result_of(record))
        if configs:
            self._account(configs, results)
            self.tuner.update(configs, results)
            self.summary.resumed += len(configs)
        return len(configs)

    def measure_configs(self, configs: Sequence[Config]) -> list[Any]:
        """Measure, log each record, update the tuner and the summary."""
        start = time.perf_counter()
        results = list(self.measure(configs))
        self._measured_s += time.perf_counter() - start
        self._measured_now += len(configs)
        if len(results) != len(configs):
            raise TunerError(f"the measure function returned {len(results)} results for "
                             f"{len(configs)} configs")
        if self.log is not None:
            from ember.autotune.records import Record

            for config, result in zip(configs, results):
                self.log.append(Record.of(self.task, config, result))
        self._account(configs, results)
        self.tuner.update(configs, results)
        return results

    def _account(self, configs: Sequence[Config], results: Sequence[Any]) -> None:
        summary = self.summary
        flops = getattr(self.task, "flops", 0) or 0
        for config, result in zip(configs, results):
            summary.trials += 1
            if not getattr(result, "ok", False):
                error = getattr(result, "error", None)
                summary.errors[str(getattr(error, "value", error))] += 1
            elif result.costs and min(result.costs) < summary.best_cost:
                summary.best_cost = min(result.costs)
                summary.best_config = config
                summary.best_gflops = flops / summary.best_cost / 1e9 if flops else 0.0
                self._best_trial = summary.trials
            if getattr(result, "ok", False) and result.costs and \
                    config.index == self.task.space().default.index:
                summary.default_cost = min(result.costs)
            summary.curve.append(summary.best_gflops)

    def run(self, trials: int) -> TuneSummary:
        """Continue until `trials` measurements in all (resumed ones included), the tuner
        runs out of configs, or `early_stopping` trials pass without a better config."""
        summary = self.summary
        start = time.perf_counter() - summary.elapsed_s
        while summary.trials < trials:
            if not self.tuner.has_next():
                summary.stopped = "exhausted"
                break
            if self.early_stopping is not None and \
                    summary.trials - self._best_trial >= self.early_stopping:
                summary.stopped = "early_stopping"
                break
            batch = self.tuner.next_batch(min(self.batch_size, trials - summary.trials))
            if not batch:
                summary.stopped = "exhausted"
                break
            self.measure_configs(batch)
            summary.elapsed_s = time.perf_counter() - start
            if self.callback is not None:
                per_trial = self._measured_s / max(1, self._measured_now)
                self.callback(TuneProgress(
                    self.task, summary.trials, trials, summary.best_gflops,
                    summary.best_config, summary.elapsed_s,
                    per_trial * max(0, trials - summary.trials), sum(summary.errors.values())))
        else:
            summary.stopped = summary.stopped or "trials"
        summary.elapsed_s = time.perf_counter() - start
        return summary


def tune_task(task: Any, tuner: Tuner, measure: Callable[[Sequence[Config]], list[Any]],
              trials: int, early_stopping: int | None = None, log: Any = None,
              callback: Callable[[TuneProgress], None] | None = None,
              batch_size: int | None = None, transfer: bool = True) -> TuneSummary:
    """Tune one task to `trials` measurements.

    Args:
        task: an autotune Task.
        tuner: the search strategy (a fresh one, or one that has tuned this task before).
        measure: configs -> one measure.MeasureResult each, e.g.
            `lambda configs: measurer.measure(task, configs)`, or a replay of a table.
        trials: the budget, counting the measurements already in `log` for this task.
        early_stopping: stop after this many trials without a faster config.
        log: a records.RecordLog: its records of this task are fed to the tuner and not
            measured again; each new measurement is appended as its batch returns.
        callback: called with a TuneProgress after each batch.
        batch_size: configs measured per call of `measure` (default 16).
        transfer: an XGBoost tuner also learns from the log's records of other tasks of
            the same template (see `transfer_records`).
    """
    if trials < 0:
        raise TunerError(f"trials must be at least 0, got {trials}")
    tuning = TaskTuning(task, tuner, measure, log, callback, early_stopping, batch_size)
    tuning.resume()
    if transfer:
        _teach([tuning], log)
    return tuning.run(trials)


def _split(budget: int, shares: Sequence[float]) -> list[int]:
    """`budget` split in proportion to `shares` (largest remainders get the leftovers)."""
    total = sum(shares)
    if budget <= 0 or total <= 0:
        return [0] * len(shares)
    exact = [budget * s / total for s in shares]
    out = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(shares)), key=lambda k: (out[k] - exact[k], k))
    for k in order[:budget - sum(out)]:
        out[k] += 1
    return out


def tune_model(tasks: Sequence[Any],
               measure_for_task: Callable[[Any], Callable[[Sequence[Config]], list[Any]]],
               trials: int, early_stopping: int | None = None, log: Any = None,
               callback: Callable[[TuneProgress], None] | None = None,
               tuner: str | Callable[[Any], Tuner] = "xgb", seed: int = 0,
               rounds: int = 4, batch_size: int | None = None,
               transfer: bool = True) -> list[TuneSummary]:
    """Tune a model's tasks with `trials` measurements in all.

    Each task's default config is measured first (unless the log has it); then the
    remaining trials are given out over `rounds` rounds, each round's share going to the tasks
    in proportion to their part of the model's latency (weight x best cost so far), so the
    split follows the bests as they improve. A task that runs out of configs or stops early
    leaves its share to the others. With `transfer`, before each round every XGBoost tuner
    learns from the log's records of the model's other tasks of its template (those tuned
    in earlier rounds included), AutoTVM's transfer learning.

    Returns:
        one TuneSummary per task, in the order of `tasks`.
    """
    def new_tuner(task: Any) -> Tuner:
        return make_tuner(tuner, task, seed) if isinstance(tuner, str) else tuner(task)

    runs = [TaskTuning(task, new_tuner(task), measure_for_task(task), log, callback,
                       early_stopping, batch_size) for task in tasks]
    for run in runs:
        run.resume()
        default = run.task.space().default
        if default.index not in run.tuner.visited and run.tuner.allowed(default.index):
            run.tuner.visited.add(default.index)
            run.measure_configs([default])
    round_number = 0
    while True:
        done = sum(run.summary.trials for run in runs)
        active = [run for run in runs if not run.finished and run.tuner.has_next()]
        if trials - done <= 0 or not active:
            break
        # the last rounds take what is left, including what finished tasks did not use
        budget = math.ceil((trials - done) / max(1, rounds - round_number))
        known = [r.summary.best_cost for r in runs if math.isfinite(r.summary.best_cost)]
        shares = [run.task.weight * (run.summary.best_cost
                                     if math.isfinite(run.summary.best_cost)
                                     else max(known, default=1.0))
                  for run in active]
        extras = _split(budget, shares)
        if transfer:
            _teach([run for run, extra in zip(active, extras) if extra > 0], log)
        for run, extra in zip(active, extras):
            if extra > 0:
                run.run(run.summary.trials + extra)
        if sum(run.summary.trials for run in runs) == done:
            break
        round_number += 1
    return [run.summary for run in runs]


__all__ = ["GridTuner", "RandomTuner", "TaskTuning", "TuneProgress", "TuneSummary", "Tuner",
           "TunerError", "XGBTuner", "make_tuner", "throughput", "transfer_records", "tune_model",
           "tune_task"]

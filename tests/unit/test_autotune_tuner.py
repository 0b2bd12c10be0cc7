"""Tuners and tuning loops (autotune/tuner.py, autotune/cost_model.py) on a synthetic measured
table: a smooth bowl over the knobs plus noise, so no kernel is compiled or timed."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ember.autotune.cost_model import CostModelError, XGBCostModel, normalize
from ember.autotune.measure import ErrorClass, MeasureResult
from ember.autotune.records import RecordLog, load_records
from ember.autotune.tuner import (
    GridTuner,
    RandomTuner,
    TunerError,
    XGBTuner,
    make_tuner,
    transfer_records,
    tune_model,
    tune_task,
)
from ember.compiler.space import ConfigSpace
from ember.target import Target

TUNER_CLASSES = [GridTuner, RandomTuner, XGBTuner]


class SyntheticTask:
    """A stand-in for autotune.task.Task: a 2,000-config space and a known cost per config."""

    def __init__(self, key: str = "synthetic_0", scale: float = 1.0, weight: int = 1,
                 with_filter: bool = False):
        self.key = self.name = key
        self.target = Target.parse("llvm")
        self.flops = 10**9
        self.weight = weight
        space = ConfigSpace()
        space.define_knob("tile_x", [1 << k for k in range(10)])
        space.define_split("split_y", 512, 2)
        space.define_knob("unroll", list(range(1, 21)))
        if with_filter:
            space.add_filter(lambda c: not (c["tile_x"] >= 256 and c["unroll"] > 10))
        self._space = space
        rng = random.Random(1)
        self.costs = [scale * self._bowl(c) * (1 + 0.03 * rng.random()) for c in space]

    @staticmethod
    def _bowl(config) -> float:
        x = math.log2(config["tile_x"]) - 6
        y = math.log2(config["split_y"][1]) - 3
        z = (config["unroll"] - 13) / 3
        return 1e-3 * (1 + x * x + 1.5 * y * y + z * z + 0.5 * x * y)

    def space(self) -> ConfigSpace:
        return self._space

    def describe(self) -> str:
        return f"synthetic bowl {self.key}"

    def measure(self, configs, failing=frozenset()):
        return [MeasureResult((), ErrorClass.RUNTIME, "crashed") if c.index in failing
                else MeasureResult((self.costs[c.index],), None, timestamp=1.0)
                for c in configs]


@pytest.fixture(scope="module")
def task():
    return SyntheticTask()


def drive(tuner, task, batch=16, limit=None):
    """Propose and measure until the tuner runs out (or `limit`); every proposal."""
    proposed = []
    while tuner.has_next() and (limit is None or len(proposed) < limit):
        configs = tuner.next_batch(batch)
        if not configs:
            break
        proposed.extend(configs)
        tuner.update(configs, task.measure(configs))
    return proposed


@pytest.mark.parametrize("cls", TUNER_CLASSES)
def test_proposals_valid_unvisited_within_candidates(cls):
    task = SyntheticTask(with_filter=True)
    space = task.space()
    candidates = random.Random(3).sample(range(len(space)), 300)
    tuner = cls(task, seed=0, candidates=candidates)
    proposed = drive(tuner, task, limit=80)
    indices = [c.index for c in proposed]
    assert len(indices) == len(set(indices)) >= 80
    assert set(indices) <= set(candidates)
    assert all(space.is_valid(c) for c in proposed)


@pytest.mark.parametrize("cls", [GridTuner, RandomTuner])
def test_small_space_exhausted_exactly_once(cls):
    task = SyntheticTask(with_filter=True)
    space = task.space()
    valid = {c.index for c in space if space.is_valid(c)}
    proposed = [c.index for c in drive(cls(task, seed=1), task, batch=97)]
    assert len(proposed) == len(set(proposed)) and set(proposed) == valid
    tuner = cls(task)
    assert tuner.next_batch(0) == []


def test_grid_enumerates_in_index_order(task):
    proposed = [c.index for c in drive(GridTuner(task), task, limit=40)]
    assert proposed == list(range(len(proposed)))


def test_xgb_exhausts_a_candidate_table():
    task = SyntheticTask()
    candidates = list(range(0, 2000, 13))
    proposed = [c.index for c in drive(XGBTuner(task, seed=2, candidates=candidates), task)]
    assert sorted(proposed) == candidates


@pytest.mark.parametrize("cls", TUNER_CLASSES)
def test_deterministic_per_seed(cls, task):
    first = [c.index for c in drive(cls(task, seed=5), task, limit=64)]
    again = [c.index for c in drive(cls(task, seed=5), task, limit=64)]
    assert first == again
    if cls is not GridTuner:
        other = [c.index for c in drive(cls(task, seed=6), task, limit=64)]
        assert other != first


def trials_to_reach(tuner, task, fraction=0.95, batch=16):
    """Trials until a config within `fraction` of the table's best throughput is measured."""
    goal = fraction / min(task.costs)
    trials = 0
    while tuner.has_next():
        configs = tuner.next_batch(batch)
        for config in configs:
            trials += 1
            if 1 / task.costs[config.index] >= goal:
                return trials
        tuner.update(configs, task.measure(configs))
    return trials


@pytest.mark.parametrize("options", [{}, {"exhaustive_limit": 0}, {"objective": "reg"}],
                         ids=["scored", "annealed", "regression"])
def test_xgb_beats_random_on_synthetic_table(task, options):
    seeds = range(5)
    xgb = [trials_to_reach(XGBTuner(task, seed=s, **options), task) for s in seeds]
    rand = [trials_to_reach(RandomTuner(task, seed=s), task) for s in seeds]
    assert np.mean(xgb) < 0.5 * np.mean(rand), (xgb, rand)


def test_transfer_from_records_seeds_the_first_plan(tmp_path, task):
    old = SyntheticTask("synthetic_old", scale=3.0)
    log = RecordLog(tmp_path / "old.jsonl")
    tune_task(old, RandomTuner(old, seed=0), old.measure, trials=200, log=log)
    log.close()
    records = load_records(tmp_path / "old.jsonl")
    assert transfer_records(task, records) == records
    assert transfer_records(old, records) == []   # its own records resume instead
    cold = [task.costs[c.index] for c in XGBTuner(task, seed=0).next_batch(16)]
    warm = [task.costs[c.index]
            for c in XGBTuner(task, seed=0, transfer=records).next_batch(16)]
    assert np.mean(warm) < np.mean(cold)


def tuned_records(tmp_path, task, trials=200):
    """The log records of a random tune of `task`."""
    path = tmp_path / f"{task.key}.jsonl"
    with RecordLog(path) as log:
        tune_task(task, RandomTuner(task, seed=0), task.measure, trials=trials, log=log)
    return load_records(path)


def test_transfer_from_tasks_that_disagree_is_dropped(tmp_path, task):
    agrees = SyntheticTask("synthetic_agrees", scale=3.0)
    disagrees = SyntheticTask("synthetic_disagrees")
    disagrees.costs = [1e-6 / cost for cost in disagrees.costs]   # the ranking upside down
    helpful = tuned_records(tmp_path, agrees)
    misleading = tuned_records(tmp_path, disagrees)
    weights = {}
    for label, records in (("helpful", helpful), ("misleading", misleading)):
        tuner = XGBTuner(task, seed=0, transfer=records)
        drive(tuner, task, batch=8, limit=32)
        weights[label] = tuner.model.base_weight
    assert weights["helpful"] > 0.5 and weights["misleading"] == 0.0
    seeds = range(5)
    cold = np.mean([trials_to_reach(XGBTuner(task, seed=s), task, batch=8) for s in seeds])
    misled = np.mean([trials_to_reach(XGBTuner(task, seed=s, transfer=misleading), task,
                                      batch=8) for s in seeds])
    rand = np.mean([trials_to_reach(RandomTuner(task, seed=s), task, batch=8) for s in seeds])
    assert misled < 0.5 * rand and misled < 2 * cold, (misled, cold, rand)


def test_tune_model_transfers_between_tasks_of_one_template(tmp_path):
    tasks = [SyntheticTask("synthetic_a"), SyntheticTask("synthetic_b", scale=2.0)]
    tuners = {}

    def new_tuner(task):
        tuners[task.key] = XGBTuner(task, seed=0)
        return tuners[task.key]

    with RecordLog(tmp_path / "model.jsonl") as log:
        tune_model(tasks, lambda t: t.measure, trials=80, log=log, tuner=new_tuner)
    assert all(t.model.has_base for t in tuners.values())
    with RecordLog(tmp_path / "cold.jsonl") as log:
        tune_model(tasks, lambda t: t.measure, trials=80, log=log, tuner=new_tuner,
                   transfer=False)
    assert not any(t.model.has_base for t in tuners.values())


def test_resume_takes_only_records_of_the_same_thread_count(tmp_path, task):
    path = tmp_path / "tune.jsonl"
    with RecordLog(path) as log:
        tune_task(task, RandomTuner(task, seed=0), task.measure, trials=20, log=log)
    other = SyntheticTask()
    other.target = Target.parse("llvm -num-threads=64")
    with RecordLog(path) as log:
        summary = tune_task(other, RandomTuner(other, seed=1), other.measure, trials=20,
                            log=log)
    assert summary.resumed == 0 and len(load_records(path)) == 40


def recording(task):
    """A measure function of `task` that appends each config index it measures to a list;
    (the list, the function)."""
    calls = []

    def measure(configs):
        calls.extend(c.index for c in configs)
        return task.measure(configs)

    return calls, measure


def test_tune_task_resumes_from_log(tmp_path, task):
    path = tmp_path / "tune.jsonl"
    calls, measure = recording(task)
    with RecordLog(path) as log:
        first = tune_task(task, XGBTuner(task, seed=0), measure, trials=40, log=log)
    assert first.trials == 40 and len(calls) == 40 and len(load_records(path)) == 40
    measured = list(calls)
    with RecordLog(path) as log:
        again = tune_task(task, XGBTuner(task, seed=0), measure, trials=40, log=log)
    assert len(calls) == 40 and again.resumed == 40 and again.trials == 40
    assert again.best_cost == first.best_cost
    with RecordLog(path) as log:
        more = tune_task(task, XGBTuner(task, seed=0), measure, trials=60, log=log)
    assert more.trials == 60 and len(calls) == 60
    assert not set(calls[40:]) & set(measured)
    assert len({r.index for r in load_records(path)}) == 60


def test_tune_task_survives_errors_and_reports_progress(task):
    failing = frozenset(range(0, 2000, 2))
    progress = []
    summary = tune_task(task, XGBTuner(task, seed=0), lambda cs: task.measure(cs, failing),
                        trials=64, callback=progress.append, batch_size=16)
    assert summary.trials == 64
    assert summary.errors["runtime"] > 0
    assert summary.best_config is not None and summary.best_config.index not in failing
    assert [p.trials_done for p in progress] == [16, 32, 48, 64]
    assert progress[-1].best_gflops == pytest.approx(summary.best_gflops)
    assert len(summary.curve) == 64 and summary.curve == sorted(summary.curve)


def test_tune_task_early_stopping(task):
    summary = tune_task(task, GridTuner(task), task.measure, trials=500, early_stopping=30,
                        batch_size=10)
    assert summary.stopped == "early_stopping" and summary.trials < 500


def test_all_errors_do_not_stop_the_tuner(task):
    everything = frozenset(range(2000))
    summary = tune_task(task, XGBTuner(task, seed=0), lambda cs: task.measure(cs, everything),
                        trials=48)
    assert summary.trials == 48 and summary.best_config is None
    assert summary.errors["runtime"] == 48


def test_tune_model_splits_trials_by_latency_share():
    slow = SyntheticTask("synthetic_slow", scale=10.0)
    fast = SyntheticTask("synthetic_fast", scale=1.0)
    summaries = tune_model([fast, slow], lambda t: t.measure, trials=120, tuner="random")
    by_key = {s.task.key: s for s in summaries}
    assert sum(s.trials for s in summaries) == 120
    assert by_key["synthetic_slow"].trials > 2 * by_key["synthetic_fast"].trials
    for s in summaries:
        assert s.default_cost == pytest.approx(s.task.costs[s.task.space().default.index])


def test_make_tuner_names():
    task = SyntheticTask()
    assert isinstance(make_tuner("xgb", task), XGBTuner)
    with pytest.raises(TunerError, match="unknown tuner"):
        make_tuner("genetic", task)


def test_cost_model_ranks_and_checks_input():
    rng = np.random.default_rng(0)
    xs = rng.random((200, 3))
    ys = 1.0 / (1.0 + (xs[:, 0] - 0.3) ** 2 + xs[:, 1])
    for objective in ("rank", "reg"):
        model = XGBCostModel(objective).fit(xs, ys)
        scores = model.predict(xs)
        assert np.corrcoef(scores, ys)[0, 1] > 0.8
    assert normalize([0.0, 2.0, float("nan")]).tolist() == [0.0, 1.0, 0.0]
    assert not XGBCostModel().fit(xs[:5], np.zeros(5)).fitted
    with pytest.raises(CostModelError, match="2-D"):
        XGBCostModel().predict(np.zeros(3))
    with pytest.raises(CostModelError, match="objective"):
        XGBCostModel("genetic")


def test_interrupted_tune_leaves_a_log_to_resume(tmp_path, task):
    path = tmp_path / "tune.jsonl"
    batches = []

    def interrupted(configs):
        if len(batches) == 2:
            raise KeyboardInterrupt
        batches.append([c.index for c in configs])
        return task.measure(configs)

    with pytest.raises(KeyboardInterrupt), RecordLog(path) as log:
        tune_task(task, XGBTuner(task, seed=0), interrupted, trials=64, log=log)
    assert len(load_records(path)) == 32
    fresh, measure = recording(task)
    with RecordLog(path) as log:
        summary = tune_task(task, XGBTuner(task, seed=0), measure, trials=64, log=log)
    assert summary.resumed == 32 and summary.trials == 64 and len(fresh) == 32
    assert not set(fresh) & {i for batch in batches for i in batch}


def test_tune_model_gives_unused_trials_to_other_tasks():
    small = SyntheticTask("synthetic_small", scale=10.0)
    big = SyntheticTask("synthetic_big", scale=1.0)

    def make(task):
        return RandomTuner(task, candidates=range(10) if task is small else None)

    summaries = tune_model([small, big], lambda t: t.measure, trials=100, tuner=make)
    assert summaries[0].trials <= 10 and summaries[0].stopped == "exhausted"
    assert sum(s.trials for s in summaries) == 100


def test_annealing_finds_the_best_of_a_known_score(task):
    from ember.autotune.annealing import SimulatedAnnealingExplorer
    from ember.autotune.features import KnobFeaturizer

    featurizer = KnobFeaturizer(task.space())
    goal = featurizer([1234])[0]
    explorer = SimulatedAnnealingExplorer(featurizer, lambda index: index != 99, seed=0,
                                          walkers=32)
    found = explorer.explore(lambda rows: -((rows - goal) ** 2).sum(axis=1), 5,
                             starts=range(0, 2000, 63))
    assert found[0] == 1234 and len(found) == 5 and 99 not in found


def test_annealing_tuner_deterministic_per_seed(task):
    def run(seed):
        return [c.index for c in drive(XGBTuner(task, seed=seed, exhaustive_limit=0), task,
                                       limit=48)]

    assert run(3) == run(3)

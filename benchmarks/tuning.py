"""Tuner efficiency: how many trials XGBoost and random search need to reach 95% of the best.

    python benchmarks/tuning.py collect [--samples 1000]   # measures; tens of minutes
    python benchmarks/tuning.py replay [--seeds 100] [--transfer LOG]  # replays it; a minute

Three tasks, each taken from a real model as ember compiles it: a ResNet-50 3x3 convolution
(light ResNet-50), the first dense layer of GPT-2's MLP with its bias and GELU (GPT-2-small
prefill) and a depthwise convolution (the largest in the XR zoo). `collect` measures each task
once over a large sample of its config space (every valid config when the space is small
enough, else `--samples` drawn uniformly, the template's default always among them) with the
tuner's own crash-proof measurer, and appends the records to benchmarks/data/tuning_table.jsonl
(rerunning resumes). `replay` then runs each tuner against that table as if it were measuring:
the candidates are the measured configs, and "measuring" one looks its cost up. It prints, per
task and tuner, the trials needed to reach 95% of the best cost in the table over `--seeds`
seeds, so the comparison reruns in minutes and is the same on any machine.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ember.autotune.measure import MeasureOptions, MeasureResult, make_measurer
from ember.autotune.records import Record, RecordLog, load_records
from ember.autotune.task import Task, extract_tasks
from ember.autotune.tuner import RandomTuner, Tuner, XGBTuner, transfer_records
from ember.workloads import zoo
from ember.workloads.light import light_model

TABLE = Path(__file__).parent / "data" / "tuning_table.jsonl"
GOAL = 0.95  # of the best throughput in the table


def _is_conv3x3_56(task: Task) -> bool:
    anchor = task.anchor
    if anchor.op != "conv2d_nchwc":
        return False
    data, weight = anchor.input_types[0], anchor.input_types[1]
    return data.shape[2:4] == (56, 56) and weight.shape[2:4] == (3, 3)


def _is_mlp_dense(task: Task) -> bool:
    anchor = task.anchor
    return (anchor.op in ("matmul", "dense_packed")
            and anchor.output_types[0].shape[-1] == 3072
            and any(w.op in ("tanh", "erf", "gelu") for w in getattr(task.workload, "nodes", ())))


def _is_depthwise(task: Task) -> bool:
    return task.anchor.op == "depthwise_conv2d_nchwc"


#: task name -> (model builder, which of its tasks)
TASKS: dict[str, tuple[Callable, Callable[[Task], bool]]] = {
    "resnet50-conv3x3": (lambda: light_model("resnet50", seed=0), _is_conv3x3_56),
    "gpt2-mlp-dense": (lambda: zoo.build("gpt2-small-prefill"), _is_mlp_dense),
    "depthwise-conv": (None, _is_depthwise),
}


def find_task(name: str) -> Task:
    build, wanted = TASKS[name]
    models = [build()] if build is not None else [zoo.build(n) for n in zoo.names()
                                                    if n.startswith("xr-")]
    matches = [t for model in models for t in extract_tasks(model) if wanted(t)]
    if not matches:
        raise SystemExit(f"no task of {name!r} found: the templates changed; update TASKS")
    return max(matches, key=lambda t: (t.flops, t.key))


def collect(names: Sequence[str], samples: int, seed: int) -> None:
    TABLE.parent.mkdir(exist_ok=True)
    done = {(r.task, r.index) for r in load_records(TABLE)} if TABLE.exists() else set()
    log = RecordLog(TABLE)
    measurer = make_measurer("local", options=MeasureOptions())
    try:
        for name in names:
            task = find_task(name)
            space = task.space()
            if len(space) <= samples:
                configs = [c for c in space if space.is_valid(c)]
            else:
                configs = space.sample(samples, random.Random(seed))
                if space.default.index not in {c.index for c in configs}:
                    configs[0] = space.default
            todo = [c for c in configs if (task.key, c.index) not in done]
            print(f"{name}: {task.describe()}\n  space {len(space)}, measuring {len(todo)} of "
                  f"{len(configs)} configs", flush=True)
            start = time.time()
            for offset in range(0, len(todo), 16):
                batch = todo[offset:offset + 16]
                for config, result in zip(batch, measurer.measure(task, batch)):
                    log.append(Record.of(task, config, result))
                print(f"  {offset + len(batch)}/{len(todo)} ({time.time() - start:.0f} s)",
                      flush=True)
    finally:
        measurer.close()


class Replay:
    """Measures a config by looking its cost up in the table, and remembers the order."""

    def __init__(self, records: Sequence[Record]):
        self.costs = {r.index: (min(r.costs) if r.costs else math.inf) for r in records}
        self.best = min(self.costs.values())
        self.seen: list[float] = []

    def __call__(self, configs) -> list[MeasureResult]:
        from ember.autotune.measure import ErrorClass

        out = []
        for config in configs:
            cost = self.costs[config.index]
            self.seen.append(cost)
            out.append(MeasureResult((cost,), None) if math.isfinite(cost) else
                       MeasureResult((), ErrorClass.RUNTIME, "recorded as an error"))
        return out

    def reached(self) -> bool:
        return bool(self.seen) and min(self.seen) <= self.best / GOAL


def trials_to_goal(tuner: Tuner, replay: Replay, batch: int) -> int:
    while not replay.reached() and tuner.has_next():
        configs = tuner.next_batch(batch)
        if not configs:
            break
        tuner.update(configs, replay(configs))
    # trials up to and including the first that reached the goal
    return next(k + 1 for k, cost in enumerate(replay.seen) if cost <= replay.best / GOAL)


def replay(names: Sequence[str], seeds: int, batch: int, transfer: Path | None) -> None:
    records = load_records(TABLE)
    earlier = load_records(transfer) if transfer is not None else []
    print(f"table {TABLE.name}: {len(records)} measured configs; goal {GOAL:.0%} of the best; "
          f"{seeds} seeds; batches of {batch}"
          + (f"; transfer from {transfer.name}" if transfer is not None else ""))
    print(f"{'task':18} {'space':>6} {'table':>5} {'good':>4} {'best GF/s':>9} "
          f"{'default':>7} {'random':>13} {'xgboost':>13} {'/random':>7}"
          + (f" {'xgb+transfer':>13} {'/random':>7}" if transfer is not None else ""))
    for name in names:
        task = find_task(name)
        mine = [r for r in records if r.task == task.key]
        if not mine:
            print(f"{name:18} no records for task {task.key}; run `collect` first")
            continue
        similar = transfer_records(task, earlier) if transfer is not None else None
        replay_task(name, task, mine, similar, seeds, batch)


def replay_task(name: str, task: Task, mine: Sequence[Record],
                similar: Sequence[Record] | None, seeds: int, batch: int) -> None:
    candidates = {r.index for r in mine}
    tuners = {"random": lambda s: RandomTuner(task, seed=s, candidates=candidates),
              "xgboost": lambda s: XGBTuner(task, seed=s, candidates=candidates)}
    if similar is not None:  # AutoTVM's transfer learning: other tasks' records lead
        tuners["xgb+transfer"] = lambda s: XGBTuner(task, seed=s, candidates=candidates,
                                                    transfer=similar)
    counts = {label: [trials_to_goal(make(s), Replay(mine), batch) for s in range(seeds)]
              for label, make in tuners.items()}
    mean = {k: statistics.mean(v) for k, v in counts.items()}
    best = max(r.gflops for r in mine)
    good = sum(r.gflops >= GOAL * best for r in mine)
    default = next((r.gflops for r in mine if r.index == task.space().default.index), 0.0)
    cells = [f"{mean[k]:>6.1f} ± {statistics.pstdev(counts[k]):>4.1f}"
             + ("" if k == "random" else f" {mean[k] / mean['random']:>7.2f}")
             for k in tuners]
    print(f"{name:18} {len(task.space()):>6} {len(mine):>5} {good:>4} {best:>9.1f} "
          f"{default:>7.1f} " + " ".join(cells), flush=True)
    if similar is not None:
        print(f"{'':18} transfer: {len(similar)} records of "
              f"{len({r.task for r in similar})} other tasks of the template")
    if seeds <= 20:
        print("  per seed: " + "; ".join(f"{k} {v}" for k, v in counts.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("collect", "replay"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transfer", type=Path, default=None,
                        help="a tuning log of other tasks (e.g. data/tuned_models.jsonl): adds "
                             "XGBoost with transfer learning from its similar tasks")
    args = parser.parse_args()
    names = args.tasks.split(",")
    if args.mode == "collect":
        collect(names, args.samples, args.seed)
    else:
        replay(names, args.seeds, args.batch, args.transfer)


if __name__ == "__main__":
    main()

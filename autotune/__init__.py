"""The autotuner: search each kernel's schedule space for the fastest config, as AutoTVM does.

Data flow of a tune (`ember tune`, or the functions below from Python):

    model / operator ─► task.extract_tasks / task.op_task     one Task per tunable kernel
        Task.space()  ─► tuner.Tuner.next_batch               configs to try (random, grid, or
                          ▲                                   XGBoost-guided annealing)
                          │ update(configs, results)
        measure.Measurer.measure(task, configs)               build in worker processes, run,
                          │                                   check against numpy, time
                          ▼
        records.RecordLog.append(Record.of(...))              one JSON line per candidate
    ember.compile(model, records="tune.jsonl")                best record per kernel applied

Modules:
- `task`: `Task` (a kernel's workload, target, calls per run, FLOPs, space, `instantiate`),
  `extract_tasks` (a model's tunable kernels), `op_task` (one ONNX operator's kernel).
- `measure`: `LocalMeasurer` (process pool builds, one candidate runs at a time in a restartable
  runner), `RayMeasurer` (`ember[distributed]`), `MeasureResult` with TVM's error classes.
- `features`: loop-IR and knob features of a config, the cost model's input.
- `cost_model`: `XGBCostModel`, ranking throughput normalized to the best so far.
- `tuner`: `RandomTuner`, `GridTuner`, `XGBTuner`; `tune_task` (resumes from a log) and
  `tune_model` (trials split by each task's share of latency).
- `records`: `Record`, `RecordLog` (append-only JSONL), `load_records`, `best_records`.
- `cli`: the `ember tune` command (progress bars, summary table, `--plot`).

Nothing here is needed to compile: untuned kernels use their templates' defaults. Names load
on first use, so `import ember.autotune` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Task": "ember.autotune.task",
    "TuningError": "ember.autotune.task",
    "extract_tasks": "ember.autotune.task",
    "op_task": "ember.autotune.task",
    "Record": "ember.autotune.records",
    "RecordError": "ember.autotune.records",
    "RecordLog": "ember.autotune.records",
    "best_records": "ember.autotune.records",
    "load_records": "ember.autotune.records",
    "MeasureOptions": "ember.autotune.measure",
    "MeasureResult": "ember.autotune.measure",
    "ErrorClass": "ember.autotune.measure",
    "make_measurer": "ember.autotune.measure",
    "GridTuner": "ember.autotune.tuner",
    "RandomTuner": "ember.autotune.tuner",
    "XGBTuner": "ember.autotune.tuner",
    "tune_model": "ember.autotune.tuner",
    "tune_task": "ember.autotune.tuner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.autotune' has no attribute {name!r}")

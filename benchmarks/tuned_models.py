"""Tuned against untuned against ONNX Runtime: model latency after `ember tune`.

    python benchmarks/tuned_models.py [--models resnet50,xr-es] [--trials 200] [--no-tune]
                                      [--log benchmarks/data/tuned_models.jsonl]

For each model (default: light ResNet-50 and ShuffleNet, the XR zoo models, which are built
of MobileNet-style blocks, and GPT-2-small prefill and decode) it extracts the tuning tasks,
tunes them with the XGBoost tuner for `--trials` measurements in all (split over the tasks by
their share of the model's latency; the log is resumed, so measurements already in it are not
taken again, and its records of other tasks seed the cost model), then compiles the model
untuned and with the log's records, checks both against ONNX Runtime and times the three in
one process, each in its own block, after all tuning has finished (median of `--repeat` runs,
same threads). `--no-tune` only applies the records already in the log.
It prints one row per model and the geometric means of the ratios to ONNX Runtime.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import ember
from ember.autotune.measure import MeasureOptions, make_measurer
from ember.autotune.records import RecordLog
from ember.autotune.task import extract_tasks
from ember.autotune.tuner import tune_model
from ember.runtime.bench import ATOL, RTOL, compare, geometric_mean, median_ms, model_feeds
from ember.workloads import zoo
from ember.workloads.light import LIGHT_MODELS, light_model

LOG = Path(__file__).parent / "data" / "tuned_models.jsonl"
DEFAULT_MODELS = ["resnet50", "shufflenet", *[n for n in zoo.names() if n.startswith("xr-")],
                  "gpt2-small-prefill", "gpt2-small-decode"]


def load(name: str):
    return light_model(name, seed=0) if name in LIGHT_MODELS else zoo.build(name)


def tune(model, trials: int, log_path: Path, measurer) -> str:
    tasks = extract_tasks(model)
    log = RecordLog(log_path)
    try:
        start = time.time()
        summaries = tune_model(tasks, lambda task: (lambda cs: measurer.measure(task, cs)),
                               trials=trials, log=log, early_stopping=None)
    finally:
        log.close()
    tuned = [s for s in summaries if s.speedup is not None]
    gains = [s.speedup for s in tuned]
    return (f"{len(tasks)} tasks, {sum(s.trials for s in summaries)} trials "
            f"({time.time() - start:.0f} s), best/default geomean "
            f"{geometric_mean(gains) if gains else float('nan'):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--trials", type=int, default=200, help="measurements per model")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--log", type=Path, default=LOG)
    parser.add_argument("--no-tune", action="store_true",
                        help="only apply the records already in the log")
    parser.add_argument("--cache-flush", action="store_true",
                        help="measure with the weights evicted from the caches before each "
                             "timed call (MeasureOptions.cache_flush)")
    parser.add_argument("--tune-only", action="store_true",
                        help="tune into the log and stop (time later with --no-tune, in a "
                             "fresh process)")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)

    names = args.models.split(",")
    if not args.no_tune:
        # every model is tuned before any is timed: nothing of the tuner (its worker
        # processes, XGBoost's threads) is alive while the three runtimes are timed
        measurer = make_measurer("local", options=MeasureOptions(cache_flush=args.cache_flush))
        try:
            for name in names:
                print(f"{name}: tuning: {tune(load(name), args.trials, args.log, measurer)}",
                      flush=True)
        finally:
            measurer.close()

    if args.tune_only:
        return
    rows = []
    for name in names:
        model = load(name)
        # the tuned module is timed first, before ONNX Runtime runs in this process (its
        # spinning workers would take a core: see runtime/bench.compare)
        tuned = ember.compile(model, num_threads=args.threads, records=str(args.log))
        feeds = model_feeds(model, tuned)
        ours = tuned.run(feeds)
        tuned_ms = median_ms(lambda: tuned.run(feeds), args.repeat)  # noqa: B023
        untuned = compare(model, args.threads, args.repeat, feeds=feeds)
        want = untuned.module.run(feeds)
        ok = all(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
                 for a, b in zip(ours, want))
        rows.append((name, untuned.ember_ms, tuned_ms, untuned.ort_ms,
                     untuned.matches and ok, tuned.tuning))
        print(f"{name:20} untuned {untuned.ember_ms:9.3f} ms  tuned {tuned_ms:9.3f} ms  "
              f"ORT {untuned.ort_ms:9.3f} ms  tuned/ORT {tuned_ms / untuned.ort_ms:5.2f}  "
              f"{'ok' if rows[-1][4] else 'MISMATCH'}  {rows[-1][5]}", flush=True)

    print("\n| model | untuned ms | tuned ms | ORT ms | untuned / ORT | tuned / ORT | check |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, untuned_ms, tuned_ms, ort_ms, ok, _ in rows:
        print(f"| {name} | {untuned_ms:.3f} | {tuned_ms:.3f} | {ort_ms:.3f} | "
              f"{untuned_ms / ort_ms:.2f} | {tuned_ms / ort_ms:.2f} | {'ok' if ok else 'FAIL'} |")
    if rows:
        print(f"\ngeometric mean over {len(rows)} models: untuned / ORT "
              f"{geometric_mean([r[1] / r[3] for r in rows]):.2f}, tuned / ORT "
              f"{geometric_mean([r[2] / r[3] for r in rows]):.2f}")


if __name__ == "__main__":
    main()

"""Hot against cold measurement: what the tuner sees with and without TVM's CPU cache flush.

    python benchmarks/cache_flush.py [--model gpt2-small-decode] [--configs 6] [--tasks 4]

Takes the model's largest dense tasks (by weight bytes), draws `--configs` configs of each
(the template's default first) and measures every one twice in one process with the tuner's
own measurer: hot (repeated calls, the weights stay in cache once they fit) and cold
(`MeasureOptions(cache_flush=True)`: weights and outputs evicted before each timed call, as in
a model whose weights come from memory). It prints both costs, their ratio and the cold weight
bandwidth, and which config each way ranks first.
"""

from __future__ import annotations

import argparse
import math
import random

from ember.autotune.measure import MeasureOptions, make_measurer
from ember.autotune.task import Task, extract_tasks
from ember.workloads import zoo


def weight_bytes(task: Task) -> int:
    return sum(4 * math.prod(t.shape) for t in task.anchor.input_types[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small-decode")
    parser.add_argument("--configs", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    tasks = [t for t in extract_tasks(zoo.build(args.model)) if "dense" in t.anchor.op]
    tasks = sorted(tasks, key=weight_bytes, reverse=True)[:args.tasks]
    hot = make_measurer("local", options=MeasureOptions())
    cold = make_measurer("local", options=MeasureOptions(cache_flush=True))
    try:
        for task in tasks:
            space = task.space()
            configs = [space.default,
                       *[c for c in space.sample(args.configs, random.Random(0))
                         if c.index != space.default.index]][:args.configs]
            hot_results, cold_results = hot.measure(task, configs), cold.measure(task, configs)
            size = weight_bytes(task)
            print(f"{task.name}: {task.describe()[:80]}\n  weights {size / 1e6:.1f} MB")
            ranked = {}
            for config, h, c in zip(configs, hot_results, cold_results):
                if not (h.ok and c.ok):
                    print(f"  config {config.index}: {h.error or c.error} {h.message or c.message}")
                    continue
                ranked[config.index] = (h.best, c.best)
                print(f"  config {config.index:6}{' (default)' if config == space.default else ''}"
                      f": hot {h.best * 1e6:9.1f} us  cold {c.best * 1e6:9.1f} us  "
                      f"cold/hot {c.best / h.best:5.2f}  cold {size / c.best / 1e9:5.1f} GB/s")
            if ranked:
                first_hot = min(ranked, key=lambda k: ranked[k][0])
                first_cold = min(ranked, key=lambda k: ranked[k][1])
                print(f"  fastest hot: config {first_hot}; fastest cold: config {first_cold}"
                      f" (the hot one is {ranked[first_hot][1] / ranked[first_cold][1]:.2f}x "
                      f"the cold one's time when cold)", flush=True)
    finally:
        hot.close()
        cold.close()


if __name__ == "__main__":
    main()

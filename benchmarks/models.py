"""Model latency: ember against ONNX Runtime, same process, same thread count.

    python benchmarks/models.py [--models resnet50,gpt2-tiny-decode] [--zoo] [--threads 2]
                                [--repeat 20] [--kernels 3]

By default it runs the onnx package's light models (seeded random weights); `--zoo` runs every
zoo model (LLM prefill and decode, XR models) as well, and `--models` takes light and zoo
names. For each model it compiles it with ember (target llvm), checks its outputs against ONNX
Runtime's, then times each runtime in its own block: warm-up, then the median of `--repeat`
runs (ember.runtime.bench, shared with `ember bench`). It prints one row per model and the
geometric mean of the ratios over the models that ran; `--kernels N` adds each model's N most
expensive kernels with their GFLOP/s against the floor (one core's measured FMA rate times the
threads). Numbers go into docs/performance.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import os

import onnx

import ember
from ember.runtime.bench import (
    compare,
    floor_line,
    format_header,
    format_kernels,
    format_row,
    geometric_mean,
    top_kernels,
)
from ember.workloads import zoo
from ember.workloads.light import LIGHT_MODELS, light_model


def load(name: str) -> onnx.ModelProto:
    """A light model (seeded weights) or a zoo model, by name."""
    if name in LIGHT_MODELS:
        return light_model(name, seed=0)
    if name in zoo.names():
        return zoo.build(name)
    raise SystemExit(f"unknown model {name!r}; light models: {', '.join(LIGHT_MODELS)}; "
                     f"zoo models: {', '.join(zoo.names())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated light and zoo model names (default: the light "
                             "models)")
    parser.add_argument("--zoo", action="store_true", help="also run every zoo model")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--kernels", type=int, default=0,
                        help="list each model's N most expensive kernels")
    args = parser.parse_args()

    names = args.models.split(",") if args.models else list(LIGHT_MODELS)
    if args.zoo:
        names += [name for name in zoo.names() if name not in names]
    print(f"ember {ember.__version__}, target {args.target!r}, {args.threads} threads, "
          f"median of {args.repeat} runs")
    floor = None
    if args.kernels > 0:
        floor, line = floor_line(args.threads)
        print(line)
    print(format_header())
    ratios = []
    for name in names:
        try:
            comparison = compare(load(name), args.threads, args.repeat, args.target)
        except Exception as error:  # one model's failure must not end the run
            print(f"{name:<24}failed: {type(error).__name__}: {error}", flush=True)
            continue
        ratios.append(comparison.ratio)
        print(format_row(name, comparison), flush=True)
        if floor is not None:
            try:
                print(format_kernels(top_kernels(comparison, args.kernels), floor), flush=True)
            except ember.EmberError as error:
                print(f"  no kernel profile: {error}")
    print(f"geometric mean of ember/ORT over {len(ratios)} model(s): "
          f"{geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()

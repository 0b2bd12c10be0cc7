"""Model latency: ember against ONNX Runtime, same process, same thread count.

    python benchmarks/models.py [--models resnet50,squeezenet] [--threads 2] [--repeat 20]

For each of the onnx package's light models (seeded random weights), it compiles the model with
ember (target llvm), checks its output against ONNX Runtime's, then times each runtime in its
own block (ORT's spinning worker threads never overlap ember's timing): warm-up, then the
median of `--repeat` runs. It prints one row per model and the geometric mean of the ratios.
Numbers go into docs/performance.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import ember
from ember.workloads.light import LIGHT_MODELS, light_model


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def onnxruntime_session(model, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(LIGHT_MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--target", default="llvm")
    args = parser.parse_args()

    print(f"ember {ember.__version__}, target {args.target!r}, {args.threads} threads, "
          f"median of {args.repeat} runs")
    print(f"{'model':<16}{'compile s':>10}{'ember ms':>10}{'ORT ms':>10}{'ember/ORT':>11}"
          f"{'max |diff|':>12}")
    ratios = []
    for name in args.models.split(","):
        model = light_model(name, seed=0)
        start = time.perf_counter()
        module = ember.compile(model, target=args.target, num_threads=args.threads)
        compile_s = time.perf_counter() - start
        feeds = module.random_inputs(seed=0)
        session = onnxruntime_session(model, args.threads)
        ours = module.run(feeds)[0]
        theirs = session.run(None, feeds)[0]
        diff = float(np.max(np.abs(ours - theirs)))
        ember_ms = median_ms(lambda m=module, f=feeds: m.run(f), args.repeat)
        ort_ms = median_ms(lambda s=session, f=feeds: s.run(None, f), args.repeat)
        ratios.append(ember_ms / ort_ms)
        print(f"{name:<16}{compile_s:>10.2f}{ember_ms:>10.2f}{ort_ms:>10.2f}"
              f"{ember_ms / ort_ms:>11.2f}{diff:>12.2e}", flush=True)
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of ember/ORT: {geomean:.2f}")


if __name__ == "__main__":
    main()

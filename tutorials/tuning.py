"""Tutorial: tune kernels with ember's autotuner, then compile a model with the records.

Run it with `python tutorials/tuning.py` (a minute or two on 2 cores). Every kernel template
has a default config chosen from the shape and the CPU, so an untuned compile is already
fast; the tuner measures other points of the template's config space (tile sizes, loop
orders, unrolling, parallel loops) and keeps the fastest, as AutoTVM does. Three steps:

1. tune one operator from the command line (`ember tune --op ...`),
2. tune a model's kernels from Python (`extract_tasks`, `tune_model`),
3. compile the model with the records (`ember.compile(model, records=...)`).

Trial counts here are tiny so that the tutorial runs quickly; real tunes use hundreds of
trials per kernel (`--trials 2000` for a model), where the XGBoost tuner's cost model pays off.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.autotune import RecordLog, extract_tasks, load_records, make_measurer, tune_model

WORK = Path("tuning_tutorial")
CHANNELS, SIZE = 32, 28


def tune_operator_from_the_cli() -> None:
    """Step 1. `--op` takes an ONNX operator (or an alias: conv2d, matmul, dense), one
    `--shape` per input and ONNX attributes. Inputs after the first are constants, as weights
    are in a model, so the convolution compiles exactly as in a model: at opt level 3 into its
    blocked NCHW16c kernel. Every measured candidate is appended to the log; running the same
    command again resumes instead of starting over."""
    log = WORK / "conv_op.jsonl"
    command = [sys.executable, "-m", "ember", "tune", "--op", "conv2d",
               "--shape", f"1x{CHANNELS}x{SIZE}x{SIZE}", "--shape", f"{CHANNELS}x{CHANNELS}x3x3",
               "--attr", "pads=1,1,1,1", "--trials", "12", "--tuner", "random",
               "--log", str(log)]
    print("$ ember tune", " ".join(command[4:]))
    subprocess.run(command, check=True)
    print(f"{len(load_records(log))} records in {log}\n")


def two_conv_model():
    """Two 3x3 convolutions with ReLU. After fusion each conv+relu pair is one kernel; both
    have the same workload, so they share one kernel that runs twice per inference."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(
        (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 0.1).astype(np.float32), f"w{k}")
        for k in range(2)]
    shape = [1, CHANNELS, SIZE, SIZE]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def tune_model_from_python(model, log_path: Path) -> None:
    """Step 2. A task per distinct tunable kernel (its weight: calls per run), most FLOPs x
    calls first. `tune_model` measures each task's default config, then gives the trials out
    in proportion to each task's share of the model's latency. Candidates build in worker
    processes and run one at a time in a runner process, their outputs checked against the
    ops' numpy references: one that crashes, hangs or computes a wrong answer is recorded with
    its error class, and the search goes on. Before each round, every task's XGBoost cost
    model also learns from the log's records of the other tasks of its template (the model's
    other convolutions, say, or earlier tunes in the same log): AutoTVM's transfer learning,
    which it drops on its own for a task whose measurements disagree (`transfer=False`, or
    `ember tune --no-transfer`, turns it off). For weights that should not stay in cache
    while a kernel is timed, pass `MeasureOptions(cache_flush=True)` to `make_measurer`
    (`ember tune --cache-flush`)."""
    tasks = extract_tasks(model)
    for task in tasks:
        print(f"task {task.name}: {task.weight} call(s), {task.flops / 1e6:.1f} MFLOP, "
              f"{len(task.space())} configs")
    measurer = make_measurer("local")

    def measure_for(task):
        return lambda configs: measurer.measure(task, configs)

    try:
        with RecordLog(log_path) as log:
            summaries = tune_model(tasks, measure_for, trials=24, log=log, tuner="xgb")
    finally:
        measurer.close()
    for summary in summaries:
        speedup = f"{summary.speedup:.2f}x" if summary.speedup else "n/a"
        print(f"{summary.task.name}: {summary.trials} trials, best {summary.best_gflops:.1f} "
              f"GFLOP/s, {speedup} over the default, errors {dict(summary.errors) or 'none'}")


def compile_with_records(model, log_path: Path) -> None:
    """Step 3. Each kernel with a record for this target and CPU compiles at its fastest
    recorded config (the config is part of the kernel's cache key, so cached untuned code is
    never reused for it). `module.tuning` says how many tunable kernels had a record; those
    without one keep their template defaults, and a warning says how many."""
    untuned = ember.compile(model)
    tuned = ember.compile(model, records=log_path)
    print(f"\n{tuned.tuning}")
    x = np.random.default_rng(1).standard_normal((1, CHANNELS, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(tuned(x), untuned(x), rtol=1e-4, atol=1e-4)
    for name, module in (("untuned", untuned), ("tuned", tuned)):
        print(f"{name:>8}: {module.benchmark(repeat=30)}")
    print(f"outputs match. `ember tune model.onnx --log {log_path}` would resume this tune.")


def main() -> None:
    WORK.mkdir(exist_ok=True)
    tune_operator_from_the_cli()
    model = two_conv_model()
    log_path = WORK / "model.jsonl"
    tune_model_from_python(model, log_path)
    compile_with_records(model, log_path)


# Measurement starts worker processes that import this file again: the guard keeps them from
# running the tutorial themselves (multiprocessing's "safe importing of the main module").
if __name__ == "__main__":
    main()

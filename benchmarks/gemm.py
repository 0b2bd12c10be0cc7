"""GEMM throughput: ember's matmul against numpy (OpenBLAS) in GFLOP/s, 1 thread and all.

    python benchmarks/gemm.py [--threads 1,2] [--shapes square,llm | 128x768x3072,...]
                              [--paths packed,plain] [--repeat 20]

Shapes M x K x N: square 256..2048 and the LLM projections (M = 1, 16, 128 tokens, K = 768,
N = 768, 3072 and the 50257-wide vocabulary head). ember compiles a one-node ONNX MatMul in
two forms (`--paths`): "packed", B a weight (an initializer, as in a model), which opt level
3 packs into column panels at compile time (dense_packed, compiler/ops/cpu/dense.py); and
"plain", B a second input (as attention's products are), the matmul template
(compiler/ops/cpu/matmul.py). numpy multiplies the same arrays. Each is timed
in its own block (median of `--repeat` samples, each sample long enough to time). numpy's
OpenBLAS threads are pinned with threadpoolctl when it is installed, else by running each
thread count in a child process started with OPENBLAS_NUM_THREADS set (OpenBLAS reads it once,
at import). The floor is one core's measured FMA rate (ember.runtime.bench) times the threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SQUARE = [(n, n, n) for n in (256, 512, 1024, 2048)]
LLM = [(m, 768, n) for m in (1, 16, 128) for n in (768, 3072, 50257)]


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        if item == "square":
            shapes += SQUARE
        elif item == "llm":
            shapes += LLM
        else:
            m, k, n = (int(d) for d in item.lower().split("x"))
            shapes.append((m, k, n))
    return shapes


PATHS = ("packed", "plain")


def weight(k: int, n: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)


def matmul_model(m: int, k: int, n: int, path: str = "packed") -> onnx.ModelProto:
    """Y = A @ B with A (m, k) an input and B (k, n) a seeded weight ("packed") or a second
    input ("plain")."""
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])]
    initializers = []
    if path == "packed":
        initializers.append(numpy_helper.from_array(weight(k, n), "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n]))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], f"matmul_{m}x{k}x{n}", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_ms(fn, repeat: int, min_sample_s: float = 2e-3) -> float:
    """Median ms per call over `repeat` samples of enough calls to last `min_sample_s`."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    number = max(1, int(min_sample_s / max(once, 1e-9)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) * 1e3 / number)
    return float(np.median(samples))


def measure(shapes: list[tuple[int, int, int]], threads: int, repeat: int,
            paths: Sequence[str] = PATHS) -> list[dict]:
    """One row per shape and path: ember and numpy GFLOP/s at `threads` threads (numpy's
    threads are the caller's business)."""
    import ember
    from ember.backends.llvm.runtime import aligned

    rows = []
    for m, k, n in shapes:
        # inputs on the kernels' alignment: else every run copies them first (the "plain"
        # path's B is a 154 MiB input for the vocabulary head), which numpy does not
        a = aligned(np.random.default_rng(0).standard_normal((m, k)).astype(np.float32))
        b = aligned(weight(k, n))
        for path in paths:
            module = ember.compile(matmul_model(m, k, n, path), num_threads=threads)
            module.set_num_threads(threads)
            feeds = {"a": a} if path == "packed" else {"a": a, "b": b}
            ours = module.run(feeds)[0]
            theirs = a @ b
            matches = bool(np.allclose(ours, theirs, rtol=1e-3, atol=1e-3))
            ember_ms = time_ms(lambda module=module, feeds=feeds: module.run(feeds), repeat)
            numpy_ms = time_ms(lambda a=a, b=b: a @ b, repeat)
            flops = 2 * m * k * n
            rows.append({"shape": [m, k, n], "path": path, "threads": threads,
                         "matches": matches, "ember": flops / ember_ms / 1e6,
                         "numpy": flops / numpy_ms / 1e6})
    return rows


def rows_for(shapes: list[tuple[int, int, int]], threads: int, repeat: int,
             paths: Sequence[str] = PATHS) -> list[dict]:
    """`measure` with numpy limited to `threads` threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        command = [sys.executable, os.path.abspath(__file__), "--child", "--threads",
                   str(threads), "--repeat", str(repeat), "--paths", ",".join(paths),
                   "--shapes", ",".join(f"{m}x{k}x{n}" for m, k, n in shapes)]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the {threads}-thread run failed:\n{done.stderr}") from None
        return json.loads(done.stdout)
    with threadpool_limits(limits=threads, user_api="blas"):
        return measure(shapes, threads, repeat, paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated thread counts (default: 1 and all cores)")
    parser.add_argument("--shapes", default="square,llm",
                        help="'square', 'llm' and MxKxN shapes, comma-separated")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help="'packed' (B a weight) and/or 'plain' (B an input)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = parse_shapes(args.shapes)
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}; use {', '.join(PATHS)}")
    if args.child:  # one thread count, numpy's threads set by the parent's environment
        print(json.dumps(measure(shapes, int(args.threads), args.repeat, paths)))
        return

    from ember.runtime.bench import fma_gflops_per_core, geometric_mean

    per_core = fma_gflops_per_core()
    print(f"FMA floor: {per_core:.1f} GFLOP/s per core (measured); median of {args.repeat} "
          f"samples; ember/numpy > 1 means ember is faster")
    print(f"{'threads':>7}  {'M x K x N':<18}{'path':<8}{'ember GFLOP/s':>15}"
          f"{'numpy GFLOP/s':>15}{'ember/numpy':>13}{'ember of floor':>16}  check")
    for threads in (int(t) for t in args.threads.split(",")):
        ratios: dict[str, list[float]] = {path: [] for path in paths}
        for row in rows_for(shapes, threads, args.repeat, paths):
            m, k, n = row["shape"]
            ratio = row["ember"] / row["numpy"]
            ratios[row["path"]].append(ratio)
            check = "ok" if row["matches"] else "MISMATCH"
            print(f"{threads:>7}  {f'{m}x{k}x{n}':<18}{row['path']:<8}{row['ember']:>15.1f}"
                  f"{row['numpy']:>15.1f}{ratio:>13.2f}"
                  f"{row['ember'] / (per_core * threads):>16.1%}  {check}", flush=True)
        for path in paths:
            print(f"{threads:>7}  geometric mean of ember/numpy, {path}: "
                  f"{geometric_mean(ratios[path]):.2f} (floor {per_core * threads:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()

"""Ember against ONNX Runtime on one model, and where the time goes: the comparison shared by
`ember bench model.onnx` and benchmarks/models.py.

    comparison = compare(model, threads=2, repeat=20)      # compiles, checks, times
    print(format_header()); print(format_row("resnet50", comparison))
    print(format_kernels(top_kernels(comparison, 3), fma_gflops_per_core() * 2))

Each runtime is timed in its own block (ONNX Runtime's spinning worker threads never overlap
ember's timing): one warm-up call, then the median of `repeat` calls. ONNX Runtime runs with
its default session options except the thread count, which is ember's. The kernel table joins
`Module.profile(isolated=True)` (each kernel's own speed, its data hot in cache) with each
kernel's FLOPs (the matrix products and convolutions of its fused
group) and compares the achieved rate with the floor: one core's measured FMA rate times the
threads. The compiler is imported when a function needs it (runtime/ loads without it).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ember.backends.llvm.runtime import aligned
from ember.errors import EmberError
from ember.runtime.module import Module

#: ember's outputs must match ONNX Runtime's within these tolerances (issue 4's bar)
RTOL, ATOL = 1e-3, 1e-4


@dataclasses.dataclass
class Comparison:
    """One model compiled by ember and run by both runtimes on the same feeds."""

    model: onnx.ModelProto
    module: Module
    feeds: dict[str, np.ndarray]
    threads: int
    target: str
    input_shapes: Mapping[str, Sequence[int]] | None
    compile_s: float
    ember_ms: float
    ort_ms: float
    max_diff: float
    matches: bool

    @property
    def ratio(self) -> float:
        """ember time over ONNX Runtime time: below 1 means ember is faster."""
        return self.ember_ms / self.ort_ms


@dataclasses.dataclass(frozen=True)
class KernelCost:
    """One kernel's share of a profiled run: all its calls together."""

    kernel: str
    ops: tuple[str, ...]
    calls: int
    ms: float
    share: float
    flops: int  # over all calls

    @property
    def gflops(self) -> float:
        return self.flops / (self.ms * 1e6) if self.ms > 0 else 0.0


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of `repeat` calls of `fn` after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def ort_session(model: onnx.ModelProto, threads: int):
    """An ONNX Runtime CPU session with default options and `threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types
        raise EmberError(f"ONNX Runtime cannot load the model: {error}") from None


def model_feeds(model: onnx.ModelProto, module: Module, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feeds for `module`'s inputs: token ids below the vocabulary for ember's LLM
    workloads, normal floats (scaled by 0.1 for LLMs), zeros for other integers (safe as
    indices and positions); 64-byte aligned, as a serving loop keeps its buffers, so that
    ember reads them in place (ONNX Runtime does with any alignment)."""
    rng = np.random.default_rng(seed)
    vocab = None
    if any(prop.key == "ember.llm.config" for prop in model.metadata_props):
        from ember.workloads.llm import config_of

        vocab = config_of(model)[0].vocab
    feeds = {}
    for spec in module.inputs:
        if spec.shape is None or None in spec.shape:
            raise EmberError(f"input {spec} has no static shape; give it with "
                             f"--input-shape {spec.name}=...")
        dtype = np.dtype(spec.dtype) if spec.dtype != "bool" else np.dtype(bool)
        if spec.name == "input_ids" and vocab is not None:
            feeds[spec.name] = rng.integers(0, vocab, spec.shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            scale = 0.1 if vocab is not None else 1.0
            feeds[spec.name] = (scale * rng.standard_normal(spec.shape)).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(spec.shape, dtype)
    return {name: aligned(value) for name, value in feeds.items()}


def compare(model: onnx.ModelProto | str, threads: int, repeat: int = 20, target: str = "llvm",
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            feeds: Mapping[str, np.ndarray] | None = None) -> Comparison:
    """Compile `model` with ember, check its outputs against ONNX Runtime's, and time both.

    Args:
        model: an onnx.ModelProto or a path to an .onnx file.
        threads: threads for both runtimes.
        repeat: timed calls per runtime (the median is reported).
        target: ember's target.
        input_shapes: static shapes for inputs with symbolic dimensions.
        feeds: the inputs (default: `model_feeds`).
    """
    import ember
    from ember.compiler.frontend.onnx.importer import load_model

    model = load_model(model)
    start = time.perf_counter()
    module = ember.compile(model, target=target, input_shapes=input_shapes, num_threads=threads)
    compile_s = time.perf_counter() - start
    feeds = dict(feeds) if feeds is not None else model_feeds(model, module)
    # ember is timed before ONNX Runtime runs at all: ORT's idle intra-op workers keep spinning
    # for a while after a run, and on 2 cores they would take one from ember (gpt2-small decode
    # measured 63 ms right after an ORT run and 17 ms alone)
    ours = module.run(feeds)
    ember_ms = median_ms(lambda: module.run(feeds), repeat)
    session = ort_session(model, threads)
    theirs = session.run(None, feeds)
    ort_ms = median_ms(lambda: session.run(None, feeds), repeat)
    max_diff, matches = 0.0, True
    for got, want in zip(ours, theirs, strict=True):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            max_diff, matches = math.inf, False
            continue
        if got.size and np.issubdtype(got.dtype, np.number):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            max_diff = max(max_diff, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0)
            matches &= bool(np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True))
    return Comparison(model, module, feeds, threads, target, input_shapes, compile_s, ember_ms,
                      ort_ms, max_diff, matches)


# ------------------------------------------------------------------------------- FLOPs


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def node_flops(op: str, input_shapes: Sequence[Sequence[int] | None],
               output_shape: Sequence[int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of one node of the optimized graph; 0 for ops other than
    matrix products and convolutions (their work is memory-bound and not counted)."""
    if op in ("matmul", "dense_packed"):  # dense_packed: x (..., K), packed weight
        a = input_shapes[0]
        return 2 * _numel(output_shape) * (int(a[-1]) if a else 1)
    if op == "conv":  # weight (M, C/groups, *K)
        return 2 * _numel(output_shape) * _numel(input_shapes[1][1:])
    if op == "conv2d_nchwc":  # weight (OC/oc, IC/ic, KH, KW, ic, oc)
        return 2 * _numel(output_shape) * _numel(input_shapes[1][1:5])
    if op == "depthwise_conv2d_nchwc":  # weight (C/c, KH, KW, c)
        return 2 * _numel(output_shape) * _numel(input_shapes[1][1:3])
    if op == "conv_transpose":  # weight (C, M/groups, *K): every input element meets M/g * K
        return 2 * _numel(input_shapes[0]) * _numel(input_shapes[1][1:])
    return 0


def kernel_flops(model: onnx.ModelProto, target: str = "llvm",
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, int]:
    """FLOPs of one call of each kernel that ember compiles `model` to, by kernel name.

    The kernel calls of `plan_kernels` follow the fused groups in order, and each group's
    calls cover its nodes in order (the group itself, the anchor's part then the epilogue, or
    one call per node), so a call's nodes are the next `len(call.ops)` nodes of its group."""
    from ember.compiler.build import plan_kernels
    from ember.compiler.frontend.onnx import import_onnx
    from ember.compiler.passes import fuse
    from ember.target import Target

    graph, kernels = plan_kernels(import_onnx(model, input_shapes), Target.parse(target))
    if kernels is None:
        return {}
    nodes = [graph.nodes[k] for group in fuse(graph).groups for k in group.nodes]
    flops: dict[str, int] = {}
    position = 0
    for call in kernels.calls:
        part = nodes[position:position + len(call.ops)]
        position += len(call.ops)
        if tuple(node.op for node in part) != call.ops:
            raise EmberError(f"kernel {call.kernel} computes {call.ops} but the fused groups "
                             f"give {tuple(node.op for node in part)} there")
        flops[call.kernel] = sum(
            node_flops(node.op, [graph.types[v].shape if v else None for v in node.inputs],
                       graph.types[node.outputs[0]].shape)
            for node in part)
    return flops


def top_kernels(comparison: Comparison, count: int = 3, repeat: int = 5) -> list[KernelCost]:
    """The `count` kernels with the most time in `comparison.module.profile()` (all calls of
    a kernel together), with their FLOPs."""
    profile = comparison.module.profile(comparison.feeds, repeat=repeat, isolated=True)
    flops = kernel_flops(comparison.model, comparison.target, comparison.input_shapes)
    total = sum(row.ms for row in profile) or 1.0
    merged: dict[str, list] = {}
    for row in profile:
        entry = merged.setdefault(row.kernel, [row.ops, 0, 0.0])
        entry[1] += 1
        entry[2] += row.ms
    costs = [KernelCost(kernel, ops, calls, ms, ms / total, flops.get(kernel, 0) * calls)
             for kernel, (ops, calls, ms) in merged.items()]
    return sorted(costs, key=lambda cost: cost.ms, reverse=True)[:count]


# ------------------------------------------------------------------------------- floor


def _fma_ir(lanes: int, chains: int) -> str:
    vec = f"<{lanes} x float>"
    splat = lambda value: f"<{', '.join([f'float {value}'] * lanes)}>"  # noqa: E731
    lines = [f"declare {vec} @llvm.fma.v{lanes}f32({vec}, {vec}, {vec})",
             "define void @fma_chains(i64 %n, ptr %out) {",
             "entry:", "  br label %loop", "loop:",
             "  %i = phi i64 [0, %entry], [%next, %loop]"]
    for c in range(chains):
        lines.append(f"  %a{c} = phi {vec} [{splat(f'{1.0 + c / 64:e}')}, %entry], "
                     f"[%b{c}, %loop]")
    for c in range(chains):
        # x * 0.5 + 0.5 converges to 1: values stay finite for any number of iterations
        lines.append(f"  %b{c} = call {vec} @llvm.fma.v{lanes}f32({vec} %a{c}, "
                     f"{vec} {splat('5.000000e-01')}, {vec} {splat('5.000000e-01')})")
    lines += ["  %next = add i64 %i, 1", "  %done = icmp eq i64 %next, %n",
              "  br i1 %done, label %exit, label %loop", "exit:"]
    total = "%b0"
    for c in range(1, chains):  # one sum keeps every chain alive
        lines.append(f"  %s{c} = fadd {vec} {total}, %b{c}")
        total = f"%s{c}"
    lines += [f"  store {vec} {total}, ptr %out, align 4", "  ret void", "}"]
    return "\n".join(lines)


@functools.cache
def fma_gflops_per_core(chains: int = 12, iterations: int = 2_000_000, trials: int = 5
                        ) -> float:
    """One core's peak float32 FMA rate in GFLOP/s: `chains` independent chains of fused
    multiply-adds on full SIMD registers (enough to hide the FMA latency on every port),
    best of `trials`; 2 FLOPs per lane per FMA."""
    import llvmlite.binding as llvm

    from ember.backends.llvm.host import new_target_machine, resolve_target

    info = resolve_target("llvm")
    lanes = max(4, info.vector_bits // 32)
    module = llvm.parse_assembly(_fma_ir(lanes, chains))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, new_target_machine(info))
    engine.finalize_object()
    run = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
        engine.get_function_address("fma_chains"))
    out = np.zeros(lanes, np.float32)
    run(1000, out.ctypes.data)
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        run(iterations, out.ctypes.data)
        best = min(best, time.perf_counter() - start)
    del engine  # after the last call: the engine owns the code
    return 2 * lanes * chains * iterations / best / 1e9


# ------------------------------------------------------------------------------- tables


def format_header() -> str:
    return (f"{'model':<24}{'compile s':>10}{'ember ms':>11}{'ORT ms':>11}{'ember/ORT':>11}"
            f"{'max |diff|':>12}  check")


def format_row(name: str, comparison: Comparison) -> str:
    check = "ok" if comparison.matches else f"MISMATCH (rtol {RTOL}, atol {ATOL})"
    return (f"{name:<24}{comparison.compile_s:>10.2f}{comparison.ember_ms:>11.3f}"
            f"{comparison.ort_ms:>11.3f}{comparison.ratio:>11.2f}{comparison.max_diff:>12.2e}"
            f"  {check}")


def format_kernels(costs: Sequence[KernelCost], floor_gflops: float) -> str:
    """The top-kernel table: time, achieved GFLOP/s and its share of the floor."""
    lines = [f"  {'kernel':<44}{'ops':<30}{'calls':>6}{'ms':>9}{'share':>7}{'GFLOP/s':>9}"
             f"{'of floor':>9}"]
    for cost in costs:
        ops = "+".join(cost.ops)
        ops = ops if len(ops) <= 28 else ops[:25] + "..."
        rate = f"{cost.gflops:>9.1f}{cost.gflops / floor_gflops:>9.1%}" if cost.flops else \
            f"{'-':>9}{'-':>9}"
        lines.append(f"  {cost.kernel[:43]:<44}{ops:<30}{cost.calls:>6}{cost.ms:>9.3f}"
                     f"{cost.share:>7.1%}{rate}")
    return "\n".join(lines)


def floor_line(threads: int) -> tuple[float, str]:
    """The GEMM floor for `threads` threads and a line that says how it was measured."""
    per_core = fma_gflops_per_core()
    floor = per_core * threads
    return floor, (f"floor: {per_core:.1f} GFLOP/s per core (measured FMA rate) x {threads} "
                   f"thread(s) = {floor:.1f} GFLOP/s")


def run_bench_command(args: Any) -> None:
    """`ember bench MODEL`: the comparison row, then the top kernels against the floor."""
    import os

    threads = args.threads or os.cpu_count() or 1
    comparison = compare(args.model, threads, args.repeat, args.target, args.input_shapes)
    print(f"ember against ONNX Runtime, target {args.target!r}, {threads} thread(s), median of "
          f"{args.repeat} runs")
    print(format_header())
    print(format_row(os.path.basename(args.model), comparison))
    if args.kernels <= 0:
        return
    try:
        costs = top_kernels(comparison, args.kernels)
    except EmberError as error:
        print(f"no kernel profile: {error}")
        return
    floor, line = floor_line(threads)
    print(f"top {len(costs)} kernel(s); {line}")
    print(format_kernels(costs, floor))


__all__ = ["Comparison", "KernelCost", "compare", "floor_line", "fma_gflops_per_core",
           "format_header", "format_kernels", "format_row", "geometric_mean", "kernel_flops",
           "median_ms", "model_feeds", "node_flops", "ort_session", "run_bench_command",
           "top_kernels"]

"""The `ember` command line: inspect, compile, run and demo (`python -m ember` works too)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ember.errors import EmberError


def _parse_shapes(pairs: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """`["x=1,3,224,224", ...]` -> {"x": (1, 3, 224, 224)}."""
    if not pairs:
        return None
    shapes = {}
    for pair in pairs:
        name, sep, dims = pair.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise EmberError(
                f"--input-shape {pair!r} must look like name=1,3,224,224"
            ) from None
    return shapes


def _format_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError


def cmd_inspect(args: argparse.Namespace) -> None:
    from ember.compiler.frontend.onnx import import_onnx
    from ember.ir.graph import format_graph

    graph = import_onnx(args.model, _parse_shapes(args.input_shape))
    if args.ir:
        print(format_graph(graph, show_constants=args.constants))
        return
    print(f"graph {graph.name!r}: {len(graph.nodes)} nodes, {len(graph.constants)} constants "
          f"({_format_bytes(graph.param_bytes())} of parameters)")
    print("inputs:")
    for name in graph.inputs:
        print(f"  {name}: {graph.types[name]}")
    print("outputs:")
    for name in graph.outputs:
        print(f"  {name}: {graph.types[name]}")
    print("ops:")
    for op, count in Counter(node.op for node in graph.nodes).most_common():
        print(f"  {op:<24}{count:>6}")


def cmd_compile(args: argparse.Namespace) -> None:
    import ember

    start = time.perf_counter()
    module = ember.compile(args.model, target=args.target,
                           input_shapes=_parse_shapes(args.input_shape))
    seconds = time.perf_counter() - start
    stats = module.kernel_stats()
    print(f"compiled {args.model} for {module.target} in {seconds:.2f} s: "
          f"{stats['kernels']} kernel(s) for {stats['steps']} step(s)")
    for spec in module.inputs:
        print(f"  input  {spec}")
    for spec in module.outputs:
        print(f"  output {spec}")


def _load_inputs(path: str | None, module) -> dict[str, np.ndarray]:
    if path is None:
        return module.random_inputs(seed=0)
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise EmberError(f"cannot read inputs from {path!r}: {error}") from None


def cmd_run(args: argparse.Namespace) -> None:
    import ember

    start = time.perf_counter()
    module = ember.compile(args.model, target=args.target,
                           input_shapes=_parse_shapes(args.input_shape))
    compile_s = time.perf_counter() - start
    feeds = _load_inputs(args.inputs, module)
    start = time.perf_counter()
    outputs = module.run(feeds)
    run_ms = (time.perf_counter() - start) * 1e3
    print(f"compiled for {module.target} in {compile_s:.2f} s; ran in {run_ms:.2f} ms"
          f"{' on random inputs (seed 0)' if args.inputs is None else ''}")
    for spec, value in zip(module.outputs, outputs):
        checksum = float(np.sum(value.astype(np.float64))) if value.dtype != object else 0.0
        print(f"  {spec.name}: {value.dtype}{list(value.shape)}  sum={checksum:.6g}")
    if args.output:
        np.savez(args.output, **{spec.name: v for spec, v in zip(module.outputs, outputs)})
        print(f"outputs written to {args.output}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ember.compiler.demo import run_demo

    run_demo(model=args.model, target=args.target, repeat=args.repeat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="ember: compile ONNX models to fast native code."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shape_help = "static shape for an input with symbolic dimensions: name=1,3,224,224"

    inspect = commands.add_parser("inspect", help="summarize a model (op counts, signature)")
    inspect.add_argument("model", help="path to an .onnx model")
    inspect.add_argument("--ir", action="store_true", help="print the whole graph IR")
    inspect.add_argument("--constants", action="store_true", help="with --ir: list constants")
    inspect.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    inspect.set_defaults(func=cmd_inspect)

    compile_ = commands.add_parser("compile", help="compile a model; print time and kernels")
    compile_.add_argument("model", help="path to an .onnx model")
    compile_.add_argument("--target", default="llvm", help="compilation target (llvm, reference)")
    compile_.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    compile_.set_defaults(func=cmd_compile)

    run = commands.add_parser("run", help="compile a model and run it once")
    run.add_argument("model", help="path to an .onnx model")
    run.add_argument("--target", default="llvm", help="compilation target (llvm, reference)")
    run.add_argument("--inputs", help=".npz file of inputs by name (default: random inputs)")
    run.add_argument("--output", "-o", help="write the outputs to this .npz file")
    run.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser(
        "demo", help="compile a built-in model, check it and time it against the references"
    )
    demo.add_argument("--model", default="resnet50",
                      help="one of the onnx package's light models (default resnet50)")
    demo.add_argument("--target", default=None, help="compilation target (default: ember's)")
    demo.add_argument("--repeat", type=int, default=5, help="timed runs per executor")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EmberError as error:
        print(f"ember: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `ember` command line: inspect, compile, run, tune and demo (`python -m ember` works
too)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ember.autotune.cli import parse_input_shapes
from ember.errors import EmberError


def _format_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError


def cmd_inspect(args: argparse.Namespace) -> None:
    from ember.compiler.frontend.onnx import import_onnx
    from ember.ir.graph import format_graph

    graph = import_onnx(args.model, parse_input_shapes(args.input_shape))
    if args.kernel is not None:
        print(_kernel_code(graph, args))
        return
    if args.fusion:
        from ember.compiler.passes import format_plan, fuse, optimize

        optimized = optimize(graph, 2)
        print(f"graph {graph.name!r}: {len(graph.nodes)} nodes imported, {len(optimized.nodes)} "
              "after the opt level 2 passes")
        print(format_plan(optimized, fuse(optimized)))
        return
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


def _kernel_code(graph, args: argparse.Namespace) -> str:
    """One kernel of the compiled model: its loop IR, or with --llvm / --asm its optimized
    LLVM IR or assembly. A name prefix is enough when it names one kernel."""
    from ember.compiler.build import plan_kernels
    from ember.ir.printer import format_func
    from ember.target import Target

    target = Target.parse(args.target)
    graph, kernels = plan_kernels(graph, target)
    if kernels is None:
        raise EmberError(f"target {args.target!r} runs no kernels; use --target llvm")
    names = kernels.names
    matches = [n for n in names if n == args.kernel] or [n for n in names
                                                         if n.startswith(args.kernel)]
    if len(matches) != 1:
        found = "several kernels" if matches else "no kernel"
        raise EmberError(f"{found} named {args.kernel!r}; the model's kernels are:\n  "
                         + "\n  ".join(names))
    func = kernels.lower(matches[0])
    if not (args.llvm or args.asm):
        return format_func(func)
    from ember.backends.llvm.jit import compile_primfuncs

    library = compile_primfuncs([func], str(target))
    return library.optimized_ir if args.llvm else library.assembly()


def cmd_compile(args: argparse.Namespace) -> None:
    import ember

    start = time.perf_counter()
    module = ember.compile(args.model, target=args.target,
                           input_shapes=parse_input_shapes(args.input_shape), records=args.records)
    seconds = time.perf_counter() - start
    stats = module.kernel_stats()
    print(f"compiled {args.model} for {module.target} in {seconds:.2f} s: "
          f"{stats['kernels']} kernel(s) for {stats['steps']} step(s)")
    if getattr(module, "tuning", None) is not None:
        print(f"  {module.tuning}")
    for spec in module.inputs:
        print(f"  input  {spec}")
    for spec in module.outputs:
        print(f"  output {spec}")
    if args.output:
        path = module.save(args.output)
        print(f"saved to {path} (run it with `ember run {path}`, or ember.load in Python)")


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
    if os.path.isdir(args.model):  # a saved artefact
        module = ember.load(args.model)
        verb = "loaded"
    else:
        module = ember.compile(args.model, target=args.target,
                               input_shapes=parse_input_shapes(args.input_shape),
                               records=args.records)
        verb = "compiled"
    prepare_s = time.perf_counter() - start
    feeds = _load_inputs(args.inputs, module)
    start = time.perf_counter()
    outputs = module.run(feeds)
    run_ms = (time.perf_counter() - start) * 1e3
    print(f"{verb} for {module.target} in {prepare_s:.2f} s; ran in {run_ms:.2f} ms"
          f"{' on random inputs (seed 0)' if args.inputs is None else ''}")
    if args.profile:
        print(module.profile(feeds))
    for spec, value in zip(module.outputs, outputs):
        checksum = float(np.sum(value.astype(np.float64))) if value.dtype != object else 0.0
        print(f"  {spec.name}: {value.dtype}{list(value.shape)}  sum={checksum:.6g}")
    if args.output:
        np.savez(args.output, **{spec.name: v for spec, v in zip(module.outputs, outputs)})
        print(f"outputs written to {args.output}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ember.compiler.demo import run_demo

    run_demo(model=args.model, target=args.target, repeat=args.repeat)


def cmd_zoo(args: argparse.Namespace) -> None:
    from ember.workloads.zoo import run_zoo_command

    run_zoo_command(args)


def cmd_bench(args: argparse.Namespace) -> None:
    from ember.runtime.bench import run_bench_command

    args.input_shapes = parse_input_shapes(args.input_shape)
    run_bench_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="ember: compile ONNX models to fast native code."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shape_help = "static shape for an input with symbolic dimensions: name=1,3,224,224"
    records_help = "tuning records (`ember tune --log LOG`): compile each kernel at its best"

    inspect = commands.add_parser("inspect", help="summarize a model (op counts, signature)")
    inspect.add_argument("model", help="path to an .onnx model")
    inspect.add_argument("--ir", action="store_true", help="print the whole graph IR")
    inspect.add_argument("--fusion", action="store_true",
                         help="list the fused groups (kernels) and the refused fusions")
    inspect.add_argument("--constants", action="store_true", help="with --ir: list constants")
    inspect.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    inspect.add_argument("--kernel", metavar="NAME",
                         help="print one kernel's loop IR (a name or a unique prefix; a wrong "
                              "name lists them)")
    code = inspect.add_mutually_exclusive_group()
    code.add_argument("--llvm", action="store_true", help="with --kernel: optimized LLVM IR")
    code.add_argument("--asm", action="store_true", help="with --kernel: assembly")
    inspect.add_argument("--target", default="llvm", help="target for --kernel (default llvm)")
    inspect.set_defaults(func=cmd_inspect)

    compile_ = commands.add_parser("compile", help="compile a model; print time and kernels")
    compile_.add_argument("model", help="path to an .onnx model")
    compile_.add_argument("--target", default="llvm", help="compilation target (llvm, reference)")
    compile_.add_argument("--output", "-o", metavar="DIR",
                          help="save the compiled module as an artefact directory (model.ember)")
    compile_.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    compile_.add_argument("--records", metavar="LOG", help=records_help)
    compile_.set_defaults(func=cmd_compile)

    run = commands.add_parser("run", help="compile a model (or load a saved one) and run it once")
    run.add_argument("model", help="path to an .onnx model or a saved .ember artefact")
    run.add_argument("--target", default="llvm", help="compilation target (llvm, reference)")
    run.add_argument("--inputs", help=".npz file of inputs by name (default: random inputs)")
    run.add_argument("--output", "-o", help="write the outputs to this .npz file")
    run.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    run.add_argument("--records", metavar="LOG", help=records_help)
    run.add_argument("--profile", action="store_true",
                     help="time each kernel call, in order as in a run (Module.profile)")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser(
        "demo", help="compile a built-in model, check it and time it against the references"
    )
    demo.add_argument("--model", default="resnet50",
                      help="one of the onnx package's light models (default resnet50)")
    demo.add_argument("--target", default=None, help="compilation target (default: ember's)")
    demo.add_argument("--repeat", type=int, default=5, help="timed runs per executor")
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser(
        "bench", help="time a model against ONNX Runtime; list its most expensive kernels"
    )
    bench.add_argument("model", help="path to an .onnx model")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for both runtimes (default: one per core)")
    bench.add_argument("--repeat", type=int, default=20, help="timed runs per runtime (median)")
    bench.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    bench.add_argument("--kernels", type=int, default=3,
                       help="how many of the most expensive kernels to list (0: none)")
    bench.add_argument("--target", default="llvm", help="compilation target (default llvm)")
    bench.set_defaults(func=cmd_bench)

    zoo = commands.add_parser("zoo", help="list the built-in workload models or export one")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    zoo_list = zoo_commands.add_parser("list", help="name, kind, params, FLOPs, description")
    zoo_list.add_argument("--kind", help="only models of this kind (llm, xr)")
    zoo_list.add_argument("pattern", nargs="?",
                          help="only names matching this glob or word ('*-tiny-*', 'llama')")
    zoo_export = zoo_commands.add_parser("export", help="write a zoo model as ONNX")
    zoo_export.add_argument("name", help="zoo model name (see `ember zoo list`)")
    zoo_export.add_argument("--output", "-o", required=True, help="path of the .onnx to write")
    zoo.set_defaults(func=cmd_zoo)

    from ember.autotune.cli import add_tune_parser

    add_tune_parser(commands)
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

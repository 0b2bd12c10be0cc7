"""Kernel calls and the memory plan of each light model, at opt levels 0, 2 and 3.

    python benchmarks/memory_plan.py

Imports each of the onnx package's light models, runs the opt level's graph passes and fusion
(compiler/build.py's `plan_kernels`), plans its memory (compiler/memory_plan.py) and prints the
kernel calls (reshapes that alias their input make none), the planned arena, the naive total
(one buffer per intermediate value) and their ratio, at the default level 3. Nothing is
compiled.
"""

from __future__ import annotations

from ember.compiler.build import plan_kernels
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.memory_plan import plan_program
from ember.target import Target
from ember.workloads.light import LIGHT_MODELS, light_model

LLVM = Target.parse("llvm")


def main() -> None:
    print(f"{'model':<14} {'nodes':>6} {'calls O0':>9} {'calls O2':>9} {'calls O3':>9} "
          f"{'arena MiB':>10} {'naive MiB':>10} {'ratio':>6}")
    for name in LIGHT_MODELS:
        imported = import_onnx(light_model(name))
        calls = []
        for level in (0, 2, 3):
            graph, kernels = plan_kernels(imported, LLVM, level)
            program = plan_program(graph, kernels.calls)
            calls.append(len(program.steps))
        mib = 1 << 20
        print(f"{name:<14} {len(imported.nodes):>6} {calls[0]:>9} {calls[1]:>9} {calls[2]:>9} "
              f"{program.arena_bytes / mib:>10.2f} {program.naive_bytes / mib:>10.2f} "
              f"{program.arena_bytes / program.naive_bytes:>6.2f}")


if __name__ == "__main__":
    main()

"""Test-only tuning tasks for tests/unit/test_autotune_measure.py.

`FaultyTask` looks like an autotune Task (workload, target, name, key, space, instantiate) for
an elementwise add of two float32 vectors, but its one knob picks how the candidate misbehaves:
a correct kernel, one that stores far out of bounds (segfault), one that never ends, one that
computes the wrong values, one that leaves outputs unwritten, one that writes just past its
output, an instantiate that raises, one that sleeps, one whose code LLVM cannot build, and
one that kills the build worker.
The kernels are written by hand in final-form loop IR (flat buffers), as externs are.

It lives in a module of its own, not in the test file, so that measurement's worker processes
(forked from a server that imports modules by name) can unpickle it.
"""

from __future__ import annotations

import dataclasses
import os
import time

from ember.compiler.ops.registry import Workload
from ember.compiler.space import Config, ConfigSpace
from ember.errors import ScheduleError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.target import Target

BEHAVIOURS = ("good", "segfault", "hang", "wrong", "unwritten", "overflow", "raise", "sleep",
              "bad_code", "abort_build")
SIZE = 1024


def add_workload(size: int = SIZE) -> Workload:
    op = get_op("add")
    attrs = op.make_attrs({})
    types = (TensorType((size,), "float32"), TensorType((size,), "float32"))
    return Workload("add", attrs, types, op.infer_types(attrs, types))


def _kernel(name: str, behaviour: str, size: int) -> L.PrimFunc:
    a, b = L.Buffer("a", (size,), "float32"), L.Buffer("b", (size,), "float32")
    out = L.Buffer("out", (size,), "float32")
    i, r = E.Var("i"), E.Var("r")
    total = L.Load(a, (i,)) + L.Load(b, (i,))
    if behaviour == "good":
        body = L.loop(i, size, L.Store(out, (i,), total))
    elif behaviour == "segfault":
        # 2**40 floats past the buffer: unmapped memory in any process
        body = L.loop(i, size, L.Store(out, (i + E.const(1 << 40),), total))
    elif behaviour == "hang":
        # float adds are not reassociable, so LLVM must run all 2**40 * size of them
        step = L.Store(out, (i,), L.Load(out, (i,)) + L.Load(a, (i,)))
        body = L.seq(L.loop(i, size, L.Store(out, (i,), total)),
                     L.loop(r, 1 << 40, L.loop(i, size, step)))
    elif behaviour == "wrong":
        body = L.loop(i, size, L.Store(out, (i,), total + E.const(0.5, "float32")))
    elif behaviour == "unwritten":
        body = L.loop(i, size // 2, L.Store(out, (i,), total))
    elif behaviour == "overflow":
        # sixteen floats past the end: inside the guard zone, so it cannot crash
        last = L.Load(a, (E.const(0),))
        body = L.seq(L.loop(i, size, L.Store(out, (i,), total)),
                     L.loop(r, 16, L.Store(out, (r + E.const(size),), last)))
    elif behaviour == "bad_code":
        # a fast-math flag LLVM does not know: code generation refuses the function
        return L.PrimFunc(name, (a, b, out), L.loop(i, size, L.Store(out, (i,), total)),
                          (("fast_math", ("no_such_flag",)),))
    else:
        raise ValueError(behaviour)
    return L.PrimFunc(name, (a, b, out), body)


@dataclasses.dataclass(frozen=True)
class FaultyTask:
    """A stand-in for autotune.task.Task whose configs misbehave on purpose."""

    size: int = SIZE
    target: Target = Target("llvm")
    family: str = "cpu"
    weight: int = 1
    sleep_s: float = 30.0

    @property
    def workload(self) -> Workload:
        return add_workload(self.size)

    @property
    def name(self) -> str:
        return f"faulty_add_{self.size}"

    @property
    def key(self) -> str:
        return self.name

    @property
    def flops(self) -> int:
        return self.size

    def space(self) -> ConfigSpace:
        space = ConfigSpace()
        space.define_knob("behaviour", BEHAVIOURS)
        return space

    def config(self, behaviour: str) -> Config:
        return self.space().from_values({"behaviour": behaviour})

    def instantiate(self, config: Config) -> L.PrimFunc:
        behaviour = config["behaviour"]
        if behaviour == "raise":
            raise ScheduleError("test template: split factor 7 does not divide extent 1024")
        if behaviour == "sleep":
            time.sleep(self.sleep_s)
        if behaviour == "abort_build":
            os.abort()  # the build worker dies, as if LLVM crashed
        return _kernel(self.name, "good" if behaviour == "sleep" else behaviour, self.size)

    def describe(self) -> str:
        return str(self.workload)


def echo_or_misbehave(request: object) -> object:
    """A worker handler for tests of workers.py: sleeps for a float, dies for "abort",
    answers anything else with itself and the worker's process id."""
    if isinstance(request, float):
        time.sleep(request)
    if request == "abort":
        os.abort()
    return request, os.getpid()

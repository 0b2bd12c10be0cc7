"""What measurement does inside its worker processes: build a candidate, run and check it.

measure.py sends requests to child processes (workers.py) and gets these functions' replies:

- `build_candidate((task, config))` in a build worker: lower the kernel at the config
  (`task.instantiate`), compile it with LLVM, and return its object code (`BuiltKernel`), or
  the phase that failed (`BuildFailure`: "instantiation" for schedule and lowering errors,
  "compile" for code generation and LLVM errors);
- `run_candidate(RunRequest)` in the runner: link the object code into the runner, run the
  kernel once on the task's seeded inputs (`TaskData`, made once per task by `make_task_data`
  in the tuner's process) and compare its outputs with the numpy reference, then time
  `repeat` batches of `number` calls, `number` raised until a batch lasts `min_repeat_ms`.
  Every buffer sits between guard zones; a kernel that writes outside its outputs is a
  runtime error even when it does not crash, and outputs start as NaN (or a byte pattern) so
  a kernel that leaves some unwritten is a wrong answer.

A kernel that crashes or hangs takes its runner with it; measure.py sees the process die or
run over its deadline and reports that. Replies are plain values so that this module does
not import measure.py (which imports it).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import math
import resource
import signal
import time
from collections.abc import Sequence
from typing import Any

import llvmlite.binding as llvm
import numpy as np

from ember.backends.llvm.host import jit_engine, object_engine, resolve_target
from ember.backends.llvm.jit import compile_primfuncs
from ember.backends.llvm.parallel import default_num_threads, get_runtime, set_num_threads
from ember.backends.llvm.runtime import Kernel, KernelSignature, empty_aligned
from ember.compiler.ops.fused import FusedWorkload
from ember.ir.graph import TensorType, is_float, numpy_dtype
from ember.ir.ops import get_op
from ember.target import Target

#: (rtol, atol) of the output check by dtype; float32 allows for FMA contraction and reordered
#: sums. atol is scaled by the output's largest magnitude (see `compare_outputs`).
TOLERANCES = {
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
    "float32": (1e-4, 1e-5),
    "float64": (1e-10, 1e-12),
}
#: bytes of guard zone before and after every buffer a kernel gets
GUARD_BYTES = 4096
_GUARD_BYTE = 0xA5
_UNWRITTEN_BYTE = 0x5A
#: a batch never grows past this many calls, however fast the kernel
MAX_NUMBER = 1 << 24
#: seconds of untimed batches between calibration and the timed repeats
SETTLE_S = 0.1
_MESSAGE_LIMIT = 2000


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + " ..."


def worker_defaults() -> None:
    """Settings of every measurement worker: Ctrl-C is ignored (the tuner's process handles
    it and closes the workers), and a crashing candidate leaves no core file behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ValueError, OSError):
        pass


# ----------------------------------------------------------------------------- building


@dataclasses.dataclass(frozen=True)
class BuiltKernel:
    """A candidate's machine code: what the runner links and calls."""

    name: str
    signature: KernelSignature
    objects: tuple[bytes, ...]
    target: str
    build_s: float


@dataclasses.dataclass(frozen=True)
class BuildFailure:
    error: str  # an ErrorClass value: "instantiation" or "compile"
    message: str
    build_s: float


def build_candidate(request: tuple[Any, Any]) -> BuiltKernel | BuildFailure:
    """Lower `task` at `config` and compile it to object code; never raises."""
    task, config = request
    start = time.perf_counter()
    try:
        func = task.instantiate(config)
    except Exception as error:
        return BuildFailure("instantiation", _describe(error), time.perf_counter() - start)
    try:
        library = compile_primfuncs([func], resolve_target(str(task.target)))
        signature = library.get(func.name).signature
        objects = tuple(library.object_code)
    except Exception as error:
        return BuildFailure("compile", _describe(error), time.perf_counter() - start)
    return BuiltKernel(func.name, signature, objects, str(task.target),
                       time.perf_counter() - start)


def builder_setup() -> None:
    worker_defaults()


# ----------------------------------------------------------------------------- task data


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A task's kernel inputs (in param order) and, when checking, the expected outputs."""

    key: str
    inputs: tuple[np.ndarray, ...]
    output_types: tuple[TensorType, ...]
    expected: tuple[np.ndarray, ...] | None


def task_seed(key: str) -> int:
    """The seed of a task's inputs: the same inputs for the same task in every process."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def random_inputs(types: Sequence[TensorType], seed: int, low: float = -1.0,
                  high: float = 1.0) -> list[np.ndarray]:
    """Seeded inputs: floats uniform in [low, high); integers in [0, m) where m is the smallest
    extent of any input, so they are valid indices into any axis; booleans at random."""
    rng = np.random.default_rng(seed)
    extents = [d for t in types for d in t.shape if d > 0]
    smallest = max(1, min(extents, default=1))
    arrays = []
    for t in types:
        dtype = numpy_dtype(t.dtype)
        if is_float(t.dtype):
            arrays.append(rng.uniform(low, high, t.shape).astype(dtype))
        elif t.dtype == "bool":
            arrays.append(rng.random(t.shape) < 0.5)
        else:
            limit = min(smallest, int(np.iinfo(dtype).max) + 1)
            arrays.append(rng.integers(0, limit, t.shape).astype(dtype))
    return arrays


def reference_outputs(workload: Any, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The numpy references of `workload`'s ops, composed for a fused group. `inputs` are the
    workload's inputs (None for an omitted optional input of a single op)."""
    if isinstance(workload, FusedWorkload):
        produced: list[Sequence[np.ndarray]] = []
        for node, sources in zip(workload.nodes, workload.sources):
            arrays = [None if s is None else inputs[s[1]] if s[0] == "arg"
                      else produced[s[1]][s[2]] for s in sources]
            produced.append(get_op(node.op).evaluate(node.attrs, arrays))
        results = produced[-1]
    else:
        results = get_op(workload.op).evaluate(workload.attrs, list(inputs))
    return [np.ascontiguousarray(np.asarray(r, dtype=numpy_dtype(t.dtype)).reshape(t.shape))
            for r, t in zip(results, workload.output_types)]


def make_task_data(task: Any, check: bool = True) -> TaskData:
    """The inputs of `task`'s kernel and (when `check`) the reference outputs on them.

    Inputs are uniform in [-1, 1), so that signs matter (an epilogue's relu is checked). Where
    that gives NaN outputs (a variance, a log or a square root of a negative input), positive
    inputs are used instead if they give fewer: a reference of NaNs checks nothing.
    Exceptions of the reference propagate: they are no candidate's fault."""
    workload = task.workload
    types = list(workload.input_types)
    present = [t for t in types if t is not None]

    def attempt(low: float, high: float) -> tuple[list[np.ndarray], tuple | None, int]:
        inputs = random_inputs(present, task_seed(task.key), low, high)
        if not check:
            return inputs, None, 0
        given = iter(inputs)
        full = [next(given) if t is not None else None for t in types]
        with np.errstate(all="ignore"):
            expected = tuple(reference_outputs(workload, full))
        nans = sum(int(np.count_nonzero(np.isnan(e))) for e in expected
                   if e.dtype.kind in "fcV" and is_float(str(e.dtype)))
        return inputs, expected, nans

    inputs, expected, nans = attempt(-1.0, 1.0)
    if nans:
        positive = attempt(0.1, 1.0)
        if positive[2] < nans:
            inputs, expected, _ = positive
    return TaskData(task.key, tuple(inputs), tuple(workload.output_types), expected)


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """Run `kernel` on the task's data (sent along only when the runner does not have it)."""

    task_key: str
    data: TaskData | None
    kernel: BuiltKernel
    repeat: int
    number: int
    min_repeat_ms: float
    check: bool
    cache_flush: bool = False


@dataclasses.dataclass(frozen=True)
class RunReply:
    costs: tuple[float, ...]
    error: str | None  # an ErrorClass value: "runtime" or "wrong_answer"
    message: str = ""


class _Guarded:
    """An aligned array between two guard zones of a known byte."""

    def __init__(self, shape: Sequence[int], dtype: np.dtype):
        nbytes = math.prod(shape) * dtype.itemsize
        self.raw = empty_aligned(nbytes + 2 * GUARD_BYTES, np.uint8)
        self.raw[:GUARD_BYTES] = _GUARD_BYTE
        self.raw[GUARD_BYTES + nbytes:] = _GUARD_BYTE
        #: the buffer's own bytes, between the guards
        self.body = self.raw[GUARD_BYTES:GUARD_BYTES + nbytes]
        self.array = self.body.view(dtype).reshape(shape)

    @property
    def address(self) -> int:
        return self.raw.ctypes.data + GUARD_BYTES

    def guards_intact(self) -> bool:
        return bool(np.all(self.raw[:GUARD_BYTES] == _GUARD_BYTE)
                    and np.all(self.raw[GUARD_BYTES + self.array.nbytes:] == _GUARD_BYTE))


_TASKS: dict[str, TaskData] = {}


def runner_setup() -> None:
    """Build the parallel runtime once, before the first candidate's deadline runs."""
    worker_defaults()
    get_runtime()


def run_candidate(request: RunRequest) -> RunReply:
    """Link, check and time one candidate; never raises (a crash kills the process)."""
    try:
        if request.data is not None:
            _TASKS.clear()
            _TASKS[request.task_key] = request.data
        data = _TASKS.get(request.task_key)
        if data is None:
            return RunReply((), "runtime", f"the runner has no data for task "
                                            f"{request.task_key} (internal error)")
        return _measure(request, data)
    except Exception as error:
        return RunReply((), "runtime", _describe(error))


def _signature_problem(signature: KernelSignature, data: TaskData) -> str | None:
    wanted = [(a.dtype, a.size) for a in data.inputs]
    wanted += [(numpy_dtype(t.dtype), math.prod(t.shape)) for t in data.output_types]
    got = [(numpy_dtype(p.dtype), p.size) for p in signature.params]
    if got != wanted:
        return (f"kernel {signature.name} takes {[(str(d), n) for d, n in got]} "
                f"(dtype, elements) but its workload gives {[(str(d), n) for d, n in wanted]}")
    return None


def _measure(request: RunRequest, data: TaskData) -> RunReply:
    built = request.kernel
    problem = _signature_problem(built.signature, data)
    if problem is not None:
        return RunReply((), "runtime", problem)
    target = Target.parse(built.target)
    threads = target.attrs.get("num-threads")
    set_num_threads(int(threads) if threads else default_num_threads())
    engine = object_engine(list(built.objects), resolve_target(built.target), built.name)
    kernel = Kernel(built.signature, engine.get_function_address(built.signature.symbol),
                    engine)
    inputs = [_Guarded(a.shape, a.dtype) for a in data.inputs]
    for buffer, array in zip(inputs, data.inputs):
        buffer.array[...] = array
    outputs = [_Guarded(t.shape, numpy_dtype(t.dtype)) for t in data.output_types]
    for buffer, t in zip(outputs, data.output_types):
        if is_float(t.dtype):
            buffer.array[...] = np.nan
        else:
            buffer.body[...] = _UNWRITTEN_BYTE
    pointers = [b.address for b in [*inputs, *outputs]]
    call = kernel.raw
    timer = _Timer(kernel, pointers)
    if request.cache_flush:
        # TVM's CPU cache flush: every argument but the first (the activation, which the
        # previous kernel of a model leaves in cache) leaves the cache before each call
        flushed = [*inputs, *outputs][1:]
        timer = _ColdTimer(kernel, pointers, [(b.address, b.array.nbytes) for b in flushed])

    start = time.perf_counter()
    status = call(*pointers)
    warm_s = time.perf_counter() - start
    problem = _after_run(status, inputs, outputs, data, request.check, "the first run")
    if problem is not None:
        return problem

    min_s = request.min_repeat_ms / 1e3
    number = max(1, request.number)
    if min_s > 0:
        number = max(number, min(MAX_NUMBER, math.ceil(min_s / max(warm_s, 1e-9))))
        while True:
            wall = time.perf_counter()
            elapsed, status = timer(number)
            wall = time.perf_counter() - wall   # with a cache flush, more than `elapsed`
            if status != 0 or wall >= min_s or number >= MAX_NUMBER:
                break
            grow = min_s * 1.2 / max(wall, 1e-9)
            number = min(MAX_NUMBER, max(number * 2, math.ceil(number * grow)))
    # Untimed batches first: the first tens of milliseconds of a new task's runs measured up
    # to 2x slow (a ResNet-50 conv: 1.01, 1.19, then 0.59 ms; 0.48 from then on), which
    # made defaults, measured first, look slow and spurious "wins" replace them.
    settle_end = time.perf_counter() + SETTLE_S
    while status == 0 and time.perf_counter() < settle_end:
        _, status = timer(number)
    costs = []
    for _ in range(max(1, request.repeat)):
        elapsed, status = timer(number)
        if status != 0:
            break
        costs.append(elapsed / number)
    problem = _after_run(status, inputs, outputs, data, request.check, "the timed runs")
    if problem is not None:
        return problem
    return RunReply(tuple(costs), None)


class _Timer:
    """Calls a kernel `number` times in a loop of machine code, not of Python: a ctypes call
    costs a fraction of a microsecond, as much as a small kernel itself, while the executor
    that runs a compiled model calls kernels natively. The loop (`i32 repeat(f, args, n)`, the
    status of every call or'ed) is JIT-compiled once per parameter count."""

    _loops: dict[int, tuple[Any, Any]] = {}

    def __init__(self, kernel: Kernel, pointers: Sequence[int]):
        count = len(pointers)
        if count not in self._loops:
            self._loops[count] = self._compile(count)
        _, self._repeat = self._loops[count]
        self._function = kernel.address
        self._args = (ctypes.c_void_p * count)(*pointers)

    @staticmethod
    def _call_ir(count: int) -> tuple[str, str, str]:
        """The kernel's parameter types, the loads of its arguments from `%args`, and the
        argument list of the call: LLVM IR text both loops share."""
        params = ", ".join(["ptr"] * count)
        loads = "\n".join(f"  %p{k} = getelementptr ptr, ptr %args, i64 {k}\n"
                          f"  %a{k} = load ptr, ptr %p{k}" for k in range(count))
        args = ", ".join(f"ptr %a{k}" for k in range(count))
        return params, loads, args

    @classmethod
    def _compile(cls, count: int) -> tuple[Any, Any]:
        params, loads, args = cls._call_ir(count)
        text = f"""
define i32 @ember_repeat(ptr %f, ptr %args, i64 %n) {{
entry:
{loads}
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %body]
  %status = phi i32 [0, %entry], [%merged, %body]
  %done = icmp sge i64 %i, %n
  br i1 %done, label %exit, label %body
body:
  %result = call i32 ({params}) %f({args})
  %merged = or i32 %status, %result
  %next = add i64 %i, 1
  br label %loop
exit:
  ret i32 %status
}}
"""
        engine, _ = jit_engine(llvm.parse_assembly(text), resolve_target("llvm"),
                               "the measurement loop")
        address = engine.get_function_address("ember_repeat")
        function = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int64)(address)
        return engine, function

    def __call__(self, number: int) -> tuple[float, int]:
        """Seconds for `number` calls, and their or'ed status."""
        start = time.perf_counter()
        status = self._repeat(self._function, self._args, number)
        return time.perf_counter() - start, status


class _ColdTimer(_Timer):
    """Like `_Timer`, but evicts byte ranges from every cache level (`clflush` per 64-byte
    line, then a fence) before each call, and times each call alone with CLOCK_MONOTONIC
    inside the loop, so the flushes are not timed: the kernel runs as it does in a model
    whose weights come from memory. x86 only."""

    _loops: dict[int, tuple[Any, Any]] = {}

    def __init__(self, kernel: Kernel, pointers: Sequence[int],
                 ranges: Sequence[tuple[int, int]]):
        super().__init__(kernel, pointers)
        pairs = [value for address, size in ranges for value in (address, max(1, size))]
        self._ranges = (ctypes.c_uint64 * max(1, len(pairs)))(*pairs)
        self._range_count = len(ranges)
        self._nanoseconds = ctypes.c_int64(0)

    @classmethod
    def _compile(cls, count: int) -> tuple[Any, Any]:
        params, loads, args = cls._call_ir(count)
        text = f"""
declare void @llvm.x86.sse2.clflush(ptr)
declare i32 @clock_gettime(i32, ptr)

define internal i64 @now(ptr %ts) {{
  %r = call i32 @clock_gettime(i32 1, ptr %ts)
  %sp = getelementptr {{i64, i64}}, ptr %ts, i64 0, i32 0
  %np = getelementptr {{i64, i64}}, ptr %ts, i64 0, i32 1
  %s = load i64, ptr %sp
  %ns = load i64, ptr %np
  %s9 = mul i64 %s, 1000000000
  %t = add i64 %s9, %ns
  ret i64 %t
}}

define i32 @ember_repeat_cold(ptr %f, ptr %args, i64 %n, ptr %ranges, i64 %nranges,
                              ptr %elapsed) {{
entry:
  %ts = alloca {{i64, i64}}
{loads}
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %timed]
  %status = phi i32 [0, %entry], [%merged, %timed]
  %total = phi i64 [0, %entry], [%sum, %timed]
  %done = icmp sge i64 %i, %n
  br i1 %done, label %exit, label %ranges.head
ranges.head:
  %r = phi i64 [0, %loop], [%rnext, %range.done]
  %rdone = icmp sge i64 %r, %nranges
  br i1 %rdone, label %timed, label %range
range:
  %slot = shl i64 %r, 1
  %bp = getelementptr i64, ptr %ranges, i64 %slot
  %base.int = load i64, ptr %bp
  %lp = getelementptr i64, ptr %bp, i64 1
  %len = load i64, ptr %lp
  %base = inttoptr i64 %base.int to ptr
  br label %line
line:
  %off = phi i64 [0, %range], [%off.next, %line]
  %addr = getelementptr i8, ptr %base, i64 %off
  call void @llvm.x86.sse2.clflush(ptr %addr)
  %off.next = add i64 %off, 64
  %more = icmp ult i64 %off.next, %len
  br i1 %more, label %line, label %range.done
range.done:
  %rnext = add i64 %r, 1
  br label %ranges.head
timed:
  fence seq_cst
  %t0 = call i64 @now(ptr %ts)
  %result = call i32 ({params}) %f({args})
  %t1 = call i64 @now(ptr %ts)
  %dt = sub i64 %t1, %t0
  %sum = add i64 %total, %dt
  %merged = or i32 %status, %result
  %next = add i64 %i, 1
  br label %loop
exit:
  store i64 %total, ptr %elapsed
  ret i32 %status
}}
"""
        engine, _ = jit_engine(llvm.parse_assembly(text), resolve_target("llvm"),
                               "the cache-flushing measurement loop")
        address = engine.get_function_address("ember_repeat_cold")
        function = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                    ctypes.c_void_p)(address)
        return engine, function

    def __call__(self, number: int) -> tuple[float, int]:
        """Seconds the `number` calls took (flushes excluded), and their or'ed status."""
        status = self._repeat(self._function, self._args, number, self._ranges,
                              self._range_count, ctypes.byref(self._nanoseconds))
        return self._nanoseconds.value / 1e9, status


def _after_run(status: int, inputs: Sequence[_Guarded], outputs: Sequence[_Guarded],
               data: TaskData, check: bool, when: str) -> RunReply | None:
    """The error after a run, if any: a failed allocation, writes outside the outputs, or
    (when checking) outputs that differ from the reference."""
    if status != 0:
        return RunReply((), "runtime", f"the kernel returned status {status} in {when} "
                                       f"(a heap allocation failed)")
    for kind, buffers in (("input", inputs), ("output", outputs)):
        for k, buffer in enumerate(buffers):
            if not buffer.guards_intact():
                return RunReply((), "runtime", f"the kernel wrote outside its {kind} {k} "
                                               f"({buffer.array.dtype}{list(buffer.array.shape)})"
                                               f" in {when}")
    for k, (buffer, array) in enumerate(zip(inputs, data.inputs)):
        if not np.array_equal(buffer.body, array.reshape(-1).view(np.uint8)):
            return RunReply((), "runtime", f"the kernel wrote into its input {k} in {when}")
    if check and data.expected is not None:
        for k, (buffer, want) in enumerate(zip(outputs, data.expected)):
            problem = compare_outputs(buffer.array, want)
            if problem is not None:
                return RunReply((), "wrong_answer", f"output {k} in {when}: {problem}")
    return None


def compare_outputs(got: np.ndarray, want: np.ndarray) -> str | None:
    """None if `got` matches `want`, else what differs. Floats compare at the dtype's
    tolerance with NaNs equal; `atol` is scaled by the largest finite |want| (at least 1),
    since the rounding error of a reordered sum grows with the magnitude of its terms."""
    dtype = str(want.dtype)
    if is_float(dtype) or want.dtype.kind == "f":
        rtol, atol = TOLERANCES.get(dtype, (1e-4, 1e-5))
        g, w = got.astype(np.float64), want.astype(np.float64)
        finite = np.abs(w[np.isfinite(w)])
        scale = max(1.0, float(finite.max()) if finite.size else 1.0)
        bad = ~(np.isclose(g, w, rtol=rtol, atol=atol * scale) | (np.isnan(g) & np.isnan(w)))
    else:
        g, w = got, want
        bad = got != want
    count = int(np.count_nonzero(bad))
    if count == 0:
        return None
    worst = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
    return (f"{count} of {bad.size} elements differ from the reference; at index "
            f"{tuple(int(i) for i in worst)}: got {g[worst].item()!r}, expected "
            f"{w[worst].item()!r}")


__all__ = ["GUARD_BYTES", "TOLERANCES", "BuildFailure", "BuiltKernel", "RunReply",
           "RunRequest", "TaskData", "build_candidate", "builder_setup", "compare_outputs",
           "make_task_data", "random_inputs", "reference_outputs", "run_candidate",
           "runner_setup", "task_seed", "worker_defaults"]

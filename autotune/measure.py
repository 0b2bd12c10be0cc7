"""Measuring tuning candidates: build in parallel, run one at a time, check, time; survive any
candidate that crashes, hangs or computes garbage.

    measurer = make_measurer("local", options=MeasureOptions(repeat=3))
    results = measurer.measure(task, configs)     # one MeasureResult per config, in order
    measurer.close()

`LocalMeasurer` (the default) builds a batch of candidates in a pool of worker processes
(lowering + LLVM to object code; a build over `build_timeout` has its worker killed and
replaced), then runs the built ones one at a time in a runner process: on a machine of few
cores two measurements at once would disturb each other, and builds would disturb a
measurement, so the phases do not overlap. The runner links a candidate's object code, runs it
once on the task's seeded inputs and checks the outputs against the numpy reference (computed
once per task in this process), then times `repeat` batches of `number` calls, `number` raised
until a batch lasts `min_repeat_ms` (runner.py). A runner that dies is reported as a runtime
error naming the signal, one that runs over `run_timeout` is killed (a run timeout); either
way a fresh runner takes the next candidate. The worker machinery is in workers.py, what
happens inside the workers in runner.py.

`RayMeasurer` (`ember[distributed]`) does the same over a Ray cluster: builds are Ray tasks
spread over every node's CPUs, each building in a worker process of its own (so timeouts and
crashes are handled as locally); each node gets one runner actor (measurements are serialized
per node), which owns a runner process, so a crashing kernel takes down neither the actor nor
the tuner. A candidate may be built on one node and run on another: the nodes should have the
same CPU, or the task's target should name one (`llvm -mcpu=...`); code for features a node
lacks dies there with SIGILL, a runtime error.

Errors are TVM's classes (`ErrorClass`); `measure` raises only for what no candidate causes
(a target that is not this machine, a reference that cannot be computed).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import platform
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from ember.autotune.runner import (
    BuildFailure,
    BuiltKernel,
    RunReply,
    RunRequest,
    TaskData,
    build_candidate,
    builder_setup,
    make_task_data,
    run_candidate,
    runner_setup,
)
from ember.autotune.workers import Outcome, WorkerPool, WorkerProcess, WorkerStartError
from ember.compiler.space import Config
from ember.errors import EmberError, TargetError

#: a build worker is replaced after this many builds, to bound what it accumulates (lowered
#: kernels cached by the compiler, LLVM's allocations)
BUILDS_PER_WORKER = 100
#: task data (inputs and reference outputs) kept for this many tasks
_TASK_DATA_CACHED = 2


class MeasureError(EmberError):
    """Measurement cannot proceed for a reason no candidate causes: bad options, a target
    that is not this machine, a task whose reference fails, a missing executor."""


class ErrorClass(enum.StrEnum):
    """Why a candidate has no cost (TVM's measurement error classes)."""

    INSTANTIATION = "instantiation"  # the template or lowering rejected the config
    COMPILE = "compile"              # code generation or LLVM failed
    RUNTIME = "runtime"              # the kernel crashed, or wrote outside its outputs
    WRONG_ANSWER = "wrong_answer"    # outputs differ from the numpy reference
    BUILD_TIMEOUT = "build_timeout"
    RUN_TIMEOUT = "run_timeout"


@dataclasses.dataclass(frozen=True)
class MeasureResult:
    """One candidate's measurement: seconds per run for each repeat, or an error."""

    costs: tuple[float, ...]
    error: ErrorClass | None
    message: str = ""
    build_s: float = 0.0
    timestamp: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def best(self) -> float:
        return min(self.costs) if self.ok and self.costs else math.inf


#: platform.machine() names of the hosts whose CPUs have clflush
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@dataclasses.dataclass(frozen=True)
class MeasureOptions:
    """How candidates are measured: AutoTVM's defaults, except that a build may take 60 s
    rather than 10 (ember lowers in Python: a large conv takes seconds on a loaded machine).

    Args:
        repeat: timed batches per candidate; `costs` has one entry per batch.
        number: calls per batch at least; raised until a batch lasts `min_repeat_ms`.
        min_repeat_ms: the shortest batch, so fast kernels are timed over many calls.
        build_timeout: seconds a build (lowering + LLVM) may take.
        run_timeout: seconds a candidate's run (link, check, all batches) may take.
        check: compare outputs with the numpy reference (a mismatch is WRONG_ANSWER).
        builders: parallel build processes (default: the cores this process may use).
        cache_flush: TVM's `enable_cpu_cache_flush` (x86 hosts): every argument but the
            first is evicted from the caches before each timed call, and only the calls
            are timed, as a kernel runs in a model whose weights do not stay in cache;
            `min_repeat_ms` then bounds a batch's wall time, flushes included.
    """

    repeat: int = 3
    number: int = 1
    min_repeat_ms: float = 20.0
    build_timeout: float = 60.0
    run_timeout: float = 10.0
    check: bool = True
    builders: int | None = None
    cache_flush: bool = False

    def __post_init__(self) -> None:
        for name in ("repeat", "number"):
            if getattr(self, name) < 1:
                raise MeasureError(f"MeasureOptions.{name} must be at least 1, got "
                                   f"{getattr(self, name)}")
        for name in ("build_timeout", "run_timeout"):
            if not getattr(self, name) > 0:
                raise MeasureError(f"MeasureOptions.{name} must be positive seconds, got "
                                   f"{getattr(self, name)}")
        if self.min_repeat_ms < 0:
            raise MeasureError(f"MeasureOptions.min_repeat_ms must be >= 0, got "
                               f"{self.min_repeat_ms}")
        if self.cache_flush and platform.machine().lower() not in X86_MACHINES:
            raise MeasureError(f"MeasureOptions.cache_flush needs an x86 host (it uses "
                               f"clflush); this one is {platform.machine()}: measure without "
                               f"it")
        if self.builders is not None and self.builders < 1:
            raise MeasureError(f"MeasureOptions.builders must be at least 1, got "
                               f"{self.builders}")

    @property
    def build_processes(self) -> int:
        return self.builders or len(os.sched_getaffinity(0))


class Measurer(Protocol):
    def measure(self, task: Any, configs: Sequence[Config]) -> list[MeasureResult]: ...

    def close(self) -> None: ...


def _failed(error: ErrorClass, message: str, build_s: float = 0.0) -> MeasureResult:
    return MeasureResult((), error, message, build_s, time.time())


def _build_result(task: Any, config: Config, outcome: Outcome, options: MeasureOptions
                  ) -> BuiltKernel | MeasureResult:
    """A built kernel, or the failed build's result."""
    where = f"config {config.index} of {task.name}"
    if outcome.kind == "timeout":
        return _failed(ErrorClass.BUILD_TIMEOUT,
                       f"building {where} took over {options.build_timeout:g} s; its worker "
                       f"was killed", outcome.seconds)
    if outcome.kind == "died":
        return _failed(ErrorClass.COMPILE, f"the build worker {outcome.detail} while building "
                                           f"{where}", outcome.seconds)
    value = outcome.value
    if isinstance(value, BuildFailure):
        return _failed(ErrorClass(value.error), f"{where}: {value.message}", value.build_s)
    return value


def _check_target(task: Any) -> None:
    """Candidates run on this machine: a target for another one is the caller's error."""
    from ember.backends.llvm.host import resolve_target

    try:
        info = resolve_target(str(task.target))
    except TargetError as error:
        raise MeasureError(f"task {task.name}: {error}") from None
    if not info.is_host:
        import llvmlite.binding as llvm

        if info.triple != llvm.get_process_triple():
            raise MeasureError(f"task {task.name} is for {info.triple}, not this machine "
                               f"({llvm.get_process_triple()}): candidates are measured here")


class TaskDataCache:
    """Inputs and reference outputs per task, computed once (in the tuner's process)."""

    def __init__(self) -> None:
        self._data: OrderedDict[tuple[str, bool], TaskData] = OrderedDict()

    def get(self, task: Any, check: bool) -> TaskData:
        key = (task.key, check)
        if key not in self._data:
            try:
                self._data[key] = make_task_data(task, check)
            except EmberError as error:
                raise MeasureError(f"cannot compute the reference outputs of task {task.name} "
                                   f"({task.describe()}): {error}; measure with "
                                   f"MeasureOptions(check=False) to skip the check") from error
            while len(self._data) > _TASK_DATA_CACHED:
                self._data.popitem(last=False)
        self._data.move_to_end(key)
        return self._data[key]


class CandidateRunner:
    """The runner process, restarted after a candidate kills it, and which task's data it
    holds (sent once per task, and again to a fresh runner)."""

    def __init__(self, options: MeasureOptions):
        self.options = options
        self.worker = WorkerProcess(run_candidate, runner_setup, name="ember-runner")
        self._loaded: tuple[str, int] | None = None  # (task key, runner start count)

    def run(self, data: TaskData, built: BuiltKernel, what: str) -> MeasureResult:
        """Check and time `built` on `data`; `what` names the candidate in messages."""
        options = self.options
        self.worker.ensure_started()
        holds = self._loaded == (data.key, self.worker.starts)
        request = RunRequest(data.key, None if holds else data, built, options.repeat,
                             options.number, options.min_repeat_ms, options.check,
                             options.cache_flush)
        outcome = self.worker.call(request, options.run_timeout)
        if outcome.kind == "ok" and isinstance(outcome.value, RunReply):
            self._loaded = (data.key, self.worker.starts)
            reply = outcome.value
            error = None if reply.error is None else ErrorClass(reply.error)
            message = f"{what}: {reply.message}" if reply.message else ""
            return MeasureResult(reply.costs, error, message, built.build_s, time.time())
        self._loaded = None
        if outcome.kind == "timeout":
            return _failed(ErrorClass.RUN_TIMEOUT,
                           f"running {what} took over {options.run_timeout:g} s; the runner "
                           f"was killed", built.build_s)
        return _failed(ErrorClass.RUNTIME, f"the runner {outcome.detail} while running {what}",
                       built.build_s)

    def close(self) -> None:
        self.worker.kill()


class LocalMeasurer:
    """Builds in a local process pool, runs one candidate at a time in a runner process."""

    def __init__(self, options: MeasureOptions | None = None):
        self.options = options or MeasureOptions()
        self._builders = WorkerPool(self.options.build_processes, build_candidate,
                                    builder_setup, BUILDS_PER_WORKER, name="ember-build")
        self._runner = CandidateRunner(self.options)
        self._data = TaskDataCache()

    def measure(self, task: Any, configs: Sequence[Config]) -> list[MeasureResult]:
        """One MeasureResult per config, in order. Raises MeasureError only for faults of the
        task or the options, never of a candidate."""
        configs = list(configs)
        if not configs:
            return []
        _check_target(task)
        try:
            return self._measure(task, configs)
        except WorkerStartError as error:
            raise MeasureError(str(error)) from None

    def _measure(self, task: Any, configs: list[Config]) -> list[MeasureResult]:
        outcomes = self._builders.map([(task, config) for config in configs],
                                      self.options.build_timeout)
        built = [_build_result(task, c, o, self.options) for c, o in zip(configs, outcomes)]
        results: list[MeasureResult] = []
        for config, item in zip(configs, built):
            if isinstance(item, MeasureResult):
                results.append(item)
                continue
            data = self._data.get(task, self.options.check)
            results.append(self._runner.run(data, item,
                                            f"config {config.index} of {task.name}"))
        return results

    def close(self) -> None:
        self._builders.close()
        self._runner.close()

    def __enter__(self) -> LocalMeasurer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MeasureError("the ray executor needs Ray, which is not installed: "
                           "pip install ember[distributed]") from None
    return ray


_BUILDER: WorkerProcess | None = None


def build_in_worker(task: Any, config: Config, timeout: float) -> Outcome:
    """Build a candidate in this process's build worker (started on first use): what a Ray
    build task runs, so that a build that crashes or hangs takes no Ray worker with it."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = WorkerProcess(build_candidate, builder_setup, BUILDS_PER_WORKER,
                                 name="ember-build")
    return _BUILDER.call((task, config), timeout)


class NodeRunner:
    """A Ray actor (one per node): the node's runner process and the task data it holds."""

    def __init__(self, options: MeasureOptions):
        self.runner = CandidateRunner(options)
        self.data: dict[str, TaskData] = {}

    def load(self, data: TaskData) -> None:
        self.data = {data.key: data}

    def run(self, key: str, built: BuiltKernel, what: str) -> MeasureResult:
        return self.runner.run(self.data[key], built, what)

    def close(self) -> None:
        self.runner.close()


class RayMeasurer:
    """Builds as Ray tasks across a cluster; runs one candidate at a time per node.

    Args:
        address: a Ray cluster to join ("auto", "ray://host:10001", "host:6379"); None starts
            a local Ray instance (or joins the one RAY_ADDRESS names).
        options: as LocalMeasurer's; `builders` is ignored (the cluster's CPUs build).
    """

    def __init__(self, address: str | None = None, options: MeasureOptions | None = None):
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.options = options or MeasureOptions()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise MeasureError(f"cannot start or join Ray at {address or 'a local instance'}"
                                   f": {error}") from None
            self._started = True
        self._build = ray.remote(num_cpus=1, max_retries=0)(build_in_worker)
        actor = ray.remote(num_cpus=0)(NodeRunner)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._runners = [actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=n["NodeID"], soft=False)).remote(self.options) for n in nodes]
        if not self._runners:
            raise MeasureError("the Ray cluster has no live node to measure on")
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._data = TaskDataCache()
        self._loaded: str | None = None  # the task whose data the runner actors hold

    def measure(self, task: Any, configs: Sequence[Config]) -> list[MeasureResult]:
        """As LocalMeasurer.measure, over the cluster."""
        ray = self._ray
        configs = list(configs)
        if not configs:
            return []
        _check_target(task)
        built = self._build_all(task, configs)
        if any(isinstance(b, BuiltKernel) for b in built) and self._loaded != task.key:
            data_ref = ray.put(self._data.get(task, self.options.check))
            ray.get([runner.load.remote(data_ref) for runner in self._runners])
            self._loaded = task.key
        pending: dict[int, Any] = {}
        for k, (config, item) in enumerate(zip(configs, built)):
            if isinstance(item, BuiltKernel):
                runner = self._runners[len(pending) % len(self._runners)]
                pending[k] = runner.run.remote(task.key, item,
                                               f"config {config.index} of {task.name}")
        results: list[MeasureResult] = []
        # the actor enforces run_timeout itself; this bound only guards against a lost actor
        patience = (self.options.run_timeout + 30.0) * max(1, len(pending))
        for k, item in enumerate(built):
            if k not in pending:
                results.append(item)
                continue
            try:
                results.append(ray.get(pending[k], timeout=patience))
            except ray.exceptions.GetTimeoutError:
                results.append(_failed(ErrorClass.RUN_TIMEOUT,
                                       f"config {configs[k].index} of {task.name}: no answer "
                                       f"from the node's runner within {patience:g} s"))
            except ray.exceptions.RayError as error:
                results.append(_failed(ErrorClass.RUNTIME,
                                       f"config {configs[k].index} of {task.name}: the node's "
                                       f"runner failed: {type(error).__name__}: {error}"))
        return results

    def _build_all(self, task: Any, configs: list[Config]) -> list[BuiltKernel | MeasureResult]:
        """Every config built by a Ray task, which builds in a worker process of its own
        (`build_in_worker`), so build timeouts and crashes are handled as locally."""
        ray = self._ray
        timeout = self.options.build_timeout
        refs = [self._build.remote(task, config, timeout) for config in configs]
        # each build ends within its timeout once started; this bound only guards against a
        # lost Ray worker (queued builds start as CPUs free up)
        patience = 60.0 + timeout * math.ceil(len(refs) / self._cpus) * 2
        out: list[BuiltKernel | MeasureResult] = []
        for config, ref in zip(configs, refs):
            try:
                outcome = ray.get(ref, timeout=patience)
            except ray.exceptions.GetTimeoutError:
                ray.cancel(ref, force=True)
                outcome = Outcome("timeout", seconds=patience)
            except ray.exceptions.RayError as error:
                outcome = Outcome("died", detail=f"failed ({type(error).__name__}: {error})")
            out.append(_build_result(task, config, outcome, self.options))
        return out

    def close(self) -> None:
        ray = self._ray
        for runner in self._runners:
            try:
                ray.get(runner.close.remote(), timeout=10)
            except ray.exceptions.RayError:
                pass
            ray.kill(runner)
        self._runners = []
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayMeasurer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


EXECUTORS = ("local", "ray")


def make_measurer(executor: str = "local", address: str | None = None,
                  options: MeasureOptions | None = None) -> Measurer:
    """A measurer: "local" (process pool and runner on this machine) or "ray" (a Ray
    cluster at `address`; None starts a local one)."""
    if executor == "local":
        if address is not None:
            raise MeasureError(f"--address {address} is for the ray executor; the local "
                               f"executor measures on this machine")
        return LocalMeasurer(options)
    if executor == "ray":
        return RayMeasurer(address, options)
    raise MeasureError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "CandidateRunner", "ErrorClass", "LocalMeasurer", "MeasureError",
           "MeasureOptions", "MeasureResult", "Measurer", "RayMeasurer", "make_measurer"]

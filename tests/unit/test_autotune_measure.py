"""Measurement of tuning candidates (autotune/measure.py, runner.py, workers.py).

Real kernels (small matmul, conv, a fused matmul + relu) measure with positive costs and pass
the reference check; the test-only FaultyTask (autotune_measure_tasks.py) has candidates that
segfault, hang, compute wrong values, write past their output, raise while instantiating,
sleep while building, fail in LLVM and kill their build worker: each is recorded with its
error class and the candidates after it still measure. The Ray executor runs in the optional
`ray` tier against a local Ray instance.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
from autotune_measure_tasks import FaultyTask, echo_or_misbehave

from ember.autotune.measure import (
    ErrorClass,
    LocalMeasurer,
    MeasureError,
    MeasureOptions,
    MeasureResult,
    TaskDataCache,
    make_measurer,
)
from ember.autotune.runner import compare_outputs, make_task_data, random_inputs
from ember.autotune.task import Task
from ember.autotune.workers import WorkerPool, WorkerProcess
from ember.compiler.ops.fused import FusedWorkload
from ember.compiler.ops.registry import Workload
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.target import Target

LLVM = Target("llvm")


def op_workload(op: str, shapes, attrs=None) -> Workload:
    opdef = get_op(op)
    full = opdef.make_attrs(attrs or {})
    types = tuple(TensorType(tuple(s), "float32") for s in shapes)
    return Workload(op, full, types, opdef.infer_types(full, types))


def matmul_task() -> Task:
    return Task(op_workload("matmul", [(16, 32), (32, 24)]), LLVM)


def conv_task() -> Task:
    attrs = {"strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1)}
    return Task(op_workload("conv", [(1, 8, 10, 10), (8, 8, 3, 3)], attrs), LLVM)


def fused_task() -> Task:
    matmul = op_workload("matmul", [(16, 32), (32, 24)])
    relu = op_workload("relu", [(16, 24)])
    workload = FusedWorkload((matmul, relu), ((("arg", 0), ("arg", 1)), (("node", 0, 0),)), 0)
    return Task(workload, LLVM)


FAST = MeasureOptions(repeat=2, min_repeat_ms=1.0, builders=2)


@pytest.fixture(scope="module")
def measurer():
    with LocalMeasurer(FAST) as m:
        yield m


@pytest.mark.parametrize("make_task", [matmul_task, conv_task, fused_task],
                         ids=["matmul", "conv", "fused_matmul_relu"])
def test_good_configs_measure_and_pass_the_check(measurer, make_task):
    task = make_task()
    space = task.space()
    configs = [space.default, *space.sample(2, random.Random(1))]
    results = measurer.measure(task, configs)
    assert len(results) == len(configs)
    for config, result in zip(configs, results):
        assert result.ok, f"config {config.index}: {result.error} {result.message}"
        assert len(result.costs) == FAST.repeat
        assert all(cost > 0 for cost in result.costs)
        assert 0 < result.best < 1.0
        assert result.build_s > 0 and result.timestamp > 0


def test_measure_nothing(measurer):
    assert measurer.measure(matmul_task(), []) == []


# The faulty candidates, each followed by a good one (which must still measure).
FAULTS = {
    "segfault": (ErrorClass.RUNTIME, "SIGSEGV"),
    "hang": (ErrorClass.RUN_TIMEOUT, "took over"),
    "wrong": (ErrorClass.WRONG_ANSWER, "1024 of 1024 elements differ"),
    "unwritten": (ErrorClass.WRONG_ANSWER, "512 of 1024 elements differ"),
    "overflow": (ErrorClass.RUNTIME, "wrote outside its output 0"),
    "raise": (ErrorClass.INSTANTIATION, "ScheduleError: test template"),
    "sleep": (ErrorClass.BUILD_TIMEOUT, "its worker was killed"),
    "bad_code": (ErrorClass.COMPILE, "unknown fast-math flag"),
    "abort_build": (ErrorClass.COMPILE, "SIGABRT"),
}
FAULT_OPTIONS = MeasureOptions(repeat=2, min_repeat_ms=1.0, build_timeout=3.0, run_timeout=3.0,
                               builders=2)


@pytest.fixture(scope="module")
def faulty_batch():
    """One batch of every fault, each followed by a good candidate: the results by position,
    and the number of runner processes started."""
    task = FaultyTask(sleep_s=120.0)
    configs = []
    for behaviour in FAULTS:
        configs += [task.config(behaviour), task.config("good")]
    with LocalMeasurer(FAULT_OPTIONS) as m:
        results = m.measure(task, configs)
        yield configs, results, m._runner.worker.starts


@pytest.mark.parametrize("behaviour", list(FAULTS))
def test_faulty_candidate_gets_its_error_class(faulty_batch, behaviour):
    configs, results, _ = faulty_batch
    position = 2 * list(FAULTS).index(behaviour)
    result = results[position]
    error, fragment = FAULTS[behaviour]
    assert result.error is error, result.message
    assert fragment in result.message
    assert f"config {configs[position].index} of faulty_add_1024" in result.message
    assert result.costs == () and result.best == float("inf") and not result.ok
    after = results[position + 1]
    assert after.ok, f"the good candidate after {behaviour}: {after.message}"
    assert len(after.costs) == 2 and min(after.costs) > 0


def test_runner_is_restarted_after_crash_and_timeout(faulty_batch):
    _, _, starts = faulty_batch
    assert starts == 3  # the first runner, then one after the segfault and one after the hang


def test_tuning_goes_on_past_faulty_candidates(tmp_path):
    """The issue's must-show: a template whose candidates segfault (and worse) is tuned to
    the end, every error class is in the log, and a second run resumes from the log."""
    from ember.autotune.records import RecordLog, load_records
    from ember.autotune.tuner import RandomTuner, tune_task

    task = FaultyTask(sleep_s=120.0)
    log = tmp_path / "tune.jsonl"
    options = MeasureOptions(repeat=2, min_repeat_ms=1.0, build_timeout=2.0, run_timeout=2.0,
                             builders=2)
    with LocalMeasurer(options) as m:
        summary = tune_task(task, RandomTuner(task, seed=0), lambda cs: m.measure(task, cs),
                            trials=len(task.space()), log=RecordLog(log))
        assert summary.trials == len(task.space())
        assert summary.best_config["behaviour"] == "good"
        records = load_records(log)
        errors = {r.config["behaviour"]: r.error for r in records}
        assert errors["segfault"] == "runtime" and errors["good"] is None
        assert set(errors.values()) == {None, *(e.value for e, _ in FAULTS.values())}
        measured = []
        again = tune_task(task, RandomTuner(task, seed=1),
                          lambda cs: measured.extend(cs) or m.measure(task, cs),
                          trials=len(task.space()), log=RecordLog(log))
        assert measured == [] and again.resumed == len(task.space())


def test_wrong_answers_pass_without_the_check():
    task = FaultyTask()
    options = MeasureOptions(repeat=1, min_repeat_ms=0.0, check=False, builders=1)
    with LocalMeasurer(options) as m:
        wrong, overflow = m.measure(task, [task.config("wrong"), task.config("overflow")])
    assert wrong.ok and wrong.costs
    assert overflow.error is ErrorClass.RUNTIME  # memory corruption is never allowed


def test_worker_pool_replaces_dead_and_late_workers():
    pool = WorkerPool(2, echo_or_misbehave)
    try:
        outcomes = pool.map(["a", 30.0, "abort", "b", "c"], timeout=2.0)
        assert [o.kind for o in outcomes] == ["ok", "timeout", "died", "ok", "ok"]
        assert outcomes[2].detail == "was killed by SIGABRT"
        assert [o.value[0] for o in outcomes if o.kind == "ok"] == ["a", "b", "c"]
        # two, and one after the abort (a killed worker is replaced when work comes)
        assert sum(w.starts for w in pool.workers) >= 3
    finally:
        pool.close()


def test_worker_is_retired_after_max_requests():
    worker = WorkerProcess(echo_or_misbehave, max_requests=2)
    try:
        pids = [worker.call(k, timeout=30.0).value[1] for k in range(3)]
        assert pids[0] == pids[1] != pids[2] and worker.starts == 2
    finally:
        worker.stop()


UNGUARDED_SCRIPT = """
from ember.autotune.measure import LocalMeasurer, MeasureOptions
from autotune_measure_tasks import FaultyTask

task = FaultyTask()
measurer = LocalMeasurer(MeasureOptions(builders=1))
measurer.measure(task, [task.config("good")])
"""


def test_script_without_main_guard_gets_a_clear_error(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(UNGUARDED_SCRIPT)
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        here, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode != 0
    assert "MeasureError" in done.stderr
    assert 'keep its work under `if __name__ == "__main__":`' in done.stderr


# ----------------------------------------------------------------------------- no processes


@pytest.mark.parametrize("field, value", [("repeat", 0), ("number", 0), ("build_timeout", 0),
                                          ("run_timeout", -1.0), ("min_repeat_ms", -1.0),
                                          ("builders", 0)])
def test_bad_options_are_rejected(field, value):
    with pytest.raises(MeasureError, match=field):
        MeasureOptions(**{field: value})


def test_make_measurer_rejects_unknown_executors():
    with pytest.raises(MeasureError, match="unknown executor 'slurm'.*local, ray"):
        make_measurer("slurm")
    with pytest.raises(MeasureError, match="for the ray executor"):
        make_measurer("local", address="10.0.0.1:6379")


def test_ray_executor_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(MeasureError, match=r"pip install ember\[distributed\]"):
        make_measurer("ray")


def test_foreign_target_is_the_callers_error(measurer):
    task = Task(matmul_task().workload, Target.parse("llvm -mtriple=aarch64-linux-gnu "
                                                     "-mcpu=generic"))
    with pytest.raises(MeasureError, match="not this machine"):
        measurer.measure(task, [matmul_task().space().default])


def test_task_data_is_seeded_and_computed_once():
    task = fused_task()
    first, second = make_task_data(task), make_task_data(task)
    for a, b in zip(first.inputs, second.inputs):
        np.testing.assert_array_equal(a, b)
    x, w = first.inputs
    np.testing.assert_allclose(first.expected[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)
    cache = TaskDataCache()
    assert cache.get(task, True) is cache.get(task, True)


def test_inputs_avoid_a_reference_of_nans():
    data = make_task_data(Task(op_workload("sqrt", [(256,)]), LLVM))
    assert np.all(data.inputs[0] > 0) and not np.isnan(data.expected[0]).any()
    data = make_task_data(matmul_task())
    assert data.inputs[0].min() < 0 < data.inputs[0].max()  # signs matter elsewhere


def test_timer_calls_the_kernel_number_times_natively():
    from ember.autotune.runner import _Guarded, _Timer
    from ember.backends.llvm.jit import compile_primfuncs
    from ember.ir import expr as E
    from ember.ir import loop as L

    counter, other = L.Buffer("counter", (1,), "float32"), L.Buffer("other", (4,), "float32")
    bump = L.Store(counter, (E.const(0),), L.Load(counter, (E.const(0),)) + E.const(1.0,
                                                                                "float32"))
    func = L.PrimFunc("bump", (other, counter), bump)
    kernel = compile_primfuncs([func]).get("bump")
    buffers = [_Guarded((4,), np.dtype(np.float32)), _Guarded((1,), np.dtype(np.float32))]
    buffers[1].array[...] = 0
    timer = _Timer(kernel, [b.address for b in buffers])
    seconds, status = timer(7)
    assert buffers[1].array[0] == 7 and status == 0 and seconds >= 0
    assert all(b.guards_intact() for b in buffers)


def test_cold_timer_flushes_then_calls_the_kernel_number_times():
    from ember.autotune.runner import _ColdTimer, _Guarded
    from ember.backends.llvm.jit import compile_primfuncs
    from ember.ir import expr as E
    from ember.ir import loop as L

    counter, other = L.Buffer("counter", (1,), "float32"), L.Buffer("other", (4096,), "float32")
    bump = L.Store(counter, (E.const(0),), L.Load(counter, (E.const(0),)) + E.const(1.0,
                                                                                "float32"))
    kernel = compile_primfuncs([L.PrimFunc("bump", (other, counter), bump)]).get("bump")
    buffers = [_Guarded((4096,), np.dtype(np.float32)), _Guarded((1,), np.dtype(np.float32))]
    buffers[0].array[...] = np.arange(4096)
    buffers[1].array[...] = 0
    ranges = [(b.address, b.array.nbytes) for b in buffers] + [(buffers[0].address, 0)]
    timer = _ColdTimer(kernel, [b.address for b in buffers], ranges)
    seconds, status = timer(7)
    assert buffers[1].array[0] == 7 and status == 0 and 0 <= seconds < 1.0
    assert (buffers[0].array == np.arange(4096)).all()   # evicted, not changed
    assert all(b.guards_intact() for b in buffers)


def test_cache_flush_measures_and_checks(monkeypatch):
    task = matmul_task()
    with LocalMeasurer(MeasureOptions(repeat=2, min_repeat_ms=1.0, builders=1,
                                      cache_flush=True)) as cold:
        [result] = cold.measure(task, [task.space().default])
    assert result.ok, result.message
    assert len(result.costs) == 2 and all(0 < cost < 1.0 for cost in result.costs)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(MeasureError, match="x86"):
        MeasureOptions(cache_flush=True)


def test_integer_inputs_are_valid_indices():
    types = [TensorType((5, 7), "float32"), TensorType((3,), "int64"), TensorType((4,), "bool")]
    floats, indices, flags = random_inputs(types, seed=0)
    assert floats.dtype == np.float32 and np.all(np.abs(floats) <= 1)
    assert indices.dtype == np.int64 and np.all((0 <= indices) & (indices < 3))
    assert flags.dtype == bool


@pytest.mark.parametrize("got, want, ok", [
    (np.array([1.0, np.nan], np.float32), np.array([1.0, np.nan], np.float32), True),
    (np.array([1000.0, 0.0], np.float32), np.array([1000.0, 2e-3], np.float32), True),
    (np.array([1.0, 0.0], np.float32), np.array([1.0, 2e-3], np.float32), False),
    (np.array([1.0, 2.0], np.float32), np.array([1.0, 2.001], np.float32), False),
    (np.array([3, 4], np.int32), np.array([3, 4], np.int32), True),
    (np.array([3, 4], np.int32), np.array([3, 5], np.int32), False),
], ids=["nan-equal", "atol-scaled", "small-output", "rtol", "int-equal", "int-differs"])
def test_compare_outputs(got, want, ok):
    problem = compare_outputs(got, want)
    assert (problem is None) == ok, problem


def test_measure_result_properties():
    good = MeasureResult((3e-6, 2e-6), None)
    bad = MeasureResult((), ErrorClass.RUN_TIMEOUT, "took over")
    assert good.ok and good.best == 2e-6
    assert not bad.ok and bad.best == float("inf")
    assert ErrorClass("wrong_answer") is ErrorClass.WRONG_ANSWER


# ----------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_ray_executor_on_a_local_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install ember[distributed]")
    from ember.autotune.measure import RayMeasurer

    # the test-only task's module must be importable by Ray's workers
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        measurer = RayMeasurer(options=FAULT_OPTIONS)
        task = matmul_task()
        results = measurer.measure(task, [task.space().default])
        assert results[0].ok and len(results[0].costs) == 2, results[0].message
        faulty = FaultyTask()
        names = ["segfault", "good", "wrong", "raise", "good"]
        results = measurer.measure(faulty, [faulty.config(n) for n in names])
        assert [r.error for r in results] == [ErrorClass.RUNTIME, None,
                                              ErrorClass.WRONG_ANSWER,
                                              ErrorClass.INSTANTIATION, None]
        assert "SIGSEGV" in results[0].message
        measurer.close()
    finally:
        ray.shutdown()

"""Tuning records: JSON lines that round-trip configs (tuples, bools), survive a writer killed
mid-line, name the file and line of a damaged record, and give the best record per task."""

import dataclasses
import json
import math

import pytest

from ember.autotune.measure import ErrorClass, MeasureResult
from ember.autotune.records import (
    Record,
    RecordError,
    RecordLog,
    best_records,
    load_records,
    matches,
    target_cpu,
)
from ember.compiler.space import ConfigSpace


@dataclasses.dataclass(frozen=True)
class StubTask:
    key: str = "conv_0123456789abcdef"
    target: str = "llvm"
    flops: int = 2_000_000

    def describe(self) -> str:
        return "conv(float32[1,3,8,8], float32[4,3,3,3]){}"


def space() -> ConfigSpace:
    space = ConfigSpace()
    space.define_split("tile", extent=16, num_outputs=3)
    space.define_reorder("order", 3, [(0, 1, 2), (2, 1, 0)])
    space.define_knob("unroll", [False, True])
    space.define_knob("mode", ["a", "b"])
    return space


def record(cost: float | None = 1e-3, index: int = 5, task: str = "conv_0123456789abcdef",
           target: str = "llvm", cpu: str = "skylake-avx512", error: str | None = None):
    config = space().get(index)
    return Record(task, "conv(...)", target, cpu, config.as_dict(), config.index, 2_000_000,
                  () if cost is None else (cost, cost * 1.1), error, "", 1.0, "0.1.0")


def test_round_trip_keeps_tuples_bools_and_strings():
    original = record(index=11)
    line = original.to_json()
    assert "\n" not in line
    back = Record.from_json(line)
    assert back == original
    assert isinstance(back.config["tile"], tuple) and isinstance(back.config["order"], tuple)
    assert back.config["unroll"] in (True, False) and isinstance(back.config["unroll"], bool)
    assert space().from_values(back.config).index == 11


def test_of_fills_the_record_from_task_config_and_result():
    config = space().get(3)
    made = Record.of(StubTask(), config, MeasureResult((2e-3, 1e-3), None, timestamp=7.0))
    assert made.task == StubTask.key and made.index == 3 and made.config == config.as_dict()
    assert made.costs == (2e-3, 1e-3) and made.error is None and made.timestamp == 7.0
    assert made.cpu == target_cpu("llvm") and made.cpu
    assert made.gflops == pytest.approx(2_000_000 / 1e-3 / 1e9)
    failed = Record.of(StubTask(), config, MeasureResult((), ErrorClass.RUNTIME, message="SIGSEGV"))
    assert failed.error == "runtime" and failed.gflops == 0.0 and math.isinf(failed.best)
    assert Record.from_json(failed.to_json()) == failed


def test_log_appends_lines_and_reads_them_back(tmp_path):
    path = tmp_path / "sub" / "tune.jsonl"
    log = RecordLog(path)
    assert list(log) == []
    records = [record(cost=c, index=i) for i, c in enumerate((3e-3, 1e-3, 2e-3))]
    for r in records:
        log.append(r)
    assert path.read_text().count("\n") == 3  # flushed as it goes
    assert list(log) == records == load_records(path)
    log.close()
    with RecordLog(path) as again:
        again.append(record(error="compile", cost=None))
    assert len(load_records(path)) == 4


def test_a_damaged_line_names_file_and_line(tmp_path):
    path = tmp_path / "tune.jsonl"
    lines = [record().to_json(), '{"task": "x"}', record().to_json()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"{path}:2: not a tuning record .*missing"):
        load_records(path)
    path.write_text(record().to_json() + "\nnot json\n")
    with pytest.raises(RecordError, match=r"tune.jsonl:2"):
        load_records(path)


def test_a_truncated_last_line_is_skipped_and_dropped_before_appending(tmp_path):
    path = tmp_path / "tune.jsonl"
    whole = record(index=1).to_json()
    path.write_text(whole + "\n" + record(index=2).to_json()[:40])
    assert [r.index for r in load_records(path)] == [1]
    with RecordLog(path) as log:
        log.append(record(index=3))
    assert [r.index for r in load_records(path)] == [1, 3]
    # a complete last record without its newline is kept, and gets one
    path.write_text(whole)
    with RecordLog(path) as log:
        log.append(record(index=4))
    assert [r.index for r in load_records(path)] == [1, 4]


def test_missing_file_and_blank_lines(tmp_path):
    with pytest.raises(RecordError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")
    path = tmp_path / "tune.jsonl"
    path.write_text("\n" + record().to_json() + "\n\n")
    assert len(load_records(path)) == 1


def test_unknown_fields_of_newer_versions_are_ignored():
    data = json.loads(record().to_json())
    data["future_field"] = 1
    assert Record.from_json(json.dumps(data)) == record()


def test_best_records_pick_the_fastest_success_per_task_target_and_cpu():
    records = [
        record(cost=3e-3, index=1),
        record(cost=1e-3, index=2),
        record(cost=None, index=3, error="runtime"),
        record(cost=5e-4, index=4, target="llvm -mattr=-avx512f"),
        record(cost=4e-4, index=5, target="llvm -mcpu=znver4", cpu="znver4"),
        record(cost=2e-3, index=6, task="matmul_ffff", target="llvm -num-threads=1"),
    ]
    best = best_records(records, "llvm", "skylake-avx512")
    assert {k: r.index for k, r in best.items()} == {"conv_0123456789abcdef": 2,
                                                     "matmul_ffff": 6}
    assert best_records(records, "llvm -mattr=-avx512f", "skylake-avx512")[
        "conv_0123456789abcdef"].index == 4
    # -mcpu names the CPU: compared with the records' cpu, not as part of the target
    assert best_records(records, "llvm -mcpu=znver4")["conv_0123456789abcdef"].index == 5
    assert best_records(records, "llvm", "znver4")["conv_0123456789abcdef"].index == 5
    assert best_records(records)["conv_0123456789abcdef"].index == 5  # no filter
    # without a cpu, the target's own CPU (the host's for plain "llvm") is the one wanted
    host = record(cost=9e-3, index=7, task="host_task", cpu=target_cpu("llvm"))
    chosen = best_records([*records, host], "llvm")
    assert chosen["host_task"] == host
    assert all(r.cpu == target_cpu("llvm") for r in chosen.values())


def test_best_records_prefer_the_targets_thread_count():
    one = record(cost=2e-3, index=1, target="llvm -num-threads=1")
    two = record(cost=1e-3, index=2, target="llvm -num-threads=2")
    assert best_records([one, two], "llvm -num-threads=1", "skylake-avx512")[
        "conv_0123456789abcdef"].index == 1
    assert best_records([one, two], "llvm -num-threads=2", "skylake-avx512")[
        "conv_0123456789abcdef"].index == 2
    # no record for 4 threads: the fastest of the others serves
    assert best_records([one, two], "llvm -num-threads=4", "skylake-avx512")[
        "conv_0123456789abcdef"].index == 2


def test_matches_is_the_one_rule_for_target_cpu_and_threads():
    base = record(cost=1e-3, target="llvm -num-threads=2")
    assert matches(base, "llvm -num-threads=2 -mcpu=skylake-avx512")
    assert not matches(base, "llvm -num-threads=1", "skylake-avx512")
    assert matches(base, "llvm -num-threads=1", "skylake-avx512", same_threads=False)
    assert not matches(base, "llvm -num-threads=2", "znver4")
    assert not matches(base, "llvm -mattr=-avx512f -num-threads=2", "skylake-avx512")
    assert not matches(dataclasses.replace(base, target="cuda -arch=??"), "llvm",
                       "skylake-avx512")
    assert best_records([record(cost=None, error="wrong_answer")]) == {}

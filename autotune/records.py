"""Tuning records: one JSON line per measured candidate, appended as measurements arrive.

A record names the task (its key is the kernel name, which carries the workload's structural
hash), the target and host CPU it was measured on, the config (knob values and index), the
measured costs or the error class, and the ember version. The log is append-only and every line
is flushed and fsynced, so an interrupted tune leaves a valid file and the next run resumes from
it; a last line cut short by a crash is skipped on reading and dropped before appending.

`matches` says whether a record was measured for a target (the one rule for compiling,
resuming and transfer learning); `best_records` picks the fastest matching record per task:
what `ember.compile(..., records=...)` applies.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ember.autotune.task import Task, TuningError
from ember.compiler.space import Config
from ember.target import Target


class RecordError(TuningError):
    """A records file that cannot be read: missing, or a damaged line (named by number)."""


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (split factors, loop orders), recursively."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


@functools.cache
def target_cpu(target: str) -> str:
    """The CPU name records of `target` are keyed by: LLVM's name of the CPU the code is
    compiled for (`-mcpu`, the host's for native); empty for targets without one."""
    parsed = Target.parse(target)
    if parsed.kind != "llvm":
        return ""
    from ember.backends.llvm.host import resolve_target

    return resolve_target(parsed).cpu


def _version() -> str:
    import ember

    return ember.__version__


@dataclasses.dataclass(frozen=True)
class Record:
    """One measured candidate of one task."""

    task: str            # the task key (kernel name)
    workload: str        # the workload, readable
    target: str
    cpu: str             # LLVM name of the CPU the code was compiled for and run on
    config: dict[str, Any]
    index: int
    flops: int
    costs: tuple[float, ...]
    error: str | None    # an ErrorClass value, None when measured
    message: str
    timestamp: float
    ember: str

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.costs)

    @property
    def best(self) -> float:
        """The fastest run in seconds; inf on error."""
        return min(self.costs) if self.ok else math.inf

    @property
    def gflops(self) -> float:
        """Throughput of the fastest run; 0.0 on error."""
        best = self.best
        return self.flops / best / 1e9 if self.ok and best > 0 else 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> Record:
        """Parse one line; ValueError, KeyError or TypeError when it is not a record."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("a record is a JSON object")
        fields = {f.name for f in dataclasses.fields(Record)}
        missing = fields - set(data)
        if missing:
            raise KeyError(f"missing field(s) {sorted(missing)}")
        # fields added by later versions are ignored, so old ember reads newer logs
        data = {k: v for k, v in data.items() if k in fields}
        if not isinstance(data["config"], dict):
            raise TypeError("config must be an object")
        data["config"] = {k: _tuples(v) for k, v in data["config"].items()}
        data["costs"] = tuple(float(c) for c in data["costs"])
        data["index"] = int(data["index"])
        data["flops"] = int(data["flops"])
        return Record(**data)

    @staticmethod
    def of(task: Task, config: Config, result: Any) -> Record:
        """The record of measuring `task` at `config` (`result`: a measure.MeasureResult)."""
        error = result.error
        return Record(
            task=task.key, workload=task.describe(), target=str(task.target),
            cpu=target_cpu(str(task.target)), config=config.as_dict(), index=config.index,
            flops=task.flops, costs=tuple(float(c) for c in result.costs),
            error=None if error is None else str(getattr(error, "value", error)),
            message=str(result.message or ""),
            timestamp=float(result.timestamp or time.time()), ember=_version())


class RecordLog:
    """An append-only JSONL file of records. Each `append` is flushed and fsynced before it
    returns; iterating reads the records written so far (none when the file does not exist)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = None

    def _open(self):
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _drop_truncated_tail(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
        return self._file

    def append(self, record: Record) -> None:
        file = self._open()
        file.write(record.to_json() + "\n")
        file.flush()
        os.fsync(file.fileno())

    def __iter__(self) -> Iterator[Record]:
        if not self.path.exists():
            return iter(())
        return iter(load_records(self.path))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordLog({str(self.path)!r})"


def _drop_truncated_tail(path: Path) -> None:
    """Cut a last line that a killed writer left without its newline, so the next record
    starts on a line of its own (a complete record just gets its newline)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        content = file.read()
        start = content.rfind(b"\n") + 1
        try:
            Record.from_json(content[start:].decode())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            file.truncate(start)
            return
        file.seek(0, os.SEEK_END)
        file.write(b"\n")


def load_records(path: str | os.PathLike) -> list[Record]:
    """The records of a JSONL file, in order. A damaged line raises RecordError naming the
    file and line; a damaged *last* line without its newline (a writer killed mid-line) is
    skipped. Blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"records file {str(path)!r} does not exist; tune first "
                          f"(`ember tune ... --log {path}`)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(f"cannot read records file {str(path)!r}: {error}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(Record.from_json(line))
        except (ValueError, KeyError, TypeError) as error:
            if number == len(lines):  # no newline after it: cut short by a crash
                continue
            raise RecordError(f"{path}:{number}: not a tuning record ({error}); fix or "
                              f"delete that line") from None
    return records


def _threads(target: Target) -> int:
    """The thread count code for `target` runs with (-num-threads, else the runtime's
    default on this machine, as the measurer and the compiled module use)."""
    threads = target.attrs.get("num-threads")
    if threads:
        return int(threads)
    from ember.backends.llvm.parallel import default_num_threads

    return default_num_threads()


@functools.cache
def _identity(text: str) -> tuple[str, int] | None:
    """A target string without `-mcpu` and `-num-threads`, and its thread count; None for a
    string that does not parse (a foreign target matches nothing)."""
    try:
        target = Target.parse(text)
    except Exception:  # noqa: BLE001 - any unparseable target string simply never matches
        return None
    kept = tuple((k, v) for k, v in target.options if k not in ("mcpu", "num-threads"))
    return str(Target(target.kind, kept)), _threads(target)


def _same_threads(record: Record, target: str | Target, cpu: str | None) -> bool | None:
    """None when `record` was not measured for `target` and its CPU (see `matches`), else
    whether it was measured with the target's thread count."""
    text = str(target)
    mine, record_id = _identity(text), _identity(record.target)
    if mine is None or record_id is None or mine[0] != record_id[0]:
        return None
    if record.cpu != (target_cpu(text) if cpu is None else cpu):
        return None
    return mine[1] == record_id[1]


def matches(record: Record, target: str | Target, cpu: str | None = None,
            same_threads: bool = True) -> bool:
    """Whether `record` was measured for `target`: the one rule every consumer of records
    uses (compiling, resuming, transfer learning).

    Targets compare without `-mcpu`, whose CPU is compared by its LLVM name instead (`cpu`,
    else the one `target` compiles for), so records tuned for "llvm" apply to
    "llvm -mcpu=native" on the same machine. The thread count must match too unless
    `same_threads` is False: it changes a config's speed but not its validity.
    """
    threads = _same_threads(record, target, cpu)
    return threads is not None and (threads or not same_threads)


def best_records(records: Iterable[Record], target: str | Target | None = None,
                 cpu: str | None = None) -> dict[str, Record]:
    """The fastest successful record per task key among the records `matches` finds for
    `target` (all records when None). A task's records measured with the target's thread
    count win over those measured with another, which serve only when there are none."""
    best: dict[str, tuple[bool, float, Record]] = {}
    for record in records:
        if not record.ok:
            continue
        exact = True if target is None else _same_threads(record, target, cpu)
        if exact is None:
            continue
        rank = (not exact, record.best)
        if record.task not in best or rank < best[record.task][:2]:
            best[record.task] = (*rank, record)
    return {task: entry[2] for task, entry in best.items()}


def records_for_compile(records: str | os.PathLike | Iterable[Record], target: str | Target
                        ) -> dict[str, Mapping[str, Any]]:
    """What `ember.compile(..., records=...)` applies: kernel name -> knob values of the best
    record for `target` on the CPU it compiles for."""
    if isinstance(records, str | os.PathLike):
        records = load_records(records)
    chosen = best_records(records, Target.parse(target))
    return {key: record.config for key, record in chosen.items()}


__all__ = ["Record", "RecordError", "RecordLog", "best_records", "load_records", "matches",
           "records_for_compile", "target_cpu"]

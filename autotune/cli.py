"""`ember tune`: tune a model's kernels, or one operator's, and write the records.

    ember tune model.onnx --target llvm --trials 2000 --log tune.jsonl
    ember tune --op conv2d --shape 1x64x56x56 --shape 64x64x3x3 --attr pads=1,1,1,1 \\
        --trials 200 --log conv.jsonl

Tasks come from `task.extract_tasks` (a model) or `task.op_task` (one operator); the search is
`tuner.tune_model` / `tuner.tune_task` with the chosen tuner, measuring through
`measure.make_measurer`. Each task gets a progress bar (trials, best GFLOP/s, time left). The
summary table and `--plot` read the log itself, so they cover earlier runs of the same command
too: running it again with the same `--log` resumes (the tuner skips measured configs), and
Ctrl-C stops at once with a valid log and prints the summary so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.errors import EmberError

if TYPE_CHECKING:  # the compiler loads when a tune starts, not when the CLI parses
    from ember.autotune.records import Record, RecordLog
    from ember.autotune.task import Task

TUNERS = ("xgb", "random", "grid")


# ----------------------------------------------------------------------------- arguments

def parse_dims(text: str, what: str) -> tuple[int, ...]:
    """`"1x64x56x56"` (or `"1,64,56,56"`) -> (1, 64, 56, 56)."""
    try:
        dims = tuple(int(d) for d in text.replace(",", "x").split("x") if d.strip())
        if not dims or any(d < 0 for d in dims):
            raise ValueError
    except ValueError:
        raise EmberError(f"{what} {text!r} must look like 1x64x56x56") from None
    return dims


def parse_input_shapes(pairs: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """`["x=1,3,224,224"]` (or `x=1x3x224x224`) -> {"x": (1, 3, 224, 224)}: every command's
    `--input-shape`."""
    if not pairs:
        return None
    shapes = {}
    for pair in pairs:
        name, sep, dims = pair.rpartition("=")
        if not sep or not name:
            raise EmberError(f"--input-shape {pair!r} must look like name=1,3,224,224")
        shapes[name] = parse_dims(dims, "--input-shape")
    return shapes


def _attr_value(text: str) -> Any:
    def scalar(word: str) -> Any:
        for kind in (int, float):
            try:
                return kind(word)
            except ValueError:
                pass
        return word

    if "," in text:
        return [scalar(w) for w in text.split(",") if w.strip()]
    return scalar(text)


def parse_attrs(pairs: Sequence[str] | None) -> dict[str, Any]:
    """`["pads=1,1,1,1", "group=32", "auto_pad=SAME_UPPER"]` -> ONNX attribute values."""
    attrs = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise EmberError(f"--attr {pair!r} must look like name=value or name=1,1,1,1")
        attrs[name] = _attr_value(value)
    return attrs


def add_tune_parser(commands: Any) -> argparse.ArgumentParser:
    """Register `ember tune` on the CLI's subcommands."""
    tune = commands.add_parser(
        "tune", help="tune a model's kernels (or one operator) and write tuning records",
        description="Search each kernel's schedule space for the fastest config and append "
                    "every measurement to --log; `ember.compile(model, records=LOG)` applies "
                    "the best. Running the same command again resumes.")
    tune.add_argument("model", nargs="?", help="path to an .onnx model (or use --op)")
    tune.add_argument("--op", help="tune one operator instead: an ONNX op type or an alias "
                                   "(conv2d, matmul, dense)")
    tune.add_argument("--shape", action="append", metavar="DIMS",
                      help="with --op: an input shape, e.g. 1x64x56x56 (repeat per input; "
                           "inputs after the first are constant weights)")
    tune.add_argument("--attr", action="append", metavar="NAME=VALUE",
                      help="with --op: an ONNX attribute, e.g. pads=1,1,1,1 or group=32")
    tune.add_argument("--dtype", default="float32", help="with --op: element type")
    tune.add_argument("--target", default="llvm", help="compilation target (default llvm)")
    tune.add_argument("--trials", type=int, default=1000,
                      help="measurements in all (a model's are split by latency share)")
    tune.add_argument("--log", required=True, metavar="PATH",
                      help="JSONL records file; appended to, and resumed from")
    tune.add_argument("--tuner", choices=TUNERS, default="xgb",
                      help="search strategy (default xgb: cost model + simulated annealing)")
    tune.add_argument("--early-stopping", type=int, default=None, metavar="N",
                      help="stop a task after N trials without improvement")
    tune.add_argument("--executor", choices=("local", "ray"), default="local",
                      help="where candidates build and run (ray: ember[distributed])")
    tune.add_argument("--address", default=None, help="with --executor ray: the cluster")
    tune.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                      help="static shape for an input with symbolic dimensions")
    tune.add_argument("--opt-level", type=int, default=3, help="graph optimization level")
    tune.add_argument("--tasks", type=int, default=None, metavar="K",
                      help="tune only the K tasks with the most FLOPs x calls")
    tune.add_argument("--seed", type=int, default=0, help="tuner seed")
    tune.add_argument("--cache-flush", action="store_true",
                      help="evict a kernel's weights and outputs from the CPU caches before "
                           "each timed call, as in a model whose weights do not stay in "
                           "cache (TVM's enable_cpu_cache_flush; x86)")
    tune.add_argument("--no-transfer", dest="transfer", action="store_false",
                      help="do not let the XGBoost tuner learn from the log's records of "
                           "other tasks of the same template")
    tune.add_argument("--plot", metavar="PNG",
                      help="draw best GFLOP/s against trials per task (ember[plot])")
    tune.set_defaults(func=run_tune_command)
    return tune


# ----------------------------------------------------------------------------- progress

class ProgressBars:
    """One tqdm bar per task, opened at the task's first measurement: trials done of its
    budget, best GFLOP/s, errors, time left (tqdm's estimate). A bar is left on screen when
    the next task starts."""

    def __init__(self, existing: Mapping[str, list[Record]], totals: dict[str, int | None],
                 stream: Any = None, enabled: bool = True):
        self.existing = existing
        self.totals = totals
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.best: dict[str, float] = {}
        self._bar = None
        self._bar_task: str | None = None

    def start(self, task: Task) -> None:
        """Show `task`'s bar before its next batch is measured (its clock starts)."""
        self._open(task)

    def _open(self, task: Task) -> Any:
        if self._bar_task == task.key:
            return self._bar
        self.close()
        from tqdm import tqdm

        before = self.existing.get(task.key, [])
        if task.key not in self.best:
            self.best[task.key] = max((r.gflops for r in before), default=0.0)
            self.done[task.key] = len(before)
        self._bar = tqdm(total=self.totals.get(task.key), initial=self.done[task.key],
                         desc=_short(task.name), unit="trial", file=self.stream,
                         disable=not self.enabled, leave=True, dynamic_ncols=True)
        self._bar_task = task.key
        self._show(task.key)
        return self._bar

    def _show(self, key: str) -> None:
        postfix = {"best": f"{self.best.get(key, 0.0):.1f} GFLOP/s"}
        if self.errors[key]:
            postfix["errors"] = self.errors[key]
        self._bar.set_postfix(postfix, refresh=True)

    def measured(self, task: Task, results: Sequence[Any]) -> None:
        bar = self._open(task)
        for result in results:
            self.done[task.key] += 1
            if result.error is None and result.costs:
                if task.flops:
                    gflops = task.flops / min(result.costs) / 1e9
                    self.best[task.key] = max(self.best.get(task.key, 0.0), gflops)
            else:
                self.errors[task.key] += 1
        bar.update(len(results))
        self._show(task.key)

    def set_total(self, task_key: str, total: int) -> None:
        self.totals[task_key] = total
        if self._bar_task == task_key and self._bar is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._bar_task = None, None


def _short(name: str, width: int = 36) -> str:
    return name if len(name) <= width else name[:width - 17] + "…" + name[-16:]


# ----------------------------------------------------------------------------- summary

@dataclasses.dataclass(frozen=True)
class TaskSummary:
    """A task's tuning so far, read from the log."""

    task: str
    workload: str
    weight: int
    trials: int
    errors: Mapping[str, int]
    default_s: float   # inf when the default config was not measured
    best_s: float      # inf when nothing measured well
    flops: int

    @property
    def default_gflops(self) -> float:
        return self.flops / self.default_s / 1e9 if math.isfinite(self.default_s) else 0.0

    @property
    def best_gflops(self) -> float:
        return self.flops / self.best_s / 1e9 if math.isfinite(self.best_s) else 0.0

    @property
    def speedup(self) -> float:
        if math.isfinite(self.default_s) and math.isfinite(self.best_s) and self.best_s > 0:
            return self.default_s / self.best_s
        return math.nan


def summarize(tasks: Sequence[Task], records: Sequence[Record]) -> list[TaskSummary]:
    """One summary per task from the log's records (this run's and earlier ones')."""
    by_task: dict[str, list[Record]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    out = []
    for task in tasks:
        mine = by_task.get(task.key, [])
        default_index = task.space().default.index
        default = [r.best for r in mine if r.index == default_index and r.ok]
        out.append(TaskSummary(
            task.key, task.describe(), task.weight, len(mine),
            dict(Counter(r.error for r in mine if r.error is not None)),
            min(default, default=math.inf), min((r.best for r in mine), default=math.inf),
            task.flops))
    return out


def format_summary(rows: Sequence[TaskSummary]) -> str:
    """The summary table: per task its trials, errors by class, default and best time and
    GFLOP/s, and the speed-up of the best over the template default."""
    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.3f}" if math.isfinite(seconds) else "-"

    def rate(value: float) -> str:
        return f"{value:.1f}" if value else "-"

    header = (f"{'task':<38} {'calls':>5} {'trials':>6}  {'errors':<22} {'default ms':>10} "
              f"{'best ms':>9} {'default GF/s':>12} {'best GF/s':>9} {'speed-up':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        errors = " ".join(f"{k}:{v}" for k, v in sorted(row.errors.items())) or "-"
        speedup = f"{row.speedup:.2f}x" if math.isfinite(row.speedup) else "-"
        lines.append(f"{_short(row.task, 38):<38} {row.weight:>5} {row.trials:>6}  "
                     f"{errors:<22} {ms(row.default_s):>10} {ms(row.best_s):>9} "
                     f"{rate(row.default_gflops):>12} {rate(row.best_gflops):>9} {speedup:>8}")
    return "\n".join(lines)


def plot_curves(tasks: Sequence[Task], records: Sequence[Record], path: str | Path) -> Path:
    """Draw best GFLOP/s so far against trials, one line per task that does arithmetic (a
    layout transform's throughput is not in FLOPs), to a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for task in tasks:
        if not task.flops:
            continue
        best, curve = 0.0, []
        for record in records:
            if record.task == task.key:
                best = max(best, record.gflops)
                curve.append(best)
        if curve:
            axes.plot(range(1, len(curve) + 1), curve, label=_short(task.name))
    axes.set_xlabel("trials")
    axes.set_ylabel("best GFLOP/s")
    axes.set_title("ember tune: best throughput found")
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EmberError("--plot needs matplotlib: pip install ember[plot]") from None
    return plt


# ----------------------------------------------------------------------------- the command

def select_tasks(args: argparse.Namespace) -> list[Task]:
    from ember.autotune.task import TuningError, extract_tasks, op_task

    if args.op:
        if args.model:
            raise EmberError("give a model or --op, not both")
        shapes = [parse_dims(s, "--shape") for s in args.shape or ()]
        return [op_task(args.op, shapes, parse_attrs(args.attr), args.dtype, args.target)]
    if not args.model:
        raise EmberError("ember tune needs a model (ember tune model.onnx ...) or --op")
    if args.shape or args.attr:
        raise EmberError("--shape and --attr go with --op; for a model use --input-shape")
    tasks = extract_tasks(args.model, args.target, parse_input_shapes(args.input_shape),
                          args.opt_level)
    if not tasks:
        raise TuningError(f"{args.model} compiles to no kernel with a choice to tune")
    return tasks[:args.tasks] if args.tasks else tasks


def _existing(log_path: Path) -> dict[str, list[Record]]:
    from ember.autotune.records import load_records

    found: dict[str, list[Record]] = {}
    if log_path.exists():
        for record in load_records(log_path):
            found.setdefault(record.task, []).append(record)
    return found


def _measure_defaults(tasks: Sequence[Task], measurer: Any, log: RecordLog) -> None:
    """Measure each task's default config if the log lacks it: the summary's baseline."""
    from ember.autotune.records import Record

    existing = _existing(log.path)
    for task in tasks:
        default = task.space().default
        if any(r.index == default.index for r in existing.get(task.key, [])):
            continue
        [result] = measurer.measure(task, [default])
        log.append(Record.of(task, default, result))


def tune(tasks: Sequence[Task], args: argparse.Namespace, out: Any = None,
         progress: bool = True) -> list[TaskSummary]:
    """Tune `tasks` as `args` says; print the summary (also after Ctrl-C); the rows."""
    from ember.autotune import measure, tuner
    from ember.autotune.records import RecordLog, load_records

    out = out if out is not None else sys.stdout
    if args.plot:
        _pyplot()  # fail before tuning, not after
    log_path = Path(args.log)
    existing = _existing(log_path)
    many = len(tasks) > 1
    totals: dict[str, int | None] = {t.key: None if many else args.trials for t in tasks}
    bars = ProgressBars(existing, totals, enabled=progress)
    log = RecordLog(log_path)
    measurer = measure.make_measurer(args.executor, args.address,
                                     measure.MeasureOptions(cache_flush=args.cache_flush))

    def measure_for_task(task: Task) -> Callable[[Sequence[Any]], list[Any]]:
        def run(configs: Sequence[Any]) -> list[Any]:
            bars.start(task)
            results = measurer.measure(task, configs)
            bars.measured(task, results)
            return results

        return run

    def on_progress(state: Any) -> None:  # a tuner.TuneProgress
        # a model's tasks get their budgets round by round: the bar follows
        bars.set_total(state.task.key, state.trials)

    interrupted = False
    start = time.perf_counter()
    try:
        if many:
            tuner.tune_model(tasks, measure_for_task, args.trials,
                             early_stopping=args.early_stopping, log=log,
                             callback=on_progress, tuner=args.tuner, seed=args.seed,
                             transfer=args.transfer)
        else:
            [task] = tasks
            tuner.tune_task(task, tuner.make_tuner(args.tuner, task, args.seed),
                            measure_for_task(task), args.trials,
                            early_stopping=args.early_stopping, log=log,
                            callback=on_progress, transfer=args.transfer)
        bars.close()
        _measure_defaults(tasks, measurer, log)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bars.close()
        log.close()
        measurer.close()
    seconds = time.perf_counter() - start
    records = load_records(log_path) if log_path.exists() else []
    rows = summarize(tasks, records)
    if interrupted:
        state = (f"{log_path} is valid ({len(records)} records)" if records
                 else "nothing was measured yet")
        print(f"\ninterrupted after {seconds:.0f} s; {state}: run the same command again to "
              f"resume", file=out)
    else:
        print(f"tuned {len(tasks)} task(s) in {seconds:.0f} s; records in {log_path}", file=out)
    print(format_summary(rows), file=out)
    if args.plot and records:
        print(f"plot: {plot_curves(tasks, records, args.plot)}", file=out)
    print(f"compile with them: ember.compile(model, records={str(log_path)!r})", file=out)
    if interrupted:
        raise KeyboardInterrupt
    return rows


def run_tune_command(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise EmberError(f"--trials must be at least 1, got {args.trials}")
    tasks = select_tasks(args)
    print(f"{len(tasks)} task(s) to tune on {args.target}, {args.trials} trial(s), "
          f"tuner {args.tuner}:")
    for task in tasks:
        print(f"  {task.name}  x{task.weight}  {len(task.space())} configs  "
              f"{task.flops / 1e6:.1f} MFLOP")
    if len(tasks) == 1:
        print(f"  {tasks[0].describe()}")
    try:
        tune(tasks, args)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["TaskSummary", "add_tune_parser", "format_summary", "parse_attrs", "parse_dims",
           "plot_curves", "run_tune_command", "select_tasks", "summarize", "tune"]

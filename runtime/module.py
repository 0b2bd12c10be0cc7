"""Module: a compiled model, ready to run.

Every target returns the same interface: `run(feeds)` for a list of outputs in graph-output
order, `module(*arrays, **named)` for one array or a tuple, `inputs`/`outputs` as `TensorSpec`
lists, and `benchmark()`. Inputs are checked against the signature before anything runs.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ember.backends.llvm.runtime import aligned
from ember.errors import InputError
from ember.ir.graph import Graph, dtype_name, numpy_dtype


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a module input or output.

    Shapes are static, except in modules that specialize on input values at run time (a
    Reshape whose shape is a graph input): there a dimension only known at run time is None,
    and an output whose rank the model does not declare has shape None.
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}[...]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of `shape` fits this spec (None dimensions take any size)."""
        if self.shape is None or shape == self.shape:
            return True
        return len(shape) == len(self.shape) and all(
            d is None or d == s for d, s in zip(self.shape, shape)
        )


def graph_signature(graph: Graph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The input and output specs of a graph, in order."""

    def spec(name: str) -> TensorSpec:
        t = graph.types[name]
        return TensorSpec(name, t.shape, t.dtype)

    return [spec(n) for n in graph.inputs], [spec(n) for n in graph.outputs]


class Executor(Protocol):
    """What a backend hands the runtime: run inputs in signature order, return fresh outputs."""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Latency statistics in milliseconds over `runs` timed calls."""

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    def __str__(self) -> str:
        return (f"median {self.median_ms:.3f} ms, mean {self.mean_ms:.3f} ms, "
                f"p10 {self.p10_ms:.3f} ms, p90 {self.p90_ms:.3f} ms ({self.runs} runs)")


@dataclasses.dataclass(frozen=True)
class ProfileRow:
    kernel: str
    ops: tuple[str, ...]
    ms: float
    share: float  # of the sum over all rows


class Profile(list):
    """`Module.profile`'s rows (one per kernel call, in order); `str()` is a table."""

    def __init__(self, rows: Sequence[tuple[str, tuple[str, ...], float]]):
        total = sum(ms for _, _, ms in rows) or 1.0
        super().__init__(ProfileRow(k, tuple(ops), ms, ms / total) for k, ops, ms in rows)

    def __str__(self) -> str:
        lines = [f"{'kernel':<40} {'ops':<28} {'ms':>9} {'share':>7}"]
        for row in self:
            lines.append(f"{row.kernel:<40} {'+'.join(row.ops):<28} {row.ms:>9.3f} "
                         f"{row.share:>6.1%}")
        return "\n".join(lines)


def summarize_times(times_ms: Sequence[float]) -> BenchmarkResult:
    ordered = sorted(times_ms)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return BenchmarkResult(statistics.median(ordered), statistics.fmean(ordered),
                           quantile(0.1), quantile(0.9), len(ordered))


def _numpy_dtype(dtype: str) -> np.dtype | None:
    """The numpy dtype of a tensor spec; None for a sequence or optional spec (host modules)."""
    return None if dtype.startswith(("sequence", "optional", "unknown")) else numpy_dtype(dtype)


class Module:
    """A compiled model. Construct through `ember.compile`."""

    #: which tunable kernels got a tuning record (compiler/kernels.TuningReport) when compiled
    #: with `records=`; None otherwise, and for loaded artefacts
    tuning = None

    def __init__(self, executor: Executor, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], target: str):
        self._executor = executor
        self.inputs: list[TensorSpec] = list(inputs)
        self.outputs: list[TensorSpec] = list(outputs)
        self.target = target
        self._input_dtypes = [_numpy_dtype(spec.dtype) for spec in self.inputs]

    def run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """Run on `feeds` (input name -> array); returns fresh arrays in graph-output order."""
        return self._executor.run(self._check_feeds(feeds))

    def __call__(self, *args: Any, **named: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run with inputs by position and/or name; one array for one output, else a tuple."""
        if len(args) > len(self.inputs):
            raise InputError(
                f"the module takes {len(self.inputs)} input(s) "
                f"({', '.join(s.name for s in self.inputs)}), got {len(args)} positional"
            )
        feeds = {spec.name: value for spec, value in zip(self.inputs, args)}
        for name, value in named.items():
            if name in feeds:
                raise InputError(f"input {name!r} is given both by position and by name")
            feeds[name] = value
        outputs = self.run(feeds)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def set_num_threads(self, count: int) -> None:
        """Threads for parallel loops (targets without parallel code ignore it)."""
        setter = getattr(self._executor, "set_num_threads", None)
        if setter is not None:
            setter(count)

    def kernel_stats(self) -> dict[str, int]:
        """How many distinct kernels the module runs, in how many steps (0 and 0 for targets
        that interpret the graph)."""
        steps = getattr(self._executor, "steps", [])
        return {"kernels": len({step.kernel for step in steps}), "steps": len(steps)}

    @property
    def specializations(self) -> int:
        """How many variants a module that specializes on input values at run time has
        compiled so far (one per distinct value of its shape-deciding inputs); 0 for others."""
        return getattr(self._executor, "compilations", 0)

    def save(self, path: str) -> str:
        """Save as an artefact directory that `ember.load(path)` reads back, in any process,
        without the compiler (runtime/artifact.py)."""
        from ember.runtime.artifact import save

        return str(save(self, path))

    def profile(self, feeds: Mapping[str, Any] | None = None, repeat: int = 5,
                isolated: bool = False) -> Profile:
        """Time each kernel call on `feeds` (random inputs when None): one row per step (the
        median of `repeat`), printed as a table. By default the steps run in order, as in a
        run, so the rows add up to about a run's time and a kernel whose data a run brings
        from memory is timed so; `isolated` times each step alone, repeated with its data hot
        in cache (its speed as a kernel)."""
        profiler = getattr(self._executor, "profile", None)
        if profiler is None:
            raise InputError(f"modules for target {self.target!r} run no kernels to profile")
        inputs = self._check_feeds(feeds if feeds is not None else self.random_inputs())
        return Profile(profiler(inputs, repeat, isolated))

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Random feeds matching the signature (standard normal floats, small integers),
        64-byte aligned so that runs read them in place (see `aligned`)."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            if spec.shape is None or None in spec.shape:
                raise InputError(f"input {spec.name!r} has no static shape ({spec}); give "
                                 f"feeds explicitly")
            if spec.dtype == "bool":
                feeds[spec.name] = rng.random(spec.shape) < 0.5
            elif spec.dtype.startswith(("int", "uint")):
                feeds[spec.name] = rng.integers(0, 8, spec.shape).astype(spec.dtype)
            else:
                feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        return {name: aligned(value) for name, value in feeds.items()}

    def benchmark(self, feeds: Mapping[str, Any] | None = None, repeat: int = 20,
                  number: int = 1, warmup: int = 1) -> BenchmarkResult:
        """Time `repeat` samples of `number` calls each (after `warmup` calls); per-call ms."""
        inputs = self._check_feeds(feeds if feeds is not None else self.random_inputs())
        for _ in range(warmup):
            self._executor.run(inputs)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                self._executor.run(inputs)
            times.append((time.perf_counter() - start) * 1e3 / number)
        return summarize_times(times)

    def _check_feeds(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputError(
                f"feeds must be a dict of input name -> array, got {type(feeds).__name__}"
            )
        if len(feeds) != len(self.inputs) or any(s.name not in feeds for s in self.inputs):
            expected = [spec.name for spec in self.inputs]
            missing = [name for name in expected if name not in feeds]
            extra = [name for name in feeds if name not in expected]
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unknown {extra}")
            raise InputError(f"inputs do not match the module: {'; '.join(parts)}; "
                             f"it takes {[str(s) for s in self.inputs]}")
        return [self._check_value(spec, feeds[spec.name], dtype)
                for spec, dtype in zip(self.inputs, self._input_dtypes)]

    def _check_value(self, spec: TensorSpec, value: Any, dtype: np.dtype | None = None) -> Any:
        """`value` as an array that fits `spec` (`dtype`, the spec's numpy dtype when known,
        is a fast path for the check); InputError naming the input otherwise."""
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if not spec.accepts_shape(array.shape):
            raise InputError(f"input {spec.name!r} expects shape {spec.shape}, "
                             f"got {tuple(array.shape)}")
        if (array.dtype != dtype and spec.dtype != "unknown"
                and dtype_name(array.dtype) != spec.dtype):
            hint = ("give an array of str" if spec.dtype == "string"
                    else f"convert it with .astype(np.{spec.dtype})")
            raise InputError(f"input {spec.name!r} expects dtype {spec.dtype}, got "
                             f"{dtype_name(array.dtype)}; {hint}")
        return array

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<ember.Module target={self.target!r} ({ins}) -> ({outs})>"


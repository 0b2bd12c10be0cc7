"""A crash- and hang-proof place to compile fuzzed models: one worker process, reused.

`Sandbox.judge(model_bytes, data, rtol, atol)` sends a model to a worker that compiles it with
`ember.compile` (target llvm), runs it on feeds made from `data` (the node case's inputs where
they still fit) and compares it with onnx's ReferenceEvaluator and ONNX Runtime: agreeing with
either is enough, since a malformed model often makes one of them fail or misbehave. It
returns an `Outcome`:

- "refused": ember raised an `EmberError` (a clean, typed refusal);
- "match": ember accepted the model and agrees with an oracle;
- "unchecked": ember accepted the model, but it is too big to run, no oracle can run it (or
  one crashed), or the difference is behaviour ONNX leaves undefined (out-of-range
  float-to-integer casts, integer overflow, non-finite or extreme attributes);
- "mismatch": ember's outputs differ from every oracle that ran;
- "accepted": ember compiled a model it should have refused (a negative dimension);
- "harness": the fuzzer itself failed on the model (a bug in this file, not in ember);
- "exception": ember raised something other than an `EmberError`;
- "crash" / "hang": the worker died or overran its time (it is restarted).

The worker is a separate Python process (`python fuzz_sandbox.py`) that speaks pickles over
its stdin/stdout: a segfault in generated code or a stuck pass cannot take pytest down, and a
fork of a process that has threads (the LLVM JIT's pool) is avoided. Its address space is
capped so that an absurd shape turns into a MemoryError rather than swapping the machine.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

#: cap on the worker's address space (a Python with numpy, llvmlite and ORT maps about 1.5 GB)
MEMORY_LIMIT = 6 * 1024**3
#: feeds and outputs larger than this many elements are not run (compiling is still judged)
MAX_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Outcome:
    status: str
    detail: str = ""

    @property
    def acceptable(self) -> bool:
        return self.status in ("refused", "match", "unchecked")


# -- the worker side


def _send(stream: Any, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_exactly(stream: Any, size: int) -> bytes:
    # the parent reads an unbuffered pipe (so that select() sees every byte), where one read
    # may return less than asked
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(stream: Any) -> Any:
    (size,) = struct.unpack("<Q", _read_exactly(stream, 8))
    return pickle.loads(_read_exactly(stream, size))


def _feeds(specs: list[tuple[str, tuple[int, ...], str]], data: dict[str, Any],
           seed: int) -> dict[str, Any]:
    """Feeds for `specs` (name, shape, dtype): the case's array where it still fits (cast to a
    new dtype if need be), else seeded random values (small non-negative integers, so that
    index inputs stay mostly in range)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in specs:
        value = data.get(name)
        if value is not None and tuple(value.shape) == tuple(shape):
            try:
                feeds[name] = value.astype(dtype)
                continue
            except (TypeError, ValueError):
                pass
        if dtype == "bool":
            feeds[name] = rng.random(shape) < 0.5
        elif dtype == "string":
            feeds[name] = np.array(rng.choice(["a", "bb", ""], shape), dtype=object)
        elif np.dtype(dtype).kind in "iu":
            feeds[name] = rng.integers(0, 3, shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _compare(got: list, expected: list, rtol: float, atol: float) -> str:
    """"" when every output matches, else the first difference."""
    import numpy as np

    if len(got) != len(expected):
        return f"{len(got)} outputs, the oracle gives {len(expected)}"
    for index, (out, ref) in enumerate(zip(got, expected)):
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape or out.dtype != ref.dtype:
            return (f"output {index}: {out.dtype}{list(out.shape)}, the oracle gives "
                    f"{ref.dtype}{list(ref.shape)}")
        if ref.dtype.kind in "iu":
            differ = out != ref
            # overflow (and NaN) in float-to-integer conversion is undefined: ember saturates,
            # numpy wraps or gives the type's minimum. Differences only at the type's limits
            # are that, not a bug.
            limits = np.iinfo(ref.dtype)
            at_limit = np.isin(out, [limits.min, limits.max]) | np.isin(ref, [limits.min,
                                                                               limits.max])
            if np.any(differ & ~at_limit):
                return f"output {index}: values differ"
            continue
        if ref.dtype == object or ref.dtype.kind in "SUb":
            if not np.array_equal(out.astype(object), ref.astype(object)):
                return f"output {index}: values differ"
            continue
        if ref.dtype.itemsize <= 2:  # float16, bfloat16: both sides round differently
            rtol, atol = max(rtol, 1e-2), max(atol, 1e-2)
        finite = np.abs(ref[np.isfinite(ref)].astype(np.float64))
        # a value near zero that is a sum of large terms carries their rounding error
        atol = max(atol, 3e-5 * float(finite.max())) if finite.size else atol
        if not np.allclose(out.astype(np.float64), ref.astype(np.float64), rtol=rtol,
                           atol=atol, equal_nan=True):
            diff = np.nanmax(np.abs(out.astype(np.float64) - ref.astype(np.float64)))
            return f"output {index}: values differ (max abs diff {diff:.3g})"
    return ""


def _oracles(model: Any, feeds: dict[str, Any]) -> list[tuple[str, Any]]:
    """(oracle name, outputs or the exception) for onnx's reference, then ONNX Runtime."""
    results = []
    try:
        from onnx.reference import ReferenceEvaluator

        results.append(("onnx.reference", ReferenceEvaluator(model).run(None, dict(feeds))))
    except Exception as error:  # the oracle's own failure: try the next one
        results.append(("onnx.reference", error))
    try:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        results.append(("onnxruntime", session.run(None, dict(feeds))))
    except Exception as error:
        results.append(("onnxruntime", error))
    return results


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _judge(stream: Any, model_bytes: bytes, data: dict, rtol: float, atol: float) -> Outcome:
    import traceback
    import warnings

    import numpy as np
    import onnx

    import ember

    _send(stream, ("phase", "compile"))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            module = ember.compile(model_bytes, target="llvm")
    except ember.EmberError as error:
        return Outcome("refused", _first_line(error))
    except BaseException as error:  # anything else is the bug this fuzzer looks for
        return Outcome("exception", f"compile: {_first_line(error)}\n"
                                    f"{''.join(traceback.format_exc(limit=-4))}")
    if any(spec.shape is None or None in spec.shape for spec in module.inputs):
        return Outcome("unchecked", "inputs without a static shape")
    signature = [spec for spec in list(module.inputs) + list(module.outputs)
                 if spec.shape is not None and any(d is not None and d < 0 for d in spec.shape)]
    if signature:
        return Outcome("accepted", f"compiled a module with a negative dimension: "
                                   f"{', '.join(map(str, signature))}")
    specs = [(spec.name, tuple(spec.shape), spec.dtype) for spec in module.inputs]
    # math.prod: Python integers, where numpy's int64 product would overflow
    sizes = [math.prod(shape) for _, shape, _ in specs]
    sizes += [math.prod(spec.shape) for spec in module.outputs
              if spec.shape is not None and None not in spec.shape]
    if any(size > MAX_ELEMENTS for size in sizes):
        return Outcome("unchecked", "too big to run")
    model = onnx.load_from_string(model_bytes)
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [(value.name, value.type.tensor_type) for value in model.graph.input
                    if value.name not in initializers]
    feeds = _feeds(specs, data, seed=0)
    _send(stream, ("phase", "run"))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            got = module.run(feeds)
    except ember.EmberError as error:
        return Outcome("refused", f"at run time: {_first_line(error)}")
    except BaseException as error:
        return Outcome("exception", f"run: {_first_line(error)}\n"
                                    f"{''.join(traceback.format_exc(limit=-4))}")
    # the oracles get every graph input, including ones ember's signature may leave out
    oracle_feeds = dict(feeds)
    for name, tensor_type in graph_inputs:
        if name not in oracle_feeds:
            from onnx import helper

            shape = tuple(d.dim_value for d in tensor_type.shape.dim)
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
            oracle_feeds.update(_feeds([(name, shape, dtype)], data, seed=1))
    if any(np.asarray(v).dtype.kind in "fV" and np.asarray(v).dtype.itemsize == 2
           for v in oracle_feeds.values()):
        # float16/bfloat16 inputs: the oracles compute in them, ember widens to float32
        rtol, atol = max(rtol, 1e-2), max(atol, 1e-2)
    _send(stream, ("phase", "oracle"))
    problems = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for oracle, expected in _oracles(model, oracle_feeds):
            if isinstance(expected, BaseException):
                problems.append(f"{oracle} cannot run it ({_first_line(expected)})")
                continue
            if oracle == "onnxruntime":  # its kernels sum in other orders than numpy's
                rtol, atol = max(rtol, 1e-3), max(atol, 1e-4)
            problem = _compare(got, list(expected), rtol, atol)
            if not problem:
                return Outcome("match", oracle)
            problems.append(f"{oracle}: {problem}")
    ran = [p for p in problems if "cannot run it" not in p]
    excuse = _undefined_behaviour(model) if ran else ""
    if excuse:
        return Outcome("unchecked", f"{excuse}: {'; '.join(problems)}")
    return Outcome("mismatch" if ran else "unchecked", "; ".join(problems))


def _undefined_behaviour(model: Any) -> str:
    """Why the oracles cannot be trusted to agree with ember on `model`, or ""."""
    import math

    from onnx import AttributeProto

    if _casts_float_to_integer(model):
        # ONNX leaves out-of-range and NaN float-to-integer casts undefined (ember saturates,
        # numpy and ONNX Runtime wrap)
        return "undefined float-to-integer Cast"
    for node in model.graph.node:
        for attr in node.attribute:
            floats = [attr.f] if attr.type == AttributeProto.FLOAT else list(attr.floats)
            if any(not math.isfinite(f) or abs(f) > 1e20 for f in floats):
                # inf - inf, inf * 0 or x / 1e30 depend on how each implementation writes the
                # formula and in which precision
                return f"non-finite or extreme attribute {attr.name}"
            ints = [attr.i] if attr.type == AttributeProto.INT else list(attr.ints)
            if any(not -(2**31) <= i < 2**31 for i in ints):
                # onnx.reference overflows on them and ONNX Runtime truncates them
                return f"attribute {attr.name} outside the int32 range"
    return ""


def _casts_float_to_integer(model: Any) -> bool:
    from onnx import TensorProto

    integers = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
                TensorProto.BOOL}
    for node in model.graph.node:
        if node.op_type in ("Cast", "CastLike"):
            targets = [a.i for a in node.attribute if a.name == "to"]
            if node.op_type == "CastLike" or any(t in integers for t in targets):
                return True
    return False


def worker_main() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    stream_in = os.fdopen(os.dup(0), "rb")
    stream_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints (from C code too) must not corrupt the message stream
    import ember  # noqa: F401  (import once, before the first model)

    _send(stream_out, ("ready", None))
    while True:
        try:
            model_bytes, data, rtol, atol = _receive(stream_in)
        except EOFError:
            return
        try:
            outcome = _judge(stream_out, model_bytes, data, rtol, atol)
        except Exception as error:  # the fuzzer's own failure: say so, keep serving
            import traceback

            outcome = Outcome("harness", f"{_first_line(error)}\n{traceback.format_exc()}")
        # a plain tuple: the class lives in __main__ here, in fuzz_sandbox over there
        _send(stream_out, ("done", (outcome.status, outcome.detail)))


# -- the pytest side


class Sandbox:
    """A reusable worker; `judge` restarts it after a crash or a hang."""

    def __init__(self, timeout: float = 30.0, startup_timeout: float = 120.0):
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def _start(self) -> None:
        self.log.seek(0)
        self.log.truncate()
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, env=env, bufsize=0)
        kind, _ = self._read(self.startup_timeout)
        if kind != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {kind}: {self._log_tail()}")

    def _read(self, timeout: float) -> tuple[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return "timeout", None
        try:
            return _receive(self.process.stdout)
        except (EOFError, pickle.UnpicklingError):
            return "died", None

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-1500:]

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def judge(self, model_bytes: bytes, data: dict, rtol: float = 1e-4,
              atol: float = 1e-5) -> Outcome:
        if self.process is None:
            self._start()
        assert self.process is not None and self.process.stdin is not None
        try:
            _send(self.process.stdin, (model_bytes, data, rtol, atol))
        except BrokenPipeError:
            self._stop()
            return self.judge(model_bytes, data, rtol, atol)
        phase = "send"
        deadline = time.monotonic() + self.timeout
        while True:
            kind, value = self._read(max(0.0, deadline - time.monotonic()))
            if kind == "phase":
                phase = value
                continue
            if kind == "done":
                return Outcome(*value)
            try:  # a worker that died has its exit status (a negative signal number) soon
                code = self.process.wait(timeout=0 if kind == "timeout" else 5)
            except subprocess.TimeoutExpired:
                code = None
            tail = self._log_tail()
            self._stop()
            if phase == "oracle":
                # a stuck or crashing oracle is not ember's fault (ONNX Runtime segfaults on
                # some of these models)
                return Outcome("unchecked", f"an oracle hung or died (exit code {code})")
            if kind == "timeout":
                return Outcome("hang", f"no answer in {self.timeout:.0f} s during {phase}")
            return Outcome("crash", f"worker died during {phase} (exit code {code}): {tail}")

    def close(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._stop()
        self.log.close()


if __name__ == "__main__":
    worker_main()

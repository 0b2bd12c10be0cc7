"""`ember demo`, the README's main job: compile a built-in model, check it, time it.

The model is one of the onnx package's light models with seeded random weights. Its output is
checked against the reference executor (when the target is not the reference itself) and
against ONNX Runtime when it is installed; latencies are printed side by side.
"""

from __future__ import annotations

import time

import numpy as np

from ember.compiler.build import DEFAULT_TARGET, compile
from ember.errors import EmberError
from ember.runtime.module import summarize_times
from ember.workloads.light import LIGHT_MODELS, light_model

#: relative tolerance; the absolute one scales with the output's largest magnitude
RTOL, ATOL_SCALE = 1e-3, 1e-5


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return summarize_times(times).median_ms


def _onnxruntime_session(model):
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


def run_demo(model: str = "resnet50", target: str | None = None, repeat: int = 5) -> None:
    target = target or DEFAULT_TARGET
    if model not in LIGHT_MODELS:
        raise EmberError(f"unknown light model {model!r}; known: {', '.join(LIGHT_MODELS)}")
    proto = light_model(model, seed=0)
    print(f"model: light_{model} from the onnx package, seeded random weights")
    start = time.perf_counter()
    module = compile(proto, target=target)
    print(f"compiled for {module.target!r} in {time.perf_counter() - start:.2f} s")
    feeds = module.random_inputs(seed=0)
    (output,) = module.run(feeds)[:1]

    rows = [(f"ember ({module.target})", _time(lambda: module.run(feeds), repeat))]
    checks = []
    if module.target != "reference":
        reference = compile(proto, target="reference")
        (expected,) = reference.run(feeds)[:1]
        checks.append(("reference executor", expected))
        rows.append(("numpy reference executor", _time(lambda: reference.run(feeds), repeat)))
    session = _onnxruntime_session(proto)
    if session is not None:
        (expected,) = session.run(None, feeds)[:1]
        checks.append(("ONNX Runtime", expected))
        rows.append(("ONNX Runtime", _time(lambda: session.run(None, feeds), repeat)))
    else:
        print("ONNX Runtime is not installed: pip install onnxruntime to compare against it")

    for name, expected in checks:
        error = float(np.max(np.abs(output - expected)))
        atol = ATOL_SCALE * float(np.max(np.abs(expected)))
        ok = np.allclose(output, expected, rtol=RTOL, atol=atol)
        print(f"output vs {name}: max abs difference {error:.3g} "
              f"({'ok' if ok else 'MISMATCH'} at rtol={RTOL}, atol={atol:.2g})")
        if not ok:
            raise EmberError(f"ember's output differs from {name}'s by up to {error:.3g}")
    if not checks:
        print("nothing to check against: install onnxruntime, or use a compiled target")

    ours = rows[0][1]
    print(f"\n{'executor':<32}{'median ms':>12}{'ember speed-up':>16}")
    for name, ms in rows:
        print(f"{name:<32}{ms:>12.2f}{ms / ours:>15.2f}x")

"""Per-call overhead of a compiled module: one Add of 16 floats, so the call is all overhead.

    python benchmarks/overhead.py [--calls 20000]

Times `Module.run` (input checks, staging, one call of the AOT entry function, fresh outputs)
and, beside it, ONNX Runtime's `InferenceSession.run` on the same model in the same process.
Prints the median and p90 per call over batches of 100 calls.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import TensorProto, helper

import ember


def add16():
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "add16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def per_call_us(fn, calls: int, batch: int = 100) -> tuple[float, float]:
    for _ in range(batch):
        fn()
    samples = []
    for _ in range(calls // batch):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    return float(np.median(samples)), float(np.percentile(samples, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    model = add16()
    x = np.arange(16, dtype=np.float32)
    module = ember.compile(model)
    feeds = {"x": x}
    assert np.array_equal(module.run(feeds)[0], x + x)
    rows = [("ember Module.run", *per_call_us(lambda: module.run(feeds), args.calls))]
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        rows.append(("onnxruntime run", *per_call_us(lambda: session.run(None, feeds),
                                                     args.calls)))
    print(f"{'runtime':<20} {'median us':>10} {'p90 us':>8}")
    for name, median, p90 in rows:
        print(f"{name:<20} {median:>10.2f} {p90:>8.2f}")


if __name__ == "__main__":
    main()

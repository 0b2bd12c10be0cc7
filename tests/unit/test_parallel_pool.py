"""ember's thread pool with chunk claiming (backends/llvm/parallel.py, [Note: chunk claiming]):
every iteration of a parallel loop runs exactly once whatever thread takes its chunk, over
extents smaller and larger than the chunk count, many launches in a row, launches from two
Python threads at once (one runs serially) and every chunks-per-thread setting.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ember.backends.llvm import compile_primfuncs
from ember.backends.llvm.parallel import get_runtime
from ember.errors import EmberError
from ember.ir import expr as E
from ember.ir import loop as L


def add_rows(rows: int, cols: int = 16) -> L.PrimFunc:
    """out[i, :] += a[i, :] + 1 for i in a parallel loop: an iteration run twice, or not at
    all, shows in the result."""
    a, out = L.Buffer("a", (rows * cols,), "float32"), L.Buffer("out", (rows * cols,),
                                                                 "float32")
    i = E.Var("i")
    index = E.Ramp(i * cols, E.const(1), cols)
    value = L.Load(out, (index,)) + L.Load(a, (index,)) + E.Broadcast(E.const(1.0), cols)
    body = L.loop(i, rows, L.Store(out, (index,), value), kind=L.ForKind.PARALLEL)
    return L.PrimFunc(f"add_rows_{rows}", (a, out), body)


@pytest.fixture
def pool():
    runtime = get_runtime()
    saved = (runtime.num_threads, runtime.backend, runtime.chunks_per_thread)
    if "pool" not in runtime.available:
        pytest.skip("ember's pool needs Linux futexes")
    runtime.backend = "pool"
    yield runtime
    runtime.num_threads, runtime.backend, runtime.chunks_per_thread = saved


@pytest.mark.parametrize("threads, per_thread", [(2, 4), (2, 1), (3, 4), (4, 16)])
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 37, 1000])
def test_every_iteration_runs_once(pool, rows, threads, per_thread):
    pool.num_threads, pool.chunks_per_thread = threads, per_thread
    kernel = compile_primfuncs([add_rows(rows)]).get(f"add_rows_{rows}")
    a = np.arange(rows * 16, dtype=np.float32)
    out = np.zeros_like(a)
    before = pool.stats()
    for _ in range(3):
        kernel(a, out)
    np.testing.assert_array_equal(out, 3 * (a + 1))
    after = pool.stats()
    ran = sum(after[k] - before[k] for k in ("worker_tasks", "caller_tasks"))
    if rows > 1:
        assert after["parallel_launches"] - before["parallel_launches"] == 3
        assert ran == 3 * min(rows, threads * per_thread)


def test_many_launches_in_a_row(pool):
    pool.num_threads = 2
    kernel = compile_primfuncs([add_rows(5)]).get("add_rows_5")
    a = np.ones(5 * 16, np.float32)
    out = np.zeros_like(a)
    for _ in range(3000):
        kernel(a, out)
    np.testing.assert_array_equal(out, np.full_like(a, 6000.0))


def test_launches_from_two_python_threads(pool):
    pool.num_threads = 2
    kernel = compile_primfuncs([add_rows(64)]).get("add_rows_64")
    results, errors = [], []

    def work() -> None:
        try:
            a = np.ones(64 * 16, np.float32)
            out = np.zeros_like(a)
            for _ in range(300):
                kernel(a, out)
            results.append(out)
        except Exception as error:  # surfaced below; a thread cannot fail the test
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 2
    for out in results:
        np.testing.assert_array_equal(out, np.full_like(out, 600.0))


def test_chunks_per_thread_is_checked(pool):
    with pytest.raises(EmberError, match="chunks per thread"):
        pool.chunks_per_thread = 0
    pool.chunks_per_thread = 2
    assert pool.chunks_per_thread == 2

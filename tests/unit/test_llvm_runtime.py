"""The LLVM backend's runtime: parallel loops on every thread-pool backend (libgomp, ember's
own pool, serial), the fallback without libgomp, forked children, heap allocations, the
calling convention on numpy arrays, and shared-library export."""

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from llvm_kernels import elementwise, matmul, parallel_rows

from ember.backends.llvm import (
    CompiledLibrary,
    compile_primfuncs,
    empty_aligned,
    export_library,
    set_num_threads,
    set_parallel_backend,
)
from ember.backends.llvm.parallel import get_runtime
from ember.backends.llvm.runtime import KernelSignature
from ember.errors import InputError
from ember.ir import expr as E
from ember.ir import loop as L


@pytest.fixture
def restore_parallel_settings():
    runtime = get_runtime()
    backend, threads = runtime.backend, runtime.num_threads
    yield runtime
    runtime.backend, runtime.num_threads = backend, threads


# ----------------------------------------------------------------------------- parallel


def test_parallel_loop_on_every_backend(restore_parallel_settings):
    runtime = restore_parallel_settings
    func = parallel_rows()
    lib = compile_primfuncs([func])
    assert "ember_parallel_launch" in lib.llvm_ir
    x = np.arange(37 * 64, dtype=np.float32)
    expected = x * 3 + 1
    runtime.num_threads = 2
    for backend in runtime.available:
        runtime.backend = backend
        before = runtime.stats()
        out = np.zeros_like(x)
        lib.get("scale_rows")(x, out)
        np.testing.assert_array_equal(out, expected, err_msg=backend)
        after = runtime.stats()
        if backend == "serial":
            assert after == before
        else:  # two launches (rep = 0, 1): 2 tasks each (gomp), 2 threads * 2 chunks (pool)
            assert after["parallel_launches"] - before["parallel_launches"] == 2
            ran = sum(after[k] - before[k] for k in ("worker_tasks", "caller_tasks"))
            assert ran == (4 if backend == "gomp" else 8), (backend, before, after)
    runtime.num_threads = 1  # one thread: no launch at all
    before = runtime.stats()
    lib.get("scale_rows")(x, out)
    assert runtime.stats() == before


def test_nested_parallel_loop_runs_serially_inside(restore_parallel_settings):
    restore_parallel_settings.num_threads = 2
    lib = compile_primfuncs([parallel_rows(nested=True)])
    assert 'define internal void @"ember_scale_rows.parallel0"' in lib.llvm_ir
    assert "parallel1" not in lib.llvm_ir  # the inner parallel loop was not outlined
    x = np.arange(37 * 64, dtype=np.float32)
    out = np.zeros_like(x)
    lib.get("scale_rows")(x, out)
    np.testing.assert_array_equal(out, x * 3 + 1)


def test_thread_settings_are_checked(restore_parallel_settings):
    with pytest.raises(Exception, match="number of threads"):
        set_num_threads(0)
    with pytest.raises(Exception, match="not available"):
        set_parallel_backend("tbb")


def test_pool_fallback_without_libgomp():
    # A fresh process whose runtime is built without libgomp, as where it is not installed.
    code = textwrap.dedent("""
        import numpy as np
        from ember.backends.llvm.parallel import init_runtime
        runtime = init_runtime(libgomp=False)
        assert "gomp" not in runtime.available and runtime.backend == "pool", runtime.available
        runtime.num_threads = 2
        import llvm_kernels as t
        from ember.backends.llvm import compile_primfuncs
        lib = compile_primfuncs([t.parallel_rows()])
        x = np.arange(37 * 64, dtype=np.float32)
        for _ in range(50):
            out = np.zeros_like(x)
            lib.get("scale_rows")(x, out)
            assert np.array_equal(out, x * 3 + 1)
        stats = runtime.stats()  # 100 launches of 4 chunks, taken by whichever thread is free
        assert stats["worker_tasks"] + stats["caller_tasks"] == 400, stats
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=__file__.rsplit("/", 1)[0], timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


# ----------------------------------------------------------------------------- calling


def test_calling_convention_copies_what_breaks_the_contract():
    n = 100
    func = elementwise("inc", ["float32"], "float32", lambda v: v + 1.0, n, 16)
    kernel = compile_primfuncs([func]).get("inc")
    base = np.arange(n + 1, dtype=np.float32)
    misaligned = base[1:]  # 4 bytes past an aligned start at best
    out = empty_aligned(n, np.float32)
    kernel(misaligned, out)
    np.testing.assert_array_equal(out, misaligned + 1)
    strided_out = np.zeros(2 * n, np.float32)[::2]  # not contiguous: computed via a copy
    kernel(misaligned, strided_out)
    np.testing.assert_array_equal(strided_out, misaligned + 1)
    in_place = empty_aligned(n, np.float32)
    in_place[:] = 5
    kernel(in_place, in_place)  # overlapping output: computed into a copy
    np.testing.assert_array_equal(in_place, np.full(n, 6, np.float32))
    matrix = empty_aligned((10, 10), np.float32)
    kernel(np.ones((10, 10), np.float32), matrix)  # any shape with the right element count
    np.testing.assert_array_equal(matrix, 2)
    with pytest.raises(InputError, match="must be float32, got float64"):
        kernel(np.zeros(n), out)
    with pytest.raises(InputError, match="must have 100 elements"):
        kernel(np.zeros(99, np.float32), out)
    with pytest.raises(InputError, match="takes 2 arrays"):
        kernel(out)
    frozen = np.zeros(n, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(InputError, match="read-only"):
        kernel(out, frozen)


# ----------------------------------------------------------------------------- memory


def test_large_allocation_goes_to_the_heap():
    m, n, k = 2, 32, 3
    func = matmul(m, n, k, (32 * 1024,))  # 128 KiB: over the stack limit
    lib = compile_primfuncs([func])
    assert '@"aligned_alloc"' in lib.llvm_ir and '@"free"' in lib.llvm_ir
    rng = np.random.default_rng(7)
    x, y = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
    out = np.zeros(m * n, np.float32)
    lib.get("matmul")(x, y, out)
    np.testing.assert_allclose(out.reshape(m, n), x @ y, rtol=1e-5)


# ----------------------------------------------------------------------------- export


@pytest.mark.skipif(shutil.which("cc") is None, reason="linking needs a C compiler driver")
def test_export_shared_library_and_load_it(tmp_path, restore_parallel_settings):
    funcs = [parallel_rows(), elementwise("exp", ["float32"], "float32",
                                           lambda v: E.call("exp", v), 100, 16)]
    lib = compile_primfuncs(funcs)
    assert lib.emit_object()[:4] == b"\x7fELF"
    path = export_library(lib, str(tmp_path / "kernels.so"))
    loaded = CompiledLibrary.from_shared_library(path, lib.signatures)
    x = np.arange(37 * 64, dtype=np.float32)
    out = np.zeros_like(x)
    restore_parallel_settings.num_threads = 2
    loaded.get("scale_rows")(x, out)
    np.testing.assert_array_equal(out, x * 3 + 1)
    y = np.linspace(-3, 3, 100).astype(np.float32)
    out = np.zeros_like(y)
    loaded.get("exp")(y, out)  # the symbol is ember_exp: no clash with libm's exp
    np.testing.assert_allclose(out, np.exp(y), rtol=1e-6)
    signatures = [KernelSignature.from_json(s.to_json()) for s in lib.signatures]
    assert signatures == lib.signatures


@pytest.mark.parametrize("kind", [L.ForKind.SERIAL, L.ForKind.PARALLEL])
def test_heap_allocation_inside_loops_and_its_failure(kind, restore_parallel_settings):
    restore_parallel_settings.num_threads = 2
    n = 8
    a, out_buffer = L.Buffer("a", (n,), "float32"), L.Buffer("out", (n,), "float32")
    i = E.Var("i")
    big = L.Buffer("scratch", (20000,), "float32")  # 80 KB: on the heap, once per iteration
    body = L.Allocate(big, L.seq(L.Store(big, (E.const(19999),), L.Load(a, (i,)) * 2.0),
                                 L.Store(out_buffer, (i,), L.Load(big, (E.const(19999),)))))
    ok = L.PrimFunc("scratch_ok", (a, out_buffer), L.loop(i, n, body, kind=kind))
    # 2**60 bytes cannot be had; the parallel loop's closure keeps LLVM from eliding it
    huge = L.Buffer("huge", (1 << 58,), "float32")
    failing = L.PrimFunc("scratch_fails", (a, out_buffer), L.Allocate(huge, L.seq(
        L.loop(i, n, L.Store(huge, (i,), L.Load(a, (i,))), kind=L.ForKind.PARALLEL),
        L.loop(i, n, L.Store(out_buffer, (i,), L.Load(huge, (i,)))))))
    lib = compile_primfuncs([ok, failing])
    x = np.arange(n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    lib.get("scratch_ok")(x, out)
    np.testing.assert_array_equal(out, x * 2)
    with pytest.raises(MemoryError, match="scratch_fails: a heap allocation failed"):
        lib.get("scratch_fails")(x, out)


def test_parallel_kernels_run_in_a_forked_child():
    # Measurement workers fork; libgomp hangs in a child whose parent used its threads, and
    # ember's pool must regrow there: the runtime switches and resets after a fork.
    code = textwrap.dedent("""
        import os, numpy as np
        import llvm_kernels as t
        from ember.backends.llvm import compile_primfuncs, set_num_threads
        set_num_threads(2)
        kernel = compile_primfuncs([t.parallel_rows()]).get("scale_rows")
        x = np.arange(37 * 64, dtype=np.float32)
        out = np.zeros_like(x)
        kernel(x, out)
        pid = os.fork()
        if pid == 0:
            out[:] = 0
            kernel(x, out)
            os._exit(0 if np.array_equal(out, x * 3 + 1) else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=__file__.rsplit("/", 1)[0], timeout=60)
    assert "child 0" in result.stdout, result.stdout + result.stderr

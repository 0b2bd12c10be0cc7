"""The parallel runtime: runs the tasks of outlined parallel loops on a persistent thread pool.

Kernels call `__ember_parallel_launch(task, closure, extent)` (see codegen.py's
[Note: parallel loops]); this module compiles that function once per process (its "runtime
module", in LLVM IR) and registers its address with LLVM, so every JIT-compiled kernel binds to
it. The launch runs `min(num_threads, extent)` tasks `task(closure, t, n)` and returns when
all are done. Three backends:

- "pool" (the default on Linux): ember's own pool, in the same runtime module: worker
  threads created once with pthread_create, spinning briefly and then sleeping on a futex
  (Linux); the futex is woken only when someone sleeps. A launch that finds the pool busy
  (another Python thread is launching) runs serially rather than wait.
- "gomp" (where libgomp.so.1 loads): libgomp's GOMP_parallel. libgomp keeps its worker
  threads between calls (they spin for a while, then sleep); it hangs in a forked child.
- "serial": one task on the calling thread; what a pool reduces to with one thread.
Measured launch cost (a 2-task parallel loop, minus the plain call): about 1 us with either
pool when the cores are idle. libgomp runs one static block of the loop range per thread;
ember's pool splits the range into `chunks_per_thread` chunks per thread that the threads
claim one at a time, the launcher included (see [Note: chunk claiming]).

[Note: chunk claiming]
With a static split the launch lasts as long as its slowest thread: when another process
keeps a core busy, a woken worker may wait a scheduler slice (a millisecond or more) before it
runs, and a launch of a few microseconds of work takes that long (tiny models ran slower on 2
threads than on 1). So the launcher does not hand out blocks: it publishes the job with a
64-bit claim word, (generation << 32) | next chunk, and every thread, the launcher first,
takes chunks with a compare-and-swap until none is left. A late worker then finds nothing to
claim and costs nothing; the launcher waits only for chunks some thread actually started
(their count, `finished`, reaching the job's; each thread adds its chunks once, when it finds
none left to claim). The generation in the claim word keeps a worker
that wakes after its launch ended from claiming a chunk of the next launch with the old
job's task and closure: it reads those before its CAS, and the CAS succeeds only while that
launch still has unclaimed chunks, so the job fields cannot have changed. Chunks are contiguous
blocks of the range (the task function's static split of `num_tasks` = chunks), so locality
stays that of the static split; a chunk costs one indirect call and one compare-and-swap.

The thread count (default: the cores this process may run on) and the backend are globals of
the runtime module, set with `set_num_threads` and `set_parallel_backend`. After a fork, the
child resets ember's pool and leaves libgomp if the parent had started its threads (libgomp
hangs in such a child).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.backends.llvm.host import (
    TargetInfo,
    initialize,
    jit_engine,
    resolve_target,
    target_machine,
)
from ember.errors import EmberError

BACKENDS = ("serial", "gomp", "pool")
_BACKEND_CODES = {name: code for code, name in enumerate(BACKENDS)}
LIBGOMP = "libgomp.so.1"

_TASK_TYPE = ir.FunctionType(T.VOID, [T.PTR, T.I32, T.I32])
# llvmlite calls through a pointer only when the pointer's type names the function type; LLVM
# reads such (typed-pointer) IR text as plain `ptr`.
_TASK_POINTER = _TASK_TYPE.as_pointer()
_LAUNCH_TYPE = ir.FunctionType(T.VOID, [_TASK_POINTER, T.PTR, T.I64])
_SPIN_ITERATIONS = 4000  # pause loops before a worker or the launcher sleeps on the futex
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
MAX_THREADS = 1024
#: chunks per thread of a pool launch: finer chunks let the threads that are running take
#: the work of one that is late (descheduled by another process), at a call and a CAS each.
#: Measured (2 threads, best of alternating rounds): 2 beats 1 and 4 on small-kernel models
#: (xr-kd 0.105 ms vs 0.111 and 0.154), 4 wins by ~10% on GEMM 1024^3 and ResNet-50.
CHUNKS_PER_THREAD = 2


def default_num_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def load_libgomp() -> bool:
    """Load libgomp into the process for the JIT; False when it is not installed."""
    initialize()
    try:
        llvm.load_library_permanently(LIBGOMP)
    except RuntimeError:
        return False
    return True


def futex_syscall_number(info: TargetInfo) -> int | None:
    """The futex syscall number for the target, None where ember's pool cannot run."""
    arch, _, rest = info.triple.partition("-")
    if "linux" not in rest:
        return None
    return _SYS_FUTEX.get(arch)


# ----------------------------------------------------------------------------- the IR


class _RuntimeModule:
    """Builds the runtime module's IR: the launch function and the backends it dispatches to."""

    def __init__(self, info: TargetInfo, gomp: bool, num_threads: int, backend: int):
        self.module = ir.Module(name="__ember_runtime")
        self.module.triple = info.triple
        self.module.data_layout = str(target_machine(info).target_data)
        self.futex = futex_syscall_number(info)
        self.num_threads = self._global("__ember_num_threads", T.I32, num_threads)
        self.backend = self._global("__ember_parallel_backend", T.I32, backend)
        self.launches = self._global("__ember_parallel_launches", T.I64, 0)
        self.worker_tasks = self._global("__ember_worker_tasks", T.I64, 0)
        self.caller_tasks = self._global("__ember_caller_tasks", T.I64, 0)
        self._global("__ember_has_gomp", T.I32, int(gomp))
        self.gomp = gomp
        if self.futex is not None:
            self._pool_globals()
        self._launch()

    def _global(self, name: str, typ: ir.Type, value: int) -> ir.GlobalVariable:
        variable = ir.GlobalVariable(self.module, typ, name)
        variable.initializer = ir.Constant(typ, value)
        variable.align = 64  # one cache line each: workers write some of them
        return variable

    def _function(self, name: str, ftype: ir.FunctionType, internal: bool = True
                  ) -> tuple[ir.Function, ir.IRBuilder]:
        function = ir.Function(self.module, ftype, name)
        function.attributes.add("nounwind")
        if internal:
            function.linkage = "internal"
        return function, ir.IRBuilder(function.append_basic_block("entry"))

    def _declare(self, name: str, ftype: ir.FunctionType) -> ir.Function:
        existing = self.module.globals.get(name)
        return existing if existing is not None else ir.Function(self.module, ftype, name)

    def _count(self, bld: ir.IRBuilder, counter: ir.GlobalVariable) -> None:
        bld.atomic_rmw("add", counter, T.I64(1), "monotonic")

    def _run_task(self, bld: ir.IRBuilder, task: ir.Value, data: ir.Value, index: ir.Value,
                  count: ir.Value) -> None:
        bld.call(task, [data, index, count])

    # -- __ember_parallel_launch

    def _launch(self) -> None:
        function, bld = self._function("__ember_parallel_launch", _LAUNCH_TYPE, internal=False)
        task, data, extent = function.args
        threads = bld.sext(bld.load(self.num_threads, typ=T.I32), T.I64)
        wanted = bld.select(bld.icmp_signed("<", extent, threads), extent, threads)
        serial = function.append_basic_block("serial")
        parallel = function.append_basic_block("parallel")
        bld.cbranch(bld.icmp_signed("<=", wanted, T.I64(1)), serial, parallel)
        bld.position_at_end(serial)
        self._run_task(bld, task, data, T.I32(0), T.I32(1))
        bld.ret_void()
        bld.position_at_end(parallel)
        count = bld.trunc(wanted, T.I32)
        backend = bld.load(self.backend, typ=T.I32)
        switch = bld.switch(backend, serial)
        if self.gomp:
            gomp_block = function.append_basic_block("gomp")
            switch.add_case(T.I32(_BACKEND_CODES["gomp"]), gomp_block)
            bld.position_at_end(gomp_block)
            self._count(bld, self.launches)
            closure = T.alloca(bld, ir.LiteralStructType([T.PTR, T.PTR]))
            bld.store(task, bld.gep(closure, [T.I32(0), T.I32(0)], source_etype=closure.
                                    allocated_type))
            bld.store(data, bld.gep(closure, [T.I32(0), T.I32(1)], source_etype=closure.
                                    allocated_type))
            gomp_parallel = self._declare("GOMP_parallel", ir.FunctionType(
                T.VOID, [T.PTR, T.PTR, T.I32, T.I32]))
            bld.call(gomp_parallel, [self._gomp_trampoline(), closure, count, T.I32(0)])
            bld.ret_void()
        if self.futex is not None:
            pool_block = function.append_basic_block("pool")
            switch.add_case(T.I32(_BACKEND_CODES["pool"]), pool_block)
            bld.position_at_end(pool_block)
            bld.call(self._pool_launch(), [task, data, extent, count])
            bld.ret_void()

    def _gomp_trampoline(self) -> ir.Function:
        """`void (ptr {task, data})` run by every thread of the GOMP team."""
        function, bld = self._function("__ember_gomp_task", ir.FunctionType(T.VOID, [T.PTR]))
        closure_type = ir.LiteralStructType([T.PTR, T.PTR])
        closure = function.args[0]
        task = bld.load(bld.gep(closure, [T.I32(0), T.I32(0)], source_etype=closure_type),
                        typ=_TASK_POINTER)
        data = bld.load(bld.gep(closure, [T.I32(0), T.I32(1)], source_etype=closure_type),
                        typ=T.PTR)
        omp_type = ir.FunctionType(T.I32, [])
        index = bld.call(self._declare("omp_get_thread_num", omp_type), [])
        count = bld.call(self._declare("omp_get_num_threads", omp_type), [])
        with bld.if_else(bld.icmp_signed(">", index, T.I32(0))) as (on_worker, on_caller):
            with on_worker:
                self._count(bld, self.worker_tasks)
            with on_caller:
                self._count(bld, self.caller_tasks)
        self._run_task(bld, task, data, index, count)
        bld.ret_void()
        return function

    # -- ember's own pool (Linux futexes)

    def _pool_globals(self) -> None:
        self.generation = self._global("__ember_pool_generation", T.I32, 0)
        self.finished = self._global("__ember_pool_finished", T.I32, 0)
        self.workers = self._global("__ember_pool_workers", T.I32, 0)
        self.lock = self._global("__ember_pool_lock", T.I32, 0)
        self.generation_sleepers = self._global("__ember_pool_generation_sleepers", T.I32, 0)
        self.finished_sleepers = self._global("__ember_pool_finished_sleepers", T.I32, 0)
        self.job_task = ir.GlobalVariable(self.module, T.PTR, "__ember_pool_task")
        self.job_task.initializer = ir.Constant(T.PTR, None)
        self.job_data = ir.GlobalVariable(self.module, T.PTR, "__ember_pool_data")
        self.job_data.initializer = ir.Constant(T.PTR, None)
        self.job_count = self._global("__ember_pool_count", T.I32, 0)
        # (generation << 32) | the next unclaimed chunk: see [Note: chunk claiming]
        self.claim = self._global("__ember_pool_claim", T.I64, 0)
        self.chunks_per_thread = self._global("__ember_chunks_per_thread", T.I32,
                                              CHUNKS_PER_THREAD)

    def _futex(self, bld: ir.IRBuilder, address: ir.Value, op: int, value: ir.Value) -> None:
        syscall = self._declare("syscall", ir.FunctionType(T.I64, [T.I64], var_arg=True))
        bld.call(syscall, [T.I64(self.futex), address, T.I32(op), value,
                           ir.Constant(T.PTR, None)])

    def _pause(self, bld: ir.IRBuilder) -> None:
        if self.module.triple.startswith("x86_64"):
            bld.call(self._declare("llvm.x86.sse2.pause", ir.FunctionType(T.VOID, [])), [])

    def _wait_while_equal(self, bld: ir.IRBuilder, word: ir.GlobalVariable, value: ir.Value,
                          sleepers: ir.GlobalVariable) -> ir.Value:
        """Spin, then sleep on the futex, while `*word == value`; the new value. A sleeper
        counts itself in `sleepers`, so that wakers make the futex syscall only when someone
        sleeps (both sides use sequentially consistent atomics: no wake-up is lost)."""
        function = bld.function
        spin = function.append_basic_block("spin")
        sleep_enter = function.append_basic_block("sleep.enter")
        sleep = function.append_basic_block("sleep")
        sleep_exit = function.append_basic_block("sleep.exit")
        done = function.append_basic_block("changed")
        before = bld.block
        bld.branch(spin)
        bld.position_at_end(spin)
        counter = bld.phi(T.I32)
        counter.add_incoming(T.I32(0), before)
        current = bld.load_atomic(word, "acquire", 4, typ=T.I32)
        changed = bld.icmp_unsigned("!=", current, value)
        keep_spinning = function.append_basic_block("spin.again")
        bld.cbranch(changed, done, keep_spinning)
        bld.position_at_end(keep_spinning)
        self._pause(bld)
        following = bld.add(counter, T.I32(1))
        counter.add_incoming(following, keep_spinning)
        bld.cbranch(bld.icmp_unsigned("<", following, T.I32(_SPIN_ITERATIONS)), spin,
                    sleep_enter)
        bld.position_at_end(sleep_enter)
        bld.atomic_rmw("add", sleepers, T.I32(1), "seq_cst")
        bld.branch(sleep)
        bld.position_at_end(sleep)
        self._futex(bld, word, _FUTEX_WAIT_PRIVATE, value)
        reread = bld.load_atomic(word, "seq_cst", 4, typ=T.I32)
        bld.cbranch(bld.icmp_unsigned("!=", reread, value), sleep_exit, sleep)
        bld.position_at_end(sleep_exit)
        bld.atomic_rmw("sub", sleepers, T.I32(1), "seq_cst")
        bld.branch(done)
        bld.position_at_end(done)
        result = bld.phi(T.I32)
        result.add_incoming(current, spin)
        result.add_incoming(reread, sleep_exit)
        return result

    def _wake_sleepers(self, bld: ir.IRBuilder, word: ir.GlobalVariable,
                       sleepers: ir.GlobalVariable, count: int) -> None:
        """Wake up to `count` threads sleeping on `word`, if any (see _wait_while_equal)."""
        asleep = bld.load_atomic(sleepers, "seq_cst", 4, typ=T.I32)
        with bld.if_then(bld.icmp_unsigned("!=", asleep, T.I32(0))):
            self._futex(bld, word, _FUTEX_WAKE_PRIVATE, T.I32(count))

    def _run_chunks(self, bld: ir.IRBuilder, generation: ir.Value, worker: bool) -> None:
        """Claim and run chunks of launch `generation` until none is left (see [Note: chunk
        claiming]), then count them as finished in one atomic add (a shared counter touched
        per chunk would bounce between the cores); the thread whose add completes the job
        wakes a sleeping launcher."""
        function = bld.function
        entry = bld.block
        claim = function.append_basic_block("claim")
        check = function.append_basic_block("claim.check")
        take = function.append_basic_block("claim.take")
        run = function.append_basic_block("claim.run")
        done = function.append_basic_block("claim.done")
        bld.branch(claim)
        bld.position_at_end(claim)
        ran = bld.phi(T.I32)
        ran.add_incoming(T.I32(0), entry)
        word = bld.load_atomic(self.claim, "acquire", 8, typ=T.I64)
        current = bld.icmp_unsigned("==", bld.trunc(bld.lshr(word, T.I64(32)), T.I32),
                                    generation)
        bld.cbranch(current, check, done)
        bld.position_at_end(check)
        chunk = bld.trunc(word, T.I32)
        count = bld.load_atomic(self.job_count, "monotonic", 4, typ=T.I32)
        bld.cbranch(bld.icmp_unsigned("<", chunk, count), take, done)
        bld.position_at_end(take)
        # read before the claim: a successful claim proves they still belong to `generation`
        task = bld.load_atomic(self.job_task, "monotonic", 8, typ=_TASK_POINTER)
        data = bld.load_atomic(self.job_data, "monotonic", 8, typ=T.PTR)
        pair = bld.cmpxchg(self.claim, word, bld.add(word, T.I64(1)), "acq_rel", "acquire")
        ran.add_incoming(ran, take)
        bld.cbranch(bld.extract_value(pair, 1), run, claim)
        bld.position_at_end(run)
        self._run_task(bld, task, data, chunk, count)
        ran.add_incoming(bld.add(ran, T.I32(1)), bld.block)
        bld.branch(claim)
        bld.position_at_end(done)
        with bld.if_then(bld.icmp_unsigned("!=", ran, T.I32(0))):
            bld.atomic_rmw("add", self.worker_tasks if worker else self.caller_tasks,
                           bld.zext(ran, T.I64), "monotonic")
            # our chunks are not counted yet, so the job (and its count) is still current
            total = bld.load_atomic(self.job_count, "monotonic", 4, typ=T.I32)
            before = bld.atomic_rmw("add", self.finished, ran, "acq_rel")
            with bld.if_then(bld.icmp_unsigned("==", bld.add(before, ran), total)):
                self._wake_sleepers(bld, self.finished, self.finished_sleepers, 1)

    def _pool_worker(self) -> ir.Function:
        """`ptr worker(ptr argument)`: waits for each new generation and runs chunks of its
        job. The argument packs the worker's index (low 32 bits, unused by the claiming) and
        the generation current when it was created (high 32 bits), the last one it must
        not run."""
        function, bld = self._function("__ember_pool_worker", ir.FunctionType(T.PTR, [T.PTR]))
        packed = bld.ptrtoint(function.args[0], T.I64)
        first_seen = bld.trunc(bld.lshr(packed, T.I64(32)), T.I32)
        entry = bld.block
        loop = function.append_basic_block("loop")
        bld.branch(loop)
        bld.position_at_end(loop)
        seen = bld.phi(T.I32)
        seen.add_incoming(first_seen, entry)
        generation = self._wait_while_equal(bld, self.generation, seen,
                                            self.generation_sleepers)
        self._run_chunks(bld, generation, worker=True)
        seen.add_incoming(generation, bld.block)
        bld.branch(loop)
        return function

    def _pool_launch(self) -> ir.Function:
        """`void pool_launch(task, data, extent, threads)`: grow the pool to threads - 1
        workers, publish the job as min(extent, threads * chunks_per_thread) chunks, run
        chunks here until none is left unclaimed, then wait for the chunks others claimed.
        A launch that finds the pool busy (another thread is launching) runs serially
        instead of waiting."""
        function, bld = self._function("__ember_pool_launch", ir.FunctionType(
            T.VOID, [_TASK_POINTER, T.PTR, T.I64, T.I32]))
        task, data, extent, threads = function.args
        pair = bld.cmpxchg(self.lock, T.I32(0), T.I32(1), "acquire", "monotonic")
        got_lock = bld.extract_value(pair, 1)
        busy = function.append_basic_block("busy")
        locked = function.append_basic_block("locked")
        bld.cbranch(got_lock, locked, busy)
        bld.position_at_end(busy)
        self._run_task(bld, task, data, T.I32(0), T.I32(1))
        bld.ret_void()
        bld.position_at_end(locked)
        self._grow_pool(bld, threads)
        self._count(bld, self.launches)
        workers = bld.load(self.workers, typ=T.I32)
        # the pool may be smaller than asked for if pthread_create failed
        threads = bld.select(bld.icmp_signed("<", workers, bld.sub(threads, T.I32(1))),
                             bld.add(workers, T.I32(1)), threads)
        per_thread = bld.load(self.chunks_per_thread, typ=T.I32)
        chunks = bld.sext(bld.mul(threads, per_thread), T.I64)
        count = bld.trunc(bld.select(bld.icmp_signed("<", extent, chunks), extent, chunks),
                          T.I32)
        bld.store(task, self.job_task)
        bld.store(data, self.job_data)
        bld.store_atomic(count, self.job_count, "monotonic", 4)
        bld.store_atomic(T.I32(0), self.finished, "monotonic", 4)
        generation = bld.add(bld.load(self.generation, typ=T.I32), T.I32(1))
        bld.store_atomic(bld.shl(bld.zext(generation, T.I64), T.I64(32)), self.claim,
                         "seq_cst", 8)
        bld.store_atomic(generation, self.generation, "seq_cst", 4)
        self._wake_sleepers(bld, self.generation, self.generation_sleepers, MAX_THREADS)
        self._run_chunks(bld, generation, worker=False)
        wait = function.append_basic_block("wait")
        finished = function.append_basic_block("finished")
        bld.branch(wait)
        bld.position_at_end(wait)
        done = bld.load_atomic(self.finished, "acquire", 4, typ=T.I32)
        waiting = function.append_basic_block("waiting")
        bld.cbranch(bld.icmp_unsigned("==", done, count), finished, waiting)
        bld.position_at_end(waiting)
        self._wait_while_equal(bld, self.finished, done, self.finished_sleepers)
        bld.branch(wait)
        bld.position_at_end(finished)
        bld.store_atomic(T.I32(0), self.lock, "release", 4)
        bld.ret_void()
        return function

    def _grow_pool(self, bld: ir.IRBuilder, count: ir.Value) -> None:
        """Start workers 1 .. count - 1 that do not exist yet (they live until exit)."""
        function = bld.function
        create = self._declare("pthread_create", ir.FunctionType(
            T.I32, [T.PTR, T.PTR, T.PTR, T.PTR]))
        thread_id = T.alloca(bld, T.I64)
        worker = self._pool_worker()
        check = function.append_basic_block("grow")
        start = function.append_basic_block("grow.start")
        done = function.append_basic_block("grow.done")
        bld.branch(check)
        bld.position_at_end(check)
        workers = bld.load(self.workers, typ=T.I32)
        bld.cbranch(bld.icmp_signed("<", bld.add(workers, T.I32(1)), count), start, done)
        bld.position_at_end(start)
        index = bld.add(workers, T.I32(1))
        generation = bld.load_atomic(self.generation, "acquire", 4, typ=T.I32)
        packed = bld.or_(bld.shl(bld.zext(generation, T.I64), T.I64(32)),
                         bld.zext(index, T.I64))
        argument = bld.inttoptr(packed, T.PTR)
        status = bld.call(create, [thread_id, ir.Constant(T.PTR, None), worker, argument])
        created = function.append_basic_block("grow.created")
        bld.cbranch(bld.icmp_signed("==", status, T.I32(0)), created, done)
        bld.position_at_end(created)
        bld.store(index, self.workers)
        bld.branch(check)
        bld.position_at_end(done)


def runtime_module_ir(info: TargetInfo, gomp: bool, num_threads: int | None = None,
                      backend: str | None = None) -> str:
    """The runtime module's LLVM IR for `info` (with the GOMP backend when `gomp`); exported
    shared libraries link it in (jit.export_library)."""
    num_threads = num_threads or default_num_threads()
    if backend is None:
        # ember's own pool by default: it is fork-safe (tuning workers fork) and launches at
        # least as fast as libgomp; libgomp stays selectable, and serial is the last resort.
        backend = "pool" if futex_syscall_number(info) else ("gomp" if gomp else "serial")
    return str(_RuntimeModule(info, gomp, num_threads, _BACKEND_CODES[backend]).module)


# ----------------------------------------------------------------------------- the process


class ParallelRuntime:
    """The JIT-compiled runtime module of this process and its settings."""

    def __init__(self, libgomp: bool = True) -> None:
        info = resolve_target("llvm")
        self.info = info
        self.gomp = libgomp and load_libgomp()
        self.available = ["serial"]
        if self.gomp:
            self.available.append("gomp")
        if futex_syscall_number(info) is not None:
            self.available.append("pool")
        text = runtime_module_ir(info, self.gomp)
        module = llvm.parse_assembly(text)
        module.verify()
        self.engine, _ = jit_engine(module, info, "the parallel runtime")
        self.launch_address = self.engine.get_function_address("__ember_parallel_launch")
        llvm.add_symbol("__ember_parallel_launch", self.launch_address)

        def cell(name: str, ctype: type) -> ctypes._SimpleCData:
            return ctype.from_address(self.engine.get_global_value_address(name))

        self._num_threads = cell("__ember_num_threads", ctypes.c_int32)
        self._backend = cell("__ember_parallel_backend", ctypes.c_int32)
        self._launches = cell("__ember_parallel_launches", ctypes.c_int64)
        self._worker_tasks = cell("__ember_worker_tasks", ctypes.c_int64)
        self._caller_tasks = cell("__ember_caller_tasks", ctypes.c_int64)
        self._chunks_per_thread = None
        if "pool" in self.available:
            self._chunks_per_thread = cell("__ember_chunks_per_thread", ctypes.c_int32)
        self._attached: list[tuple[ctypes.c_int32, ctypes.c_int32, ctypes.CDLL]] = []
        self._pool_cells = []
        if "pool" in self.available:
            self._pool_cells = [cell(f"__ember_pool_{name}", ctypes.c_int32)
                                for name in ("workers", "finished", "lock",
                                             "generation_sleepers", "finished_sleepers")]
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A forked child has none of the parent's threads: forget ember's pool (it regrows),
        and leave libgomp if the parent started its threads (libgomp hangs after a fork)."""
        for pool_cell in self._pool_cells:
            pool_cell.value = 0
        if self.backend == "gomp" and self._launches.value > 0:
            self._backend.value = _BACKEND_CODES["pool" if self._pool_cells else "serial"]

    def attach(self, library: ctypes.CDLL) -> None:
        """Make the runtime copy inside an exported shared library follow these settings."""
        try:
            threads = ctypes.c_int32.in_dll(library, "__ember_num_threads")
            backend = ctypes.c_int32.in_dll(library, "__ember_parallel_backend")
        except ValueError:  # no runtime inside
            return
        self._attached.append((threads, backend, library))
        threads.value = self.num_threads
        if self.backend != "gomp" or ctypes.c_int32.in_dll(library, "__ember_has_gomp").value:
            backend.value = _BACKEND_CODES[self.backend]

    @property
    def num_threads(self) -> int:
        return self._num_threads.value

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
            raise EmberError(f"the number of threads must be an integer in 1..{MAX_THREADS}, "
                             f"got {n!r}")
        self._num_threads.value = n
        for threads, _, _ in self._attached:
            threads.value = n

    @property
    def backend(self) -> str:
        return BACKENDS[self._backend.value]

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in self.available:
            raise EmberError(f"parallel backend {name!r} is not available here; available: "
                             f"{', '.join(self.available)}")
        self._backend.value = _BACKEND_CODES[name]
        for _, backend, library in self._attached:
            if name != "gomp" or ctypes.c_int32.in_dll(library, "__ember_has_gomp").value:
                backend.value = _BACKEND_CODES[name]

    @property
    def chunks_per_thread(self) -> int:
        """Chunks per thread of a pool launch (see [Note: chunk claiming])."""
        return self._chunks_per_thread.value if self._chunks_per_thread is not None else 1

    @chunks_per_thread.setter
    def chunks_per_thread(self, n: int) -> None:
        if not isinstance(n, int) or not 1 <= n <= 64:
            raise EmberError(f"chunks per thread must be an integer in 1..64, got {n!r}")
        if self._chunks_per_thread is not None:
            self._chunks_per_thread.value = n

    def stats(self) -> dict[str, int]:
        """Counters since start: parallel launches (more than one task), tasks (chunks) run
        by threads other than the caller, and tasks of parallel launches the caller ran."""
        return {"parallel_launches": self._launches.value,
                "worker_tasks": self._worker_tasks.value,
                "caller_tasks": self._caller_tasks.value}


_lock = threading.Lock()
_runtime: ParallelRuntime | None = None


def init_runtime(libgomp: bool = True) -> ParallelRuntime:
    """Build the process's parallel runtime, without the GOMP backend if `libgomp` is False
    (to run without libgomp even where it is installed). It can be built once per process:
    call this before compiling any kernel."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = ParallelRuntime(libgomp)
        elif _runtime.gomp and not libgomp:
            raise EmberError("the parallel runtime already uses libgomp: call "
                             "init_runtime(libgomp=False) before compiling any kernel")
        return _runtime


def get_runtime() -> ParallelRuntime:
    """The process's parallel runtime (built on first use; kernels need it to link)."""
    return _runtime if _runtime is not None else init_runtime()


def set_num_threads(n: int) -> None:
    """Run parallel loops on `n` threads (the caller included) from now on."""
    get_runtime().num_threads = n


def get_num_threads() -> int:
    return get_runtime().num_threads


def set_parallel_backend(name: str) -> None:
    """Switch between "gomp", "pool" and "serial" (see the module docstring)."""
    get_runtime().backend = name


def get_parallel_backend() -> str:
    return get_runtime().backend


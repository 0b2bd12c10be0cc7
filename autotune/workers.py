"""Restartable worker processes with deadlines: what measurement builds and runs candidates in.

A candidate's kernel may crash the process that runs it (a segfault, an abort), loop forever,
or take LLVM into a very long compile. So nothing of a candidate runs in the tuner's process:
`WorkerProcess` is one child process serving requests through a pipe, and the parent waits
for each reply with a deadline; a child that dies is reported with its signal, one that misses
its deadline is killed, and either is replaced by a fresh one on the next request. `WorkerPool`
runs a batch of requests over several such workers (the parallel builds).

[Note: start method] Workers start with multiprocessing's "forkserver" method, with ember's
measurement code preloaded into the server:
- "fork" would be fastest and would inherit everything, but the tuner's process has threads by
  the time a crashed worker must be replaced (XGBoost's OpenMP threads, ember's thread pool,
  Ray's threads), and forking a process with threads can leave a lock held forever in the
  child (libgomp is known to hang so; LLVM's own mutexes are no safer);
- "spawn" is clean but starts a new interpreter and imports ember for every worker, which
  makes every restart after a crash cost most of a second;
- "forkserver" forks each worker from a single-threaded server process that imported ember
  once: clean state and fast restarts. Its one cost is spawn's rule: the server imports the
  main script as `__mp_main__`, so a tuning *script* must keep its work under
  `if __name__ == "__main__":` (the `ember` command and `python -m` runs need nothing).
Objects sent to workers (tasks, configs) must be picklable by reference: classes defined at
module level in importable modules.
"""

from __future__ import annotations

import collections
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from ember.errors import EmberError

#: modules the forkserver imports once, so that forked workers start with ember loaded
PRELOAD = ["ember.autotune.runner"]

Handler = Callable[[Any], Any]


def context() -> Any:
    """The multiprocessing context workers start in (see [Note: start method])."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server first starts
    return ctx


class WorkerStartError(EmberError):
    """A worker process could not start: no candidate's fault, so measurement cannot go on."""


#: what a worker sends once it is set up and serving
_READY = "ember-worker-ready"
#: seconds a new worker may take to start (import, setup) before that is an error
START_TIMEOUT = 120.0


def _serve(conn: Any, handler: Handler, setup: Callable[[], None] | None) -> None:
    """A worker's main loop: answer each request with `handler(request)` until the pipe
    closes. `handler` must not raise (it returns errors as values)."""
    if setup is not None:
        setup()
    conn.send(_READY)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(handler(request))


def exit_description(exitcode: int | None) -> str:
    """How a process ended, in words: "killed by SIGSEGV", "exited with status 3"."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class Outcome:
    """How one request ended: `kind` is "ok" (with `value`), "timeout" or "died" (with
    `detail`, e.g. "was killed by SIGSEGV"); `seconds` is the time from sending to the end."""

    __slots__ = ("kind", "value", "detail", "seconds")

    def __init__(self, kind: str, value: Any = None, detail: str = "", seconds: float = 0.0):
        self.kind = kind
        self.value = value
        self.detail = detail
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Outcome({self.kind}, {self.detail or self.value!r})"


class WorkerProcess:
    """One child process running `handler` on requests; started on first use, and again after
    it died or was killed. `max_requests` (if given) retires the child after that many
    requests, to bound what a long tune leaks in it (caches, compiled code)."""

    def __init__(self, handler: Handler, setup: Callable[[], None] | None = None,
                 max_requests: int | None = None, name: str = "ember-worker"):
        self.handler = handler
        self.setup = setup
        self.max_requests = max_requests
        self.name = name
        self.process: Any = None
        self.conn: Any = None
        self.served = 0
        #: times a child was started (the first start included)
        self.starts = 0
        self._sent_at = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self) -> None:
        ctx = context()
        parent_end, child_end = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_serve, args=(child_end, self.handler, self.setup),
                              name=self.name, daemon=True)
        process.start()
        child_end.close()
        self.process, self.conn, self.served = process, parent_end, 0
        self.starts += 1
        # A worker that dies before it is ready failed to start, whatever it was to do
        # (typically: the main script, which the forkserver imports, has no main guard).
        wait([parent_end, process.sentinel], START_TIMEOUT)
        try:
            ready = parent_end.poll() and parent_end.recv() == _READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            process.join(1.0)
            detail = (f"did not get ready within {START_TIMEOUT:g} s" if process.is_alive()
                      else exit_description(process.exitcode))
            self.kill()
            raise WorkerStartError(
                f"a measurement worker process ({self.name}) {detail} while starting. Workers "
                f"start through multiprocessing's forkserver, which imports the main script "
                f"again: when tuning from a script, keep its work under "
                f"`if __name__ == \"__main__\":`; the worker's own output above says more")

    def ensure_started(self) -> None:
        if self.max_requests is not None and self.served >= self.max_requests:
            self.stop()
        if not self.alive:
            self.stop()
            self.start()

    def send(self, request: Any) -> bool:
        """Send a request (starting the child if needed); False if the child died meanwhile."""
        self.ensure_started()
        self._sent_at = time.perf_counter()
        try:
            self.conn.send(request)
        except (BrokenPipeError, EOFError, OSError):
            return False
        self.served += 1
        return True

    def sent_at(self) -> float:
        return self._sent_at

    def collect(self) -> Outcome | None:
        """The reply if one is ready or the child has died; None while it is still working."""
        seconds = time.perf_counter() - self._sent_at
        try:
            if self.conn.poll():
                return Outcome("ok", self.conn.recv(), seconds=seconds)
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return None
        self.process.join(1.0)
        detail = exit_description(self.process.exitcode)
        self.stop()
        return Outcome("died", detail=detail, seconds=seconds)

    def kill(self) -> None:
        """Kill the child at once (SIGKILL: a kernel stuck in a loop ignores nothing else)."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        self.stop()

    def stop(self) -> None:
        """Close the pipe and reap the child (a child idle in its loop exits on EOF)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            self.process.join(2.0)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.process.close()
            self.process = None

    def call(self, request: Any, timeout: float) -> Outcome:
        """Send `request` and wait for its reply at most `timeout` seconds."""
        if not self.send(request):
            outcome = self.collect() or Outcome("died", detail="closed its pipe")
            self.kill()
            return outcome
        deadline = self._sent_at + timeout
        try:
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    self.kill()
                    return Outcome("timeout", detail=f"ran over {timeout:g} s",
                                   seconds=time.perf_counter() - self._sent_at)
                wait([self.conn, self.process.sentinel], remaining)
                outcome = self.collect()
                if outcome is not None:
                    return outcome
        except BaseException:
            # interrupted (Ctrl-C): the child's late reply must not answer the next request
            self.kill()
            raise


class WorkerPool:
    """`size` WorkerProcesses that run a batch of requests, each with its own deadline."""

    def __init__(self, size: int, handler: Handler, setup: Callable[[], None] | None = None,
                 max_requests: int | None = None, name: str = "ember-worker"):
        self.workers = [WorkerProcess(handler, setup, max_requests, f"{name}-{k}")
                        for k in range(max(1, size))]

    def map(self, requests: Sequence[Any], timeout: float) -> list[Outcome]:
        """One Outcome per request, in order. A request's `timeout` counts from when a worker
        took it; a worker that dies or runs over is replaced before it takes another."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        pending = collections.deque(range(len(requests)))
        busy: dict[int, int] = {}  # worker position -> request index
        idle = list(range(len(self.workers)))
        try:
            self._run(requests, timeout, outcomes, pending, busy, idle)
        except BaseException:
            # interrupted (Ctrl-C): late replies must not answer the next batch's requests
            for position in busy:
                self.workers[position].kill()
            raise
        return [o if o is not None else Outcome("died", detail="lost") for o in outcomes]

    def _run(self, requests: Sequence[Any], timeout: float, outcomes: list[Outcome | None],
             pending: collections.deque, busy: dict[int, int], idle: list[int]) -> None:
        retried: set[int] = set()
        while pending or busy:
            while pending and idle:
                position, index = idle.pop(), pending.popleft()
                worker = self.workers[position]
                if worker.send(requests[index]):
                    busy[position] = index
                    continue
                # the worker died before it took the request (not the request's doing):
                # a fresh one gets it once more
                worker.kill()
                idle.append(position)
                if index in retried:
                    outcomes[index] = Outcome("died", detail="died before taking the request")
                else:
                    retried.add(index)
                    pending.appendleft(index)
            if not busy:
                continue
            now = time.perf_counter()
            nearest = min(self.workers[p].sent_at() + timeout for p in busy)
            waitables = [x for p in busy for x in (self.workers[p].conn,
                                                   self.workers[p].process.sentinel)]
            wait(waitables, max(0.0, nearest - now))
            for position in list(busy):
                worker = self.workers[position]
                outcome = worker.collect()
                if outcome is None and time.perf_counter() >= worker.sent_at() + timeout:
                    seconds = time.perf_counter() - worker.sent_at()
                    worker.kill()
                    outcome = Outcome("timeout", detail=f"ran over {timeout:g} s",
                                      seconds=seconds)
                if outcome is not None:
                    outcomes[busy.pop(position)] = outcome
                    idle.append(position)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


__all__ = ["START_TIMEOUT", "Outcome", "WorkerPool", "WorkerProcess", "WorkerStartError",
           "context", "exit_description"]

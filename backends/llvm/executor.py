"""Running a program whose kernels are machine code in this process: one call per run.

`ProgramExecutor.run` stages the inputs (64-byte aligned and contiguous, copied only when they
are not), allocates the output slots, and calls the entry function once (aot.py); the arena
and the parameters are bound when the executor is made. `profile` calls the same kernels one
step at a time on the same buffers, timing each.

This module is the loader side of the backend: it runs in-process builds and loaded artefacts
alike and needs no code generator.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ember.backends.llvm.parallel import set_num_threads
from ember.backends.llvm.runtime import Kernel, _address, aligned, copy_aligned, empty_aligned
from ember.errors import CodegenError, EmberError
from ember.ir.graph import numpy_dtype
from ember.runtime.program import Program

#: the entry function of a program (aot.py writes it)
ENTRY_SYMBOL = "ember_run"
ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_void_p)


class ProgramExecutor:
    def __init__(self, program: Program, entry_address: int, kernels: Mapping[str, Kernel],
                 params: Sequence[np.ndarray], owner: object, code: object = None):
        """`entry_address` is the program's `ember_run`; `kernels` by name (for profiling);
        `params` in the program's param order (aligned copies are made where needed);
        `owner` keeps the machine code alive; `code` is what `Module.save` writes (the
        build's CompiledProgram; None for a module loaded from an artefact)."""
        self.program = program
        self.code = code
        self._owner = owner
        self._entry = ENTRY_TYPE(entry_address)
        self._kernels = dict(kernels)
        strings = [b.name for b in program.buffers.values() if b.dtype == "string"]
        if strings:
            raise CodegenError(f"string tensors are not supported by the llvm backend "
                               f"(numeric dtypes only): {strings[:3]}; use target 'reference'")
        self.params = [copy_aligned(p) for p in params]
        try:
            self._arena = empty_aligned(max(program.arena_bytes, 1), np.uint8)
        except MemoryError:
            raise EmberError(f"the model's intermediate values need "
                             f"{program.arena_bytes / 2**30:.1f} GiB (after memory planning), "
                             f"more than this machine can allocate") from None
        self._input_table = (ctypes.c_void_p * max(1, len(program.inputs)))()
        self._output_table = (ctypes.c_void_p * max(1, len(program.output_slots)))()
        self._param_table = (ctypes.c_void_p * max(1, len(self.params)))(
            *[_address(p) for p in self.params])
        self._output_specs = [
            (program.buffers[n].shape, numpy_dtype(program.buffers[n].dtype))
            for n in program.output_slots
        ]
        self._lock = threading.Lock()

    def save_artifact(self, directory, linker: bool = True) -> dict:
        """Write this program's files into `directory` (runtime/artifact.py's `save`)."""
        return self.code.save(directory, self.params, linker)

    @property
    def steps(self) -> tuple:
        return self.program.steps

    def set_num_threads(self, count: int) -> None:
        set_num_threads(count)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        staged = [aligned(a) for a in inputs]
        slots = self._output_slots()
        with self._lock:
            for k, array in enumerate(staged):
                self._input_table[k] = _address(array)
            for k, array in enumerate(slots):
                self._output_table[k] = _address(array)
            status = self._entry(self._input_table, self._output_table, self._param_table,
                                 self._arena.ctypes.data)
        if status != 0:
            raise MemoryError(f"a kernel's heap allocation failed (status {status})")
        return self._collect(staged, slots)

    def _output_slots(self) -> list[np.ndarray]:
        try:
            return [empty_aligned(shape, dtype) for shape, dtype in self._output_specs]
        except MemoryError:
            total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in self._output_specs)
            raise EmberError(f"the model's outputs need {total / 2**30:.1f} GiB, more than "
                             f"this machine can allocate") from None

    def _collect(self, inputs: list[np.ndarray], slots: list[np.ndarray]) -> list[np.ndarray]:
        """Graph outputs in order: an output slot is returned as is (the first time; a
        repeated output, or one that is an input or a constant, is a copy)."""
        program, given = self.program, set()
        results = []
        for name in program.outputs:
            storage = program.storage(name)
            if storage.kind == "output" and storage.index not in given:
                given.add(storage.index)
                array = slots[storage.index]
            else:
                array = self._view(name, inputs, slots).copy()
            results.append(array.reshape(program.buffers[name].shape))
        return results

    def _view(self, name: str, inputs: list[np.ndarray], slots: list[np.ndarray]
              ) -> np.ndarray:
        """The array that holds value `name` in this run."""
        buffer = self.program.buffers[name]
        kind, index = buffer.storage.kind, buffer.storage.index
        if kind == "input":
            return inputs[index]
        if kind == "param":
            return self.params[index]
        if kind == "output":
            return slots[index]
        return self._arena[index:index + buffer.nbytes].view(numpy_dtype(buffer.dtype)).reshape(
            buffer.shape)

    def profile(self, inputs: list[np.ndarray], repeat: int = 5, isolated: bool = False
                ) -> list[tuple[str, tuple[str, ...], float]]:
        """(kernel, ops, median ms) per step, after one untimed run of the whole program (so
        every buffer holds real values). By default each of `repeat` passes runs the steps
        in order, as a run does, timing each: a step finds the caches as the steps before it
        left them, so weights and caches that a run streams from memory are timed so.
        `isolated` times each step alone, `repeat` calls in a row: its speed with its data
        hot in cache."""
        staged = [aligned(a) for a in inputs]
        slots = self._output_slots()
        with self._lock:
            calls = []
            for step in self.program.steps:
                addresses = [_address(self._view(a, staged, slots))
                             for a in step.args]
                calls.append((step, self._kernels[step.kernel].raw, addresses))
            for _, raw, addresses in calls:
                raw(*addresses)
            repeat = max(1, repeat)
            times = np.zeros((len(calls), repeat))

            def time_call(k: int, sample: int) -> None:
                _, raw, addresses = calls[k]
                start = time.perf_counter()
                raw(*addresses)
                times[k, sample] = (time.perf_counter() - start) * 1e3

            if isolated:
                for k in range(len(calls)):
                    for sample in range(repeat):
                        time_call(k, sample)
            else:
                for sample in range(repeat):
                    for k in range(len(calls)):
                        time_call(k, sample)
        return [(step.kernel, step.ops, float(np.median(row)))
                for (step, _, _), row in zip(calls, times)]

"""The executor of a module that specializes on input values at run time.

Each run looks the values of the specialized inputs up in a cache of compiled variants (by
dtype, shape and bytes) and, on a miss, asks its `compile_variant` callback for one (the
compiler's side, compiler/specialize.py). The callback may raise `SpecializationNeeded` naming
more inputs: the set grows and the lookup starts over.

Saving writes every variant compiled so far under variants/N/ with the ONNX model beside them;
a loaded module runs those without the compiler and imports it only for a new value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ArtifactError, SpecializationNeeded
from ember.ir.graph import dtype_name

#: values of the specialized inputs -> the module compiled for them; may raise
#: SpecializationNeeded when the model needs more inputs' values
VariantCompiler = Callable[[Mapping[str, np.ndarray]], Any]

MODEL = "model.onnx"


def value_key(array: np.ndarray) -> tuple[Any, ...]:
    if array.dtype == object:  # strings: bytes of an object array are pointers
        return (dtype_name(array.dtype), array.shape, tuple(array.ravel().tolist()))
    return (dtype_name(array.dtype), array.shape, np.ascontiguousarray(array).tobytes())


class SpecializingExecutor:
    def __init__(self, input_names: Sequence[str], specialized: Iterable[str],
                 compile_variant: VariantCompiler, source: Mapping[str, Any]):
        """`source` is what saving needs to let a loaded module compile more variants: the
        ONNX model's bytes ("model"), "target", "input_shapes" and "num_threads"."""
        self.input_names = list(input_names)
        self.specialized: set[str] = set(specialized)
        self.compilations = 0
        self.source = dict(source)
        self._compile_variant = compile_variant
        self._cache: dict[tuple[Any, ...], tuple[dict[str, np.ndarray], Any]] = {}
        self._num_threads: int | None = None

    def _key(self, values: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple((name, *value_key(values[name])) for name in sorted(self.specialized))

    def variant(self, values: Mapping[str, np.ndarray]):
        """The module compiled for these input values (cached)."""
        while True:
            key = self._key(values)
            if key in self._cache:
                return self._cache[key][1]
            fixed = {name: np.asarray(values[name]) for name in sorted(self.specialized)}
            try:
                module = self._compile_variant(fixed)
            except SpecializationNeeded as error:
                more = set(error.inputs) - self.specialized
                if not more:
                    raise
                self.specialized |= more
                continue
            if self._num_threads is not None:
                module.set_num_threads(self._num_threads)
            self.compilations += 1
            self._cache[key] = (fixed, module)
            return module

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values = dict(zip(self.input_names, inputs))
        module = self.variant(values)
        return module.run({n: v for n, v in values.items() if n not in self.specialized})

    def set_num_threads(self, count: int) -> None:
        self._num_threads = count
        for _, module in self._cache.values():
            module.set_num_threads(count)

    def save_artifact(self, directory: Path, linker: bool = True) -> dict[str, Any]:
        (directory / MODEL).write_bytes(self.source["model"])
        variants = []
        for k, (values, module) in enumerate(self._cache.values()):
            where = f"variants/{k}"
            (directory / where).mkdir(parents=True)
            saver = getattr(module._executor, "save_artifact", None)
            if saver is None:
                raise ArtifactError(f"variant {k} (target {module.target!r}) cannot be saved")
            np.savez(directory / where / "values.npz", **values)
            variants.append({"directory": where, "values": sorted(values),
                             **saver(directory / where, linker)})
        return {
            "module": "specializing",
            "inputs_in_order": self.input_names,
            "specialized": sorted(self.specialized),
            "source": {k: v for k, v in self.source.items() if k != "model"},
            "variants": variants,
        }


def load_specialized(directory: Path, body: Mapping[str, Any]) -> SpecializingExecutor:
    """The executor of a saved specializing module: its saved variants, and the compiler
    (imported only when needed) for values it has not seen."""
    from ember.runtime.artifact import load_executor
    from ember.runtime.module import Module, TensorSpec

    source = dict(body["source"])
    source["model"] = (directory / MODEL).read_bytes()

    def compile_variant(values: Mapping[str, np.ndarray]):
        from ember.compiler.specialize import variant_compiler

        return variant_compiler(source)(values)

    executor = SpecializingExecutor(body["inputs_in_order"], body["specialized"],
                                    compile_variant, source)
    for variant in body["variants"]:
        where = directory / variant["directory"]
        try:
            with np.load(where / "values.npz", allow_pickle=False) as data:
                values = {name: data[name] for name in variant["values"]}
        except (OSError, ValueError, KeyError) as error:
            raise ArtifactError(f"{where / 'values.npz'}: unreadable ({error})") from None
        inner = load_executor(where, variant)
        program = inner.program
        module = Module(inner, *(
            [TensorSpec(n, program.buffers[n].shape, program.buffers[n].dtype) for n in names]
            for names in (program.inputs, program.outputs)), source["target"])
        key = tuple((name, *value_key(values[name])) for name in sorted(values))
        executor._cache[key] = (values, module)
    executor.compilations = len(executor._cache)
    return executor

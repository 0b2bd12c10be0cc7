"""Calling compiled kernels from Python: the calling convention on numpy arrays.

A kernel is `i32 name(ptr buf0, ptr buf1, ...)` (codegen.py's [Note: kernel calling
convention]): one pointer per param buffer, each `noalias` and aligned to `align` bytes (64 by
default). `Kernel.__call__` keeps that contract for any numpy arrays: an array of the param's
dtype and element count (any shape) is passed as is when it is C-contiguous and aligned, else
through an aligned copy (copied back when the kernel writes it); an output that overlaps
another argument is computed into a copy too. Arrays from `empty_aligned` never need copies.

Kernels are exported as `ember_<name>` (KernelSignature.symbol). This module is the loader
side: it needs no code generator (an exported shared library is called the same way, see
`CompiledLibrary.from_shared_library`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import InputError
from ember.ir.graph import numpy_dtype

DEFAULT_ALIGN = 64


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One kernel param: buffer name, element dtype, element count, whether it is written."""

    name: str
    dtype: str
    size: int
    written: bool


#: kernels are exported as `ember_<name>`, so that a kernel named like a C library function
#: ("exp", "round") does not clash with it; the runtime's own symbols start with `__ember_`
KERNEL_SYMBOL_PREFIX = "ember_"


@dataclasses.dataclass(frozen=True)
class KernelSignature:
    name: str
    params: tuple[ParamSpec, ...]

    @property
    def symbol(self) -> str:
        """The kernel's symbol in LLVM IR and in exported libraries."""
        return KERNEL_SYMBOL_PREFIX + self.name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": [dataclasses.asdict(p) for p in self.params]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> KernelSignature:
        return KernelSignature(data["name"], tuple(ParamSpec(**p) for p in data["params"]))


def empty_aligned(shape: int | Sequence[int], dtype: Any, align: int = DEFAULT_ALIGN
                  ) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an `align`-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize  # math.prod: np.prod costs microseconds
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = (-_address(raw)) % align
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned(array: Any, dtype: Any = None, align: int = DEFAULT_ALIGN) -> np.ndarray:
    """`array` as a C-contiguous array whose data start on an `align`-byte boundary: itself
    when it already is one, else a copy. Compiled modules read such inputs in place and copy
    any other input before every run (numpy's own allocations are only 16-byte aligned),
    which for a large input such as a decode step's 75 MB KV cache costs milliseconds per
    run: allocate long-lived inputs with this (`ember.aligned`)."""
    array = np.asarray(array, dtype=dtype)
    if array.flags.c_contiguous and _address(array) % align == 0:
        return array
    return copy_aligned(array, align)


def copy_aligned(array: np.ndarray, align: int = DEFAULT_ALIGN) -> np.ndarray:
    """A C-contiguous copy of `array` whose data start on an `align`-byte boundary (always
    a copy: for buffers the caller must own, such as a module's constants)."""
    out = empty_aligned(array.shape, array.dtype, align)
    out[...] = array
    return out


def zeros_aligned(shape: int | Sequence[int], dtype: Any, align: int = DEFAULT_ALIGN
                  ) -> np.ndarray:
    out = empty_aligned(shape, dtype, align)
    out[...] = 0
    return out


def _address(array: np.ndarray) -> int:
    """The address of an array's data (`array.ctypes.data` is slower: it builds an object)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):  # read-only, not contiguous, or empty
        return array.ctypes.data


class Kernel:
    """A compiled kernel callable on numpy arrays: `kernel(*arrays)` writes its outputs in
    place and returns None. `raw(*addresses)` is the unchecked C call (returns the status)."""

    def __init__(self, signature: KernelSignature, address: int, owner: Any,
                 align: int = DEFAULT_ALIGN):
        self.signature = signature
        self.name = signature.name
        self.address = address
        self.align = align
        self._owner = owner  # keeps the machine code alive
        function_type = ctypes.CFUNCTYPE(ctypes.c_int32, *[ctypes.c_void_p] * len(
            signature.params))
        self.raw: Callable[..., int] = function_type(address)
        self._dtypes = [numpy_dtype(p.dtype) for p in signature.params]
        self._written = [k for k, p in enumerate(signature.params) if p.written]

    def __repr__(self) -> str:
        params = ", ".join(f"{p.name}: {p.dtype}[{p.size}]{' (out)' if p.written else ''}"
                           for p in self.signature.params)
        return f"<Kernel {self.name}({params})>"

    def __call__(self, *arrays: np.ndarray) -> None:
        params = self.signature.params
        if len(arrays) != len(params):
            raise InputError(f"kernel {self.name} takes {len(params)} arrays "
                             f"({', '.join(p.name for p in params)}), got {len(arrays)}")
        arrays = list(arrays)
        pointers: list[int] = []
        copy_back: list[tuple[np.ndarray, np.ndarray]] = []
        for k, (param, dtype) in enumerate(zip(params, self._dtypes)):
            array = self._checked(arrays[k], param, dtype)
            pointer = _address(array)
            if pointer % self.align or not array.flags.c_contiguous:
                array, pointer = self._stage(array, param, copy_back)
            arrays[k] = array
            pointers.append(pointer)
        for k in self._written:
            # noalias: an output may not overlap any other argument (contiguous by now)
            start, end = pointers[k], pointers[k] + arrays[k].nbytes
            if any(j != k and pointers[j] < end and start < pointers[j] + arrays[j].nbytes
                   for j in range(len(params))):
                arrays[k], pointers[k] = self._stage(arrays[k], params[k], copy_back)
        status = self.raw(*pointers)
        for original, staged in copy_back:
            original[...] = staged
        if status != 0:
            raise MemoryError(f"kernel {self.name}: a heap allocation failed (status {status})")

    def _checked(self, array: Any, param: ParamSpec, dtype: np.dtype) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            if param.written:
                raise InputError(f"kernel {self.name}: output {param.name} must be a numpy "
                                 f"array, got {type(array).__name__}")
            array = np.asarray(array)
        if array.dtype != dtype:
            raise InputError(f"kernel {self.name}: {param.name} must be {param.dtype}, got "
                             f"{array.dtype}")
        if array.size != param.size:
            raise InputError(f"kernel {self.name}: {param.name} must have {param.size} "
                             f"elements, got {array.size} (shape {array.shape})")
        if param.written and not array.flags.writeable:
            raise InputError(f"kernel {self.name}: output {param.name} is read-only")
        return array

    def _stage(self, array: np.ndarray, param: ParamSpec,
               copy_back: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, int]:
        """An aligned contiguous copy of `array` (copied back after the call if written)."""
        staged = copy_aligned(array, self.align)
        if param.written:
            original = next((o for o, s in copy_back if s is array), array)
            copy_back[:] = [(o, s) for o, s in copy_back if s is not array]
            copy_back.append((original, staged))
        return staged, staged.ctypes.data


class CompiledLibrary:
    """Kernels compiled together (one LLVM module): `lib.get(name)(*arrays)`.

    `llvm_ir` is the generated module, `optimized_ir` the module after LLVM's pipeline;
    `assembly()` and `emit_object()` (in jit.py's JitLibrary) give machine code.
    """

    def __init__(self, kernels: Mapping[str, Kernel], owner: Any = None):
        self._kernels = dict(kernels)
        self._owner = owner

    @property
    def names(self) -> list[str]:
        return list(self._kernels)

    @property
    def signatures(self) -> list[KernelSignature]:
        return [k.signature for k in self._kernels.values()]

    def get(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            raise KeyError(f"no kernel {name!r} in this library; it has "
                           f"{', '.join(self._kernels) or 'none'}") from None

    def __getitem__(self, name: str) -> Kernel:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._kernels

    @staticmethod
    def from_shared_library(path: str, signatures: Sequence[KernelSignature],
                            align: int = DEFAULT_ALIGN) -> CompiledLibrary:
        """Load kernels exported by `jit.export_library` (the signatures come from the
        artefact's manifest, `KernelSignature.to_json`)."""
        handle = ctypes.CDLL(path)
        kernels = {}
        for signature in signatures:
            address = ctypes.cast(getattr(handle, signature.symbol), ctypes.c_void_p).value
            kernels[signature.name] = Kernel(signature, address, handle, align)
        library = CompiledLibrary(kernels, handle)
        _sync_exported_runtime(handle)
        return library


def _sync_exported_runtime(handle: ctypes.CDLL) -> None:
    """Make an exported library's own copy of the parallel runtime follow this process's
    thread count and backend (set_num_threads reaches it from now on)."""
    from ember.backends.llvm.parallel import get_runtime

    get_runtime().attach(handle)

"""What CPU schedule templates know about the machine: vector width and core count.

One place for it, so every template sizes its vectors and parallel loops the same way: from
the target's options (-mattr, -num-threads) where given, else from the host.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from ember.ir.graph import numpy_dtype
from ember.target import Target


@functools.cache
def _host_vector_bytes() -> int:
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except Exception:  # no llvmlite: assume SSE-class vectors
        return 16
    if "+avx512f" in features.split(","):
        return 64
    if "+avx" in features.split(","):
        return 32
    return 16


@dataclasses.dataclass(frozen=True)
class CpuFacts:
    """What a CPU schedule needs to know about the machine."""

    vector_bytes: int
    cores: int

    def lanes(self, dtype: str) -> int:
        """Elements of `dtype` in one vector register."""
        return max(1, self.vector_bytes // numpy_dtype(dtype).itemsize)


def cpu_facts(target: Target) -> CpuFacts:
    """Vector width from the target's -mattr (+/-avx512f, +/-avx) or the host, and cores
    from -num-threads or the host's CPU count."""
    attrs = target.attrs
    features = attrs.get("mattr", "").split(",")
    vector_bytes = _host_vector_bytes()
    if "-avx512f" in features and vector_bytes > 32:
        vector_bytes = 32
    elif "+avx512f" in features:
        vector_bytes = 64
    elif "-avx" in features:
        vector_bytes = 16
    cores = int(attrs.get("num-threads", 0)) or os.cpu_count() or 1
    return CpuFacts(vector_bytes, cores)

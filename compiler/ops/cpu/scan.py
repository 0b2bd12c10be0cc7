"""CPU templates of the opaque ops: cumsum, scatter_elements and scatter_nd, registered as
externs (loop nests written directly, compiler/ops/compute/scan.py) with the machine's vector
width and the parallel choice made here from the workload's size.

An extern has no schedule and no knobs: `instantiate` runs its loop nest through the loop-IR
pipeline as it is.
"""

from __future__ import annotations

import math

from ember.compiler.ops.compute.scan import (
    cumsum_func,
    scatter_elements_func,
    scatter_nd_func,
)
from ember.compiler.ops.cpu.injective import PARALLEL_MIN_ELEMENTS, vector_lanes, workload_dtypes
from ember.compiler.ops.registry import Workload, register_extern
from ember.ir.loop import PrimFunc
from ember.target import Target

# Externs are built without a target (registry.ExternFn): they vectorize for the host.
_HOST = Target("llvm")


def _lanes(workload: Workload) -> int:
    # the index inputs of scatters do not set the width: they are read once per element
    data = [workload.input_types[0].dtype, workload.output_types[0].dtype]
    return vector_lanes(data, _HOST)


def _large(workload: Workload) -> bool:
    return math.prod(workload.output_types[0].shape) >= PARALLEL_MIN_ELEMENTS


@register_extern("cumsum")
def cumsum(workload: Workload, name: str) -> PrimFunc:
    x = workload.input_types[0]
    attrs = workload.attrs
    return cumsum_func(name, x.shape, x.dtype, attrs.axis, attrs.exclusive, attrs.reverse,
                       vector_lanes(workload_dtypes(workload), _HOST), _large(workload))


@register_extern("scatter_elements")
def scatter_elements(workload: Workload, name: str) -> PrimFunc:
    data, indices, _ = workload.input_types
    attrs = workload.attrs
    return scatter_elements_func(name, data.shape, data.dtype, indices.shape, indices.dtype,
                                 attrs.axis, attrs.reduction, _lanes(workload),
                                 _large(workload))


@register_extern("scatter_nd")
def scatter_nd(workload: Workload, name: str) -> PrimFunc:
    data, indices, _ = workload.input_types
    return scatter_nd_func(name, data.shape, data.dtype, indices.shape, indices.dtype,
                           workload.attrs.reduction, _lanes(workload), _large(workload))

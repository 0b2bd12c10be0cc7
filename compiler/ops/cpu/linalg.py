"""CPU templates of the ops in ir/ops/linalg.py (cumprod, topk, det, bitcast): externs whose
loop nests compiler/ops/compute/linalg.py writes, with the machine's vector width and a
parallel outer loop when the work is large, as cpu/scan.py does for cumsum.
"""

from __future__ import annotations

import math

from ember.compiler.ops.compute.linalg import bitcast_func, cumprod_func, det_func, topk_func
from ember.compiler.ops.cpu.injective import PARALLEL_MIN_ELEMENTS, vector_lanes, workload_dtypes
from ember.compiler.ops.registry import Workload, register_extern
from ember.ir.graph import numpy_dtype
from ember.ir.loop import PrimFunc
from ember.target import Target

# Externs are built without a target (registry.ExternFn): they vectorize for the host.
_HOST = Target("llvm")


def _large(workload: Workload) -> bool:
    return math.prod(workload.input_types[0].shape) >= PARALLEL_MIN_ELEMENTS


@register_extern("cumprod")
def cumprod(workload: Workload, name: str) -> PrimFunc:
    x = workload.input_types[0]
    attrs = workload.attrs
    return cumprod_func(name, x.shape, x.dtype, attrs.axis, attrs.exclusive, attrs.reverse,
                        vector_lanes(workload_dtypes(workload), _HOST), _large(workload))


@register_extern("topk")
def topk(workload: Workload, name: str) -> PrimFunc:
    x = workload.input_types[0]
    attrs = workload.attrs
    return topk_func(name, x.shape, x.dtype, attrs.axis, attrs.k, attrs.largest,
                     _large(workload))


@register_extern("det")
def det(workload: Workload, name: str) -> PrimFunc:
    x = workload.input_types[0]
    # one matrix is serial work: parallel only across many matrices of some size
    return det_func(name, x.shape, x.dtype, _large(workload) and x.rank > 2)


@register_extern("bitcast")
def bitcast(workload: Workload, name: str) -> PrimFunc:
    x = workload.input_types[0]
    width = numpy_dtype(x.dtype).itemsize
    lanes = vector_lanes([f"uint{8 * width}"], _HOST)
    return bitcast_func(name, x.shape, width, lanes, _large(workload))

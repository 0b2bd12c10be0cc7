"""Tensor-expression compute of `dense_packed` (ir/ops/dense.py): x @ B with B read from its
column panels W (ceil(N/nb), K, nb).

    out[..., i, j] = sum_k x[..., i, k] * W[j // nb, k, j % nb]

When nb divides N this is one reduction stage, the output itself. Otherwise the reduction
covers the padded width (every panel whole: the padding weights are zeros) and a copy stage
keeps the first N columns, so the register block of the last panel computes unguarded like
every other and only its store is masked (a reduction clipped to N would guard every
multiply-add of every panel). An elementwise epilogue composes onto the output stage either
way (compiler/ops/fused.py). Splitting j by nb in the schedule turns the panel index into
the outer loop and the lane into the inner one (the loop-IR simplifier folds
(jo * nb + ji) // nb to jo), so the weight is read as one contiguous vector per k.
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.compiler.ops.compute.nn import named_compute
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import te
from ember.ir.expr import Expr


@register_compute("dense_packed")
def dense_packed(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, w = inputs
    out_type = workload.output_types[0]
    _, depth, nb = w.static_shape
    k = te.reduce_axis(depth, "k")
    panels = w.static_shape[0]
    lead = out_type.rank - 1
    names = [f"b{d}" for d in range(lead - 1)] + (["i"] if lead else []) + ["j"]

    def body(*axes: Expr) -> Expr:
        *rows, j = axes
        return te.sum(x[(*rows, k.var)] * w[j // nb, k.var, j % nb], axis=k)

    n = out_type.shape[-1]
    if n == panels * nb:
        return [named_compute(out_type.shape, names, body, "dense_packed")]
    padded = named_compute((*out_type.shape[:-1], panels * nb), names, body,
                           "dense_packed_acc")
    return [named_compute(out_type.shape, names, lambda *axes: padded[axes], "dense_packed")]

"""Computes of the reductions (ir/ops/reduce.py): reduce_sum/mean/prod/max/min, argmax, argmin.

A reduction is one te stage over the output's axes and one reduction axis per reduced input
axis ("r<axis>"). Where the result needs a step after the accumulation, a second, elementwise
stage finishes it:
- float16/bfloat16 accumulate in float32 and round once at the end (reduce_mean scales first,
  so a mean whose sum overflows float16 still comes out right);
- reduce_mean of integers sums in 64 bits and divides truncating toward zero;
- argmax/argmin reduce (index, value) pairs with a tuple reducer and keep the index.

Reducing over no axes (ONNX's noop_with_empty_axes, a rank-0 input) copies the input.
Over zero elements the result is the reducer's identity (0, 1, the lowest or highest value,
NaN for a float mean), as the references give.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from ember.compiler.ops.compute.elementwise import HALF_FLOATS, is_float, is_unsigned
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import INDEX, Expr, Var, call, const, select
from ember.ir.te import CommReducer, IterVar

# ----------------------------------------------------------------------------- reducers


def _lowest(dtype: str) -> Expr:
    return const(False, "bool") if dtype == "bool" else E.min_value(dtype)


def _highest(dtype: str) -> Expr:
    return const(True, "bool") if dtype == "bool" else E.max_value(dtype)


REDUCERS: dict[str, Callable[..., Expr]] = {
    "reduce_sum": te.sum,
    "reduce_mean": te.sum,
    "reduce_prod": te.prod,
    # max/min propagate NaN (llvm.maximum/minimum), as numpy's max and ONNX's ReduceMax do;
    # on bools they are or/and
    "reduce_max": te.comm_reducer(E.max_, _lowest, name="max"),
    "reduce_min": te.comm_reducer(E.min_, _highest, name="min"),
}


def accumulator_dtype(op: str, dtype: str) -> str:
    """The dtype `op` accumulates `dtype` values in."""
    if dtype in HALF_FLOATS:
        return "float32"
    if op == "reduce_mean" and not is_float(dtype):
        return "uint64" if is_unsigned(dtype) else "int64"
    return dtype


def reduction_index(rank: int, axes: Sequence[int], keepdims: bool, out_index: Sequence[Expr],
                    reduce_axes: Sequence[IterVar]) -> tuple[Expr, ...]:
    """The input index that output element `out_index` reduces over: reduced axes walk their
    reduction variables, the others follow the output's axes."""
    index: list[Expr] = []
    position = 0
    for axis in range(rank):
        if axis in axes:
            index.append(reduce_axes[list(axes).index(axis)].var)
            position += 1 if keepdims else 0
        else:
            index.append(out_index[position])
            position += 1
    return tuple(index)


def _reduce_axes(shape: Sequence[int], axes: Sequence[int]) -> list[IterVar]:
    return [te.reduce_axis(shape[a], name=f"r{a}") for a in axes]


# ----------------------------------------------------------------------------- reductions


@register_compute(*REDUCERS)
def reduce(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    op, attrs = workload.op, workload.attrs
    out = workload.output_types[0]
    axes = tuple(attrs.axes)
    if not axes:  # every element is its own group
        return [te.compute(out.shape, lambda *i: x[i], name=op)]
    shape = x.static_shape
    acc_dtype = accumulator_dtype(op, x.dtype)
    raxes = _reduce_axes(shape, axes)
    reducer = REDUCERS[op]

    def accumulate(*i: Expr) -> Expr:
        index = reduction_index(x.ndim, axes, attrs.keepdims, i, raxes)
        return reducer(E.cast(acc_dtype, x[index]), axis=raxes)

    if op != "reduce_mean" and acc_dtype == out.dtype:
        return [te.compute(out.shape, accumulate, name=op)]
    acc = te.compute(out.shape, accumulate, name=f"{op}.acc")
    count = math.prod(shape[a] for a in axes)

    def finish(*i: Expr) -> Expr:
        total = acc[i]
        if op != "reduce_mean":
            return E.cast(out.dtype, total)
        if not is_float(acc_dtype):  # truncating division; no elements give 0 (0 / 1)
            return E.cast(out.dtype, E.div(total, const(max(count, 1), acc_dtype)))
        return E.cast(out.dtype, total / const(float(count), acc_dtype))  # 0 / 0 is NaN

    return [te.compute(out.shape, finish, name=op)]


# ----------------------------------------------------------------------------- argmax, argmin


def arg_reducer(op: str, dtype: str, last: bool) -> CommReducer:
    """The (index, value) reducer of argmax/argmin, for a reduction loop that runs in order
    (see [Note: arg-reductions run in order]): a strictly better value takes over, so the
    first extreme stays; with `last`, an equal one takes over too, so the last one stays.
    NaN compares false and never takes over: `arg_reduce` finds NaNs in a second reduction."""
    li, lv = Var("lhs.index", INDEX), Var("lhs.value", dtype)
    ri, rv = Var("rhs.index", INDEX), Var("rhs.value", dtype)
    if op == "argmax":
        take = rv >= lv if last else rv > lv
    else:
        take = rv <= lv if last else rv < lv
    result = (select(take, ri, li), select(take, rv, lv))
    # starting from index 0 with the least extreme value, an axis of equal values (even the
    # least extreme ones) gives the first index, or the last with `last`
    extreme = E.min_value(dtype) if op == "argmax" else E.max_value(dtype)
    return CommReducer((li, lv), (ri, rv), result, (const(0), extreme), name=op)


@register_compute("argmax", "argmin")
def arg_reduce(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    """[Note: arg-reductions run in order] The index of the extreme value with ties broken
    by position is a commutative reduction only if every step compares indices too, which
    puts an index comparison and NaN tests on the loop-carried path: 7x slower. So the
    reducers here rely on the reduction loop running in ascending order (the CPU reduce
    schedule keeps it serial; an rfactor must combine partial results in order), and NaN,
    which numpy's argmax treats as the extreme, is found by a second, plain min/max
    reduction over the positions of NaNs."""
    (x,) = inputs
    attrs = workload.attrs
    out = workload.output_types[0]
    axis, last = attrs.axis, attrs.select_last_index
    steps = x.static_shape[axis]
    reducer = arg_reducer(workload.op, x.dtype, last)
    (raxis,) = _reduce_axes(x.static_shape, (axis,))

    def pair(*i: Expr) -> tuple[Expr, Expr]:
        index = reduction_index(x.ndim, (axis,), attrs.keepdims, i, [raxis])
        first = reducer((raxis.var, x[index]), axis=[raxis])
        return first, dataclasses.replace(first, value_index=1)

    position, _ = te.compute(out.shape, pair, name=f"{workload.op}.pair")
    if not is_float(x.dtype):
        return [te.compute(out.shape, lambda *i: position[i], name=workload.op)]

    (naxis,) = _reduce_axes(x.static_shape, (axis,))
    none = const(-1 if last else steps)
    nan_reducer = te.max if last else te.min

    def first_nan(*i: Expr) -> Expr:
        index = reduction_index(x.ndim, (axis,), attrs.keepdims, i, [naxis])
        return nan_reducer(select(call("isnan", x[index]), naxis.var, none), axis=[naxis])

    nan_position = te.compute(out.shape, first_nan, name=f"{workload.op}.nan")

    def result(*i: Expr) -> Expr:
        return select(E.ne(nan_position[i], none), nan_position[i], position[i])

    return [te.compute(out.shape, result, name=workload.op)]

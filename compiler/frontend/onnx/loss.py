"""Converters for ONNX's training losses, NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss
(opsets 12 and 13), decomposed into ember ops.

For scores x of shape (N, C, d1, ...) and class indices t of shape (N, d1, ...):

    loss[n, d] = -x[n, t[n, d], d] * w[n, d]        (0 where t[n, d] == ignore_index)
    w[n, d]    = weight[t[n, d]], or 1 without the weight input (0 where ignored)

becomes gather_elements over the class axis, a where for ignore_index, a gather of the
weights and a product; reduction "sum" sums, "mean" divides the sum by the sum of w (the
weighted mean). SoftmaxCrossEntropyLoss is the same on log_softmax(x) over the class axis,
which is its optional second output.

One quirk of the spec's reference (onnx's, which generated the conformance data) is kept:
NegativeLogLikelihoodLoss with ignore_index -1 and no weight averages over every element,
ignored ones included, instead of over the kept ones.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.ir.graph import numpy_dtype
from ember.ir.ops.elementwise import FLOATS

_REDUCTIONS = ("none", "sum", "mean")


def _scalar(ctx: ConvertContext, value: float | int, dtype: str) -> str:
    return ctx.constant(np.asarray(value, dtype=numpy_dtype(dtype)))


def _check(ctx: ConvertContext, scores: int) -> tuple[str, int | None]:
    """The reduction and ignore_index; checks the shapes of scores, target and weight."""
    x, t = ctx.type(scores), ctx.type(1)
    if x.dtype not in FLOATS:
        ctx.fail(f"scores have dtype {x.dtype}; {ctx.op_type} accepts {', '.join(FLOATS)}")
    if t.dtype not in ("int32", "int64"):
        ctx.fail(f"target has dtype {t.dtype}; it must be int32 or int64")
    if x.rank < 2 or t.shape != (x.shape[0], *x.shape[2:]):
        ctx.fail(f"scores {x.shape} must be (N, C, d1, ...) and target (N, d1, ...), "
                 f"but target is {t.shape}")
    if ctx.has_input(2):
        w = ctx.type(2)
        if w.shape != (x.shape[1],) or w.dtype != x.dtype:
            ctx.fail(f"weight {w} must be one {x.dtype} per class: ({x.shape[1]},)")
    reduction = ctx.attr("reduction", "mean")
    if reduction not in _REDUCTIONS:
        ctx.fail(f"reduction {reduction!r} is not supported; ember supports "
                 f"{', '.join(repr(r) for r in _REDUCTIONS)}")
    return reduction, ctx.attr("ignore_index", None)


def negative_log_likelihood(ctx: ConvertContext, log_prob: str, reduction: str,
                            ignore_index: int | None, count_ignored: bool) -> str:
    """The loss of `log_prob` (N, C, d...) against ctx's target (input 1) and optional weight
    (input 2). `count_ignored`: "mean" without weights divides by every element's count."""
    x = ctx.builder.types[log_prob]
    dtype = x.dtype
    target = ctx.input(1)
    t_type = ctx.type(1)
    ignored = None
    if ignore_index is not None:
        ignored = ctx.emit("equal", [target, _scalar(ctx, ignore_index, t_type.dtype)])
        # an ignored target may name no class at all: read class 0 instead
        target = ctx.emit("where", [ignored, _scalar(ctx, 0, t_type.dtype), target])
    index = ctx.emit("reshape", [target], {"shape": (x.shape[0], 1, *x.shape[2:])})
    picked = ctx.emit("gather_elements", [log_prob, index], {"axis": 1})
    loss = ctx.emit("neg", [ctx.emit("reshape", [picked], {"shape": t_type.shape})])
    zero = _scalar(ctx, 0, dtype)
    if ignored is not None:
        loss = ctx.emit("where", [ignored, zero, loss])

    weights = None
    if ctx.has_input(2):
        weights = ctx.emit("gather", [ctx.input(2), target], {"axis": 0})
    elif ignored is not None and not count_ignored:
        weights = ctx.emit("where", [ignored, zero, _scalar(ctx, 1, dtype)])
    if weights is not None and ignored is not None:
        weights = ctx.emit("where", [ignored, zero, weights])
    if weights is not None and ctx.has_input(2):
        loss = ctx.emit("mul", [loss, weights])

    if reduction == "none":
        return loss
    axes = tuple(range(len(t_type.shape)))
    total = ctx.emit("reduce_sum", [loss], {"axes": axes, "keepdims": False})
    if reduction == "sum":
        return total
    if weights is None:
        return ctx.emit("reduce_mean", [loss], {"axes": axes, "keepdims": False})
    weight_total = ctx.emit("reduce_sum", [weights], {"axes": axes, "keepdims": False})
    return ctx.emit("div", [total, weight_total])


@converter("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(ctx: ConvertContext) -> str:
    reduction, ignore_index = _check(ctx, 0)
    count_ignored = ignore_index == -1 and not ctx.has_input(2)
    return negative_log_likelihood(ctx, ctx.input(0), reduction, ignore_index, count_ignored)


@converter("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(ctx: ConvertContext) -> str | tuple[str, str]:
    reduction, ignore_index = _check(ctx, 0)
    log_prob = ctx.emit("log_softmax", [ctx.input(0)], {"axis": 1})
    loss = negative_log_likelihood(ctx, log_prob, reduction, ignore_index, False)
    if ctx.num_outputs > 1 and ctx.node.output[1]:
        return loss, log_prob
    return loss

"""Converters for ONNX's normalization operators: BatchNormalization (inference),
InstanceNormalization, LayerNormalization, GroupNormalization, RMSNormalization, LRN and
MeanVarianceNormalization.

InstanceNormalization becomes group_norm with one group per channel; MeanVarianceNormalization
is decomposed into reduce_mean and elementwise ops, as ONNX's own function body defines it.
"""

from __future__ import annotations

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import onnx_axes, onnx_axis
from ember.ir.graph import numpy_dtype


def _requested(ctx: ConvertContext) -> list[int]:
    """Indices of the optional outputs (after the first) the node names."""
    return [i for i in range(1, ctx.num_outputs) if ctx.node.output[i]]


def _check_stash_type(ctx: ConvertContext) -> None:
    stash = int(ctx.attr("stash_type", 1))
    if stash != 1:
        ctx.fail(
            f"stash_type {stash} is not supported; ember computes the statistics in float32 "
            f"(stash_type 1)"
        )


# ----------------------------------------------------------------------------- batch norm


def _batch_norm(ctx: ConvertContext) -> str:
    inputs = [ctx.input(i) for i in range(5)]
    if not all(inputs):
        ctx.fail("BatchNormalization needs all five inputs: X, scale, B, mean, var")
    return ctx.emit("batch_norm", inputs, {"epsilon": float(ctx.attr("epsilon", 1e-5))})


@converter("BatchNormalization", since=1)
def batch_norm(ctx: ConvertContext) -> str:
    """Opsets 1-9: outputs beyond Y (running and saved statistics) exist only in training."""
    if _requested(ctx):
        ctx.fail(
            f"the node asks for the training outputs {list(ctx.node.output[1:])}; ember "
            f"compiles inference graphs, where BatchNormalization has the one output Y"
        )
    if not int(ctx.attr("spatial", 1)) and ctx.type(1).rank != 1:
        ctx.fail("spatial=0 (statistics per activation, not per channel) is not supported")
    return _batch_norm(ctx)


@converter("BatchNormalization", since=14)
def batch_norm_14(ctx: ConvertContext) -> str:
    if int(ctx.attr("training_mode", 0)):
        ctx.fail(
            "training_mode=1 (normalizing with the batch's own statistics and updating the "
            "running ones) is not supported; ember compiles inference graphs: export the model "
            "in eval mode (training_mode=0)"
        )
    if _requested(ctx):
        ctx.fail(
            f"the node asks for running_mean/running_var {list(ctx.node.output[1:])}, which "
            f"exist only with training_mode=1"
        )
    return _batch_norm(ctx)


# ----------------------------------------------------------------------------- group norms


@converter("InstanceNormalization", since=1)
def instance_norm(ctx: ConvertContext) -> str:
    x = ctx.type(0)
    if x.rank < 3:
        ctx.fail(f"the input must be (N, C, *spatial), got shape {x.shape}")
    return ctx.emit("group_norm", [ctx.input(0), ctx.input(1), ctx.input(2)], {
        "num_groups": x.shape[1], "epsilon": float(ctx.attr("epsilon", 1e-5)),
    })


@converter("GroupNormalization", since=21)
def group_norm(ctx: ConvertContext) -> str:
    """Opset 21 (scale and bias per channel). Opset 18's per-group form is deprecated: onnx's
    checker rejects models that use it, so ember has no converter for it."""
    _check_stash_type(ctx)
    x = ctx.type(0)
    groups = int(ctx.attr("num_groups"))
    if x.rank < 2:
        ctx.fail(f"the input must be (N, C, ...), got shape {x.shape}")
    if groups < 1 or x.shape[1] % groups:
        ctx.fail(f"num_groups={groups} must be positive and divide the {x.shape[1]} channels")
    return ctx.emit("group_norm", [ctx.input(0), ctx.input(1), ctx.input(2)], {
        "num_groups": groups, "epsilon": float(ctx.attr("epsilon", 1e-5)),
    })


# ----------------------------------------------------------------------------- layer norms


@converter("LayerNormalization", since=17)
def layer_norm(ctx: ConvertContext) -> str | tuple[str, ...]:
    _check_stash_type(ctx)
    axis = onnx_axis(ctx, int(ctx.attr("axis", -1)), ctx.type(0).rank)
    inputs = [ctx.input(0), ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])
    attrs = {"axis": axis, "epsilon": float(ctx.attr("epsilon", 1e-5))}
    if not _requested(ctx):
        return ctx.emit("layer_norm", inputs, attrs)
    return ctx.emit_multi("layer_norm", inputs, {**attrs, "with_stats": True})


@converter("RMSNormalization", since=23)
def rms_norm(ctx: ConvertContext) -> str:
    _check_stash_type(ctx)
    axis = onnx_axis(ctx, int(ctx.attr("axis", -1)), ctx.type(0).rank)
    return ctx.emit("rms_norm", [ctx.input(0), ctx.input(1)],
                    {"axis": axis, "epsilon": float(ctx.attr("epsilon", 1e-5))})


# ----------------------------------------------------------------------------- lrn and mvn


@converter("LRN", since=1)
def lrn(ctx: ConvertContext) -> str:
    return ctx.emit("lrn", [ctx.input(0)], {
        "size": int(ctx.attr("size")),
        "alpha": float(ctx.attr("alpha", 1e-4)),
        "beta": float(ctx.attr("beta", 0.75)),
        "bias": float(ctx.attr("bias", 1.0)),
    })


@converter("MeanVarianceNormalization", since=9)
def mean_variance_normalization(ctx: ConvertContext) -> str:
    """(X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9), the means over `axes` (ONNX's function
    body, epsilon included)."""
    x = ctx.type(0)
    axes = tuple(sorted(onnx_axes(ctx, ctx.attr("axes", [0, 2, 3]), x.rank)))
    reduce = {"axes": axes, "keepdims": True}
    value = ctx.input(0)
    mean = ctx.emit("reduce_mean", [value], reduce)
    mean_of_squares = ctx.emit("reduce_mean", [ctx.emit("mul", [value, value])], reduce)
    variance = ctx.emit("sub", [mean_of_squares, ctx.emit("mul", [mean, mean])])
    epsilon = ctx.constant(np.asarray(1e-9).astype(numpy_dtype(x.dtype)))
    deviation = ctx.emit("add", [ctx.emit("sqrt", [variance]), epsilon])
    return ctx.emit("div", [ctx.emit("sub", [value, mean]), deviation])

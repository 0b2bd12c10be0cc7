"""Converters for ONNX's attention family: Attention (opsets 23-25), FlexAttention
(ai.onnx.preview), RotaryEmbedding, Swish, SwiGLU and TensorScatter.

None of them is an ember primitive: each becomes the matmul / transpose / reshape / softmax /
where chain that ONNX's own function bodies spell out, so fusion can later put the elementwise
parts back into the matmul and softmax kernels. Masks that depend only on shapes and
attributes (causal, sliding window) are built as constants at conversion time; masks that
depend on run-time values (attn_mask, nonpad_kv_seqlen, TensorScatter's write indices) become
comparisons and selects in the graph. float16/bfloat16 attention rounds after each step, as
ONNX's reference does (its bfloat16 conformance data allows less than one rounding error).
FlexAttention's score_mod / prob_mod graph attributes are converted in place.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.math import float_attr, scalar
from ember.compiler.frontend.onnx.registry import converter, find_converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, emit_slice, onnx_axis
from ember.errors import IRError, ShapeError
from ember.ir.graph import dtype_name, is_float, numpy_dtype

_HALF = ("float16", "bfloat16")


def emit_softmax(ctx: ConvertContext, x: str, axis: int) -> str:
    """Softmax along `axis`. In float16/bfloat16 it is spelled out op by op (max, sub, exp,
    sum, div), each rounding to the half type as ONNX's reference does; ember's softmax op
    computes in float32 and rounds once, which differs by an ulp from the reference."""
    if ctx.builder.types[x].dtype not in _HALF:
        return ctx.emit("softmax", [x], {"axis": axis})
    peak = ctx.emit("reduce_max", [x], {"axes": (axis,), "keepdims": True})
    exps = ctx.emit("exp", [ctx.emit("sub", [x, peak])])
    total = ctx.emit("reduce_sum", [exps], {"axes": (axis,), "keepdims": True})
    return ctx.emit("div", [exps, total])


def cast(ctx: ConvertContext, value: str, dtype: str) -> str:
    """`value` as `dtype` (no node when it already is)."""
    if ctx.builder.types[value].dtype == dtype:
        return value
    return ctx.emit("cast", [value], {"to": dtype})


def shape_of(ctx: ConvertContext, value: str) -> tuple[int, ...]:
    return tuple(ctx.builder.types[value].shape)


def require_float(ctx: ConvertContext, index: int, what: str) -> str:
    dtype = ctx.type(index).dtype
    if not is_float(dtype):
        ctx.fail(f"{what} has dtype {dtype}; {ctx.op_type} accepts floating-point inputs only")
    return dtype


def wants_output(ctx: ConvertContext, index: int) -> bool:
    return index < ctx.num_outputs and ctx.node.output[index] != ""


def to_heads(ctx: ConvertContext, value: str, heads: int, what: str) -> str:
    """(B, S, heads * D) -> (B, heads, S, D)."""
    batch, length, hidden = shape_of(ctx, value)
    if heads <= 0 or hidden % heads:
        ctx.fail(f"{what} hidden size {hidden} is not divisible by its {heads} heads")
    split = emit_reshape(ctx, value, (batch, length, heads, hidden // heads))
    return ctx.emit("transpose", [split], {"perm": (0, 2, 1, 3)})


def from_heads(ctx: ConvertContext, value: str) -> str:
    """(B, H, S, D) -> (B, S, H * D)."""
    batch, heads, length, size = shape_of(ctx, value)
    moved = ctx.emit("transpose", [value], {"perm": (0, 2, 1, 3)})
    return emit_reshape(ctx, moved, (batch, length, heads * size))


def repeat_heads(ctx: ConvertContext, value: str, repeats: int) -> str:
    """(B, H, S, D) -> (B, H * repeats, S, D), each head repeated in place (h0, h0, h1, ...)."""
    if repeats == 1:
        return value
    batch, heads, length, size = shape_of(ctx, value)
    grown = emit_reshape(ctx, value, (batch, heads, 1, length, size))
    grown = ctx.emit("broadcast_to", [grown], {"shape": (batch, heads, repeats, length, size)})
    return emit_reshape(ctx, grown, (batch, heads * repeats, length, size))


# ----------------------------------------------------------------------------- Attention

_NEG_INF = -np.inf


def _additive(ctx: ConvertContext, allowed: str, dtype: str) -> str:
    """0 where `allowed`, -inf elsewhere."""
    return ctx.emit("where", [allowed, scalar(ctx, 0, dtype), scalar(ctx, _NEG_INF, dtype)])


def _mask_bias(ctx: ConvertContext, kv_length: int, dtype: str) -> str:
    """attn_mask (input 3) as an additive bias whose last axis covers all `kv_length` keys:
    booleans select 0 / -inf, floats add; a shorter mask is padded with masked keys."""
    mask = ctx.input(3)
    mask_type = ctx.type(3)
    if mask_type.rank == 0:
        ctx.fail("attn_mask must have rank >= 1, got a scalar")
    if mask_type.dtype == "bool":
        mask = _additive(ctx, mask, dtype)
    elif is_float(mask_type.dtype):
        mask = cast(ctx, mask, dtype)
    else:
        ctx.fail(f"attn_mask has dtype {mask_type.dtype}; Attention accepts bool or float masks")
    length = mask_type.shape[-1]
    if length > kv_length:
        ctx.fail(f"attn_mask covers {length} keys but there are only {kv_length} "
                 f"(past plus current)")
    if length < kv_length:
        fill = np.full((*mask_type.shape[:-1], kv_length - length), _NEG_INF, numpy_dtype(dtype))
        mask = ctx.emit("concat", [mask, ctx.constant(fill)], {"axis": mask_type.rank - 1})
    return mask


def _positions(q_length: int, kv_length: int, offset: int) -> np.ndarray:
    """(query position + offset) - key position, shape (q, kv)."""
    return (np.arange(q_length)[:, None] + offset) - np.arange(kv_length)[None, :]


def _window_allowed(diff: np.ndarray, causal: bool, left: int, right: int) -> np.ndarray:
    allowed = np.ones(diff.shape, bool)
    if causal:
        allowed &= diff >= 0
    if left >= 0:
        allowed &= diff <= left
    if right >= 0:
        allowed &= -diff <= right
    return allowed


def _position_bias(ctx: ConvertContext, q_length: int, kv_length: int, past: int, causal: bool,
                   left: int, right: int, dtype: str) -> str | None:
    """The causal and sliding-window bias. Bottom-right aligned: query i sits at position
    i + offset, with offset the number of keys before the query block (the past length, or per
    batch nonpad_kv_seqlen - q_length when nonpad_kv_seqlen is given)."""
    if not (causal or left >= 0 or right >= 0):
        return None
    if not ctx.has_input(6):
        allowed = _window_allowed(_positions(q_length, kv_length, past), causal, left, right)
        return ctx.constant(np.where(allowed, 0, _NEG_INF).astype(numpy_dtype(dtype)))
    # Per-batch offsets only known at run time: compare int64 positions in the graph.
    seqlen = cast(ctx, ctx.input(6), "int64")
    batch = math.prod(shape_of(ctx, seqlen))
    offset = ctx.emit("sub", [emit_reshape(ctx, seqlen, (batch, 1, 1, 1)),
                              ctx.constant(np.int64(q_length))])
    diff = ctx.emit("add", [offset, ctx.constant(_positions(q_length, kv_length, 0)
                                                 .reshape(1, 1, q_length, kv_length))])
    allowed = None
    tests = [("greater_equal", 0, causal), ("less_equal", left, left >= 0),
             ("greater_equal", -right, right >= 0)]
    for op, bound, active in tests:
        if active:
            test = ctx.emit(op, [diff, ctx.constant(np.int64(bound))])
            allowed = test if allowed is None else ctx.emit("logical_and", [allowed, test])
    return _additive(ctx, allowed, dtype)


def _padding_bias(ctx: ConvertContext, batch: int, kv_length: int, dtype: str) -> str:
    """Keys at or past nonpad_kv_seqlen[b] are masked: shape (B, 1, 1, kv)."""
    seqlen = emit_reshape(ctx, cast(ctx, ctx.input(6), "int64"), (batch, 1, 1, 1))
    keys = ctx.constant(np.arange(kv_length, dtype=np.int64).reshape(1, 1, 1, kv_length))
    return _additive(ctx, ctx.emit("less", [keys, seqlen]), dtype)


def _add_all(ctx: ConvertContext, terms: list[str | None]) -> str | None:
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else ctx.emit("add", [total, term])
    return total


def _softmax_dtype(ctx: ConvertContext, default: str) -> str:
    """The dtype softmax_precision names, else `default`."""
    precision = ctx.attr("softmax_precision", None)
    if precision is None:
        return default
    try:
        dtype = dtype_name(helper.tensor_dtype_to_np_dtype(int(precision)))
    except (KeyError, ValueError, TypeError):
        dtype = str(precision)
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        ctx.fail(f"softmax_precision {precision} is not supported; ember supports 1 (float), "
                 f"10 (float16), 11 (double), 16 (bfloat16)")
    return dtype


def _rows_fully_masked(ctx: ConvertContext, bias: str) -> str | None:
    """Boolean (..., q, 1): rows of `bias` where every key is masked, or None when the bias is
    a constant with no such row."""
    value = ctx.builder.constants.get(bias)
    if value is not None and not np.isneginf(value.max(axis=-1)).any():
        return None
    rank = len(shape_of(ctx, bias))
    row_max = ctx.emit("reduce_max", [bias], {"axes": (rank - 1,), "keepdims": True})
    dtype = ctx.builder.types[bias].dtype
    return ctx.emit("equal", [row_max, scalar(ctx, _NEG_INF, dtype)])


@converter("Attention", since=23)
def attention(ctx: ConvertContext) -> tuple[str, ...]:
    """Y = softmax(softcap(Q K^T * scale) + bias) V with optional KV cache, GQA and masks."""
    dtype = require_float(ctx, 0, "Q")
    require_float(ctx, 1, "K")
    require_float(ctx, 2, "V")
    ranks = {ctx.type(i).rank for i in range(3)}
    if len(ranks) != 1 or ranks.pop() not in (3, 4):
        ctx.fail(f"Q, K and V must all be 3-D or all 4-D, got shapes {ctx.type(0).shape}, "
                 f"{ctx.type(1).shape} and {ctx.type(2).shape}")
    rank = ctx.type(0).rank
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if rank == 3:
        if not (ctx.has_attr("q_num_heads") and ctx.has_attr("kv_num_heads")):
            ctx.fail("3-D inputs need the q_num_heads and kv_num_heads attributes")
        q_heads, kv_heads = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
        q = to_heads(ctx, q, q_heads, "Q")
        k = to_heads(ctx, k, kv_heads, "K")
        v = to_heads(ctx, v, kv_heads, "V")
    elif ctx.opset >= 25 and (ctx.has_attr("q_num_heads") or ctx.has_attr("kv_num_heads")):
        ctx.fail("q_num_heads and kv_num_heads must not be given for 4-D inputs (opset >= 25)")
    batch, q_heads, q_length, head_size = shape_of(ctx, q)
    kv_heads = shape_of(ctx, k)[1]
    if ctx.has_input(4) != ctx.has_input(5):
        ctx.fail("past_key and past_value must be given together")
    if ctx.has_input(6) and ctx.has_input(4):
        ctx.fail("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    past = 0
    if ctx.has_input(4):
        past = ctx.type(4).shape[2] if ctx.type(4).rank == 4 else -1
        if past < 0:
            ctx.fail(f"past_key must be 4-D (batch, heads, past, head_size), got "
                     f"{ctx.type(4).shape}")
        k = ctx.emit("concat", [ctx.input(4), k], {"axis": 2})
        v = ctx.emit("concat", [ctx.input(5), v], {"axis": 2})
    present_key, present_value = k, v
    kv_length = shape_of(ctx, k)[2]
    if kv_heads <= 0 or q_heads % kv_heads or shape_of(ctx, v)[1] != kv_heads:
        ctx.fail(f"{q_heads} query heads cannot share {kv_heads} key and "
                 f"{shape_of(ctx, v)[1]} value heads (query heads must be a multiple)")

    # Q and K are each scaled by sqrt(scale), rounded to the input dtype (ONNX's function body).
    scale = float(np.float32(ctx.attr("scale"))) if ctx.has_attr("scale") \
        else 1.0 / math.sqrt(head_size)
    root = ctx.constant(np.asarray(math.sqrt(scale)).astype(numpy_dtype(dtype)))
    q = ctx.emit("mul", [q, root])
    k = ctx.emit("mul", [repeat_heads(ctx, k, q_heads // kv_heads), root])
    v = cast(ctx, repeat_heads(ctx, v, q_heads // kv_heads), dtype)
    scores = ctx.emit("matmul", [q, ctx.emit("transpose", [k], {"perm": (0, 1, 3, 2)})])
    softcap = float_attr(ctx, "softcap", 0.0)
    if softcap > 0:
        cap = scalar(ctx, softcap, dtype)
        scores = ctx.emit("mul", [ctx.emit("tanh", [ctx.emit("div", [scores, cap])]), cap])
    capped = scores

    left = int(ctx.attr("left_window_size", -1))
    right = int(ctx.attr("right_window_size", -1))
    if left < -1 or right < -1:
        ctx.fail(f"window sizes must be -1 or non-negative, got left {left}, right {right}")
    bias = _add_all(ctx, [
        _mask_bias(ctx, kv_length, dtype) if ctx.has_input(3) else None,
        _position_bias(ctx, q_length, kv_length, past, bool(ctx.attr("is_causal", 0)), left,
                       right, dtype),
        _padding_bias(ctx, batch, kv_length, dtype) if ctx.has_input(6) else None,
    ])
    if bias is not None:
        scores = ctx.emit("add", [scores, bias])

    probs_dtype = _softmax_dtype(ctx, dtype)
    probs = emit_softmax(ctx, cast(ctx, scores, probs_dtype), 3)
    probs = cast(ctx, probs, dtype)
    masked_rows = _rows_fully_masked(ctx, bias) if bias is not None else None
    if masked_rows is not None:
        # A row with every key masked has no attendable key: its probabilities are 0, not the
        # NaN a softmax of all -inf gives (decided on the bias, so NaN logits cannot leak).
        probs = ctx.emit("where", [masked_rows, scalar(ctx, 0, dtype), probs])
    y = ctx.emit("matmul", [probs, v])
    if rank == 3:
        y = from_heads(ctx, y)
    results = [cast(ctx, y, dtype), present_key, present_value]
    if wants_output(ctx, 3):
        mode = int(ctx.attr("qk_matmul_output_mode", 0))
        # Mode 0, the "raw" product, is taken after softcap as in ONNX's reference and
        # function body; modes 2 and 3 include the bias and the fully-masked-row guard.
        chosen = {0: capped, 1: capped, 2: scores, 3: probs}.get(mode)
        if chosen is None:
            ctx.fail(f"qk_matmul_output_mode {mode} is not supported; ember supports 0, 1, 2, 3")
        full = (batch, q_heads, q_length, kv_length)
        if shape_of(ctx, chosen) != full:
            chosen = ctx.emit("broadcast_to", [chosen], {"shape": full})
        results.append(cast(ctx, chosen, dtype))
    return tuple(results)


# ----------------------------------------------------------------------------- FlexAttention


def inline_graph(ctx: ConvertContext, graph: onnx.GraphProto, inputs: list[str]) -> str:
    """Convert a one-output graph attribute (FlexAttention's score_mod / prob_mod) in place,
    its inputs bound to `inputs`; outer-scope names resolve to the enclosing graph's values.
    Its nodes convert at the newest opset onnx knows (the enclosing model's default-domain
    opset is not visible to a converter)."""
    if len(graph.input) != len(inputs) or len(graph.output) != 1:
        ctx.fail(f"graph attribute {graph.name!r} must take {len(inputs)} input(s) and give 1 "
                 f"output, it has {len(graph.input)} and {len(graph.output)}")
    local: dict[str, str] = {v.name: value for v, value in zip(graph.input, inputs)}
    env = collections.ChainMap(local, ctx._env)
    for init in graph.initializer:
        local[init.name] = ctx.constant(numpy_helper.to_array(init))
    for node in graph.node:
        opset = onnx.defs.onnx_opset_version() if node.domain in ("", "ai.onnx") else 1
        convert = find_converter(node.domain, node.op_type, opset)
        if convert is None:
            ctx.fail(f"graph attribute {graph.name!r} uses {node.op_type}, which ember does "
                     f"not convert")
        inner = ConvertContext(ctx.builder, env, node, opset)
        try:
            results = convert(inner)
        except (ShapeError, IRError) as error:
            inner.fail(str(error))
        results = (results,) if isinstance(results, str) else tuple(results)
        for name, value in zip(node.output, results):
            if name:
                local[name] = value
    out = graph.output[0].name
    if out not in env:
        ctx.fail(f"graph attribute {graph.name!r} does not produce its output {out!r}")
    return env[out]


@converter("FlexAttention", since=1, domain="ai.onnx.preview")
def flex_attention(ctx: ConvertContext) -> str:
    """softmax(score_mod(Q K^T * scale)) V, then prob_mod on the probabilities; the mods are
    graph attributes converted in place. Scores are in float32 for half-precision inputs (or
    in softmax_precision)."""
    dtype = require_float(ctx, 0, "Q")
    shapes = [ctx.type(i).shape for i in range(3)]
    if any(len(s) != 4 for s in shapes):
        ctx.fail(f"Q, K and V must be 4-D, got {shapes[0]}, {shapes[1]} and {shapes[2]}")
    (_, q_heads, _, size), (_, kv_heads, length, k_size) = shapes[0], shapes[1]
    if k_size != size or shapes[2][1] != kv_heads or shapes[2][2] != length:
        ctx.fail(f"K {shapes[1]} and V {shapes[2]} do not fit Q {shapes[0]}")
    if q_heads % kv_heads:
        ctx.fail(f"{q_heads} query heads are not a multiple of {kv_heads} key/value heads")
    scale = float(np.float32(ctx.attr("scale"))) if ctx.has_attr("scale") \
        else float(np.float32(1.0 / math.sqrt(size)))
    root = ctx.constant(np.asarray(np.sqrt(np.float32(scale))).astype(numpy_dtype(dtype)))
    repeats = q_heads // kv_heads
    q = ctx.emit("mul", [ctx.input(0), root])
    k = ctx.emit("mul", [repeat_heads(ctx, ctx.input(1), repeats), root])
    scores = ctx.emit("matmul", [q, ctx.emit("transpose", [k], {"perm": (0, 1, 3, 2)})])
    work = _softmax_dtype(ctx, "float32" if dtype in _HALF else dtype)
    scores = cast(ctx, scores, work)
    if ctx.has_attr("score_mod"):
        scores = cast(ctx, inline_graph(ctx, ctx.attr("score_mod"), [scores]), work)
    probs = emit_softmax(ctx, scores, 3)
    if ctx.has_attr("prob_mod"):
        probs = cast(ctx, inline_graph(ctx, ctx.attr("prob_mod"), [probs]), work)
    v = cast(ctx, repeat_heads(ctx, ctx.input(2), repeats), work)
    return cast(ctx, ctx.emit("matmul", [probs, v]), ctx.type(2).dtype)


# ----------------------------------------------------------------------------- RotaryEmbedding


@converter("RotaryEmbedding", since=23)
def rotary_embedding(ctx: ConvertContext) -> str:
    """Rotate pairs of each head's first rotary_embedding_dim features by cos/sin caches
    indexed by position: halves (x[:d/2], x[d/2:]) or, interleaved, (x[0::2], x[1::2]).
    4-D inputs (B, H, S, D) are rotated in place, 3-D (B, S, H * D) as (B, S, H, D)."""
    require_float(ctx, 0, "X")
    x_type = ctx.type(0)
    if x_type.rank == 4:
        batch, heads, length, head_size = x_type.shape
        x = ctx.input(0)
    elif x_type.rank == 3:
        batch, length, hidden = x_type.shape
        heads = int(ctx.attr("num_heads", 0))
        if heads <= 0 or hidden % heads:
            ctx.fail(f"3-D input needs num_heads dividing its hidden size {hidden}, "
                     f"got num_heads={heads}")
        head_size = hidden // heads
        x = emit_reshape(ctx, ctx.input(0), (batch, length, heads, head_size))
    else:
        ctx.fail(f"input must be 3-D or 4-D, got shape {x_type.shape}")
    dim = int(ctx.attr("rotary_embedding_dim", 0)) or head_size
    if dim > head_size or dim % 2:
        ctx.fail(f"rotary_embedding_dim {dim} must be even and at most the head size {head_size}")
    half = dim // 2
    caches = [ctx.input(1), ctx.input(2)]
    if ctx.has_input(3):
        caches = [ctx.emit("gather", [c, ctx.input(3)], {"axis": 0}) for c in caches]
    for name, cache in zip(("cos_cache", "sin_cache"), caches):
        shape = shape_of(ctx, cache)
        if shape[-1] != half:
            ctx.fail(f"{name} has {shape[-1]} features, expected rotary_embedding_dim / 2 = "
                     f"{half}")
        if shape[-2] != length:
            ctx.fail(f"{name} covers {shape[-2]} positions for a sequence of {length}")
    # Caches (B or 1, S, half) broadcast over the heads axis of x's layout.
    cache_batch = shape_of(ctx, caches[0])[0] if len(shape_of(ctx, caches[0])) == 3 else 1
    broadcast = (cache_batch, 1, length, half) if x_type.rank == 4 \
        else (cache_batch, length, 1, half)
    cos, sin = (emit_reshape(ctx, c, broadcast) for c in caches)

    lead = shape_of(ctx, x)[:3]
    rotate = emit_slice(ctx, x, {3: (0, dim, 1)}) if dim < head_size else x
    interleaved = bool(ctx.attr("interleaved", 0))
    if interleaved:
        pairs = emit_reshape(ctx, rotate, (*lead, half, 2))
        x1, x2 = (emit_reshape(ctx, emit_slice(ctx, pairs, {4: (k, k + 1, 1)}), (*lead, half))
                  for k in (0, 1))
    else:
        x1 = emit_slice(ctx, rotate, {3: (0, half, 1)})
        x2 = emit_slice(ctx, rotate, {3: (half, dim, 1)})
    real = ctx.emit("sub", [ctx.emit("mul", [cos, x1]), ctx.emit("mul", [sin, x2])])
    imag = ctx.emit("add", [ctx.emit("mul", [sin, x1]), ctx.emit("mul", [cos, x2])])
    if interleaved:
        parts = [emit_reshape(ctx, v, (*lead, half, 1)) for v in (real, imag)]
        rotated = emit_reshape(ctx, ctx.emit("concat", parts, {"axis": 4}), (*lead, dim))
    else:
        rotated = ctx.emit("concat", [real, imag], {"axis": 3})
    if dim < head_size:
        rest = emit_slice(ctx, x, {3: (dim, head_size, 1)})
        rotated = ctx.emit("concat", [rotated, rest], {"axis": 3})
    return rotated if x_type.rank == 4 else emit_reshape(ctx, rotated, x_type.shape)


# ----------------------------------------------------------------------------- Swish, SwiGLU


def _swish(ctx: ConvertContext, x: str, alpha: float, dtype: str) -> str:
    """x * sigmoid(alpha * x), the sigmoid rounded to the input dtype as ONNX's reference
    does."""
    gate = x if alpha == 1.0 else ctx.emit("mul", [x, scalar(ctx, alpha, dtype)])
    return ctx.emit("mul", [x, ctx.emit("sigmoid", [gate])])


@converter("Swish", since=24)
def swish(ctx: ConvertContext) -> str:
    dtype = require_float(ctx, 0, "X")
    return _swish(ctx, ctx.input(0), float_attr(ctx, "alpha", 1.0), dtype)


@converter("SwiGLU", since=28)
def swiglu(ctx: ConvertContext) -> str:
    """Swish(A, alpha) * B for A and B of one shape and dtype."""
    dtype = require_float(ctx, 0, "A")
    if ctx.type(1).shape != ctx.type(0).shape or ctx.type(1).dtype != dtype:
        ctx.fail(f"A and B must have the same shape and dtype, got {ctx.type(0)} and "
                 f"{ctx.type(1)}")
    gated = _swish(ctx, ctx.input(0), float_attr(ctx, "alpha", 1.0), dtype)
    return ctx.emit("mul", [gated, ctx.input(1)])


# ----------------------------------------------------------------------------- TensorScatter


@converter("TensorScatter", since=24)
def tensor_scatter(ctx: ConvertContext) -> str:
    """Write `update` into `past_cache` along `axis` from write_indices[b] on (per batch),
    linearly or wrapping around. Each cache position p of batch b reads update position
    p - write_indices[b] (mod the cache length when circular) where that lies in the update,
    so the indices may be run-time values."""
    cache_type, update_type = ctx.type(0), ctx.type(1)
    rank = cache_type.rank
    if update_type.rank != rank or update_type.dtype != cache_type.dtype:
        ctx.fail(f"update {update_type} does not match past_cache {cache_type}")
    axis = onnx_axis(ctx, int(ctx.attr("axis", -2)), rank)
    if axis == 0:
        ctx.fail("axis must not be 0 (the batch axis)")
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        ctx.fail(f"mode {mode!r} is not supported; ember supports 'linear', 'circular'")
    capacity, length = cache_type.shape[axis], update_type.shape[axis]
    for i, (c, u) in enumerate(zip(cache_type.shape, update_type.shape)):
        if (i != axis and c != u) or (i == axis and u > c):
            ctx.fail(f"update shape {update_type.shape} does not fit past_cache shape "
                     f"{cache_type.shape} along axis {i}")
    if length == 0:
        return ctx.emit("identity", [ctx.input(0)])
    batch = cache_type.shape[0]
    # (B, 1, .., capacity, 1, ..): positions along `axis`, batch on axis 0.
    index_shape = [1] * rank
    index_shape[0], index_shape[axis] = batch, capacity
    positions = ctx.constant(np.arange(capacity, dtype=np.int64).reshape(
        [capacity if i == axis else 1 for i in range(rank)]))
    if ctx.has_input(2):
        starts = emit_reshape(ctx, cast(ctx, ctx.input(2), "int64"),
                              [batch if i == 0 else 1 for i in range(rank)])
        offset = ctx.emit("sub", [positions, starts])
    else:
        offset = ctx.emit("broadcast_to", [positions], {"shape": tuple(index_shape)})
    if mode == "circular":
        offset = ctx.emit("mod", [offset, ctx.constant(np.int64(capacity))])
    inside = ctx.emit("logical_and", [
        ctx.emit("greater_equal", [offset, ctx.constant(np.int64(0))]),
        ctx.emit("less", [offset, ctx.constant(np.int64(length))]),
    ])
    index = ctx.emit("clip", [offset], {"min": 0, "max": length - 1})
    index = ctx.emit("broadcast_to", [index], {"shape": tuple(
        capacity if i == axis else d for i, d in enumerate(update_type.shape))})
    moved = ctx.emit("gather_elements", [ctx.input(1), index], {"axis": axis})
    return ctx.emit("where", [inside, moved, ctx.input(0)])

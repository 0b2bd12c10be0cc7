"""The attention-family ONNX converters (compiler/frontend/onnx/attention.py): Attention,
RotaryEmbedding, Swish, SwiGLU, TensorScatter and FlexAttention, compiled for llvm and checked
against onnx's reference evaluator, plus the error messages for bad attributes and shapes."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support import assert_values_match, check_node, node_model, onnx_reference

import ember


def rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def attention(inputs, attrs, outputs=1, opset=23, **kwargs):
    return check_node("Attention", inputs, attrs, outputs=outputs, opset=opset, target="llvm",
                      **kwargs)


def qkv(batch=2, q_heads=4, kv_heads=4, q_len=3, kv_len=5, size=8, v_size=8, rank=4, seed=0):
    """Q, K, V as 4-D (B, H, S, D) or 3-D (B, S, H * D) arrays."""
    if rank == 4:
        shapes = [(batch, q_heads, q_len, size), (batch, kv_heads, kv_len, size),
                  (batch, kv_heads, kv_len, v_size)]
    else:
        shapes = [(batch, q_len, q_heads * size), (batch, kv_len, kv_heads * size),
                  (batch, kv_len, kv_heads * v_size)]
    return [(name, rand(shape, seed=seed + i)) for i, (name, shape) in
            enumerate(zip("QKV", shapes))]


def fails(op_type, inputs, attrs, message, outputs=1, opset=23, domain=""):
    """Compiling the one-node model raises a FrontendError matching `message`."""
    model = node_model(op_type, inputs, attrs, outputs=outputs, opset=opset, domain=domain)
    for value in model.graph.output:  # typed outputs of unknown shape: valid ONNX
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        value.type.tensor_type.shape.SetInParent()
    with pytest.raises(ember.FrontendError, match=message):
        ember.compile(model, target="reference")


# ----------------------------------------------------------------------------- Attention


@pytest.mark.parametrize("rank,q_heads,kv_heads,attrs", [
    (4, 4, 4, {}),
    (4, 4, 2, {"is_causal": 1, "scale": 0.3}),
    (3, 4, 1, {"softcap": 2.0}),
    (3, 6, 2, {"is_causal": 1}),
])
def test_attention_heads(rank, q_heads, kv_heads, attrs):
    if rank == 3:
        attrs = {**attrs, "q_num_heads": q_heads, "kv_num_heads": kv_heads}
    attention(qkv(q_heads=q_heads, kv_heads=kv_heads, rank=rank, v_size=6), attrs)


@pytest.mark.parametrize("mask_shape,dtype", [
    ((3, 5), "bool"), ((1, 4, 3, 5), "float32"), ((2, 1, 3, 4), "bool"), ((5,), "float32"),
])
def test_attention_masks(mask_shape, dtype):
    rng = np.random.default_rng(1)
    mask = rng.random(mask_shape) > 0.3 if dtype == "bool" else rand(mask_shape, seed=1)
    attention([*qkv(), ("attn_mask", mask)], {})


def test_attention_past_and_present_gqa_causal_mask():
    inputs = [*qkv(q_heads=4, kv_heads=2, q_len=2, kv_len=2),
              ("attn_mask", np.random.default_rng(2).random((2, 5)) > 0.2),
              ("past_key", rand((2, 2, 3, 8), seed=5)), ("past_value", rand((2, 2, 3, 8), seed=6))]
    attention(inputs, {"is_causal": 1}, outputs=3)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_matmul_output(mode):
    inputs = [*qkv(), ("attn_mask", rand((3, 5), seed=3)),
              ("past_key", None), ("past_value", None)]
    attention(inputs, {"qk_matmul_output_mode": mode, "softcap": 3.0}, outputs=4)


def test_attention_fully_masked_row_is_zero():
    mask = np.ones((3, 5), bool)
    mask[1] = False
    out = attention([*qkv(), ("attn_mask", mask)], {})[0]
    assert np.all(out[:, :, 1] == 0)


def test_attention_nonpad_kv_seqlen_causal():
    inputs = [*qkv(q_len=2, kv_len=6), ("attn_mask", None), ("past_key", None),
              ("past_value", None), ("nonpad_kv_seqlen", np.array([4, 6], np.int64))]
    attention(inputs, {"is_causal": 1}, opset=24)


@pytest.mark.parametrize("left,right,causal", [(1, -1, 1), (2, 1, 0)])
def test_attention_sliding_window(left, right, causal):
    attention(qkv(q_len=5, kv_len=5), {"left_window_size": left, "right_window_size": right,
                                       "is_causal": causal}, opset=25)


def test_attention_float16_softmax_precision():
    inputs = [(n, a.astype(np.float16)) for n, a in qkv()]
    attention(inputs, {"softmax_precision": TensorProto.FLOAT}, opset=24)


@pytest.mark.parametrize("attrs,inputs,message", [
    ({}, qkv(rank=3), "3-D inputs need the q_num_heads and kv_num_heads"),
    ({"q_num_heads": 3, "kv_num_heads": 2}, qkv(rank=3, q_heads=3, kv_heads=2),
     "query heads cannot share"),
    ({"qk_matmul_output_mode": 7}, qkv(), "qk_matmul_output_mode 7 is not supported"),
    ({}, [*qkv(), ("attn_mask", None), ("past_key", rand((2, 4, 1, 8)))],
     "past_key and past_value must be given together"),
])
def test_attention_errors(attrs, inputs, message):
    fails("Attention", inputs, attrs, message,
          outputs=4 if "qk_matmul_output_mode" in attrs else 1)


# ----------------------------------------------------------------------------- RotaryEmbedding


def rope_caches(positions, half, seed=7):
    angles = np.random.default_rng(seed).random((positions, half)).astype(np.float32) * 3
    return np.cos(angles), np.sin(angles)


@pytest.mark.parametrize("rank,interleaved,dim,with_ids", [
    (4, 0, 0, True), (4, 1, 4, False), (3, 0, 4, False), (3, 1, 0, True),
])
def test_rotary_embedding(rank, interleaved, dim, with_ids):
    batch, heads, length, size = 2, 3, 4, 8
    x = rand((batch, heads, length, size) if rank == 4 else (batch, length, heads * size))
    half = (dim or size) // 2
    if with_ids:
        cos, sin = rope_caches(10, half)
        ids = np.array([[0, 1, 2, 3], [5, 6, 7, 9]], np.int64)
    else:
        cos, sin = (np.broadcast_to(c, (batch, length, half)).copy()
                    for c in rope_caches(length, half))
        ids = None
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": dim}
    if rank == 3:
        attrs["num_heads"] = heads
    check_node("RotaryEmbedding", [("X", x), ("cos", cos), ("sin", sin), ("ids", ids)], attrs,
               opset=23, target="llvm")


def test_rotary_embedding_odd_dim_fails():
    cos, sin = rope_caches(4, 2)
    fails("RotaryEmbedding", [("X", rand((1, 2, 4, 8))), ("cos", cos[None]), ("sin", sin[None])],
          {"rotary_embedding_dim": 5}, "rotary_embedding_dim 5 must be even")


# ----------------------------------------------------------------------------- Swish, SwiGLU


@pytest.mark.parametrize("alpha,dtype", [(1.0, "float32"), (1.7, "float16")])
def test_swish_and_swiglu(alpha, dtype):
    a, b = rand((3, 10), dtype), rand((3, 10), dtype, seed=1)
    check_node("Swish", [("x", a)], {"alpha": alpha}, opset=24, target="llvm")
    check_node("SwiGLU", [("a", a), ("b", b)], {"alpha": alpha}, opset=28, target="llvm")


def test_swiglu_shape_mismatch_fails():
    fails("SwiGLU", [("a", rand((3, 4))), ("b", rand((3, 1)))], {},
          "A and B must have the same shape", opset=28)


# ----------------------------------------------------------------------------- TensorScatter


@pytest.mark.parametrize("mode,axis,indices", [
    ("linear", -2, [1, 0]), ("circular", -2, [3, 4]), ("linear", 1, None),
])
def test_tensor_scatter(mode, axis, indices):
    cache, update = rand((2, 3, 5, 4)), rand((2, 3, 2, 4), seed=1)
    if axis == 1:
        cache, update = rand((2, 5, 4)), rand((2, 3, 4), seed=1)
    inputs = [("cache", cache), ("update", update),
              ("indices", None if indices is None else np.array(indices, np.int64))]
    check_node("TensorScatter", inputs, {"mode": mode, "axis": axis}, opset=24, target="llvm")


def test_tensor_scatter_batch_axis_fails():
    fails("TensorScatter", [("cache", rand((2, 3))), ("update", rand((1, 3)))], {"axis": 0},
          "axis must not be 0", opset=24)


# ----------------------------------------------------------------------------- FlexAttention


def _score_mod_causal() -> onnx.GraphProto:
    """score_mod: scores where query index >= key index, else -inf (shapes from constants)."""
    q_idx = helper.make_tensor("q_idx", TensorProto.INT64, [1, 1, 3, 1], [0, 1, 2])
    k_idx = helper.make_tensor("k_idx", TensorProto.INT64, [1, 1, 1, 5], [0, 1, 2, 3, 4])
    neg = helper.make_tensor("neg", TensorProto.FLOAT, [], [-np.inf])
    nodes = [helper.make_node("GreaterOrEqual", ["q_idx", "k_idx"], ["mask"]),
             helper.make_node("Where", ["mask", "s", "neg"], ["s_out"])]
    return helper.make_graph(
        nodes, "causal", [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)],
        [q_idx, k_idx, neg])


@pytest.mark.parametrize("kv_heads,mod", [(4, False), (2, True)])
def test_flex_attention(kv_heads, mod):
    inputs = qkv(q_heads=4, kv_heads=kv_heads)
    attrs = {"score_mod": _score_mod_causal()} if mod else {"scale": 0.5}
    feeds = dict(inputs)
    probe = node_model("FlexAttention", inputs, attrs, opset=26, domain="ai.onnx.preview")
    expected = onnx_reference(probe, feeds)
    model = node_model("FlexAttention", inputs, attrs, opset=26, domain="ai.onnx.preview",
                       output_arrays=expected)
    got = ember.compile(model, target="llvm").run(feeds)
    assert_values_match(got[0], expected[0], None, None, "FlexAttention")


# ----------------------------------------------------------------------------- a Llama block


def test_llama_style_gqa_attention_with_rope():
    """RoPE on Q and K, then causal grouped-query attention over a KV cache, 3-D packed."""
    batch, length, past, q_heads, kv_heads, size = 1, 4, 3, 4, 2, 8
    cos, sin = rope_caches(16, size // 2)
    feeds = {
        "q": rand((batch, length, q_heads * size), seed=1),
        "k": rand((batch, length, kv_heads * size), seed=2),
        "v": rand((batch, length, kv_heads * size), seed=3),
        "pos": (past + np.arange(length, dtype=np.int64))[None],
        "past_k": rand((batch, kv_heads, past, size), seed=4),
        "past_v": rand((batch, kv_heads, past, size), seed=5),
    }
    nodes = [
        helper.make_node("RotaryEmbedding", ["q", "cos", "sin", "pos"], ["q_rot"],
                         num_heads=q_heads),
        helper.make_node("RotaryEmbedding", ["k", "cos", "sin", "pos"], ["k_rot"],
                         num_heads=kv_heads),
        helper.make_node("Attention", ["q_rot", "k_rot", "v", "", "past_k", "past_v"],
                         ["y", "present_k", "present_v"], is_causal=1, q_num_heads=q_heads,
                         kv_num_heads=kv_heads),
    ]
    inits = [onnx.numpy_helper.from_array(cos, "cos"), onnx.numpy_helper.from_array(sin, "sin")]
    graph = helper.make_graph(
        nodes, "llama_attention",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in feeds.items()],
        [helper.make_empty_tensor_value_info(n) for n in ("y", "present_k", "present_v")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=8)
    expected = onnx_reference(model, feeds)
    for value, ref in zip(model.graph.output, expected):
        value.CopyFrom(helper.make_tensor_value_info(value.name, TensorProto.FLOAT, ref.shape))
    got = ember.compile(model, target="llvm").run(feeds)
    for out, ref, name in zip(got, expected, ("y", "present_k", "present_v")):
        assert out.shape == ref.shape
        assert_values_match(out, ref, None, None, name)

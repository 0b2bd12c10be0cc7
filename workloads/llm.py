"""LLM workload models: GPT-2-style and Llama-style decoders as ONNX, prefill and decode graphs.

Each model comes as two static-shape graphs that share weights (same names, same values for
the same `LLMConfig`), the two compiled phases of LLM serving:

- prefill: `input_ids` int64 [batch, chunk], `start` int64 [batch] (position of the chunk's
  first token in each sequence), the caches `past_key` / `past_value` float32
  [layers, batch, kv_heads, max_len, head_dim]  ->  `logits` [batch, chunk, vocab],
  `present_key` / `present_value` (the caches with this chunk written at start .. start+chunk-1).
- decode: `input_ids` int64 [batch, 1], the caches as above, `valid_lengths` int64 [batch]
  (tokens already in each sequence's cache)  ->  `logits` [batch, vocab] and the caches with
  the new token's key/value written at position valid_length.

KV cache layout (`LLMConfig.per_layer_cache`): by default one tensor for keys and one for
values holding every layer ([layers, batch, kv_heads, max_len, head_dim]), so a serving engine
moves two arrays per batch; layer i reads `Gather(past, i, axis=0)` and the present cache is the
per-layer results concatenated back. With `per_layer_cache=True` the caches are one tensor per
layer instead (`past_key_0`, `past_value_0`, `past_key_1`, ... each [batch, kv_heads, max_len,
head_dim], and `present_*` likewise), which saves that Gather and Concat: for GPT-2-small
decode they copy the whole cache twice per step. `LLMConfig.cache_names("past")` lists the
cache inputs in graph order. Cache writes are ScatterElements along the position axis. A query
at position p attends to keys at positions <= p (the causal mask over the whole fixed-length
cache, written LessOrEqual/Where), so stale or garbage entries beyond a sequence's length are
never read, and decode is prefill of a one-token chunk at start = valid_length.

The graphs are written the way PyTorch exporters write them (opset 17): GPT-2 with learned
positions, LayerNormalization, a fused QKV MatMul+Add, tanh-approximated Gelu and logits tied
to the token embedding; Llama with RMSNorm as Pow/ReduceMean/Add/Sqrt/Div, rotary embeddings
from Sin/Cos of the positions with rotate-half as Slice/Neg/Concat, a SwiGLU MLP, grouped KV
heads repeated by Unsqueeze/Expand/Reshape and no biases. Weights are seeded random numbers
(`numpy.random.default_rng(config.seed)`), so nothing is downloaded.

The models register into the zoo (`ember.workloads.zoo`) as `<config>-prefill` and
`<config>-decode` for the configurations in `CONFIGS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ember.workloads.zoo import register

OPSET = 17
# Masked attention scores: large and finite, so no inf - inf turns into NaN anywhere.
MASKED_SCORE = -1e9
ARCHS = ("gpt2", "llama")


@dataclass(frozen=True)
class LLMConfig:
    """Size and shape of one decoder model and of its two compiled graphs.

    Args:
        arch: "gpt2" or "llama".
        vocab, d_model, heads, kv_heads, layers, ffn: the transformer's sizes (kv_heads <
            heads gives grouped-query attention; heads must be a multiple of kv_heads).
        max_len: positions in the KV cache (and GPT-2's learned position table).
        chunk: tokens per prefill call.
        batch: sequences per call (prefill and decode share the cache shape).
        norm_eps: epsilon of LayerNorm / RMSNorm.
        rope_theta: base of the rotary frequencies (Llama).
        seed: seed of the random weights.
        per_layer_cache: one cache tensor per layer instead of one for all layers.
    """

    arch: str
    vocab: int
    d_model: int
    heads: int
    kv_heads: int
    layers: int
    ffn: int
    max_len: int
    chunk: int
    batch: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    seed: int = 0
    per_layer_cache: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if self.arch == "llama" and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, not {self.head_dim}")
        if not 1 <= self.chunk <= self.max_len:
            raise ValueError(f"chunk {self.chunk} must be in 1..max_len {self.max_len}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def replace(self, **changes) -> LLMConfig:
        return dataclasses.replace(self, **changes)

    def cache_shape(self) -> tuple[int, ...]:
        """Shape of one cache tensor: [layers, batch, kv_heads, max_len, head_dim], without the
        leading layers axis when `per_layer_cache`."""
        shape = (self.batch, self.kv_heads, self.max_len, self.head_dim)
        return shape if self.per_layer_cache else (self.layers, *shape)

    def cache_names(self, prefix: str) -> list[str]:
        """Names of the cache inputs (prefix "past") or outputs ("present"), in graph order:
        key then value, per layer when `per_layer_cache`."""
        if not self.per_layer_cache:
            return [f"{prefix}_key", f"{prefix}_value"]
        return [f"{prefix}_{kind}_{layer}" for layer in range(self.layers)
                for kind in ("key", "value")]

    def empty_cache(self) -> dict[str, np.ndarray]:
        """Zeroed caches for a fresh batch of sequences, by input name."""
        return {name: np.zeros(self.cache_shape(), np.float32)
                for name in self.cache_names("past")}

    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in _weight_shapes(self).values())


CONFIGS: dict[str, LLMConfig] = {
    "gpt2-tiny": LLMConfig("gpt2", vocab=256, d_model=64, heads=4, kv_heads=4, layers=2,
                           ffn=256, max_len=64, chunk=16, batch=2),
    "llama-tiny": LLMConfig("llama", vocab=256, d_model=64, heads=4, kv_heads=2, layers=2,
                            ffn=172, max_len=64, chunk=16, batch=2, norm_eps=1e-6),
    # GPT-2 small's sizes (124M parameters).
    "gpt2-small": LLMConfig("gpt2", vocab=50257, d_model=768, heads=12, kv_heads=12, layers=12,
                            ffn=3072, max_len=1024, chunk=128, batch=1),
    # A Llama-architecture model of about the same size, with grouped KV heads.
    "llama-small": LLMConfig("llama", vocab=32000, d_model=768, heads=12, kv_heads=4, layers=12,
                             ffn=2048, max_len=1024, chunk=128, batch=1, norm_eps=1e-6),
}


# ----------------------------------------------------------------------------- weights


def _weight_shapes(config: LLMConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of every weight, in generation order (which fixes the values)."""
    d, f, v = config.d_model, config.ffn, config.vocab
    q_dim, kv_dim = config.heads * config.head_dim, config.kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"wte": (v, d)}
    if config.arch == "gpt2":
        shapes["wpe"] = (config.max_len, d)
    for layer in range(config.layers):
        p = f"h{layer}."
        if config.arch == "gpt2":
            shapes.update({
                p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
                p + "attn.c_attn.weight": (d, q_dim + 2 * kv_dim),
                p + "attn.c_attn.bias": (q_dim + 2 * kv_dim,),
                p + "attn.c_proj.weight": (q_dim, d), p + "attn.c_proj.bias": (d,),
                p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                p + "mlp.c_fc.weight": (d, f), p + "mlp.c_fc.bias": (f,),
                p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,),
            })
        else:
            shapes.update({
                p + "input_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (d, q_dim),
                p + "self_attn.k_proj.weight": (d, kv_dim),
                p + "self_attn.v_proj.weight": (d, kv_dim),
                p + "self_attn.o_proj.weight": (q_dim, d),
                p + "post_attention_layernorm.weight": (d,),
                p + "mlp.gate_proj.weight": (d, f),
                p + "mlp.up_proj.weight": (d, f),
                p + "mlp.down_proj.weight": (f, d),
            })
    if config.arch == "gpt2":
        shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,)})
    else:
        shapes.update({"norm.weight": (d,), "lm_head.weight": (d, v)})
    return shapes


def make_weights(config: LLMConfig) -> dict[str, np.ndarray]:
    """Seeded random float32 weights (uniform, GPT-2's 0.02 standard deviation for matrices;
    norm scales near 1 and small biases, so a wrong norm or bias shows in the outputs)."""
    rng = np.random.default_rng(config.seed)
    weights = {}
    for name, shape in _weight_shapes(config).items():
        # Uniform in [-a, a] has standard deviation a / sqrt(3); uniform is several times
        # faster to draw than normal, which matters for 124M parameters.
        if len(shape) == 1 and name.endswith("weight"):
            center, half_width = 1.0, 0.1
        elif len(shape) == 1:
            center, half_width = 0.0, 0.02
        else:
            center, half_width = 0.0, 0.02 * math.sqrt(3.0)
        values = rng.random(shape, dtype=np.float32)
        # In place: two passes over 124M floats instead of four temporaries.
        values *= np.float32(2.0 * half_width)
        values += np.float32(center - half_width)
        weights[name] = values
    return weights


# ----------------------------------------------------------------------------- graph writing


class _GraphWriter:
    """Accumulates nodes and initializers; `op()` names each output uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        """Add a one-output node; returns the output's name (`name` when given)."""
        return self.op_multi(op_type, inputs, 1, name, **attrs)[0]

    def op_multi(self, op_type: str, inputs: list[str], outputs: int, name: str | None = None,
                 **attrs) -> list[str]:
        self._count += 1
        base = name or f"{op_type.lower()}_{self._count}"
        names = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{base}_node",
                                           **attrs))
        return names

    def const(self, value, dtype=np.int64) -> str:
        self._count += 1
        name = f"const_{self._count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name


def _layer_norm(g: _GraphWriter, x: str, weight: str, bias: str, eps: float) -> str:
    return g.op("LayerNormalization", [x, weight, bias], axis=-1, epsilon=eps)


def _rms_norm(g: _GraphWriter, x: str, weight: str, eps: float) -> str:
    """x / sqrt(mean(x^2) + eps) * weight, as exporters write Llama's RMSNorm."""
    square = g.op("Pow", [x, g.const(2.0, np.float32)])
    mean = g.op("ReduceMean", [square], axes=[-1], keepdims=1)
    root = g.op("Sqrt", [g.op("Add", [mean, g.const(eps, np.float32)])])
    return g.op("Mul", [g.op("Div", [x, root]), weight])


def _gelu_tanh(g: _GraphWriter, x: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GPT-2's gelu_new as exported."""
    cube = g.op("Pow", [x, g.const(3.0, np.float32)])
    inner = g.op("Add", [x, g.op("Mul", [cube, g.const(0.044715, np.float32)])])
    scaled = g.op("Mul", [inner, g.const(math.sqrt(2.0 / math.pi), np.float32)])
    one_plus = g.op("Add", [g.op("Tanh", [scaled]), g.const(1.0, np.float32)])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5, np.float32)]), one_plus])


def _heads(g: _GraphWriter, x: str, config: LLMConfig, chunk: int, heads: int) -> str:
    """[batch, chunk, heads * head_dim] -> [batch, heads, chunk, head_dim]."""
    shape = g.const([config.batch, chunk, heads, config.head_dim])
    return g.op("Transpose", [g.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _rotate(g: _GraphWriter, x: str, cos: str, sin: str, half: int) -> str:
    """Rotary embedding: x * cos + rotate_half(x) * sin, rotate_half = concat(-x2, x1)."""
    axis = g.const([-1])
    first = g.op("Slice", [x, g.const([0]), g.const([half]), axis])
    second = g.op("Slice", [x, g.const([half]), g.const([2 * half]), axis])
    rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])


def _repeat_kv(g: _GraphWriter, x: str, config: LLMConfig) -> str:
    """[batch, kv_heads, max_len, head_dim] -> [batch, heads, max_len, head_dim]."""
    repeat = config.heads // config.kv_heads
    if repeat == 1:
        return x
    b, kv, t, dh = config.batch, config.kv_heads, config.max_len, config.head_dim
    expanded = g.op("Expand", [g.op("Unsqueeze", [x, g.const([2])]),
                               g.const([b, kv, repeat, t, dh])])
    return g.op("Reshape", [expanded, g.const([b, config.heads, t, dh])])


def _attention(g: _GraphWriter, config: LLMConfig, chunk: int, layer: int, q: str, k: str,
               v: str, positions: str, allowed: str, caches: dict[str, list[str]]) -> str:
    """Write k, v ([batch, kv_heads, chunk, head_dim]) into layer `layer` of the caches at
    `positions` and attend from q over the whole cache under the mask `allowed`
    ([batch, 1, chunk, max_len] bool). Returns [batch, chunk, heads * head_dim]."""
    b, kv, dh = config.batch, config.kv_heads, config.head_dim
    index = g.op("Expand", [g.op("Reshape", [positions, g.const([b, 1, chunk, 1])]),
                            g.const([b, kv, chunk, dh])])
    full = {}
    for name, new in (("key", k), ("value", v)):
        if config.per_layer_cache:
            present = g.op("ScatterElements", [f"past_{name}_{layer}", index, new], axis=2,
                           name=f"present_{name}_{layer}")
        else:
            past = g.op("Gather", ["past_" + name, g.const(layer)], axis=0)
            present = g.op("ScatterElements", [past, index, new], axis=2)
            caches[name].append(g.op("Unsqueeze", [present, g.const([0])]))
        full[name] = _repeat_kv(g, present, config)
    keys_t = g.op("Transpose", [full["key"]], perm=[0, 1, 3, 2])
    scores = g.op("Mul", [g.op("MatMul", [q, keys_t]),
                          g.const(1.0 / math.sqrt(dh), np.float32)])
    scores = g.op("Where", [allowed, scores, g.const(MASKED_SCORE, np.float32)])
    probs = g.op("Softmax", [scores], axis=-1)
    out = g.op("Transpose", [g.op("MatMul", [probs, full["value"]])], perm=[0, 2, 1, 3])
    return g.op("Reshape", [out, g.const([b, chunk, config.heads * dh])])


def _gpt2_block(g: _GraphWriter, config: LLMConfig, chunk: int, layer: int, x: str,
                positions: str, allowed: str, caches: dict[str, list[str]]) -> str:
    p = f"h{layer}."
    q_dim, kv_dim = config.heads * config.head_dim, config.kv_heads * config.head_dim
    h = _layer_norm(g, x, p + "ln_1.weight", p + "ln_1.bias", config.norm_eps)
    qkv = g.op("Add", [g.op("MatMul", [h, p + "attn.c_attn.weight"]), p + "attn.c_attn.bias"])
    q, k, v = g.op_multi("Split", [qkv, g.const([q_dim, kv_dim, kv_dim])], 3, axis=-1)
    attn = _attention(g, config, chunk, layer, _heads(g, q, config, chunk, config.heads),
                      _heads(g, k, config, chunk, config.kv_heads),
                      _heads(g, v, config, chunk, config.kv_heads), positions, allowed, caches)
    proj = g.op("Add", [g.op("MatMul", [attn, p + "attn.c_proj.weight"]),
                        p + "attn.c_proj.bias"])
    x = g.op("Add", [x, proj])
    h = _layer_norm(g, x, p + "ln_2.weight", p + "ln_2.bias", config.norm_eps)
    fc = g.op("Add", [g.op("MatMul", [h, p + "mlp.c_fc.weight"]), p + "mlp.c_fc.bias"])
    down = g.op("Add", [g.op("MatMul", [_gelu_tanh(g, fc), p + "mlp.c_proj.weight"]),
                        p + "mlp.c_proj.bias"])
    return g.op("Add", [x, down])


def _llama_block(g: _GraphWriter, config: LLMConfig, chunk: int, layer: int, x: str,
                 positions: str, allowed: str, caches: dict[str, list[str]],
                 cos: str, sin: str) -> str:
    p = f"h{layer}."
    half = config.head_dim // 2
    h = _rms_norm(g, x, p + "input_layernorm.weight", config.norm_eps)
    q = _heads(g, g.op("MatMul", [h, p + "self_attn.q_proj.weight"]), config, chunk,
               config.heads)
    k = _heads(g, g.op("MatMul", [h, p + "self_attn.k_proj.weight"]), config, chunk,
               config.kv_heads)
    v = _heads(g, g.op("MatMul", [h, p + "self_attn.v_proj.weight"]), config, chunk,
               config.kv_heads)
    q, k = _rotate(g, q, cos, sin, half), _rotate(g, k, cos, sin, half)
    attn = _attention(g, config, chunk, layer, q, k, v, positions, allowed, caches)
    x = g.op("Add", [x, g.op("MatMul", [attn, p + "self_attn.o_proj.weight"])])
    h = _rms_norm(g, x, p + "post_attention_layernorm.weight", config.norm_eps)
    gate = g.op("MatMul", [h, p + "mlp.gate_proj.weight"])
    up = g.op("MatMul", [h, p + "mlp.up_proj.weight"])
    swish = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
    down = g.op("MatMul", [g.op("Mul", [swish, up]), p + "mlp.down_proj.weight"])
    return g.op("Add", [x, down])


def _rotary_tables(g: _GraphWriter, config: LLMConfig, positions: str) -> tuple[str, str]:
    """cos and sin of position * inverse frequency, [batch, 1, chunk, head_dim]."""
    half = config.head_dim // 2
    inv_freq = 1.0 / config.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / config.head_dim)
    pos = g.op("Unsqueeze", [g.op("Cast", [positions], to=TensorProto.FLOAT), g.const([-1])])
    freqs = g.op("Mul", [pos, g.const(inv_freq, np.float32)])
    angles = g.op("Unsqueeze", [g.op("Concat", [freqs, freqs], axis=-1), g.const([1])])
    return g.op("Cos", [angles]), g.op("Sin", [angles])


def _decoder(config: LLMConfig, phase: str) -> onnx.ModelProto:
    """The prefill (chunk = config.chunk) or decode (chunk = 1) graph of `config`."""
    chunk = config.chunk if phase == "prefill" else 1
    b, t = config.batch, config.max_len
    g = _GraphWriter()
    weights = make_weights(config)
    for name, value in weights.items():
        g.weight(name, value)

    start = "start" if phase == "prefill" else "valid_lengths"
    # positions [batch, chunk] = start + 0..chunk-1; key t is visible to the query at p iff
    # t <= p, which also hides every cache entry beyond the sequence's current length.
    positions = g.op("Add", [g.op("Unsqueeze", [start, g.const([1])]),
                             g.op("Range", [g.const(0), g.const(chunk), g.const(1)])],
                     name="positions")
    key_positions = g.op("Range", [g.const(0), g.const(t), g.const(1)])
    allowed = g.op("LessOrEqual", [key_positions,
                                   g.op("Unsqueeze", [positions, g.const([-1])])])
    allowed = g.op("Unsqueeze", [allowed, g.const([1])], name="causal_mask")

    x = g.op("Gather", ["wte", "input_ids"], axis=0)
    caches: dict[str, list[str]] = {"key": [], "value": []}
    if config.arch == "gpt2":
        x = g.op("Add", [x, g.op("Gather", ["wpe", positions], axis=0)])
        for layer in range(config.layers):
            x = _gpt2_block(g, config, chunk, layer, x, positions, allowed, caches)
        x = _layer_norm(g, x, "ln_f.weight", "ln_f.bias", config.norm_eps)
        # GPT-2 ties the output projection to the token embedding.
        logits_weight = g.op("Transpose", ["wte"], perm=[1, 0])
    else:
        cos, sin = _rotary_tables(g, config, positions)
        for layer in range(config.layers):
            x = _llama_block(g, config, chunk, layer, x, positions, allowed, caches, cos, sin)
        x = _rms_norm(g, x, "norm.weight", config.norm_eps)
        logits_weight = "lm_head.weight"
    if phase == "prefill":
        g.op("MatMul", [x, logits_weight], name="logits")
    else:
        g.op("Reshape", [g.op("MatMul", [x, logits_weight]), g.const([b, config.vocab])],
             name="logits")
    if not config.per_layer_cache:
        for name, layers in caches.items():
            g.op("Concat", layers, name=f"present_{name}", axis=0)

    cache = config.cache_shape()
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [b, chunk])
    starts = helper.make_tensor_value_info(start, TensorProto.INT64, [b])
    past = [helper.make_tensor_value_info(name, TensorProto.FLOAT, cache)
            for name in config.cache_names("past")]
    inputs = [ids, starts, *past] if phase == "prefill" else [ids, *past, starts]
    logits_shape = [b, chunk, config.vocab] if phase == "prefill" else [b, config.vocab]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, logits_shape)]
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, cache)
                for name in config.cache_names("present")]
    graph = helper.make_graph(g.nodes, f"{config.arch}_{phase}", inputs, outputs,
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ember.workloads.llm")
    model.ir_version = 8
    helper.set_model_props(model, {"ember.llm.phase": phase,
                                   "ember.llm.config": json.dumps(dataclasses.asdict(config))})
    return model


def build_prefill(config: LLMConfig) -> onnx.ModelProto:
    """The prefill graph of `config` (see the module docstring for its signature)."""
    return _decoder(config, "prefill")


def build_decode(config: LLMConfig) -> onnx.ModelProto:
    """The decode graph of `config` (see the module docstring for its signature)."""
    return _decoder(config, "decode")


def config_of(model: onnx.ModelProto) -> tuple[LLMConfig, str]:
    """The (config, phase) a model of this module was built from (its metadata)."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    if "ember.llm.config" not in props:
        raise ValueError(f"model {model.graph.name!r} was not built by ember.workloads.llm")
    return LLMConfig(**json.loads(props["ember.llm.config"])), props["ember.llm.phase"]


def _register_zoo() -> None:
    for name, config in CONFIGS.items():
        size = (f"{config.layers} layers, d_model {config.d_model}, {config.heads} heads "
                f"({config.kv_heads} kv), vocab {config.vocab}, max_len {config.max_len}")
        register(f"{name}-prefill", lambda config=config: build_prefill(config),
                 f"{config.arch} prefill of {config.chunk} tokens x batch {config.batch}; {size}",
                 kind="llm")
        register(f"{name}-decode", lambda config=config: build_decode(config),
                 f"{config.arch} decode of 1 token x batch {config.batch}; {size}", kind="llm")


_register_zoo()

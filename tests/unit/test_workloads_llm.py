"""LLM workload models (ember.workloads.llm): the tiny GPT-2 and Llama prefill/decode graphs
pass onnx.checker, run in ONNX Runtime, compile for llvm and match ORT, and prefill of a first
chunk followed by decode steps gives the logits of one prefill over the whole sequence (in ORT
and in ember), for both KV-cache layouts (stacked, and one tensor per layer). The
GPT-2-small-size models are checked in the slow tier only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest

import ember
from ember.workloads import zoo
from ember.workloads.llm import CONFIGS, LLMConfig, build_decode, build_prefill, config_of

ort = pytest.importorskip("onnxruntime")

TINY = ("gpt2-tiny", "llama-tiny")
RTOL, ATOL = 1e-3, 1e-4
DECODE_STEPS = 4

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def ort_runner(model: onnx.ModelProto) -> Runner:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def ember_runner(model: onnx.ModelProto) -> Runner:
    return ember.compile(model, target="llvm").run


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    built = {}
    for name in TINY:
        built[f"{name}-prefill"] = zoo.build(f"{name}-prefill")
        built[f"{name}-decode"] = zoo.build(f"{name}-decode")
    return built


@pytest.fixture(scope="module")
def ember_modules(models) -> dict[str, Runner]:
    return {name: ember_runner(model) for name, model in models.items()}


def random_feeds(config: LLMConfig, phase: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens, a random (non-zero) cache and per-sequence start positions that differ,
    so masking of stale cache entries and per-sequence positions are exercised."""
    rng = np.random.default_rng(seed)
    chunk = config.chunk if phase == "prefill" else 1
    limit = config.max_len - chunk
    starts = rng.integers(0, limit + 1, config.batch).astype(np.int64)
    starts[0] = 0
    feeds = {"input_ids": rng.integers(0, config.vocab, (config.batch, chunk)).astype(np.int64)}
    for name in config.cache_names("past"):
        feeds[name] = rng.standard_normal(config.cache_shape()).astype(np.float32)
    feeds["start" if phase == "prefill" else "valid_lengths"] = starts
    return feeds


def prefill_then_decode_error(config: LLMConfig, full: Runner, prefill: Runner,
                              decode: Runner) -> float:
    """Largest |logit difference| between one prefill over chunk + DECODE_STEPS tokens and a
    prefill of the first chunk followed by DECODE_STEPS decode steps. Sequence b's prompt is
    b tokens shorter than the chunk (the rest of its chunk is junk the decode steps overwrite),
    so decode runs with different valid lengths across the batch."""
    length = config.chunk + DECODE_STEPS
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, config.vocab, (config.batch, length)).astype(np.int64)
    zeros = np.zeros(config.batch, np.int64)
    expected = full({"input_ids": tokens, "start": zeros, **config.empty_cache()})[0]

    def next_cache(outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(config.cache_names("past"), outputs[1:], strict=True))

    lengths = config.chunk - np.arange(config.batch)
    prompt = tokens[:, :config.chunk].copy()
    for b, n in enumerate(lengths):
        prompt[b, n:] = (prompt[b, n:] + 1) % config.vocab
    outputs = prefill({"input_ids": prompt, "start": zeros, **config.empty_cache()})
    errors = [np.abs(outputs[0][b, :n] - expected[b, :n]).max() for b, n in enumerate(lengths)]
    valid = lengths.astype(np.int64)
    rows = np.arange(config.batch)
    for _ in range(DECODE_STEPS):
        outputs = decode({"input_ids": tokens[rows, valid][:, None], **next_cache(outputs),
                          "valid_lengths": valid})
        errors += [np.abs(outputs[0][b] - expected[b, valid[b]]).max() for b in rows]
        valid = valid + 1
    return float(max(errors))


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", [f"{n}-{p}" for n in TINY for p in ("prefill", "decode")])
def test_checker_and_signature(models, name):
    model = models[name]
    onnx.checker.check_model(model, full_check=True)
    config, phase = config_of(model)
    assert config == CONFIGS[name.rsplit("-", 1)[0]] and phase == name.rsplit("-", 1)[1]
    chunk = config.chunk if phase == "prefill" else 1
    cache = list(config.cache_shape())

    def signature(values):
        return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    extra = {"start": [config.batch]} if phase == "prefill" else \
        {"valid_lengths": [config.batch]}
    assert signature(model.graph.input) == {"input_ids": [config.batch, chunk],
                                            "past_key": cache, "past_value": cache, **extra}
    logits = [config.batch, chunk, config.vocab] if phase == "prefill" else \
        [config.batch, config.vocab]
    assert signature(model.graph.output) == {"logits": logits, "present_key": cache,
                                             "present_value": cache}


@pytest.mark.parametrize("name", TINY)
def test_prefill_and_decode_share_weights(models, name):
    def weights(model):
        return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 1}

    prefill, decode = weights(models[f"{name}-prefill"]), weights(models[f"{name}-decode"])
    assert prefill.keys() == decode.keys()
    assert all(np.array_equal(prefill[key], decode[key]) for key in prefill)
    named = sum(value.size for key, value in prefill.items() if not key.startswith("const_"))
    assert named == CONFIGS[name].num_params()


def test_llama_is_written_like_an_export(models):
    ops = {node.op_type for node in models["llama-tiny-decode"].graph.node}
    assert {"Pow", "ReduceMean", "Sqrt", "Div", "Sin", "Cos", "Neg", "Slice", "Concat",
            "Sigmoid", "Expand", "ScatterElements", "LessOrEqual", "Where"} <= ops
    gpt2_ops = {node.op_type for node in models["gpt2-tiny-prefill"].graph.node}
    assert {"LayerNormalization", "Tanh", "Split", "ScatterElements"} <= gpt2_ops


def test_weights_are_seeded():
    a = build_decode(CONFIGS["gpt2-tiny"])
    b = build_decode(CONFIGS["gpt2-tiny"].replace(seed=1))
    first = {t.name: t.raw_data for t in a.graph.initializer}
    assert first["wte"] == build_decode(CONFIGS["gpt2-tiny"]).graph.initializer[0].raw_data
    assert first["wte"] != {t.name: t.raw_data for t in b.graph.initializer}["wte"]


@pytest.mark.parametrize("changes, message", [
    ({"arch": "bert"}, "arch 'bert'"),
    ({"heads": 3}, "d_model 64 is not a multiple of heads 3"),
    ({"kv_heads": 3}, "heads 4 is not a multiple of kv_heads 3"),
    ({"chunk": 65}, "chunk 65 must be in 1..max_len 64"),
])
def test_bad_config(changes, message):
    with pytest.raises(ValueError, match=message):
        CONFIGS["gpt2-tiny"].replace(**changes)


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name", [f"{n}-{p}" for n in TINY for p in ("prefill", "decode")])
def test_ember_llvm_matches_ort(models, ember_modules, name):
    config, phase = config_of(models[name])
    feeds = random_feeds(config, phase)
    expected = ort_runner(models[name])(feeds)
    actual = ember_modules[name](feeds)
    assert len(actual) == len(expected) == 3
    for got, want in zip(actual, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", TINY)
def test_prefill_then_decode_equals_full_prefill_in_ort(models, name):
    config = CONFIGS[name]
    full = ort_runner(build_prefill(config.replace(chunk=config.chunk + DECODE_STEPS)))
    error = prefill_then_decode_error(config, full, ort_runner(models[f"{name}-prefill"]),
                                      ort_runner(models[f"{name}-decode"]))
    assert error < ATOL


@pytest.mark.parametrize("name", TINY)
def test_prefill_then_decode_equals_full_prefill_in_ember(models, ember_modules, name):
    config = CONFIGS[name]
    full = ember_runner(build_prefill(config.replace(chunk=config.chunk + DECODE_STEPS)))
    error = prefill_then_decode_error(config, full, ember_modules[f"{name}-prefill"],
                                      ember_modules[f"{name}-decode"])
    assert error < ATOL


@pytest.mark.parametrize("name", TINY)
def test_per_layer_cache(name):
    """One cache tensor per layer: the signature, ember vs ORT on decode, and prefill-then-decode
    (in ORT) against the full prefill of the stacked-cache model (the same weights)."""
    stacked = CONFIGS[name]
    config = stacked.replace(per_layer_cache=True)
    decode = build_decode(config)
    onnx.checker.check_model(decode, full_check=True)
    caches = [f"{kind}_{layer}" for layer in range(config.layers) for kind in ("key", "value")]
    assert [v.name for v in decode.graph.input] == \
        ["input_ids", *[f"past_{c}" for c in caches], "valid_lengths"]
    assert [v.name for v in decode.graph.output] == ["logits", *[f"present_{c}" for c in caches]]
    assert config.cache_shape() == stacked.cache_shape()[1:]
    # Each layer's cache goes straight into its ScatterElements: no Gather/Concat copies.
    readers = {node.op_type for node in decode.graph.node
               if any(name.startswith("past_") for name in node.input)}
    assert readers == {"ScatterElements"}

    feeds = random_feeds(config, "decode")
    expected = ort_runner(decode)(feeds)
    for got, want in zip(ember_runner(decode)(feeds), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # The same caches stacked give the stacked model's logits and caches.
    stacked_feeds = {"input_ids": feeds["input_ids"], "valid_lengths": feeds["valid_lengths"]}
    for kind in ("key", "value"):
        stacked_feeds[f"past_{kind}"] = np.stack(
            [feeds[f"past_{kind}_{layer}"] for layer in range(config.layers)])
    logits, keys, values = ort_runner(build_decode(stacked))(stacked_feeds)
    np.testing.assert_allclose(logits, expected[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(keys, np.stack(expected[1::2]))
    np.testing.assert_array_equal(values, np.stack(expected[2::2]))

    full = ort_runner(build_prefill(config.replace(chunk=config.chunk + DECODE_STEPS)))
    error = prefill_then_decode_error(config, full, ort_runner(build_prefill(config)),
                                      ort_runner(decode))
    assert error < ATOL


# ----------------------------------------------------------------------------- slow tier


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2-small-prefill", "gpt2-small-decode",
                                  "llama-small-prefill", "llama-small-decode"])
def test_small_models_match_ort(name):
    model = zoo.build(name)
    onnx.checker.check_model(model)
    config, phase = config_of(model)
    feeds = random_feeds(config, phase)
    for cache in config.cache_names("past"):
        feeds[cache] *= 0.1
    expected = ort_runner(model)(feeds)
    actual = ember_runner(model)(feeds)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

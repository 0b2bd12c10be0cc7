"""The recurrent ONNX converters (compiler/frontend/onnx/rnn.py): RNN, GRU and LSTM unrolled
over time, LinearAttention and CausalConvWithState, compiled for llvm and checked against
onnx's reference evaluator; attributes that evaluator ignores (activations, clip,
sequence_lens) are checked against ONNX Runtime. Plus the error messages."""

import numpy as np
import pytest
from onnx import TensorProto
from support import assert_values_match, check_node, node_model

import ember

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def rand(shape, dtype="float32", seed=0, scale=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def rnn_inputs(op, steps=4, batch=2, size=3, hidden=5, directions=1, layout=0, bias=True,
               initial=False, lengths=None, peepholes=False):
    gates = GATES[op]
    x_shape = (steps, batch, size) if layout == 0 else (batch, steps, size)
    state_shape = (directions, batch, hidden) if layout == 0 else (batch, directions, hidden)
    inputs = [("X", rand(x_shape, seed=1)),
              ("W", rand((directions, gates * hidden, size), seed=2)),
              ("R", rand((directions, gates * hidden, hidden), seed=3)),
              ("B", rand((directions, 2 * gates * hidden), seed=4) if bias else None),
              ("sequence_lens", None if lengths is None else np.array(lengths, np.int32)),
              ("initial_h", rand(state_shape, seed=5) if initial else None)]
    if op == "LSTM":
        inputs += [("initial_c", rand(state_shape, seed=6) if initial else None),
                   ("P", rand((directions, 3 * hidden), seed=7) if peepholes else None)]
    while inputs[-1][1] is None:
        inputs.pop()
    return inputs


def run_rnn(op, inputs, attrs, opset=14):
    outputs = 3 if op == "LSTM" else 2
    weights = [n for n, a in inputs if n in ("W", "R", "B", "P") and a is not None]
    return check_node(op, inputs, {"hidden_size": 5, **attrs}, outputs=outputs, opset=opset,
                      target="llvm", initializers=weights)


# ----------------------------------------------------------------------------- RNN, GRU, LSTM


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction,layout,bias,initial", [
    ("forward", 0, True, False), ("reverse", 1, False, True), ("bidirectional", 0, True, True),
])
def test_recurrent_layers(op, direction, layout, bias, initial):
    directions = 2 if direction == "bidirectional" else 1
    run_rnn(op, rnn_inputs(op, directions=directions, layout=layout, bias=bias,
                           initial=initial), {"direction": direction, "layout": layout})


def test_gru_linear_before_reset():
    run_rnn("GRU", rnn_inputs("GRU", initial=True), {"linear_before_reset": 1}, opset=22)


def test_lstm_peepholes():
    run_rnn("LSTM", rnn_inputs("LSTM", initial=True, peepholes=True), {})


def onnxruntime_check(op, inputs, attrs, opset=14):
    """Ember on llvm against ONNX Runtime (onnx's evaluator ignores these attributes)."""
    ort = pytest.importorskip("onnxruntime")
    outputs = 3 if op == "LSTM" else 2
    attrs = {"hidden_size": 5, **attrs}
    feeds = {n: a for n, a in inputs if a is not None}
    probe = node_model(op, inputs, attrs, outputs=outputs, opset=opset)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    model = node_model(op, inputs, attrs, outputs=outputs, opset=opset, output_arrays=expected)
    got = ember.compile(model, target="llvm").run(feeds)
    for out, ref in zip(got, expected):
        assert out.shape == ref.shape
        assert_values_match(out, ref, 1e-5, 1e-5, op)


@pytest.mark.parametrize("op,attrs", [
    ("RNN", {"activations": ["Relu"], "clip": 0.7}),
    ("GRU", {"activations": ["HardSigmoid", "Affine"], "activation_alpha": [0.3, 0.8],
             "activation_beta": [0.4, 0.1]}),
    ("LSTM", {"activations": ["Sigmoid", "LeakyRelu", "ScaledTanh"],
              "activation_alpha": [0.2, 1.5], "activation_beta": [0.7], "clip": 1.5}),
])
def test_activations_and_clip(op, attrs):
    onnxruntime_check(op, rnn_inputs(op, initial=True), attrs)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_sequence_lens(op):
    inputs = rnn_inputs(op, steps=4, batch=3, directions=2, initial=True, lengths=[4, 2, 1])
    onnxruntime_check(op, inputs, {"direction": "bidirectional"})


@pytest.mark.parametrize("op,attrs,message", [
    ("RNN", {"direction": "sideways"}, "direction 'sideways' is not supported"),
    ("GRU", {"activations": ["Sigmoid", "Gelu"]}, "activation 'Gelu' is not supported"),
    ("LSTM", {"activations": ["Tanh"]}, "activations lists 1 functions"),
    ("RNN", {"hidden_size": 4}, "W has shape"),
])
def test_recurrent_errors(op, attrs, message):
    model = node_model(op, rnn_inputs(op), {"hidden_size": 5, **attrs}, outputs=1, opset=14)
    for value in model.graph.output:
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        value.type.tensor_type.shape.SetInParent()
    with pytest.raises(ember.FrontendError, match=message):
        ember.compile(model, target="reference")


# ----------------------------------------------------------------------------- LinearAttention


@pytest.mark.parametrize("rule,q_heads,kv_heads,past,per_key_decay", [
    ("linear", 2, 2, True, False),
    ("gated", 2, 1, False, True),
    ("delta", 2, 2, False, False),
    ("gated_delta", 4, 2, True, False),
])
def test_linear_attention(rule, q_heads, kv_heads, past, per_key_decay):
    batch, steps, d_k, d_v = 2, 3, 4, 3
    key = rand((batch, steps, kv_heads * d_k), seed=2)
    inputs = [("query", rand((batch, steps, q_heads * d_k), seed=1)), ("key", key),
              ("value", rand((batch, steps, kv_heads * d_v), seed=3)),
              ("past_state", rand((batch, kv_heads, d_k, d_v), seed=4) if past else None)]
    decay_size = kv_heads * d_k if per_key_decay else kv_heads
    inputs.append(("decay", -np.abs(rand((batch, steps, decay_size), seed=5))
                   if "gated" in rule else None))
    beta = 1 / (1 + np.exp(-rand((batch, steps, kv_heads), seed=6)))
    inputs.append(("beta", beta.astype(np.float32) if "delta" in rule else None))
    while inputs[-1][1] is None:
        inputs.pop()
    check_node("LinearAttention", inputs, {"update_rule": rule, "q_num_heads": q_heads,
                                           "kv_num_heads": kv_heads},
               outputs=2, opset=27, target="llvm")


# ----------------------------------------------------------------------------- causal conv


@pytest.mark.parametrize("taps,bias,past,activation", [
    (4, True, True, "silu"), (3, False, False, "none"), (1, True, False, "swish"),
])
def test_causal_conv_with_state(taps, bias, past, activation):
    batch, channels, length = 2, 3, 5
    inputs = [("x", rand((batch, channels, length), seed=1)),
              ("w", rand((channels, 1, taps), seed=2)),
              ("b", rand((channels,), seed=3) if bias else None),
              ("state", rand((batch, channels, taps - 1), seed=4) if past else None)]
    while inputs[-1][1] is None:
        inputs.pop()
    check_node("CausalConvWithState", inputs, {"activation": activation}, outputs=2,
               opset=27, target="llvm")

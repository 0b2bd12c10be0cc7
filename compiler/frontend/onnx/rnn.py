"""Converters for ONNX's recurrent layers RNN, GRU and LSTM (opset 7 on), unrolled over time.

Shapes are static, so the sequence length is known at conversion time and each time step
becomes its own small chain of ember ops: the input projection of every step is one matmul
over the whole sequence up front (X W^T + biases), and each step adds its recurrent matmul
(H R^T), applies the gate activations and combines the states. Step outputs are concatenated
into Y. All directions, the activations / activation_alpha / activation_beta attributes, clip,
layout, GRU's linear_before_reset, LSTM's peepholes and input_forget are supported, and so is
sequence_lens as a run-time input: steps at or past a batch entry's length keep its state and
output zeros, and the reverse direction runs over each entry's valid steps only
(reverse_sequence), as ONNX Runtime does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ember.compiler.frontend.onnx.attention import cast, shape_of, wants_output
from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.math import scalar
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, emit_slice
from ember.ir.graph import is_float, numpy_dtype

# ----------------------------------------------------------------------------- activations

#: Activation name (lower case) -> (takes alpha, takes beta, default alpha, default beta).
_ACTIVATIONS: dict[str, tuple[bool, bool, float, float]] = {
    "relu": (False, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0),
    "sigmoid": (False, False, 0.0, 0.0),
    "affine": (True, True, 1.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 1.0, 0.0),
    "scaledtanh": (True, True, 1.0, 1.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0),
    "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
}

Activation = Callable[[str], str]


def _activation(ctx: ConvertContext, name: str, alpha: float, beta: float,
                dtype: str) -> Activation:
    """The ember op chain of one ONNX RNN activation function."""
    kind = name.lower()

    def const(value: float) -> str:
        return scalar(ctx, float(np.float32(value)), dtype)

    def apply(x: str) -> str:
        if kind in ("relu", "tanh", "sigmoid", "softplus"):
            return ctx.emit(kind, [x])
        if kind == "affine":
            return ctx.emit("add", [ctx.emit("mul", [x, const(alpha)]), const(beta)])
        if kind == "leakyrelu":
            return ctx.emit("leaky_relu", [x], {"alpha": float(np.float32(alpha))})
        if kind == "thresholdedrelu":
            above = ctx.emit("greater", [x, const(alpha)])
            return ctx.emit("where", [above, x, const(0.0)])
        if kind == "scaledtanh":
            return ctx.emit("mul", [ctx.emit("tanh", [ctx.emit("mul", [x, const(beta)])]),
                                    const(alpha)])
        if kind == "hardsigmoid":
            linear = ctx.emit("add", [ctx.emit("mul", [x, const(alpha)]), const(beta)])
            return ctx.emit("clip", [linear], {"min": 0.0, "max": 1.0})
        if kind == "elu":
            negative = ctx.emit("mul", [ctx.emit("sub", [ctx.emit("exp", [x]), const(1.0)]),
                                        const(alpha)])
            return ctx.emit("where", [ctx.emit("greater", [x, const(0.0)]), x, negative])
        # softsign
        return ctx.emit("div", [x, ctx.emit("add", [ctx.emit("abs", [x]), const(1.0)])])

    return apply


def _activations(ctx: ConvertContext, defaults: Sequence[str], directions: int,
                 dtype: str) -> list[list[Activation]]:
    """The activation functions per direction, with alpha/beta consumed in order."""
    names = list(ctx.attr("activations", []))
    count = len(defaults)
    if not names:
        names = list(defaults) * directions
    elif len(names) == count and directions == 2:
        names = names * 2
    if len(names) != count * directions:
        ctx.fail(f"activations lists {len(names)} functions; {ctx.op_type} with {directions} "
                 f"direction(s) needs {count * directions}")
    alphas = [float(a) for a in ctx.attr("activation_alpha", [])]
    betas = [float(b) for b in ctx.attr("activation_beta", [])]
    result: list[list[Activation]] = []
    for d in range(directions):
        funcs = []
        for name in names[d * count:(d + 1) * count]:
            spec = _ACTIVATIONS.get(name.lower())
            if spec is None:
                ctx.fail(f"activation {name!r} is not supported; ember supports "
                         f"{', '.join(sorted(_ACTIVATIONS))}")
            takes_alpha, takes_beta, alpha, beta = spec
            if takes_alpha and alphas:
                alpha = alphas.pop(0)
            if takes_beta and betas:
                beta = betas.pop(0)
            funcs.append(_activation(ctx, name, alpha, beta, dtype))
        result.append(funcs)
    return result


# ----------------------------------------------------------------------------- shared layout


@dataclass
class Recurrence:
    """What every recurrent layer's unrolling shares."""

    ctx: ConvertContext
    x: str  # (T, B, I), time-major whatever the layout
    dtype: str
    steps: int
    batch: int
    hidden: int
    directions: int
    gates: int
    clip: float | None
    lengths: str  # int64 (B,) or "" when every entry runs all steps
    #: initial_h / initial_c by input index, time-major (D, B, H).
    initial_states: dict[int, str] = field(default_factory=dict)

    def weight(self, index: int, direction: int) -> str:
        """Input `index` (W or R, (D, G*H, K)) for `direction`, transposed to (K, G*H)."""
        value = self.ctx.input(index)
        rows, cols = shape_of(self.ctx, value)[1:]
        one = emit_slice(self.ctx, value, {0: (direction, direction + 1, 1)})
        return self.ctx.emit("transpose", [emit_reshape(self.ctx, one, (rows, cols))],
                             {"perm": (1, 0)})

    def bias(self, direction: int) -> tuple[str, str] | None:
        """(Wb, Rb) of `direction`, each (G*H,), or None without B."""
        if not self.ctx.has_input(3):
            return None
        size = self.gates * self.hidden
        one = emit_reshape(self.ctx, emit_slice(self.ctx, self.ctx.input(3),
                                                {0: (direction, direction + 1, 1)}),
                           (2 * size,))
        return (emit_slice(self.ctx, one, {0: (0, size, 1)}),
                emit_slice(self.ctx, one, {0: (size, 2 * size, 1)}))

    def initial(self, index: int, direction: int) -> str:
        """initial_h / initial_c (input `index`, (D, B, H) time-major) of `direction`, or
        zeros."""
        if not self.ctx.has_input(index):
            return self.ctx.constant(np.zeros((self.batch, self.hidden),
                                              dtype=self.np_dtype))
        value = self.initial_states[index]
        one = emit_slice(self.ctx, value, {0: (direction, direction + 1, 1)})
        return emit_reshape(self.ctx, one, (self.batch, self.hidden))

    @property
    def np_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    def gate(self, gates: str, index: int) -> str:
        """Gate `index` ((B, H)) of the stacked (B, G*H) pre-activations."""
        start = index * self.hidden
        return emit_slice(self.ctx, gates, {1: (start, start + self.hidden, 1)})

    def clipped(self, value: str) -> str:
        if self.clip is None:
            return value
        return self.ctx.emit("clip", [value], {"min": -self.clip, "max": self.clip})

    def projected(self, x: str, direction: int, bias: str | None) -> str:
        """X W^T (+ bias) for every step at once: (T, B, G*H)."""
        out = self.ctx.emit("matmul", [x, self.weight(1, direction)])
        return out if bias is None else self.ctx.emit("add", [out, bias])

    def step_input(self, projected: str, t: int) -> str:
        one = emit_slice(self.ctx, projected, {0: (t, t + 1, 1)})
        return emit_reshape(self.ctx, one, shape_of(self.ctx, projected)[1:])

    def valid(self, t: int) -> str | None:
        """(B, 1) bool: which entries still run at step t, or None when all do."""
        if not self.lengths:
            return None
        test = self.ctx.emit("less", [self.ctx.constant(np.int64(t)), self.lengths])
        return emit_reshape(self.ctx, test, (self.batch, 1))

    def reversed_input(self, x: str) -> str:
        """x with each entry's valid steps reversed in time."""
        if self.lengths:
            return self.ctx.emit("reverse_sequence", [x, self.lengths],
                                 {"batch_axis": 1, "time_axis": 0})
        return emit_slice(self.ctx, x, {0: (self.steps - 1, -self.steps - 1, -1)})


Cell = Callable[[Recurrence, int, str, list[str]], list[str]]

#: recurrences are unrolled over time: a few nodes per step, compiled once each
MAX_UNROLLED_STEPS = 4096


def _unroll(rec: Recurrence, direction: int, reverse: bool, x_proj: str,
            states: list[str], cell: Cell) -> tuple[str, list[str]]:
    """Run `cell` over every step of the (already reversed, if `reverse`) projected input.
    Returns Y of this direction, (T, 1, B, H) in original time order, and the final states."""
    ctx = rec.ctx
    if rec.steps > MAX_UNROLLED_STEPS:
        ctx.fail(f"the sequence has {rec.steps} steps; ember unrolls recurrences over time and "
                 f"takes at most {MAX_UNROLLED_STEPS} (run longer ones in chunks, carrying the "
                 f"state through initial_h)")
    outputs = []
    for t in range(rec.steps):
        new_states = cell(rec, direction, rec.step_input(x_proj, t), states)
        valid = rec.valid(t)
        if valid is None:
            states = new_states
            outputs.append(new_states[0])
        else:
            states = [ctx.emit("where", [valid, new, old])
                      for new, old in zip(new_states, states)]
            zero = scalar(ctx, 0, rec.dtype)
            outputs.append(ctx.emit("where", [valid, new_states[0], zero]))
    pieces = [emit_reshape(ctx, out, (1, rec.batch, rec.hidden)) for out in outputs]
    y = pieces[0] if len(pieces) == 1 else ctx.emit("concat", pieces, {"axis": 0})
    if reverse:
        y = rec.reversed_input(y)
    return emit_reshape(ctx, y, (rec.steps, 1, rec.batch, rec.hidden)), states


def _prepare(ctx: ConvertContext, gates: int, state_inputs: Sequence[int]) -> Recurrence:
    """Validate the common inputs and attributes; return the shared unrolling state."""
    dtype = ctx.type(0).dtype
    if not is_float(dtype):
        ctx.fail(f"X has dtype {dtype}; {ctx.op_type} accepts floating-point inputs only")
    if ctx.type(0).rank != 3:
        ctx.fail(f"X must be 3-D, got shape {ctx.type(0).shape}")
    direction = ctx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        ctx.fail(f"direction {direction!r} is not supported; ember supports 'forward', "
                 f"'reverse', 'bidirectional'")
    directions = 2 if direction == "bidirectional" else 1
    layout = int(ctx.attr("layout", 0))
    if layout not in (0, 1):
        ctx.fail(f"layout {layout} is not supported; ember supports 0 and 1")
    x = ctx.input(0)
    if layout == 1:
        x = ctx.emit("transpose", [x], {"perm": (1, 0, 2)})
    steps, batch, _ = shape_of(ctx, x)
    w_shape, r_shape = ctx.type(1).shape, ctx.type(2).shape
    hidden = int(ctx.attr("hidden_size", r_shape[-1] if len(r_shape) == 3 else 0))
    if len(w_shape) != 3 or w_shape[:2] != (directions, gates * hidden) \
            or w_shape[2] != ctx.type(0).shape[2]:
        ctx.fail(f"W has shape {w_shape}; expected ({directions}, {gates * hidden}, "
                 f"{ctx.type(0).shape[2]}) for hidden_size {hidden} and direction {direction!r}")
    if tuple(r_shape) != (directions, gates * hidden, hidden):
        ctx.fail(f"R has shape {r_shape}; expected ({directions}, {gates * hidden}, {hidden})")
    if ctx.has_input(3) and tuple(ctx.type(3).shape) != (directions, 2 * gates * hidden):
        ctx.fail(f"B has shape {ctx.type(3).shape}; expected ({directions}, "
                 f"{2 * gates * hidden})")
    clip = ctx.attr("clip", None)
    lengths = ""
    if ctx.has_input(4):
        known = ctx.const(4)
        if known is None or not np.all(np.asarray(known) == steps):
            lengths = cast(ctx, ctx.input(4), "int64")
            if shape_of(ctx, lengths) != (batch,):
                ctx.fail(f"sequence_lens has shape {shape_of(ctx, lengths)}; expected "
                         f"({batch},)")
    rec = Recurrence(ctx, x, dtype, steps, batch, hidden, directions, gates,
                     None if clip is None else float(np.float32(clip)), lengths)
    for index in state_inputs:
        if ctx.has_input(index):
            value = ctx.input(index)
            if layout == 1:
                value = ctx.emit("transpose", [value], {"perm": (1, 0, 2)})
            if shape_of(ctx, value) != (directions, batch, hidden):
                want = (directions, batch, hidden) if layout == 0 else (batch, directions, hidden)
                ctx.fail(f"input {index} has shape {ctx.type(index).shape}; expected {want}")
            rec.initial_states[index] = value
    return rec


def _run(ctx: ConvertContext, rec: Recurrence, state_inputs: Sequence[int],
         input_bias: Callable[[Recurrence, int], str | None], cell: Cell) -> tuple[str, ...]:
    """Unroll every direction and assemble Y and the final states in the model's layout."""
    direction = ctx.attr("direction", "forward")
    ys, finals = [], []
    for d in range(rec.directions):
        reverse = direction == "reverse" or d == 1
        x = rec.reversed_input(rec.x) if reverse else rec.x
        x_proj = rec.projected(x, d, input_bias(rec, d))
        states = [rec.initial(index, d) for index in state_inputs]
        y, states = _unroll(rec, d, reverse, x_proj, states, cell)
        ys.append(y)
        finals.append(states)
    layout = int(ctx.attr("layout", 0))
    results = []
    if wants_output(ctx, 0):
        y = ys[0] if len(ys) == 1 else ctx.emit("concat", ys, {"axis": 1})
        if layout == 1:
            y = ctx.emit("transpose", [y], {"perm": (2, 0, 1, 3)})
        results.append(y)
    else:
        results.append("")
    for k in range(len(state_inputs)):
        if not wants_output(ctx, 1 + k):
            results.append("")
            continue
        pieces = [emit_reshape(ctx, states[k], (1, rec.batch, rec.hidden)) for states in finals]
        final = pieces[0] if len(pieces) == 1 else ctx.emit("concat", pieces, {"axis": 0})
        if layout == 1:
            final = ctx.emit("transpose", [final], {"perm": (1, 0, 2)})
        results.append(final)
    return tuple(results)


def _summed_bias(rec: Recurrence, direction: int) -> str | None:
    bias = rec.bias(direction)
    return None if bias is None else rec.ctx.emit("add", list(bias))


# ----------------------------------------------------------------------------- RNN


@converter("RNN", since=7)
def rnn(ctx: ConvertContext) -> tuple[str, ...]:
    """H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)."""
    rec = _prepare(ctx, 1, [5])
    funcs = _activations(ctx, ["Tanh"], rec.directions, rec.dtype)

    def cell(rec: Recurrence, d: int, x_t: str, states: list[str]) -> list[str]:
        total = ctx.emit("add", [x_t, ctx.emit("matmul", [states[0], recurrent[d]])])
        return [funcs[d][0](rec.clipped(total))]

    recurrent = [rec.weight(2, d) for d in range(rec.directions)]
    return _run(ctx, rec, [5], _summed_bias, cell)


# ----------------------------------------------------------------------------- GRU


@converter("GRU", since=7)
def gru(ctx: ConvertContext) -> tuple[str, ...]:
    """Gates z, r, h: z = f(..), r = f(..), h = g(X Wh + (r * H) Rh + Rbh + Wbh) (or
    g(X Wh + r * (H Rh + Rbh) + Wbh) with linear_before_reset), H = (1 - z) h + z H."""
    rec = _prepare(ctx, 3, [5])
    funcs = _activations(ctx, ["Sigmoid", "Tanh"], rec.directions, rec.dtype)
    linear_before_reset = bool(ctx.attr("linear_before_reset", 0))
    hidden = rec.hidden
    recurrent = [rec.weight(2, d) for d in range(rec.directions)]
    # R^T split into the z|r columns and the h columns.
    r_zr = [emit_slice(ctx, r, {1: (0, 2 * hidden, 1)}) for r in recurrent]
    r_h = [emit_slice(ctx, r, {1: (2 * hidden, 3 * hidden, 1)}) for r in recurrent]
    biases = [rec.bias(d) for d in range(rec.directions)]

    def input_bias(rec: Recurrence, d: int) -> str | None:
        if biases[d] is None:
            return None
        wb, rb = biases[d]
        # Rb of the z and r gates adds outside; Rbh goes with the recurrent term below.
        rb_zr = ctx.emit("concat", [emit_slice(ctx, rb, {0: (0, 2 * hidden, 1)}),
                                    ctx.constant(np.zeros(hidden, rec.np_dtype))], {"axis": 0})
        return ctx.emit("add", [wb, rb_zr])

    def cell(rec: Recurrence, d: int, x_t: str, states: list[str]) -> list[str]:
        f, g = funcs[d]
        h_prev = states[0]
        x_zr = emit_slice(ctx, x_t, {1: (0, 2 * hidden, 1)})
        x_h = emit_slice(ctx, x_t, {1: (2 * hidden, 3 * hidden, 1)})
        zr = ctx.emit("add", [x_zr, ctx.emit("matmul", [h_prev, r_zr[d]])])
        z = f(rec.clipped(rec.gate(zr, 0)))
        r = f(rec.clipped(rec.gate(zr, 1)))
        rbh = None if biases[d] is None else \
            emit_slice(ctx, biases[d][1], {0: (2 * hidden, 3 * hidden, 1)})
        if linear_before_reset:
            hr = ctx.emit("matmul", [h_prev, r_h[d]])
            if rbh is not None:
                hr = ctx.emit("add", [hr, rbh])
            pre = ctx.emit("add", [x_h, ctx.emit("mul", [r, hr])])
        else:
            hr = ctx.emit("matmul", [ctx.emit("mul", [r, h_prev]), r_h[d]])
            if rbh is not None:
                hr = ctx.emit("add", [hr, rbh])
            pre = ctx.emit("add", [x_h, hr])
        h = g(rec.clipped(pre))
        # (1 - z) * h + z * H  ==  h + z * (H - h)
        return [ctx.emit("add", [h, ctx.emit("mul", [z, ctx.emit("sub", [h_prev, h])])])]

    return _run(ctx, rec, [5], input_bias, cell)


# ----------------------------------------------------------------------------- LSTM


@converter("LSTM", since=7)
def lstm(ctx: ConvertContext) -> tuple[str, ...]:
    """Gates i, o, f, c: i = f(.. + Pi C), f = f(.. + Pf C), c = g(..), C = f C + i c,
    o = f(.. + Po C_new), H = o h(C). input_forget couples f = 1 - i."""
    rec = _prepare(ctx, 4, [5, 6])
    funcs = _activations(ctx, ["Sigmoid", "Tanh", "Tanh"], rec.directions, rec.dtype)
    input_forget = bool(ctx.attr("input_forget", 0))
    hidden = rec.hidden
    recurrent = [rec.weight(2, d) for d in range(rec.directions)]
    peepholes: list[list[str] | None] = []
    for d in range(rec.directions):
        if not ctx.has_input(7):
            peepholes.append(None)
            continue
        if tuple(ctx.type(7).shape) != (rec.directions, 3 * hidden):
            ctx.fail(f"P has shape {ctx.type(7).shape}; expected ({rec.directions}, "
                     f"{3 * hidden})")
        one = emit_reshape(ctx, emit_slice(ctx, ctx.input(7), {0: (d, d + 1, 1)}),
                           (3 * hidden,))
        peepholes.append([emit_slice(ctx, one, {0: (k * hidden, (k + 1) * hidden, 1)})
                          for k in range(3)])

    def peep(value: str, d: int, k: int, cell_state: str) -> str:
        if peepholes[d] is None:
            return value
        return ctx.emit("add", [value, ctx.emit("mul", [peepholes[d][k], cell_state])])

    def cell(rec: Recurrence, d: int, x_t: str, states: list[str]) -> list[str]:
        f, g, h = funcs[d]
        h_prev, c_prev = states
        gates = ctx.emit("add", [x_t, ctx.emit("matmul", [h_prev, recurrent[d]])])
        i = f(rec.clipped(peep(rec.gate(gates, 0), d, 0, c_prev)))
        if input_forget:
            forget = ctx.emit("sub", [scalar(ctx, 1, rec.dtype), i])
        else:
            forget = f(rec.clipped(peep(rec.gate(gates, 2), d, 2, c_prev)))
        candidate = g(rec.clipped(rec.gate(gates, 3)))
        c_new = ctx.emit("add", [ctx.emit("mul", [forget, c_prev]),
                                 ctx.emit("mul", [i, candidate])])
        o = f(rec.clipped(peep(rec.gate(gates, 1), d, 1, c_new)))
        return [ctx.emit("mul", [o, h(c_new)]), c_new]

    return _run(ctx, rec, [5, 6], _summed_bias, cell)


# ----------------------------------------------------------------------------- LinearAttention

_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _packed(ctx: ConvertContext, index: int, heads: int, what: str) -> str:
    """Input `index` (B, T, heads * D) as float32 (B, heads, T, D)."""
    batch, steps, hidden = ctx.type(index).shape
    if hidden % heads:
        ctx.fail(f"{what} last dimension {hidden} is not divisible by {heads} heads")
    value = emit_reshape(ctx, cast(ctx, ctx.input(index), "float32"),
                         (batch, steps, heads, hidden // heads))
    return ctx.emit("transpose", [value], {"perm": (0, 2, 1, 3)})


def _step(ctx: ConvertContext, value: str, t: int) -> str:
    """Step t of a (B, H, T, D) tensor as (B, H, 1, D)."""
    return emit_slice(ctx, value, {2: (t, t + 1, 1)})


@converter("LinearAttention", since=27)
def linear_attention(ctx: ConvertContext) -> tuple[str, str]:
    """The linear-attention recurrence over a state S (B, H_kv, d_k, d_v), unrolled over T:
    S *= exp(decay_t) (gated), v_t = beta_t (v_t - k_t S) (delta), S += k_t^T v_t, and
    o_t = scale q_t S, query heads sharing their group's state. Computed in float32."""
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in _UPDATE_RULES:
        ctx.fail(f"update_rule {rule!r} is not supported; ember supports "
                 f"{', '.join(_UPDATE_RULES)}")
    if not (ctx.has_attr("q_num_heads") and ctx.has_attr("kv_num_heads")):
        ctx.fail("the q_num_heads and kv_num_heads attributes are required")
    q_heads, kv_heads = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
    if q_heads <= 0 or kv_heads <= 0 or q_heads % kv_heads:
        ctx.fail(f"q_num_heads ({q_heads}) must be a positive multiple of kv_num_heads "
                 f"({kv_heads})")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    for index, name, needed in ((4, "decay", gating), (5, "beta", delta)):
        if needed != ctx.has_input(index):
            ctx.fail(f"update_rule {rule!r} {'requires' if needed else 'forbids'} the {name} "
                     f"input")
    for index, name in ((0, "query"), (1, "key"), (2, "value")):
        if ctx.type(index).rank != 3 or not is_float(ctx.type(index).dtype):
            ctx.fail(f"{name} must be a 3-D float tensor (B, T, H * D), got {ctx.type(index)}")
    dtype = ctx.type(0).dtype
    q = _packed(ctx, 0, q_heads, "query")
    k = _packed(ctx, 1, kv_heads, "key")
    v = _packed(ctx, 2, kv_heads, "value")
    batch, _, steps, d_k = shape_of(ctx, q)
    d_v = shape_of(ctx, v)[3]
    if shape_of(ctx, k)[3] != d_k:
        ctx.fail(f"query heads have {d_k} features but key heads {shape_of(ctx, k)[3]}")
    group = q_heads // kv_heads
    decay = None
    if gating:
        last = ctx.type(4).shape[-1]
        if ctx.type(4).rank != 3 or last not in (kv_heads, kv_heads * d_k):
            ctx.fail(f"decay has shape {ctx.type(4).shape}; its last dimension must be "
                     f"kv_num_heads ({kv_heads}) or kv_num_heads * d_k ({kv_heads * d_k})")
        # exp(decay) as (B, H_kv, T, d_k or 1), to scale the state's rows.
        decay = ctx.emit("exp", [_packed(ctx, 4, kv_heads, "decay")])
    beta = None
    if delta:
        last = ctx.type(5).shape[-1]
        if ctx.type(5).rank != 3 or last not in (kv_heads, 1):
            ctx.fail(f"beta has shape {ctx.type(5).shape}; its last dimension must be "
                     f"kv_num_heads ({kv_heads}) or 1")
        beta = _packed(ctx, 5, last, "beta")  # (B, H_kv or 1, T, 1)
    state_dtype = dtype
    if ctx.has_input(3):
        if tuple(ctx.type(3).shape) != (batch, kv_heads, d_k, d_v):
            ctx.fail(f"past_state has shape {ctx.type(3).shape}; expected "
                     f"{(batch, kv_heads, d_k, d_v)}")
        state_dtype = ctx.type(3).dtype
        state = cast(ctx, ctx.input(3), "float32")
    else:
        state = ctx.constant(np.zeros((batch, kv_heads, d_k, d_v), np.float32))
    scale = float(ctx.attr("scale", 0.0)) or 1.0 / float(np.sqrt(d_k))
    scale_value = ctx.constant(np.float32(scale))
    outputs = []
    for t in range(steps):
        k_t = _step(ctx, k, t)  # (B, H_kv, 1, d_k)
        v_t = _step(ctx, v, t)  # (B, H_kv, 1, d_v)
        if decay is not None:
            gate = _step(ctx, decay, t)  # (B, H_kv, 1, d_k or 1) -> rows of the state
            gate = ctx.emit("transpose", [gate], {"perm": (0, 1, 3, 2)})
            state = ctx.emit("mul", [state, gate])
        if beta is not None:
            retrieved = ctx.emit("matmul", [k_t, state])
            v_t = ctx.emit("mul", [_step(ctx, beta, t), ctx.emit("sub", [v_t, retrieved])])
        outer = ctx.emit("matmul", [ctx.emit("transpose", [k_t], {"perm": (0, 1, 3, 2)}), v_t])
        state = ctx.emit("add", [state, outer])
        # The group's query heads are rows of one product with their shared state.
        q_t = emit_reshape(ctx, _step(ctx, q, t), (batch, kv_heads, group, d_k))
        read = ctx.emit("mul", [ctx.emit("matmul", [q_t, state]), scale_value])
        outputs.append(emit_reshape(ctx, read, (batch, 1, q_heads * d_v)))
    out = outputs[0] if len(outputs) == 1 else ctx.emit("concat", outputs, {"axis": 1})
    return cast(ctx, out, dtype), cast(ctx, state, state_dtype)


# ----------------------------------------------------------------------------- causal conv


@converter("CausalConvWithState", since=27)
def causal_conv_with_state(ctx: ConvertContext) -> tuple[str, str]:
    """Depthwise 1-D convolution over [past_state (or zeros), input], the last k - 1 steps of
    which are the present state; optionally followed by SiLU."""
    activation = ctx.attr("activation", "none")
    if activation not in ("none", "silu", "swish"):
        ctx.fail(f"activation {activation!r} is not supported; ember supports 'none', "
                 f"'silu', 'swish'")
    x_type, w_type = ctx.type(0), ctx.type(1)
    if x_type.rank != 3 or not is_float(x_type.dtype):
        ctx.fail(f"input must be a 3-D float tensor (batch, channels, length), got {x_type}")
    batch, channels, length = x_type.shape
    if w_type.rank != 3 or w_type.shape[:2] != (channels, 1):
        ctx.fail(f"weight has shape {w_type.shape}; expected ({channels}, 1, k)")
    taps = w_type.shape[2]
    state_shape = (batch, channels, taps - 1)
    if ctx.has_input(3):
        if tuple(ctx.type(3).shape) != state_shape:
            ctx.fail(f"past_state has shape {ctx.type(3).shape}; expected {state_shape}")
        past = ctx.input(3)
    else:
        past = ctx.constant(np.zeros(state_shape, numpy_dtype(x_type.dtype)))
    padded = ctx.input(0) if taps == 1 else ctx.emit("concat", [past, ctx.input(0)], {"axis": 2})
    inputs = [padded, ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])
    out = ctx.emit("conv", inputs, {"strides": (1,), "dilations": (1,), "pads": (0, 0),
                                     "groups": channels})
    if activation != "none":
        if x_type.dtype in ("float16", "bfloat16"):
            wide = cast(ctx, out, "float32")
            out = cast(ctx, ctx.emit("mul", [wide, ctx.emit("sigmoid", [wide])]), x_type.dtype)
        else:
            out = ctx.emit("mul", [out, ctx.emit("sigmoid", [out])])
    total = length + taps - 1
    present = emit_slice(ctx, padded, {2: (total - (taps - 1), total, 1)}) if taps > 1 \
        else past
    return out, present

"""The CPU layout pass (opt level 3): float32 2-D convolutions in the blocked NCHW[x]c layout.

`convert_layout` rewrites every `conv` that can run blocked (2-D, float32, a constant
weight, output channels divisible by the block; groups=1 with input channels divisible too or
fewer than a block: an RGB stem reads one block of 3 channels, NCHW3c) into

    layout_transform(x, NCHW -> NCHW{b}c) -> conv2d_nchwc(x_blocked, packed weight)

with the weight packed at compile time (OC/b, IC/ic, KH, KW, ic, b); a grouped conv whose
groups' input and output channels are whole blocks into a grouped conv2d_nchwc (each output
block reads its group's input blocks; AlexNet's groups of 48 and 192 channels); a depthwise
conv (groups = channels = filters) whose input exists blocked already into
depthwise_conv2d_nchwc with its weight packed (C/b, KH, KW, b). Grouped convs whose groups
split blocks (ShuffleNet's 4 groups of 68 channels) stay NCHW: a blocked form would read
and multiply the zero weights of the neighbouring group's channels in every straddling block.
The blocked value then flows on through what can compute on it:

- layout-free elementwise and broadcast ops (relu, clip, the bias add, a residual add of two
  blocked tensors, ...), unchanged: their constant operands are transformed with numpy now, a
  non-constant NCHW operand of the same shape is transformed in;
- max_pool and average_pool, as the same op in 3-D over (H, W, b) with a one-wide window on
  the block axis (no new op);
- concat along channels when every part's channels divide into blocks;
- batch_norm with constant statistics, as a blocked multiply and add.

A value goes back to NCHW (one layout_transform, shared by all its readers) only where an op
that is not layout-aware (reshape, softmax, lrn, reduce_mean, ...) or a graph output reads it.

Transforms cancel where they meet: a conv reading a value that already exists blocked reads
it directly (a conv -> relu -> conv chain has one transform in and one out), and a transform
whose input is the inverse transform of a value is that value (also for transforms already in
the graph). The builder drops whatever this leaves dead (the unpacked weights).

Channel counts that do not divide into blocks (24, 184: MobileNetV3's) are padded to whole
blocks when that adds at most a third (`MAX_PADDING`): the conv weights and bias get zero rows
and columns, so padding channels come out of a conv as zeros and add nothing to the next; the
transform out drops them (layout_transform's `channels`). Between convs a padded value passes
only through ops that stay finite on any input (`PADDING_SAFE`), so what the padding channels
hold never turns into a NaN that a zero weight would spread.

The block is the host's float32 vector width (16 with AVX-512): one register of output
channels per accumulator in the conv2d_nchwc schedule (compiler/ops/cpu/conv_nchwc.py).
"""

from __future__ import annotations

import functools

import numpy as np

from ember.compiler.passes.rewrite import Rewriter
from ember.ir.graph import Graph, Node
from ember.ir.ops import Pattern, get_op
from ember.ir.ops.layout import (
    blocked_layout,
    pack_conv_weight,
    pack_depthwise_weight,
    padded_channels,
    to_blocked,
)

#: broadcast ops that are plain numpy broadcasting of their operands (no axis attribute, no
#: per-channel meaning): they compute the same in any layout when every operand is converted
LAYOUT_FREE_BROADCAST = frozenset({
    "add", "sub", "mul", "div", "maximum", "minimum", "pow", "where",
    "equal", "greater", "greater_equal", "less", "less_equal",
})


#: pooling ops that run blocked as a 3-D pool with a window of one along the block axis
BLOCKED_POOLS = frozenset({"max_pool", "average_pool"})

#: reductions over (H, W) that run blocked over the same axes of NCHW{b}c
BLOCKED_REDUCTIONS = frozenset({"reduce_mean", "reduce_max"})

#: ops that may compute on a value whose last channel block is padded: finite on any finite
#: input (the padding channels hold whatever they compute, never read by what follows: convs
#: weigh them zero, transforms out drop them); div only by a constant (its padding is 1)
PADDING_SAFE = frozenset({
    "relu", "clip", "sigmoid", "tanh", "leaky_relu", "gelu", "erf", "neg", "abs",
    "add", "sub", "mul", "div", "maximum", "minimum",
})

#: a channel count that does not divide into blocks is padded to whole blocks when that
#: adds at most a third (24 -> 32, 184 -> 192; not 20 -> 32)
MAX_PADDING = 1 / 3


@functools.cache
def host_block() -> int:
    """The host's float32 vector lanes: the channel block of the layout."""
    from ember.compiler.ops.cpu.hardware import cpu_facts
    from ember.target import Target

    return cpu_facts(Target.parse("llvm")).lanes("float32")


def convert_layout(graph: Graph, block: int | None = None) -> Graph:
    """`graph` with its convertible convolutions in the NCHW{block}c layout (see the module
    docstring).

    Args:
        graph: a typed graph (after constant folding, so conv weights are constants).
        block: the channel block; the host's float32 vector width when None.
    """
    block = block or host_block()
    if not any(_convertible_conv(graph, node, block) for node in graph.nodes):
        return graph
    return _LayoutRewrite(graph, block).run()


def _convertible_conv(graph: Graph, node: Node, block: int) -> bool:
    if node.op != "conv":
        return False
    x, w = graph.types[node.inputs[0]], graph.types[node.inputs[1]]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if not (x.rank == 4 and x.dtype == "float32" and node.inputs[1] in graph.constants
            and (not bias or bias in graph.constants) and _blocks(w.shape[0], block)):
        return False
    groups = node.attrs.groups
    if groups == 1:
        return _blocks(x.shape[1], block) or x.shape[1] < block
    if _is_depthwise(node, x.shape[1], w.shape[0]):
        return True
    return (x.shape[1] // groups) % block == 0 and (w.shape[0] // groups) % block == 0


def _blocks(channels: int, block: int) -> bool:
    """Whether `channels` go blocked: whole blocks, or more than one block padded by at most
    MAX_PADDING."""
    if channels % block == 0:
        return True
    return channels > block and padded_channels(channels, block) <= channels * (1 + MAX_PADDING)


def _is_depthwise(node: Node, channels: int, filters: int) -> bool:
    """One filter per channel (groups = channels = filters)."""
    return node.attrs.groups == channels == filters


def _input_block(channels: int, block: int) -> int:
    """The input-channel block of a conv: `block` (the last one padded if partial), or all
    channels when there are fewer (an RGB stem reads NCHW3c: one block of 3)."""
    return block if channels >= block else channels


def _layout_free(op: str) -> bool:
    return get_op(op).pattern == Pattern.ELEMWISE or op in LAYOUT_FREE_BROADCAST


class _LayoutRewrite:
    """One walk over the graph's nodes, tracking which old values exist in blocked form."""

    def __init__(self, graph: Graph, block: int):
        self.graph = graph
        self.block = block
        self.layout = blocked_layout(block)
        self.rewriter = Rewriter(graph)
        #: old 4-D value -> the new graph's value holding it blocked
        self.blocked: dict[str, str] = {}
        #: old values whose NCHW form exists in the new graph (rewriter.value gives it)
        self.plain: set[str] = set(graph.inputs) | set(graph.constants)
        #: new value made by a layout_transform -> (its input, src layout, dst layout)
        self.transforms: dict[str, tuple[str, str, str]] = {}

    def run(self) -> Graph:
        for node in self.graph.nodes:
            if _convertible_conv(self.graph, node, self.block) and self._pays(node):
                self._conv(node)
            elif node.op == "layout_transform":
                self._transform_node(node)
            elif not (self._try_blocked_elementwise(node) or self._try_blocked_pool(node)
                      or self._try_blocked_concat(node) or self._try_blocked_batch_norm(node)
                      or self._try_blocked_reduce(node)):
                self._keep(node)
        for name in self.graph.outputs:
            self._materialize(name)
        return self.rewriter.finish()

    # -- values in either layout

    def transform(self, value: str, src: str, dst: str, hint: str | None = None,
                  channels: int = 0) -> str:
        """`value` (of the new graph) in layout `dst` (to NCHW: its first `channels` when
        nonzero); the input of an inverse transform where `value` is one (the pair
        cancels)."""
        made = self.transforms.get(value)
        if made is not None and made[1:] == (dst, src):
            return made[0]
        for result, entry in self.transforms.items():  # the same transform made before
            if entry == (value, src, dst):
                return result
        attrs = {"src_layout": src, "dst_layout": dst}
        if channels:
            attrs["channels"] = channels
        (result,) = self.rewriter.emit("layout_transform", [value], attrs,
                                       hint=hint or f"{value}:{dst}")
        self.transforms[result] = (value, src, dst)
        return result

    def blocked_value(self, old: str) -> str:
        """The new graph's blocked form of the old 4-D NCHW value `old`."""
        if old not in self.blocked:
            self.blocked[old] = self.transform(self.rewriter.value(old), "NCHW", self.layout)
        return self.blocked[old]

    def _materialize(self, old: str) -> None:
        """Make the NCHW form of `old` exist (a transform out of its blocked form)."""
        if old and old not in self.plain and old in self.blocked:
            channels = self.graph.types[old].shape[1]
            padded = channels % self.block != 0
            self.rewriter.alias(old, self.transform(self.blocked[old], self.layout, "NCHW",
                                                    hint=old, channels=channels * padded))
        self.plain.add(old)

    def _keep(self, node: Node) -> None:
        for value in node.inputs:
            self._materialize(value)
        self.rewriter.keep(node)
        self.plain.update(node.outputs)

    # -- the rewrites

    def _conv(self, node: Node) -> None:
        x, w, *rest = node.inputs
        weight = self.graph.constants[w]
        attrs = {key: node.attrs[key] for key in ("strides", "dilations", "pads")}
        out = node.outputs[0]
        if self._depthwise(node):
            op, in_block = "depthwise_conv2d_nchwc", self.block
            packed = pack_depthwise_weight(weight, self.block)
        else:
            # grouped: (OC, IC/groups, KH, KW) packs like any weight, one group's channels
            op, in_block = "conv2d_nchwc", _input_block(weight.shape[1], self.block)
            packed = pack_conv_weight(weight, in_block, self.block)
            if node.attrs.groups > 1:
                attrs["groups"] = node.attrs.groups
        packed_name = self.rewriter.add_constant(packed, hint=f"{w}:{self.layout}")
        if in_block == self.block:
            data = self.blocked_value(x)
        else:
            self._materialize(x)
            data = self.transform(self.rewriter.value(x), "NCHW", blocked_layout(in_block))
        (result,) = self.rewriter.emit(op, [data, packed_name],
                                       attrs, node.name, hint=f"{out}:{self.layout}")
        if rest and rest[0]:
            bias = self.graph.constants[rest[0]].reshape(1, -1, 1, 1)
            bias_name = self.rewriter.add_constant(to_blocked(bias, self.block),
                                                   hint=f"{rest[0]}:{self.layout}")
            (result,) = self.rewriter.emit("add", [result, bias_name],
                                           hint=f"{out}:{self.layout}")
        self.blocked[out] = result

    def _depthwise(self, node: Node) -> bool:
        x, w = self.graph.types[node.inputs[0]], self.graph.types[node.inputs[1]]
        return _is_depthwise(node, x.shape[1], w.shape[0])

    def _pays(self, node: Node) -> bool:
        """A depthwise conv does too little work to pay for a transform of its input: it runs
        blocked only when its input exists blocked already."""
        return not self._depthwise(node) or node.inputs[0] in self.blocked

    def _transform_node(self, node: Node) -> None:
        """A layout_transform already in the graph: its NCHW side joins the tracking, so it
        cancels against this pass's transforms."""
        (x,), (out,) = node.inputs, node.outputs
        src, dst = node.attrs.src_layout, node.attrs.dst_layout
        if src == "NCHW" and dst == self.layout:
            self.rewriter.alias(out, self.blocked_value(x))
            self.plain.add(out)
        elif dst == "NCHW" and src == self.layout:
            self.blocked[out] = self.rewriter.value(x)
            made = self.transforms.get(self.blocked[out])
            if made is not None and made[1:] == ("NCHW", self.layout):  # back to its source
                self.rewriter.alias(out, made[0])
                self.plain.add(out)
        else:
            self._materialize(x)
            self.rewriter.alias(out, self.transform(self.rewriter.value(x), src, dst))
            self.plain.add(out)

    def _try_blocked_elementwise(self, node: Node) -> bool:
        """Compute a layout-free op in the blocked layout when an operand exists only blocked
        and every other can be blocked: blocked too, a constant, or an NCHW value of the
        output's shape (transformed in)."""
        if len(node.outputs) != 1 or not _layout_free(node.op):
            return False
        # only where an operand exists blocked alone: else NCHW costs no transform
        if not any(v in self.blocked and v not in self.plain for v in node.inputs):
            return False
        shape = self.graph.types[node.outputs[0]].shape
        if len(shape) == 4 and shape[1] % self.block and not self._padding_safe(node):
            return False
        fill = 1.0 if node.op == "div" else 0.0
        operands = [self._operand(value, shape, fill) for value in node.inputs]
        if any(operand is None for operand in operands):
            return False
        inputs = [self.blocked_value(value) if kind == "nchw" else value
                  for kind, value in operands]
        (result,) = self.rewriter.emit(node.op, inputs, node.attrs, node.name,
                                       hint=f"{node.outputs[0]}:{self.layout}")
        self.blocked[node.outputs[0]] = result
        return True

    def _try_blocked_pool(self, node: Node) -> bool:
        """max_pool or average_pool of a blocked 2-D input, as the same op in 3-D over
        (H, W, block) with a window of one along the block axis."""
        if node.op not in BLOCKED_POOLS or len(node.outputs) != 1:
            return False
        (x,) = node.inputs
        if x not in self.blocked or len(node.attrs.kernel_shape) != 2:
            return False
        attrs = node.attrs
        top, left, bottom, right = attrs.pads
        blocked_attrs = attrs.replace(
            kernel_shape=(*attrs.kernel_shape, 1), strides=(*attrs.strides, 1),
            dilations=(*attrs.dilations, 1), pads=(top, left, 0, bottom, right, 0))
        (result,) = self.rewriter.emit(node.op, [self.blocked[x]], blocked_attrs, node.name,
                                       hint=f"{node.outputs[0]}:{self.layout}")
        self.blocked[node.outputs[0]] = result
        return True

    def _try_blocked_reduce(self, node: Node) -> bool:
        """A global pool as a reduction over H and W keeping them (a squeeze-and-excite
        block's mean) of a blocked value: the same reduction over the blocked H and W axes,
        its (N, C/b, 1, 1, b) result blocked too."""
        if node.op not in BLOCKED_REDUCTIONS or len(node.outputs) != 1:
            return False
        (x,) = node.inputs
        if x not in self.blocked or tuple(node.attrs.axes) != (2, 3) or not node.attrs.keepdims:
            return False
        (result,) = self.rewriter.emit(node.op, [self.blocked[x]], node.attrs, node.name,
                                       hint=f"{node.outputs[0]}:{self.layout}")
        self.blocked[node.outputs[0]] = result
        return True

    def _try_blocked_concat(self, node: Node) -> bool:
        """A concat along channels of values that all block (channels divisible by the
        block), one of them blocked alone: the same concat of the blocked values."""
        if node.op != "concat" or node.attrs.axis != 1:
            return False
        if not any(v in self.blocked and v not in self.plain for v in node.inputs):
            return False
        inputs = []
        for value in node.inputs:
            value_type = self.graph.types[value]
            if value_type.rank != 4 or value_type.shape[1] % self.block:
                return False
        for value in node.inputs:
            inputs.append(self.blocked_value(value))
        (result,) = self.rewriter.emit("concat", inputs, node.attrs, node.name,
                                       hint=f"{node.outputs[0]}:{self.layout}")
        self.blocked[node.outputs[0]] = result
        return True

    def _try_blocked_batch_norm(self, node: Node) -> bool:
        """batch_norm with constant statistics of a blocked value: its scale and shift
        (computed as the reference computes them) as a blocked multiply and add."""
        if node.op != "batch_norm" or len(node.outputs) != 1:
            return False
        x, *params = node.inputs
        if x not in self.blocked or self.graph.types[x].dtype != "float32":
            return False
        arrays = [self.rewriter.constant(self.rewriter.value(p)) for p in params]
        if any(a is None for a in arrays):
            return False
        scale, bias, mean, var = (a.astype(np.float32).reshape(1, -1, 1, 1) for a in arrays)
        factor = scale / np.sqrt(var + np.float32(node.attrs.epsilon))
        shift = bias - mean * factor
        out = node.outputs[0]
        factor_name = self.rewriter.add_constant(to_blocked(factor, self.block),
                                                 hint=f"{out}:scale:{self.layout}")
        shift_name = self.rewriter.add_constant(to_blocked(shift, self.block),
                                                hint=f"{out}:shift:{self.layout}")
        (scaled,) = self.rewriter.emit("mul", [self.blocked[x], factor_name],
                                       hint=f"{out}:scaled:{self.layout}")
        (result,) = self.rewriter.emit("add", [scaled, shift_name], {}, node.name,
                                       hint=f"{out}:{self.layout}")
        self.blocked[out] = result
        return True

    def _padding_safe(self, node: Node) -> bool:
        """Whether `node` may compute on padded channels (PADDING_SAFE; a divisor must be a
        constant, whose padding is 1)."""
        if node.op not in PADDING_SAFE:
            return False
        if node.op == "div":
            divisor = self.rewriter.value(node.inputs[1])
            return self.rewriter.constant(divisor) is not None
        return True

    def _operand(self, value: str, shape: tuple[int, ...],
                 fill: float = 0.0) -> tuple[str, str] | None:
        """How operand `value` reads in the blocked layout: ("new", a new graph value),
        ("nchw", the old value, to transform in), or None when it cannot."""
        if not value:
            return ("new", value)
        if value in self.blocked:
            if not self._broadcasts_blocked(self.graph.types[value].shape, shape):
                return None
            return ("new", self.blocked[value])
        new = self.rewriter.value(value)
        constant = self.rewriter.constant(new)
        if constant is not None:
            if constant.size == 1 and constant.ndim <= 4:
                return ("new", new)  # broadcasts the same against any layout
            blocked = self._blocked_constant(constant, shape, hint=f"{new}:{self.layout}",
                                             fill=fill)
            return None if blocked is None else ("new", blocked)
        if self._broadcasts_blocked(self.graph.types[value].shape, shape):
            self._materialize(value)
            return ("nchw", value)
        return None

    @staticmethod
    def _broadcasts_blocked(operand: tuple[int, ...], shape: tuple[int, ...]) -> bool:
        """Whether an NCHW operand of shape `operand` broadcasts against `shape` the same in
        the blocked layout: the same batch and channels, each of H and W equal or 1 (an
        excite scale (N, C, 1, 1) times the features)."""
        if len(operand) != 4 or len(shape) != 4 or operand[:2] != shape[:2]:
            return False
        return all(a in (1, b) for a, b in zip(operand[2:], shape[2:]))

    def _blocked_constant(self, array: np.ndarray, shape: tuple[int, ...],
                          hint: str, fill: float = 0.0) -> str | None:
        """A constant operand broadcasting against an NCHW `shape`, as one broadcasting
        against its blocked form (a per-channel vector becomes (1, C/b, 1, 1, b), a partial
        last block padded with `fill`)."""
        if array.ndim > 4:
            return None
        full = array.reshape((1,) * (4 - array.ndim) + array.shape)
        if full.shape[1] == 1:
            n, _, h, w = full.shape
            blocked = full.reshape(n, 1, h, w, 1)
        elif full.shape[1] == shape[1]:
            blocked = to_blocked(full, self.block, fill)
        else:
            return None
        return self.rewriter.add_constant(blocked, hint=hint)

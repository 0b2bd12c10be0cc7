"""Algebraic simplification: rewrites that remove work or put it where fusion can take it.

- identity removal (ONNX Identity, and Dropout, which the frontend imports as identity);
- batch_norm, or a mul by a per-channel constant, after a conv or a 2-D matmul with constant
  weights (optionally + a constant bias: the conv's own, or an add, the form Gemm imports as)
  whose value nothing else reads, folded into the weights plus one bias add; two constant bias
  adds (or a conv's bias and an add) merged into one. The result is always in the canonical
  form `add(conv(x, w), bias)`, `add(matmul(x, w), bias)`: the bias is an epilogue the fused
  kernel applies as it stores;
- a per-channel constant mul or add after a batch_norm merged into its scale and bias;
- add/mul with the constant operand first turned around (`add(c, matmul(..))` ->
  `add(matmul(..), c)`), the canonical order fusion and pattern matching expect;
- reshape of reshape merged; reshape to the same shape removed;
- transpose of transpose composed, and removed when the composition is the identity.

Each sweep rewrites with the old graph's structure; `simplify` sweeps until nothing changes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ember.compiler.passes.rewrite import Rewriter
from ember.ir.graph import Graph, Node, dtype_name, is_float

#: Sweeps before giving up on a fixed point (each sweep removes at least one node or swap).
MAX_SWEEPS = 8

def simplify(graph: Graph) -> Graph:
    """`graph` with the rewrites above applied until none applies."""
    for _ in range(MAX_SWEEPS):
        simpler = _sweep(graph)
        if simpler is graph:
            break
        graph = simpler
    return graph


class _Sweep:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.rewriter = Rewriter(graph)
        self.changed = False

    def producer(self, value: str) -> Node | None:
        return self.graph.producers.get(value)

    def only_reader(self, value: str) -> bool:
        """Whether exactly one node reads `value` and it is no graph output."""
        return len(self.graph.consumers.get(value, ())) == 1 and value not in self.graph.outputs

    def can_alias(self, value: str, source: str) -> bool:
        """Whether `value` may be replaced by `source`: a graph output keeps its own value when
        the source is a graph input, a constant or another output (else it would come back as
        an identity node, sweep after sweep)."""
        graph = self.graph
        return value not in graph.outputs or not (
            source in graph.inputs or source in graph.constants or source in graph.outputs
        )

    def constant(self, old: str) -> np.ndarray | None:
        return self.rewriter.constant(self.rewriter.value(old)) if old else None

    def run(self) -> Graph:
        rules = {
            "identity": self.identity,
            "reshape": self.reshape,
            "transpose": self.transpose,
            "batch_norm": self.batch_norm,
            "add": self.scale_or_shift,
            "mul": self.scale_or_shift,
            "maximum": self.commute,
            "minimum": self.commute,
        }
        for node in self.graph.nodes:
            rule = rules.get(node.op)
            if rule is not None and rule(node):
                self.changed = True
            else:
                self.rewriter.keep(node)
        return self.rewriter.finish() if self.changed else self.graph

    # -- rules: each returns True when it replaced the node

    def identity(self, node: Node) -> bool:
        if not self.can_alias(node.outputs[0], node.inputs[0]):
            return False
        self.rewriter.alias(node.outputs[0], self.rewriter.value(node.inputs[0]))
        return True

    def reshape(self, node: Node) -> bool:
        source = node.inputs[0]
        inner = self.producer(source)
        if inner is not None and inner.op == "reshape":
            source = inner.inputs[0]
        same_shape = self.graph.types[source].shape == tuple(node.attrs.shape)
        if same_shape and self.can_alias(node.outputs[0], source):
            self.rewriter.alias(node.outputs[0], self.rewriter.value(source))
            return True
        if source == node.inputs[0] or same_shape:
            return False
        self.rewriter.emit("reshape", [self.rewriter.value(source)], node.attrs, node.name,
                           replaces=node)
        return True

    def transpose(self, node: Node) -> bool:
        source, perm = node.inputs[0], tuple(node.attrs.perm)
        inner = self.producer(source)
        if inner is not None and inner.op == "transpose":
            # output axis i is inner's output axis perm[i], which is inner's input axis
            # inner.perm[perm[i]]
            source, perm = inner.inputs[0], tuple(inner.attrs.perm[p] for p in perm)
        if perm == tuple(range(len(perm))) and self.can_alias(node.outputs[0], source):
            self.rewriter.alias(node.outputs[0], self.rewriter.value(source))
            return True
        if source == node.inputs[0] or perm == tuple(range(len(perm))):
            return False
        self.rewriter.emit("transpose", [self.rewriter.value(source)], {"perm": perm},
                           node.name, replaces=node)
        return True

    def commute(self, node: Node) -> bool:
        first, second = node.inputs
        if self.constant(first) is None or self.constant(second) is not None:
            return False
        self.rewriter.emit(node.op, [self.rewriter.value(second), self.rewriter.value(first)],
                           node.attrs, node.name, replaces=node)
        return True

    def scale_or_shift(self, node: Node) -> bool:
        """A per-channel constant multiplying a conv's (or 2-D matmul's) output goes into its
        weights; one added to an output that already has a bias merges into that bias (TVM
        pushes batch norm's scale and shift into the conv the same way)."""
        for k in (0, 1):
            value, constant = node.inputs[k], node.inputs[1 - k]
            array = self.constant(constant)
            if array is not None and self._into_batch_norm(node, value, array):
                return True
            affine = self.affine_source(value) if array is not None else None
            if affine is None or self.graph.types[node.outputs[0]].shape != affine.shape:
                continue
            vector = _per_channel(array, affine.shape)
            if vector is None:
                continue
            if node.op == "mul":
                return self._fold(node, affine, vector, np.zeros_like(vector))
            if affine.bias is not None:  # a bare conv/matmul + add is already canonical
                return self._fold(node, affine, np.ones_like(vector), vector)
        return self.commute(node)

    def _into_batch_norm(self, node: Node, value: str, array: np.ndarray) -> bool:
        """batch_norm followed by a per-channel mul or add (DenseNet's spelled-out batch norm)
        becomes one batch_norm with a new scale and bias."""
        bn = self.producer(value)
        if bn is None or bn.op != "batch_norm" or not self.only_reader(value):
            return False
        shape = self.graph.types[value].shape
        vector = _per_channel(array, shape)
        scale, bias = self.constant(bn.inputs[1]), self.constant(bn.inputs[2])
        if vector is None or scale is None or bias is None:
            return False
        if self.graph.types[node.outputs[0]] != self.graph.types[value]:
            return False
        if node.op == "mul":
            scale, bias = scale * vector, bias * vector
        else:
            bias = bias + vector
        rewriter = self.rewriter
        new_scale = rewriter.add_constant(scale.astype(array.dtype), hint=f"{bn.inputs[1]}:s")
        new_bias = rewriter.add_constant(bias.astype(array.dtype), hint=f"{bn.inputs[2]}:s")
        inputs = [rewriter.value(bn.inputs[0]), new_scale, new_bias,
                  *(rewriter.value(v) for v in bn.inputs[3:])]
        rewriter.emit("batch_norm", inputs, bn.attrs, bn.name, replaces=node)
        return True

    def batch_norm(self, node: Node) -> bool:
        params = [self.constant(v) for v in node.inputs[1:]]
        affine = self.affine_source(node.inputs[0])
        if affine is None or any(p is None for p in params):
            return False
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + node.attrs.epsilon)
        # batch_norm's channel axis is 1: for a matmul that is the 2-D output's columns
        return self._fold(node, affine, factor, bias - mean * factor)

    def affine_source(self, value: str) -> _Affine | None:
        """`value` as a conv or 2-D matmul with a constant float weight, plus a per-channel
        constant bias (its own, or an add of one), when nothing else reads its parts."""
        node = self.producer(value)
        if node is None or not self.only_reader(value):
            return None
        if node.op != "add":
            return self._linear(node, None)
        for k in (0, 1):
            inner_value, array = node.inputs[k], self.constant(node.inputs[1 - k])
            inner = self.producer(inner_value)
            if array is None or inner is None or not self.only_reader(inner_value):
                continue
            shape = self.graph.types[inner_value].shape
            vector = _per_channel(array, shape)
            if vector is not None and self.graph.types[value].shape == shape:
                affine = self._linear(inner, vector)
                if affine is not None:
                    return affine
        return None

    def _linear(self, node: Node, added: np.ndarray | None) -> _Affine | None:
        if node.op not in ("conv", "matmul"):
            return None
        weight = self.constant(node.inputs[1])
        shape = self.graph.types[node.outputs[0]].shape
        if weight is None or not _is_float(weight):
            return None
        own = None
        if node.op == "conv":
            if len(node.inputs) > 2 and node.inputs[2]:
                own = self.constant(node.inputs[2])
                if own is None:
                    return None
        elif weight.ndim != 2 or len(shape) != 2:
            return None
        biases = [b.astype(np.float64) for b in (own, added) if b is not None]
        bias = sum(biases[1:], biases[0]) if biases else None
        return _Affine(node, weight, bias, shape)

    def _fold(self, node: Node, affine: _Affine, factor: np.ndarray, shift: np.ndarray) -> bool:
        """Replace `node`, which computes `affine`'s value * factor + shift per channel, by
        the conv/matmul with scaled weights and (unless it is zero) one bias add."""
        linear, weight = affine.node, affine.weight
        rewriter = self.rewriter
        if np.all(factor == 1):
            w = rewriter.value(linear.inputs[1])
        else:
            axis = 0 if linear.op == "conv" else 1  # the weight's output-channel axis
            shape = [1] * weight.ndim
            shape[axis] = -1
            scaled = (weight.astype(np.float64) * factor.reshape(shape)).astype(weight.dtype)
            w = rewriter.add_constant(scaled, hint=f"{linear.inputs[1]}:folded")
        data = rewriter.value(linear.inputs[0])
        bias = (affine.bias * factor if affine.bias is not None else 0 * factor) + shift
        if affine.bias is None and not np.any(shift):
            rewriter.emit(linear.op, [data, w], linear.attrs, linear.name, replaces=node)
            return True
        (product,) = rewriter.emit(linear.op, [data, w], linear.attrs, linear.name,
                                   hint=linear.outputs[0])
        bias_shape = (-1, *(1,) * (len(affine.shape) - 2)) if linear.op == "conv" else (-1,)
        b = rewriter.add_constant(bias.reshape(bias_shape).astype(weight.dtype),
                                  hint=f"{node.outputs[0]}:bias")
        rewriter.emit("add", [product, b], {}, node.name, replaces=node)
        return True


@dataclasses.dataclass(frozen=True)
class _Affine:
    """A value computed as `node(x, weight)` plus a per-channel `bias` (float64, or None)."""

    node: Node  # a conv or a 2-D matmul
    weight: np.ndarray
    bias: np.ndarray | None
    shape: tuple[int, ...]  # the value's shape


def _is_float(array: np.ndarray) -> bool:
    return is_float(dtype_name(array.dtype))


def _per_channel(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`array` as one float64 value per channel (axis 1) of a value of `shape`, when it
    broadcasts against that value along axis 1 only; else None."""
    if array.ndim > len(shape) or len(shape) < 2 or array.dtype.kind not in "fiu":
        return None
    padded = array.reshape((1,) * (len(shape) - array.ndim) + array.shape)
    if any(d != 1 for axis, d in enumerate(padded.shape) if axis != 1):
        return None
    if padded.shape[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(padded.reshape(-1), (shape[1],)).astype(np.float64)


def _sweep(graph: Graph) -> Graph:
    return _Sweep(graph).run()

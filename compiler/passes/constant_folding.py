"""Constant folding: every node whose inputs are all constants becomes a constant.

Evaluation goes through each op's numpy reference, so a folded value is exactly what the
reference executor would compute. Ops marked not foldable (random numbers) stay, and so does a
node whose result would be much larger than its inputs (a broadcast of a small constant), which
would only bloat the parameters. The ONNX frontend already folds while importing; this pass
folds what other passes, or a hand-built graph, leave foldable.
"""

from __future__ import annotations

from ember.compiler.passes.rewrite import Rewriter
from ember.errors import IRError
from ember.ir.graph import Graph, Node, TensorType
from ember.ir.ops import get_op

#: A folded result may be this many times the bytes of its constant inputs ...
MAX_GROWTH = 4
#: ... or this small whatever its inputs.
SMALL_BYTES = 1 << 16


def fold_constants(graph: Graph) -> Graph:
    """`graph` with every foldable all-constant node replaced by its value."""
    constants = set(graph.constants)
    rewriter = Rewriter(graph)
    changed = False
    for node in graph.nodes:
        if not _foldable(graph, node, constants):
            rewriter.keep(node)
            continue
        changed = True
        arrays = [rewriter.constant(rewriter.value(v)) if v else None for v in node.inputs]
        results = get_op(node.op).evaluate(node.attrs, arrays)
        for old, array in zip(node.outputs, results):
            if TensorType.of(array) != graph.types[old]:
                raise IRError(f"{node.op}: folding gave {TensorType.of(array)} for %{old}, "
                              f"typed {graph.types[old]}")
            rewriter.alias(old, rewriter.add_constant(array, hint=old))
            constants.add(old)
    return rewriter.finish() if changed else graph


def _foldable(graph: Graph, node: Node, constants: set[str]) -> bool:
    present = [v for v in node.inputs if v]
    if not get_op(node.op).foldable or not all(v in constants for v in present):
        return False
    in_bytes = sum(graph.types[v].nbytes for v in present)
    out_bytes = sum(graph.types[v].nbytes for v in node.outputs)
    return out_bytes <= SMALL_BYTES or out_bytes <= MAX_GROWTH * in_bytes

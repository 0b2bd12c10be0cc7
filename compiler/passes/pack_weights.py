"""The weight-packing pass (opt level 3): matmuls with a constant 2-D float32 second operand
(a dense layer's or an LLM's weights) become `dense_packed` with the weights packed into
column panels at compile time.

    matmul(x, B)  with B (K, N) constant   ->   dense_packed(x, W; n=N)
                                                W = B as (ceil(N/nb), K, nb) panels

`ir/ops/dense.py` defines the layout; the panel width nb is the CPU template's choice for
the product's shape and the host (`compiler/ops/cpu/dense.py::panel_width`). Packing pays or
breaks even on every such product measured (a panel streams contiguously where B's rows are N
floats apart), from a decode GEMV (1 x 768 x 768) to the vocabulary projection (128 x 768 x 50257),
so it applies whenever the operands qualify: float32 both, x of any rank >= 1 (batch axes
and rows are kept), B 2-D. A weight read by several matmuls is packed once; the unpacked
weight is dropped when nothing else reads it.

A computed 2-D B of a large product (at least `RUNTIME_PACK_ROWS` rows of x and
`RUNTIME_PACK_WORK` multiply-adds) is packed at run time instead, as TVM's x86 dense does:
`pad` (to whole panels) -> `reshape` (K, P, nb) -> `transpose` (P, K, nb), one injective
kernel copying K * N floats, which the product's M * K * N multiply-adds repay many times
over (2048^3: a 16 MiB copy against 17 GFLOP); from `RUNTIME_PACK_RAGGED_ROWS` rows when N
is no multiple of the vector width. Smaller products of two computed values and
batched ones (attention's) stay `matmul`.
"""

from __future__ import annotations

from ember.compiler.passes.rewrite import Rewriter
from ember.ir.graph import Graph, Node
from ember.ir.ops.dense import DENSE_DTYPES, pack_dense_weight

#: rows of x from which a computed B is packed at run time: the copy (read and write K * N
#: floats, ~10 GB/s) against M * K * N multiply-adds (~200 GFLOP/s) costs about 80 / M of the
#: product, 30% at 256 rows (128 x 768 x 50257 ran slower packed at run time than unpacked)
RUNTIME_PACK_ROWS = 256
#: the same for a B whose N is no multiple of the vector width
RUNTIME_PACK_RAGGED_ROWS = 16
#: multiply-adds from which a computed B is packed at run time
RUNTIME_PACK_WORK = 1 << 24


def _host_facts():
    from ember.compiler.ops.cpu.hardware import cpu_facts
    from ember.target import Target

    return cpu_facts(Target.parse("llvm"))


def _rows(graph: Graph, value: str) -> int:
    rows = 1
    for d in graph.types[value].shape[:-1]:
        rows *= d
    return rows


def packable(graph: Graph, node: Node) -> bool:
    """Whether `node` is a matmul this pass rewrites (see the module docstring)."""
    if node.op != "matmul" or len(node.inputs) != 2:
        return False
    x, b = node.inputs
    x_type, b_type = graph.types[x], graph.types[b]
    if not (b_type.rank == 2 and x_type.rank >= 1 and x_type.dtype in DENSE_DTYPES
            and b_type.dtype == x_type.dtype and 0 not in b_type.shape
            and 0 not in x_type.shape):
        return False
    if b in graph.constants:
        return True
    rows = _rows(graph, x)
    if rows * b_type.size < RUNTIME_PACK_WORK:
        return False
    # N off the vector width: the matmul template masks every multiply-add of its last
    # column block (128 x 768 x 50257: 31 GFLOP/s; packed, its copy included, about 4x that)
    ragged = b_type.shape[1] % _host_facts().lanes(x_type.dtype) != 0
    return rows >= (RUNTIME_PACK_RAGGED_ROWS if ragged else RUNTIME_PACK_ROWS)


def pack_weights(graph: Graph, panel: int | None = None) -> Graph:
    """`graph` with its packable matmuls as `dense_packed` (see the module docstring).

    Args:
        graph: a typed graph after constant folding (weights are constants).
        panel: the panel width nb for every product; the template's choice per shape when
            None (tests and measurements pass one).
    """
    if not any(packable(graph, node) for node in graph.nodes):
        return graph
    from ember.compiler.ops.cpu.dense import panel_width

    facts = _host_facts()
    rewriter = Rewriter(graph)
    packed: dict[tuple[str, int], str] = {}
    for node in graph.nodes:
        if not packable(graph, node):
            rewriter.keep(node)
            continue
        x, b = node.inputs
        k, n = graph.types[b].shape
        nb = panel or panel_width(_rows(graph, x), k, n, facts)
        if (b, nb) not in packed:
            if b in graph.constants:
                packed[(b, nb)] = rewriter.add_constant(
                    pack_dense_weight(graph.constants[b], nb), hint=f"{b}:panels{nb}")
            else:
                packed[(b, nb)] = _pack_at_run_time(rewriter, rewriter.value(b), k, n, nb)
        rewriter.emit("dense_packed", [rewriter.value(x), packed[(b, nb)]], {"n": n},
                      node.name, replaces=node)
    return rewriter.finish()


def _pack_at_run_time(rewriter: Rewriter, b: str, k: int, n: int, nb: int) -> str:
    """Nodes computing `pack_dense_weight(b, nb)` of the computed (k, n) value `b`."""
    panels = -(-n // nb)
    if panels * nb != n:
        (b,) = rewriter.emit("pad", [b], {"pads": ((0, 0), (0, panels * nb - n))},
                             hint=f"{b}:padded")
    (b,) = rewriter.emit("reshape", [b], {"shape": (k, panels, nb)}, hint=f"{b}:split")
    (b,) = rewriter.emit("transpose", [b], {"perm": (1, 0, 2)}, hint=f"{b}:panels{nb}")
    return b

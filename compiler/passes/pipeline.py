"""The graph-pass pipeline of each opt level, as a readable list of pass names.

    0: nothing (the graph as imported)
    1: simplify, then drop what it left dead
    2: + fold constants and merge common subexpressions (`fuse` then plans the kernels)
    3: + layout: conv2d in the blocked NCHW[x]c layout with weights packed at compile time
       (`convert_layout`, layout.py); matmul weights packed in column panels
       (`pack_weights`, pack_weights.py)

`optimize(graph, level)` runs a level's passes in order; `run_passes` runs any list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ember.compiler.passes.common_subexpressions import eliminate_common_subexpressions
from ember.compiler.passes.constant_folding import fold_constants
from ember.compiler.passes.dead_code import eliminate_dead_code
from ember.compiler.passes.layout import convert_layout
from ember.compiler.passes.pack_weights import pack_weights
from ember.compiler.passes.simplify import simplify
from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.verify import verify

Pass = Callable[[Graph], Graph]

#: Every graph pass by name.
PASSES: dict[str, Pass] = {
    "fold_constants": fold_constants,
    "eliminate_dead_code": eliminate_dead_code,
    "eliminate_common_subexpressions": eliminate_common_subexpressions,
    "simplify": simplify,
    "convert_layout": convert_layout,
    "pack_weights": pack_weights,
}

_LEVEL_1 = ["simplify", "eliminate_dead_code"]
_LEVEL_2 = [
    "fold_constants",
    "simplify",
    "fold_constants",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]

#: The passes of each opt level, in order.
PIPELINES: dict[int, list[str]] = {
    0: [],
    1: _LEVEL_1,
    2: _LEVEL_2,
    3: [*_LEVEL_2, "pack_weights", "convert_layout"],
}


def run_passes(graph: Graph, names: Sequence[str], check: bool = False) -> Graph:
    """Run the named passes in order; with `check`, verify the graph after each."""
    for name in names:
        graph = PASSES[name](graph)
        if check:
            verify(graph)
    return graph


def optimize(graph: Graph, opt_level: int = 2, check: bool = False) -> Graph:
    """`graph` through the pipeline of `opt_level` (0-3; see the module docstring).

    Args:
        graph: a verified graph.
        opt_level: 0 none; 1 simplify; 2 + fold and CSE; 3 + layout.
        check: verify the graph after every pass (tests and debugging).
    """
    if opt_level not in PIPELINES:
        raise EmberError(f"opt level {opt_level} does not exist; use one of {sorted(PIPELINES)}")
    return run_passes(graph, PIPELINES[opt_level], check=check)

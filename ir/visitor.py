"""One traversal engine for every IR tree (expressions, te reductions, loop-IR statements).

Nodes are frozen dataclasses; their fields are children when they are IR nodes or tuples of
them. `transform` rebuilds a tree bottom-up through a rewrite function, sharing unchanged
subtrees; `collect` finds nodes of a kind; `substitute` replaces variables simultaneously.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ember.ir.expr import Expr, Var


def _is_node(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def children(node: Any) -> list[Any]:
    """The direct child nodes of `node` (flattening tuple fields)."""
    out: list[Any] = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if _is_node(value):
            out.append(value)
        elif isinstance(value, tuple):
            out.extend(v for v in value if _is_node(v))
    return out


def transform(node: Any, rewrite: Callable[[Any], Any | None]) -> Any:
    """Rebuild `node` bottom-up: children first, then `rewrite(new_node)`, whose non-None
    result replaces the node. Subtrees that do not change are shared, not copied."""
    memo: dict[int, Any] = {}

    def visit(value: Any) -> Any:
        if isinstance(value, tuple):
            new = tuple(visit(v) for v in value)
            return value if all(a is b for a, b in zip(new, value)) else new
        if not _is_node(value):
            return value
        key = id(value)
        if key in memo:
            return memo[key]
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = visit(old)
            if new is not old:
                changes[f.name] = new
        rebuilt = dataclasses.replace(value, **changes) if changes else value
        result = rewrite(rebuilt)
        memo[key] = rebuilt if result is None else result
        return memo[key]

    return visit(node)


def collect(node: Any, kind: type | tuple[type, ...]) -> list[Any]:
    """Every node of `kind` in the tree, in pre-order (repeats included)."""
    found: list[Any] = []
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, tuple):
            stack.extend(reversed(value))
            continue
        if not _is_node(value):
            continue
        if isinstance(value, kind):
            found.append(value)
        stack.extend(reversed(children(value)))
    return found


def substitute(node: Any, mapping: Mapping[Var, Expr]) -> Any:
    """Replace variables by expressions, all at once (a replacement is not substituted again)."""
    if not mapping:
        return node

    def rewrite(value: Any) -> Any | None:
        if isinstance(value, Var):
            return mapping.get(value)
        return None

    return transform(node, rewrite)


def uses_var(node: Any, var: Var) -> bool:
    return any(v == var for v in collect(node, Var))


def is_expr(value: Any) -> bool:
    return isinstance(value, Expr)

"""Operator fusion partitioning: which nodes of a graph run as one kernel (TVM's rules).

`fuse(graph)` returns a `FusionPlan`: every node in exactly one `FusedGroup`, the groups in an
order that respects data dependences, and every refused fusion with its reason. The fused-kernel
code generator builds one kernel per group.

The algorithm is Relay's FuseOps. The dataflow DAG gets a virtual sink that every node whose
value leaves the graph (a graph output, or a value nothing reads) feeds; networkx's
`immediate_dominators` on the reversed DAG, rooted at that sink, gives each node's immediate
post-dominator. Groups live in a union-find. In topological order, the root of each group tries
to join the group of its node's immediate post-dominator when every node on every path between
them passes the phase's test (tvm.md, "Graph level"):

- phase 0: a group anchored by an out-elementwise-fusable op (conv, matmul, pool, softmax)
  joins when every edge on the way is elementwise and every node on it, the sink included, is at
  most broadcast (conv + bias + relu + residual add);
- phase 1: an at-most-broadcast group joins through at-most-injective paths into an injective,
  reduce or existing anchored group; an injective group joins when everything up to the sink is
  at most injective.

As in Relay, an edge into a broadcast op whose input has the op's output shape counts as
elementwise (a bias or residual add). Relay's phase 2 (injective ops into an already fused
tuple) has no counterpart: ember has no tuple values, and concat is an ordinary injective op
that phase 1 handles. A reduction never starts a fusion; opaque and multi-output nodes stay
alone; a node whose value is a graph output ends its group.

Two departures from Relay, both for the code generator: Relay also runs the broadcast rule in
phase 0, ember defers it to phase 1 so that a conv's epilogue is never pre-empted by a side
producer fusing into it first; and every candidate group is finally checked against the
invariants the code generator relies on (`_check_group`: one value leaves, one anchor, only
elementwise/broadcast producers of the anchor's inputs before it, an elementwise epilogue of
the anchor's shape after it), so a fusion the phase rules allow but the code generator could not
emit (a side input of an epilogue computed inside the kernel) is refused with its reason.
Refusals are logged on the "ember.fusion" logger (DEBUG).
"""

from __future__ import annotations

import dataclasses
import logging

import networkx as nx

from ember.ir.graph import Graph, Node
from ember.ir.ops import Pattern, get_op

logger = logging.getLogger("ember.fusion")

#: Relay's limit on the ops of one fused function.
MAX_GROUP_SIZE = 256

_SINK = -1


@dataclasses.dataclass(frozen=True)
class FusedGroup:
    """Nodes that run as one kernel."""

    nodes: tuple[int, ...]  # indices into graph.nodes, ascending (topological) order
    anchor: int  # index of the group's master node: its most complex pattern op
    #              (conv/matmul/pool/softmax/reduce); for a group of injective ops only, the LAST


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A fusion the rules refused."""

    node: str  # graph node name that did not fuse
    into: str  # the node it would have joined
    reason: str  # e.g. "path through reduce_sum is not elementwise"


@dataclasses.dataclass(frozen=True)
class FusionPlan:
    groups: tuple[FusedGroup, ...]  # every node in exactly one group, in dependence order
    refused: tuple[Refusal, ...]

    def group_of(self) -> dict[int, int]:
        """Node index -> index of its group in `groups`."""
        return {node: g for g, group in enumerate(self.groups) for node in group.nodes}


def node_label(graph: Graph, index: int) -> str:
    """A node's name, or `op:first_output` for an unnamed node."""
    node = graph.nodes[index]
    return node.name or f"{node.op}:{node.outputs[0] if node.outputs else index}"


def node_pattern(node: Node) -> Pattern:
    """The node's fusion pattern kind; a multi-output node counts as opaque."""
    if len(node.outputs) != 1:
        return Pattern.OPAQUE
    return get_op(node.op).pattern


# ----------------------------------------------------------------------------- the dataflow DAG


class _Dataflow:
    """Indices, readers, edge patterns and post-dominators of a graph's nodes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.patterns = [node_pattern(node) for node in graph.nodes]
        producer = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs}
        outputs = set(graph.outputs)
        #: i -> {consumer j: pattern of the edge i -> j}
        self.readers: list[dict[int, Pattern]] = [{} for _ in graph.nodes]
        for j, node in enumerate(graph.nodes):
            for value in node.inputs:
                i = producer.get(value)
                if i is None:
                    continue
                edge = self._edge_pattern(value, j)
                self.readers[i][j] = max(edge, self.readers[i].get(j, Pattern.ELEMWISE))
        #: nodes whose value leaves the graph (or is never read) keep it: they feed the sink
        self.keeps_value = [
            bool(outputs.intersection(node.outputs)) or not self.readers[i]
            for i, node in enumerate(graph.nodes)
        ]
        self.ipdom = self._post_dominators()

    def _edge_pattern(self, value: str, consumer: int) -> Pattern:
        # Relay: a broadcast op reading an input of its own output shape is elementwise there.
        pattern = self.patterns[consumer]
        node = self.nodes[consumer]
        if pattern == Pattern.BROADCAST and len(node.outputs) == 1:
            if self.graph.types[value].shape == self.graph.types[node.outputs[0]].shape:
                return Pattern.ELEMWISE
        return pattern

    def _post_dominators(self) -> list[int]:
        reversed_dag = nx.DiGraph()
        reversed_dag.add_node(_SINK)
        for i in range(len(self.nodes)):
            reversed_dag.add_node(i)
            if self.keeps_value[i]:
                reversed_dag.add_edge(_SINK, i)
            for j in self.readers[i]:
                reversed_dag.add_edge(j, i)
        dominators = nx.immediate_dominators(reversed_dag, _SINK)
        return [dominators.get(i, _SINK) for i in range(len(self.nodes))]

    def path_between(self, src: int, sink: int) -> tuple[list[int], Pattern]:
        """The nodes strictly between `src` and its post-dominator `sink` on any path, in
        topological order, and the most complex edge pattern on those paths."""
        seen: set[int] = set()
        worst = Pattern.ELEMWISE
        stack = [src]
        while stack:
            i = stack.pop()
            for j, edge in self.readers[i].items():
                worst = max(worst, edge)
                if j != sink and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return sorted(seen), worst


# ----------------------------------------------------------------------------- groups


class _Groups:
    """Union-find over node indices; each root holds its group's members and pattern."""

    def __init__(self, flow: _Dataflow):
        self.parent = list(range(len(flow.nodes)))
        self.members = {i: [i] for i in range(len(flow.nodes))}
        #: Relay's group pattern: the root op's, raised to the anchor's when one merges in.
        self.pattern = {i: p for i, p in enumerate(flow.patterns)}
        self.anchored = {i: p == Pattern.OUT_ELEMWISE_FUSABLE for i, p in enumerate(flow.patterns)}

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def merged_members(self, nodes: list[int], target: int) -> list[int]:
        roots = {self.find(i) for i in nodes} | {self.find(target)}
        return sorted(m for root in roots for m in self.members[root])

    def merge(self, nodes: list[int], target: int) -> None:
        into = self.find(target)
        for i in nodes:
            root = self.find(i)
            if root == into:
                continue
            self.parent[root] = into
            self.members[into].extend(self.members.pop(root))
            if self.anchored[root]:
                self.anchored[into] = True
                self.pattern[into] = max(self.pattern[into], self.pattern[root])
        self.members[into].sort()


# ----------------------------------------------------------------------------- fusion


def fuse(graph: Graph, max_group_size: int = MAX_GROUP_SIZE) -> FusionPlan:
    """Partition `graph`'s nodes into fused groups by TVM's rules.

    Args:
        graph: a verified graph (nodes in topological order).
        max_group_size: the most ops one group may hold (Relay's 256).

    Returns:
        the plan: groups in dependence order, and the refused fusions with their reasons.
    """
    flow = _Dataflow(graph)
    groups = _Groups(flow)
    refusals: dict[int, Refusal] = {}
    for phase in (0, 1):
        for i in range(len(graph.nodes)):
            if groups.find(i) != i:
                continue  # already fused: its post-dominator is in its group
            reason = _try_fuse(flow, groups, i, phase, max_group_size)
            if reason is None:
                refusals.pop(i, None)
            elif reason:
                into = flow.ipdom[i]
                into_label = node_label(graph, into) if into != _SINK else _first_reader(flow, i)
                refusals[i] = Refusal(node_label(graph, i), into_label, reason)
    for i, refusal in sorted(refusals.items()):
        if groups.find(i) == i:
            logger.debug("did not fuse %s into %s: %s", refusal.node, refusal.into, refusal.reason)
    refused = tuple(r for i, r in sorted(refusals.items()) if groups.find(i) == i)
    return FusionPlan(_ordered_groups(flow, groups), refused)


def _first_reader(flow: _Dataflow, i: int) -> str:
    readers = sorted(flow.readers[i])
    return node_label(flow.graph, readers[0]) if readers else ""


def _describe(flow: _Dataflow, i: int) -> str:
    return f"{node_label(flow.graph, i)} ({flow.nodes[i].op})"


def _try_fuse(flow: _Dataflow, groups: _Groups, i: int, phase: int,
              max_group_size: int) -> str | None:
    """Try to fuse the group rooted at node `i` into its post-dominator's group.

    Returns None when it fused, "" when there is nothing to report (no candidate, or not this
    phase's business), else the reason it was refused.
    """
    node = flow.nodes[i]
    pattern = groups.pattern[i]
    sink = flow.ipdom[i]
    if len(node.outputs) != 1:
        return f"{node.op} has {len(node.outputs)} outputs; multi-output nodes stay alone"
    if pattern == Pattern.OPAQUE:
        return f"{node.op} is opaque" if flow.readers[i] else ""
    if sink == _SINK:
        if not flow.readers[i]:
            return ""
        if flow.keeps_value[i]:
            return "its value is a graph output, so it ends its group"
        return "its readers do not meet again before the graph's outputs (no post-dominator)"
    if groups.find(sink) == groups.find(i):
        return None
    if flow.patterns[sink] == Pattern.OPAQUE:
        return f"{_describe(flow, sink)} is opaque or has several outputs"
    if pattern == Pattern.REDUCE:
        return "a reduction never starts a fusion"
    between, edge = flow.path_between(i, sink)

    def check_path(allowed, allowed_at_sink) -> str:
        for j in between:
            kind = groups.pattern[groups.find(j)]
            if not allowed(kind):
                return f"path through {_describe(flow, j)} is {kind.name.lower()}"
        kind = groups.pattern[groups.find(sink)]
        if not allowed_at_sink(kind):
            return f"{_describe(flow, sink)}'s group is {kind.name.lower()}"
        return ""

    if pattern == Pattern.OUT_ELEMWISE_FUSABLE:
        if phase != 0:
            return ""
        if edge != Pattern.ELEMWISE:
            return (f"path to {_describe(flow, sink)} is not elementwise "
                    f"({edge.name.lower()} on the way)")
        problem = check_path(lambda k: k <= Pattern.BROADCAST, lambda k: k <= Pattern.BROADCAST)
        if problem:
            return problem
    elif pattern <= Pattern.BROADCAST:
        if phase != 1:
            return ""
        if not (edge <= Pattern.INJECTIVE or edge == Pattern.REDUCE):
            return (f"path to {_describe(flow, sink)} is {edge.name.lower()}, not injective "
                    "or a reduction")
        problem = check_path(
            lambda k: k <= Pattern.INJECTIVE,
            lambda k: k <= Pattern.INJECTIVE or k in (Pattern.REDUCE, Pattern.OUT_ELEMWISE_FUSABLE),
        )
        if problem:
            return problem
    elif pattern == Pattern.INJECTIVE:
        if phase != 1:
            return ""
        problem = check_path(lambda k: k <= Pattern.INJECTIVE, lambda k: k <= Pattern.INJECTIVE)
        if problem:
            return problem
    else:
        return f"{pattern.name.lower()} does not fuse forward"
    members = groups.merged_members([i, *between], sink)
    problem = _check_group(flow, members, max_group_size)
    if problem:
        return problem
    groups.merge([i, *between], sink)
    return None


def _check_group(flow: _Dataflow, members: list[int], max_group_size: int) -> str:
    """Why these nodes cannot be one kernel ("" when they can): the code generator's
    invariants (one value leaves, at most one anchor, prologue and epilogue shapes)."""
    if len(members) > max_group_size:
        return f"the group would hold {len(members)} ops, more than {max_group_size}"
    inside = set(members)
    outputs = set(flow.graph.outputs)
    for m in members[:-1]:
        node = flow.nodes[m]
        if outputs.intersection(node.outputs):
            return f"{_describe(flow, m)} feeds a graph output and must keep its value"
        outside = [j for j in flow.readers[m] if j not in inside]
        if outside:
            return (f"{_describe(flow, m)} is also read by {_describe(flow, outside[0])} "
                    "outside the group")
    anchors = [m for m in members if flow.patterns[m] > Pattern.INJECTIVE]
    if any(flow.patterns[m] == Pattern.OPAQUE for m in anchors):
        return "an opaque or multi-output node stays alone"
    if len(anchors) > 1:
        first, second = anchors[:2]
        return (f"the group would hold two anchors, {_describe(flow, first)} and "
                f"{_describe(flow, second)}")
    if not anchors:
        return ""
    anchor = anchors[0]
    shape = flow.graph.types[flow.nodes[anchor].outputs[0]].shape
    for m in members:
        if m < anchor:
            if flow.patterns[m] > Pattern.BROADCAST:
                return (f"{_describe(flow, m)} is {flow.patterns[m].name.lower()}; only "
                        f"elementwise or broadcast ops may feed the anchor "
                        f"{_describe(flow, anchor)}")
            if not _reaches(flow, m, anchor, inside):
                return (f"{_describe(flow, m)} would compute a side input of "
                        f"{_describe(flow, anchor)}'s epilogue inside the kernel")
        if m > anchor:
            if flow.patterns[m] > Pattern.BROADCAST:
                return (f"{_describe(flow, m)} is {flow.patterns[m].name.lower()}; the epilogue "
                        f"of {_describe(flow, anchor)} must be elementwise or broadcast")
            if flow.graph.types[flow.nodes[m].outputs[0]].shape != shape:
                return (f"{_describe(flow, m)} does not have the output shape {shape} of "
                        f"the anchor {_describe(flow, anchor)}")
            if not _reaches(flow, anchor, m, inside):
                return (f"{_describe(flow, m)} would compute a side input of "
                        f"{_describe(flow, anchor)}'s epilogue inside the kernel")
    return ""


def _reaches(flow: _Dataflow, src: int, dst: int, inside: set[int]) -> bool:
    """Whether `dst` reads `src`'s value through nodes of `inside`."""
    stack, seen = [src], {src}
    while stack:
        i = stack.pop()
        for j in flow.readers[i]:
            if j == dst:
                return True
            if j in inside and j not in seen and j < dst:
                seen.add(j)
                stack.append(j)
    return False


def _ordered_groups(flow: _Dataflow, groups: _Groups) -> tuple[FusedGroup, ...]:
    # Only a group's last node's value leaves it, and a reader comes after its producer, so
    # ordering groups by their last node respects every dependence.
    result = []
    for root in sorted({groups.find(i) for i in range(len(flow.nodes))},
                       key=lambda r: groups.members[r][-1]):
        members = tuple(groups.members[root])
        anchors = [m for m in members if flow.patterns[m] > Pattern.INJECTIVE]
        result.append(FusedGroup(members, anchors[0] if anchors else members[-1]))
    return tuple(result)


def format_plan(graph: Graph, plan: FusionPlan) -> str:
    """The plan as text: one line per kernel, then the refused fusions and a summary."""
    lines = []
    for k, group in enumerate(plan.groups):
        ops = ", ".join(graph.nodes[i].op for i in group.nodes)
        anchor = graph.nodes[group.anchor].op
        lines.append(f"kernel {k:>4}  {anchor:<16} [{ops}]")
    if plan.refused:
        ops = {node_label(graph, i): node.op for i, node in enumerate(graph.nodes)}
        lines.append(f"refused fusions ({len(plan.refused)}):")
        for refusal in plan.refused:
            lines.append(f"  {refusal.node} ({ops.get(refusal.node, '?')}) -> {refusal.into}: "
                         f"{refusal.reason}")
    lines.append(f"{len(graph.nodes)} nodes -> {len(plan.groups)} kernels")
    return "\n".join(lines)

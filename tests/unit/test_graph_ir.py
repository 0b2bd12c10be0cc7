"""The graph IR core: immutability, structural equality, the printer, the builder, the verifier."""

import dataclasses

import numpy as np
import pytest

from ember.errors import IRError, ShapeError
from ember.ir.builder import GraphBuilder
from ember.ir.graph import Attrs, Graph, Node, TensorType, format_graph
from ember.ir.verify import verify

F32 = "float32"


def small_graph(scale: float = 2.0) -> Graph:
    b = GraphBuilder("small")
    x = b.add_input("x", TensorType((2, 3), F32))
    w = b.add_constant(np.full((2, 3), scale, np.float32), "w")
    (y,) = b.add_node("mul", [x, w], hint="y")
    (z,) = b.add_node("relu", [y], hint="z")
    return b.build([z])


def test_tensor_type():
    t = TensorType([1, 3, 224, 224], F32)
    assert t.shape == (1, 3, 224, 224) and t.rank == 4
    assert t.size == 150528 and t.nbytes == 4 * 150528
    assert str(t) == "float32[1,3,224,224]"
    assert TensorType.of(np.zeros((2,), np.int64)) == TensorType((2,), "int64")


def test_attrs_are_frozen_and_hashable():
    a = Attrs({"pads": [1, 1], "axis": np.int64(2)})
    assert a.pads == (1, 1) and a["axis"] == 2 and isinstance(a.axis, int)
    assert a == Attrs({"axis": 2, "pads": (1, 1)}) and hash(a) == hash(Attrs(a))
    with pytest.raises(AttributeError):
        a.axis = 3
    assert a.replace(axis=3).axis == 3 and a.axis == 2
    with pytest.raises(TypeError):
        Attrs({"bad": {"a": 1}})


def test_nodes_and_graphs_are_immutable():
    g = small_graph()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].op = "add"
    with pytest.raises(ValueError):
        g.constants["w"][0, 0] = 1.0  # constants are read-only arrays
    with pytest.raises(TypeError):
        g.types["x"] = TensorType((1,), F32)


def test_structural_equality_includes_constants():
    assert small_graph() == small_graph()
    assert hash(small_graph()) == hash(small_graph())
    assert small_graph(2.0) != small_graph(3.0)
    renamed = small_graph().replace(name="other")
    assert renamed != small_graph()


def test_printer():
    text = format_graph(small_graph())
    assert text.splitlines()[0] == "graph small(%x: float32[2,3]) -> (%z) {"
    assert "  const %w: float32[2,3] = [2.,2.,2.,2.,2.,2.]" in text
    assert "  %y: float32[2,3] = mul(%x, %w)" in text
    assert text.endswith("}")
    assert str(small_graph()) == text
    b = GraphBuilder("big")
    b.add_constant(np.zeros((4, 4), np.float32), "w")
    assert "const %w: float32[4,4] = <16 values>" in format_graph(b.build(["w"]))


def test_builder_folds_constant_subgraphs():
    b = GraphBuilder("fold", fold_constants=True)
    x = b.add_input("x", TensorType((3,), F32))
    c1 = b.add_constant(np.array([1, 2, 3], np.float32), "c1")
    (c2,) = b.add_node("add", [c1, c1], hint="c2")
    assert b.is_constant(c2) and list(b.constants[c2]) == [2, 4, 6]
    (y,) = b.add_node("mul", [x, c2], hint="y")
    g = b.build([y])
    assert [n.op for n in g.nodes] == ["mul"]
    assert set(g.constants) == {c2}  # c1 is dead after folding


def test_builder_drops_dead_nodes_and_keeps_multi_output_types():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2,), F32))
    (dead,) = b.add_node("relu", [x], hint="dead")
    (live,) = b.add_node("exp", [x], hint="live")
    g = verify(b.build([live]))
    assert [n.op for n in g.nodes] == ["exp"] and dead not in g.types


def test_builder_fresh_names_and_rename():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2,), F32))
    (a,) = b.add_node("relu", [x], hint="r")
    (c,) = b.add_node("relu", [a], hint="r")
    assert (a, c) == ("r", "r:1")
    b.rename(c, "out")
    g = verify(b.build(["out"]))
    assert g.nodes[-1].outputs == ("out",)
    with pytest.raises(IRError, match="taken"):
        b.rename("r", "x")


def test_builder_rejects_bad_types():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((2, 3), F32))
    y = b.add_input("y", TensorType((4,), F32))
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\) do not broadcast"):
        b.add_node("add", [x, y])
    with pytest.raises(ShapeError, match="unknown attribute"):
        b.add_node("relu", [x], {"alpha": 1.0})
    with pytest.raises(ShapeError, match="takes 2 inputs, got 1"):
        b.add_node("add", [x])


def _graph_with(nodes, types, inputs=("x",), outputs=("y",), constants=None):
    return Graph("bad", inputs, outputs, nodes, types, constants or {})


T = TensorType((2,), F32)


@pytest.mark.parametrize(
    "graph, message",
    [
        (_graph_with([Node("relu", ["x"], ["y"]), Node("relu", ["x"], ["y"])], {"x": T, "y": T}),
         "assigned twice"),
        (_graph_with([Node("relu", ["z"], ["y"]), Node("relu", ["x"], ["z"])],
                     {"x": T, "y": T, "z": T}), "used before it is defined"),
        (_graph_with([Node("relu", ["x"], ["y"])], {"x": T}), "has no type"),
        (_graph_with([Node("nope", ["x"], ["y"])], {"x": T, "y": T}), "unknown op 'nope'"),
        (_graph_with([Node("relu", ["x"], ["y"])], {"x": T, "y": TensorType((3,), F32)}),
         r"typed float32\[3\], inference gives float32\[2\]"),
        (_graph_with([Node("relu", ["x"], ["y"])], {"x": T, "y": T}, outputs=("w",)),
         "graph output %w is never defined"),
        (_graph_with([Node("add", ["x"], ["y"])], {"x": T, "y": T}), "takes 2 inputs"),
        (_graph_with([], {"x": T, "c": T}, outputs=("c",),
                     constants={"c": np.zeros(3, np.float32)}), "holds float32"),
    ],
    ids=["ssa", "order", "untyped", "unknown-op", "wrong-type", "output", "arity", "constant"],
)
def test_verifier_rejects(graph, message):
    with pytest.raises(IRError, match=message) as info:
        verify(graph)
    assert "graph bad(" in str(info.value)  # the error prints the graph


def test_verifier_accepts_built_graph():
    g = small_graph()
    assert verify(g) is g

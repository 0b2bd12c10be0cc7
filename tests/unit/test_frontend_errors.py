"""A user's bad model gives an `ember.EmberError` that says what is wrong, never a traceback.

Covers: unsupported operators (all of them in one message, with node names and opsets),
malformed files and bytes, missing initializers, nodes out of order and cycles, unknown element
types, symbolic input dimensions and `input_shapes`, a missing path, a model of the wrong Python
type, and a small mutation sweep that corrupts valid one-node models and requires an EmberError
or a correct result.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support import onnx_reference

import ember
from ember.compiler.frontend.onnx.registry import first_supported_opset, supported_ops


def make_model(nodes, inputs, outputs, initializers=(), opset=18, opsets=None, ir_version=8):
    graph = helper.make_graph(nodes, "errors", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid(domain, version)
               for domain, version in (opsets or {"": opset}).items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=ir_version)


def tensor(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def relu_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                      [tensor("x", [2, 3])], [tensor("y", [2, 3])])


# -- unsupported operators


def test_unsupported_op_names_op_node_and_opset():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="relu"),
         helper.make_node("Frobnicate", ["a"], ["y"], name="frob", domain="com.example")],
        [tensor("x", [2, 3])], [tensor("y", [2, 3])],
        opsets={"": 18, "com.example": 3},
    )
    with pytest.raises(ember.UnsupportedOpError) as info:
        ember.compile(model)
    message = str(info.value)
    assert "1 operator(s) ember cannot convert" in message
    assert "Frobnicate (domain 'com.example', opset 3): 1 node(s): 'frob'" in message
    assert "Relu" not in message
    assert info.value.unsupported == {("com.example", "Frobnicate"): ["frob"]}
    assert isinstance(info.value, ember.FrontendError)


def test_several_unsupported_ops_are_reported_at_once():
    nodes = [
        helper.make_node("Frobnicate", ["x"], ["a"], name="frob_1", domain="com.example"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Frobnicate", ["b"], ["c"], name="frob_2", domain="com.example"),
        helper.make_node("TfIdfVectorizer", ["c"], ["d"], name="tfidf"),
        # an unnamed node is named by its first output
        helper.make_node("Frobnicate", ["d"], ["y"], domain="com.example"),
    ]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])],
                       opsets={"": 17, "com.example": 1})
    with pytest.raises(ember.UnsupportedOpError) as info:
        ember.compile(model)
    message = str(info.value)
    assert "2 operator(s) ember cannot convert" in message
    assert ("Frobnicate (domain 'com.example', opset 1): 3 node(s): 'frob_1', 'frob_2', 'y'"
            in message)
    assert "TfIdfVectorizer (domain 'ai.onnx', opset 17): 1 node(s): 'tfidf'" in message
    assert "docs/onnx-coverage.md" in message
    assert info.value.unsupported == {
        ("com.example", "Frobnicate"): ["frob_1", "frob_2", "y"],
        ("", "TfIdfVectorizer"): ["tfidf"],
    }


def test_many_nodes_of_one_unsupported_op_are_abbreviated():
    nodes = [helper.make_node("Frobnicate", [f"v{i}"], [f"v{i + 1}"], name=f"n{i}",
                              domain="com.example") for i in range(7)]
    model = make_model(nodes, [tensor("v0", [2])], [tensor("v7", [2])],
                       opsets={"": 18, "com.example": 1})
    with pytest.raises(ember.UnsupportedOpError, match=r"7 node\(s\): 'n0', .*'n4' \.\.\.") as info:
        ember.compile(model)
    assert len(info.value.unsupported[("com.example", "Frobnicate")]) == 7


def test_op_below_its_first_supported_opset_says_where_support_starts():
    candidates = [(op, versions[0]) for (domain, op), versions in supported_ops().items()
                  if domain == "" and versions[0] > 1
                  and op in ("Relu", "HardSwish", "Mish", "Gelu", "Celu", "Shrink")]
    if not candidates:
        pytest.skip("every candidate op is supported from opset 1")
    op, first = candidates[0]
    assert first_supported_opset("", op) == first
    model = make_model([helper.make_node(op, ["x"], ["y"], name="old")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])], opset=first - 1)
    with pytest.raises(ember.UnsupportedOpError,
                       match=rf"{op} \(domain 'ai.onnx', opset {first - 1}; ember supports it "
                             rf"from opset {first}\): 1 node\(s\): 'old'"):
        ember.compile(model)


# -- malformed models


def test_bad_protobuf_bytes():
    with pytest.raises(ember.FrontendError, match="the bytes given are not a valid ONNX model"):
        ember.compile(b"\xff\xff\xff\xff this is not a model")


def test_truncated_file(tmp_path):
    data = relu_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ember.FrontendError,
                       match=r"truncated.onnx' is not a valid ONNX model \(protobuf parse failed.*"
                             r"check that the file is complete"):
        ember.compile(str(path))


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("graph { node { op_type: 'Relu' } }\n" * 3)
    with pytest.raises(ember.FrontendError, match="is not a valid ONNX model"):
        ember.compile(path)  # a pathlib.Path works as well as a str


def test_missing_initializer():
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add_bias")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    with pytest.raises(ember.FrontendError,
                       match=r"node 'add_bias' \(Add\) reads 'w', which is neither a graph input, "
                             r"an initializer nor any node's output \(missing initializer\?\)"):
        ember.compile(model)


def test_nodes_out_of_order():
    model = make_model([helper.make_node("Relu", ["t"], ["y"], name="second"),
                        helper.make_node("Neg", ["x"], ["t"], name="first")],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    with pytest.raises(ember.FrontendError,
                       match=r"node 'second' \(Relu\) reads 't' before the node that produces it: "
                             r"the graph has a cycle or is not in topological order"):
        ember.compile(model)


def test_cycle():
    model = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                        helper.make_node("Relu", ["a"], ["b"], name="n2")],
                       [tensor("x", [2, 3])], [tensor("b", [2, 3])])
    with pytest.raises(ember.FrontendError, match=r"node 'n1' \(Add\) reads 'b' before .* cycle"):
        ember.compile(model)


@pytest.mark.parametrize("elem_type, message", [
    (999, "ONNX shape inference rejects the model"),
    (0, r"graph input 'x' has element type 0 \(UNDEFINED\), which ember does not support"),
])
def test_unknown_element_type(elem_type, message):
    model = make_model([helper.make_node("Identity", ["x"], ["y"])],
                       [tensor("x", [2, 3], elem_type)], [tensor("y", [2, 3], elem_type)])
    with pytest.raises(ember.FrontendError, match=message):
        ember.compile(model)


def test_element_type_onnx_knows_but_ember_does_not():
    model = make_model([helper.make_node("Identity", ["x"], ["y"])],
                       [tensor("x", [2, 3], TensorProto.INT4)],
                       [tensor("y", [2, 3], TensorProto.INT4)], opset=21)
    with pytest.raises(ember.FrontendError,
                       match=r"graph input 'x' has element type 22 \(INT4\), which ember does "
                             r"not support; supported: float16, .*float32"):
        ember.compile(model)


def test_graph_output_nothing_produces():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3]), tensor("ghost", [2, 3])])
    with pytest.raises(ember.FrontendError, match="ghost"):
        ember.compile(model)


def test_checker_failure_is_a_frontend_error():
    model = relu_model()
    model.graph.node[0].attribute.append(helper.make_attribute("alpha", 0.5))  # Relu has none
    with pytest.raises(ember.FrontendError, match=r"not valid ONNX \(onnx.checker\).*alpha"):
        ember.compile(model)


# -- symbolic input dimensions


def symbolic_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])],
                      [tensor("x", ["batch", 3])], [tensor("y", ["batch", 3])])


def test_symbolic_dimension_must_be_pinned():
    with pytest.raises(ember.FrontendError,
                       match=re.escape("graph input 'x' has symbolic shape ('batch', 3); pin its "
                                       "dimensions with input_shapes={'x': (...)}")):
        ember.compile(symbolic_model())


def test_pinned_symbolic_dimension_compiles_and_runs():
    module = ember.compile(symbolic_model(), input_shapes={"x": (4, 3)})
    assert module.inputs == [ember.TensorSpec("x", (4, 3), "float32")]
    assert module.outputs[0].shape == (4, 3)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(module(x), np.maximum(x, 0))


def test_input_without_shape_is_invalid_onnx():
    # onnx's checker requires a shape on graph inputs, so ember's own "has no shape" is not
    # reached; a pin does not make the model valid.
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                       [tensor("y", [5])])
    for pins in (None, {"x": (5,)}):
        with pytest.raises(ember.FrontendError, match=r"onnx.checker.*'shape'.*missing"):
            ember.compile(model, input_shapes=pins)


@pytest.mark.parametrize("pin, message", [
    ((4,), r"gives 'x' the shape \(4,\), which does not fit its declared shape \('batch', 3\)"),
    ((4, 5), r"gives 'x' the shape \(4, 5\), which does not fit its declared shape"),
    ((-1, 3), r"gives 'x' a negative dimension: \(-1, 3\)"),
])
def test_bad_pin(pin, message):
    with pytest.raises(ember.FrontendError, match=message):
        ember.compile(symbolic_model(), input_shapes={"x": pin})


def test_pin_naming_a_non_input():
    with pytest.raises(ember.FrontendError,
                       match=r"input_shapes names \['z'\], which are not graph inputs; the inputs "
                             r"are \['x'\]"):
        ember.compile(symbolic_model(), input_shapes={"x": (2, 3), "z": (1,)})


def test_pin_naming_an_initializer_listed_as_input():
    weight = onnx.numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])],
                       [tensor("x", [2, 3]), tensor("w", [2, 3])], [tensor("y", [2, 3])],
                       initializers=[weight])
    with pytest.raises(ember.FrontendError, match=r"names \['w'\], which are not graph inputs"):
        ember.compile(model, input_shapes={"w": (2, 3)})


# -- what the model argument is


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(ember.FrontendError,
                       match=re.escape(f"no ONNX model at {str(path)!r}: the file does not exist")):
        ember.compile(str(path))


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ember.FrontendError, match="the file does not exist"):
        ember.compile(str(tmp_path))


@pytest.mark.parametrize("value, type_name", [(42, "int"), ([1, 2], "list"), (None, "NoneType"),
                                              (onnx.GraphProto(), "GraphProto")])
def test_wrong_python_type(value, type_name):
    message = f"a model must be a path, bytes or an onnx.ModelProto, got {type_name}"
    with pytest.raises(ember.FrontendError, match=message):
        ember.compile(value)


def test_every_frontend_error_is_an_ember_error():
    assert issubclass(ember.UnsupportedOpError, ember.FrontendError)
    assert issubclass(ember.FrontendError, ember.EmberError)


# -- mutations of valid one-node models: an EmberError or the right answer, nothing else

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)
Y = RNG.standard_normal((2, 3, 4)).astype(np.float32)

BASES = {
    "relu": (helper.make_node("Relu", ["x"], ["out"], name="n"), {"x": X}),
    "add": (helper.make_node("Add", ["x", "y"], ["out"], name="n"), {"x": X, "y": Y}),
    "transpose": (helper.make_node("Transpose", ["x"], ["out"], name="n", perm=[2, 0, 1]),
                  {"x": X}),
    "concat": (helper.make_node("Concat", ["x", "y"], ["out"], name="n", axis=1),
               {"x": X, "y": Y}),
    "softmax": (helper.make_node("Softmax", ["x"], ["out"], name="n", axis=-1), {"x": X}),
    "leaky_relu": (helper.make_node("LeakyRelu", ["x"], ["out"], name="n", alpha=0.2), {"x": X}),
}


def _base_model(node: onnx.NodeProto, feeds) -> onnx.ModelProto:
    inputs = [tensor(name, list(value.shape)) for name, value in feeds.items()]
    probe = make_model([node], inputs, [helper.make_empty_tensor_value_info("out")], opset=18)
    (out,) = onnx_reference(probe, feeds)
    return make_model([node], inputs, [tensor("out", list(out.shape))], opset=18)


def _retype_attribute(model: onnx.ModelProto) -> bool:
    """The node's first attribute as a string (an INT becomes "1", INTS "2,0,1")."""
    node = model.graph.node[0]
    if not node.attribute:
        return False
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(attr.name, str(value)))
    return True


def _out_of_range_attribute(model: onnx.ModelProto) -> bool:
    """An INT attribute of 99, INTS of repeated zeros (an axis or a permutation out of range)."""
    node = model.graph.node[0]
    ints = [a for a in node.attribute if a.type in (onnx.AttributeProto.INT,
                                                     onnx.AttributeProto.INTS)]
    if not ints:
        return False
    attr = ints[0]
    value = 99 if attr.type == onnx.AttributeProto.INT else [0] * len(attr.ints)
    node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(attr.name, value))
    return True


def _drop_attribute(model: onnx.ModelProto) -> bool:
    node = model.graph.node[0]
    if not node.attribute:
        return False
    del node.attribute[0]
    return True


def _dangling_input(model: onnx.ModelProto) -> bool:
    model.graph.node[0].input[0] = "does_not_exist"
    return True


def _empty_input(model: onnx.ModelProto) -> bool:
    model.graph.node[0].input[0] = ""
    return True


def _extra_input(model: onnx.ModelProto) -> bool:
    model.graph.node[0].input.append("x")
    return True


def _duplicate_output(model: onnx.ModelProto) -> bool:
    model.graph.node.append(helper.make_node("Relu", ["x"], ["out"], name="again"))
    return True


def _int_input(model: onnx.ModelProto) -> bool:
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    return True


def _wrong_rank(model: onnx.ModelProto) -> bool:
    model.graph.input[0].type.tensor_type.shape.dim.pop()
    return True


def _ancient_opset(model: onnx.ModelProto) -> bool:
    model.opset_import[0].version = 1
    return True


def _unknown_attribute(model: onnx.ModelProto) -> bool:
    model.graph.node[0].attribute.append(helper.make_attribute("bogus", 3))
    return True


MUTATIONS = {
    "none": lambda model: True,  # the valid model itself: ember must get it right
    "retype_attribute": _retype_attribute, "drop_attribute": _drop_attribute,
    "out_of_range_attribute": _out_of_range_attribute,
    "dangling_input": _dangling_input, "empty_input": _empty_input, "extra_input": _extra_input,
    "duplicate_output": _duplicate_output, "int_input": _int_input, "wrong_rank": _wrong_rank,
    "ancient_opset": _ancient_opset, "unknown_attribute": _unknown_attribute,
}


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("base", BASES)
def test_mutated_model_gives_ember_error_or_right_answer(base, mutation):
    node, feeds = BASES[base]
    model = _base_model(node, feeds)
    if not MUTATIONS[mutation](model):
        pytest.skip(f"{base} has nothing to {mutation}")
    try:
        module = ember.compile(model)
    except ember.EmberError:
        return  # a clean, typed refusal is a correct answer
    # ember accepted the mutated model, so it must be valid and ember's answer right.
    feeds = {spec.name: (feeds[spec.name] if spec.name in feeds else None)
             for spec in module.inputs}
    feeds = {name: value.astype(spec.dtype).reshape(spec.shape)
             if value is not None and value.size == int(np.prod(spec.shape))
             else np.zeros(spec.shape, spec.dtype)
             for (name, value), spec in zip(feeds.items(), module.inputs)}
    got = module.run(feeds)
    expected = onnx_reference(model, feeds)
    assert len(got) == len(expected)
    for out, ref in zip(got, expected):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)

"""Tensor and shape ops (constants, shape queries, reshapes, transpose, concat, split, slice,
expand, tile) against onnx's ReferenceEvaluator, plus the errors users see.

Pads, block moves and Trilu are in test_ops_tensor_layout.py; gathers, scatters and friends in
test_ops_tensor_index.py.
"""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from support import check_node, node_model, onnx_reference

import ember
from ember.compiler.frontend.onnx import import_onnx
from ember.errors import FrontendError, ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops import Pattern, get_op

DTYPES = ["float32", "int64", "bool", "float16"]
INT_MAX = 2**63 - 1


def sample(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def ints(*values):
    return np.array(values, dtype=np.int64)


def check_strings(op_type, inputs, attrs=None, initializers=(), opset=18):
    """check_node for string tensors (compared exactly, element by element)."""
    feeds = {n: a for n, a in inputs if n not in initializers}
    probe = node_model(op_type, inputs, attrs, initializers=initializers, opset=opset)
    expected = onnx_reference(probe, feeds)
    model = node_model(op_type, inputs, attrs, initializers=initializers, opset=opset,
                       output_arrays=expected)
    got = ember.compile(model, target="reference").run(feeds)
    for out, ref in zip(got, expected):
        assert out.shape == ref.shape
        assert out.astype(object).tolist() == ref.astype(object).tolist()


def compile_node(op_type, inputs, attrs=None, computed=(), opset=18, outputs=1,
                 out_dtype=None, out_rank=None):
    """ember's module for a one-node model that the oracle cannot run, to check ember's own
    errors. Inputs named in `computed` become initializers passed through an Identity node:
    constants that onnx's shape inference cannot see, as in a model that computes a shape.
    Outputs get onnx's inferred types, else `out_dtype` (default: the first input's) with
    `out_rank` (default: the first input's) unnamed dimensions."""
    model = node_model(op_type, [(f"{n}:raw" if n in computed else n, a) for n, a in inputs],
                       attrs, initializers=[f"{n}:raw" for n in computed], outputs=outputs,
                       opset=opset)
    graph = model.graph
    graph.node[0].input[:] = [n.removesuffix(":raw") for n in graph.node[0].input]
    for name in computed:
        graph.node.insert(0, helper.make_node("Identity", [f"{name}:raw"], [name]))
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    dtype = np.dtype(out_dtype or inputs[0][1].dtype)
    rank = inputs[0][1].ndim if out_rank is None else out_rank
    typed = [
        value if value.type.tensor_type.HasField("shape") else helper.make_tensor_value_info(
            value.name, helper.np_dtype_to_tensor_dtype(dtype), [None] * rank)
        for value in inferred
    ]
    del graph.output[:]
    graph.output.extend(typed)
    return ember.compile(model, target="reference")


STRINGS = np.array([["a", "bb", "c"], ["dd", "e", ""]], dtype=object)

# ----------------------------------------------------------------------------- constants


@pytest.mark.parametrize("attr, value", [
    ("value", numpy_helper.from_array(sample((2, 3)))),
    ("value", numpy_helper.from_array(ints(4, 5, 6))),
    ("value_float", 1.5),
    ("value_floats", [1.0, -2.0]),
    ("value_int", 7),
    ("value_ints", [3, 4, 5]),
])
def test_constant(attr, value):
    check_node("Constant", [], {attr: value}, opset=13)


def test_constant_strings():
    check_strings("Constant", [], {"value_strings": ["x", "yz"]}, opset=13)
    check_strings("Constant", [], {"value_string": "w"}, opset=13)


def test_constant_sparse():
    values = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "values")
    indices = numpy_helper.from_array(ints(1, 3), "indices")
    sparse = helper.make_sparse_tensor(values, indices, [5])
    module = compile_node("Constant", [], {"sparse_value": sparse}, opset=13, out_dtype="float32",
                          out_rank=1)
    (out,) = module.run({})
    np.testing.assert_array_equal(out, np.array([0, 1, 0, 2, 0], np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (3,), (2, 0, 4), (2, 3, 4, 5)])
def test_shape_and_size(shape, dtype):
    x = sample(shape, dtype)
    check_node("Shape", [("x", x)], opset=13)
    check_node("Size", [("x", x)], opset=13)


@pytest.mark.parametrize("start, end", [(None, None), (1, None), (-1, None), (0, -1), (1, 3),
                                        (-10, 10), (3, 1)])
def test_shape_start_end(start, end):
    attrs = {k: v for k, v in {"start": start, "end": end}.items() if v is not None}
    check_node("Shape", [("x", sample((2, 3, 4, 5)))], attrs, opset=15)


@pytest.mark.parametrize("value", [None, np.array([2.5], np.float32), np.array([7], np.int64),
                                   np.array([True]), np.array([1], np.float16)])
@pytest.mark.parametrize("shape", [(2, 3), (0,), (4,)])
def test_constant_of_shape(shape, value):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    check_node("ConstantOfShape", [("shape", ints(*shape))], attrs, initializers=["shape"],
               opset=20)


@pytest.mark.parametrize("k", [-2, 0, 1, 5])
@pytest.mark.parametrize("dtype", [None, onnx.TensorProto.INT64, onnx.TensorProto.BOOL])
def test_eye_like(k, dtype):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    check_node("EyeLike", [("x", sample((3, 4)))], attrs, opset=9)


@pytest.mark.parametrize("start, limit, delta, dtype", [
    (0, 10, 3, "int64"), (10, 4, -2, "int32"), (5, 5, 1, "int64"), (1, 9, -1, "int64"),
    (0.5, 3.0, 0.4, "float32"), (3.0, -1.0, -0.7, "float64"), (1.0, 2.0, 0.25, "float16"),
])
def test_range_of_constants(start, limit, delta, dtype):
    inputs = [(n, np.array(v, dtype)) for n, v in
              [("start", start), ("limit", limit), ("delta", delta)]]
    opset = 27 if dtype == "float16" else 11  # float16 arrived in opset 27
    check_node("Range", inputs, initializers=["start", "limit", "delta"], opset=opset)


def test_range_of_run_time_values_specializes():
    inputs = [("start", np.array(0, np.int64)), ("limit", np.array(5, np.int64)),
              ("delta", np.array(1, np.int64))]
    check_node("Range", inputs, initializers=["start", "delta"], opset=11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2)])
def test_nonzero_of_a_constant(shape, dtype):
    check_node("NonZero", [("x", sample(shape, dtype))], initializers=["x"], opset=13)


def test_nonzero_of_run_time_values_specializes():
    check_node("NonZero", [("x", sample((3,)))], opset=13)


# ----------------------------------------------------------------------------- reshape family


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, target", [
    ((2, 3, 4), (4, 6)), ((2, 3, 4), (-1,)), ((2, 3, 4), (0, -1)), ((2, 3, 4), (0, 0, 2, 2)),
    ((6,), (1, 2, 1, 3)), ((1,), ()), ((), (1, 1)), ((2, 0, 3), (0, 6, -1)),
])
def test_reshape(shape, target, dtype):
    check_node("Reshape", [("x", sample(shape, dtype)), ("shape", ints(*target))],
               initializers=["shape"], opset=13)


@pytest.mark.parametrize("shape, target", [((2, 0, 3), (0, 3)), ((0, 4), (4, 0)),
                                           ((2, 3), (3, 2))])
def test_reshape_allowzero(shape, target):
    check_node("Reshape", [("x", sample(shape)), ("shape", ints(*target))], {"allowzero": 1},
               initializers=["shape"], opset=14)


def test_reshape_strings():
    check_strings("Reshape", [("x", STRINGS), ("shape", ints(3, -1))], initializers=["shape"])


def test_reshape_shape_from_a_graph_input_specializes():
    check_node("Reshape", [("x", sample((2, 3))), ("shape", ints(3, 2))], opset=13)


@pytest.mark.parametrize("target, message", [
    ((4, 4), r"cannot reshape \(2, 3\) \(6 elements\) to \(4, 4\) \(16 elements\)"),
    ((4, -1), r"6 is not a multiple of 4"),
    ((-1, -1), r"more than one -1"),
    ((2, -3), r"invalid dimension -3"),
])
def test_reshape_bad_target(target, message):
    with pytest.raises(FrontendError, match=r"node 'out0' \(Reshape.*" + message):
        compile_node("Reshape", [("x", sample((2, 3))), ("shape", ints(*target))],
                     computed=["shape"], opset=13, out_rank=len(target))


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten(axis, opset):
    check_node("Flatten", [("x", sample((2, 3, 4)))], {"axis": axis}, opset=opset)


@pytest.mark.parametrize("axis", [-1, -2, -3])
def test_flatten_negative_axis(axis):
    check_node("Flatten", [("x", sample((2, 3, 4), "int64"))], {"axis": axis}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [0], [-1], [0, 2], [2, -4]])
def test_squeeze(axes, opset, dtype):
    x = sample((1, 3, 1, 1), dtype)
    if axes is None:
        check_node("Squeeze", [("x", x)], opset=opset)
    elif opset < 13:
        check_node("Squeeze", [("x", x)], {"axes": axes}, opset=opset)
    else:
        check_node("Squeeze", [("x", x), ("axes", ints(*axes))], initializers=["axes"],
                   opset=opset)


def test_squeeze_of_a_wide_axis_fails():
    with pytest.raises(FrontendError, match=r"cannot squeeze axes \[1\] of shape \(1, 3\)"):
        compile_node("Squeeze", [("x", sample((1, 3))), ("axes", ints(1))],
                     computed=["axes"], opset=13, out_rank=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [-1], [3, 1], [0, 4, -3], [-3]])
def test_unsqueeze(axes, opset, dtype):
    x = sample((2, 3), dtype)
    if opset < 13:
        # onnx's opset-11 reference inserts the axes in the order given; ONNX means sorted
        axes = sorted(a % (x.ndim + len(axes)) for a in axes)
        check_node("Unsqueeze", [("x", x)], {"axes": axes}, opset=opset)
    else:
        check_node("Unsqueeze", [("x", x), ("axes", ints(*axes))], initializers=["axes"],
                   opset=opset)


def test_unsqueeze_repeated_axis_fails():
    with pytest.raises(FrontendError, match=r"axes \[1, -2\] name an axis twice"):
        compile_node("Unsqueeze", [("x", sample((2,))), ("axes", ints(1, -2))],
                     computed=["axes"], opset=13, out_rank=3)


# ----------------------------------------------------------------------------- transpose, concat


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, perm", [
    ((5,), None), ((2, 3), None), ((2, 3), [0, 1]), ((2, 3, 4), [1, 2, 0]),
    ((2, 3, 4, 5), None), ((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 1, 4, 3), [3, 1, 0, 2]),
])
def test_transpose(shape, perm, dtype):
    attrs = {} if perm is None else {"perm": perm}
    check_node("Transpose", [("x", sample(shape, dtype))], attrs, opset=13)


def test_transpose_strings():
    check_strings("Transpose", [("x", STRINGS)])


def test_transpose_bad_perm():  # onnx's own checks catch repeated and out-of-range axes
    perm = [0, 1]
    with pytest.raises(FrontendError, match=r"Transpose.*is not a permutation of the 3 axes"):
        compile_node("Transpose", [("x", sample((2, 3, 4)))], {"perm": perm}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_concat(axis, count, dtype):
    inputs = []
    for i in range(count):
        shape = [2, 3, 4]
        shape[axis] = i + 1
        inputs.append((f"x{i}", sample(shape, dtype, seed=i)))
    check_node("Concat", inputs, {"axis": axis}, opset=13)


def test_concat_with_an_empty_input_and_strings():
    check_node("Concat", [("a", sample((2, 0))), ("b", sample((2, 3)))], {"axis": 1}, opset=11)
    check_strings("Concat", [("a", STRINGS), ("b", STRINGS)], {"axis": 0})


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opset", [2, 11, 13, 18])
@pytest.mark.parametrize("axis, split, outputs", [
    (0, None, 2), (1, None, 3), (-1, None, 2), (1, [2, 4], 2), (-2, [3, 0, 3], 3), (2, [4], 1),
])
def test_split(axis, split, outputs, opset, dtype):
    if axis < 0 and opset < 11:
        pytest.skip("negative axes arrived in opset 11")
    x = sample((6, 6, 4), dtype)
    inputs, attrs, inits = [("x", x)], {"axis": axis}, []
    if split is not None and opset < 13:
        attrs["split"] = split
    elif split is not None:
        inputs.append(("split", ints(*split)))
        inits.append("split")
    elif opset >= 18:
        attrs["num_outputs"] = outputs
    check_node("Split", inputs, attrs, initializers=inits, outputs=outputs, opset=opset)


@pytest.mark.parametrize("size, parts", [(7, 3), (5, 2), (10, 4), (3, 3)])
def test_split_uneven_last_chunk(size, parts):
    check_node("Split", [("x", sample((size, 2)))], {"num_outputs": parts}, outputs=parts,
               opset=18)


def test_split_bad_sizes_fail():
    with pytest.raises(FrontendError, match=r"split sizes \[2, 2\] must be 2 non-negative "
                                            r"sizes summing to the axis size 5"):
        compile_node("Split", [("x", sample((5,))), ("split", ints(2, 2))], outputs=2,
                     computed=["split"], opset=13)


# ----------------------------------------------------------------------------- slice


SLICES = [  # starts, ends, axes, steps on a (6, 5, 4) input
    ([1], [4], None, None),
    ([0, 1], [6, 4], [0, 2], None),
    ([-3], [INT_MAX], [1], None),
    ([-100, 2], [100, -1], [-1, 0], None),
    ([5, 3], [-INT_MAX, 0], [0, 1], [-1, -2]),
    ([4], [0], [2], [-1]),
    ([-1], [-7], [0], [-2]),
    ([0, 0, 1], [6, 5, 4], [0, 1, 2], [2, 3, 2]),
    ([3], [1], [0], [1]),  # empty
    ([10], [20], [1], [1]),  # starts past the end: empty
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
def test_slice(starts, ends, axes, steps, dtype):
    inputs = [("x", sample((6, 5, 4), dtype)), ("starts", ints(*starts)), ("ends", ints(*ends))]
    if axes is not None or steps is not None:
        inputs.append(("axes", ints(*(axes or range(len(starts))))))
    if steps is not None:
        inputs.append(("steps", ints(*steps)))
    check_node("Slice", inputs, initializers=["starts", "ends", "axes", "steps"], opset=13)


@pytest.mark.parametrize("starts, ends, axes", [
    ([1], [4], None), ([0, -2], [3, 100], [1, 0]), ([-3], [-1], [-1]),
])
def test_slice_opset9_attributes(starts, ends, axes):
    attrs = {"starts": starts, "ends": ends}
    if axes is not None:
        attrs["axes"] = axes
    check_node("Slice", [("x", sample((6, 5, 4)))], attrs, opset=9)


def test_slice_strings_and_int32_bounds():
    check_strings("Slice", [("x", STRINGS), ("starts", np.array([2], np.int32)),
                            ("ends", np.array([-4], np.int32)), ("axes", np.array([1], np.int32)),
                            ("steps", np.array([-1], np.int32))],
                  initializers=["starts", "ends", "axes", "steps"])


def test_slice_bounds_from_graph_inputs_specialize():
    check_node("Slice", [("x", sample((4,))), ("starts", ints(1)), ("ends", ints(3))],
               initializers=["ends"], opset=13)


def test_slice_zero_step_fails():
    with pytest.raises(FrontendError, match=r"steps \[0\] contain 0"):
        compile_node("Slice", [("x", sample((4,))), ("starts", ints(1)), ("ends", ints(3)),
                               ("axes", ints(0)), ("steps", ints(0))],
                     computed=["starts", "ends", "axes", "steps"], opset=13)


# ----------------------------------------------------------------------------- expand, tile


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, target", [
    ((3, 1), (2, 1, 6)), ((3, 1), (3, 4)), ((1,), (2, 3)), ((2, 3), (1,)), ((4, 1, 2), (3, 1)),
    ((), (2, 2)), ((1, 3), (0, 3)),
])
def test_expand(shape, target, dtype):
    check_node("Expand", [("x", sample(shape, dtype)), ("shape", ints(*target))],
               initializers=["shape"], opset=13)


def test_expand_incompatible_fails():
    with pytest.raises(FrontendError, match=r"\(2, 3\) does not broadcast with the shape \[4\]"):
        compile_node("Expand", [("x", sample((2, 3))), ("shape", ints(4))],
                     computed=["shape"], opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, repeats", [((3,), (2,)), ((2, 3), (1, 3)), ((2, 1, 3), (2, 2, 0)),
                                            ((2, 3), (1, 1))])
def test_tile(shape, repeats, dtype):
    check_node("Tile", [("x", sample(shape, dtype)), ("repeats", ints(*repeats))],
               initializers=["repeats"], opset=13)


# ----------------------------------------------------------------------------- the ops themselves


def test_patterns():
    for name in ["reshape", "transpose", "concat", "slice", "tile", "identity"]:
        assert get_op(name).pattern == Pattern.INJECTIVE
    assert get_op("broadcast_to").pattern == Pattern.BROADCAST


@pytest.mark.parametrize("op, attrs, types, message", [
    ("reshape", {"shape": (4,)}, [TensorType((2, 3), "float32")], r"6 elements\) to \(4,\)"),
    ("reshape", {"shape": (-1, 6)}, [TensorType((6,), "float32")], r"negative dimensions"),
    ("transpose", {"perm": (1, 1)}, [TensorType((2, 3), "int64")], r"not a permutation"),
    ("slice", {"starts": (0,), "ends": (9,), "steps": (1,)}, [TensorType((4,), "bool")],
     r"axis 0 of size 4 has start 0, end 9"),
    ("slice", {"starts": (0,), "ends": (2,), "steps": (1, 1)}, [TensorType((4,), "bool")],
     r"one entry per axis"),
    ("concat", {"axis": 0}, [TensorType((2,), "float32"), TensorType((2,), "int64")],
     r"share one dtype"),
    ("concat", {"axis": 1}, [TensorType((2, 3), "float32"), TensorType((3, 3), "float32")],
     r"shapes \(2, 3\), \(3, 3\) differ outside the concatenation axis 1"),
    ("transpose", {"perm": (0, 2)}, [TensorType((2, 3), "int64")], r"not a permutation"),
    ("broadcast_to", {"shape": (2,)}, [TensorType((2, 2), "float32")], r"exactly \(2,\)"),
    ("tile", {"repeats": (2,)}, [TensorType((2, 2), "float32")], r"one non-negative count"),
])
def test_infer_errors(op, attrs, types, message):
    opdef = get_op(op)
    with pytest.raises(ShapeError, match=message):
        opdef.infer_types(opdef.make_attrs(attrs), types)


@pytest.mark.parametrize("starts, ends, steps", [((5,), (-1,), (-1,)), ((3,), (0,), (-2,)),
                                                 ((0,), (6,), (4,)), ((2,), (2,), (1,))])
def test_slice_reference_matches_inference(starts, ends, steps):
    opdef = get_op("slice")
    attrs = opdef.make_attrs({"starts": starts, "ends": ends, "steps": steps})
    (inferred,) = opdef.infer_types(attrs, [TensorType((6,), "float32")])
    (out,) = opdef.evaluate(attrs, [np.arange(6, dtype=np.float32)])
    assert out.shape == inferred.shape
    np.testing.assert_array_equal(out, np.arange(6)[slice(starts[0], ends[0] if ends[0] >= 0
                                                          else None, steps[0])])


def test_shape_arithmetic_folds_into_a_static_reshape():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as exporters write flatten: every
    shape op folds, leaving one reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(ints(0), "axes"),
             numpy_helper.from_array(ints(-1), "minus_one")]
    graph = helper.make_graph(
        nodes, "flatten", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    graph_ir = import_onnx(model)
    assert [node.op for node in graph_ir.nodes] == ["reshape"]
    assert graph_ir.nodes[0].attrs.shape == (2, 12)
    x = sample((2, 3, 4))
    (out,) = ember.compile(model, target="reference").run({"x": x})
    np.testing.assert_array_equal(out, x.reshape(2, 12))

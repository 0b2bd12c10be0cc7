"""Host programs: If, Loop, Scan, SequenceMap, sequence and optional ops run on the host,
calling compiled tensor segments; checked against ONNX Runtime and onnx's ReferenceEvaluator."""

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.compiler.host_program import needs_host_program
from ember.errors import FrontendError, InputError, UnsupportedOpError

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
SEQ_FLOAT = helper.make_tensor_sequence_value_info


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "main", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def body(name, nodes, inputs, outputs):
    return helper.make_graph(nodes, name, inputs, outputs)


def assert_same(got, expected):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
        return
    if expected is None:
        assert got is None
        return
    expected = np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def check(proto, feeds, oracle="onnxruntime", target="llvm"):
    """Run `proto` with ember and with the oracle; return ember's module."""
    onnx.checker.check_model(proto, full_check=True)
    module = ember.compile(proto, target=target)
    got = module.run(feeds)
    if oracle == "onnxruntime":
        session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        expected = session.run(None, feeds)
    else:
        expected = ReferenceEvaluator(proto).run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_same(g, e)
    return module


# -- If

def if_model():
    # Each branch reads `x` and `y` from the enclosing graph (captures).
    then_branch = body("then", [helper.make_node("Add", ["x", "y"], ["t"])], [],
                       [tensor("t", FLOAT, [2, 3])])
    else_branch = body("else", [helper.make_node("Mul", ["x", "y"], ["e0"]),
                                helper.make_node("Neg", ["e0"], ["e"])], [],
                       [tensor("e", FLOAT, [2, 3])])
    return model(
        [helper.make_node("Relu", ["x0"], ["x"]),
         helper.make_node("If", ["cond"], ["z"], then_branch=then_branch,
                          else_branch=else_branch),
         helper.make_node("Sigmoid", ["z"], ["out"])],
        [tensor("x0", FLOAT, [2, 3]), tensor("y", FLOAT, [2, 3]), tensor("cond", BOOL, [])],
        [tensor("out", FLOAT, [2, 3])])


@pytest.mark.parametrize("cond", [True, False])
def test_if_runs_the_chosen_branch(cond):
    rng = np.random.default_rng(0)
    feeds = {"x0": rng.standard_normal((2, 3)).astype(np.float32),
             "y": rng.standard_normal((2, 3)).astype(np.float32), "cond": np.array(cond)}
    module = check(if_model(), feeds)
    assert module.inputs[2] == ember.TensorSpec("cond", (), "bool")
    assert module.outputs == [ember.TensorSpec("out", (2, 3), "float32")]


def test_host_modules_cannot_be_saved_yet(tmp_path):
    module = ember.compile(if_model(), target="llvm")
    with pytest.raises(ember.EmberError, match="host programs"):
        module.save(str(tmp_path / "m"))


def test_if_on_the_reference_target_too():
    feeds = {"x0": np.ones((2, 3), np.float32), "y": np.ones((2, 3), np.float32),
             "cond": np.array(False)}
    check(if_model(), feeds, target="reference")


def test_symbolic_input_dimensions_compile_per_shape():
    then_branch = body("then", [helper.make_node("Relu", ["x"], ["t"])], [],
                       [tensor("t", FLOAT, ["n"])])
    else_branch = body("else", [helper.make_node("Neg", ["x"], ["e"])], [],
                       [tensor("e", FLOAT, ["n"])])
    proto = model([helper.make_node("If", ["cond"], ["y"], then_branch=then_branch,
                                    else_branch=else_branch)],
                  [tensor("x", FLOAT, ["n"]), tensor("cond", BOOL, [])],
                  [tensor("y", FLOAT, ["n"])])
    module = ember.compile(proto, target="llvm")
    assert module.inputs[0] == ember.TensorSpec("x", (None,), "float32")
    for size in (3, 5):
        x = np.linspace(-1, 1, size, dtype=np.float32)
        assert_same(module.run({"x": x, "cond": np.array(True)})[0], np.maximum(x, 0))
    assert module.specializations == 2
    pinned = ember.compile(proto, target="llvm", input_shapes={"x": [4]})
    assert pinned.inputs[0] == ember.TensorSpec("x", (4,), "float32")
    with pytest.raises(InputError, match="expects shape"):
        pinned.run({"x": np.ones(3, np.float32), "cond": np.array(True)})


def test_models_without_host_ops_take_the_normal_path():
    plain = model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", FLOAT, [2])],
                  [tensor("y", FLOAT, [2])])
    assert not needs_host_program(plain)
    assert needs_host_program(if_model())


# -- Loop

def loop_model(with_if=False):
    # carried: acc (float[2]); scan output: acc * i each iteration; stops when cond turns false
    nodes = [
        helper.make_node("Cast", ["i"], ["i_f"], to=FLOAT),
        helper.make_node("Add", ["acc_in", "step"], ["acc_sum"]),
    ]
    if with_if:
        # Nested If: on odd iterations add i instead of multiplying by it.
        nodes += [
            helper.make_node("Mod", ["i", "two"], ["parity"]),
            helper.make_node("Cast", ["parity"], ["odd"], to=BOOL),
            helper.make_node(
                "If", ["odd"], ["acc_out"],
                then_branch=body("odd", [helper.make_node("Add", ["acc_sum", "i_f"], ["o"])],
                                 [], [tensor("o", FLOAT, [2])]),
                else_branch=body("even", [helper.make_node("Mul", ["acc_sum", "i_f"], ["v"])],
                                 [], [tensor("v", FLOAT, [2])])),
        ]
    else:
        nodes.append(helper.make_node("Mul", ["acc_sum", "i_f"], ["acc_out"]))
    nodes += [
        helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
        helper.make_node("Less", ["total", "limit"], ["cond_out"]),
        helper.make_node("Identity", ["acc_out"], ["scan"]),
    ]
    loop_body = body("loop_body", nodes,
                     [tensor("i", INT64, []), tensor("cond_in", BOOL, []),
                      tensor("acc_in", FLOAT, [2])],
                     [tensor("cond_out", BOOL, []), tensor("acc_out", FLOAT, [2]),
                      tensor("scan", FLOAT, [2])])
    return model(
        [helper.make_node("Loop", ["trip", "cond", "acc0"], ["acc", "scans"], body=loop_body)],
        [tensor("trip", INT64, []), tensor("cond", BOOL, []), tensor("acc0", FLOAT, [2]),
         tensor("step", FLOAT, [2])],
        [tensor("acc", FLOAT, [2]), tensor("scans", FLOAT, [None, 2])],
        initializers=[("limit", np.float32(1000.0)), ("two", np.int64(2))])


@pytest.mark.parametrize("trip, cond, step", [
    (5, True, [1.0, 2.0]),        # runs the full trip count
    (10, True, [30.0, 40.0]),     # the body's condition stops it early
    (0, True, [1.0, 2.0]),        # zero iterations: carried values pass through
    (4, False, [1.0, 2.0]),       # a false initial condition: zero iterations
])
def test_loop_carries_values_and_stacks_scan_outputs(trip, cond, step):
    feeds = {"trip": np.array(trip, np.int64), "cond": np.array(cond),
             "acc0": np.array([0.5, -1.0], np.float32), "step": np.array(step, np.float32)}
    module = check(loop_model(), feeds)
    # The body compiles once: every iteration has the same input signature.
    assert module.specializations <= 1


def test_if_nested_in_loop():
    feeds = {"trip": np.array(6, np.int64), "cond": np.array(True),
             "acc0": np.array([0.5, -1.0], np.float32), "step": np.array([1, 2], np.float32)}
    check(loop_model(with_if=True), feeds)


def test_loop_with_a_growing_carried_value_compiles_per_shape():
    # y = Concat(y, [i]) each iteration: a new input shape for the body every time.
    loop_body = body(
        "grow",
        [helper.make_node("Cast", ["i"], ["i_f"], to=FLOAT),
         helper.make_node("Unsqueeze", ["i_f", "zero"], ["i_1"]),
         helper.make_node("Concat", ["y_in", "i_1"], ["y_out"], axis=0),
         helper.make_node("Identity", ["c_in"], ["c_out"])],
        [tensor("i", INT64, []), tensor("c_in", BOOL, []), tensor("y_in", FLOAT, [None])],
        [tensor("c_out", BOOL, []), tensor("y_out", FLOAT, [None])])
    proto = model(
        [helper.make_node("Loop", ["trip", "", "y0"], ["y"], body=loop_body)],
        [tensor("trip", INT64, []), tensor("y0", FLOAT, [1])], [tensor("y", FLOAT, [None])],
        initializers=[("zero", np.array([0], np.int64))])
    feeds = {"trip": np.array(4, np.int64), "y0": np.array([7.0], np.float32)}
    module = check(proto, feeds)
    assert module.specializations == 4


# -- Scan

def scan_model(reverse):
    scan_body = body(
        "scan_body",
        [helper.make_node("Add", ["sum_in", "row"], ["sum_out"]),
         helper.make_node("Mul", ["sum_out", "scale"], ["scaled"])],
        [tensor("sum_in", FLOAT, [3]), tensor("row", FLOAT, [3])],
        [tensor("sum_out", FLOAT, [3]), tensor("scaled", FLOAT, [3])])
    return model(
        [helper.make_node("Scan", ["init", "xs"], ["final", "ys"], body=scan_body,
                          num_scan_inputs=1, scan_input_axes=[1],
                          scan_input_directions=[1 if reverse else 0],
                          scan_output_axes=[-1], scan_output_directions=[1 if reverse else 0])],
        [tensor("init", FLOAT, [3]), tensor("xs", FLOAT, [3, 4])],
        [tensor("final", FLOAT, [3]), tensor("ys", FLOAT, [3, 4])],
        initializers=[("scale", np.float32(0.5))], opset=16)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_over_an_axis_with_directions(reverse):
    rng = np.random.default_rng(1)
    feeds = {"init": rng.standard_normal(3).astype(np.float32),
             "xs": rng.standard_normal((3, 4)).astype(np.float32)}
    check(scan_model(reverse), feeds)


# -- sequences and SequenceMap

def test_sequence_ops():
    nodes = [
        helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=1),
        helper.make_node("SequenceErase", ["parts", "minus_one"], ["erased"]),
        helper.make_node("SequenceInsert", ["erased", "y", "zero"], ["inserted"]),
        helper.make_node("SequenceAt", ["inserted", "one"], ["second"]),
        helper.make_node("SequenceLength", ["inserted"], ["length"]),
        helper.make_node("ConcatFromSequence", ["inserted"], ["joined"], axis=1),
        helper.make_node("SequenceConstruct", ["y", "y"], ["pair"]),
        helper.make_node("ConcatFromSequence", ["pair"], ["stacked"], axis=-1, new_axis=1),
    ]
    proto = model(
        nodes, [tensor("x", FLOAT, [2, 6]), tensor("y", FLOAT, [2, 2])],
        [SEQ_FLOAT("inserted", FLOAT, [2, None]), tensor("second", FLOAT, [2, 1]),
         tensor("length", INT64, []), tensor("joined", FLOAT, [2, 6]),
         tensor("stacked", FLOAT, [2, 2, 2])],
        initializers=[("split", np.array([1, 3, 2], np.int64)),
                      ("minus_one", np.int64(-1)), ("zero", np.int64(0)), ("one", np.int64(1))])
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(2, 6),
             "y": np.full((2, 2), -1.0, np.float32)}
    module = check(proto, feeds)
    assert module.outputs[0].dtype == "sequence(float32)"


def test_sequence_map_over_a_sequence_input_and_a_tensor():
    map_body = body("map_body", [helper.make_node("Add", ["elem", "bias"], ["out0"]),
                                 helper.make_node("Shape", ["elem"], ["shape"])],
                    [tensor("elem", FLOAT, None), tensor("bias", FLOAT, [1])],
                    [tensor("out0", FLOAT, None), tensor("shape", INT64, [None])])
    proto = model(
        [helper.make_node("SequenceMap", ["xs", "b"], ["ys", "shapes"], body=map_body)],
        [SEQ_FLOAT("xs", FLOAT, None), tensor("b", FLOAT, [1])],
        [SEQ_FLOAT("ys", FLOAT, None), SEQ_FLOAT("shapes", INT64, None)])
    feeds = {"xs": [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)],
             "b": np.array([2.0], np.float32)}
    module = check(proto, feeds, oracle="reference")
    assert module.inputs[0] == ember.TensorSpec("xs", None, "sequence(float32)")
    with pytest.raises(InputError, match="is a sequence: give a list of arrays"):
        module.run({"xs": np.ones(3, np.float32), "b": feeds["b"]})


# -- optionals

@pytest.mark.parametrize("present", [True, False])
def test_optional_has_and_get_element(present):
    opt_type = helper.make_optional_type_proto(
        helper.make_tensor_type_proto(FLOAT, [3]))
    then_branch = body("has", [helper.make_node("OptionalGetElement", ["opt"], ["v0"]),
                               helper.make_node("Abs", ["v0"], ["v"])], [],
                       [tensor("v", FLOAT, [3])])
    else_branch = body("empty", [helper.make_node("Identity", ["fallback"], ["f"])], [],
                       [tensor("f", FLOAT, [3])])
    proto = model(
        [helper.make_node("OptionalHasElement", ["opt"], ["has"]),
         helper.make_node("If", ["has"], ["out"], then_branch=then_branch,
                          else_branch=else_branch)],
        [helper.make_value_info("opt", opt_type), tensor("fallback", FLOAT, [3])],
        [tensor("has", BOOL, []), tensor("out", FLOAT, [3])], opset=18)
    value = np.array([-1.0, 2.0, -3.0], np.float32) if present else None
    feeds = {"opt": value, "fallback": np.zeros(3, np.float32)}
    check(proto, feeds, oracle="reference")


# -- errors

def test_a_body_that_fails_to_compile_names_the_node_and_the_body():
    # MatMul of [2,3] by [2,3]: the branch cannot compile.
    bad = body("bad_branch", [helper.make_node("MatMul", ["x", "x"], ["m"])], [],
               [tensor("m", FLOAT, None)])
    good = body("good_branch", [helper.make_node("Identity", ["x"], ["g"])], [],
                [tensor("g", FLOAT, None)])
    proto = model([helper.make_node("If", ["cond"], ["out"], name="choose",
                                    then_branch=bad, else_branch=good)],
                  [tensor("x", FLOAT, [2, 3]), tensor("cond", BOOL, [])],
                  [tensor("out", FLOAT, [None, None])])
    module = ember.compile(proto, target="llvm")
    x = np.ones((2, 3), np.float32)
    assert_same(module.run({"x": x, "cond": np.array(False)})[0], x)
    with pytest.raises(FrontendError,
                       match=r"node 'choose' \(If\), then_branch \(graph 'bad_branch'\)"):
        module.run({"x": x, "cond": np.array(True)})


def test_unsupported_op_in_a_body_fails_at_compile_time():
    loop_body = body("loop_body", [helper.make_node("Identity", ["c_in"], ["c_out"]),
                                   helper.make_node("NoSuchOp", ["v_in"], ["v_out"],
                                                    name="mystery")],
                     [tensor("i", INT64, []), tensor("c_in", BOOL, []),
                      tensor("v_in", FLOAT, [2])],
                     [tensor("c_out", BOOL, []), tensor("v_out", FLOAT, [2])])
    proto = model([helper.make_node("Loop", ["trip", "", "v0"], ["v"], name="outer",
                                    body=loop_body)],
                  [tensor("trip", INT64, []), tensor("v0", FLOAT, [2])],
                  [tensor("v", FLOAT, [2])])
    with pytest.raises(UnsupportedOpError, match=r"NoSuchOp.*'outer\.body/mystery'"):
        ember.compile(proto, target="llvm")


def test_sequence_at_out_of_range_says_so():
    proto = model([helper.make_node("SequenceAt", ["xs", "at"], ["y"], name="pick")],
                  [SEQ_FLOAT("xs", FLOAT, None), tensor("at", INT64, [])],
                  [tensor("y", FLOAT, [2])])
    module = ember.compile(proto, target="llvm")
    with pytest.raises(ember.ShapeError, match=r"node 'pick' \(SequenceAt\): position 2 is "
                                               r"out of range for a sequence of 2"):
        module.run({"xs": [np.ones(2, np.float32)] * 2, "at": np.array(2, np.int64)})

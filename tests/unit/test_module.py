"""The runtime Module: run, __call__, the TensorSpec signature, input checks, fresh outputs,
benchmark, and graph outputs that are not plain node outputs (an input, a constant, the same
value twice), and weights listed as graph inputs (old IR versions) that are not module inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.runtime.module import BenchmarkResult, summarize_times

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3)).astype(np.float32)
Y = RNG.standard_normal((3,)).astype(np.float32)


def tensor(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(nodes, inputs, outputs, initializers=(), ir_version=8):
    graph = helper.make_graph(nodes, "module_test", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=ir_version)


def two_in_two_out_model() -> onnx.ModelProto:
    """sum = x + y (broadcast), relu = max(sum, 0)."""
    return make_model(
        [helper.make_node("Add", ["x", "y"], ["sum"]), helper.make_node("Relu", ["sum"], ["relu"])],
        [tensor("x", [2, 3]), tensor("y", [3])], [tensor("sum", [2, 3]), tensor("relu", [2, 3])],
    )


@pytest.fixture(scope="module")
def two_in_two_out() -> ember.Module:
    return ember.compile(two_in_two_out_model(), target="reference")


@pytest.fixture(scope="module")
def one_out() -> ember.Module:
    model = make_model([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", [2, 3])],
                       [tensor("y", [2, 3])])
    return ember.compile(model, target="reference")


# -- the signature


def test_signature(two_in_two_out):
    module = two_in_two_out
    assert module.inputs == [ember.TensorSpec("x", (2, 3), "float32"),
                             ember.TensorSpec("y", (3,), "float32")]
    assert module.outputs == [ember.TensorSpec("sum", (2, 3), "float32"),
                              ember.TensorSpec("relu", (2, 3), "float32")]
    assert str(module.inputs[0]) == "x: float32[2,3]"
    assert module.target == "reference"
    assert repr(module) == ("<ember.Module target='reference' (x: float32[2,3], y: float32[3]) "
                            "-> (sum: float32[2,3], relu: float32[2,3])>")


def test_tensor_spec_is_a_frozen_value():
    spec = ember.TensorSpec("x", (1, 2), "float32")
    assert spec == ember.TensorSpec("x", (1, 2), "float32")
    assert len({spec, ember.TensorSpec("x", (1, 2), "float32")}) == 1
    with pytest.raises(AttributeError):
        spec.name = "y"


# -- running


def test_run_returns_outputs_in_graph_order(two_in_two_out):
    outputs = two_in_two_out.run({"y": Y, "x": X})  # feed order does not matter
    assert isinstance(outputs, list) and len(outputs) == 2
    np.testing.assert_allclose(outputs[0], X + Y, rtol=1e-6)
    np.testing.assert_allclose(outputs[1], np.maximum(X + Y, 0), rtol=1e-6)
    for spec, out in zip(two_in_two_out.outputs, outputs):
        assert out.shape == spec.shape and out.dtype == np.dtype(spec.dtype)


def test_call_by_position_and_name(two_in_two_out):
    expected = two_in_two_out.run({"x": X, "y": Y})
    for result in (two_in_two_out(X, Y), two_in_two_out(x=X, y=Y), two_in_two_out(X, y=Y)):
        assert isinstance(result, tuple) and len(result) == 2
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)


def test_call_with_one_output_returns_an_array(one_out):
    result = one_out(X)
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, -X)


def test_run_accepts_array_likes_of_the_right_dtype():
    model = make_model([helper.make_node("Neg", ["i"], ["j"])],
                       [tensor("i", [2, 2], TensorProto.INT64)],
                       [tensor("j", [2, 2], TensorProto.INT64)])
    module = ember.compile(model)
    (out,) = module.run({"i": [[1, 2], [3, 4]]})  # Python ints are int64
    np.testing.assert_array_equal(out, [[-1, -2], [-3, -4]])
    assert out.dtype == np.int64


def test_inputs_are_not_modified(two_in_two_out):
    x, y = X.copy(), Y.copy()
    two_in_two_out(x, y)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_outputs_are_fresh_arrays(two_in_two_out):
    first = two_in_two_out.run({"x": X, "y": Y})
    expected = [a.copy() for a in first]
    for array in first:
        array[...] = 1234.0
    second = two_in_two_out.run({"x": X, "y": Y})
    for got, want in zip(second, expected):
        np.testing.assert_array_equal(got, want)
    assert not np.shares_memory(first[0], second[0])


# -- input validation


@pytest.mark.parametrize("feeds, message", [
    ({"x": X}, r"inputs do not match the module: missing \['y'\]; it takes "
               r"\['x: float32\[2,3\]', 'y: float32\[3\]'\]"),
    ({"x": X, "y": Y, "z": Y}, r"unknown \['z'\]"),
    ({"x": X, "z": Y}, r"missing \['y'\]; unknown \['z'\]"),
    ({"x": X.T, "y": Y}, r"input 'x' expects shape \(2, 3\), got \(3, 2\)"),
    ({"x": X, "y": Y[None]}, r"input 'y' expects shape \(3,\), got \(1, 3\)"),
    ({"x": X.astype(np.float64), "y": Y},
     r"input 'x' expects dtype float32, got float64; convert it with \.astype\(np\.float32\)"),
    ({"x": X, "y": [1.0, 2.0, 3.0]}, r"input 'y' expects dtype float32, got float64"),
    ({"x": X.astype(np.int32), "y": Y}, r"input 'x' expects dtype float32, got int32"),
])
def test_run_rejects_bad_feeds(two_in_two_out, feeds, message):
    with pytest.raises(ember.InputError, match=message):
        two_in_two_out.run(feeds)


def test_run_needs_a_mapping(two_in_two_out):
    with pytest.raises(ember.InputError, match="feeds must be a dict of input name -> array, "
                                               "got list"):
        two_in_two_out.run([X, Y])


def test_call_rejects_an_input_given_twice(two_in_two_out):
    with pytest.raises(ember.InputError, match="input 'x' is given both by position and by name"):
        two_in_two_out(X, Y, x=X)


def test_call_rejects_too_many_positional_inputs(two_in_two_out):
    with pytest.raises(ember.InputError, match=r"the module takes 2 input\(s\) \(x, y\), got 3 "
                                               r"positional"):
        two_in_two_out(X, Y, Y)


def test_call_rejects_a_missing_input(two_in_two_out):
    with pytest.raises(ember.InputError, match=r"missing \['y'\]"):
        two_in_two_out(X)


def test_input_error_is_an_ember_error():
    assert issubclass(ember.InputError, ember.EmberError)


# -- random inputs and benchmark


def test_random_inputs_match_the_signature():
    model = make_model(
        [helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["b"], ["b_f"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["i_f", "b_f"], ["s"]),
         helper.make_node("Add", ["s", "f"], ["y"])],
        [tensor("i", [4], TensorProto.INT64), tensor("b", [4], TensorProto.BOOL),
         tensor("f", [4])],
        [tensor("y", [4])],
    )
    module = ember.compile(model)
    feeds = module.random_inputs(seed=3)
    assert list(feeds) == ["i", "b", "f"]
    for spec in module.inputs:
        assert feeds[spec.name].shape == spec.shape
        assert feeds[spec.name].dtype == np.dtype(spec.dtype)
    again = module.random_inputs(seed=3)
    for name in feeds:
        np.testing.assert_array_equal(feeds[name], again[name])
    module.run(feeds)


def test_benchmark_returns_statistics(two_in_two_out):
    result = two_in_two_out.benchmark(repeat=7, number=2)
    assert isinstance(result, BenchmarkResult)
    assert result.runs == 7
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.mean_ms > 0
    assert "median" in str(result) and "(7 runs)" in str(result)


def test_benchmark_checks_its_feeds(two_in_two_out):
    with pytest.raises(ember.InputError, match=r"missing \['y'\]"):
        two_in_two_out.benchmark({"x": X}, repeat=1)


def test_benchmark_with_given_feeds(two_in_two_out):
    assert two_in_two_out.benchmark({"x": X, "y": Y}, repeat=3, warmup=0).runs == 3


@pytest.mark.parametrize("isolated", [False, True], ids=["in_sequence", "isolated"])
def test_profile_has_a_row_per_kernel_call_in_run_order(isolated):
    module = ember.compile(two_in_two_out_model(), opt_level=0)   # two kernels, unfused
    profile = module.profile({"x": X, "y": Y}, repeat=3, isolated=isolated)
    assert [row.kernel for row in profile] == [step.kernel for step in module._executor.steps]
    assert len(profile) == 2 and all(row.ms > 0 for row in profile)
    assert sum(row.share for row in profile) == pytest.approx(1.0)
    assert str(profile).splitlines()[0].split() == ["kernel", "ops", "ms", "share"]
    # profiling leaves the module as it was: a run still gives the reference's answer
    got = module.run({"x": X, "y": Y})
    want = ember.compile(two_in_two_out_model(), target="reference").run({"x": X, "y": Y})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_aligned_arrays_are_used_as_they_are_and_others_copied():
    base = np.arange(40, dtype=np.float32)
    odd = base[1:33]                                  # 4 bytes past an aligned start at best
    copy = ember.aligned(odd)
    assert copy.ctypes.data % 64 == 0 and copy.flags.c_contiguous
    assert np.array_equal(copy, odd) and not np.shares_memory(copy, odd)
    assert ember.aligned(copy) is copy
    assert ember.aligned([[1, 2], [3, 4]], dtype=np.int64).dtype == np.int64
    strided = ember.aligned(np.arange(12.0).reshape(3, 4).T)
    assert strided.flags.c_contiguous and strided.ctypes.data % 64 == 0


def test_random_inputs_are_aligned_for_in_place_runs(two_in_two_out):
    assert all(a.ctypes.data % 64 == 0 for a in two_in_two_out.random_inputs().values())


def test_summarize_times():
    result = summarize_times([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (result.median_ms, result.mean_ms, result.p10_ms, result.p90_ms, result.runs) == (
        3.0, 3.0, 1.0, 5.0, 5)


# -- graph outputs that are not plain node outputs


def test_graph_output_that_is_an_input():
    model = make_model([], [tensor("x", [2, 3])], [tensor("x", [2, 3])])
    module = ember.compile(model)
    assert len(module.outputs) == 1
    assert [spec.name for spec in module.inputs] == ["x"]
    x = X.copy()
    (out,) = module.run({"x": x})
    np.testing.assert_array_equal(out, X)
    out[...] = 0
    np.testing.assert_array_equal(x, X)  # the output is a copy, not the caller's input


def test_graph_output_that_is_a_constant():
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [2, 3])],
        [tensor("y", [2, 3]), tensor("w", [2, 3])],
        initializers=[numpy_helper.from_array(weight, "w")],
    )
    module = ember.compile(model)
    assert len(module.outputs) == 2
    assert [spec.name for spec in module.inputs] == ["x"]
    first = module.run({"x": X})
    np.testing.assert_array_equal(first[1], weight)
    first[1][...] = -1  # must not change the constant the next run returns
    np.testing.assert_array_equal(module.run({"x": X})[1], weight)


def test_graph_output_that_is_a_constant_node():
    value = helper.make_tensor("c", TensorProto.FLOAT, [2], [1.5, -2.0])
    model = make_model([helper.make_node("Constant", [], ["c"], value=value)], [],
                       [tensor("c", [2])])
    module = ember.compile(model)
    assert module.inputs == []
    np.testing.assert_array_equal(module.run({})[0], np.array([1.5, -2.0], np.float32))
    np.testing.assert_array_equal(module(), np.array([1.5, -2.0], np.float32))


def test_graph_output_listed_twice():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [2, 3])],
                       [tensor("y", [2, 3]), tensor("y", [2, 3])])
    module = ember.compile(model)
    assert len(module.outputs) == 2
    first, second = module.run({"x": X})
    np.testing.assert_array_equal(first, np.maximum(X, 0))
    np.testing.assert_array_equal(second, np.maximum(X, 0))
    first[...] = 7
    np.testing.assert_array_equal(second, np.maximum(X, 0))  # two arrays, not one


def test_graph_output_that_is_an_input_and_a_node_output():
    model = make_model([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", [2, 3])],
                       [tensor("y", [2, 3]), tensor("x", [2, 3])])
    module = ember.compile(model)
    y, x = module(X)
    np.testing.assert_array_equal(y, -X)
    np.testing.assert_array_equal(x, X)


@pytest.mark.xfail(strict=True, reason=(
    "the IR has one value per name, so an output that is an input or a constant, or is listed "
    "twice, gets a fresh IR name ('x:1') and Module.outputs reports that, not the model's name"))
@pytest.mark.parametrize("outputs", [["x"], ["y", "y"], ["y", "x"]])
def test_output_names_are_the_models(outputs):
    model = make_model([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", [2, 3])],
                       [tensor(name, [2, 3]) for name in outputs])
    assert [spec.name for spec in ember.compile(model).outputs] == outputs


# -- weights listed as graph inputs


def test_initializer_backed_inputs_are_not_module_inputs():
    weight = RNG.standard_normal((2, 3)).astype(np.float32)
    bias = RNG.standard_normal((3,)).astype(np.float32)
    model = make_model(
        [helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        [tensor("x", [2, 3]), tensor("w", [2, 3]), tensor("b", [3])], [tensor("y", [2, 3])],
        initializers=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
        ir_version=3,
    )
    module = ember.compile(model)
    assert module.inputs == [ember.TensorSpec("x", (2, 3), "float32")]
    np.testing.assert_allclose(module(X), X * weight + bias, rtol=1e-6)
    with pytest.raises(ember.InputError, match=r"unknown \['w'\]"):
        module.run({"x": X, "w": weight})


def test_module_from_a_saved_file(tmp_path):
    model = make_model([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", [2, 3])],
                       [tensor("y", [2, 3])])
    path = tmp_path / "neg.onnx"
    onnx.save(model, str(path))
    for source in (str(path), path, path.read_bytes()):
        np.testing.assert_array_equal(ember.compile(source)(X), -X)

"""Tuning tasks: one per distinct tunable kernel of a compiled model, with calls per run,
FLOPs, a stable key and a space; `op_task` for one operator compiled as in a model."""

import pickle

import pytest
from autotune_models import two_conv_model

from ember.autotune.task import Task, TuningError, extract_tasks, op_task
from ember.compiler.build import plan_kernels
from ember.compiler.frontend.onnx import import_onnx
from ember.errors import EmberError
from ember.ir import loop
from ember.target import Target


@pytest.fixture(scope="module")
def tasks():
    return extract_tasks(two_conv_model())


def test_one_task_per_distinct_tunable_kernel(tasks):
    _, kernels = plan_kernels(import_onnx(two_conv_model()), Target.parse("llvm"))
    calls = [call.kernel for call in kernels.calls]
    assert sorted(t.key for t in tasks) == sorted(
        name for name in set(calls) if len(Task(kernels.workloads[name], "llvm").space()) > 1)
    for task in tasks:
        assert task.weight == calls.count(task.key)
        assert len(task.space()) > 1


def test_the_shared_conv_kernel_comes_first_with_two_calls(tasks):
    conv = tasks[0]
    assert conv.anchor.op == "conv2d_nchwc"
    assert conv.weight == 2
    assert conv.flops == 2 * (16 * 8 * 8) * (16 * 3 * 3)  # 2 x outputs x MACs per output
    assert conv.name.startswith("fused_conv2d_nchwc") and conv.key == conv.name
    costs = [t.flops * t.weight for t in tasks]
    assert costs == sorted(costs, reverse=True)


def test_keys_are_stable_across_extractions(tasks):
    again = extract_tasks(two_conv_model())
    assert [t.key for t in again] == [t.key for t in tasks]
    assert again == tasks


def test_task_pickles_and_keeps_its_identity(tasks):
    for task in tasks:
        copy = pickle.loads(pickle.dumps(task))
        assert copy == task and copy.key == task.key and copy.flops == task.flops
        assert len(copy.space()) == len(task.space())


def test_instantiate_lowers_the_kernel_at_the_config(tasks):
    task = tasks[0]
    space = task.space()
    default = task.instantiate(space.default)
    other = next(c for c in space if c.values != space.default.values and space.is_valid(c))
    lowered = task.instantiate(other)
    assert isinstance(lowered, loop.PrimFunc) and lowered.name == task.name
    assert lowered != default
    assert task.instantiate(space.default) == default  # deterministic per config


def test_describe_names_ops_and_types(tasks):
    assert "conv2d_nchwc" in tasks[0].describe() and "float32" in tasks[0].describe()


@pytest.mark.parametrize("op, shapes, attrs, anchor, flops", [
    ("conv2d", [(1, 32, 14, 14), (32, 32, 3, 3)], {"pads": [1, 1, 1, 1]}, "conv2d_nchwc",
     2 * 32 * 14 * 14 * 32 * 9),
    ("Conv", [(1, 32, 14, 14), (32, 32, 1, 1)], {}, "conv2d_nchwc", 2 * 32 * 14 * 14 * 32),
    ("matmul", [(16, 64), (64, 128)], None, None, 2 * 16 * 64 * 128),
])
def test_op_task_is_the_operator_as_a_model_compiles_it(op, shapes, attrs, anchor, flops):
    task = op_task(op, shapes, attrs)
    if anchor is not None:
        assert task.anchor.op == anchor
    assert task.flops == flops
    assert task.weight == 1 and len(task.space()) > 1
    assert op_task(op, shapes, attrs).key == task.key


def test_op_task_errors_name_the_problem():
    with pytest.raises(TuningError, match="unknown operator 'Convolve'"):
        op_task("Convolve", [(1, 3, 8, 8)])
    with pytest.raises(EmberError, match="3 channels but the weight"):
        op_task("conv2d", [(1, 3, 8, 8), (4, 5, 3, 3)])
    with pytest.raises(TuningError, match="not valid ONNX"):
        op_task("matmul", [(4, 5), (6, 7)])
    with pytest.raises(TuningError, match="needs the shapes"):
        op_task("matmul", [])


def test_a_target_without_kernels_has_nothing_to_tune():
    with pytest.raises(TuningError, match="runs no kernels"):
        extract_tasks(two_conv_model(), target="reference")


def test_a_model_whose_shapes_depend_on_input_values_says_what_to_do():
    from onnx import TensorProto, helper

    model = two_conv_model()
    model.graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["z"]))
    model.graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"]))
    with pytest.raises(TuningError, match="values of input.*shape.*constants"):
        extract_tasks(model)

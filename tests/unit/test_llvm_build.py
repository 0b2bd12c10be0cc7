"""ember.compile for the llvm target: target forms, threads, and every op having a template."""

import llvmlite.binding as llvm
import numpy as np
import pytest
from support import node_model

import ember
from ember.backends.llvm import get_num_threads
from ember.compiler.ops.registry import computes, get_schedule, has_template
from ember.ir.ops import all_ops


def _model():
    x = np.zeros((8, 40), np.float32)
    return node_model("Softmax", [("x", x)], {"axis": 1}, output_arrays=[x])


def _reference(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("target", [
    "llvm",
    f"llvm -mcpu={llvm.get_host_cpu_name()}",
    "llvm -opt-level=2",
    ember.Target.parse("llvm"),
])
def test_target_forms(target):
    x = np.random.default_rng(0).standard_normal((8, 40)).astype(np.float32)
    module = ember.compile(_model(), target=target)
    np.testing.assert_allclose(module(x), _reference(x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("target, message", [
    ("llvm -frobnicate=1", r"unknown option\(s\) frobnicate"),
    ("llvm -opt-level=fast", "opt-level must be 0..3"),
    ("reference -x=1", "takes no options"),
])
def test_bad_targets_fail_before_compiling(target, message):
    with pytest.raises(ember.TargetError, match=message):
        ember.compile(b"not a model", target=target)  # the target is checked first


def test_threads_are_settable_and_do_not_change_results():
    x = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    module = ember.compile(_model(), num_threads=1)
    assert get_num_threads() == 1
    one = module(x)
    module.set_num_threads(2)
    assert get_num_threads() == 2
    np.testing.assert_array_equal(module(x), one)


def test_every_registered_op_has_a_template():
    missing = [op for op in all_ops() if not has_template(op)]
    assert not missing, f"ops without a template: {missing}"
    for op in computes():  # externs (scatter, cumsum) write their loops themselves
        get_schedule("cpu", op)  # raises when neither the op nor its pattern has one

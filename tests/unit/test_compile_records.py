"""`ember.compile(..., records=...)`: the best record per kernel picks its config; outputs stay
those of the untuned module; the config is part of the kernel's identity (disk cache)."""

import warnings

import numpy as np
import pytest
from autotune_models import two_conv_model

import ember
from ember.autotune.measure import MeasureResult
from ember.autotune.records import Record, RecordLog, target_cpu
from ember.autotune.task import extract_tasks
from ember.compiler.build import plan_kernels
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.kernels import TuningWarning
from ember.compiler.specialize import _configs
from ember.target import Target

LLVM = Target.parse("llvm")


@pytest.fixture(scope="module")
def tasks():
    return extract_tasks(two_conv_model())


def other_config(task):
    """A valid config of the task other than its default."""
    space = task.space()
    return next(c for c in space if c.values != space.default.values and space.is_valid(c))


def records_for(tasks, cost=1e-4, **changes):
    out = []
    for task in tasks:
        config = other_config(task)
        made = Record.of(task, config, MeasureResult((cost,), None))
        out.append(Record(**{**made.__dict__, **changes}))
    return out


def test_records_change_the_kernels_not_the_outputs(tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    x = np.random.default_rng(0).standard_normal((1, 16, 8, 8)).astype(np.float32)
    untuned = ember.compile(two_conv_model())
    assert untuned.tuning is None
    conv = tasks[0]
    with pytest.warns(TuningWarning, match=r"applied to 1 of \d+ tunable kernel"):
        tuned = ember.compile(two_conv_model(), records=records_for([conv]))
    assert tuned.tuning.tuned == (conv.key,)
    assert conv.key not in tuned.tuning.untuned
    assert len(tuned.tuning.untuned) == len(tasks) - 1
    np.testing.assert_allclose(tuned(x), untuned(x), rtol=1e-5, atol=1e-5)


def test_the_recorded_config_is_lowered_and_part_of_the_identity(tasks):
    conv = tasks[0]
    configs = {conv.key: other_config(conv).as_dict()}
    graph = import_onnx(two_conv_model())
    _, plain = plan_kernels(graph, LLVM)
    _, tuned = plan_kernels(graph, LLVM, configs=configs)
    assert tuned.configs[conv.key] == other_config(conv)
    assert tuned.lower(conv.key) == conv.instantiate(other_config(conv))
    assert tuned.lower(conv.key) != plain.lower(conv.key)
    assert tuned.identities[conv.key] != plain.identities[conv.key]
    others = [name for name in plain.names if name != conv.key]
    assert all(tuned.identities[n] == plain.identities[n] for n in others)


def test_every_tunable_kernel_with_a_record_compiles_quietly(tasks, tmp_path):
    path = tmp_path / "tune.jsonl"
    with RecordLog(path) as log:
        for r in records_for(tasks, cost=2e-4) + records_for(tasks, cost=1e-4):
            log.append(r)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuningWarning)
        module = ember.compile(two_conv_model(), records=str(path))
    assert sorted(module.tuning.tuned) == sorted(t.key for t in tasks)
    assert module.tuning.untuned == () and "applied to" in str(module.tuning)


def test_records_of_another_cpu_or_target_do_not_apply(tasks):
    for changes in ({"cpu": "not-" + target_cpu("llvm")}, {"target": "llvm -mattr=-avx512f"}):
        with pytest.warns(TuningWarning):
            module = ember.compile(two_conv_model(), records=records_for(tasks, **changes))
        assert module.tuning.tuned == ()


@pytest.mark.filterwarnings("ignore:tuning records applied")
def test_a_record_that_no_longer_fits_is_skipped_with_a_warning(tasks):
    conv = tasks[0]
    bad = records_for([conv])[0]
    knob = next(iter(bad.config))
    stale = Record(**{**bad.__dict__, "config": {**bad.config, knob: ("no", "such")}})
    extra = Record(**{**bad.__dict__, "config": {**bad.config, "removed_knob": 1}})
    for record in (stale, extra):
        with pytest.warns(TuningWarning, match=rf"record for kernel {conv.key}.*skipped"):
            module = ember.compile(two_conv_model(), records=[record])
        assert module.tuning.tuned == ()
        assert module.tuning.skipped[0][0] == conv.key
        assert conv.key in module.tuning.untuned


def test_specialized_variants_get_the_configs_back_with_tuples():
    saved = {"conv_1": {"tile": [1, [2, 3]], "unroll": True}}
    assert _configs(saved) == {"conv_1": {"tile": (1, (2, 3)), "unroll": True}}
    assert _configs(None) is None


def test_variants_of_a_specializing_module_get_the_records():
    from onnx import TensorProto, helper

    from ember.compiler.specialize import with_initializers

    model = two_conv_model()
    graph = model.graph
    graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["z"]))
    graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"]))
    shape = np.array([16, 64])
    [conv] = [t for t in extract_tasks(with_initializers(model, {"shape": shape}))
              if t.anchor.op == "conv2d_nchwc"]
    module = ember.compile(model, records=records_for([conv]))
    x = np.random.default_rng(0).standard_normal((1, 16, 8, 8)).astype(np.float32)
    with pytest.warns(TuningWarning, match=r"applied to 1 of \d+ tunable"):
        (z,) = module.run({"x": x, "shape": shape})
    untuned = ember.compile(model)
    np.testing.assert_allclose(z, untuned.run({"x": x, "shape": shape})[0], rtol=1e-5,
                               atol=1e-5)

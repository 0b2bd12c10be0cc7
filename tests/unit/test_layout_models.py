"""Opt level 3 (level 2 + the layout pass) on whole models: the nine light models give level
0's numbers on the reference target, and ResNet-50's kernel calls stay within budget."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.compiler.build import plan_kernels
from ember.compiler.frontend.onnx import import_onnx
from ember.compiler.passes import optimize
from ember.target import Target
from ember.workloads.light import LIGHT_MODELS, light_model

#: ResNet-50 runs in 57 kernel calls at level 2; the layout transforms in and out may add a few
RESNET50_MAX_CALLS = 62


def light_logits(name: str):
    """The light model with seeded random weights, cut before its softmax (a saturated softmax
    would hide differences)."""
    graph = import_onnx(light_model(name))
    last = graph.producers[graph.outputs[0]]
    return graph.replace(outputs=(last.inputs[0],)) if last.op == "softmax" else graph


#: Their weights take seconds to randomize and import (hundreds of MB): the slow tier, as in
#: test_passes_fusion.py
BIG_WEIGHTS = ("bvlc_alexnet", "vgg19", "zfnet512")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in BIG_WEIGHTS else name
    for name in LIGHT_MODELS
])
def test_light_model_at_level_3_matches_level_0(name):
    graph = light_logits(name)
    plain = ember.compile(graph, target="reference", opt_level=0)
    blocked = ember.compile(graph, target="reference", opt_level=3)
    rng = np.random.default_rng(0)
    feeds = {spec.name: rng.standard_normal(spec.shape).astype(np.float32)
             for spec in plain.inputs}
    for expected, got in zip(plain.run(feeds), blocked.run(feeds)):
        scale = float(np.abs(expected).max()) or 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_resnet50_level_3_converts_its_convs_within_the_kernel_budget():
    graph = import_onnx(light_model("resnet50"))
    optimized = optimize(graph, 3)
    ops = [node.op for node in optimized.nodes]
    # every conv is blocked (the RGB stem as one block of 3 channels), max_pool too: one
    # transform in (the image) and one out (after the global average pool)
    assert ops.count("conv2d_nchwc") == 53 and ops.count("conv") == 0
    assert ops.count("layout_transform") == 2
    _, kernels = plan_kernels(graph, Target.parse("llvm"), opt_level=3)
    assert len(kernels.calls) <= RESNET50_MAX_CALLS

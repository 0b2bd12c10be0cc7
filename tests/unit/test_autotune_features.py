"""Features of tuning candidates (autotune/features.py): loop-IR features of lowered kernels and
knob features of configs, fixed-length, finite, and different for different configs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ember.autotune.features import (
    LOOP_FEATURE_WIDTH,
    FeatureCache,
    KnobFeaturizer,
    config_features,
    knob_features,
    loop_features,
)
from ember.compiler.space import ConfigSpace
from ember.ir.expr import Var
from ember.ir.loop import Buffer, ForKind, PrimFunc, loop


@pytest.fixture(scope="module")
def tasks():
    from ember.autotune.task import op_task

    return {
        "matmul": op_task("matmul", [[32, 64], [64, 48]]),
        "conv2d": op_task("conv2d", [[1, 16, 14, 14], [32, 16, 3, 3]], {"pads": [1, 1, 1, 1]}),
    }


def small_space() -> ConfigSpace:
    space = ConfigSpace()
    space.define_split("tile", 32, 2)
    space.define_knob("unroll", [1, 2, 4, 8])
    space.define_knob("parallel", [False, True])
    space.define_annotate("inner", ["none", "unroll", "vectorize"])
    space.define_reorder("order", 2)
    return space


def test_knob_features_fixed_length_and_distinct():
    space = small_space()
    featurizer = KnobFeaturizer(space)
    rows = featurizer(range(len(space)))
    assert rows.shape == (len(space), featurizer.width)
    assert np.isfinite(rows).all()
    assert len({row.tobytes() for row in rows}) == len(space)
    for index in (0, 7, len(space) - 1):
        np.testing.assert_array_equal(knob_features(space, space.get(index)), rows[index])


def test_knob_features_of_values_maps_to_nearest():
    space = small_space()
    featurizer = KnobFeaturizer(space)
    config = space.get(11)
    np.testing.assert_array_equal(featurizer.of_values([config.as_dict()])[0], featurizer([11])[0])
    # a value from another space's knob (unroll 16 is not here) maps to the nearest (8)
    other = {**config.as_dict(), "unroll": 16}
    nearest = space.from_values({**config.as_dict(), "unroll": 8})
    np.testing.assert_array_equal(featurizer.of_values([other])[0],
                                  featurizer([nearest.index])[0])


def test_loop_features_of_a_handwritten_kernel():
    a = Buffer("a", (64, 32), "float32")
    b = Buffer("b", (64, 32), "float32")
    i, j = Var("i", "int64"), Var("j", "int64")
    body = b.store(i * 32 + j, a.load(i * 32 + j) * a.load(j) + a.load(i * 32 + j))
    func = PrimFunc("f", (a, b), loop(i, 64, loop(j, 32, body), ForKind.PARALLEL))
    row = loop_features(func)
    assert row.shape == (LOOP_FEATURE_WIDTH,)
    assert np.isfinite(row).all()
    # the first loop of the main nest: extent 64, depth 0, parallel
    assert row[0] == pytest.approx(np.log2(65))
    assert row[1] == 0 and row[3] == 1.0
    # the second: extent 32 at depth 1, serial
    assert row[8] == pytest.approx(np.log2(33)) and row[9] == 1 and row[10] == 1.0


@pytest.mark.parametrize("name", ["matmul", "conv2d"])
def test_config_features_fixed_length_finite_distinct(tasks, name):
    task = tasks[name]
    space = task.space()
    configs = [space.default, *space.sample(3, random.Random(0))]
    configs = list({c.index: c for c in configs}.values())
    cache = FeatureCache()
    rows = [config_features(task, config, cache) for config in configs]
    width = LOOP_FEATURE_WIDTH + KnobFeaturizer(space).width
    assert all(row.shape == (width,) for row in rows)
    assert all(np.isfinite(row).all() for row in rows)
    assert len({row.tobytes() for row in rows}) == len(rows)
    # loop features alone differ too, for configs that change the loops' tiling
    assert len({row[:LOOP_FEATURE_WIDTH].tobytes() for row in rows}) > 1
    assert len(cache) == len(rows)
    assert config_features(task, configs[0], cache) is rows[0]   # cached


def test_feature_cache_drops_least_recent():
    cache = FeatureCache(capacity=2)
    for k in range(3):
        cache.put(("t", k, "x"), np.zeros(1))
    assert cache.get(("t", 0, "x")) is None and cache.get(("t", 2, "x")) is not None
    assert len(cache) == 2

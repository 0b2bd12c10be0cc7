import math
import random

import pytest

from ember.compiler.space import ConfigSpace, SpaceError, divisors


def test_split_factors_multiply_to_extent():
    space = ConfigSpace()
    knob = space.define_split("tile", 24, num_outputs=3)
    assert all(math.prod(v) == 24 for v in knob.values)
    assert (24, 1, 1) in knob.values and (1, 4, 6) in knob.values
    assert len(set(knob.values)) == len(knob.values)


def test_split_power2_covers_extent_with_tail():
    knob = ConfigSpace().define_split("t", 10, policy="power2")
    assert (10, 1) in knob.values and (3, 4) in knob.values and (2, 8) in knob.values
    assert all(v[0] * v[1] >= 10 for v in knob.values)


def test_index_roundtrip_and_default():
    space = ConfigSpace()
    space.define_split("x", 16)
    space.define_knob("unroll", [1, 2, 4])
    space.define_reorder("order", 3)
    assert len(space) == len(divisors(16)) * 3 * 6
    for index in range(len(space)):
        config = space.get(index)
        assert space.index_of(config.as_dict()) == index
    assert space.default["x"] == space.knobs["x"].values[0]
    space.set_default("unroll", 4)
    assert space.default["unroll"] == 4
    with pytest.raises(SpaceError, match="no value 3"):
        space.set_default("unroll", 3)


def test_filters_sampling_and_neighbours():
    space = ConfigSpace()
    space.define_split("x", 64)
    space.define_knob("vec", [1, 8, 16])
    space.add_filter(lambda c: c["x"][1] % c["vec"] == 0)
    samples = space.sample(10, random.Random(0))
    assert samples and all(space.is_valid(c) for c in samples)
    config = space.get(5)
    for neighbour in space.neighbours(config):
        differing = [k for k in space.knobs if neighbour[k] != config[k]]
        assert len(differing) == 1


def test_errors():
    space = ConfigSpace()
    space.define_knob("a", [1])
    with pytest.raises(SpaceError, match="defined twice"):
        space.define_knob("a", [2])
    with pytest.raises(SpaceError, match="outside the space"):
        space.get(5)
    with pytest.raises(SpaceError, match="has no knob 'b'"):
        space.get(0)["b"]
    with pytest.raises(SpaceError, match="unknown split policy"):
        space.define_split("s", 8, policy="odd")

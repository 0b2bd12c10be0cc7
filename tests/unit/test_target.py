import numpy as np
import pytest
from support import node_model

import ember
from ember.backends import get_backend
from ember.target import Target


def test_parse_kind_and_options():
    t = Target.parse("llvm -mcpu=skylake-avx512 -fast-math")
    assert t.kind == "llvm"
    assert t.attrs == {"mcpu": "skylake-avx512", "fast-math": "true"}
    assert Target.parse(str(t)) == t
    assert Target.parse(t) is t


@pytest.mark.parametrize("spec", ["", "   ", "llvm mcpu=x", 3])
def test_parse_rejects_malformed(spec):
    with pytest.raises(ember.TargetError):
        Target.parse(spec)


def test_unknown_kind_names_available_ones():
    with pytest.raises(ember.TargetError,
                       match="unknown target kind 'tpu'.*available: llvm, reference"):
        get_backend(Target.parse("tpu"))


def test_reference_rejects_options():
    x = np.zeros((2,), np.float32)
    model = node_model("Relu", [("x", x)], output_arrays=[x])
    with pytest.raises(ember.TargetError, match="takes no options"):
        ember.compile(model, target="reference -opt=3")

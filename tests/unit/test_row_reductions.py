"""Row reductions split into vector partial results (compute/nn.py `row_reduce`, scheduled by
cpu/norm.py `schedule_partial`): softmax, log_softmax, hardmax, layer_norm and rms_norm over
long last-axis rows, row lengths that are and are not multiples of the partial count, special
values, half dtypes, and the shape of the schedule (vector partials inside the row loop)."""

import numpy as np
import pytest
from support import check_kernel
from test_templates_nn import config, kernel, rand

from ember.compiler.ops.compute.nn import partial_count
from ember.ir import loop as L
from ember.ir.expr import Ramp
from ember.ir.visitor import collect

#: float32 statistics over a row differ from numpy's pairwise sums by a few ulps
STATS_TOL = {"rtol": 1e-4, "atol": 1e-5}

LENGTHS = [63, 64, 100, 768, 1000, 1024, 1030, 4100]


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "hardmax"])
@pytest.mark.parametrize("length", LENGTHS)
def test_softmax_family_long_rows(op, length):
    check_kernel(op, [rand((3, length)) * 4], {"axis": 1}, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value")  # the reference computes inf - inf
def test_softmax_family_special_rows():
    x = rand((5, 200))
    x[0, 17] = np.nan  # a NaN row is all NaN
    x[1, 150] = np.inf  # the maximum is inf: NaN (inf - inf), as the reference
    x[2, :] = -np.inf
    x[3, 199] = 80.0  # one dominant element
    x[4, :] = -1e30
    for op in ("softmax", "log_softmax", "hardmax"):
        check_kernel(op, [x], {"axis": 1}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_softmax_family_long_rows_dtypes(op, dtype):
    check_kernel(op, [rand((2, 3, 130), dtype)], {"axis": 2})


@pytest.mark.parametrize("length", [64, 100, 768, 1030])
@pytest.mark.parametrize("with_stats", [False, True])
def test_layer_norm_long_rows(length, with_stats):
    inputs = [rand((4, length)) + 3, rand((length,), seed=1), rand((length,), seed=2)]
    check_kernel("layer_norm", inputs, {"axis": 1, "with_stats": with_stats}, **STATS_TOL)


@pytest.mark.parametrize("length", [64, 100, 768, 1030])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rms_norm_long_rows(length, dtype):
    inputs = [rand((2, 3, length), dtype), rand((length,), dtype, seed=1)]
    # float16 results: the dtype's own tolerance (a sum order may flip a rounding)
    check_kernel("rms_norm", inputs, {"axis": 2}, **(STATS_TOL if dtype == "float32" else {}))


def test_partial_count() -> None:
    assert partial_count(63) == 0
    assert partial_count(64) == 16
    assert partial_count(4096) == 64


@pytest.mark.parametrize("op, inputs, partial", [
    ("softmax", [rand((128, 1000))], "softmax_sum_partial"),
    ("layer_norm", [rand((128, 768)), rand((768,))], "layer_norm_square_sum_partial"),
    ("rms_norm", [rand((64, 4096)), rand((4096,))], "rms_norm_square_sum_partial"),
])
def test_partials_are_vectors_in_the_row_loop(op, inputs, partial):
    func = kernel(op, inputs, {"axis": 1})
    rows = [f for f in collect(func.body, L.For) if f.kind is L.ForKind.PARALLEL]
    assert len(rows) == 1
    stores = [s for s in collect(rows[0].body, L.Store) if s.buffer.name == partial]
    assert stores and all(isinstance(s.indices[-1], Ramp) for s in stores)


@pytest.mark.parametrize("values", [
    {"lanes": 8, "unroll_partials": False, "parallel": False},
    {"lanes": 32, "unroll_partials": True, "parallel": True},
])
@pytest.mark.parametrize("op, inputs", [
    ("softmax", [rand((6, 1030))]),
    ("log_softmax", [rand((6, 100))]),
    ("layer_norm", [rand((6, 768)), rand((768,), seed=1), rand((768,), seed=2)]),
    ("rms_norm", [rand((6, 2048)), rand((2048,), seed=1)]),
])
def test_row_knobs(op, inputs, values):
    attrs = {"axis": 1}
    check_kernel(op, inputs, attrs, config=config(op, inputs, attrs, **values), **STATS_TOL)


def test_one_row_without_a_row_loop():
    """A single row (1-d input): the partial stages are root stages."""
    check_kernel("softmax", [rand((300,))], {"axis": 0}, rtol=1e-5, atol=1e-6)
    check_kernel("layer_norm", [rand((100,)), rand((100,), seed=1), rand((100,), seed=2)],
                 {"axis": 0}, **STATS_TOL)
    check_kernel("rms_norm", [rand((1030,)), rand((1030,), seed=1)], {"axis": 0}, **STATS_TOL)
    check_kernel("group_norm", [rand((2, 8)) + 1, rand((8,), seed=1), rand((8,), seed=2)],
                 {"num_groups": 2}, **STATS_TOL)
    check_kernel("group_norm", [rand((2, 256)), rand((256,), seed=1), rand((256,), seed=2)],
                 {"num_groups": 2}, **STATS_TOL)


def test_long_rows_fold_their_partials():
    """64 partials are folded into 16 with vector operations before the serial end."""
    func = kernel("softmax", [rand((64, 4096))], {"axis": 1})
    stores = {s.buffer.name: s for s in collect(func.body, L.Store)}
    assert isinstance(stores["softmax_sum_folded_partial"].indices[-1], Ramp)
    assert isinstance(stores["softmax_max_folded_partial"].indices[-1], Ramp)

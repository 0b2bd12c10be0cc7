"""The pooling, softmax-family and normalization templates (compiler/ops/compute/pool.py,
norm.py, nn.py; cpu/pool.py, cpu/norm.py) compiled through LLVM against the ops' numpy
references, over shapes, attributes, dtypes and a few non-default configs."""

import numpy as np
import pytest
from support import check_kernel
from test_templates_nn import config, kernel, rand

from ember.ir import loop as L
from ember.ir.expr import Ramp
from ember.ir.visitor import collect

#: float32 statistics over a row differ from numpy's pairwise sums by a few ulps
STATS_TOL = {"rtol": 1e-4, "atol": 1e-5}


def pool_attrs(kernel, strides=None, dilations=None, pads=None, **extra):
    spatial = len(kernel)
    return {"kernel_shape": list(kernel), "strides": strides or [1] * spatial,
            "dilations": dilations or [1] * spatial, "pads": pads or [0] * (2 * spatial),
            **extra}


# ----------------------------------------------------------------------------- pooling

# (input shape, attributes)
POOL_CASES = [
    ((2, 3, 11), pool_attrs([3], [2], None, [1, 1])),
    ((1, 2, 20), pool_attrs([4], [3], None, [0, 2], ceil_mode=True)),
    ((2, 3, 9, 10), pool_attrs([3, 3])),
    ((2, 3, 9, 10), pool_attrs([3, 2], [2, 2], None, [1, 0, 1, 1], ceil_mode=True)),
    ((1, 4, 12, 13), pool_attrs([3, 3], [2, 1], [2, 1], [1, 2, 2, 0])),
    ((1, 2, 8, 8), pool_attrs([2, 2], [2, 2], None, [1, 1, 1, 1], ceil_mode=True)),
    ((1, 3, 5, 6, 7), pool_attrs([2, 2, 3], [1, 2, 2], None, [1, 0, 1, 0, 1, 1])),
    ((1, 8, 40, 40), pool_attrs([3, 3], [2, 2], None, [1, 1, 1, 1])),
    ((2, 3, 4, 5), pool_attrs([4, 5])),  # a global window
]


@pytest.mark.parametrize("x_shape, attrs", POOL_CASES)
def test_max_pool(x_shape, attrs):
    check_kernel("max_pool", [rand(x_shape)], attrs)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("x_shape, attrs", POOL_CASES[:1] + POOL_CASES[3:7])
def test_max_pool_indices(x_shape, attrs, storage_order):
    attrs = {**attrs, "return_indices": True, "storage_order": storage_order}
    check_kernel("max_pool", [rand(x_shape)], attrs)


def test_max_pool_indices_ties_and_nan_pick_the_first():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = 5.0  # a tie inside one window
    x[0, 0, 3, 0] = np.nan  # np.argmax finds the NaN
    check_kernel("max_pool", [x], pool_attrs([3, 3], pads=[1, 1, 1, 1], return_indices=True))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "uint64", "float16",
                                   "bfloat16", "float64"])
def test_max_pool_dtypes(dtype):
    attrs = pool_attrs([3, 3], [2, 2], None, [1, 1, 1, 1], return_indices=True)
    check_kernel("max_pool", [rand((2, 3, 9, 10), dtype)], attrs)


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("x_shape, attrs", POOL_CASES)
def test_average_pool(x_shape, attrs, count_include_pad):
    attrs = {**attrs, "count_include_pad": count_include_pad}
    check_kernel("average_pool", [rand(x_shape)], attrs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("x_shape, attrs", [POOL_CASES[0], POOL_CASES[3], POOL_CASES[6]])
def test_lp_pool(x_shape, attrs, p):
    check_kernel("lp_pool", [rand(x_shape)], {**attrs, "p": p}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["average_pool", "lp_pool"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_pool_float_dtypes(op, dtype):
    attrs = pool_attrs([3, 3], [2, 1], None, [1, 1, 1, 1])
    if op == "lp_pool":
        attrs["p"] = 2
    check_kernel(op, [rand((2, 3, 9, 10), dtype)], attrs)


@pytest.mark.parametrize("values", [{"tile_ow": 3, "tile_oh": 2, "tile_oc": 2},
                                    {"tile_ow": 8, "tile_oh": 4, "unroll_kw": False}])
def test_pool_configs(values):
    x = rand((2, 3, 13, 27))
    attrs = pool_attrs([3, 3], [1, 2], None, [1, 1, 0, 1], count_include_pad=True)
    check_kernel("average_pool", [x], attrs, config=config("average_pool", [x], attrs, **values),
                 rtol=1e-5, atol=1e-6)


def test_pool_interpreted():
    attrs = pool_attrs([3, 3], [2, 1], None, [1, 1, 1, 1], return_indices=True)
    check_kernel("max_pool", [rand((1, 2, 5, 6))], attrs, interpret=True)
    check_kernel("average_pool", [rand((1, 2, 5, 6))],
                 pool_attrs([2, 3], [1, 2], None, [0, 1, 1, 1], ceil_mode=True),
                 interpret=True, rtol=1e-5, atol=1e-6)


def test_max_pool_default_schedule_pads_per_block():
    x = rand((1, 64, 112, 112))
    attrs = pool_attrs([3, 3], [2, 2], None, [1, 1, 1, 1])
    func = kernel("max_pool", [x], attrs)
    parallel = [f for f in collect(func.body, L.For) if f.kind is L.ForKind.PARALLEL]
    assert len(parallel) == 1
    pads = [a.buffer for a in collect(parallel[0].body, L.Allocate)
            if a.buffer.name == "max_pool_pad"]
    assert pads and pads[0].size < 114 * 114
    # the padding is a masked copy: no gathers, only contiguous (or strided) vector loads
    loads = [ld for ld in collect(func.body, L.Load) if ld.buffer.name == "in0"]
    assert loads and all(isinstance(ld.indices[0], Ramp) for ld in loads)
    check_kernel("max_pool", [x], attrs)


# ----------------------------------------------------------------------------- softmax family

SOFTMAX_CASES = [((4, 37), 1), ((3, 5, 7), 1), ((3, 5, 40), 0), ((6,), 0), ((2, 3, 4, 5), 2),
                 ((1, 4, 100), 1), ((8, 1000), 1), ((2, 1), 1)]


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "hardmax"])
@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_softmax_family(op, shape, axis):
    check_kernel(op, [rand(shape)], {"axis": axis}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "hardmax"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_softmax_family_dtypes(op, dtype):
    check_kernel(op, [rand((3, 40), dtype)], {"axis": 1})
    check_kernel(op, [rand((3, 5, 20), dtype)], {"axis": 1})


def test_hardmax_ties_and_nan():
    x = np.array([[1, 3, 3, 0], [np.nan, 2, np.nan, 1], [-np.inf] * 4], np.float32)
    check_kernel("hardmax", [x], {"axis": 1})
    check_kernel("hardmax", [x], {"axis": 0})


def test_softmax_configs_and_interpreted():
    x = rand((2, 6, 70))
    check_kernel("softmax", [x], {"axis": 1}, rtol=1e-5, atol=1e-6,
                 config=config("softmax", [x], {"axis": 1}, row_chunk=16))
    check_kernel("log_softmax", [rand((2, 3, 5))], {"axis": 1}, interpret=True,
                 rtol=1e-5, atol=1e-6)


def test_softmax_default_schedule():
    func = kernel("softmax", [rand((128, 1000))], {"axis": 1})
    loops = collect(func.body, L.For)
    rows = [f for f in loops if f.kind is L.ForKind.PARALLEL]
    assert len(rows) == 1
    # max, exponentials and sum are computed inside the row loop
    inner = {a.buffer.name for a in collect(rows[0].body, L.Allocate)}
    assert {"softmax_max", "softmax_exp", "softmax_sum"} <= inner
    stores = [s for s in collect(func.body, L.Store) if s.buffer.name == "softmax"]
    assert stores and all(isinstance(s.indices[0], Ramp) for s in stores)


# ----------------------------------------------------------------------------- norms


@pytest.mark.parametrize("x_shape, scale_shape, bias_shape, axis", [
    ((4, 37), (37,), (37,), 1),
    ((2, 3, 5, 7), (5, 7), None, 2),
    ((2, 3, 5, 7), (1, 7), (5, 1), 1),
    ((6, 8), (8,), (8,), 0),
    ((3, 1), (1,), (1,), 1),
])
@pytest.mark.parametrize("with_stats", [False, True])
def test_layer_norm(x_shape, scale_shape, bias_shape, axis, with_stats):
    inputs = [rand(x_shape), rand(scale_shape, seed=1),
              rand(bias_shape, seed=2) if bias_shape else None]
    check_kernel("layer_norm", inputs, {"axis": axis, "with_stats": with_stats,
                                        "epsilon": 1e-3}, **STATS_TOL)


@pytest.mark.parametrize("x_shape, scale_shape, axis", [
    ((4, 37), (37,), 1), ((2, 3, 5, 7), (5, 7), 2), ((2, 3, 5, 7), (3, 1, 7), 1),
    ((5, 64), (64,), 0)])
def test_rms_norm(x_shape, scale_shape, axis):
    check_kernel("rms_norm", [rand(x_shape), rand(scale_shape, seed=1)], {"axis": axis},
                 **STATS_TOL)


@pytest.mark.parametrize("x_shape, groups", [((2, 6, 5, 7), 3), ((2, 6, 5), 6),
                                             ((1, 4, 3, 2, 5), 1), ((2, 8, 1, 1), 4)])
def test_group_norm(x_shape, groups):
    channels = x_shape[1]
    check_kernel("group_norm", [rand(x_shape), rand((channels,), seed=1),
                                rand((channels,), seed=2)], {"num_groups": groups}, **STATS_TOL)


@pytest.mark.parametrize("x_shape", [(2, 6, 5, 7), (1, 5, 9), (2, 3, 2, 3, 4)])
@pytest.mark.parametrize("size, alpha, beta, bias", [(3, 1e-4, 0.75, 1.0), (4, 0.01, 0.5, 2.0),
                                                     (1, 0.1, 1.0, 1.0)])
def test_lrn(x_shape, size, alpha, beta, bias):
    check_kernel("lrn", [rand(x_shape)], {"size": size, "alpha": alpha, "beta": beta,
                                          "bias": bias}, **STATS_TOL)


@pytest.mark.parametrize("x_shape", [(2, 6, 5, 7), (4, 6), (2, 6, 3), (1, 3, 2, 2, 2)])
def test_batch_norm(x_shape):
    channels = x_shape[1]
    params = [rand((channels,), seed=k) for k in (1, 2, 3)]
    var = np.abs(rand((channels,), seed=4)) + 0.1
    check_kernel("batch_norm", [rand(x_shape), *params, var], {"epsilon": 1e-3})


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "group_norm", "lrn", "batch_norm"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_norm_dtypes(op, dtype):
    x = rand((2, 4, 5, 6), dtype)
    channel = [rand((4,), dtype, seed=k) for k in (1, 2)]
    inputs, attrs = {
        "layer_norm": ([x, rand((5, 6), dtype, 1), rand((6,), dtype, 2)],
                       {"axis": 2, "with_stats": True}),
        "rms_norm": ([x, rand((6,), dtype, 1)], {"axis": 1}),
        "group_norm": ([x, *channel], {"num_groups": 2}),
        "lrn": ([x], {"size": 3}),
        "batch_norm": ([x, *channel, rand((4,), dtype, 3),
                        (np.abs(rand((4,), "float32", 4)) + 0.1).astype(x.dtype)], {}),
    }[op]
    check_kernel(op, inputs, attrs, **({"rtol": 1e-9, "atol": 1e-9} if dtype == "float64"
                                       else {}))


def test_norms_interpreted():
    x = rand((2, 4, 3))
    check_kernel("layer_norm", [x, rand((3,), seed=1), None], {"axis": 1, "with_stats": True},
                 interpret=True, **STATS_TOL)
    check_kernel("group_norm", [x, rand((4,), seed=1), rand((4,), seed=2)],
                 {"num_groups": 2}, interpret=True, **STATS_TOL)


@pytest.mark.parametrize("op, inputs, attrs", [
    ("layer_norm", [(0, 5), (5,), (5,)], {"axis": 1}),
    ("layer_norm", [(3, 0), (0,), (0,)], {"axis": 1}),
    ("rms_norm", [(0, 5), (5,)], {"axis": 1}),
    ("softmax", [(0, 5)], {"axis": 1}),
    ("hardmax", [(4, 0)], {"axis": 0}),
    ("lrn", [(0, 4, 3)], {"size": 3}),
    ("max_pool", [(0, 3, 5, 5)], pool_attrs([2, 2])),
    ("average_pool", [(1, 0, 5, 5)], pool_attrs([2, 2])),
])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the references take means of nothing
def test_empty_tensors(op, inputs, attrs):
    with np.errstate(all="ignore"):
        check_kernel(op, [rand(s, seed=k) for k, s in enumerate(inputs)], attrs)

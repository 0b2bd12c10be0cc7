"""The conv, conv_transpose and matmul templates (compiler/ops/compute/nn.py, cpu/conv.py,
cpu/matmul.py) compiled through LLVM against the ops' numpy references: shapes, attributes,
dtypes, non-default configs of their spaces, and the shape of the default schedules' code."""

import random

import numpy as np
import pytest
from support import check_kernel

from ember.compiler.ops import Workload, get_schedule, instantiate
from ember.ir import loop as L
from ember.ir.expr import Ramp
from ember.ir.graph import TensorType, numpy_dtype
from ember.ir.ops import get_op
from ember.ir.visitor import collect
from ember.target import Target

#: float32 sums of a few hundred products differ from BLAS's order by a few ulps of the sum
REDUCE_TOL = {"rtol": 1e-4, "atol": 1e-4}


def rand(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(numpy_dtype(dtype)).kind in "iu":
        low = 0 if np.dtype(dtype).kind == "u" else -20
        return rng.integers(low, 20, shape).astype(dtype)
    return rng.standard_normal(shape).astype(numpy_dtype(dtype))


def tolerance(dtype):
    return REDUCE_TOL if dtype in ("float32", "float64") else {}


def workload(op, inputs, attrs=None):
    opdef = get_op(op)
    full = opdef.make_attrs(attrs)
    types = tuple(TensorType.of(x) if x is not None else None for x in inputs)
    return Workload(op, full, types, opdef.infer_types(full, types))


def space_of(op, inputs, attrs=None):
    return get_schedule("cpu", op).space(workload(op, inputs, attrs), Target.parse("llvm"))


def config(op, inputs, attrs=None, **values):
    space = space_of(op, inputs, attrs)
    return space.from_values({**space.default.as_dict(), **values})


def kernel(op, inputs, attrs=None):
    return instantiate(workload(op, inputs, attrs), "cpu", Target.parse("llvm"))


# ----------------------------------------------------------------------------- conv


def conv_attrs(spatial, strides=None, dilations=None, pads=None, groups=1):
    return {"strides": strides or [1] * spatial, "dilations": dilations or [1] * spatial,
            "pads": pads or [0] * (2 * spatial), "groups": groups}


# (input shape, weight shape, attributes)
CONV_CASES = [
    ((2, 3, 11), (4, 3, 3), conv_attrs(1)),
    ((1, 4, 20), (6, 2, 4), conv_attrs(1, [2], [2], [1, 2], groups=2)),
    ((2, 3, 9, 10), (5, 3, 3, 3), conv_attrs(2)),
    ((1, 4, 9, 10), (6, 4, 3, 3), conv_attrs(2, pads=[1, 1, 1, 1])),
    ((2, 4, 9, 7), (6, 2, 3, 2), conv_attrs(2, [2, 1], [1, 2], [0, 1, 2, 0], groups=2)),
    ((1, 6, 12, 12), (6, 1, 3, 3), conv_attrs(2, [2, 2], None, [1, 1, 1, 1], groups=6)),
    ((1, 4, 10, 9), (8, 1, 3, 3), conv_attrs(2, pads=[2, 1, 0, 2], groups=4)),  # multiplier 2
    ((1, 8, 7, 7), (16, 8, 1, 1), conv_attrs(2)),
    ((2, 8, 3, 3), (5, 8, 3, 3), conv_attrs(2)),  # a 1x1 output
    ((1, 3, 33, 35), (16, 3, 5, 5), conv_attrs(2, [2, 2], None, [2, 2, 2, 2])),
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), conv_attrs(3, [1, 2, 1], None, [1, 0, 1, 0, 1, 1])),
    ((1, 4, 4, 5, 6), (4, 2, 3, 3, 3), conv_attrs(3, None, [1, 2, 1], [1, 1, 1, 1, 1, 1],
                                                   groups=2)),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_CASES)
def test_conv(x_shape, w_shape, attrs, bias):
    x, w = rand(x_shape), rand(w_shape, seed=1)
    b = rand((w_shape[0],), seed=2) if bias else None
    check_kernel("conv", [x, w, b], attrs, **REDUCE_TOL)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_conv_dtypes(dtype):
    x, w, b = rand((1, 4, 9, 10), dtype), rand((6, 2, 3, 3), dtype, 1), rand((6,), dtype, 2)
    check_kernel("conv", [x, w, b], conv_attrs(2, pads=[1, 1, 1, 1], groups=2),
                 **tolerance(dtype))


def test_conv_resnet_layer_is_fast_enough_to_test():
    x, w = rand((1, 64, 56, 56)), rand((64, 64, 3, 3), seed=1)
    check_kernel("conv", [x, w, None], conv_attrs(2, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-3)


# tiles that leave guarded tails (ow 16 of 19, oc 3 of 8, oh 4 of 10) must stay correct
@pytest.mark.parametrize("values", [
    {"tile_ow": 16, "tile_oc": 3, "tile_oh": 4},
    {"tile_ow": 5, "tile_oc": 8, "tile_oh": 2, "unroll_kw": False},
    {"tile_ow": 19, "tile_oc": 2, "tile_oh": 3},
])
def test_conv_configs(values):
    x, w, b = rand((2, 4, 9, 20)), rand((8, 4, 3, 3), seed=1), rand((8,), seed=2)
    attrs = conv_attrs(2, pads=[1, 0, 2, 1])
    check_kernel("conv", [x, w, b], attrs, config=config("conv", [x, w, b], attrs, **values),
                 **REDUCE_TOL)


def test_conv_space_samples_are_correct():
    x, w = rand((1, 4, 6, 20)), rand((6, 2, 3, 3), seed=1)
    attrs = conv_attrs(2, [1, 2], None, [1, 1, 1, 1], groups=2)
    space = space_of("conv", [x, w, None], attrs)
    for cfg in space.sample(4, random.Random(0)):
        check_kernel("conv", [x, w, None], attrs, config=cfg, **REDUCE_TOL)


def test_conv_interpreted():
    x, w, b = rand((1, 2, 5, 6)), rand((4, 1, 3, 2), seed=1), rand((4,), seed=2)
    check_kernel("conv", [x, w, b], conv_attrs(2, [2, 1], [1, 2], [1, 0, 1, 1], groups=2),
                 interpret=True, **REDUCE_TOL)


def test_conv_empty_batch():
    check_kernel("conv", [rand((0, 3, 5, 5)), rand((4, 3, 3, 3), seed=1), None],
                 conv_attrs(2, pads=[1, 1, 1, 1]))


def test_conv_default_schedule_is_blocked_vectorized_and_parallel():
    x, w = rand((1, 64, 56, 56)), rand((64, 64, 3, 3), seed=1)
    attrs = conv_attrs(2, pads=[1, 1, 1, 1])
    cfg = space_of("conv", [x, w, None], attrs).default
    assert (cfg["tile_oc"], cfg["tile_ow"]) == (16, 14)  # 16 accumulators of 14 lanes
    func = kernel("conv", [x, w, None], attrs)
    parallel = [f for f in collect(func.body, L.For) if f.kind is L.ForKind.PARALLEL]
    assert len(parallel) == 1
    # the padded input is a per-block buffer inside the parallel loop, never the whole input
    pads = [a for a in collect(parallel[0].body, L.Allocate) if a.buffer.name == "conv_pad"]
    assert pads and pads[0].buffer.size < 64 * 58 * 58 // 8
    local = [a.buffer for a in collect(func.body, L.Allocate) if a.buffer.scope == "local"]
    assert [b.size for b in local] == [16 * 14]
    lanes = {s.indices[0].lanes for s in collect(func.body, L.Store)
             if isinstance(s.indices[0], Ramp)}
    assert 14 in lanes


def test_depthwise_conv_default_blocks_one_channel():
    x, w = rand((1, 32, 112, 112)), rand((32, 1, 3, 3), seed=1)
    attrs = conv_attrs(2, pads=[1, 1, 1, 1], groups=32)
    cfg = space_of("conv", [x, w, None], attrs).default
    assert cfg["tile_oc"] == 1 and cfg["tile_ow"] % 16 == 0
    check_kernel("conv", [x, w, None], attrs, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- conv_transpose

# (input shape, weight shape, strides, dilations, pads, output_padding, groups)
CONV_TRANSPOSE_CASES = [
    ((1, 3, 5, 5), (3, 4, 3, 3), [1, 1], [1, 1], [0, 0, 0, 0], [0, 0], 1),
    ((2, 4, 5, 6), (4, 3, 3, 2), [2, 3], [1, 1], [1, 0, 1, 1], [1, 0], 2),
    ((1, 2, 7), (2, 3, 4), [3], [2], [-1, 2], [0], 1),  # negative pad: a longer output
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), [2, 1, 2], [1, 1, 1], [0, 1, 0, 1, 0, 1], [0, 0, 1], 1),
    ((1, 4, 4, 4), (4, 1, 3, 3), [2, 2], [1, 1], [1, 1, 1, 1], [1, 1], 4),
    ((1, 16, 14, 14), (16, 8, 4, 4), [2, 2], [1, 1], [1, 1, 1, 1], [0, 0], 1),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x_shape, w_shape, strides, dilations, pads, output_padding, groups",
                         CONV_TRANSPOSE_CASES)
def test_conv_transpose(x_shape, w_shape, strides, dilations, pads, output_padding, groups,
                        bias):
    x, w = rand(x_shape), rand(w_shape, seed=1)
    b = rand((w_shape[1] * groups,), seed=2) if bias else None
    attrs = {"strides": strides, "dilations": dilations, "pads": pads,
             "output_padding": output_padding, "groups": groups}
    check_kernel("conv_transpose", [x, w, b], attrs, **REDUCE_TOL)


def test_conv_transpose_float16_and_interpreted():
    attrs = {"strides": [2, 2], "dilations": [1, 1], "pads": [1, 0, 0, 1],
             "output_padding": [0, 0], "groups": 1}
    x, w, b = rand((1, 2, 3, 3)), rand((2, 2, 3, 3), seed=1), rand((2,), seed=2)
    check_kernel("conv_transpose", [x, w, b], attrs, interpret=True, **REDUCE_TOL)
    half = [a.astype("float16") for a in (x, w, b)]
    check_kernel("conv_transpose", half, attrs)


# ----------------------------------------------------------------------------- matmul

MATMUL_SHAPES = [
    ((64, 32), (32, 48)),
    ((5, 7), (7, 3)),
    ((7,), (7, 5)),  # a 1-D first operand: a row vector, its axis dropped
    ((7,), (3, 7, 5)),
    ((3, 7), (7,)),  # a 1-D second operand: a column vector
    ((6,), (6,)),  # a dot product
    ((2, 1, 4, 6), (3, 6, 5)),  # broadcast batch axes
    ((4, 6), (2, 3, 6, 40)),  # a matrix against a batch
    ((3, 1, 7, 5), (2, 5, 4)),
    ((1, 200), (200, 300)),  # GEMV
    ((2, 33, 17), (2, 17, 50)),  # ragged tiles
    ((13, 29), (29, 1009)),  # a prime width: a guarded vector tail
]


@pytest.mark.parametrize("a_shape, b_shape", MATMUL_SHAPES)
def test_matmul(a_shape, b_shape):
    check_kernel("matmul", [rand(a_shape), rand(b_shape, seed=1)], **REDUCE_TOL)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32", "uint64", "float64", "float16",
                                   "bfloat16"])
@pytest.mark.parametrize("a_shape, b_shape", [((9, 13), (13, 40)), ((2, 5, 3), (3,))])
def test_matmul_dtypes(dtype, a_shape, b_shape):
    check_kernel("matmul", [rand(a_shape, dtype), rand(b_shape, dtype, 1)], **tolerance(dtype))


def test_matmul_int32_wraps_like_numpy():
    a = np.full((2, 4), 1 << 30, np.int32)
    b = np.full((4, 3), 3, np.int32)
    check_kernel("matmul", [a, b])


@pytest.mark.parametrize("values", [
    {"tile_m": 3, "tile_n": 16},  # tails in both axes
    {"tile_m": 1, "tile_n": 48, "unroll_k": 2, "parallel_n": True},
    {"tile_m": 8, "tile_n": 5, "parallel_n": False},
])
def test_matmul_configs(values):
    a, b = rand((2, 20, 12)), rand((12, 50), seed=1)
    check_kernel("matmul", [a, b], config=config("matmul", [a, b], **values), **REDUCE_TOL)


def test_matmul_gemv_groups_of_vectors():
    a, b = rand((1, 64)), rand((64, 512), seed=1)
    check_kernel("matmul", [a, b], config=config("matmul", [a, b], tile_n=256), **REDUCE_TOL)


@pytest.mark.parametrize("shapes", [((0, 5), (5, 3)), ((4, 0), (0, 3)), ((2, 0, 4, 5), (5, 3))])
def test_matmul_empty(shapes):
    check_kernel("matmul", [rand(shapes[0]), rand(shapes[1], seed=1)])


def test_matmul_interpreted():
    check_kernel("matmul", [rand((2, 3, 5)), rand((5, 7), seed=1)], interpret=True,
                 **REDUCE_TOL)


def test_matmul_default_schedule():
    a, b = np.empty((1024, 1024), np.float32), np.empty((1024, 1024), np.float32)
    cfg = space_of("matmul", [a, b]).default
    assert cfg["tile_n"] % 16 == 0 and cfg["tile_m"] * cfg["tile_n"] // 16 <= 24
    func = kernel("matmul", [a, b])
    assert any(f.kind is L.ForKind.PARALLEL for f in collect(func.body, L.For))
    local = [a.buffer for a in collect(func.body, L.Allocate) if a.buffer.scope == "local"]
    assert [b.size for b in local] == [cfg["tile_m"] * cfg["tile_n"]]
    updates = [s for s in collect(func.body, L.Store) if s.buffer.scope == "local"
               and isinstance(s.indices[0], Ramp) and s.indices[0].lanes == 16]
    # the unrolled register block: every accumulator vector updated once per k step
    assert len(updates) >= cfg["tile_m"] * cfg["tile_n"] // 16


def test_matmul_gemv_default_parallelizes_columns():
    a, b = np.empty((1, 4096), np.float32), np.empty((4096, 4096), np.float32)
    cfg = space_of("matmul", [a, b]).default
    assert cfg["tile_m"] == 1 and cfg["parallel_n"] and cfg["tile_n"] >= 128

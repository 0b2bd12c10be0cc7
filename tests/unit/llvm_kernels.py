"""PrimFunc builders shared by the LLVM backend tests: hand-built "final" form (flat 1-D
buffers, Ramp/Broadcast vectors, predicates, parallel loops), as ir/passes produces it."""

import numpy as np

from ember.backends.llvm import compile_primfuncs
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.graph import numpy_dtype

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_DTYPES = ["float16", "bfloat16", "float32", "float64"]
ALL_DTYPES = INT_DTYPES + FLOAT_DTYPES + ["bool"]
RTOL = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 2e-6, "float64": 1e-13}


def elementwise(name, input_dtypes, out_dtype, body, n, lanes=1, attrs=()):
    """`out[i] = body(*loads)` over n elements: scalar when lanes == 1, else `lanes`-wide
    vectors with a predicated tail."""
    inputs = [L.Buffer(f"in{k}", (n,), dt) for k, dt in enumerate(input_dtypes)]
    out = L.Buffer("out", (n,), out_dtype)
    i = E.Var("i")
    if lanes == 1:
        loads = [L.Load(b, (i,)) for b in inputs]
        stmt = L.loop(i, n, L.Store(out, (i,), body(*loads)))
    else:
        index = E.Ramp(i * lanes, E.const(1), lanes)
        predicate = None if n % lanes == 0 else E.LT(index, E.Broadcast(E.const(n), lanes))
        loads = [L.Load(b, (index,), predicate) for b in inputs]
        stmt = L.loop(i, -(-n // lanes), L.Store(out, (index,), body(*loads), predicate))
    return L.PrimFunc(name, (*inputs, out), stmt, tuple(dict(attrs).items()))


def run(func, *inputs, out_dtype=None, lib=None):
    lib = lib or compile_primfuncs([func])
    out_param = func.params[-1]
    out = np.zeros(out_param.size, numpy_dtype(out_dtype or out_param.dtype))
    lib.get(func.name)(*inputs, out)
    return out


def random_values(dtype, n, rng, low=None, high=None):
    if dtype == "bool":
        return rng.random(n) < 0.5
    if dtype in INT_DTYPES:
        info = np.iinfo(dtype)
        low = info.min if low is None else low
        high = info.max if high is None else high
        return rng.integers(low, high, n, dtype=dtype, endpoint=True)
    low = -4.0 if low is None else low
    high = 4.0 if high is None else high
    return rng.uniform(low, high, n).astype(numpy_dtype(dtype))


def assert_close(actual, expected, dtype):
    if dtype in RTOL:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   rtol=RTOL[dtype], atol=RTOL[dtype], equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


def matmul(m, n, k, accumulator_shape, lanes=1):
    """c = a @ b (row-major m x k and k x n), row by row into an Allocate'd accumulator; the
    column loops are `lanes`-wide vectors when lanes > 1."""
    a, b = L.Buffer("a", (m * k,), "float32"), L.Buffer("b", (k * n,), "float32")
    c = L.Buffer("c", (m * n,), "float32")
    acc = L.Buffer("acc", accumulator_shape, "float32", "local")
    i, j, r = E.Var("i"), E.Var("j"), E.Var("r")

    def columns(start):  # the j-th group of columns of the row starting at `start`
        return start + j if lanes == 1 else E.Ramp(start + j * lanes, E.const(1), lanes)

    def vector(x):
        return x if lanes == 1 else E.Broadcast(x, lanes)

    acc_j, steps = columns(E.const(0)), n // lanes
    body = L.seq(
        L.loop(j, steps, L.Store(acc, (acc_j,), vector(E.const(0.0)))),
        L.loop(r, k, L.loop(j, steps, L.Store(acc, (acc_j,), L.Load(acc, (acc_j,)) + vector(
            L.Load(a, (i * k + r,))) * L.Load(b, (columns(r * n),))))),
        L.loop(j, steps, L.Store(c, (columns(i * n),), L.Load(acc, (acc_j,)))))
    return L.PrimFunc("matmul", (a, b, c), L.loop(i, m, L.Allocate(acc, body)))


def parallel_rows(nested=False):
    """out[i*64 + j] = a[...] * scale + offset, parallel over i, with captured outer values."""
    rows, cols = 37, 64
    a, out_buffer = L.Buffer("a", (rows * cols,), "float32"), L.Buffer("out", (rows * cols,),
                                                                       "float32")
    i, j, rep = E.Var("i"), E.Var("j"), E.Var("rep")
    scale = E.Var("scale", "float32")
    index = E.Ramp(i * cols + j * 16, E.const(1), 16)
    value = L.Load(a, (index,)) * E.Broadcast(scale, 16) + E.Broadcast(E.cast("float32", rep),
                                                                       16)
    inner_kind = L.ForKind.PARALLEL if nested else L.ForKind.SERIAL
    inner = L.loop(j, cols // 16, L.Store(out_buffer, (index,), value), kind=inner_kind)
    body = L.loop(rep, 2, L.LetStmt(scale, E.const(3.0), L.loop(i, rows, inner,
                                                                kind=L.ForKind.PARALLEL)))
    return L.PrimFunc("scale_rows", (a, out_buffer), body)

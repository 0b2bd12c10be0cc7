"""The LLVM code generator on hand-built final-form PrimFuncs (flat buffers, Ramp/Broadcast
vectors, predicates): every dtype's arithmetic, casts, intrinsics, memory access and control
flow, compiled in-process and run against numpy; generated-code assertions where that is the
point. Parallel loops, the calling convention and export are in test_llvm_runtime.py."""

import math

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvm_kernels import (
    ALL_DTYPES,
    FLOAT_DTYPES,
    INT_DTYPES,
    assert_close,
    elementwise,
    matmul,
    random_values,
    run,
)

from ember.backends.llvm import CodegenError, compile_primfuncs
from ember.backends.llvm.codegen import build_module
from ember.backends.llvm.host import jit_engine, resolve_target
from ember.errors import TargetError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.graph import numpy_dtype
from ember.ir.interpreter import run_primfunc

# ----------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("lanes", [1, 16])
@pytest.mark.parametrize("n", [1000, 1024, 7])
def test_elementwise_float32(lanes, n):
    rng = np.random.default_rng(0)
    a, b = random_values("float32", n, rng), random_values("float32", n, rng)
    func = elementwise("axpb", ["float32", "float32"], "float32",
                       lambda x, y: x * y + x, n, lanes)
    np.testing.assert_array_equal(run(func, a, b), a * b + a)


def test_vector_kernel_ir_is_16_wide_noalias_and_strict():
    func = elementwise("vadd", ["float32", "float32"], "float32", lambda x, y: x + y, 1000, 16)
    lib = compile_primfuncs([func])
    assert "<16 x float>" in lib.llvm_ir
    assert "llvm.masked.load.v16f32" in lib.llvm_ir  # the predicated tail
    header = next(line for line in lib.llvm_ir.splitlines() if line.startswith("define"))
    assert header.count("noalias") == 3 and header.count("align 64") == 3
    assert "dereferenceable(4000)" in header
    for flag in (" fast ", " nnan ", " contract ", " reassoc ", " afn "):
        assert flag not in lib.llvm_ir and flag not in lib.optimized_ir
    if resolve_target("llvm").vector_bits == 512:
        assert '"prefer-vector-width"="512"' in lib.llvm_ir
        assert "zmm" in lib.assembly()


def test_fast_math_flags_only_when_asked():
    body = lambda x, y: x * y + x  # noqa: E731
    fast = elementwise("fast", ["float32"] * 2, "float32", body, 64, 16, {"fast_math": True})
    contract = elementwise("contract", ["float32"] * 2, "float32", body, 64, 16,
                           {"fast_math": ("contract",)})
    lib = compile_primfuncs([fast, contract])
    assert "fmul fast <16 x float>" in lib.llvm_ir
    assert "fmul contract <16 x float>" in lib.llvm_ir
    with pytest.raises(CodegenError, match="unknown fast-math flag"):
        compile_primfuncs([elementwise("bad", ["float32"], "float32", lambda x: x, 8,
                                       attrs={"fast_math": ("turbo",)})])


# ----------------------------------------------------------------------------- arithmetic


def _int_reference(op, a, b):
    dtype = a.dtype
    with np.errstate(all="ignore"):
        zero = b == 0
        safe = np.where(zero, 1, b).astype(dtype)
        if op == "div":  # truncating, from floor division (exact for every width)
            q = a // safe
            fix = (a % safe != 0) & ((a < 0) != (safe < 0))
            result = (q + fix).astype(dtype)
        elif op == "floordiv":
            result = a // safe
        else:
            result = a % safe
        return np.where(zero, 0, result).astype(dtype)


_OPS = {
    "add": (lambda x, y: x + y, np.add),
    "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply),
    "div": (E.div, None),
    "floordiv": (E.floordiv, None),
    "floormod": (E.floormod, None),
    "min": (E.Min, np.minimum),
    "max": (E.Max, np.maximum),
}


def _float_reference(op, numpy_op, a, b):
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        if op == "div":
            expected = a / b
        elif op == "floordiv":
            expected = np.floor(wide_a / wide_b)
        elif op == "floormod":
            expected = np.mod(wide_a, wide_b)
        else:
            expected = numpy_op(a, b)
    return np.asarray(expected).astype(a.dtype)


@pytest.mark.parametrize("lanes", [1, 16])
@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES)
def test_arithmetic(dtype, lanes):
    n = 203
    rng = np.random.default_rng(1)
    a = random_values(dtype, n, rng)
    b = random_values(dtype, n, rng)
    if dtype in INT_DTYPES:
        b[:40] = rng.integers(-3, 4, 40).astype(dtype) if dtype[0] == "i" else b[:40] % 4
        if dtype[0] == "i":  # INT_MIN / -1 overflows; tested apart
            a[(a == np.iinfo(dtype).min) & (b == -1)] = 0
    else:
        a[:3] = [np.nan, np.inf, -0.0]
        b[3:6] = [np.nan, 1.0, -np.inf]
    funcs = [elementwise(op, [dtype, dtype], dtype, build, n, lanes)
             for op, (build, _) in _OPS.items()]
    lib = compile_primfuncs(funcs)
    for op, (_, numpy_op) in _OPS.items():
        out = np.zeros(n, a.dtype)
        lib.get(op)(a, b, out)
        if dtype in INT_DTYPES:
            expected = numpy_op(a, b) if numpy_op else _int_reference(op, a, b)
        else:
            expected = _float_reference(op, numpy_op, a, b)
        with np.errstate(all="ignore"):
            assert_close(out, expected, dtype), op


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64"])
def test_integer_division_signs_and_edges(dtype):
    info = np.iinfo(dtype)
    a = np.array([7, -7, 7, -7, 0, 5, info.min, info.min, info.max, 3], dtype)
    b = np.array([2, 2, -2, -2, 3, 0, -1, -1, -1, 1], dtype)
    funcs = [elementwise(op, [dtype, dtype], dtype, _OPS[op][0], len(a))
             for op in ("div", "floordiv", "floormod")]
    lib = compile_primfuncs(funcs)
    results = {}
    for op in ("div", "floordiv", "floormod"):
        out = np.zeros(len(a), dtype)
        lib.get(op)(a, b, out)
        results[op] = out.tolist()
    assert results["div"][:6] == [3, -3, -3, 3, 0, 0]
    assert results["floordiv"][:6] == [3, -4, -4, 3, 0, 0]
    assert results["floormod"][:6] == [1, 1, -1, -1, 0, 0]
    assert results["div"][6:9] == [info.min, info.min, -info.max]  # INT_MIN / -1 wraps
    assert results["floormod"][6:9] == [0, 0, 0]


def test_comparisons_follow_ieee_for_nan():
    a = np.array([1.0, np.nan, 2.0, np.nan, -0.0, np.inf], np.float32)
    b = np.array([1.0, 1.0, np.nan, np.nan, 0.0, np.inf], np.float32)
    ops = {"eq": (E.eq, np.equal), "ne": (E.ne, np.not_equal), "lt": (E.LT, np.less),
           "le": (E.LE, np.less_equal), "gt": (E.GT, np.greater),
           "ge": (E.GE, np.greater_equal)}
    for lanes in (1, 8):
        funcs = [elementwise(name, ["float32"] * 2, "bool", build, 6, lanes)
                 for name, (build, _) in ops.items()]
        lib = compile_primfuncs(funcs)
        for name, (_, numpy_op) in ops.items():
            out = np.zeros(6, bool)
            lib.get(name)(a, b, out)
            np.testing.assert_array_equal(out, numpy_op(a, b), err_msg=name)


def test_logic_and_select_on_bools_and_ints():
    n = 100
    rng = np.random.default_rng(2)
    p, q = random_values("bool", n, rng), random_values("bool", n, rng)
    x, y = random_values("int32", n, rng), random_values("int32", n, rng)
    bool_logic = elementwise("logic", ["bool", "bool"], "bool",
                             lambda u, v: E.Or(E.And(u, E.Not(v)), E.And(E.Not(u), v)), n, 16)
    bits = elementwise("bits", ["int32", "int32"], "int32",
                       lambda u, v: E.Or(E.And(u, v), E.Not(u)), n)
    choose = elementwise("choose", ["int32", "int32"], "int32",
                         lambda u, v: E.select(u < v, u * 2, v), n, 16)
    lib = compile_primfuncs([bool_logic, bits, choose])
    np.testing.assert_array_equal(run(bool_logic, p, q, lib=lib), p ^ q)
    np.testing.assert_array_equal(run(bits, x, y, lib=lib), (x & y) | ~x)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(run(choose, x, y, lib=lib), np.where(x < y, x * 2, y))


# ----------------------------------------------------------------------------- casts


def _cast_inputs(source, target, rng, n):
    if source == "bool":
        return random_values("bool", n, rng)
    if source in FLOAT_DTYPES:
        if target == "bool":
            values = rng.uniform(-2, 2, n)
            values[:4] = [0.0, -0.0, np.nan, 0.25]
        elif target.startswith("uint"):
            values = rng.uniform(0, 120, n)
        elif target in INT_DTYPES:
            values = rng.uniform(-120, 120, n)
        else:
            values = rng.uniform(-1000, 1000, n)
        return values.astype(numpy_dtype(source))
    if target in ("float16", "bfloat16"):
        return random_values(source, n, rng, 0, 100)
    return random_values(source, n, rng)


@pytest.mark.parametrize("source", ALL_DTYPES)
def test_casts_between_all_dtypes(source):
    n = 37
    rng = np.random.default_rng(3)
    targets = [t for t in ALL_DTYPES if t != source]
    funcs = [elementwise(f"to_{t}", [source], t, lambda x, t=t: E.cast(t, x), n, lanes)
             for t in targets for lanes in (1,)]
    vector_funcs = [elementwise(f"to_{t}_x8", [source], t, lambda x, t=t: E.cast(
        E.with_lanes(t, 8), x), n, 8) for t in targets]
    lib = compile_primfuncs(funcs + vector_funcs)
    for target in targets:
        values = _cast_inputs(source, target, rng, n)
        with np.errstate(all="ignore"):
            expected = values.astype(numpy_dtype(target))
        if source in FLOAT_DTYPES and target in INT_DTYPES:
            expected = np.trunc(values.astype(np.float64)).astype(numpy_dtype(target))
        for name in (f"to_{target}", f"to_{target}_x8"):
            out = np.zeros(n, numpy_dtype(target))
            lib.get(name)(values, out)
            np.testing.assert_array_equal(out.astype(np.float64) if target in FLOAT_DTYPES
                                          else out, expected.astype(np.float64)
                                          if target in FLOAT_DTYPES else expected,
                                          err_msg=f"{source} -> {target} ({name})")


def test_float_to_int_saturates_and_nan_is_zero():
    values = np.array([np.nan, np.inf, -np.inf, 1e10, -1e10, 2.9, -2.9], np.float32)
    to_int32 = elementwise("i32", ["float32"], "int32", lambda x: E.cast("int32", x), 7)
    to_uint8 = elementwise("u8", ["float32"], "uint8", lambda x: E.cast("uint8", x), 7)
    lib = compile_primfuncs([to_int32, to_uint8])
    i32 = np.iinfo(np.int32)
    assert run(to_int32, values, lib=lib).tolist() == [0, i32.max, i32.min, i32.max, i32.min,
                                                       2, -2]
    assert run(to_uint8, values, lib=lib).tolist() == [0, 255, 0, 255, 0, 2, 0]


# ----------------------------------------------------------------------------- intrinsics

_UNARY_DOMAINS = {
    "exp": (-5, 5), "log": (0.01, 10), "sqrt": (0, 10), "rsqrt": (0.1, 10),
    "tanh": (-4, 4), "sigmoid": (-8, 8), "erf": (-3, 3), "sin": (-4, 4), "cos": (-4, 4),
    "tan": (-1.2, 1.2), "asin": (-0.99, 0.99), "acos": (-0.99, 0.99), "atan": (-5, 5),
    "sinh": (-3, 3), "cosh": (-3, 3), "asinh": (-5, 5), "acosh": (1.01, 5),
    "atanh": (-0.9, 0.9), "fabs": (-5, 5), "floor": (-5, 5), "ceil": (-5, 5),
    "round": (-5, 5), "trunc": (-5, 5), "log1p": (-0.5, 3), "expm1": (-3, 3),
}
_NUMPY = {
    "rsqrt": lambda x: 1 / np.sqrt(x), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "erf": np.vectorize(math.erf), "fabs": np.abs, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "pow": np.power, "fmod": np.fmod, "atan2": np.arctan2,
}


@pytest.mark.parametrize("lanes", [1, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_intrinsics(dtype, lanes):
    n = 67
    rng = np.random.default_rng(4)
    funcs = [elementwise(name, [dtype], dtype, lambda x, name=name: E.call(name, x), n, lanes)
             for name in _UNARY_DOMAINS]
    funcs += [elementwise(name, [dtype, dtype], dtype,
                          lambda x, y, name=name: E.call(name, x, y), n, lanes)
              for name in ("pow", "fmod", "atan2")]
    funcs.append(elementwise("fma", [dtype] * 3, dtype, E.fma, n, lanes))
    lib = compile_primfuncs(funcs)
    for name, (low, high) in _UNARY_DOMAINS.items():
        x = random_values(dtype, n, rng, low, high)
        if name == "round":
            x[:6] = [0.5, 1.5, 2.5, -0.5, -1.5, 3.5]  # half to even
        wide = x.astype(np.float64)
        expected = _NUMPY.get(name, getattr(np, name, None))(wide)
        out = np.zeros(n, x.dtype)
        lib.get(name)(x, out)
        assert_close(out, expected.astype(x.dtype), dtype), name
    x = random_values(dtype, n, rng, 0.5, 3)
    y = random_values(dtype, n, rng, -2, 2)
    z = random_values(dtype, n, rng)
    for name in ("pow", "fmod", "atan2"):
        out = np.zeros(n, x.dtype)
        lib.get(name)(x, y, out)
        assert_close(out, _NUMPY[name](x.astype(np.float64), y.astype(np.float64))
                     .astype(x.dtype), dtype)
    out = np.zeros(n, x.dtype)
    lib.get("fma")(x, y, z, out)
    wide = x.astype(np.float64) * y.astype(np.float64) + z.astype(np.float64)
    assert_close(out, wide.astype(x.dtype), dtype)


def test_isnan_isinf_and_integer_abs():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -3.0], np.float32)
    k = np.array([-5, 5, 0, -128, 127, -1], np.int8)
    lib = compile_primfuncs([
        elementwise("isnan", ["float32"], "bool", lambda v: E.call("isnan", v), 6),
        elementwise("isinf", ["float32"], "bool", lambda v: E.call("isinf", v), 6, 8),
        elementwise("iabs", ["int8"], "int8", lambda v: E.call("fabs", v), 6, 8)])
    for name, values, expected in (("isnan", x, np.isnan(x)), ("isinf", x, np.isinf(x)),
                                   ("iabs", k, np.abs(k))):
        out = np.zeros(6, expected.dtype)
        lib.get(name)(values, out)
        np.testing.assert_array_equal(out, expected)


# ----------------------------------------------------------------------------- storage


def test_bool_and_int8_storage():
    n = 50
    rng = np.random.default_rng(5)
    flags = random_values("bool", n, rng)
    small = random_values("int8", n, rng)
    keep = elementwise("keep", ["bool", "int8"], "int8",
                       lambda f, v: E.select(f, v + v, E.const(0, "int8")), n)
    keep16 = elementwise("keep16", ["bool", "int8"], "int8",
                         lambda f, v: E.select(f, v + v, E.Broadcast(E.const(0, "int8"), 16)),
                         n, 16)
    positive = elementwise("positive", ["int8"], "bool",
                           lambda v: E.GT(v, E.Broadcast(E.const(0, "int8"), 16)), n, 16)
    lib = compile_primfuncs([keep, keep16, positive])
    with np.errstate(over="ignore"):
        expected = np.where(flags, small + small, 0).astype(np.int8)
    for name in ("keep", "keep16"):
        out = np.zeros(n, np.int8)
        lib.get(name)(flags, small, out)
        np.testing.assert_array_equal(out, expected)
    out = np.zeros(n, bool)
    lib.get("positive")(small, out)
    np.testing.assert_array_equal(out, small > 0)
    assert "<16 x i8>" in lib.llvm_ir  # bools are bytes in memory


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loads_and_stores(dtype):
    n = 100
    x = np.linspace(-3, 3, n).astype(numpy_dtype(dtype))
    widen_math_narrow = elementwise(
        "f", [dtype], dtype,
        lambda v: E.cast(E.with_lanes(dtype, 16), E.cast("float32x16", v) * E.Broadcast(
            E.const(1.5), 16) + E.Broadcast(E.const(0.25), 16)), n, 16)
    out = run(widen_math_narrow, x)
    expected = (x.astype(np.float32) * np.float32(1.5) + np.float32(0.25)).astype(x.dtype)
    np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))


# ----------------------------------------------------------------------------- memory


def test_strided_gather_scatter_and_broadcast_index():
    n = 64
    src = L.Buffer("src", (2 * n,), "float32")
    dst = L.Buffer("dst", (2 * n,), "float32")
    i = E.Var("i")
    even = E.Ramp(i * 16, E.const(2), 8)  # src[2i], stride 2
    odd = E.Ramp(i * 16 + 1, E.const(2), 8)
    first = E.Ramp(E.const(0), E.const(0), 8)  # stride 0: one element in every lane
    second = E.Broadcast(E.const(1), 8)
    predicate = E.LT(E.Ramp(i * 8, E.const(1), 8), E.Broadcast(E.const(n - 4), 8))
    body = L.seq(
        L.Store(dst, (odd,), L.Load(src, (even,)) + L.Load(src, (first,)) +
                L.Load(src, (second,))),
        L.Store(dst, (even,), L.Load(src, (odd,), predicate), predicate))
    func = L.PrimFunc("strided", (src, dst), L.loop(i, n // 8, body))
    lib = compile_primfuncs([func])
    assert "llvm.masked.gather" in lib.llvm_ir and "llvm.masked.scatter" in lib.llvm_ir
    x = np.arange(2 * n, dtype=np.float32) + 1
    out = np.full(2 * n, -1, np.float32)
    lib.get("strided")(x, out)
    expected = np.full(2 * n, -1, np.float32)
    expected[1::2] = x[0::2] + x[0] + x[1]
    expected[0:2 * (n - 4):2] = x[1:2 * (n - 4):2]
    np.testing.assert_array_equal(out, expected)


def test_scalar_predicated_load_and_store():
    n = 20
    a, out_buffer = L.Buffer("a", (n,), "int32"), L.Buffer("out", (n,), "int32")
    i = E.Var("i")
    inside = E.LT(i + 3, E.const(n))
    body = L.Store(out_buffer, (i,), L.Load(a, (i + 3,), inside) + 1, E.LT(i, E.const(15)))
    func = L.PrimFunc("shift", (a, out_buffer), L.loop(i, n, body))
    x = np.arange(n, dtype=np.int32) * 10
    out = np.full(n, -7, np.int32)
    compile_primfuncs([func]).get("shift")(x, out)
    expected = np.full(n, -7, np.int32)
    expected[:15] = np.where(np.arange(15) + 3 < n, x[np.minimum(np.arange(15) + 3, n - 1)],
                             0) + 1
    np.testing.assert_array_equal(out, expected)


def test_multi_dimensional_indices_are_linearized():
    a, b = L.Buffer("a", (3, 5), "float32"), L.Buffer("b", (5, 3), "float32")
    i, j = E.Var("i"), E.Var("j")
    func = L.PrimFunc("transpose", (a, b),
                      L.loop(i, 3, L.loop(j, 5, L.Store(b, (j, i), L.Load(a, (i, j))))))
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    out = np.zeros((5, 3), np.float32)
    compile_primfuncs([func]).get("transpose")(x, out)
    np.testing.assert_array_equal(out, x.T)


# ----------------------------------------------------------------------------- control flow


def test_let_if_then_else_and_select():
    n = 40
    a, out_buffer = L.Buffer("a", (n,), "float32"), L.Buffer("out", (n,), "float32")
    i, t, u = E.Var("i"), E.Var("t", "float32"), E.Var("u", "float32")
    x = L.Load(a, (i,))
    body = L.LetStmt(t, x * 2.0, L.IfThenElse(
        E.GT(t, E.const(1.0)),
        L.Store(out_buffer, (i,), E.Let(u, t + 1.0, u * u)),
        L.Store(out_buffer, (i,), E.select(E.LT(t, E.const(-1.0)), -t, t * 0.5))))
    body = L.AttrStmt("pragma_unknown_hint", 1, body)  # ignored
    func = L.PrimFunc("branchy", (a, out_buffer),
                      L.loop(i, n, L.IfThenElse(E.LT(i, E.const(n - 5)), body)))
    v = np.linspace(-2, 2, n).astype(np.float32)
    out = run(func, v)
    t_ref = v * np.float32(2)
    expected = np.where(t_ref > 1, (t_ref + 1) ** 2,
                        np.where(t_ref < -1, -t_ref, t_ref * np.float32(0.5)))
    expected[n - 5:] = 0
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("lanes", [1, 16])
def test_matmul_with_allocated_accumulator(lanes):
    m, n, k = 12, 32, 20
    func = matmul(m, n, k, (n,), lanes)
    rng = np.random.default_rng(6)
    x, y = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
    lib = compile_primfuncs([func])
    assert "alloca [32 x float], align 64" in lib.llvm_ir
    out = np.zeros(m * n, np.float32)
    lib.get("matmul")(x, y, out)
    np.testing.assert_allclose(out.reshape(m, n), x @ y, rtol=1e-5)


# ----------------------------------------------------------------------------- parallel


# ----------------------------------------------------------------------------- errors


def test_unsupported_nodes_raise_codegen_error_naming_function_and_node():
    a = L.Buffer("a", (8,), "float32")
    i = E.Var("i")
    gpu = L.PrimFunc("gpu_kernel", (a,), L.loop(i, 8, L.Store(a, (i,), E.const(1.0)),
                                                kind=L.ForKind.THREAD_BINDING,
                                                thread_tag="threadIdx.x"))
    with pytest.raises(CodegenError, match=r"gpu_kernel: .*threadIdx.x"):
        compile_primfuncs([gpu])
    undefined = L.PrimFunc("undefined_var", (a,), L.Store(a, (E.Var("k"),), E.const(1.0)))
    with pytest.raises(CodegenError, match=r"undefined_var: variable k .* not defined"):
        compile_primfuncs([undefined])
    ghost = L.Buffer("ghost", (8,), "float32")
    unknown = L.PrimFunc("unknown_buffer", (a,), L.Store(ghost, (E.const(0),), E.const(1.0)))
    with pytest.raises(CodegenError, match="unknown_buffer: buffer ghost"):
        compile_primfuncs([unknown])
    symbolic = L.PrimFunc("symbolic", (L.Buffer("s", (E.Var("n"),), "float32"),),
                          L.Evaluate(E.const(0)))
    with pytest.raises(CodegenError, match="symbolic: param s has a symbolic shape"):
        compile_primfuncs([symbolic])
    mixed = L.PrimFunc("mixed", (a,), L.Store(a, (E.const(0),), E.const(1, "int32")))
    with pytest.raises(CodegenError, match="mixed: store of int32 into the float32 buffer a"):
        compile_primfuncs([mixed])


def test_a_symbol_the_process_lacks_is_an_error_not_a_crash():
    module = llvm.parse_assembly("declare void @ember_no_such_function()\n"
                                 "define void @f() {\n  call void @ember_no_such_function()\n"
                                 "  ret void\n}")
    with pytest.raises(CodegenError, match="calls ember_no_such_function, which this process"):
        jit_engine(module, resolve_target("llvm"), "f")


def test_target_options():
    haswell = resolve_target("llvm -mcpu=haswell")
    assert haswell.vector_bits == 256 and haswell.prefer_vector_width is None
    module, _ = build_module([elementwise("f", ["float32"], "float32", lambda v: v, 8)],
                             haswell)
    assert '"target-cpu"="haswell"' in str(module)
    assert "prefer-vector-width" not in str(module)
    assert resolve_target("llvm -mcpu=skylake-avx512").vector_bits == 512
    assert resolve_target("llvm -mcpu=skylake-avx512 -mattr=-avx512f").vector_bits == 256
    with pytest.raises(TargetError, match="unknown option"):
        resolve_target("llvm -mfancy=1")
    with pytest.raises(TargetError, match="'llvm' targets"):
        resolve_target("cuda")


def test_agrees_with_the_loop_ir_interpreter():
    # The interpreter is the oracle of lowering and passes; compiled code must agree with it.
    rng = np.random.default_rng(8)
    funcs = [matmul(5, 32, 7, (32,), 16), matmul(3, 8, 4, (8,)).replace(name="matmul_scalar"),
             elementwise("mix", ["int32", "int32"], "int32", lambda x, y: E.select(
                 E.LT(x, y), E.floordiv(x, y), E.floormod(y, x)), 45, 8)]
    lib = compile_primfuncs(funcs)
    for func in funcs:
        arrays = [random_values(p.dtype, p.size, rng, -50, 50) for p in func.params[:-1]]
        expected = np.zeros(func.params[-1].size, numpy_dtype(func.params[-1].dtype))
        run_primfunc(func, [*arrays, expected])
        np.testing.assert_allclose(run(func, *arrays, lib=lib), expected, rtol=1e-5,
                                   err_msg=func.name)


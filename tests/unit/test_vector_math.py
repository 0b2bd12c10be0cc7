"""Accuracy of the inline float32 math of the LLVM backend (backends/llvm/vector_math.py):
exp, log, tanh, sigmoid, erf and log1p (through softplus) compiled as vectorized elementwise
kernels and compared with float64 references over ~10^6 points per function, special values
included (NaN, +-inf, -0.0, the overflow and underflow boundaries, denormals). Each test
prints its max error; pow's small-integer branch (intrinsics.py) is checked too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf as scipy_erf
from support import check_kernel

from ember.compiler.ops import Workload, instantiate
from ember.ir.graph import TensorType
from ember.ir.ops import get_op
from ember.target import Target

_F32 = np.finfo(np.float32)
_SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, _F32.tiny, -_F32.tiny,
                      _F32.smallest_subnormal, -_F32.smallest_subnormal, _F32.max, -_F32.max,
                      88.72283, 88.72284, 88.7229, -87.33655, -103.27893, -103.97208,
                      -104.0, -150.0, 0.625, -0.625, 0.62499994, 1.0000001, 0.99999994,
                      3.92, 4.0, -4.0, 9.0, 44.0, 45.0], np.float32)


def _run(op: str, x: np.ndarray) -> np.ndarray:
    opdef = get_op(op)
    attrs = opdef.make_attrs({})
    types = (TensorType.of(x),)
    workload = Workload(op, attrs, types, opdef.infer_types(attrs, types))
    func = instantiate(workload, "cpu", Target.parse("llvm"), None)
    from ember.backends.llvm import compile_primfuncs

    out = np.zeros_like(x)
    compile_primfuncs([func], "llvm").get(func.name)(x, out)
    return out


def _points(low: float, high: float, count: int, seed: int) -> np.ndarray:
    """Uniform points on [low, high], a log-spaced sweep of magnitudes, and the specials."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(low, high, count // 2)
    top = max(abs(low), abs(high))
    magnitudes = np.exp(rng.uniform(math.log(1e-30), math.log(top), count // 2))
    signs = np.where(rng.random(count // 2) < 0.5, -1.0, 1.0) if low < 0 else 1.0
    return np.concatenate([uniform, magnitudes * signs, _SPECIALS]).astype(np.float32)


def _ulp_error(got: np.ndarray, want64: np.ndarray) -> np.ndarray:
    """|got - want| in units of the float32 ulp at want (the denormal ulp below tiny)."""
    with np.errstate(all="ignore"):  # the overflowing points are compared exactly elsewhere
        want32 = want64.astype(np.float32)
        ulp = np.spacing(np.abs(want32)).astype(np.float64)
    ulp = np.maximum(ulp, float(_F32.smallest_subnormal))
    return np.abs(got.astype(np.float64) - want64) / ulp


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


CASES = [
    ("exp", np.exp, -110.0, 90.0, 4.0),
    ("log", np.log, 0.0, 1e6, 4.0),
    ("tanh", np.tanh, -12.0, 12.0, 4.0),
    ("sigmoid", _sigmoid64, -110.0, 110.0, 4.0),
    ("softplus", lambda x: np.logaddexp(0, x), -110.0, 110.0, 4.0),  # through log1p
]


def _check_specials(got: np.ndarray, want: np.ndarray) -> None:
    """NaN where the reference is NaN, infinities and signed zeros exactly."""
    assert np.array_equal(np.isnan(got), np.isnan(want))
    exact = np.isinf(want) | (want == 0)
    assert np.array_equal(got[exact], want[exact])
    assert np.array_equal(np.signbit(got[exact]), np.signbit(want[exact]))


@pytest.mark.parametrize("op,reference,low,high,max_ulp", CASES, ids=[c[0] for c in CASES])
def test_max_ulp_error(op, reference, low, high, max_ulp) -> None:
    x = _points(low, high, 1 << 20, seed=len(op))
    if op == "log":
        denormals = np.exp(np.random.default_rng(5).uniform(-103, -87, 10000))
        # negative inputs give NaN; denormal inputs are scaled into the normal range first
        x = np.concatenate([x, -x[:1000], denormals.astype(np.float32)])
    got = _run(op, x)
    with np.errstate(all="ignore"):
        want = reference(x.astype(np.float64))
        want32 = want.astype(np.float32)
    _check_specials(got, want32)  # also overflow: inf where the float32 result is inf
    finite = np.isfinite(want32)
    error = _ulp_error(got[finite], want[finite])
    worst = int(np.argmax(error))
    print(f"{op}: max {error[worst]:.2f} ulp at x={x[finite][worst]!r}, "
          f"mean {error.mean():.3f} ulp over {x.size} points")
    assert error.max() <= max_ulp


def test_erf_absolute_error() -> None:
    x = _points(-5.0, 5.0, 1 << 20, seed=7)
    got = _run("erf", x)
    want = scipy_erf(x.astype(np.float64))
    _check_specials(got, want.astype(np.float32))
    finite = np.isfinite(want)
    error = np.abs(got[finite].astype(np.float64) - want[finite])
    ulps = _ulp_error(got[finite], want[finite])
    print(f"erf: max abs error {error.max():.3g}, max {ulps.max():.1f} ulp")
    assert error.max() <= 2e-7
    # odd: erf(-x) == -erf(x) bit for bit
    assert np.array_equal(_run("erf", -x), -got, equal_nan=True)


@pytest.mark.parametrize("op", ["exp", "tanh", "erf", "sigmoid", "log"])
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_other_dtypes_match_reference(op, dtype) -> None:
    """float16 goes through the float32 code and rounds once; float64 keeps libm."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.01 if op == "log" else -6, 6, 1000).astype(dtype)
    check_kernel(op, [x])


def _run_intrinsic(name: str, x: np.ndarray) -> np.ndarray:
    """`name`(x) for an intrinsic with no op of its own, as a vectorized te kernel."""
    from ember.backends.llvm import compile_primfuncs
    from ember.ir import te
    from ember.ir.expr import call
    from ember.ir.lower import lower
    from ember.ir.passes import run_pipeline
    from ember.ir.schedule import create_schedule

    data = te.placeholder(x.shape, "float32", name="x")
    out = te.compute(x.shape, lambda i: call(name, data[i]), name="y")
    sch = create_schedule(out)
    _, inner = sch[out].split(out.op.axis[0], factor=16)
    sch[out].vectorize(inner)
    func = run_pipeline(lower(sch, [data, out], f"{name}_kernel"))
    result = np.zeros_like(x)
    compile_primfuncs([func], "llvm").get(func.name)(x, result)
    return result


def test_log1p_max_ulp_error() -> None:
    rng = np.random.default_rng(11)
    small = np.exp(rng.uniform(math.log(1e-30), math.log(1.0), 1 << 18))
    x = np.concatenate([small, -small[: 1 << 17] * 0.999999, rng.uniform(-1, 1e4, 1 << 18),
                        _SPECIALS, [-1.0, -1.5, -0.5]]).astype(np.float32)
    x = x[: x.size // 16 * 16]
    got = _run_intrinsic("log1p", x)
    with np.errstate(all="ignore"):
        want = np.log1p(x.astype(np.float64))
    _check_specials(got, want.astype(np.float32))
    finite = np.isfinite(want)
    error = _ulp_error(got[finite], want[finite])
    print(f"log1p: max {error.max():.2f} ulp at x={x[finite][np.argmax(error)]!r}")
    assert error.max() <= 4.0


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0, 4.0, 0.5, -1.0, 2.5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pow_by_a_scalar_tensor(exponent, dtype) -> None:
    """Small integer exponents multiply (a branch on the run-time exponent); others call
    libm. Negative bases, zeros, infinities and NaN included."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-20, 20, 997), [0.0, -0.0, np.inf, -np.inf, np.nan]])
    check_kernel("pow", [x.astype(dtype), np.array(exponent, dtype)])


def test_pow_by_a_varying_exponent() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 4, (8, 64)).astype(np.float32)
    y = np.tile(np.array([2.0, 3.0, 0.5, 1.0], np.float32), 16)  # lanes differ: libm
    check_kernel("pow", [x, y])
    check_kernel("pow", [x, np.full(64, 3.0, np.float32)])


@pytest.mark.parametrize("op, libm", [("exp", "expf"), ("log", "logf"), ("tanh", "tanhf"),
                                      ("erf", "erff"), ("sigmoid", "expf"), ("gelu", "erff"),
                                      ("softplus", "log1pf")])
def test_vector_code_calls_no_libm(op, libm) -> None:
    """The point of vector_math.py: a vectorized float32 kernel computes in registers."""
    from ember.backends.llvm import compile_primfuncs

    x = np.zeros((4, 256), np.float32)
    opdef = get_op(op)
    attrs = opdef.make_attrs({})
    types = (TensorType.of(x),)
    func = instantiate(Workload(op, attrs, types, opdef.infer_types(attrs, types)), "cpu",
                       Target.parse("llvm"), None)
    text = compile_primfuncs([func], "llvm").optimized_ir
    assert "<16 x float>" in text or "<8 x float>" in text
    assert f"@{libm}(" not in text and f"@llvm.{op}." not in text

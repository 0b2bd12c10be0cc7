"""Inline float32 math for the LLVM code generator: exp, log, log1p, tanh, erf and sigmoid as
straight-line code on scalars or vectors (range reduction + a short polynomial), so a
vectorized loop computes 16 exponentials in a few FMAs instead of 16 libm calls.

LLVM lowers `llvm.exp.v16f32` to one `expf` call per lane (no vector math library is linked),
and tanh/erf have no intrinsic at all; intrinsics.py routes float32 (and, through it, the half
floats) here. float64 keeps libm.

Accuracy (tests/unit/test_vector_math.py measures it over ~10^6 points against float64
references): exp, log, log1p, tanh and sigmoid within a few ulp (measured maxima 0.96, 1.89,
2.43, 1.25, 2.17 ulp); erf within 2e-7 absolute (measured 1.3e-7). Every
function is exact at its special values: NaN in -> NaN out, +-inf, overflow to inf, underflow
through the denormals to 0, -0.0 kept where the function is odd.

[Note: where the coefficients come from]
Each polynomial is a near-minimax fit made for ember (iteratively reweighted least squares,
Lawson's algorithm, in float64 over 40,000 Chebyshev nodes; relative error unless stated):
- exp: e^r = 1 + r + r^2 q(r), r in [-ln2/2, ln2/2], q of degree 4 (error 3e-9). The
  reduction x = n ln2 + r uses Cody-Waite's two-part ln2 (a high part with 9 significant
  bits, so n * high is exact for |n| <= 2^15) and scales by 2^n in two halves, which keeps
  both factors normal and rounds once into the denormals.
- log: x = 2^k m, m in [sqrt(1/2), sqrt(2)); with s = (m-1)/(m+1), log m = 2 atanh(s)
  = 2s + 2s^3 Q(s^2), Q of degree 2 over s in [0, 0.1716] (error 8e-10). log1p(x) is
  log(u) + (x - (u - 1)) / u with u = 1 + x rounded: the second term restores what the
  rounding of u lost (a classic correction, exact to first order).
- tanh: x + x^3 P(x^2) for |x| < 0.625, P of degree 4 (error 4e-9); beyond it
  1 - 2 / (e^{2|x|} + 1) with the sign of x.
- erf: x P(x^2) for |x| < 1, P of degree 6 (error 1.2e-9); for 1 <= |x| <= 4,
  1 - e^{-x^2} g(1/|x|) with g(t) ~ erfc(1/t) e^{1/t^2} of degree 7 in t (absolute error
  3e-8); erf is 1 in float32 past |x| = 3.92.
- sigmoid: the two mirrored branches of the op's reference, 1/(1+e) and e/(1+e) with
  e = exp(-|x|), which never overflow.
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.ir import expr as E

#: intrinsic names this module computes for float32
FUNCTIONS = frozenset({"exp", "log", "log1p", "tanh", "erf", "sigmoid"})

_EXP_Q = (0.49999993451177505, 0.16666520684537517, 0.04166838746696795,
          0.008368710323201163, 0.0013814608306958777)
_LOG_Q = (0.33333388041326506, 0.1998878715715355, 0.14935465095045214)
_TANH_P = (-0.3333328194365316, 0.13331442233408913, -0.05373971753532064,
           0.020639094119243678, -0.005704993747647204)
_ERF_P = (1.1283791657354076, -0.3761262584834589, 0.11283585339081531,
          -0.02685381839016804, 0.005188338335837234, -0.0008010278088185219,
          7.854119290198747e-05)
_ERFC_G = (0.00035006510519851325, 0.5577331893963364, 0.05106544115957637,
           -0.5061263622110803, 0.576135990585658, -0.3544621756484988,
           0.12071458752687797, -0.017827129294325048)

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # 9 significant bits: n * _LN2_HI is exact
_LN2_LO = 0.6931471805599453 - 0.693359375
#: past 89 exp is inf (the scaling overflows; inputs are clamped here to keep the float -> int
#: conversion in range); below -104 it is 0 (those lanes are replaced, see _exp)
_EXP_MAX, _EXP_MIN = 89.0, -104.0
_FLOAT_MIN = 2.0 ** -126
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2)
_TANH_SMALL = 0.625


class _Emitter:
    """Arithmetic on one float32 register type (scalar or vector), without fast-math flags:
    the code below relies on IEEE rounding, NaN and infinity."""

    def __init__(self, emitter: Any, dtype: str) -> None:
        self.emitter = emitter
        self.bld: ir.IRBuilder = emitter.builder
        self.dtype = dtype
        self.int_dtype = E.with_lanes("int32", E.lanes_of(dtype))
        self.int_type = T.register_type(self.int_dtype)

    def c(self, value: float) -> ir.Constant:
        return T.constant(self.dtype, value)

    def i(self, value: int) -> ir.Constant:
        return T.constant(self.int_dtype, value)

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        arg_type = args[0].type
        function = self.emitter.declare(f"{name}.{T.mangle(arg_type)}",
                                        ir.FunctionType(arg_type, [a.type for a in args]))
        return self.bld.call(function, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """a * b + c, fused where the CPU has FMA (llvm.fmuladd)."""
        return self.call("llvm.fmuladd", a, b, c)

    def polynomial(self, x: ir.Value, coefficients: tuple[float, ...]) -> ir.Value:
        """sum coefficients[k] x^k by Horner's rule."""
        result = self.c(coefficients[-1])
        for coefficient in reversed(coefficients[:-1]):
            result = self.fma(result, x, self.c(coefficient))
        return result

    def is_nan(self, x: ir.Value) -> ir.Value:
        return self.bld.fcmp_unordered("uno", x, x)

    def lt(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.bld.fcmp_ordered("<", a, b)

    def to_bits(self, x: ir.Value) -> ir.Value:
        return self.bld.bitcast(x, self.int_type)

    def from_bits(self, bits: ir.Value) -> ir.Value:
        return self.bld.bitcast(bits, T.register_type(self.dtype))

    def power_of_two(self, n: ir.Value) -> ir.Value:
        """2^n for an int32 n in [-126, 127]: the exponent field alone."""
        return self.from_bits(self.bld.shl(self.bld.add(n, self.i(127)), self.i(23)))


def emit(emitter: Any, name: str, x: ir.Value, dtype: str) -> ir.Value:
    """`name`(x) for a float32 (scalar or vector) `x` of `dtype`."""
    m = _Emitter(emitter, dtype)
    functions = {"exp": _exp, "log": _log, "log1p": _log1p, "tanh": _tanh, "erf": _erf,
                 "sigmoid": _sigmoid}
    return functions[name](m, x)


def _exp(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    # lanes whose result is 0 compute exp(0) instead: scaling them down to 0 would underflow,
    # and an underflow costs a microcode assist on x86 (~100 cycles), which masked softmax
    # rows (-inf or -3.4e38 logits) would pay on every masked element
    vanishing = m.lt(x, m.c(_EXP_MIN))
    clamped = m.call("llvm.minnum", bld.select(vanishing, m.c(0.0), x), m.c(_EXP_MAX))
    n = m.call("llvm.roundeven", bld.fmul(clamped, m.c(_LOG2E)))
    r = m.fma(n, m.c(-_LN2_HI), clamped)
    r = m.fma(n, m.c(-_LN2_LO), r)
    r2 = bld.fmul(r, r)
    p = bld.fadd(m.c(1.0), m.fma(r2, m.polynomial(r, _EXP_Q), r))
    # 2^n in two factors, both normal for n in [-150, 128]: p * 2^n1 is exact and the
    # second product rounds once, into the denormals or to inf when it must
    whole = bld.fptosi(n, m.int_type)
    half = bld.ashr(whole, m.i(1))
    rest = bld.sub(whole, half)
    result = bld.fmul(bld.fmul(p, m.power_of_two(half)), m.power_of_two(rest))
    result = bld.select(vanishing, m.c(0.0), result)
    return bld.select(m.is_nan(x), x, result)


def _log(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    # denormal inputs: scale into the normal range first (2^23), take 23 off the exponent
    tiny = m.lt(x, m.c(_FLOAT_MIN))
    scaled = bld.select(tiny, bld.fmul(x, m.c(2.0 ** 23)), x)
    bits = bld.sub(m.to_bits(scaled), m.i(_SQRT_HALF_BITS))
    k = bld.add(bld.ashr(bits, m.i(23)), bld.select(tiny, m.i(-23), m.i(0)))
    mantissa = m.from_bits(bld.add(bld.and_(bits, m.i(0x7FFFFF)), m.i(_SQRT_HALF_BITS)))
    f = bld.fsub(mantissa, m.c(1.0))  # exact: mantissa is in [sqrt(1/2), sqrt(2))
    s = bld.fdiv(f, bld.fadd(m.c(2.0), f))
    z = bld.fmul(s, s)
    two_s = bld.fadd(s, s)
    log_m = m.fma(bld.fmul(two_s, z), m.polynomial(z, _LOG_Q), two_s)
    kf = bld.sitofp(k, T.register_type(m.dtype))
    result = m.fma(kf, m.c(_LN2_HI), m.fma(kf, m.c(_LN2_LO), log_m))
    result = bld.select(bld.fcmp_ordered("==", x, m.c(0.0)), m.c(float("-inf")), result)
    result = bld.select(m.lt(x, m.c(0.0)), m.c(float("nan")), result)
    result = bld.select(bld.fcmp_ordered("==", x, m.c(float("inf"))), x, result)
    return bld.select(m.is_nan(x), x, result)


def _log1p(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    u = bld.fadd(m.c(1.0), x)
    log_u = _log(m, u)
    # log(1 + x) = log(u) + (x - (u - 1)) / u to first order: the second term puts back
    # what rounding 1 + x lost (u - 1 is exact here)
    lost = bld.fsub(x, bld.fsub(u, m.c(1.0)))
    finite = m.lt(m.call("llvm.fabs", log_u), m.c(float("inf")))  # false for NaN, +-inf
    result = bld.select(finite, bld.fadd(log_u, bld.fdiv(lost, u)), log_u)
    # |x| below half an ulp of 1: log1p(x) is x (keeps -0.0)
    return bld.select(bld.fcmp_ordered("==", u, m.c(1.0)), x, result)


def _tanh(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    magnitude = m.call("llvm.fabs", x)
    z = bld.fmul(x, x)
    small = m.fma(bld.fmul(x, z), m.polynomial(z, _TANH_P), x)
    e = _exp(m, bld.fadd(magnitude, magnitude))
    large = bld.fsub(m.c(1.0), bld.fdiv(m.c(2.0), bld.fadd(e, m.c(1.0))))
    # copysign keeps tanh(-0.0) = -0.0, which the FMA's rounding of -0 + +0 would lose
    result = m.call("llvm.copysign", bld.select(m.lt(magnitude, m.c(_TANH_SMALL)), small,
                                                 large), x)
    return bld.select(m.is_nan(x), x, result)


def _erf(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    magnitude = m.call("llvm.fabs", x)
    small = bld.fmul(x, m.polynomial(bld.fmul(x, x), _ERF_P))  # keeps -0.0
    # the tail, on |x| clamped to [1, 4] so that every lane computes finite values
    a = m.call("llvm.maxnum", m.call("llvm.minnum", magnitude, m.c(4.0)), m.c(1.0))
    g = m.polynomial(bld.fdiv(m.c(1.0), a), _ERFC_G)
    complement = bld.fmul(_exp(m, bld.fneg(bld.fmul(a, a))), g)
    large = m.call("llvm.copysign", bld.fsub(m.c(1.0), complement), x)
    result = bld.select(m.lt(magnitude, m.c(1.0)), small, large)
    return bld.select(m.is_nan(x), x, result)


def _sigmoid(m: _Emitter, x: ir.Value) -> ir.Value:
    bld = m.bld
    e = _exp(m, bld.fneg(m.call("llvm.fabs", x)))
    denominator = bld.fadd(m.c(1.0), e)
    positive = bld.fcmp_ordered(">=", x, m.c(0.0))
    # NaN fails the comparison and takes e / (1 + e), which is NaN
    return bld.select(positive, bld.fdiv(m.c(1.0), denominator), bld.fdiv(e, denominator))

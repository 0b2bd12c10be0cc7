"""Math intrinsics and masked memory operations for the LLVM code generator.

float32 exp, log, log1p, tanh, erf and sigmoid are inline polynomial code on scalars or vectors
(vector_math.py). Other math functions LLVM has an intrinsic for (exp, log, sqrt, fabs, floor,
ceil, roundeven, trunc, pow, fma, sin, cos, minimum/maximum) are called as `llvm.*`
intrinsics, which take vectors directly. The others (tanh, erf, atan, ... in float64) are libm
calls, made once per lane for vectors and resolved from the process's libm at JIT time.
float16 and bfloat16 arguments are computed in float32 and rounded back. `round` is
round-half-to-even (llvm.roundeven), as numpy's np.round.
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.backends.llvm import vector_math
from ember.ir import expr as E

#: intrinsic name -> the overloaded LLVM intrinsic computing it
LLVM_INTRINSICS = {
    "exp": "llvm.exp", "log": "llvm.log", "sqrt": "llvm.sqrt", "fabs": "llvm.fabs",
    "floor": "llvm.floor", "ceil": "llvm.ceil", "round": "llvm.roundeven",
    "trunc": "llvm.trunc", "sin": "llvm.sin", "cos": "llvm.cos", "pow": "llvm.pow",
    "fma": "llvm.fma",
}

#: intrinsic name -> the libm function (double version; the float one adds "f")
LIBM_FUNCTIONS = {
    "tanh": "tanh", "erf": "erf", "tan": "tan", "asin": "asin", "acos": "acos",
    "atan": "atan", "sinh": "sinh", "cosh": "cosh", "asinh": "asinh", "acosh": "acosh",
    "atanh": "atanh", "log1p": "log1p", "expm1": "expm1", "atan2": "atan2",
}

# intrinsics that are exact on integers (abs is handled apart)
_INTEGER_IDENTITY = frozenset({"floor", "ceil", "round", "trunc"})


def call_llvm(emitter: Any, name: str, args: list[ir.Value], flags: tuple[str, ...] = (),
              result_type: ir.Type | None = None) -> ir.Value:
    """Call the overloaded LLVM intrinsic `name` on `args` (all of one type).

    Conversions (`result_type` given) are mangled on the result and the argument type.
    """
    arg_type = args[0].type
    if result_type is None:
        full_name = f"{name}.{T.mangle(arg_type)}"
        result_type = arg_type
    else:
        full_name = f"{name}.{T.mangle(result_type)}.{T.mangle(arg_type)}"
    function = emitter.declare(full_name, ir.FunctionType(result_type, [a.type for a in args]))
    return emitter.builder.call(function, args, fastmath=flags)


def _libm(emitter: Any, name: str, args: list[ir.Value], flags: tuple[str, ...]) -> ir.Value:
    """Call libm's `name` (float or double, by the argument type) once per lane."""
    arg_type = args[0].type
    scalar = arg_type.element if isinstance(arg_type, ir.VectorType) else arg_type
    symbol = name + ("f" if isinstance(scalar, ir.FloatType) else "")
    function = emitter.declare(symbol, ir.FunctionType(scalar, [scalar] * len(args)))
    bld = emitter.builder
    if not isinstance(arg_type, ir.VectorType):
        return bld.call(function, args, fastmath=flags)
    result = ir.Constant(arg_type, ir.Undefined)
    for lane in range(arg_type.count):
        lane_index = T.I32(lane)
        lane_args = [bld.extract_element(a, lane_index) for a in args]
        result = bld.insert_element(result, bld.call(function, lane_args, fastmath=flags),
                                    lane_index)
    return result


def emit_call(emitter: Any, call: E.Call) -> ir.Value:
    """Translate an intrinsic `Call` (see ember.ir.expr.INTRINSICS)."""
    name = call.name
    if name not in E.INTRINSICS:
        raise emitter.error(f"unknown intrinsic {name!r}", call)
    arg_dtype = call.args[0].dtype
    if any(a.dtype != arg_dtype for a in call.args):
        raise emitter.error(f"arguments of {name} have different dtypes "
                            f"({', '.join(a.dtype for a in call.args)})", call)
    args = [emitter.expr(a) for a in call.args]
    bld = emitter.builder
    if not T.is_float(arg_dtype):
        if name == "fabs" and not T.is_bool(arg_dtype):
            if T.is_unsigned(arg_dtype):
                return args[0]
            function = emitter.declare(f"llvm.abs.{T.mangle(args[0].type)}",
                                       ir.FunctionType(args[0].type, [args[0].type, T.I1]))
            return bld.call(function, [args[0], T.I1(0)])  # abs(INT_MIN) wraps, as numpy
        if name in _INTEGER_IDENTITY:
            return args[0]
        if name in ("isnan", "isinf"):
            return T.constant(call.dtype, 0)
        raise emitter.error(f"intrinsic {name} needs float arguments, got {arg_dtype}", call)
    if name in ("isnan", "isinf"):
        # no fast-math flags here: under `nnan`/`ninf` these tests would fold away
        x = args[0]
        if name == "isnan":
            return bld.fcmp_unordered("uno", x, x)
        magnitude = call_llvm(emitter, "llvm.fabs", [x])
        return bld.fcmp_ordered("==", magnitude, T.constant(arg_dtype, float("inf")))
    if name == "fabs":  # exact in any precision
        return call_llvm(emitter, "llvm.fabs", args)
    narrow = T.itemsize(arg_dtype) == 2
    compute_dtype = E.with_lanes("float32", E.lanes_of(arg_dtype)) if narrow else arg_dtype
    if narrow:
        args = [emitter.convert(a, arg_dtype, compute_dtype) for a in args]
    result = _compute(emitter, name, args, compute_dtype, emitter.fast)
    return emitter.convert(result, compute_dtype, arg_dtype) if narrow else result


def _compute(emitter: Any, name: str, args: list[ir.Value], dtype: str,
             flags: tuple[str, ...]) -> ir.Value:
    bld = emitter.builder
    if name in vector_math.FUNCTIONS and E.element_of(dtype) == "float32":
        # inline polynomials: LLVM would call libm once per lane (vector_math.py)
        return vector_math.emit(emitter, name, args[0], dtype)
    if name == "pow":
        return _power(emitter, args, dtype, flags)
    if name in LLVM_INTRINSICS:
        return call_llvm(emitter, LLVM_INTRINSICS[name], args, flags)
    if name in LIBM_FUNCTIONS:
        return _libm(emitter, LIBM_FUNCTIONS[name], args, flags)
    one = T.constant(dtype, 1.0)
    if name == "rsqrt":
        return bld.fdiv(one, call_llvm(emitter, "llvm.sqrt", args, flags), flags=flags)
    if name == "sigmoid":
        negative_exp = call_llvm(emitter, "llvm.exp", [bld.fneg(args[0], flags=flags)], flags)
        return bld.fdiv(one, bld.fadd(one, negative_exp, flags=flags), flags=flags)
    if name == "fmod":
        return bld.frem(args[0], args[1], flags=flags)
    raise emitter.error(f"the llvm backend has no lowering for intrinsic {name!r}", None)


#: exponents that `_power` computes by multiplication
_SMALL_EXPONENTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0)


def _power(emitter: Any, args: list[ir.Value], dtype: str,
           flags: tuple[str, ...]) -> ir.Value:
    """pow(x, y). An exponent in -1, 0, 0.5, 1..4, the same in every lane (GELU's x^3, a
    square: the exponent is usually a constant tensor, known only at run time) takes a branch
    that multiplies, divides or takes the square root, as numpy's power does for -1, 0.5 and 2
    (so pow(-inf, 0.5) is NaN, as the reference); x * x * x is within an ulp of the correctly
    rounded cube, and right at zeros, infinities and NaN. Other exponents call llvm.pow, libm
    once per lane. The branch goes the same way on every call, so it predicts perfectly."""
    x, y = args
    if not isinstance(y.type, ir.VectorType) and isinstance(y, ir.Constant) \
            and float(y.constant) not in _SMALL_EXPONENTS:
        return call_llvm(emitter, "llvm.pow", args, flags)
    bld = emitter.builder
    first = bld.extract_element(y, T.I32(0)) if isinstance(y.type, ir.VectorType) else y
    scalar_dtype = E.element_of(dtype)
    uniform = T.I1(1)
    if isinstance(y.type, ir.VectorType):
        same = bld.fcmp_ordered("==", y, emitter.splat(first, y.type.count))
        function = emitter.declare(f"llvm.vector.reduce.and.{T.mangle(same.type)}",
                                   ir.FunctionType(T.I1, [same.type]))
        uniform = bld.call(function, [same])
    small = T.I1(0)
    for exponent in _SMALL_EXPONENTS:
        small = bld.or_(small, bld.fcmp_ordered("==", first, T.constant(scalar_dtype,
                                                                         exponent)))
    fast_block = bld.append_basic_block("pow.small")
    slow_block = bld.append_basic_block("pow.general")
    done = bld.append_basic_block("pow.end")
    bld.cbranch(bld.and_(uniform, small), fast_block, slow_block)
    bld.position_at_end(fast_block)
    square = bld.fmul(x, x)
    one = T.constant(dtype, 1.0)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, 1.0)), x, one)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, 2.0)),
                      square, fast)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, 3.0)),
                      bld.fmul(square, x), fast)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, 4.0)),
                      bld.fmul(square, square), fast)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, 0.5)),
                      call_llvm(emitter, "llvm.sqrt", [x]), fast)
    fast = bld.select(bld.fcmp_ordered("==", first, T.constant(scalar_dtype, -1.0)),
                      bld.fdiv(one, x), fast)
    fast_end = bld.block
    bld.branch(done)
    bld.position_at_end(slow_block)
    slow = call_llvm(emitter, "llvm.pow", args, flags)
    slow_end = bld.block
    bld.branch(done)
    bld.position_at_end(done)
    result = bld.phi(x.type)
    result.add_incoming(fast, fast_end)
    result.add_incoming(slow, slow_end)
    return result


# ----------------------------------------------------------------------------- memory


def vector_access(emitter: Any, pointer: ir.Value, vector_type: ir.VectorType, align: int,
                  mask: ir.Value | None, value: ir.Value | None) -> ir.Value | None:
    """A contiguous vector load (value None) or store at `pointer`, masked when `mask` is set."""
    bld = emitter.builder
    if mask is None:
        if value is None:
            return bld.load(pointer, align=align, typ=vector_type)
        bld.store(value, pointer, align=align)
        return None
    suffix = f"{T.mangle(vector_type)}.p0"
    mask_type = mask.type
    if value is None:
        function = emitter.declare(f"llvm.masked.load.{suffix}", ir.FunctionType(
            vector_type, [T.PTR, mask_type, vector_type]))
        instruction = bld.call(function, [pointer, mask, ir.Constant(vector_type, None)],
                               arg_attrs={0: ()})
        instruction.arg_attributes[0].align = align
        return instruction
    function = emitter.declare(f"llvm.masked.store.{suffix}", ir.FunctionType(
        T.VOID, [vector_type, T.PTR, mask_type]))
    instruction = bld.call(function, [value, pointer, mask], arg_attrs={1: ()})
    instruction.arg_attributes[1].align = align
    return None


def gather_scatter(emitter: Any, pointers: ir.Value, vector_type: ir.VectorType, align: int,
                   mask: ir.Value | None, value: ir.Value | None) -> ir.Value | None:
    """Load (value None) or store one element per lane at the vector of `pointers`."""
    bld = emitter.builder
    lanes = vector_type.count
    if mask is None:
        mask = ir.Constant(ir.VectorType(T.I1, lanes), [T.I1(1)] * lanes)
    suffix = f"{T.mangle(vector_type)}.{T.mangle(pointers.type)}"
    if value is None:
        function = emitter.declare(f"llvm.masked.gather.{suffix}", ir.FunctionType(
            vector_type, [pointers.type, mask.type, vector_type]))
        instruction = bld.call(function, [pointers, mask, ir.Constant(vector_type, None)],
                               arg_attrs={0: ()})
        instruction.arg_attributes[0].align = align
        return instruction
    function = emitter.declare(f"llvm.masked.scatter.{suffix}", ir.FunctionType(
        T.VOID, [vector_type, pointers.type, mask.type]))
    instruction = bld.call(function, [value, pointers, mask], arg_attrs={1: ()})
    instruction.arg_attributes[1].align = align
    return None

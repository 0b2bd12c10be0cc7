"""Expressions to LLVM IR: arithmetic, comparisons, casts, vectors, loads (see codegen.py for
statements and functions, intrinsics.py for math calls).

[Note: LLVM expression semantics]
- Integer `Div` truncates toward zero; `FloorDiv`/`FloorMod` round toward negative infinity
  (the remainder takes the divisor's sign). A zero divisor gives 0 and `INT_MIN / -1` wraps,
  as numpy does: a divisor that is not a known constant is guarded, because x86 traps on both.
- Float comparisons follow IEEE 754: `==`, `<`, `<=`, `>`, `>=` are ordered (false when
  either side is NaN), `!=` is unordered (true when either side is NaN), as in C and numpy.
- Float `Min`/`Max` propagate NaN (llvm.minimum/maximum, numpy's np.minimum/np.maximum).
  Under fast-math they become llvm.minnum/maxnum, which a CPU does in one instruction.
- Casts float -> int truncate toward zero and saturate (NaN -> 0, out of range -> the type's
  limit: llvm.fptosi.sat); float -> bool is `x != 0` (so NaN is True); bool -> number is 0/1.
- Index arithmetic (load/store indices, loop bounds) is emitted with `nsw`: an index that
  overflows int64 is not a meaningful buffer index. Value arithmetic wraps, as in numpy.
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.backends.llvm import intrinsics
from ember.ir import expr as E
from ember.ir import loop as L

_MAX_FACTOR = 1 << 12


def known_factor(e: E.Expr, var_factors: dict[E.Var, int]) -> int:
    """The largest power of two known to divide the integer `e` (for its first lane)."""
    if isinstance(e, E.IntImm):
        value = abs(e.value)
        return _MAX_FACTOR if value == 0 else min(value & -value, _MAX_FACTOR)
    if isinstance(e, E.Var):
        return var_factors.get(e, 1)
    if isinstance(e, (E.Add, E.Sub)):
        return min(known_factor(e.a, var_factors), known_factor(e.b, var_factors))
    if isinstance(e, E.Mul):
        return min(known_factor(e.a, var_factors) * known_factor(e.b, var_factors),
                   _MAX_FACTOR)
    if isinstance(e, E.Ramp):
        return known_factor(e.base, var_factors)
    if isinstance(e, E.Broadcast):
        return known_factor(e.value, var_factors)
    if isinstance(e, E.Cast) and E.is_int_dtype(e.value.dtype):
        return known_factor(e.value, var_factors)
    return 1


def flat_index(buffer: L.Buffer, indices: tuple[E.Expr, ...]) -> E.Expr:
    """One row-major index for `indices` (flattened IR has one already)."""
    if len(indices) == 1:
        return indices[0]
    if len(indices) != len(buffer.shape):
        raise ValueError(f"{len(indices)} indices for the {len(buffer.shape)}-d buffer "
                         f"{buffer.name}")
    lanes = max(E.lanes_of(i.dtype) for i in indices)

    def widen(x: E.Expr) -> E.Expr:
        x = E.cast(E.INDEX, x) if E.element_of(x.dtype) != E.INDEX else x
        return E.Broadcast(x, lanes) if lanes > 1 and E.lanes_of(x.dtype) == 1 else x

    total: E.Expr = widen(indices[0])
    for index, extent in zip(indices[1:], buffer.shape[1:]):
        total = widen(total) * widen(E.const(extent, E.INDEX)) + widen(index)
    return total


class ExprEmitter:
    """Mixin of the function emitter (codegen.FunctionEmitter) that translates expressions.

    The emitter provides: `builder`, `env` (Var -> LLVM value), `var_factors`, `buffers`
    (name -> BufferSlot), `fast` (fast-math flags, empty when strict), `index_mode`,
    `declare(name, function_type)` and `error(message, node)`.
    """

    builder: ir.IRBuilder
    env: dict[E.Var, ir.Value]
    var_factors: dict[E.Var, int]
    buffers: dict[str, Any]
    fast: tuple[str, ...]
    index_mode: bool

    # ------------------------------------------------------------------ entry points

    def expr(self, e: E.Expr) -> ir.Value:
        method = getattr(self, f"_emit_{type(e).__name__}", None)
        if method is None:
            raise self.error(f"unsupported expression node {type(e).__name__}", e)
        return method(e)

    def index(self, e: E.Expr) -> ir.Value:
        """An index expression as i64 (or <n x i64>), with no-signed-wrap arithmetic."""
        saved, self.index_mode = self.index_mode, True
        try:
            value = self.expr(e)
        finally:
            self.index_mode = saved
        if E.element_of(e.dtype) != E.INDEX:
            value = self.convert(value, e.dtype, E.with_lanes(E.INDEX, E.lanes_of(e.dtype)))
        return value

    def condition(self, e: E.Expr) -> ir.Value:
        """A scalar condition as i1."""
        if E.lanes_of(e.dtype) != 1:
            raise self.error(f"a branch condition must be a scalar, got {e.dtype}", e)
        value = self.expr(e)
        return value if T.is_bool(e.dtype) else self.convert(value, e.dtype, "bool")

    # ------------------------------------------------------------------ leaves

    def _emit_Var(self, e: E.Var) -> ir.Value:
        try:
            return self.env[e]
        except KeyError:
            raise self.error(f"variable {e.name} ({e.dtype}) is not defined here", e) from None

    def _emit_IntImm(self, e: E.IntImm) -> ir.Value:
        return T.constant(e.dtype, e.value)

    def _emit_FloatImm(self, e: E.FloatImm) -> ir.Value:
        return T.constant(e.dtype, e.value)

    def _emit_Let(self, e: E.Let) -> ir.Value:
        value = self.expr(e.value)
        with self.binding(e.var, value, e.value):
            return self.expr(e.body)

    # ------------------------------------------------------------------ arithmetic

    def _operands(self, e: E.BinaryOp) -> tuple[ir.Value, ir.Value]:
        if e.a.dtype != e.b.dtype:
            raise self.error(f"operands of {type(e).__name__} have different dtypes "
                             f"({e.a.dtype} and {e.b.dtype})", e)
        return self.expr(e.a), self.expr(e.b)

    def _int_flags(self) -> tuple[str, ...]:
        return ("nsw",) if self.index_mode else ()

    def _arith(self, e: E.BinaryOp, float_op: str, int_op: str) -> ir.Value:
        a, b = self._operands(e)
        if T.is_float(e.dtype):
            return getattr(self.builder, float_op)(a, b, flags=self.fast)
        if T.is_bool(e.dtype):
            raise self.error(f"{type(e).__name__} of bools; cast them to an integer first", e)
        return getattr(self.builder, int_op)(a, b, flags=self._int_flags())

    def _emit_Add(self, e: E.Add) -> ir.Value:
        return self._arith(e, "fadd", "add")

    def _emit_Sub(self, e: E.Sub) -> ir.Value:
        return self._arith(e, "fsub", "sub")

    def _emit_Mul(self, e: E.Mul) -> ir.Value:
        return self._arith(e, "fmul", "mul")

    def _emit_Div(self, e: E.Div) -> ir.Value:
        a, b = self._operands(e)
        if T.is_float(e.dtype):
            return self.builder.fdiv(a, b, flags=self.fast)
        return self._int_division(e, a, b, floor=False, remainder=False)

    def _emit_FloorDiv(self, e: E.FloorDiv) -> ir.Value:
        a, b = self._operands(e)
        if T.is_float(e.dtype):
            quotient = self.builder.fdiv(a, b, flags=self.fast)
            return intrinsics.call_llvm(self, "llvm.floor", [quotient], self.fast)
        return self._int_division(e, a, b, floor=True, remainder=False)

    def _emit_FloorMod(self, e: E.FloorMod) -> ir.Value:
        a, b = self._operands(e)
        if T.is_float(e.dtype):
            # fmod, then move a nonzero remainder into the divisor's sign (Python's %)
            r = self.builder.frem(a, b, flags=self.fast)
            zero = T.constant(e.dtype, 0.0)
            r_negative = self.builder.fcmp_ordered("<", r, zero)
            b_negative = self.builder.fcmp_ordered("<", b, zero)
            r_nonzero = self.builder.fcmp_ordered("!=", r, zero)
            fix = self.builder.and_(r_nonzero, self.builder.xor(r_negative, b_negative))
            return self.builder.select(fix, self.builder.fadd(r, b, flags=self.fast), r)
        return self._int_division(e, a, b, floor=True, remainder=True)

    def _int_division(self, e: E.BinaryOp, a: ir.Value, b: ir.Value, floor: bool,
                      remainder: bool) -> ir.Value:
        dtype = e.dtype
        if T.is_bool(dtype):
            raise self.error(f"{type(e).__name__} of bools; cast them to an integer first", e)
        bld = self.builder
        unsigned = T.is_unsigned(dtype)
        divisor = _constant_value(e.b)
        zero, one = T.constant(dtype, 0), T.constant(dtype, 1)
        minus_one = T.constant(dtype, -1)
        guard_zero = divisor is None or divisor == 0
        guard_minus_one = not unsigned and (divisor is None or divisor == -1)
        safe_b = b
        is_zero = is_minus_one = None
        if guard_zero:
            is_zero = bld.icmp_unsigned("==", b, zero)
            safe_b = bld.select(is_zero, one, safe_b)
        if guard_minus_one:
            is_minus_one = bld.icmp_signed("==", b, minus_one)
            safe_b = bld.select(is_minus_one, one, safe_b)
        if unsigned:
            result = bld.urem(a, safe_b) if remainder else bld.udiv(a, safe_b)
        else:
            q = bld.sdiv(a, safe_b)
            r = bld.srem(a, safe_b)
            if floor:
                # round toward -inf: a nonzero remainder whose sign differs from the divisor's
                r_nonzero = bld.icmp_signed("!=", r, zero)
                signs_differ = bld.icmp_signed("<", bld.xor(r, safe_b), zero)
                adjust = bld.and_(r_nonzero, signs_differ)
                if remainder:
                    r = bld.select(adjust, bld.add(r, safe_b), r)
                else:
                    q = bld.sub(q, bld.zext(adjust, q.type))
            result = r if remainder else q
            if is_minus_one is not None:
                # x / -1 == -x (wrapping, as numpy); x % -1 == 0
                negated = zero if remainder else bld.sub(zero, a)
                result = bld.select(is_minus_one, negated, result)
        if is_zero is not None:
            result = bld.select(is_zero, zero, result)
        return result

    def _min_max(self, e: E.BinaryOp, which: str) -> ir.Value:
        a, b = self._operands(e)
        dtype = e.dtype
        if T.is_float(dtype):
            name = f"llvm.{which}num" if self.fast else f"llvm.{which}imum"
            return intrinsics.call_llvm(self, name, [a, b], self.fast)
        if T.is_bool(dtype):
            return self.builder.and_(a, b) if which == "min" else self.builder.or_(a, b)
        prefix = "u" if T.is_unsigned(dtype) else "s"
        return intrinsics.call_llvm(self, f"llvm.{prefix}{which}", [a, b])

    def _emit_Min(self, e: E.Min) -> ir.Value:
        return self._min_max(e, "min")

    def _emit_Max(self, e: E.Max) -> ir.Value:
        return self._min_max(e, "max")

    # ------------------------------------------------------------------ logic

    def _compare(self, e: E.CompareOp, op: str) -> ir.Value:
        a, b = self._operands(e)
        dtype = e.a.dtype
        if T.is_float(dtype):
            if op == "!=":
                return self.builder.fcmp_unordered(op, a, b, flags=self.fast)
            return self.builder.fcmp_ordered(op, a, b, flags=self.fast)
        if T.is_unsigned(dtype):
            return self.builder.icmp_unsigned(op, a, b)
        return self.builder.icmp_signed(op, a, b)

    def _emit_EQ(self, e: E.EQ) -> ir.Value:
        return self._compare(e, "==")

    def _emit_NE(self, e: E.NE) -> ir.Value:
        return self._compare(e, "!=")

    def _emit_LT(self, e: E.LT) -> ir.Value:
        return self._compare(e, "<")

    def _emit_LE(self, e: E.LE) -> ir.Value:
        return self._compare(e, "<=")

    def _emit_GT(self, e: E.GT) -> ir.Value:
        return self._compare(e, ">")

    def _emit_GE(self, e: E.GE) -> ir.Value:
        return self._compare(e, ">=")

    def _logic(self, e: E.BinaryOp, op: str) -> ir.Value:
        a, b = self._operands(e)
        if T.is_float(e.dtype):
            raise self.error(f"{type(e).__name__} of floats; compare them first", e)
        return getattr(self.builder, op)(a, b)  # bitwise on integers, logical on bools

    def _emit_And(self, e: E.And) -> ir.Value:
        return self._logic(e, "and_")

    def _emit_Or(self, e: E.Or) -> ir.Value:
        return self._logic(e, "or_")

    def _emit_Not(self, e: E.Not) -> ir.Value:
        if T.is_float(e.dtype):
            raise self.error("Not of a float; compare it first", e)
        value = self.expr(e.a)
        return self.builder.xor(value, T.constant(e.dtype, -1))

    def _emit_Select(self, e: E.Select) -> ir.Value:
        if e.true_value.dtype != e.false_value.dtype:
            raise self.error(f"select branches differ in dtype ({e.true_value.dtype} and "
                             f"{e.false_value.dtype})", e)
        condition = self.expr(e.condition)
        if not T.is_bool(e.condition.dtype):
            condition = self.convert(condition, e.condition.dtype,
                                     E.with_lanes("bool", E.lanes_of(e.condition.dtype)))
        return self.builder.select(condition, self.expr(e.true_value),
                                   self.expr(e.false_value))

    # ------------------------------------------------------------------ casts

    def _emit_Cast(self, e: E.Cast) -> ir.Value:
        if E.lanes_of(e.dtype) != E.lanes_of(e.value.dtype):
            raise self.error(f"cast changes the lanes ({e.value.dtype} -> {e.dtype})", e)
        return self.convert(self.expr(e.value), e.value.dtype, e.dtype)

    def convert(self, value: ir.Value, source: str, target: str) -> ir.Value:
        """`value` of dtype `source` as dtype `target` (same lanes); see the note above."""
        if E.element_of(source) == E.element_of(target):
            return value
        bld = self.builder
        to_type = T.register_type(target)
        if T.is_bool(target):
            zero = T.constant(source, 0)
            if T.is_float(source):
                return bld.fcmp_unordered("!=", value, zero)
            return bld.icmp_unsigned("!=", value, zero)
        if T.is_float(source) and T.is_float(target):
            from_bits, to_bits = _float_bits(source), _float_bits(target)
            if from_bits == 64 and to_bits == 16:
                value = self._double_to_float_round_to_odd(value, E.lanes_of(source))
                return bld.fptrunc(value, to_type)
            if from_bits == to_bits:  # float16 <-> bfloat16 goes through float32
                value = bld.fpext(value, T.register_type(E.with_lanes("float32",
                                                                      E.lanes_of(source))))
                return bld.fptrunc(value, to_type)
            return bld.fpext(value, to_type) if to_bits > from_bits else \
                bld.fptrunc(value, to_type)
        if T.is_float(target):
            return bld.uitofp(value, to_type) if T.is_unsigned(source) else \
                bld.sitofp(value, to_type)
        if T.is_float(source):
            if _float_bits(source) == 16:
                value = bld.fpext(value, T.register_type(E.with_lanes("float32",
                                                                      E.lanes_of(source))))
            name = "llvm.fptoui.sat" if T.is_unsigned(target) else "llvm.fptosi.sat"
            return intrinsics.call_llvm(self, name, [value], result_type=to_type)
        from_width, to_width = value.type, to_type
        from_bits = _int_bits(from_width)
        to_bits = _int_bits(to_width)
        if to_bits < from_bits:
            return bld.trunc(value, to_type)
        if to_bits > from_bits:
            return bld.zext(value, to_type) if T.is_unsigned(source) else \
                bld.sext(value, to_type)
        return value  # same width, other signedness: LLVM integers are signless

    def _double_to_float_round_to_odd(self, value: ir.Value, lanes: int) -> ir.Value:
        """double -> float rounding to odd: an inexact result takes the float just toward
        zero with its last bit set. Rounding that to a half or bfloat is then exactly the
        correct rounding of the double (float keeps more than 2 extra bits), with no
        double-rounding error and no libcall (LLVM calls __truncdfbf2 for a direct fptrunc,
        which a process may not have)."""
        bld = self.builder
        float_dtype = E.with_lanes("float32", lanes)
        int_dtype = E.with_lanes("int32", lanes)
        nearest = bld.fptrunc(value, T.register_type(float_dtype))
        back = bld.fpext(nearest, value.type)
        inexact = bld.fcmp_ordered("!=", back, value)  # false for NaN and exact values
        away = bld.fcmp_ordered(">", intrinsics.call_llvm(self, "llvm.fabs", [back]),
                                intrinsics.call_llvm(self, "llvm.fabs", [value]))
        bits = bld.bitcast(nearest, T.register_type(int_dtype))
        toward_zero = bld.select(away, bld.sub(bits, T.constant(int_dtype, 1)), bits)
        odd = bld.or_(toward_zero, T.constant(int_dtype, 1))
        bits = bld.select(inexact, odd, bits)
        return bld.bitcast(bits, T.register_type(float_dtype))

    # ------------------------------------------------------------------ intrinsics

    def _emit_Call(self, e: E.Call) -> ir.Value:
        return intrinsics.emit_call(self, e)

    # ------------------------------------------------------------------ vectors

    def splat(self, value: ir.Value, lanes: int) -> ir.Value:
        vector_type = ir.VectorType(value.type, lanes)
        if isinstance(value, ir.Constant):
            return ir.Constant(vector_type, [value] * lanes)
        single = self.builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                             T.I32(0))
        mask = ir.Constant(ir.VectorType(T.I32, lanes), [0] * lanes)
        return self.builder.shuffle_vector(single, ir.Constant(vector_type, ir.Undefined),
                                           mask)

    def _emit_Broadcast(self, e: E.Broadcast) -> ir.Value:
        if E.lanes_of(e.value.dtype) != 1:
            raise self.error("broadcast of a vector", e)
        return self.splat(self.expr(e.value), e.lanes)

    def _emit_Ramp(self, e: E.Ramp) -> ir.Value:
        if T.is_float(e.dtype) or T.is_bool(e.dtype):
            raise self.error(f"ramp of {e.base.dtype}; ramps are integer index vectors", e)
        base, stride = _constant_value(e.base), _constant_value(e.stride)
        lanes_dtype = e.dtype
        if base is not None and stride is not None:
            return T.constant_vector(lanes_dtype, [base + stride * k for k in range(e.lanes)])
        offsets = T.constant_vector(lanes_dtype, list(range(e.lanes)))
        flags = self._int_flags()
        if stride != 1:
            offsets = self.builder.mul(self.splat(self.expr(e.stride), e.lanes), offsets,
                                       flags=flags)
        return self.builder.add(self.splat(self.expr(e.base), e.lanes), offsets, flags=flags)

    # ------------------------------------------------------------------ memory

    def _emit_Load(self, e: L.Load) -> ir.Value:
        return self.memory_access(e.buffer, e.indices, e.predicate, None, e)

    def memory_access(self, buffer: L.Buffer, indices: tuple[E.Expr, ...],
                      predicate: E.Expr | None, value: ir.Value | None,
                      node: Any) -> ir.Value | None:
        """Load (value None) or store `value` at `buffer[indices]` where `predicate` holds.

        Contiguous vectors (Ramp with stride 1) are plain vector loads/stores (masked with a
        vector predicate); other vector indices gather/scatter; scalars branch on a predicate.
        """
        slot = self.buffer_slot(buffer, node)
        try:
            index = flat_index(slot.buffer, indices)
        except ValueError as error:
            raise self.error(str(error), node) from None
        lanes = E.lanes_of(index.dtype)
        dtype = E.with_lanes(slot.buffer.dtype, lanes)
        element_type = T.memory_type(slot.buffer.dtype)
        itemsize = T.itemsize(slot.buffer.dtype)
        factor = known_factor(index, self.var_factors)
        align = max(itemsize, min(slot.align, itemsize * factor))
        if value is not None:
            value = self._to_memory(value, dtype, node)
        mask = None
        if predicate is not None:
            mask = self.expr(predicate)
            if E.lanes_of(predicate.dtype) != lanes:
                if E.lanes_of(predicate.dtype) != 1:
                    raise self.error(f"predicate has {E.lanes_of(predicate.dtype)} lanes, "
                                     f"the access {lanes}", node)
                if lanes > 1:
                    mask = self.splat(mask, lanes)
        bld = self.builder
        if lanes == 1:
            pointer = bld.gep(slot.pointer, [self.index(index)], inbounds=True,
                              source_etype=element_type)
            if mask is None:
                loaded = self._scalar_access(pointer, element_type, align, value)
            else:
                loaded = self._guarded(mask, lambda: self._scalar_access(
                    pointer, element_type, align, value), element_type if value is None
                    else None)
        elif isinstance(index, E.Ramp) and _constant_value(index.stride) == 1:
            pointer = bld.gep(slot.pointer, [self.index(index.base)], inbounds=True,
                              source_etype=element_type)
            vector_type = ir.VectorType(element_type, lanes)
            loaded = intrinsics.vector_access(self, pointer, vector_type, align, mask, value)
        elif _same_in_every_lane(index) and value is None and mask is None:
            first = index.value if isinstance(index, E.Broadcast) else index.base
            pointer = bld.gep(slot.pointer, [self.index(first)], inbounds=True,
                              source_etype=element_type)
            loaded = self.splat(bld.load(pointer, align=align, typ=element_type), lanes)
        else:
            offsets = self.index(index)
            pointers = bld.gep(slot.pointer, [offsets], inbounds=True, source_etype=element_type)
            pointers.type = ir.VectorType(T.PTR, lanes)  # llvmlite types a vector GEP as scalar
            vector_type = ir.VectorType(element_type, lanes)
            loaded = intrinsics.gather_scatter(self, pointers, vector_type, itemsize, mask,
                                               value)
        if value is not None:
            return None
        return self._from_memory(loaded, dtype)

    def _scalar_access(self, pointer: ir.Value, element_type: ir.Type, align: int,
                       value: ir.Value | None) -> ir.Value | None:
        if value is None:
            return self.builder.load(pointer, align=align, typ=element_type)
        self.builder.store(value, pointer, align=align)
        return None

    def _guarded(self, condition: ir.Value, emit, result_type: ir.Type | None) -> ir.Value:
        """Run `emit()` only where `condition` holds; a load yields zero elsewhere."""
        bld = self.builder
        before = bld.block
        then_block = bld.append_basic_block("guarded")
        done = bld.append_basic_block("guarded.end")
        bld.cbranch(condition, then_block, done)
        bld.position_at_end(then_block)
        result = emit()
        then_end = bld.block
        bld.branch(done)
        bld.position_at_end(done)
        if result_type is None:
            return None
        phi = bld.phi(result_type)
        phi.add_incoming(result, then_end)
        phi.add_incoming(ir.Constant(result_type, None), before)
        return phi

    def _to_memory(self, value: ir.Value, dtype: str, node: Any) -> ir.Value:
        if isinstance(value.type, ir.VectorType) != (E.lanes_of(dtype) > 1):
            if E.lanes_of(dtype) > 1 and not isinstance(value.type, ir.VectorType):
                value = self.splat(value, E.lanes_of(dtype))
            else:
                raise self.error(f"a {value.type} value stored to {E.lanes_of(dtype)} lanes",
                                 node)
        if T.is_bool(dtype):
            return self.builder.zext(value, T.memory_type(dtype))
        return value

    def _from_memory(self, value: ir.Value, dtype: str) -> ir.Value:
        if T.is_bool(dtype):
            return self.builder.icmp_unsigned("!=", value, ir.Constant(value.type, None))
        return value


def _constant_value(e: E.Expr) -> int | float | None:
    if isinstance(e, (E.IntImm, E.FloatImm)):
        return e.value
    if isinstance(e, E.Broadcast):
        return _constant_value(e.value)
    return None


def _same_in_every_lane(index: E.Expr) -> bool:
    """A vector index whose lanes are all equal (one scalar load, splatted)."""
    if isinstance(index, E.Broadcast):
        return True
    return isinstance(index, E.Ramp) and _constant_value(index.stride) == 0


def _float_bits(dtype: str) -> int:
    return 8 * T.itemsize(dtype)


def _int_bits(t: ir.Type) -> int:
    return (t.element if isinstance(t, ir.VectorType) else t).width


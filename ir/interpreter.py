"""A loop-IR interpreter: runs a PrimFunc on numpy arrays, slowly and obviously.

It is the oracle for lowering and loop-IR pass tests (a pass must not change what a function
computes), so it favours clarity over speed: use it on small shapes. Vector expressions (Ramp,
Broadcast) evaluate to numpy arrays; scalars are numpy scalars of the expression's dtype, so
float32 arithmetic rounds as compiled code does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.graph import numpy_dtype

_MATH = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "fabs": np.abs, "floor": np.floor, "ceil": np.ceil,
    "round": np.round, "trunc": np.trunc, "log1p": np.log1p, "expm1": np.expm1,
    "isnan": np.isnan, "isinf": np.isinf, "pow": np.power, "fmod": np.fmod,
    "atan2": np.arctan2,
}


def _np(dtype: str) -> np.dtype:
    return numpy_dtype(E.element_of(dtype))


class _Interpreter:
    def __init__(self, buffers: dict[str, np.ndarray]):
        self.buffers = buffers
        self.env: dict[E.Var, Any] = {}

    # -- expressions

    def eval(self, e: E.Expr) -> Any:
        method = getattr(self, f"_{type(e).__name__}", None)
        if method is not None:
            return method(e)
        if isinstance(e, E.BinaryOp):
            return self._binary(e)
        raise NotImplementedError(f"the interpreter cannot evaluate {type(e).__name__}: {e}")

    def _Var(self, e: E.Var) -> Any:
        if e not in self.env:
            raise KeyError(f"variable {e.name} is not defined here")
        return self.env[e]

    def _IntImm(self, e: E.IntImm) -> Any:
        return _np(e.dtype).type(e.value)

    def _FloatImm(self, e: E.FloatImm) -> Any:
        return _np(e.dtype).type(e.value)

    def _binary(self, e: E.BinaryOp) -> Any:
        a, b = self.eval(e.a), self.eval(e.b)
        integer = E.is_int_dtype(e.a.dtype)
        with np.errstate(all="ignore"):
            match e:
                case E.Add():
                    return a + b
                case E.Sub():
                    return a - b
                case E.Mul():
                    return a * b
                case E.Div() if integer:
                    # C division truncates toward zero; in integers (floats lose bits past 2**53)
                    quotient = a // b
                    return quotient + ((a % b != 0) & ((a < 0) != (b < 0)))
                case E.Div():
                    return a / b
                case E.FloorDiv():
                    return a // b
                case E.FloorMod():
                    return a % b
                case E.Min():
                    return np.minimum(a, b)
                case E.Max():
                    return np.maximum(a, b)
                case E.EQ():
                    return np.equal(a, b)
                case E.NE():
                    return np.not_equal(a, b)
                case E.LT():
                    return np.less(a, b)
                case E.LE():
                    return np.less_equal(a, b)
                case E.GT():
                    return np.greater(a, b)
                case E.GE():
                    return np.greater_equal(a, b)
                case E.And():
                    return np.logical_and(a, b)
                case E.Or():
                    return np.logical_or(a, b)
        raise NotImplementedError(type(e).__name__)

    def _Not(self, e: E.Not) -> Any:
        return np.logical_not(self.eval(e.a))

    def _Select(self, e: E.Select) -> Any:
        return np.where(self.eval(e.condition), self.eval(e.true_value),
                        self.eval(e.false_value)).astype(_np(e.dtype))[()]

    def _Cast(self, e: E.Cast) -> Any:
        with np.errstate(all="ignore"):
            return np.asarray(self.eval(e.value)).astype(_np(e.dtype))[()]

    def _Call(self, e: E.Call) -> Any:
        args = [self.eval(a) for a in e.args]
        with np.errstate(all="ignore"):
            if e.name == "erf":
                out = np.vectorize(math.erf)(*args)
            elif e.name == "sigmoid":
                out = 1 / (1 + np.exp(-args[0]))
            elif e.name == "rsqrt":
                out = 1 / np.sqrt(args[0])
            elif e.name == "fma":
                out = args[0] * args[1] + args[2]
            else:
                out = _MATH[e.name](*args)
        return np.asarray(out).astype(_np(e.dtype))[()]

    def _Let(self, e: E.Let) -> Any:
        self.env[e.var] = self.eval(e.value)
        return self.eval(e.body)

    def _Ramp(self, e: E.Ramp) -> Any:
        base, stride = self.eval(e.base), self.eval(e.stride)
        return base + stride * np.arange(e.lanes, dtype=_np(e.base.dtype))

    def _Broadcast(self, e: E.Broadcast) -> Any:
        return np.full(e.lanes, self.eval(e.value), dtype=_np(e.value.dtype))

    def _Load(self, e: L.Load) -> Any:
        array = self.buffers[e.buffer.name]
        index = tuple(np.asarray(self.eval(i)).astype(np.int64) for i in e.indices)
        if e.predicate is not None:
            mask = np.asarray(self.eval(e.predicate))
            index = tuple(np.where(mask, i, 0) for i in index)
        return array[index]

    # -- statements

    def run(self, s: L.Stmt) -> None:
        match s:
            case L.SeqStmt():
                for child in s.stmts:
                    self.run(child)
            case L.For():
                start, extent = int(self.eval(s.min)), int(self.eval(s.extent))
                for value in range(start, start + extent):
                    self.env[s.var] = np.int64(value)
                    self.run(s.body)
            case L.Store():
                array = self.buffers[s.buffer.name]
                index = tuple(np.asarray(self.eval(i)).astype(np.int64) for i in s.indices)
                value = self.eval(s.value)
                if s.predicate is not None:
                    mask = np.asarray(self.eval(s.predicate))
                    index = tuple(np.asarray(i)[mask] for i in index)
                    value = np.asarray(value)[mask] if np.ndim(value) else value
                array[index] = value
            case L.IfThenElse():
                if bool(self.eval(s.condition)):
                    self.run(s.then_case)
                elif s.else_case is not None:
                    self.run(s.else_case)
            case L.LetStmt():
                self.env[s.var] = self.eval(s.value)
                self.run(s.body)
            case L.Allocate():
                shape = tuple(int(self.eval(E.const(d))) for d in s.buffer.shape)
                self.buffers[s.buffer.name] = np.zeros(shape, _np(s.buffer.dtype))
                self.run(s.body)
                del self.buffers[s.buffer.name]
            case L.AttrStmt():
                self.run(s.body)
            case L.Evaluate():
                self.eval(s.value)
            case _:
                raise NotImplementedError(f"the interpreter cannot run {type(s).__name__}")


def run_primfunc(func: L.PrimFunc, arrays: Sequence[np.ndarray]) -> None:
    """Run `func` with `arrays` bound to its params in order; output arrays are written in
    place. Arrays are viewed with each param's shape (flat after storage flattening)."""
    if len(arrays) != len(func.params):
        raise ValueError(f"{func.name} takes {len(func.params)} buffers, got {len(arrays)}")
    buffers = {}
    for param, array in zip(func.params, arrays):
        shape = tuple(int(E.const(d).value) for d in param.shape)
        buffers[param.name] = array.reshape(shape)
    _Interpreter(buffers).run(func.body)

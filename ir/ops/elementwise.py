"""Elementwise and broadcasting ops: unary math, binary arithmetic, comparisons and logic.

Unary ops are defined from a table (name, numpy function, accepted dtypes); binary ops
broadcast numpy-style and keep their inputs' dtype (comparisons give bool).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ember.ir.graph import TensorType, is_float
from ember.ir.ops.registry import Pattern, broadcast_shapes, define_op, require_dtype, same_dtype


def _define_unary(name: str, fn: Callable[[np.ndarray], np.ndarray],
                  accepts: Callable[[str], bool] = is_float) -> None:
    op = define_op(name, Pattern.ELEMWISE)

    @op.infer
    def _(attrs, x: TensorType) -> TensorType:
        require_dtype(name, x, accepts)
        return x

    @op.reference
    def _(attrs, x: np.ndarray) -> np.ndarray:
        return fn(x).astype(x.dtype, copy=False)


_define_unary("relu", lambda x: np.maximum(x, np.zeros((), x.dtype)),
              accepts=lambda d: d != "bool" and d != "string")
_define_unary("sigmoid", lambda x: 1 / (1 + np.exp(-x)))
_define_unary("exp", np.exp)


def _define_binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   accepts: Callable[[str], bool] = lambda d: d not in ("bool", "string")) -> None:
    op = define_op(name, Pattern.BROADCAST, num_inputs=2)

    @op.infer
    def _(attrs, a: TensorType, b: TensorType) -> TensorType:
        dtype = same_dtype(name, a, b)
        require_dtype(name, a, accepts)
        return TensorType(broadcast_shapes(name, a.shape, b.shape), dtype)

    @op.reference
    def _(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(fn(a, b)).astype(a.dtype, copy=False)


_define_binary("add", np.add)
_define_binary("sub", np.subtract)
_define_binary("mul", np.multiply)

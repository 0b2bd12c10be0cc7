"""Tensor and shape ops: identity, reshape, transpose, concat, split, slice, gather, ..."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import TensorType
from ember.ir.ops.registry import Pattern, define_op

identity = define_op("identity", Pattern.INJECTIVE, doc="A copy of its input.")


@identity.infer
def _(attrs, x: TensorType) -> TensorType:
    return x


@identity.reference
def _(attrs, x: np.ndarray) -> np.ndarray:
    return x.copy()

"""`dense_packed`: a matrix product with a constant weight pre-packed into column panels.

The CPU weight-packing pass (compiler/passes/pack_weights.py) rewrites `matmul(x, B)` with a
constant float32 B (K, N) into `dense_packed(x, W)`, W being B laid out as panels of `nb`
columns each, panel after panel, every panel's K rows of `nb` contiguous floats:

    W[p, k, c] = B[k, p * nb + c]    (zero where p * nb + c >= N)    W: (ceil(N / nb), K, nb)

so a kernel computing one panel of output columns streams its weights from one contiguous
block (K * nb floats) instead of K rows N floats apart: no TLB misses, every prefetched cache
line used, and one panel stays in L1/L2 while the rows of x go by. The zero tail pads the last
panel to full width; the output keeps N columns (attribute `n`).

x has any rank >= 1: its last axis is K, the others are kept (rows, batch axes), as numpy's
matmul does with a 2-D second operand.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import TensorType
from ember.ir.ops.registry import REQUIRED, Pattern, define_op, same_dtype

#: dtypes the packed dense computes in (the pass packs float32 weights only)
DENSE_DTYPES = ("float32",)


def pack_dense_weight(b: np.ndarray, nb: int) -> np.ndarray:
    """A (K, N) weight as (ceil(N / nb), K, nb) column panels, the tail zero-padded."""
    if b.ndim != 2 or nb < 1:
        raise ShapeError(f"pack_dense_weight: needs a 2-D weight and a positive panel width, "
                         f"got shape {b.shape} and nb={nb}")
    k, n = b.shape
    panels = -(-n // nb)
    padded = np.zeros((k, panels * nb), dtype=b.dtype)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, panels, nb).transpose(1, 0, 2))


def unpack_dense_weight(w: np.ndarray, n: int) -> np.ndarray:
    """The (K, N) weight a panel-packed (ceil(N / nb), K, nb) array holds."""
    panels, k, nb = w.shape
    return np.ascontiguousarray(w.transpose(1, 0, 2).reshape(k, panels * nb)[:, :n])


dense_packed = define_op(
    "dense_packed", Pattern.OUT_ELEMWISE_FUSABLE, attrs={"n": REQUIRED}, num_inputs=2,
    doc="x @ B with B (K, N) given packed as column panels W (ceil(N/nb), K, nb), "
        "W[p, k, c] = B[k, p*nb + c]; `n` is N. x's last axis is K; the others are kept.",
)


@dense_packed.infer
def _(attrs, x: TensorType, w: TensorType) -> TensorType:
    dtype = same_dtype("dense_packed", x, w)
    if dtype not in DENSE_DTYPES:
        raise ShapeError(f"dense_packed: dtype {dtype} is not supported; it computes in "
                         f"{', '.join(DENSE_DTYPES)}")
    if x.rank < 1 or w.rank != 3:
        raise ShapeError(f"dense_packed: needs x of rank >= 1 and a packed weight of rank 3 "
                         f"(panels, K, nb), got {x.shape} and {w.shape}")
    panels, k, nb = w.shape
    if x.shape[-1] != k:
        raise ShapeError(f"dense_packed: x {x.shape} has {x.shape[-1]} columns but the packed "
                         f"weight {w.shape} has K = {k}")
    n = attrs.n
    if not (isinstance(n, int) and nb >= 1 and (panels - 1) * nb < n <= panels * nb):
        raise ShapeError(f"dense_packed: n={n} does not fit {panels} panels of {nb} columns "
                         f"(weight {w.shape}); it must lie in ({(panels - 1) * nb}, "
                         f"{panels * nb}]")
    return TensorType((*x.shape[:-1], n), dtype)


@dense_packed.reference
def _(attrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.matmul(x, unpack_dense_weight(w, attrs.n)).astype(x.dtype, copy=False)

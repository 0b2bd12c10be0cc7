"""Target-independent tensor-expression computes, one per graph-IR op (importing registers)."""

from ember.compiler.ops.compute import (  # noqa: F401
    broadcast,
    dense,
    elementwise,
    injective,
    layout,
    linalg,
    nn,
    norm,
    pool,
    reduce,
    resize,
    sampling,
    scan,
)

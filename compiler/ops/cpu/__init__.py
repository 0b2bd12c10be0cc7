"""CPU schedule templates, the "cpu" family of the LLVM targets (importing registers)."""

from ember.compiler.ops.cpu import (  # noqa: F401
    conv,
    conv_nchwc,
    dense,
    injective,
    linalg,
    matmul,
    norm,
    pool,
    reduce,
    scan,
)

"""CPU schedule templates, the "cpu" family of the LLVM targets (importing registers)."""

from ember.compiler.ops.cpu import conv, injective, matmul, norm, pool, reduce, scan  # noqa: F401

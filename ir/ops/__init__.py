"""Graph-IR operators: the registry and the op families that register into it.

Importing this package registers every op. `get_op(name)` returns an op's `OpDef`.
"""

from ember.ir.ops import (  # noqa: F401  (registers the ops)
    broadcast,
    dense,
    elementwise,
    index,
    layout,
    linalg,
    nn,
    nn_norm,
    nn_pool,
    reduce,
    resize,
    sampling,
    tensor,
)
from ember.ir.ops.registry import REQUIRED, OpDef, Pattern, all_ops, define_op, get_op

__all__ = ["REQUIRED", "OpDef", "Pattern", "all_ops", "define_op", "get_op"]

"""The op registry: each graph-IR operator is defined once, here or in a family module.

An `OpDef` holds everything every stage needs to know about an operator:

- its attribute schema (name -> default, or `REQUIRED`);
- how many inputs it takes (optional trailing inputs may be "" in a node);
- shape and dtype inference: `infer(attrs, *input_types) -> TensorType | tuple[TensorType, ...]`;
- its fusion pattern kind (TVM's: elementwise, broadcast, injective, reduce,
  out-elementwise-fusable, opaque);
- a vectorized numpy reference: `reference(attrs, *arrays) -> ndarray | tuple[ndarray, ...]`,
  which the reference executor runs, constant folding evaluates, and every compiled kernel is
  tested against.

Definitions read like this (see `elementwise.py` for many more):

    relu = define_op("relu", Pattern.ELEMWISE)

    @relu.infer
    def _(attrs, x):
        return same_as(x, "relu", floats=True)

    @relu.reference
    def _(attrs, x):
        return np.maximum(x, 0)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import ShapeError
from ember.ir.graph import Attrs, TensorType, dtype_name


class Pattern(enum.IntEnum):
    """Fusion pattern kinds, ordered as TVM orders them (a higher kind fuses less)."""

    ELEMWISE = 0
    BROADCAST = 1
    INJECTIVE = 2
    REDUCE = 3
    OUT_ELEMWISE_FUSABLE = 4
    OPAQUE = 8


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks an attribute that has no default.
REQUIRED: Any = _Required()

InferFn = Callable[..., "TensorType | tuple[TensorType, ...]"]
ReferenceFn = Callable[..., "np.ndarray | tuple[np.ndarray, ...]"]


class OpDef:
    """The definition of one graph-IR operator. Create with `define_op`."""

    def __init__(
        self,
        name: str,
        pattern: Pattern,
        attrs: Mapping[str, Any],
        num_inputs: int | tuple[int, int | None],
        doc: str,
        foldable: bool,
    ):
        self.name = name
        self.pattern = pattern
        self.attr_schema = dict(attrs)
        self.min_inputs, self.max_inputs = (
            (num_inputs, num_inputs) if isinstance(num_inputs, int) else num_inputs
        )
        self.doc = doc
        #: False for ops whose result must not be computed at compile time (random numbers).
        self.foldable = foldable
        self._infer: InferFn | None = None
        self._reference: ReferenceFn | None = None

    # -- registration of the op's rules

    def infer(self, fn: InferFn) -> InferFn:
        self._infer = fn
        return fn

    def reference(self, fn: ReferenceFn) -> ReferenceFn:
        self._reference = fn
        return fn

    # -- use

    def make_attrs(self, given: Mapping[str, Any] | None = None) -> Attrs:
        """Attributes with defaults filled in. Raises ShapeError for unknown or missing ones."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.attr_schema))
        if unknown:
            raise ShapeError(
                f"{self.name}: unknown attribute(s) {unknown}; known: {sorted(self.attr_schema)}"
            )
        values = {}
        for key, default in self.attr_schema.items():
            value = given.get(key, default)
            if value is REQUIRED:
                raise ShapeError(f"{self.name}: attribute {key!r} is required")
            values[key] = value
        return Attrs(values)

    def check_arity(self, count: int) -> None:
        if count < self.min_inputs or (self.max_inputs is not None and count > self.max_inputs):
            expected = (
                f"{self.min_inputs}" if self.min_inputs == self.max_inputs
                else f"{self.min_inputs} to {self.max_inputs if self.max_inputs else 'any'}"
            )
            raise ShapeError(f"{self.name} takes {expected} inputs, got {count}")

    def infer_types(
        self, attrs: Attrs, input_types: Sequence[TensorType | None]
    ) -> tuple[TensorType, ...]:
        """Output types for these inputs ("" inputs are passed as None)."""
        assert self._infer is not None, f"op {self.name} has no shape inference"
        self.check_arity(len(input_types))
        result = self._infer(attrs, *input_types)
        return result if isinstance(result, tuple) else (result,)

    def evaluate(
        self, attrs: Attrs, arrays: Sequence[np.ndarray | None]
    ) -> tuple[np.ndarray, ...]:
        """Run the numpy reference. Returns arrays of the inferred dtypes."""
        assert self._reference is not None, f"op {self.name} has no reference implementation"
        result = self._reference(attrs, *arrays)
        outputs = result if isinstance(result, tuple) else (result,)
        return tuple(np.asarray(out) for out in outputs)

    def __repr__(self) -> str:
        return f"<op {self.name} ({self.pattern.name.lower()})>"


_REGISTRY: dict[str, OpDef] = {}


def define_op(
    name: str,
    pattern: Pattern,
    attrs: Mapping[str, Any] | None = None,
    num_inputs: int | tuple[int, int | None] = 1,
    doc: str = "",
    foldable: bool = True,
) -> OpDef:
    """Define and register an operator; attach its rules with `@op.infer`/`@op.reference`."""
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is defined twice")
    op = OpDef(name, pattern, attrs or {}, num_inputs, doc, foldable)
    _REGISTRY[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no graph-IR op named {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    """Every registered op by name."""
    return dict(_REGISTRY)


# ----------------------------------------------------------------------------- inference helpers
# Small helpers that shape-inference rules share; each raises ShapeError with the numbers.


def broadcast_shapes(op: str, *shapes: Sequence[int]) -> tuple[int, ...]:
    """Numpy (multidirectional) broadcasting of static shapes."""
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(
                f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast"
            )
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def normalize_axis(op: str, axis: int, rank: int) -> int:
    """`axis` in [0, rank), accepting negative axes."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def require_dtype(op: str, t: TensorType, allowed: Sequence[str] | Callable[[str], bool],
                  what: str = "input") -> None:
    ok = allowed(t.dtype) if callable(allowed) else t.dtype in allowed
    if not ok:
        raise ShapeError(f"{op}: {what} has dtype {t.dtype}, which this op does not accept")


def same_dtype(op: str, *types: TensorType) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise ShapeError(f"{op}: inputs must share one dtype, got {sorted(dtypes)}")
    return types[0].dtype


def result_dtype(array: np.ndarray) -> str:
    return dtype_name(array.dtype)

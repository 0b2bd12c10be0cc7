"""Tensor expressions: describe what an operator computes, not how.

    n, m, k = 128, 256, 64
    A = te.placeholder((n, k), "float32", name="A")
    B = te.placeholder((k, m), "float32", name="B")
    r = te.reduce_axis(k, name="r")
    C = te.compute((n, m), lambda i, j: te.sum(A[i, r] * B[r, j], axis=r), name="C")

A `Tensor` is an output of an operation: a `PlaceholderOp` (an input) or a `ComputeOp` (a
function of its axis variables, possibly a reduction). Schedules (`ember.ir.schedule`) decide
the loop structure; lowering (`ember.ir.lower`) turns both into loop IR.

Variables are compared by name, so names must be unique within one compute: a compute's axis
names come from its lambda's parameter names, and lowering gives every loop a fresh name.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ember.ir.expr import (
    INDEX,
    Expr,
    Var,
    add,
    const,
    max_,
    max_value,
    min_,
    min_value,
    mul,
)
from ember.ir.visitor import collect

# ----------------------------------------------------------------------------- iteration


@dataclasses.dataclass(frozen=True, eq=False)
class Range:
    """The half-open interval [min, min + extent)."""

    min: Expr
    extent: Expr

    @staticmethod
    def of(value: Any) -> Range:
        """`n` -> [0, n); `(a, b)` -> [a, b); a Range stays itself."""
        if isinstance(value, Range):
            return value
        if isinstance(value, (tuple, list)):
            lo, hi = const(value[0]), const(value[1])
            return Range(lo, const(hi) - lo)
        return Range(const(0), const(value))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Range) and (self.min, self.extent) == (other.min, other.extent)

    def __hash__(self) -> int:
        return hash((self.min, self.extent))


class IterKind(enum.Enum):
    DATA_PAR = "data_par"
    REDUCE = "reduce"


@dataclasses.dataclass(frozen=True)
class IterVar:
    """An iteration variable over a domain: a compute axis or a reduction axis."""

    var: Var
    dom: Range
    kind: IterKind = IterKind.DATA_PAR

    @property
    def name(self) -> str:
        return self.var.name


# An IterVar used inside arithmetic stands for its variable: `r * 2`, `i + r`.
for _method in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                "__floordiv__", "__mod__", "__lt__", "__le__", "__gt__", "__ge__", "__neg__"):
    setattr(IterVar, _method,
            lambda self, *other, _m=_method: getattr(self.var, _m)(*other))


def reduce_axis(dom: Any, name: str = "k") -> IterVar:
    """A reduction axis over `dom` (an extent or a (min, max) pair)."""
    return IterVar(Var(name, INDEX), Range.of(dom), IterKind.REDUCE)


def as_expr(value: Any) -> Expr:
    return value.var if isinstance(value, IterVar) else const(value)


# ----------------------------------------------------------------------------- tensors


class Operation:
    """Base of PlaceholderOp and ComputeOp. Operations compare by identity."""

    name: str

    def output(self, index: int = 0) -> Tensor:
        return self.outputs[index]

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @property
    def input_tensors(self) -> list[Tensor]:
        return []


class Tensor:
    """Output `value_index` of operation `op`. Index it to read it: `A[i, j]`."""

    def __init__(self, op: Operation, value_index: int, shape: Sequence[Any], dtype: str):
        self.op = op
        self.value_index = value_index
        self.shape = tuple(const(d) for d in shape)
        self.dtype = dtype

    @property
    def name(self) -> str:
        return self.op.name if self.value_index == 0 else f"{self.op.name}.v{self.value_index}"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...]:
        return tuple(int(d.value) for d in self.shape)  # type: ignore[attr-defined]

    def __getitem__(self, indices: Any) -> TensorRead:
        if not isinstance(indices, tuple):
            indices = (indices,)
        if len(indices) != len(self.shape):
            raise IndexError(f"tensor {self.name} has {len(self.shape)} dimensions, "
                             f"indexed with {len(indices)}")
        return TensorRead(self, tuple(as_expr(i) for i in indices))

    def __call__(self, *indices: Any) -> TensorRead:
        return self[indices]

    def __repr__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"Tensor({self.name}, ({dims}), {self.dtype})"


@dataclasses.dataclass(frozen=True, eq=False)
class TensorRead(Expr):
    """`tensor[indices]` inside a tensor expression."""

    tensor: Tensor
    indices: tuple[Expr, ...]

    @property
    def dtype(self) -> str:
        return self.tensor.dtype

    def format(self, fmt) -> str:
        return f"{self.tensor.name}[{', '.join(fmt(i) for i in self.indices)}]"


class PlaceholderOp(Operation):
    def __init__(self, name: str, shape: Sequence[Any], dtype: str):
        self.name = name
        self._outputs = (Tensor(self, 0, shape, dtype),)

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return self._outputs


def placeholder(shape: Sequence[Any], dtype: str = "float32", name: str = "placeholder") -> Tensor:
    """An input tensor."""
    return PlaceholderOp(name, shape, dtype).output(0)


class ComputeOp(Operation):
    """Tensors defined elementwise over `axis` by `body` (one expression per output)."""

    def __init__(self, name: str, axis: Sequence[IterVar], body: Sequence[Expr], tag: str = "",
                 attrs: dict[str, Any] | None = None):
        self.name = name
        self.axis = tuple(axis)
        self.body = tuple(body)
        self.tag = tag
        self.attrs = dict(attrs or {})
        reduces = [b for b in self.body if isinstance(b, Reduce)]
        self.reduce_axis = reduces[0].axis if reduces else ()
        shape = [iv.dom.extent for iv in self.axis]
        self._outputs = tuple(Tensor(self, k, shape, b.dtype) for k, b in enumerate(self.body))
        names = [iv.name for iv in (*self.axis, *self.reduce_axis)]
        if len(set(names)) != len(names):
            raise ValueError(f"compute {name!r}: axis names {names} must be distinct")

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return self._outputs

    @property
    def input_tensors(self) -> list[Tensor]:
        """Tensors the body reads, in first-read order."""
        found: dict[int, Tensor] = {}
        for b in self.body:
            for read in collect(b, TensorRead):
                found.setdefault(id(read.tensor), read.tensor)
        return list(found.values())


def compute(shape: Sequence[Any], fcompute: Callable[..., Any], name: str = "compute",
            tag: str = "", attrs: dict[str, Any] | None = None) -> Any:
    """A tensor of `shape` whose element at `(i, j, ...)` is `fcompute(i, j, ...)`.

    The lambda's parameter names name the axes. If it returns a tuple, one tensor per element
    is returned (a multi-output compute, e.g. argmax's index and value).
    """
    params = list(inspect.signature(fcompute).parameters)
    if len(params) != len(shape):
        if len(params) == 1 and inspect.signature(fcompute).parameters[params[0]].kind \
                == inspect.Parameter.VAR_POSITIONAL:
            params = [f"i{k}" for k in range(len(shape))]
        else:
            raise ValueError(f"compute {name!r}: the lambda takes {len(params)} indices for a "
                             f"{len(shape)}-d shape")
    axis = [IterVar(Var(p, INDEX), Range.of(d)) for p, d in zip(params, shape)]
    result = fcompute(*[iv.var for iv in axis])
    bodies = result if isinstance(result, tuple) else (result,)
    op = ComputeOp(name, axis, [as_expr(b) for b in bodies], tag, attrs)
    return op.outputs if isinstance(result, tuple) else op.output(0)


# ----------------------------------------------------------------------------- reductions


@dataclasses.dataclass(frozen=True)
class CommReducer:
    """A commutative reducer: `combine(lhs, rhs)` with identity element(s); tuple reducers
    (argmax) carry several values."""

    lhs: tuple[Var, ...]
    rhs: tuple[Var, ...]
    result: tuple[Expr, ...]
    identity: tuple[Expr, ...]
    name: str = "reducer"

    def __call__(self, source: Any, axis: Any, where: Expr | None = None) -> Expr:
        """Reduce `source` over `axis` (an IterVar or a list of them)."""
        axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
        sources = tuple(as_expr(s) for s in (source if isinstance(source, tuple) else (source,)))
        return Reduce(self, sources, axes, where, 0)


@dataclasses.dataclass(frozen=True, eq=False)
class Reduce(Expr):
    """Reduction of `source` over `axis` with `combiner`; `value_index` picks the output of a
    tuple reducer."""

    combiner: CommReducer
    source: tuple[Expr, ...]
    axis: tuple[IterVar, ...]
    condition: Expr | None
    value_index: int

    @property
    def dtype(self) -> str:
        return self.source[self.value_index].dtype

    def format(self, fmt) -> str:
        axes = ", ".join(iv.name for iv in self.axis)
        return f"{self.combiner.name}({', '.join(fmt(s) for s in self.source)}, axis=[{axes}])"


def comm_reducer(combine: Callable[[Expr, Expr], Expr],
                 identity: Callable[[str], Expr], name: str = "reducer") -> Callable[..., Expr]:
    """A user-defined commutative reducer from a binary `combine` and an `identity(dtype)`.

        product = comm_reducer(lambda x, y: x * y, lambda t: const(1, t), name="prod")
        C = compute((n,), lambda i: product(A[i, k], axis=k))
    """

    def reduce(source: Any, axis: Any, where: Expr | None = None) -> Expr:
        dtype = as_expr(source).dtype
        lhs, rhs = Var("lhs", dtype), Var("rhs", dtype)
        reducer = CommReducer((lhs,), (rhs,), (combine(lhs, rhs),), (identity(dtype),), name)
        return reducer(source, axis, where)

    return reduce


sum = comm_reducer(add, lambda t: const(0, t), name="sum")  # noqa: A001 (te.sum, like TVM)
max = comm_reducer(max_, min_value, name="max")  # noqa: A001
min = comm_reducer(min_, max_value, name="min")  # noqa: A001
prod = comm_reducer(mul, lambda t: const(1, t), name="prod")

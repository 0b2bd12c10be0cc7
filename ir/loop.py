"""The loop IR: buffers, loads, stores, loops and functions, what lowering produces and every
backend consumes.

A `PrimFunc` is one kernel: parameters are buffers, the body a tree of statements. Loops carry
a kind (serial, parallel, vectorized, unrolled, or bound to a GPU thread axis); buffers carry a
storage scope ("global", "shared", "local", or an accelerator's scopes); `AttrStmt` carries
pragmas and virtual-thread markers; `Evaluate(Call(...))` holds tensorized intrinsic calls.
Like expressions, statements are frozen dataclasses compared structurally.

Before storage flattening, loads and stores index buffers with one index per dimension; after,
with a single flat index (`flatten_storage` rewrites them).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from ember.ir.expr import INDEX, Expr, IntImm, const, lanes_of, with_lanes


@dataclasses.dataclass(frozen=True, eq=False)
class Buffer:
    """A region of memory: name, shape (ints or index expressions), dtype and storage scope.

    Buffers are identified by name within a function.
    """

    name: str
    shape: tuple[Any, ...]
    dtype: str
    scope: str = "global"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    def _key(self) -> tuple[Any, ...]:
        return (self.name, tuple(const(d) for d in self.shape), self.dtype, self.scope)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Buffer) and self._key() == other._key()

    @property
    def size(self) -> int:
        """Number of elements (the shape must be static)."""
        return math.prod(int(d) for d in self.shape)

    def load(self, *indices: Any) -> Load:
        return Load(self, tuple(const(i) for i in indices))

    def store(self, indices: Any, value: Expr) -> Store:
        if not isinstance(indices, (tuple, list)):
            indices = (indices,)
        return Store(self, tuple(const(i) for i in indices), value)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        scope = "" if self.scope == "global" else f", scope={self.scope!r}"
        return f"{self.name}: Buffer[{self.dtype}, ({dims}){scope}]"


@dataclasses.dataclass(frozen=True, eq=False)
class Load(Expr):
    """`buffer[indices]`; a Ramp index loads a vector."""

    buffer: Buffer
    indices: tuple[Expr, ...]
    predicate: Expr | None = None

    @property
    def dtype(self) -> str:
        lanes = max((lanes_of(i.dtype) for i in self.indices), default=1)
        return with_lanes(self.buffer.dtype, lanes)

    def format(self, fmt) -> str:
        text = f"{self.buffer.name}[{', '.join(fmt(i) for i in self.indices)}]"
        return text if self.predicate is None else f"{text} if {fmt(self.predicate)}"


# ----------------------------------------------------------------------------- statements


class Stmt:
    """Base class of statements (frozen dataclasses compared structurally)."""

    def __str__(self) -> str:
        from ember.ir.printer import format_stmt

        return format_stmt(self)


class ForKind(enum.Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"
    VECTORIZED = "vectorized"
    UNROLLED = "unrolled"
    THREAD_BINDING = "thread_binding"


@dataclasses.dataclass(frozen=True)
class For(Stmt):
    """`for var in [min, min + extent)`; `thread_tag` names the GPU axis a bound loop maps to
    ("blockIdx.x", "threadIdx.y", "vthread", ...)."""

    var: Any  # Var
    min: Expr
    extent: Expr
    kind: ForKind
    body: Stmt
    thread_tag: str = ""
    annotations: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Store(Stmt):
    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr
    predicate: Expr | None = None


@dataclasses.dataclass(frozen=True)
class SeqStmt(Stmt):
    stmts: tuple[Stmt, ...]


@dataclasses.dataclass(frozen=True)
class IfThenElse(Stmt):
    condition: Expr
    then_case: Stmt
    else_case: Stmt | None = None


@dataclasses.dataclass(frozen=True)
class LetStmt(Stmt):
    var: Any  # Var
    value: Expr
    body: Stmt


@dataclasses.dataclass(frozen=True)
class Allocate(Stmt):
    """Storage for `buffer` (in its scope) over `body`."""

    buffer: Buffer
    body: Stmt


@dataclasses.dataclass(frozen=True)
class AttrStmt(Stmt):
    """An annotation over `body`: a pragma ("pragma_<key>"), a virtual thread, a storage
    alignment; backends read the keys they know and ignore the rest."""

    key: str
    value: Any
    body: Stmt


@dataclasses.dataclass(frozen=True)
class Evaluate(Stmt):
    """Evaluate an expression for its effect (a tensorized intrinsic call)."""

    value: Expr


def seq(*stmts: Stmt | None) -> Stmt:
    """A statement sequence, flattened, with Nones dropped; one statement stays itself."""
    flat: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        flat.extend(s.stmts if isinstance(s, SeqStmt) else (s,))
    return flat[0] if len(flat) == 1 else SeqStmt(tuple(flat))


def loop(var: Any, extent: Any, body: Stmt, kind: ForKind = ForKind.SERIAL,
         start: Any = 0, thread_tag: str = "") -> For:
    return For(var, const(start, INDEX), const(extent, INDEX), kind, body, thread_tag)


# ----------------------------------------------------------------------------- functions


@dataclasses.dataclass(frozen=True)
class PrimFunc:
    """A kernel: `params` are its buffers in call order (inputs then outputs)."""

    name: str
    params: tuple[Buffer, ...]
    body: Stmt
    attrs: tuple[tuple[str, Any], ...] = ()

    def replace(self, **changes: Any) -> PrimFunc:
        return dataclasses.replace(self, **changes)

    def with_body(self, body: Stmt) -> PrimFunc:
        return dataclasses.replace(self, body=body)

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    def __str__(self) -> str:
        from ember.ir.printer import format_func

        return format_func(self)


def is_const_int(e: Any, value: int | None = None) -> bool:
    return isinstance(e, IntImm) and (value is None or e.value == value)

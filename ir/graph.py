"""The graph IR: an immutable dataflow graph of operator nodes over statically typed values.

The ONNX frontend produces a `Graph`; graph passes take one and return a new one; backends
compile one. Values are named by strings; every value has a `TensorType` (static shape and
dtype). Constants (weights, folded shape arithmetic) are read-only numpy arrays held by the
graph. Equality and hashing are structural (constants compared by content), so a graph, or a
node, can key caches and tuning records.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- dtypes

#: Names of the dtypes ember knows. Names are numpy's (`np.dtype(name)`), plus ml_dtypes'
#: "bfloat16" and float8 names, which numpy only knows once ml_dtypes is imported.
DTYPES = (
    "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool", "complex64", "complex128", "string",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for an ember dtype name."""
    if dtype == "string":
        return np.dtype(object)
    try:
        return np.dtype(dtype)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, dtype))


def dtype_name(dtype: Any) -> str:
    """The ember dtype name of a numpy dtype (or anything `np.dtype` accepts)."""
    dt = np.dtype(dtype)
    if dt == np.dtype(object) or dt.kind in "US":
        return "string"
    return dt.name


def is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


# ----------------------------------------------------------------------------- types


@dataclasses.dataclass(frozen=True)
class TensorType:
    """Static shape and dtype of a value."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * (8 if self.dtype == "string" else numpy_dtype(self.dtype).itemsize)

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(array.shape, dtype_name(array.dtype))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


# ----------------------------------------------------------------------------- attributes


def freeze(value: Any) -> Any:
    """Attribute values in their frozen, hashable form: lists become tuples, numpy scalars
    Python scalars. Tensors are not attributes: they are constants of the graph."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return freeze(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (Mapping, set)):
        raise TypeError(f"attribute values must be scalars, strings or tuples, got {value!r}")
    return value


class Attrs(Mapping[str, Any]):
    """An immutable, hashable attribute dictionary, readable as `attrs.name` or `attrs["name"]`."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        object.__setattr__(self, "_items", dict(sorted((k, freeze(v)) for k, v in pairs)))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._items[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Attrs is immutable; use attrs.replace(...)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(tuple(self._items.items())))
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attrs) and self._items == other._items

    def replace(self, **changes: Any) -> Attrs:
        return Attrs({**self._items, **changes})

    def __reduce__(self) -> tuple:
        # rebuilt from its items: the default protocol would read `_items` through
        # __getattr__ before the slot is set
        return (Attrs, (tuple(self._items.items()),))

    def __repr__(self) -> str:
        return f"Attrs({self._items!r})"

    def __str__(self) -> str:
        return ", ".join(f"{k}={_format_attr(v)}" for k, v in self._items.items())


def _format_attr(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_format_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# ----------------------------------------------------------------------------- nodes


@dataclasses.dataclass(frozen=True)
class Node:
    """One operator application. `inputs` may hold "" for an omitted optional input."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Attrs = Attrs()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))

    def replace(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- constants


def frozen_array(array: Any) -> np.ndarray:
    """A read-only copy-free view of `array` as a numpy array (the graph owns it from now on)."""
    out = np.asarray(array)
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


def _array_digest(array: np.ndarray) -> bytes:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype == object:
        digest.update(repr(array.tolist()).encode())
    else:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


# ----------------------------------------------------------------------------- graph


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """A dataflow graph in topological order.

    `types` holds the type of every value (inputs, constants and node outputs); `constants`
    maps constant names to read-only arrays. Use `ember.ir.verify.verify` to check invariants.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    types: Mapping[str, TensorType]
    constants: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "types", _FrozenMap(self.types))
        object.__setattr__(
            self, "constants", _FrozenMap({k: frozen_array(v) for k, v in self.constants.items()})
        )

    def replace(self, **changes: Any) -> Graph:
        return dataclasses.replace(self, **changes)

    # -- structure

    @functools.cached_property
    def producers(self) -> Mapping[str, Node]:
        """Value name -> the node that produces it (graph inputs and constants have none)."""
        return {out: node for node in self.nodes for out in node.outputs}

    @functools.cached_property
    def consumers(self) -> Mapping[str, tuple[Node, ...]]:
        """Value name -> the nodes that read it, in graph order."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):
                if name:
                    users.setdefault(name, []).append(node)
        return {k: tuple(v) for k, v in users.items()}

    def input_types(self) -> list[TensorType]:
        return [self.types[name] for name in self.inputs]

    def output_types(self) -> list[TensorType]:
        return [self.types[name] for name in self.outputs]

    def param_bytes(self) -> int:
        return sum(array.nbytes for array in self.constants.values())

    # -- structural equality and hashing

    @functools.cached_property
    def structural_hash(self) -> str:
        """A SHA-256 of the graph's whole content, constants included."""
        digest = hashlib.sha256()
        digest.update(repr((self.name, self.inputs, self.outputs)).encode())
        for node in self.nodes:
            digest.update(repr((node.op, node.inputs, node.outputs, node.name)).encode())
            digest.update(repr(tuple(node.attrs.items())).encode())
        for name in sorted(self.types):
            digest.update(f"{name}:{self.types[name]}".encode())
        for name in sorted(self.constants):
            digest.update(name.encode() + _array_digest(self.constants[name]))
        return digest.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self is other or self.structural_hash == other.structural_hash

    def __hash__(self) -> int:
        return hash(self.structural_hash)

    def __str__(self) -> str:
        return format_graph(self)


class _FrozenMap(Mapping[str, Any]):
    """A read-only dict."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: ...' for k in self._data)}}}"


# ----------------------------------------------------------------------------- printer


def _value(name: str) -> str:
    return f"%{name}" if name else "_"


def format_constant(array: np.ndarray, limit: int = 8) -> str:
    if array.size <= limit:
        return np.array2string(array.reshape(-1), separator=",", threshold=limit).replace("\n", "")
    return f"<{array.size} values>"


def format_graph(graph: Graph, show_constants: bool = True) -> str:
    """The graph as text, one node a line:

    graph main(%x: float32[1,4]) -> (%y) {
      const %w: float32[4,4] = <16 values>
      %y: float32[1,4] = matmul(%x, %w)
    }
    """
    args = ", ".join(f"{_value(n)}: {graph.types[n]}" for n in graph.inputs)
    results = ", ".join(_value(n) for n in graph.outputs)
    lines = [f"graph {graph.name}({args}) -> ({results}) {{"]
    if show_constants:
        for name, array in graph.constants.items():
            lines.append(f"  const {_value(name)}: {graph.types[name]} = {format_constant(array)}")
    for node in graph.nodes:
        outs = ", ".join(f"{_value(o)}: {graph.types.get(o, '?')}" for o in node.outputs)
        ins = ", ".join(_value(i) for i in node.inputs)
        attrs = f" {{{node.attrs}}}" if node.attrs else ""
        label = f"  # {node.name}" if node.name else ""
        lines.append(f"  {outs} = {node.op}({ins}){attrs}{label}")
    lines.append("}")
    return "\n".join(lines)

"""Host programs: models with control flow, sequences and optionals, run step by step.

`ember.compile` turns a model that holds If, Loop, Scan, sequence or optional ops into a
`HostProgram` (compiler/host_program.py builds it): its nodes in topological order, as steps.
A step is either a segment (a maximal run of ordinary tensor nodes, compiled by the normal
path as a model of its own) or a `HostNode` that this module interprets:

- If runs the branch its condition picks; Loop and Scan run their body once per iteration
  (carried values in, carried values and per-iteration scan outputs out); SequenceMap runs its
  body once per sequence element;
- a sequence is a Python list of arrays; an optional is None when empty, else its value.

Bodies are host programs too. A body reads the values it takes from enclosing graphs
("captures") from the scope of the node that runs it, so a body nested three levels deep sees
the values of all three. Segments compile lazily, once per input signature, so a body runs
compiled code from its second iteration on.

This module does not import the compiler: segments are objects with `run` handed in by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ember.errors import ArtifactError, EmberError, FrontendError, InputError, ShapeError
from ember.runtime.module import Module, TensorSpec

#: what flows between steps: a tensor, a sequence (list of tensors), or an empty optional
Value = Any


class Segment(Protocol):
    """Ordinary tensor nodes compiled as one model: arrays in, arrays out, by name."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def set_num_threads(self, count: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class HostNode:
    """One node the host runs: its ONNX op, value names ("" for an omitted one), attributes
    as Python values, and its bodies (graph attributes) as host programs by attribute name."""

    op_type: str
    name: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    bodies: Mapping[str, HostProgram]

    @property
    def label(self) -> str:
        return f"node {self.name!r} ({self.op_type})"


@dataclasses.dataclass(frozen=True)
class OutputType:
    """What a graph declares for one of its outputs (dtype None and dims None where it does
    not say): used to shape the scan outputs of a loop that runs zero times."""

    dtype: str | None
    shape: tuple[int | None, ...] | None


@dataclasses.dataclass(frozen=True)
class HostProgram:
    """A graph as steps. `inputs` are its formal inputs, `captures` the names it reads from
    enclosing graphs, `constants` its initializers and Constant nodes."""

    name: str
    inputs: tuple[str, ...]
    captures: tuple[str, ...]
    constants: Mapping[str, np.ndarray]
    steps: tuple[HostNode | Segment, ...]
    outputs: tuple[str, ...]
    output_types: tuple[OutputType, ...]

    def run(self, inputs: Sequence[Value], scope: Mapping[str, Value]) -> list[Value]:
        """Run on `inputs` (formal-input order); `scope` holds the enclosing graphs' values."""
        if len(inputs) != len(self.inputs):
            raise InputError(f"graph {self.name!r} takes {len(self.inputs)} inputs "
                             f"({', '.join(self.inputs)}), got {len(inputs)}")
        env: dict[str, Value] = dict(self.constants)
        env.update((name, scope[name]) for name in self.captures)
        env.update(zip(self.inputs, inputs))
        for step in self.steps:
            if isinstance(step, HostNode):
                args = [env[name] if name else None for name in step.inputs]
                results = run_host_node(step, args, env)
            else:
                results = step.run([_tensor(env[name], name, step.name) for name in step.inputs])
            env.update((name, value) for name, value in zip(step.outputs, results) if name)
        return [env[name] for name in self.outputs]

    def segments(self) -> Iterator[Segment]:
        """Every segment of this program and of its bodies."""
        for step in self.steps:
            if isinstance(step, HostNode):
                for body in step.bodies.values():
                    yield from body.segments()
            else:
                yield step


def _tensor(value: Value, name: str, where: str) -> np.ndarray:
    if isinstance(value, np.generic):
        return np.asarray(value)
    if not isinstance(value, np.ndarray):
        kind = "an empty optional" if value is None else type(value).__name__
        raise InputError(f"{where} takes {name!r} as a tensor, but it is {kind}")
    return value


def _located(error: EmberError, where: str) -> EmberError:
    """The same kind of error with `where` in front of its message."""
    message = f"{where}: {error}"
    try:
        located = type(error)(message)
    except TypeError:  # subclasses with more constructor arguments
        located = FrontendError(message)
    return located


def run_body(node: HostNode, attr: str, inputs: Sequence[Value],
             scope: Mapping[str, Value]) -> list[Value]:
    """Run the body `attr` of `node`; errors name the node and the body."""
    body = node.bodies[attr]
    try:
        return body.run(inputs, scope)
    except EmberError as error:
        raise _located(error, f"{node.label}, {attr} (graph {body.name!r})") from error


def _scalar(value: Value, node: HostNode, what: str) -> Any:
    array = _tensor(value, what, node.label)
    if array.size != 1:
        raise ShapeError(f"{node.label}: {what} must have one element, got shape {array.shape}")
    return array.reshape(-1)[0]


def _stack(values: list[np.ndarray], node: HostNode, what: str) -> np.ndarray:
    shapes = {value.shape for value in values}
    if len(shapes) > 1:
        raise ShapeError(f"{node.label}: {what} has a different shape in different iterations "
                         f"({sorted(shapes)}); scan outputs must keep one shape")
    return np.stack(values)


def _empty_scan(body: HostProgram, index: int) -> np.ndarray:
    declared = body.output_types[index]
    dims = declared.shape if declared.shape is not None else ()
    shape = (0, *(d if d is not None else 0 for d in dims))
    return np.zeros(shape, dtype=np.dtype(declared.dtype or "float32"))


# -- control flow

def _if(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    chosen = "then_branch" if bool(_scalar(args[0], node, "the condition")) else "else_branch"
    return run_body(node, chosen, [], scope)


def _loop(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    trip_count, condition, *carried = args
    body = node.bodies["body"]
    num_scans = len(body.outputs) - 1 - len(carried)
    limit = None if trip_count is None else int(_scalar(trip_count, node, "the trip count"))
    going = True if condition is None else bool(_scalar(condition, node, "the condition"))
    scans: list[list[np.ndarray]] = [[] for _ in range(num_scans)]
    iteration = 0
    while going and (limit is None or iteration < limit):
        outputs = run_body(node, "body", [np.array(iteration, np.int64), np.array(going),
                                          *carried], scope)
        going = bool(_scalar(outputs[0], node, "the body's condition output"))
        carried = outputs[1:1 + len(carried)]
        for column, value in zip(scans, outputs[1 + len(carried):]):
            column.append(_tensor(value, "a scan output", node.label))
        iteration += 1
    stacked = [_stack(column, node, f"scan output {k}") if column
               else _empty_scan(body, 1 + len(carried) + k) for k, column in enumerate(scans)]
    return [*carried, *stacked]


def _scan_steps(node: HostNode, states: list[Value], scanned: list[np.ndarray],
                axes: Sequence[int], directions: Sequence[int], scope: Mapping[str, Value]
                ) -> tuple[list[Value], list[list[np.ndarray]]]:
    """Iterate the body over `scanned` (along `axes`, reversed where `directions` is 1)."""
    lengths = {x.shape[axis] for x, axis in zip(scanned, axes)}
    if len(lengths) != 1:
        raise ShapeError(f"{node.label}: the scanned inputs have different lengths "
                         f"{sorted(lengths)} along their scan axes")
    (length,) = lengths
    num_scans = len(node.bodies["body"].outputs) - len(states)
    columns: list[list[np.ndarray]] = [[] for _ in range(num_scans)]
    for step in range(length):
        elements = [np.asarray(np.take(x, length - 1 - step if reverse else step, axis=axis))
                    for x, axis, reverse in zip(scanned, axes, directions)]
        outputs = run_body(node, "body", [*states, *elements], scope)
        states = outputs[:len(states)]
        for column, value in zip(columns, outputs[len(states):]):
            column.append(_tensor(value, "a scan output", node.label))
    return states, columns


def _normalized(axis: int, rank: int, node: HostNode, what: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{node.label}: {what} {axis} is out of range for rank {rank}")
    return axis % rank


def _scan(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    # Scan-8 has a batch axis and a sequence_lens input; Scan-9 dropped both.
    return _scan9(node, args, scope) if node.opset >= 9 else _scan8(node, args, scope)


def _scan9(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    num_scanned = node.attrs["num_scan_inputs"]
    num_states = len(args) - num_scanned
    states, scanned = args[:num_states], [_tensor(x, "a scanned input", node.label)
                                          for x in args[num_states:]]
    axes = [_normalized(a, x.ndim, node, "scan_input_axes")
            for a, x in zip(node.attrs.get("scan_input_axes") or [0] * num_scanned, scanned)]
    directions = node.attrs.get("scan_input_directions") or [0] * num_scanned
    states, columns = _scan_steps(node, states, scanned, axes, directions, scope)
    num_outputs = len(columns)
    out_axes = node.attrs.get("scan_output_axes") or [0] * num_outputs
    out_directions = node.attrs.get("scan_output_directions") or [0] * num_outputs
    outputs = []
    for k, (column, axis, reverse) in enumerate(zip(columns, out_axes, out_directions)):
        if not column:
            outputs.append(_empty_scan(node.bodies["body"], num_states + k))
            continue
        stacked = _stack(column[::-1] if reverse else column, node, f"scan output {k}")
        outputs.append(np.moveaxis(stacked, 0, _normalized(axis, stacked.ndim, node,
                                                           "scan_output_axes")))
    return [*states, *outputs]


def _scan8(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    # Scan-8: a batch axis 0 on every input and output; the scan axis is 1.
    lengths, *rest = args
    num_scanned = node.attrs["num_scan_inputs"]
    num_states = len(rest) - num_scanned
    states = [_tensor(x, "a state", node.label) for x in rest[:num_states]]
    scanned = [_tensor(x, "a scanned input", node.label) for x in rest[num_states:]]
    directions = node.attrs.get("directions") or [0] * num_scanned
    for k, x in enumerate(states + scanned):
        if x.ndim < (1 if k < len(states) else 2):
            raise ShapeError(f"{node.label}: Scan-8 values carry a batch axis 0 (and scanned "
                             f"inputs a scan axis 1); input {k} has shape {x.shape}")
    batch = (states + scanned)[0].shape[0]
    if lengths is not None:
        full = scanned[0].shape[1]
        if np.any(np.asarray(lengths) != full):
            raise ShapeError(f"{node.label}: sequence_lens {np.asarray(lengths).tolist()} "
                             f"shorter than the scanned axis ({full}) are not supported")
    final_states: list[list[np.ndarray]] = [[] for _ in states]
    per_batch: list[list[np.ndarray]] = []
    for b in range(batch):
        out_states, columns = _scan_steps(node, [s[b] for s in states], [x[b] for x in scanned],
                                          [0] * num_scanned, directions, scope)
        for column, value in zip(final_states, out_states):
            column.append(value)
        per_batch.append([_stack(column, node, f"scan output {k}")
                          for k, column in enumerate(columns)])
    outputs = [np.stack(column) for column in final_states]
    outputs += [np.stack([row[k] for row in per_batch]) for k in range(len(per_batch[0]))]
    return outputs


def _sequence_map(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                  ) -> list[Value]:
    sequence, *extra = args
    for index, value in enumerate(extra):
        if isinstance(value, list) and len(value) != len(sequence):
            raise ShapeError(f"{node.label}: input {index + 1} is a sequence of {len(value)} "
                             f"elements, input 0 one of {len(sequence)}")
    results: list[list[Value]] = [[] for _ in node.outputs]
    for i, element in enumerate(sequence):
        inputs = [element, *(value[i] if isinstance(value, list) else value for value in extra)]
        for column, value in zip(results, run_body(node, "body", inputs, scope)):
            column.append(value)
    return results


# -- sequences

def _sequence(value: Value, node: HostNode) -> list[np.ndarray]:
    if not isinstance(value, list):
        raise InputError(f"{node.label} takes a sequence, got "
                         f"{'an empty optional' if value is None else type(value).__name__}")
    return value


def _position(value: Value, length: int, node: HostNode, inserting: bool = False) -> int:
    position = int(_scalar(value, node, "the position"))
    high = length if inserting else length - 1
    if not -length <= position <= high:
        raise ShapeError(f"{node.label}: position {position} is out of range for a sequence "
                         f"of {length} element(s)")
    return position + length if position < 0 else position


def _sequence_construct(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                        ) -> list[Value]:
    return [[_tensor(value, "an element", node.label) for value in args]]


def _sequence_empty(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                    ) -> list[Value]:
    return [[]]


def _sequence_at(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    sequence = _sequence(args[0], node)
    return [sequence[_position(args[1], len(sequence), node)]]


def _sequence_insert(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                     ) -> list[Value]:
    sequence = list(_sequence(args[0], node))
    tensor = _tensor(args[1], "the tensor", node.label)
    at = len(sequence) if len(args) < 3 or args[2] is None \
        else _position(args[2], len(sequence), node, inserting=True)
    sequence.insert(at, tensor)
    return [sequence]


def _sequence_erase(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                    ) -> list[Value]:
    sequence = list(_sequence(args[0], node))
    if not sequence:
        raise ShapeError(f"{node.label}: cannot erase from an empty sequence")
    at = len(sequence) - 1 if len(args) < 2 or args[1] is None \
        else _position(args[1], len(sequence), node)
    del sequence[at]
    return [sequence]


def _sequence_length(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                     ) -> list[Value]:
    return [np.array(len(_sequence(args[0], node)), np.int64)]


def _split_to_sequence(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                       ) -> list[Value]:
    tensor = _tensor(args[0], "the input", node.label)
    axis = _normalized(node.attrs.get("axis", 0), tensor.ndim, node, "axis")
    size = tensor.shape[axis]
    split = args[1] if len(args) > 1 else None
    if split is None:
        parts = np.split(tensor, size, axis=axis)
        if not node.attrs.get("keepdims", 1):
            parts = [np.squeeze(part, axis) for part in parts]
        return [parts]
    split = np.asarray(split).astype(np.int64)
    if split.ndim == 0:
        chunk = int(split)
        if chunk <= 0:
            raise ShapeError(f"{node.label}: split {chunk} must be positive")
        lengths = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    else:
        lengths = split.tolist()
        if sum(lengths) != size or min(lengths, default=0) < 0:
            raise ShapeError(f"{node.label}: split {lengths} does not add up to the axis "
                             f"length {size}")
    return [np.split(tensor, np.cumsum(lengths)[:-1], axis=axis)]


def _concat_from_sequence(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                          ) -> list[Value]:
    sequence = _sequence(args[0], node)
    if not sequence:
        raise ShapeError(f"{node.label}: cannot concatenate an empty sequence")
    new_axis = bool(node.attrs.get("new_axis", 0))
    rank = sequence[0].ndim + (1 if new_axis else 0)
    axis = _normalized(node.attrs["axis"], rank, node, "axis")
    try:
        joined = np.stack(sequence, axis) if new_axis else np.concatenate(sequence, axis)
    except ValueError as error:
        shapes = [x.shape for x in sequence]
        raise ShapeError(f"{node.label}: cannot join shapes {shapes} on axis {axis}: "
                         f"{error}") from None
    return [joined]


# -- optionals and identity

def _optional(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    return [args[0] if args else None]


def _optional_has_element(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                          ) -> list[Value]:
    return [np.array(bool(args) and args[0] is not None)]


def _optional_get_element(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                          ) -> list[Value]:
    if args[0] is None:
        raise InputError(f"{node.label}: the optional input is empty")
    return [args[0]]


def _identity(node: HostNode, args: list[Value], scope: Mapping[str, Value]) -> list[Value]:
    value = args[0]
    return [list(value) if isinstance(value, list) else value]


HostOp = Callable[[HostNode, list[Value], Mapping[str, Value]], list[Value]]

#: ONNX op -> its implementation: (node, input values, scope) -> output values
HOST_OP_IMPLEMENTATIONS: dict[str, HostOp] = {
    "If": _if,
    "Loop": _loop,
    "Scan": _scan,
    "SequenceMap": _sequence_map,
    "SequenceConstruct": _sequence_construct,
    "SequenceEmpty": _sequence_empty,
    "SequenceAt": _sequence_at,
    "SequenceInsert": _sequence_insert,
    "SequenceErase": _sequence_erase,
    "SequenceLength": _sequence_length,
    "SplitToSequence": _split_to_sequence,
    "ConcatFromSequence": _concat_from_sequence,
    "Optional": _optional,
    "OptionalHasElement": _optional_has_element,
    "OptionalGetElement": _optional_get_element,
    "Identity": _identity,
}


def run_host_node(node: HostNode, args: list[Value], scope: Mapping[str, Value]
                  ) -> list[Value]:
    """Run one host node on its input values (None for omitted inputs)."""
    # Trailing omitted inputs are absent, as if the node never listed them.
    while args and args[-1] is None and node.inputs[len(args) - 1] == "":
        args = args[:-1]
    results = HOST_OP_IMPLEMENTATIONS[node.op_type](node, args, scope)
    if len(results) < len([name for name in node.outputs if name]):
        raise ShapeError(f"{node.label} gave {len(results)} outputs for {len(node.outputs)}")
    return results


class HostExecutor:
    """The runtime Executor of a host program: graph inputs in signature order, outputs out."""

    def __init__(self, program: HostProgram):
        self.program = program

    def run(self, inputs: list[Value]) -> list[Value]:
        return self.program.run(inputs, {})

    def set_num_threads(self, count: int) -> None:
        for segment in self.program.segments():
            segment.set_num_threads(count)

    def save_artifact(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ArtifactError(
            "modules with control flow, sequences or optionals (host programs) cannot be saved "
            "yet: their segments compile at run time, per input shape"
        )

    @property
    def compilations(self) -> int:
        """Compiled variants of all segments so far."""
        return sum(getattr(segment, "compilations", 0) for segment in self.program.segments())


def is_sequence_spec(spec: TensorSpec) -> bool:
    return spec.dtype.startswith("sequence(")


def is_optional_spec(spec: TensorSpec) -> bool:
    return spec.dtype.startswith("optional(")


class HostModule(Module):
    """A Module over a host program. Its signature may hold sequences (dtype
    "sequence(float32)", a list of arrays) and optionals (dtype "optional(...)", None or the
    value); tensor inputs are checked as in every module."""

    def _check_value(self, spec: TensorSpec, value: Any, dtype: Any = None) -> Value:
        if is_optional_spec(spec):
            if value is None:
                return None
            inner = spec.dtype[len("optional("):-1]
            return self._check_value(TensorSpec(spec.name, spec.shape, inner), value)
        if is_sequence_spec(spec):
            if not isinstance(value, (list, tuple)):
                raise InputError(f"input {spec.name!r} is a sequence: give a list of arrays, "
                                 f"got {type(value).__name__}")
            element = TensorSpec(spec.name, None, spec.dtype[len("sequence("):-1])
            return [self._check_value(element, item) for item in value]
        return super()._check_value(spec, value, dtype)

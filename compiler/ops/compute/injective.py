"""Computes of the injective ops (ir/ops/tensor.py, ir/ops/index.py): every output element is
one input element (or a constant), found by index arithmetic.

identity, reshape, transpose, concat, slice, tile, pad (constant, reflect, edge, wrap), trilu,
gather, gather_elements, gather_nd, one_hot and reverse_sequence.

[Note: reads stay in bounds] A te `select` evaluates both of its sides, so every read must be
in bounds whether or not its value is chosen: concat and constant padding clamp the index they
read outside their window. Gathers read indices from memory: they count negative indices from
the end and then CLAMP to the axis (an index the numpy reference rejects reads the nearest edge
element instead), so compiled code never reads outside a buffer; a gather from an empty axis
gives zeros without reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ember.compiler.ops.compute.elementwise import zero
from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import expr as E
from ember.ir import te
from ember.ir.expr import INDEX, Expr, const, select

Index = Sequence[Expr]


# ----------------------------------------------------------------------------- index helpers


def clamp(index: Expr, low: int, high: int) -> Expr:
    """`index` limited to [low, high]."""
    return E.min_(E.max_(index, const(low)), const(high))


def normalize_index(value: Expr, dim: int) -> Expr:
    """A data-dependent index (any integer or float dtype) as an int64 in [0, dim): negative
    values count from the end, the rest is clamped (see [Note: reads stay in bounds])."""
    index = E.cast(INDEX, value)
    index = select(index < const(0), index + const(dim), index)
    return clamp(index, 0, dim - 1)


def row_major_strides(shape: Sequence[int]) -> list[int]:
    strides, stride = [], 1
    for dim in reversed(shape):
        strides.append(stride)
        stride *= dim
    return strides[::-1]


def reshape_groups(source: Sequence[int],
                   target: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Split two shapes of equal size into consecutive groups of axes with equal products:
    [(source axes, target axes), ...]. Size-1 axes join a neighbouring group."""
    groups: list[tuple[list[int], list[int]]] = []
    s = t = 0
    while s < len(source) or t < len(target):
        s_axes, t_axes = [], []
        s_size = t_size = 1
        while True:
            if s < len(source) and (s_size <= t_size or t >= len(target)):
                s_axes.append(s)
                s_size *= source[s]
                s += 1
            elif t < len(target):
                t_axes.append(t)
                t_size *= target[t]
                t += 1
            else:
                break
            if s_size == t_size and s_axes and t_axes:
                # absorb trailing size-1 axes so that each group is as large as it gets
                while s < len(source) and source[s] == 1:
                    s_axes.append(s)
                    s += 1
                while t < len(target) and target[t] == 1:
                    t_axes.append(t)
                    t += 1
                break
        groups.append((s_axes, t_axes))
    return groups


def reshape_index(source_shape: Sequence[int], target_shape: Sequence[int],
                  target_index: Index) -> tuple[Expr, ...]:
    """The index into `source_shape` of the element at `target_index` of the same elements in
    row-major order viewed as `target_shape`. Axes are grouped so that untouched axes pass
    through and only merged or split groups pay for the division."""
    if math.prod(source_shape) == 0:
        return tuple(const(0) for _ in source_shape)
    source: list[Expr] = [const(0)] * len(source_shape)
    for s_axes, t_axes in reshape_groups(source_shape, target_shape):
        flat: Expr = const(0)
        for axis, stride in zip(t_axes, row_major_strides([target_shape[a] for a in t_axes])):
            flat = flat + target_index[axis] * const(stride)
        dims = [source_shape[a] for a in s_axes]
        outermost = True
        for axis, dim, stride in zip(s_axes, dims, row_major_strides(dims)):
            if dim == 1:
                continue  # stays 0
            value = flat if stride == 1 else E.floordiv(flat, const(stride))
            source[axis] = value if outermost else E.floormod(value, const(dim))
            outermost = False
    return tuple(source)


def _compute(workload: Workload, fn, name: str | None = None) -> list[te.Tensor]:
    out = workload.output_types[0]
    return [te.compute(out.shape, fn, name=name or workload.op)]


def reading_empty(inputs: Sequence[te.Tensor | None]) -> Callable[[Expr], Expr]:
    """A wrapper of output values that makes the output depend on `inputs`, which are empty
    and so cannot be read at all.

    [Note: unread inputs] Lowering needs every input to be read by some stage (a placeholder
    no stage reads is not part of the schedule, and `lower` rejects it as an argument). An
    empty tensor has no element to read, so the inputs are read inside a reduction over zero
    elements, whose loop never runs; values depend on it through a select whose two sides
    are the same.
    """
    never = te.reduce_axis(0, name="never")
    reads = [E.cast(INDEX, t[(never.var,) * t.ndim]) for t in inputs if t is not None]
    total = reads[0]
    for read in reads[1:]:
        total = total + read
    touched = te.compute((), lambda: te.sum(total, axis=[never]), name="unread_inputs")
    return lambda value: select(E.eq(touched[()], const(0)), value, value)


def without_reading(workload: Workload, inputs: Sequence[te.Tensor | None],
                    value: Expr) -> list[te.Tensor]:
    """An output whose every element is `value`, when `inputs` are empty (see
    [Note: unread inputs])."""
    guard = reading_empty(inputs)
    return _compute(workload, lambda *i: guard(value))


# ----------------------------------------------------------------------------- shape ops


@register_compute("identity")
def identity(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    return _compute(workload, lambda *i: x[i])


@register_compute("reshape")
def reshape(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    target = workload.output_types[0].shape
    return _compute(workload, lambda *i: x[reshape_index(x.static_shape, target, i)])


@register_compute("transpose")
def transpose(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    perm = tuple(workload.attrs.perm)

    def element(*i: Expr) -> Expr:
        source: list[Expr] = [const(0)] * len(perm)
        for out_axis, in_axis in enumerate(perm):
            source[in_axis] = i[out_axis]
        return x[tuple(source)]

    return _compute(workload, element)


@register_compute("concat")
def concat(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    axis = workload.attrs.axis
    parts = [t for t in inputs if t is not None and t.static_shape[axis] > 0]
    empty = [t for t in inputs if t is not None and t.static_shape[axis] == 0]
    if not parts:  # every input is empty along the axis: so is the output
        return without_reading(workload, inputs, zero(workload.output_types[0].dtype))
    offsets = []
    start = 0
    for t in parts:
        offsets.append(start)
        start += t.static_shape[axis]

    def read(t: te.Tensor, offset: int, i: Index) -> Expr:
        index = list(i)
        index[axis] = clamp(i[axis] - const(offset), 0, t.static_shape[axis] - 1)
        return t[tuple(index)]

    def element(*i: Expr) -> Expr:
        value = read(parts[-1], offsets[-1], i)
        for t, offset in zip(reversed(parts[:-1]), reversed(offsets[:-1])):
            end = offset + t.static_shape[axis]
            value = select(i[axis] < const(end), read(t, offset, i), value)
        return value

    if empty:  # see [Note: unread inputs]
        guard = reading_empty(empty)
        return _compute(workload, lambda *i: guard(element(*i)))
    return _compute(workload, element)


@register_compute("slice")
def slice_(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs

    def element(*i: Expr) -> Expr:
        return x[tuple(const(start) + index * const(step)
                       for index, start, step in zip(i, attrs.starts, attrs.steps))]

    return _compute(workload, element)


@register_compute("tile")
def tile(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    shape = x.static_shape
    return _compute(workload, lambda *i: x[tuple(
        index if reps == 1 else E.floormod(index, const(max(dim, 1)))
        for index, dim, reps in zip(i, shape, workload.attrs.repeats))])


def _pad_source(index: Expr, dim: int, before: int, mode: str) -> Expr:
    """The input index that output index `index` of a padded axis reads."""
    j = index - const(before)
    if mode == "wrap":
        return E.floormod(j, const(dim))
    if mode == "reflect" and dim > 1:
        # mirror without repeating the edge: the pattern repeats every 2 * (dim - 1)
        period = 2 * (dim - 1)
        t = E.floormod(j, const(period))
        return select(t < const(dim), t, const(period) - t)
    return clamp(j, 0, dim - 1)  # edge, reflect of a single element, constant (see below)


@register_compute("pad")
def pad(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, value = (*inputs, None)[:2]  # the fill value is an optional input
    attrs = workload.attrs
    pads = [tuple(p) for p in attrs.pads]
    shape = x.static_shape
    dtype = x.dtype

    def fill() -> Expr:
        return zero(dtype) if value is None else value[(const(0),) * value.ndim]

    if math.prod(shape) == 0:  # only constant padding grows an empty tensor
        return without_reading(workload, [x], fill())

    def element(*i: Expr) -> Expr:
        source, inside = [], []
        for index, dim, (before, after) in zip(i, shape, pads):
            if before == 0 and after == 0:
                source.append(index)
                continue
            source.append(_pad_source(index, dim, before, attrs.mode))
            if attrs.mode == "constant":
                if before:
                    inside.append(index >= const(before))
                if after:
                    inside.append(index < const(before + dim))
        read = x[tuple(source)]
        if not inside:
            return read
        condition = inside[0]
        for c in inside[1:]:
            condition = condition & c
        return select(condition, read, fill())

    return _compute(workload, element)


@register_compute("trilu")
def trilu(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    attrs = workload.attrs

    def element(*i: Expr) -> Expr:
        offset = i[-1] - i[-2]
        keep = offset >= const(attrs.k) if attrs.upper else offset <= const(attrs.k)
        return select(keep, x[i], zero(x.dtype))

    return _compute(workload, element)


# ----------------------------------------------------------------------------- gathers


@register_compute("gather")
def gather(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    data, indices = inputs
    axis = workload.attrs.axis
    dim = data.static_shape[axis]
    if dim == 0:
        return without_reading(workload, inputs, zero(data.dtype))
    q = indices.ndim

    def element(*i: Expr) -> Expr:
        position = normalize_index(indices[tuple(i[axis:axis + q])], dim)
        return data[(*i[:axis], position, *i[axis + q:])]

    return _compute(workload, element)


@register_compute("gather_elements")
def gather_elements(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    data, indices = inputs
    axis = workload.attrs.axis
    dim = data.static_shape[axis]
    if dim == 0:
        return without_reading(workload, inputs, zero(data.dtype))

    def element(*i: Expr) -> Expr:
        source = list(i)
        source[axis] = normalize_index(indices[i], dim)
        return data[tuple(source)]

    return _compute(workload, element)


@register_compute("gather_nd")
def gather_nd(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    data, indices = inputs
    batch = workload.attrs.batch_dims
    depth = indices.static_shape[-1]
    rows = indices.ndim - 1  # output axes that walk the index rows (batch axes included)
    dims = data.static_shape[batch:batch + depth]
    if 0 in dims:
        return without_reading(workload, inputs, zero(data.dtype))

    def element(*i: Expr) -> Expr:
        positions = [normalize_index(indices[(*i[:rows], const(j))], dim)
                     for j, dim in enumerate(dims)]
        return data[(*i[:batch], *positions, *i[rows:])]

    if depth == 0:  # rows of no indices pick whole slices: the (empty) indices go unread
        guard = reading_empty([indices])
        return _compute(workload, lambda *i: guard(element(*i)))
    return _compute(workload, element)


@register_compute("one_hot")
def one_hot(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    indices, values = inputs
    axis, depth = workload.attrs.axis, workload.attrs.depth

    def element(*i: Expr) -> Expr:
        index = E.cast(INDEX, indices[(*i[:axis], *i[axis + 1:])])
        index = select(index < const(0), index + const(depth), index)
        return select(E.eq(index, i[axis]), values[const(1)], values[const(0)])

    return _compute(workload, element)


@register_compute("reverse_sequence")
def reverse_sequence(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, lengths = inputs
    batch_axis, time_axis = workload.attrs.batch_axis, workload.attrs.time_axis
    steps = x.static_shape[time_axis]

    def element(*i: Expr) -> Expr:
        length = clamp(E.cast(INDEX, lengths[i[batch_axis]]), 0, steps)
        t = i[time_axis]
        source = list(i)
        source[time_axis] = select(t < length, length - const(1) - t, t)
        return x[tuple(source)]

    return _compute(workload, element)

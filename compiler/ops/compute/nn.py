"""Tensor-expression computes of the NN ops of `ember.ir.ops.nn`: conv, conv_transpose,
matmul, softmax, log_softmax and hardmax; plus the helpers the pool and norm computes share
(named axes, padding stages, half-precision upcasts, broadcast reads).

Every compute states what its op's numpy reference computes, stage by stage, so that a schedule
can place each stage: a padding stage (tag `PAD_TAG`), a reduction (the accumulator) and an
elementwise epilogue (bias, rounding to a half dtype). float16/bfloat16 inputs are read as
float32, accumulated in float32 and rounded once by the last stage, as the references do.

Padding stages never read outside their input, and never through a clamped index (which
would make every vector load a gather): a padded copy is a one-step reduction whose `where`
condition guards the read (`guarded_copy`), so lowering emits an `if`, and vectorization a
masked load.

The row statistics of the softmax family (and of layer_norm and rms_norm, compute/norm.py) go
through `row_reduce`: a long row along the last axis is reduced into interleaved partial
results first (a hand-made rfactor), so that the CPU schedule vectorizes the reduction.

conv_transpose is computed as TVM's topi does: the input is dilated by the strides and padded
(one stage, `PAD_TAG`), then convolved with the spatially flipped weight at stride 1. That
multiplies stride^d zeros per useful product, the price of a schedule shared with conv.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ember.compiler.ops.registry import Workload, register_compute
from ember.ir import te
from ember.ir.expr import (
    INDEX,
    Expr,
    Var,
    call,
    cast,
    const,
    eq,
    logical_and,
    logical_or,
    select,
)

#: tag of a padding (or dilation) stage: schedules compute it at a loop of its consumer
PAD_TAG = "pad"
#: tag of a stage that a schedule keeps next to the stage reading it (small statistics)
STATS_TAG = "stats"
#: name suffix of the partial results of a split row reduction (`row_reduce`)
PARTIAL_SUFFIX = "_partial"

_HALF = ("float16", "bfloat16")


def compute_dtype(dtype: str) -> str:
    """The dtype `dtype` values are computed in: float32 for the half floats."""
    return "float32" if dtype in _HALF else dtype


def upcast(value: Expr, dtype: str) -> Expr:
    return value if value.dtype == dtype else cast(dtype, value)


def named_compute(shape: Sequence[int], names: Sequence[str],
                  fcompute: Callable[..., Any], name: str, tag: str = "") -> Any:
    """`te.compute` with the axis variables named `names` (readable loop IR for any rank)."""
    axis = [te.IterVar(Var(n, INDEX), te.Range.of(d)) for n, d in zip(names, shape)]
    result = fcompute(*[iv.var for iv in axis])
    bodies = result if isinstance(result, tuple) else (result,)
    op = te.ComputeOp(name, axis, [te.as_expr(b) for b in bodies], tag)
    return op.outputs if isinstance(result, tuple) else op.output(0)


def spatial_names(prefix: str, count: int) -> list[str]:
    """Axis names of `count` spatial axes: d, h, w for up to three, else prefix0, prefix1..."""
    if count <= 3:
        return [prefix + s for s in ("d", "h", "w")[3 - count:]]
    return [f"{prefix}{k}" for k in range(count)]


def _keep_new(old: Expr, new: Expr) -> Expr:
    return new


def guarded_copy(value: float, dtype: str) -> Callable[..., Expr]:
    """A reducer that starts from `value` and keeps what it is given: `reduce(source,
    axis=r, where=valid)` over a one-step axis r is `source if valid else value`, with the
    read of `source` guarded (an if, a masked load when vectorized) instead of clamped."""
    return te.comm_reducer(_keep_new, lambda t: const(value, t), name="pad")


def pad_input(x: te.Tensor, pads: Sequence[int], value: float, dtype: str,
              name: str, transform: Callable[[Expr], Expr] | None = None) -> te.Tensor:
    """x (N, C, *S) padded on its spatial axes with `value` (pads: begins then ends), read as
    `dtype` and passed through `transform`; a stage tagged PAD_TAG. It is a guarded copy
    (see `guarded_copy`): padding positions never load."""
    shape = x.static_shape
    spatial = len(shape) - 2
    begins, ends = pads[:spatial], pads[spatial:]
    out_shape = (*shape[:2], *(shape[2 + d] + begins[d] + ends[d] for d in range(spatial)))
    step = te.reduce_axis(1, "rp")
    reducer = guarded_copy(value, dtype)

    def body(n: Expr, c: Expr, *pos: Expr) -> Expr:
        conditions, indices = [], []
        for d, p in enumerate(pos):
            source = p - begins[d] if begins[d] else p
            if begins[d]:
                conditions.append(source >= 0)
            if ends[d]:
                conditions.append(source < shape[2 + d])
            indices.append(source)
        read = upcast(x[(n, c, *indices)], dtype)
        if transform is not None:
            read = transform(read)
        return reducer(read, axis=step, where=all_of(conditions))

    names = ["n", "c", *spatial_names("p", spatial)]
    return named_compute(out_shape, names, body, name, tag=PAD_TAG)


def all_of(conditions: Sequence[Expr]) -> Expr | None:
    if not conditions:
        return None
    result = conditions[0]
    for c in conditions[1:]:
        result = logical_and(result, c)
    return result


def broadcast_read(t: te.Tensor, out_indices: Sequence[Expr]) -> te.TensorRead:
    """Read `t` at the numpy-broadcast position of an output element (right-aligned axes;
    size-1 axes read index 0)."""
    offset = len(out_indices) - t.ndim
    indices = [const(0) if size == 1 else out_indices[offset + k]
               for k, size in enumerate(t.static_shape)]
    return t[tuple(indices)]


# ----------------------------------------------------------------------------- conv


def _window_reduce(name: str, data: te.Tensor, weight_read: Callable[..., Expr],
                   out_shape: Sequence[int], kernel: Sequence[int], group_in: int,
                   group_out: int, strides: Sequence[int], dilations: Sequence[int],
                   acc: str) -> te.Tensor:
    """sum over (rc, rk...) of data[n, g * group_in + rc, o * stride + rk * dilation] *
    weight_read(m, g, rc, rk...), g = m // group_out: the accumulator of conv and
    conv_transpose."""
    spatial = len(kernel)
    rc = te.reduce_axis(group_in, "rc")
    rk = [te.reduce_axis(k, n) for k, n in zip(kernel, spatial_names("rk", spatial))]
    grouped = data.static_shape[1] != group_in

    def body(n: Expr, m: Expr, *o: Expr) -> Expr:
        group = m // group_out if grouped else const(0)
        channel = group * group_in + rc.var if grouped else rc.var
        pos = [o[d] * strides[d] + rk[d].var * dilations[d] for d in range(spatial)]
        product = upcast(data[(n, channel, *pos)], acc) * upcast(
            weight_read(m, group, rc.var, *[r.var for r in rk]), acc)
        return te.sum(product, axis=[rc, *rk])

    names = ["n", "m", *spatial_names("o", spatial)]
    return named_compute(out_shape, names, body, name)


def _epilogue(name: str, acc: te.Tensor, bias: te.Tensor | None, dtype: str) -> te.Tensor:
    """acc + bias[m], rounded to `dtype`: the output stage (acc itself when it has nothing
    to do)."""
    if bias is None and acc.dtype == dtype:
        return acc
    rank = acc.ndim

    def body(n: Expr, m: Expr, *o: Expr) -> Expr:
        value = acc[(n, m, *o)]
        if bias is not None:
            value = value + upcast(bias[m], acc.dtype)
        return upcast(value, dtype)

    names = ["n", "m", *spatial_names("o", rank - 2)]
    return named_compute(acc.static_shape, names, body, name)


@register_compute("conv")
def conv(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, w, bias = (list(inputs) + [None])[:3]
    attrs = workload.attrs
    out_type = workload.output_types[0]
    acc = compute_dtype(x.dtype)
    groups = attrs.groups
    filters, group_in = w.static_shape[:2]
    data = x
    if any(attrs.pads):
        data = pad_input(x, attrs.pads, 0.0, acc, "conv_pad")
    reduced = _window_reduce(
        "conv" if bias is None and acc == x.dtype else "conv_acc", data,
        lambda m, g, rc, *rk: w[(m, rc, *rk)], out_type.shape, w.static_shape[2:], group_in,
        filters // groups, attrs.strides, attrs.dilations, acc)
    return [_epilogue("conv", reduced, bias, out_type.dtype)]


@register_compute("conv_transpose")
def conv_transpose(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    x, w, bias = (list(inputs) + [None])[:3]
    attrs = workload.attrs
    out_type = workload.output_types[0]
    acc = compute_dtype(x.dtype)
    shape = x.static_shape
    kernel = w.static_shape[2:]
    spatial = len(kernel)
    group_in, group_out = shape[1] // attrs.groups, w.static_shape[1]
    out_spatial = out_type.shape[2:]
    # D[u] = x_dilated[u - P] with P = (K - 1) * dilation - pad_begin: the output is then a
    # stride-1 convolution of D with the flipped kernel (see the module docstring).
    shift = [(kernel[d] - 1) * attrs.dilations[d] - attrs.pads[d] for d in range(spatial)]
    extents = [out_spatial[d] + (kernel[d] - 1) * attrs.dilations[d] for d in range(spatial)]

    step = te.reduce_axis(1, "rp")
    reducer = guarded_copy(0.0, acc)

    def dilate(n: Expr, c: Expr, *u: Expr) -> Expr:
        conditions, indices = [], []
        for d in range(spatial):
            v = u[d] - shift[d]
            stride, size = attrs.strides[d], shape[2 + d]
            conditions.append(v >= 0)
            if stride > 1:
                conditions.append(eq(v % stride, 0))
            conditions.append(v < (size - 1) * stride + 1)
            indices.append(v // stride if stride > 1 else v)
        return reducer(upcast(x[(n, c, *indices)], acc), axis=step, where=all_of(conditions))

    data = named_compute((*shape[:2], *extents), ["n", "c", *spatial_names("u", spatial)],
                         dilate, "conv_transpose_dilate", tag=PAD_TAG)
    flipped = [k - 1 for k in kernel]
    reduced = _window_reduce(
        "conv_transpose" if bias is None and acc == x.dtype else "conv_transpose_acc", data,
        lambda m, g, rc, *rk: w[(g * group_in + rc, m % group_out,
                                 *(flipped[d] - rk[d] for d in range(spatial)))],
        out_type.shape, kernel, group_in, group_out, (1,) * spatial, attrs.dilations, acc)
    return [_epilogue("conv_transpose", reduced, bias, out_type.dtype)]


# ----------------------------------------------------------------------------- matmul


def _batch_read(t: te.Tensor, batch: Sequence[Expr], tail: Sequence[Expr]) -> te.TensorRead:
    """t[..., *tail] with its batch axes broadcast against the output's `batch` indices."""
    own = t.ndim - len(tail)
    offset = len(batch) - own
    indices = [const(0) if t.static_shape[k] == 1 else batch[offset + k] for k in range(own)]
    return t[(*indices, *tail)]


@register_compute("matmul")
def matmul(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    a, b = inputs
    out_type = workload.output_types[0]
    acc = compute_dtype(a.dtype)
    a_vector, b_vector = a.ndim == 1, b.ndim == 1
    depth = a.static_shape[-1]
    k = te.reduce_axis(depth, "k")
    batch_rank = out_type.rank - (0 if a_vector else 1) - (0 if b_vector else 1)
    names = [f"b{d}" for d in range(batch_rank)]
    names += [] if a_vector else ["i"]
    names += [] if b_vector else ["j"]

    def body(*axes: Expr) -> Expr:
        batch = axes[:batch_rank]
        rest = list(axes[batch_rank:])
        i = None if a_vector else rest.pop(0)
        j = None if b_vector else rest.pop(0)
        left = a[k.var] if a_vector else _batch_read(a, batch, (i, k.var))
        right = b[k.var] if b_vector else _batch_read(b, batch, (k.var, j))
        return te.sum(upcast(left, acc) * upcast(right, acc), axis=k)

    reduced = named_compute(out_type.shape, names, body,
                            "matmul" if acc == a.dtype else "matmul_acc")
    if acc == a.dtype:
        return [reduced]
    rounded = named_compute(out_type.shape, names,
                            lambda *axes: cast(out_type.dtype, reduced[axes]), "matmul")
    return [rounded]


# ----------------------------------------------------------------------------- softmax family


@dataclasses.dataclass(frozen=True)
class _Rows:
    """x seen as rows along `axis`: the names of x's axes and of the reduced shape (x without
    `axis`), and the index maps between them."""

    shape: tuple[int, ...]
    axis: int

    @property
    def names(self) -> list[str]:
        return [f"i{d}" for d in range(len(self.shape))]

    @property
    def kept(self) -> list[str]:
        return self.names[:self.axis] + self.names[self.axis + 1:]

    @property
    def reduced_shape(self) -> tuple[int, ...]:
        return self.shape[:self.axis] + self.shape[self.axis + 1:]

    def full(self, kept: Sequence[Expr], along: Expr) -> tuple[Expr, ...]:
        """x's indices of position `along` of the row at reduced-shape indices `kept`."""
        return (*kept[:self.axis], along, *kept[self.axis:])

    def drop(self, indices: Sequence[Expr]) -> tuple[Expr, ...]:
        """The reduced-shape indices of the row holding x's element at `indices`."""
        return (*indices[:self.axis], *indices[self.axis + 1:])

    @property
    def contiguous(self) -> bool:
        """Whether a row is contiguous in memory (the last axis)."""
        return self.axis == len(self.shape) - 1


#: the partial results a long row reduction folds its partials into before the serial end
_FOLDED_PARTIALS = 16


def partial_count(length: int) -> int:
    """How many interleaved partial results a row reduction over `length` contiguous
    elements keeps (0: a plain serial reduction). Partial p reduces elements p, p + P, p + 2P,
    ..., so a schedule vectorizes across p; four vectors of them hide the add latency of long
    rows. 16 partials are one AVX-512 vector of float32, two AVX2 ones."""
    if length < 64:
        return 0
    return 64 if length >= 1024 else 16


def row_reduce(reducer: Callable[..., Expr], shape: Sequence[int], names: Sequence[str],
               length: int, read: Callable[[Sequence[Expr], Expr], Expr], name: str,
               contiguous: bool = True) -> te.Tensor:
    """`reducer` over r in [0, length) of `read(o, r)`, one value per index o of `shape`: a
    STATS_TAG stage. For long `contiguous` rows (see `partial_count`) it is two stages: the
    partial results (named `name + PARTIAL_SUFFIX`, shape (*shape, P); 64 of them are
    folded into 16 by a second such stage), then their reduction. Sums are then added in
    another order, which float tolerances allow."""
    count = partial_count(length) if contiguous else 0
    if not count:
        r = te.reduce_axis(length, "r")
        return named_compute(shape, names, lambda *o: reducer(read(o, r.var), axis=r), name,
                             tag=STATS_TAG)
    steps = -(-length // count)
    k = te.reduce_axis(steps, "rk")

    def partial_body(*index: Expr) -> Expr:
        position = k.var * count + index[-1]
        inside = position < length if steps * count != length else None
        return reducer(read(index[:-1], position), axis=k, where=inside)

    partial = named_compute((*shape, count), [*names, "p"], partial_body,
                            name + PARTIAL_SUFFIX, tag=STATS_TAG)
    if count > _FOLDED_PARTIALS:
        # fold the vectors of partials into one first (vector operations), so that the
        # serial reduction at the end is a chain of 16, not of 64
        unfolded = partial
        j = te.reduce_axis(count // _FOLDED_PARTIALS, "rj")
        partial = named_compute(
            (*shape, _FOLDED_PARTIALS), [*names, "p"],
            lambda *index: reducer(
                unfolded[(*index[:-1], j.var * _FOLDED_PARTIALS + index[-1])], axis=j),
            name + "_folded" + PARTIAL_SUFFIX, tag=STATS_TAG)
        count = _FOLDED_PARTIALS
    rp = te.reduce_axis(count, "rp")
    return named_compute(shape, names, lambda *o: reducer(partial[(*o, rp.var)], axis=rp),
                         name, tag=STATS_TAG)


def _row_max(x: te.Tensor, rows: _Rows, acc: str, prefix: str) -> te.Tensor:
    """The maximum of each row (NaN-propagating, as numpy's), computed in `acc`."""
    return row_reduce(te.max, rows.reduced_shape, rows.kept, x.static_shape[rows.axis],
                      lambda o, r: upcast(x[rows.full(o, r)], acc), f"{prefix}_max",
                      rows.contiguous)


@register_compute("softmax")
def softmax(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    rows, dtype = _Rows(x.static_shape, workload.attrs.axis), x.dtype
    acc = compute_dtype(dtype)
    maximum = _row_max(x, rows, acc, "softmax")
    exps = named_compute(
        x.static_shape, rows.names,
        lambda *i: call("exp", upcast(x[i], acc) - maximum[rows.drop(i)]),
        "softmax_exp", tag=STATS_TAG)
    total = row_reduce(te.sum, rows.reduced_shape, rows.kept, x.static_shape[rows.axis],
                       lambda o, r: exps[rows.full(o, r)], "softmax_sum", rows.contiguous)
    # one division per row: a vector division costs several multiplies (the extra rounding
    # of the reciprocal is within an ulp)
    inverse = named_compute(rows.reduced_shape, rows.kept,
                            lambda *o: const(1.0, acc) / total[o], "softmax_inverse",
                            tag=STATS_TAG)
    out = named_compute(x.static_shape, rows.names,
                        lambda *i: upcast(exps[i] * inverse[rows.drop(i)], dtype), "softmax")
    return [out]


@register_compute("log_softmax")
def log_softmax(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    rows, dtype = _Rows(x.static_shape, workload.attrs.axis), x.dtype
    acc = compute_dtype(dtype)
    maximum = _row_max(x, rows, acc, "log_softmax")
    total = row_reduce(
        te.sum, rows.reduced_shape, rows.kept, x.static_shape[rows.axis],
        lambda o, r: call("exp", upcast(x[rows.full(o, r)], acc) - maximum[tuple(o)]),
        "log_softmax_sum", rows.contiguous)
    log_total = named_compute(rows.reduced_shape, rows.kept, lambda *o: call("log", total[o]),
                              "log_softmax_log", tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        row = rows.drop(i)
        return upcast((upcast(x[i], acc) - maximum[row]) - log_total[row], dtype)

    return [named_compute(x.static_shape, rows.names, body, "log_softmax")]


@register_compute("hardmax")
def hardmax(workload: Workload, inputs: Sequence[te.Tensor | None]) -> list[te.Tensor]:
    (x,) = inputs
    rows, dtype = _Rows(x.static_shape, workload.attrs.axis), x.dtype
    acc = compute_dtype(dtype)
    maximum = _row_max(x, rows, acc, "hardmax")
    length = x.static_shape[rows.axis]
    r = te.reduce_axis(length, "r")

    def first(*o: Expr) -> Expr:
        value = upcast(x[rows.full(o, r.var)], acc)
        # np.argmax: the first maximum, or the first NaN (the maximum is NaN exactly then)
        hit = logical_or(eq(value, maximum[o]), call("isnan", value))
        return te.min(select(hit, r.var, const(length)), axis=r)

    position = named_compute(rows.reduced_shape, rows.kept, first, "hardmax_first",
                             tag=STATS_TAG)

    def body(*i: Expr) -> Expr:
        return select(eq(i[rows.axis], position[rows.drop(i)]), const(1.0, dtype),
                      const(0.0, dtype))

    return [named_compute(x.static_shape, rows.names, body, "hardmax")]

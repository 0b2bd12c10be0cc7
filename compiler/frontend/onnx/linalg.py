"""Converters for ONNX's linear-algebra ops and their neighbours: Einsum, LpNormalization, Det,
and the ops whose ember primitives live beside det in ir/ops/linalg.py: CumProd, TopK, BitCast.

Einsum is planned here into ember's transpose, reshape, mul, reduce_sum and matmul: repeated
letters in one operand take a diagonal (a mask and a sum), letters that only one operand
has and the output lacks are summed away first, and operands then combine left to right,
each pair as one batched matmul over the letters they share. LpNormalization is x divided by
its L1 or L2 norm along an axis. Det, CumProd, TopK and BitCast map onto the ember ops
`det`, `cumprod`, `topk` and `bitcast` (ir/ops/linalg.py), whose kernels are loop nests.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.quantize import onnx_dtype
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape, onnx_axis
from ember.ir.graph import numpy_dtype
from ember.ir.ops.elementwise import FLOATS, NUMERIC
from ember.ir.ops.linalg import BITCASTABLE
from ember.ir.ops.nn import MATMUL_DTYPES

# ----------------------------------------------------------------------------- LpNormalization


@converter("LpNormalization", since=1)
def lp_normalization(ctx: ConvertContext) -> str:
    """x / ||x||_p along `axis` (p is 1 or 2); a zero norm gives zeros."""
    x = ctx.type(0)
    if x.dtype not in FLOATS:
        ctx.fail(f"input has dtype {x.dtype}; LpNormalization takes {', '.join(FLOATS)}")
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        ctx.fail(f"p {p} is not supported; ONNX defines p = 1 and p = 2")
    axis = onnx_axis(ctx, int(ctx.attr("axis", -1)), x.rank)
    value = ctx.input(0)
    terms = ctx.emit("abs", [value]) if p == 1 else ctx.emit("mul", [value, value])
    norm = ctx.emit("reduce_sum", [terms], {"axes": (axis,), "keepdims": True})
    if p == 2:
        norm = ctx.emit("sqrt", [norm])
    zero = ctx.constant(np.zeros((), numpy_dtype(x.dtype)))
    quotient = ctx.emit("div", [value, norm])
    return ctx.emit("where", [ctx.emit("equal", [norm, zero]), zero, quotient])


# ----------------------------------------------------------------------------- Einsum


class _Operand:
    """An ember value and the einsum letter of each of its axes."""

    def __init__(self, value: str, letters: str):
        self.value = value
        self.letters = letters


def parse_einsum(ctx: ConvertContext, equation: str, ranks: Sequence[int]) -> tuple[list[str],
                                                                                      str]:
    """The letters of each input and of the output, with '...' replaced by capital letters
    (right-aligned across the inputs, as broadcasting aligns them) and an implicit output made
    explicit: the ellipsis axes, then the letters used once, alphabetically."""
    equation = re.sub(r"\s", "", equation)
    if "->" in equation:
        inputs_text, output_text = equation.split("->")
    else:
        inputs_text, output_text = equation, None
    terms = inputs_text.split(",")
    if len(terms) != len(ranks):
        ctx.fail(f"equation {equation!r} names {len(terms)} inputs, the node has {len(ranks)}")
    ellipsis_rank = 0
    for term, rank in zip(terms, ranks):
        letters = term.replace("...", "")
        if not all(c in string.ascii_letters for c in letters):
            ctx.fail(f"equation {equation!r}: term {term!r} holds something other than letters")
        if "..." in term:
            ellipsis_rank = max(ellipsis_rank, rank - len(letters))
        elif len(letters) != rank:
            ctx.fail(f"equation {equation!r}: term {term!r} has {len(letters)} letters, its "
                     f"input rank {rank}")
    # capital letters stand for the ellipsis axes (the lowercase ones are the user's)
    spare = [c for c in string.ascii_uppercase if c not in equation]
    if ellipsis_rank > len(spare):
        ctx.fail(f"equation {equation!r}: the ellipsis spans too many axes")
    broadcast = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            width = rank - len(term.replace("...", ""))
            if width < 0:
                ctx.fail(f"equation {equation!r}: term {term!r} has more letters than its "
                         f"input's rank {rank}")
            term = term.replace("...", broadcast[ellipsis_rank - width:])
        expanded.append(term)
    if output_text is None:
        counts = {c: "".join(expanded).count(c) for c in "".join(expanded)}
        output = broadcast + "".join(sorted(c for c, n in counts.items()
                                            if n == 1 and c not in broadcast))
    else:
        output = output_text.replace("...", broadcast)
        if not all(c in string.ascii_letters for c in output) or \
                len(set(output)) != len(output):
            ctx.fail(f"equation {equation!r}: the output {output_text!r} must name distinct "
                     f"letters")
        missing = set(output) - set("".join(expanded))
        if missing:
            ctx.fail(f"equation {equation!r}: output letters {sorted(missing)} name no input "
                     f"axis")
    return expanded, output


def _take_diagonals(ctx: ConvertContext, operand: _Operand) -> _Operand:
    """An operand whose letters are distinct: each repeated letter keeps its diagonal."""
    while True:
        letters = operand.letters
        repeated = next((c for c in letters if letters.count(c) > 1), None)
        if repeated is None:
            return operand
        first = letters.index(repeated)
        second = letters.index(repeated, first + 1)
        t = ctx.builder.types[operand.value]
        if t.shape[first] != t.shape[second]:
            ctx.fail(f"letter {repeated!r} names axes of sizes {t.shape[first]} and "
                     f"{t.shape[second]}")
        size = t.shape[first]
        mask_shape = [1] * t.rank
        mask_shape[first] = mask_shape[second] = size
        mask = ctx.constant(np.eye(size, dtype=numpy_dtype(t.dtype)).reshape(mask_shape))
        masked = ctx.emit("mul", [operand.value, mask])
        value = ctx.emit("reduce_sum", [masked], {"axes": (second,), "keepdims": False})
        operand = _Operand(value, letters[:second] + letters[second + 1:])


def _sum_out(ctx: ConvertContext, operand: _Operand, keep: set[str]) -> _Operand:
    """Sum away the axes whose letters are not in `keep`."""
    axes = tuple(d for d, c in enumerate(operand.letters) if c not in keep)
    if not axes:
        return operand
    value = ctx.emit("reduce_sum", [operand.value], {"axes": axes, "keepdims": False})
    return _Operand(value, "".join(c for c in operand.letters if c in keep))


def _arrange(ctx: ConvertContext, operand: _Operand, order: str,
             sizes: dict[str, int]) -> str:
    """The operand's value transposed to the letter order `order` and broadcast to `sizes`
    (a size-1 ellipsis axis meets a longer one of the other operand)."""
    perm = tuple(operand.letters.index(c) for c in order)
    value = operand.value
    if perm != tuple(range(len(perm))):
        value = ctx.emit("transpose", [value], {"perm": perm})
    shape = tuple(sizes[c] for c in order)
    if ctx.builder.types[value].shape != shape:
        value = ctx.emit("broadcast_to", [value], {"shape": shape})
    return value


def _contract(ctx: ConvertContext, a: _Operand, b: _Operand, keep: set[str],
              sizes: dict[str, int]) -> _Operand:
    """a and b combined into one operand by a batched matmul: shared letters in `keep` are
    batch axes, the other shared letters are summed."""
    batch = "".join(c for c in a.letters if c in b.letters and c in keep)
    summed = "".join(c for c in a.letters if c in b.letters and c not in keep)
    left = "".join(c for c in a.letters if c not in b.letters)
    right = "".join(c for c in b.letters if c not in a.letters)

    def size(letters: str) -> int:
        return math.prod(sizes[c] for c in letters)

    a_value = emit_reshape(ctx, _arrange(ctx, a, batch + left + summed, sizes),
                           (size(batch), size(left), size(summed)))
    b_value = emit_reshape(ctx, _arrange(ctx, b, batch + summed + right, sizes),
                           (size(batch), size(summed), size(right)))
    product = ctx.emit("matmul", [a_value, b_value])
    letters = batch + left + right
    value = emit_reshape(ctx, product, tuple(sizes[c] for c in letters))
    return _Operand(value, letters)


@converter("Einsum", since=12)
def einsum(ctx: ConvertContext) -> str:
    """Einstein summation over the inputs, as transposes, diagonals, sums and matmuls."""
    count = ctx.num_inputs
    types = [ctx.type(i) for i in range(count)]
    dtype = types[0].dtype
    if any(t.dtype != dtype for t in types):
        ctx.fail(f"inputs have dtypes {[t.dtype for t in types]}; Einsum needs one dtype")
    if count > 1 and dtype not in MATMUL_DTYPES:
        ctx.fail(f"inputs have dtype {dtype}; ember contracts {', '.join(MATMUL_DTYPES)}")
    terms, output = parse_einsum(ctx, str(ctx.attr("equation")), [t.rank for t in types])
    sizes: dict[str, int] = {}
    for term, t in zip(terms, types):
        for c, dim in zip(term, t.shape):
            if sizes.get(c, 1) not in (1, dim) and dim != 1:
                ctx.fail(f"letter {c!r} names axes of sizes {sizes[c]} and {dim}")
            sizes[c] = max(sizes.get(c, 1), dim)
    operands = [_take_diagonals(ctx, _Operand(ctx.input(i), term))
                for i, term in enumerate(terms)]
    # Letters still needed after operand k: the output's and those of the operands past k.
    needed_after = [set(output).union(*(op.letters for op in operands[k + 1:]))
                    for k in range(len(operands))]
    result = _sum_out(ctx, operands[0], needed_after[0])
    for k in range(1, len(operands)):
        # a letter neither operand shares and nothing later needs is summed before the matmul
        other = _sum_out(ctx, operands[k], needed_after[k] | set(result.letters))
        result = _sum_out(ctx, result, needed_after[k] | set(other.letters))
        result = _contract(ctx, result, other, needed_after[k], sizes)
    # Letters whose size-1 axes never met a longer one keep size 1; broadcast them out.
    return _arrange(ctx, result, output, sizes)


# ----------------------------------------------------------------------------- Det


@converter("Det", since=11)
def det(ctx: ConvertContext) -> str:
    x = ctx.type(0)
    if x.dtype not in FLOATS:
        ctx.fail(f"input has dtype {x.dtype}; Det takes {', '.join(FLOATS)}")
    if x.rank < 2 or x.shape[-1] != x.shape[-2]:
        ctx.fail(f"input of shape {x.shape} must end in square matrices")
    return ctx.emit("det", [ctx.input(0)])


# ----------------------------------------------------------------------------- CumProd


@converter("CumProd", since=26)
def cumprod(ctx: ConvertContext) -> str:
    """The running product along the (constant) `axis` input."""
    x = ctx.type(0)
    if x.dtype not in NUMERIC:
        ctx.fail(f"input has dtype {x.dtype}; CumProd takes {', '.join(NUMERIC)}")
    axis = ctx.require_const(1, "axis")
    if axis.size != 1:
        ctx.fail(f"axis must be a scalar, got shape {axis.shape}")
    return ctx.emit("cumprod", [ctx.input(0)], {
        "axis": onnx_axis(ctx, int(axis.reshape(())), x.rank),
        "exclusive": bool(ctx.attr("exclusive", 0)),
        "reverse": bool(ctx.attr("reverse", 0)),
    })


# ----------------------------------------------------------------------------- TopK


def _topk(ctx: ConvertContext, k: int) -> tuple[str, str]:
    x = ctx.type(0)
    if x.dtype not in NUMERIC:
        ctx.fail(f"input has dtype {x.dtype}; TopK takes {', '.join(NUMERIC)}")
    if x.rank == 0:
        ctx.fail("input is a scalar; TopK needs an axis")
    axis = onnx_axis(ctx, int(ctx.attr("axis", -1)), x.rank)
    if not 0 <= k <= x.shape[axis]:
        ctx.fail(f"k={k} must lie in [0, {x.shape[axis]}], the size of axis {axis} of "
                 f"{x.shape}")
    # sorted=0 leaves the order to the implementation: ember's is always sorted
    values, indices = ctx.emit_multi("topk", [ctx.input(0)], {
        "k": k, "axis": axis, "largest": bool(ctx.attr("largest", 1)),
    })
    return values, indices


@converter("TopK", since=1)
def topk_1(ctx: ConvertContext) -> tuple[str, str]:
    return _topk(ctx, int(ctx.attr("k")))


@converter("TopK", since=10)
def topk_10(ctx: ConvertContext) -> tuple[str, str]:
    k = ctx.require_const(1, "k")
    if k.size != 1:
        ctx.fail(f"k must hold one value, got shape {k.shape}")
    return _topk(ctx, int(k.reshape(-1)[0]))


# ----------------------------------------------------------------------------- BitCast


@converter("BitCast", since=26)
def bitcast(ctx: ConvertContext) -> str:
    """The input's bytes as another dtype of the same width."""
    x = ctx.type(0)
    to = onnx_dtype(ctx, int(ctx.attr("to")), "to")
    if x.dtype not in BITCASTABLE or to not in BITCASTABLE:
        ctx.fail(f"BitCast from {x.dtype} to {to} is not supported; ember reinterprets "
                 f"{', '.join(BITCASTABLE)}")
    width, target = numpy_dtype(x.dtype).itemsize, numpy_dtype(to).itemsize
    if width != target:
        ctx.fail(f"{x.dtype} has {8 * width} bits but {to} has {8 * target}; BitCast needs "
                 f"equal widths")
    if to == x.dtype:
        return ctx.emit("identity", [ctx.input(0)])
    return ctx.emit("bitcast", [ctx.input(0)], {"to": to})

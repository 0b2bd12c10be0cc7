"""Loop-IR passes: what turns lowering's output (the "lowered" form) into what backends
compile (the "final" form).

The standard pipeline, in order (a flat list of named passes, readable top to bottom):

    simplify          fold constants, canonicalize index arithmetic with loop bounds, drop dead code
    flatten_storage   multi-dimensional buffers -> one row-major flat index
    simplify          merge what flattening leaves ((f // 16) * 16 + f % 16 -> f)
    vectorize         VECTORIZED loops -> Ramp/Broadcast vector code (or SERIAL fallback)
    unroll            UNROLLED loops -> copies of the body (or SERIAL when too long)
    simplify          fold the copies' constants and the vector arithmetic

`run_pipeline(func)` runs it, checking every intermediate function with `verify_primfunc`.

The final form (what codegen gets; `verify_primfunc(func, flattened=True, final=True)` holds):
- every buffer (params and Allocates) is one-dimensional, shape `(size,)`, with its scope; every
  Load/Store has one int64 index: a scalar, or for n lanes a `Ramp(base, stride, n)` (scalar
  int64 base and stride; contiguous when the stride is the constant 1, strided for another
  constant, and a symbolic stride is legal too) or, for loads only, any other int64xn vector
  (a gather: `A[v // 2]`, `A[B[v]]`, or a `Broadcast` index for a masked invariant load);
- vector values are `<dtype>x<n>`; `Broadcast(scalar, n)` spreads a scalar; all operands of a
  vector node have n lanes (Select's condition too); comparisons give boolxn;
- Load and Store may carry a predicate (bool with the access's lanes): masked-off lanes are not
  read (their value is unspecified) and not written;
- loops are SERIAL, PARALLEL or THREAD_BINDING (with thread_tag, GPU only); a SERIAL loop may
  carry the annotation ("unroll", True) when an unroll request was too long to unroll;
- other statements: SeqStmt, IfThenElse (scalar bool condition), LetStmt, Allocate, AttrStmt
  (pragmas), Evaluate (intrinsic calls; `Evaluate` of a constant is a no-op, `NOP`);
- a variable name is bound at most once on any path from the root (loops, lets), but sibling
  scopes may reuse names (unrolled copies of an inner loop do);
- integer arithmetic wraps; FloorDiv/FloorMod round toward negative infinity, Div truncates
  (integers); float comparisons follow IEEE (NE is true when either side is NaN).
"""

from __future__ import annotations

from collections.abc import Callable

from ember.errors import IRError
from ember.ir.loop import PrimFunc
from ember.ir.passes.flatten import flatten_storage
from ember.ir.passes.simplify import NOP, simplify
from ember.ir.passes.unroll import unroll
from ember.ir.passes.vectorize import vectorize, why_not_vectorizable
from ember.ir.passes.verify import verify_primfunc

#: The standard loop-IR pipeline after lowering, as (name, pass) pairs.
PIPELINE: list[tuple[str, Callable[[PrimFunc], PrimFunc]]] = [
    ("simplify", simplify),
    ("flatten_storage", flatten_storage),
    ("simplify", simplify),
    ("vectorize", vectorize),
    ("unroll", unroll),
    ("simplify", simplify),
]


def run_pipeline(func: PrimFunc, verify: bool = True) -> PrimFunc:
    """Run `PIPELINE` on a lowered PrimFunc and return the final form. With `verify`, the input
    and every pass's output are checked by `verify_primfunc` (the last with `final=True`), so a
    broken pass is caught where it breaks."""
    flattened: bool | None = None
    if verify:
        _checked(func, "the pipeline's input", flattened=None)
    for name, run_pass in PIPELINE:
        func = run_pass(func)
        if name == "flatten_storage":
            flattened = True
        if verify:
            _checked(func, f"pass {name}", flattened=flattened)
    if verify:
        _checked(func, "the pipeline (final form)", flattened=True, final=True)
    return func


def _checked(func: PrimFunc, after: str, flattened: bool | None, final: bool = False) -> None:
    try:
        verify_primfunc(func, flattened, final=final)
    except IRError as error:
        raise IRError(f"after {after}: {error}") from None


__all__ = [
    "NOP", "PIPELINE", "flatten_storage", "run_pipeline", "simplify", "unroll", "vectorize",
    "verify_primfunc", "why_not_vectorizable",
]

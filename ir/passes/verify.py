"""The loop-IR verifier: checks a PrimFunc's invariants and prints the function when one breaks.

Tests and `run_pipeline(verify=True)` run it between passes. It checks scoping (every variable
is bound by an enclosing loop or let, or is a symbol of a parameter's shape; no name is bound
again while in scope), buffers (each is a parameter or allocated by an enclosing Allocate, and
every use agrees with that declaration: shape, dtype, scope), indexing (one index per
dimension; int64 indices; with `flattened=True`, every buffer one-dimensional), and types
(operands of binary ops agree, conditions and predicates are bool, a store's value is the
buffer's dtype with the index's lanes, vector lanes agree, loop bounds are int64 scalars).
With `final=True` it also checks the codegen contract: no VECTORIZED or UNROLLED loop is left.
"""

from __future__ import annotations

from ember.errors import IRError
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.printer import format_func
from ember.ir.visitor import collect


class _Failure(Exception):
    pass


def _where(node: object) -> str:
    text = str(node).strip().splitlines()
    return text[0].strip() if text else repr(node)


class _Verifier:
    def __init__(self, func: L.PrimFunc, flattened: bool | None, final: bool):
        self.func, self.flattened, self.final = func, flattened, final
        self.vars: dict[str, E.Var] = {}
        self.buffers: dict[str, L.Buffer] = {}

    def fail(self, message: str, node: object) -> None:
        raise _Failure(f"{message}\n  at: {_where(node)}")

    # -- declarations

    def declare_buffer(self, buffer: L.Buffer, node: object) -> None:
        if buffer.name in self.buffers:
            self.fail(f"buffer {buffer.name} is declared twice", node)
        if self.flattened and len(buffer.shape) != 1:
            self.fail(f"buffer {buffer.name} has shape {buffer.shape} after flattening "
                      f"(expected one dimension)", node)
        for dim in buffer.shape:
            if isinstance(dim, E.Expr):
                self.check_index(dim, node, f"a dimension of {buffer.name}")
        self.buffers[buffer.name] = buffer

    def bind(self, var: object, node: object, what: str) -> None:
        if not isinstance(var, E.Var):
            self.fail(f"{what} binds {var!r}, which is not a Var", node)
        if var.name in self.vars:
            self.fail(f"{what} {var.name} is already bound by an enclosing scope "
                      f"(names must not be shadowed)", node)
        self.vars[var.name] = var

    def check_index(self, e: E.Expr, node: object, what: str) -> None:
        self.expr(e, node)
        if e.dtype != E.INDEX:
            self.fail(f"{what} must be a scalar {E.INDEX}, got {e} of dtype {e.dtype}", node)

    # -- statements

    def stmt(self, s: L.Stmt) -> None:
        if isinstance(s, L.SeqStmt):
            if not s.stmts:
                self.fail("empty statement sequence", s)
            for child in s.stmts:
                self.stmt(child)
        elif isinstance(s, L.For):
            self.check_index(s.min, s, f"the start of the loop over {s.var.name}")
            self.check_index(s.extent, s, f"the extent of the loop over {s.var.name}")
            if s.var.dtype != E.INDEX:
                self.fail(f"loop variable {s.var.name} is {s.var.dtype}, not {E.INDEX}", s)
            if s.kind is L.ForKind.THREAD_BINDING and not s.thread_tag:
                self.fail(f"thread-bound loop over {s.var.name} has no thread_tag", s)
            if self.final and s.kind in (L.ForKind.VECTORIZED, L.ForKind.UNROLLED):
                self.fail(f"a {s.kind.value} loop over {s.var.name} is left in the final form", s)
            self.bind(s.var, s, "loop variable")
            self.stmt(s.body)
            del self.vars[s.var.name]
        elif isinstance(s, L.Store):
            lanes = self.access(s, s)
            if s.value is None or not isinstance(s.value, E.Expr):
                self.fail("a store needs a value expression", s)
            self.expr(s.value, s)
            expected = E.with_lanes(s.buffer.dtype, lanes)
            if s.value.dtype != expected:
                self.fail(f"the value stored into {s.buffer.name} is {s.value.dtype}, expected "
                          f"{expected} (the buffer's dtype with the index's lanes)", s)
            self.predicate(s.predicate, lanes, s)
        elif isinstance(s, L.IfThenElse):
            self.expr(s.condition, s)
            if s.condition.dtype != "bool":
                self.fail(f"an if condition must be a scalar bool, got {s.condition.dtype}", s)
            self.stmt(s.then_case)
            if s.else_case is not None:
                self.stmt(s.else_case)
        elif isinstance(s, L.LetStmt):
            self.expr(s.value, s)
            if s.value.dtype != getattr(s.var, "dtype", None):
                self.fail(f"let {s.var.name} is {s.var.dtype} but its value is {s.value.dtype}", s)
            self.bind(s.var, s, "let variable")
            self.stmt(s.body)
            del self.vars[s.var.name]
        elif isinstance(s, L.Allocate):
            self.declare_buffer(s.buffer, s)
            self.stmt(s.body)
            del self.buffers[s.buffer.name]
        elif isinstance(s, L.AttrStmt):
            if isinstance(s.value, E.Expr):
                self.expr(s.value, s)
            self.stmt(s.body)
        elif isinstance(s, L.Evaluate):
            self.expr(s.value, s)
        else:
            self.fail(f"unexpected statement {type(s).__name__} in loop IR", s)

    def access(self, access: L.Load | L.Store, node: object) -> int:
        """Check a Load or Store's buffer and indices; return the lanes it accesses."""
        declared = self.buffers.get(access.buffer.name)
        if declared is None:
            self.fail(f"buffer {access.buffer.name} is neither a parameter nor allocated in an "
                      f"enclosing scope", node)
        if declared != access.buffer:
            self.fail(f"buffer {access.buffer.name} is used as {access.buffer} but declared as "
                      f"{declared}", node)
        if len(access.indices) != len(declared.shape):
            self.fail(f"buffer {declared.name} has {len(declared.shape)} dimensions but is "
                      f"indexed with {len(access.indices)} indices", node)
        lanes = {E.lanes_of(i.dtype) for i in access.indices} or {1}
        for index in access.indices:
            self.expr(index, node)
            if E.element_of(index.dtype) != E.INDEX:
                self.fail(f"index {index} of {declared.name} is {index.dtype}, not {E.INDEX}",
                          node)
        if len(lanes) != 1:
            self.fail(f"the indices of {declared.name} have different lanes: {sorted(lanes)}",
                      node)
        return lanes.pop()

    def predicate(self, predicate: E.Expr | None, lanes: int, node: object) -> None:
        if predicate is None:
            return
        self.expr(predicate, node)
        if predicate.dtype != E.with_lanes("bool", lanes):
            self.fail(f"predicate {predicate} is {predicate.dtype}, expected "
                      f"{E.with_lanes('bool', lanes)}", node)

    # -- expressions

    def expr(self, e: E.Expr, node: object) -> None:
        if not isinstance(e, E.Expr):
            self.fail(f"{e!r} is not an expression", node)
        if isinstance(e, E.Var):
            bound = self.vars.get(e.name)
            if bound is None:
                self.fail(f"variable {e.name} is used outside the scope that binds it "
                          f"(or never bound)", node)
            if bound.dtype != e.dtype:
                self.fail(f"variable {e.name} is used as {e.dtype} but bound as {bound.dtype}",
                          node)
        elif isinstance(e, E.IntImm):
            element = E.element_of(e.dtype)
            if element == "bool" and e.value not in (0, 1):
                self.fail(f"bool immediate holds {e.value}", node)
        elif isinstance(e, E.FloatImm):
            if not E.is_float_dtype(e.dtype):
                self.fail(f"float immediate {e.value} has dtype {e.dtype}", node)
        elif isinstance(e, E.BinaryOp):
            self.expr(e.a, node)
            self.expr(e.b, node)
            if e.a.dtype != e.b.dtype:
                self.fail(f"operands of {type(e).__name__} disagree: {e.a} is {e.a.dtype}, "
                          f"{e.b} is {e.b.dtype}", node)
            if isinstance(e, (E.And, E.Or)) and E.element_of(e.a.dtype) != "bool":
                self.fail(f"{type(e).__name__} of non-bool operands ({e.a.dtype}): {e}", node)
        elif isinstance(e, E.Not):
            self.expr(e.a, node)
            if E.element_of(e.a.dtype) != "bool":
                self.fail(f"Not of a non-bool operand ({e.a.dtype}): {e}", node)
        elif isinstance(e, E.Select):
            for part in (e.condition, e.true_value, e.false_value):
                self.expr(part, node)
            if e.true_value.dtype != e.false_value.dtype:
                self.fail(f"select branches disagree: {e.true_value.dtype} and "
                          f"{e.false_value.dtype}", node)
            if e.condition.dtype != E.with_lanes("bool", E.lanes_of(e.dtype)):
                self.fail(f"select condition is {e.condition.dtype}, expected "
                          f"{E.with_lanes('bool', E.lanes_of(e.dtype))}", node)
        elif isinstance(e, E.Cast):
            self.expr(e.value, node)
            if E.lanes_of(e.dtype) != E.lanes_of(e.value.dtype):
                self.fail(f"cast to {e.dtype} from {e.value.dtype} changes the lanes", node)
        elif isinstance(e, E.Call):
            for arg in e.args:
                self.expr(arg, node)
            self.call(e, node)
        elif isinstance(e, E.Let):
            self.expr(e.value, node)
            if e.value.dtype != e.var.dtype:
                self.fail(f"let {e.var.name} is {e.var.dtype} but its value is {e.value.dtype}",
                          node)
            self.bind(e.var, node, "let variable")
            self.expr(e.body, node)
            del self.vars[e.var.name]
        elif isinstance(e, E.Ramp):
            self.expr(e.base, node)
            self.expr(e.stride, node)
            if (E.lanes_of(e.base.dtype) != 1 or e.base.dtype != e.stride.dtype
                    or not E.is_int_dtype(e.base.dtype)):
                self.fail(f"ramp needs scalar integer base and stride of one dtype: {e}", node)
            if e.lanes < 2:
                self.fail(f"ramp of {e.lanes} lanes", node)
        elif isinstance(e, E.Broadcast):
            self.expr(e.value, node)
            if E.lanes_of(e.value.dtype) != 1 or e.lanes < 2:
                self.fail(f"broadcast needs a scalar value and at least 2 lanes: {e}", node)
        elif isinstance(e, L.Load):
            lanes = self.access(e, node)
            self.predicate(e.predicate, lanes, node)
        else:
            self.fail(f"unexpected expression {type(e).__name__} in loop IR: {e}", node)

    def call(self, e: E.Call, node: object) -> None:
        arity = E.INTRINSICS.get(e.name)
        if arity is None:
            return  # a tensorized intrinsic: its arguments are its own business
        if len(e.args) != arity:
            self.fail(f"intrinsic {e.name} takes {arity} arguments, got {len(e.args)}", node)
        dtypes = {a.dtype for a in e.args}
        if len(dtypes) != 1:
            self.fail(f"arguments of {e.name} disagree: {sorted(dtypes)}", node)
        lanes = E.lanes_of(e.args[0].dtype)
        expected = E.with_lanes("bool" if e.name in ("isnan", "isinf") else e.args[0].dtype,
                                lanes)
        if e.dtype != expected:
            self.fail(f"{e.name} of {e.args[0].dtype} is typed {e.dtype}, expected {expected}",
                      node)

    def run(self) -> None:
        func = self.func
        for param in func.params:
            for dim in param.shape:
                for var in collect(dim, E.Var) if isinstance(dim, E.Expr) else ():
                    self.vars.setdefault(var.name, var)  # shape symbols are in scope
        for param in func.params:
            self.declare_buffer(param, f"parameter {param}")
        self.stmt(func.body)


def verify_primfunc(func: L.PrimFunc, flattened: bool | None = None, *,
                    final: bool = False) -> L.PrimFunc:
    """Return `func` unchanged if it is well formed, else raise IRError naming the problem,
    the statement where it is and the whole function.

    `flattened=True` also requires every buffer to be one-dimensional (after
    `flatten_storage`); False or None accept any rank (indices must match it either way).
    `final=True` requires the codegen form: no VECTORIZED or UNROLLED loops.
    """
    try:
        _Verifier(func, flattened, final).run()
    except _Failure as failure:
        raise IRError(f"invalid loop IR in {func.name!r}: {failure}\n{format_func(func)}") from None
    return func

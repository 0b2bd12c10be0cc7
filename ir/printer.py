"""Text forms of scalar expressions (and, with the loop IR, of statements and functions)."""

from __future__ import annotations

from ember.ir import expr as E

_BINARY_SYMBOLS = {
    E.Add: "+", E.Sub: "-", E.Mul: "*", E.Div: "/", E.FloorDiv: "//", E.FloorMod: "%",
    E.EQ: "==", E.NE: "!=", E.LT: "<", E.LE: "<=", E.GT: ">", E.GE: ">=",
    E.And: "&&", E.Or: "||",
}


def format_expr(e: E.Expr) -> str:
    """One expression as text, fully parenthesized where it nests: `((i*4) + j)`."""
    if isinstance(e, E.Var):
        return e.name
    if isinstance(e, E.IntImm):
        if e.dtype == "bool":
            return "True" if e.value else "False"
        return str(e.value) if e.dtype == E.INDEX else f"{e.dtype}({e.value})"
    if isinstance(e, E.FloatImm):
        return f"{e.value!r}f" if e.dtype == "float32" else f"{e.dtype}({e.value!r})"
    symbol = _BINARY_SYMBOLS.get(type(e))
    if symbol is not None:
        return f"({format_expr(e.a)} {symbol} {format_expr(e.b)})"
    if isinstance(e, (E.Min, E.Max)):
        return f"{type(e).__name__.lower()}({format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, E.Not):
        return f"!{format_expr(e.a)}"
    if isinstance(e, E.Select):
        return (f"select({format_expr(e.condition)}, {format_expr(e.true_value)}, "
                f"{format_expr(e.false_value)})")
    if isinstance(e, E.Cast):
        return f"{e.dtype}({format_expr(e.value)})"
    if isinstance(e, E.Call):
        return f"{e.name}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, E.Let):
        return f"(let {e.var.name} = {format_expr(e.value)} in {format_expr(e.body)})"
    if isinstance(e, E.Ramp):
        return f"ramp({format_expr(e.base)}, {format_expr(e.stride)}, {e.lanes})"
    if isinstance(e, E.Broadcast):
        return f"broadcast({format_expr(e.value)}, {e.lanes})"
    formatter = getattr(e, "format", None)  # nodes defined by later IR layers print themselves
    if formatter is not None:
        return formatter(format_expr)
    return repr(e)


def format_stmt(stmt, indent: int = 0) -> str:
    """A loop-IR statement as indented text, one statement a line."""
    from ember.ir import loop as L

    pad = "  " * indent
    if isinstance(stmt, L.SeqStmt):
        return "\n".join(format_stmt(s, indent) for s in stmt.stmts)
    if isinstance(stmt, L.For):
        kind = "" if stmt.kind is L.ForKind.SERIAL else f" {stmt.kind.value}"
        tag = f" [{stmt.thread_tag}]" if stmt.thread_tag else ""
        start = format_expr(stmt.min)
        extent = format_expr(stmt.extent)
        bounds = extent if start == "0" else f"{start}, {start} + {extent}"
        head = f"{pad}for{kind} {stmt.var.name} in range({bounds}){tag}:"
        return head + "\n" + format_stmt(stmt.body, indent + 1)
    if isinstance(stmt, L.Store):
        index = ", ".join(format_expr(i) for i in stmt.indices)
        guard = f" if {format_expr(stmt.predicate)}" if stmt.predicate is not None else ""
        return f"{pad}{stmt.buffer.name}[{index}] = {format_expr(stmt.value)}{guard}"
    if isinstance(stmt, L.IfThenElse):
        text = f"{pad}if {format_expr(stmt.condition)}:\n{format_stmt(stmt.then_case, indent + 1)}"
        if stmt.else_case is not None:
            text += f"\n{pad}else:\n{format_stmt(stmt.else_case, indent + 1)}"
        return text
    if isinstance(stmt, L.LetStmt):
        return (f"{pad}{stmt.var.name} = {format_expr(stmt.value)}\n"
                + format_stmt(stmt.body, indent))
    if isinstance(stmt, L.Allocate):
        return f"{pad}allocate {stmt.buffer}\n" + format_stmt(stmt.body, indent)
    if isinstance(stmt, L.AttrStmt):
        value = format_expr(stmt.value) if isinstance(stmt.value, E.Expr) else repr(stmt.value)
        return f"{pad}attr {stmt.key} = {value}:\n" + format_stmt(stmt.body, indent + 1)
    if isinstance(stmt, L.Evaluate):
        return f"{pad}{format_expr(stmt.value)}"
    return f"{pad}{stmt!r}"


def format_func(func) -> str:
    params = ", ".join(str(p) for p in func.params)
    return f"def {func.name}({params}):\n{format_stmt(func.body, 1)}"

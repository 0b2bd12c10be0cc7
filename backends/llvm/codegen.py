"""Loop-IR PrimFuncs ("final" form) to an llvmlite module: functions, statements, loops,
allocations and the outlining of parallel loops (expressions are in exprs.py).

[Note: kernel calling convention]
Every PrimFunc becomes `i32 @ember_<name>(ptr %buf0, ptr %buf1, ...)`, one pointer per buffer in
order, returning 0, or 1 when a heap allocation failed. Each pointer is `noalias` (no two
params overlap when one of them is written), `align <param_align>` (64 bytes by default: the
runtime copies arrays that are not), `nonnull` and `dereferenceable(<bytes of the buffer>)`.
runtime.py keeps this contract for calls from Python.

[Note: parallel loops]
A PARALLEL loop is outlined into two internal functions: `@f.parallelN.body(bufs..., vars...,
i64 begin, i64 end, ptr status)` runs the iterations [begin, end) with noalias buffer params
(the inliner keeps that knowledge as alias scopes), and `@f.parallelN(ptr closure, i32 task,
i32 num_tasks)` takes task `task`'s static block of the range from the closure and calls it.
The kernel fills the closure on its stack and calls
`__ember_parallel_launch(ptr task_fn, ptr closure, i64 extent)` (parallel.py), which runs the
tasks on the worker pool and returns when all are done. A parallel loop inside another one
runs serially in the worker that reaches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.backends.llvm.exprs import ExprEmitter, known_factor
from ember.backends.llvm.host import TargetInfo, target_machine
from ember.backends.llvm.runtime import KernelSignature, ParamSpec
from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.visitor import collect

#: constant-size Allocates up to this many bytes live on the stack; larger ones on the heap
STACK_LIMIT_BYTES = 64 * 1024
#: alignment of stack and heap allocations (a cache line, one AVX-512 register)
ALLOCATION_ALIGN = 64
#: the runtime entry point that runs a parallel loop's tasks (parallel.py defines it)
LAUNCH_SYMBOL = "__ember_parallel_launch"

_LAUNCH_TYPE = ir.FunctionType(T.VOID, [T.PTR, T.PTR, T.I64])
_TASK_TYPE = ir.FunctionType(T.VOID, [T.PTR, T.I32, T.I32])


@dataclasses.dataclass
class BufferSlot:
    """Where a buffer lives in the function being emitted."""

    buffer: L.Buffer
    pointer: ir.Value
    align: int


class _FunctionAttributes(ir.values.FunctionAttributes):
    """llvmlite's function attributes plus string attributes ("prefer-vector-width"="512")."""

    def __init__(self, strings: dict[str, str]):
        super().__init__(["nounwind"])
        self.strings = strings

    def _to_list(self, ret_type: ir.Type) -> list[str]:
        return super()._to_list(ret_type) + [f'"{k}"="{v}"' for k, v in self.strings.items()]


def fast_math_flags(func: L.PrimFunc) -> tuple[str, ...]:
    """The fast-math flags `func.attrs["fast_math"]` asks for: True means all ("fast"), a
    sequence names LLVM flags (("contract",) lets LLVM fuse a*b+c into an FMA); default none."""
    requested = func.attr_dict.get("fast_math", False)
    if requested is True:
        return ("fast",)
    if not requested:
        return ()
    flags = (requested,) if isinstance(requested, str) else tuple(requested)
    unknown = set(flags) - set(ir.instructions.FastMathFlags._known)
    if unknown:
        raise T.CodegenError(f"{func.name}: unknown fast-math flag(s) {sorted(unknown)}; "
                             f"known: {sorted(ir.instructions.FastMathFlags._known)}")
    return flags


def _static_size(buffer: L.Buffer) -> int | None:
    dims = [E.const(d) for d in buffer.shape]
    if all(isinstance(d, E.IntImm) for d in dims):
        return math.prod(d.value for d in dims)
    return None


def written_buffers(body: L.Stmt) -> set[str]:
    return {s.buffer.name for s in collect(body, L.Store)}


class ModuleEmitter:
    """Builds one llvmlite module from PrimFuncs for a target (see `build_module`)."""

    def __init__(self, info: TargetInfo, name: str = "ember", param_align: int = 64):
        self.info = info
        self.param_align = param_align
        self.module = ir.Module(name=name)
        self.module.triple = info.triple
        self.module.data_layout = str(target_machine(info).target_data)
        self._parallel_count: dict[str, int] = {}
        self.signatures: list[KernelSignature] = []

    def declare(self, name: str, function_type: ir.FunctionType) -> ir.Function:
        """The module's function `name`, declared on first use."""
        existing = self.module.globals.get(name)
        if existing is None:
            return ir.Function(self.module, function_type, name)
        if not isinstance(existing, ir.Function) or existing.ftype != function_type:
            raise T.CodegenError(f"symbol {name!r} is used both as {existing.type} and as "
                                 f"{function_type}; rename the kernel")
        return existing

    def string_attributes(self) -> dict[str, str]:
        strings = {"target-cpu": self.info.cpu}
        if self.info.features:
            strings["target-features"] = self.info.features
        if self.info.prefer_vector_width:
            strings["prefer-vector-width"] = str(self.info.prefer_vector_width)
        return strings

    def new_function(self, name: str, function_type: ir.FunctionType,
                     internal: bool) -> ir.Function:
        if name in self.module.globals:
            raise T.CodegenError(f"two functions are named {name!r}")
        function = ir.Function(self.module, function_type, name)
        function.attributes = _FunctionAttributes(self.string_attributes())
        if internal:
            function.linkage = "internal"
        return function

    def parallel_name(self, kernel: str) -> str:
        count = self._parallel_count.get(kernel, 0)
        self._parallel_count[kernel] = count + 1
        return f"{kernel}.parallel{count}"

    def add(self, func: L.PrimFunc) -> KernelSignature:
        """Emit `func` as an exported kernel (see [Note: kernel calling convention])."""
        params: list[ParamSpec] = []
        written = written_buffers(func.body)
        seen: set[str] = set()
        for buffer in func.params:
            size = _static_size(buffer)
            if size is None:
                raise T.CodegenError(f"{func.name}: param {buffer.name} has a symbolic shape "
                                     f"{buffer.shape}; the llvm backend needs static shapes")
            if buffer.name in seen:
                raise T.CodegenError(f"{func.name}: two params are named {buffer.name!r}")
            seen.add(buffer.name)
            T.scalar_type(buffer.dtype)
            params.append(ParamSpec(buffer.name, buffer.dtype, size, buffer.name in written))
        signature = KernelSignature(func.name, tuple(params))
        if signature.symbol in self.module.globals:
            raise T.CodegenError(f"two kernels are named {func.name!r}")
        function_type = ir.FunctionType(T.I32, [T.PTR] * len(func.params))
        function = self.new_function(signature.symbol, function_type, internal=False)
        slots = []
        for argument, buffer, spec in zip(function.args, func.params, params):
            argument.name = buffer.name
            _pointer_attributes(argument, self.param_align,
                                spec.size * T.itemsize(buffer.dtype))
            slots.append(BufferSlot(buffer, argument, self.param_align))
        emitter = FunctionEmitter(self, func, function, fast_math_flags(func), in_parallel=False)
        emitter.buffers = {slot.buffer.name: slot for slot in slots}
        emitter.emit_body(func.body)
        self.signatures.append(signature)
        return signature


def _pointer_attributes(argument: ir.Argument, align: int, size_bytes: int | None) -> None:
    argument.attributes.add("noalias")
    argument.attributes.add("nonnull")
    argument.attributes.align = align
    if size_bytes:
        argument.attributes.dereferenceable = size_bytes


class FunctionEmitter(ExprEmitter):
    """Emits the statements of one LLVM function (a kernel or an outlined parallel body)."""

    def __init__(self, module: ModuleEmitter, func: L.PrimFunc, function: ir.Function,
                 fast: tuple[str, ...], in_parallel: bool,
                 status_pointer: ir.Value | None = None):
        self.module_emitter = module
        self.func = func
        self.function = function
        self.fast = fast
        self.in_parallel = in_parallel
        self.status_pointer = status_pointer  # set in outlined bodies: where failure is told
        self.index_mode = False
        self.env: dict[E.Var, ir.Value] = {}
        self.var_factors: dict[E.Var, int] = {}
        self.buffers: dict[str, BufferSlot] = {}
        self.entry = function.append_basic_block("entry")
        self.allocas = ir.IRBuilder(self.entry)
        start = function.append_basic_block("start")
        self.builder = ir.IRBuilder(start)
        self._fail_block: ir.Block | None = None
        self._launch_status: ir.Value | None = None

    # ------------------------------------------------------------------ plumbing

    def declare(self, name: str, function_type: ir.FunctionType) -> ir.Function:
        return self.module_emitter.declare(name, function_type)

    def error(self, message: str, node: Any) -> T.CodegenError:
        where = ""
        if node is not None:
            text = str(node)
            text = text if len(text) <= 600 else text[:600] + " ..."
            where = f"\n  at {type(node).__name__}: " + text.replace("\n", "\n    ")
        return T.CodegenError(f"{self.func.name}: {message}{where}")

    @contextlib.contextmanager
    def binding(self, var: E.Var, value: ir.Value, source: E.Expr | None) -> Iterator[None]:
        """Bind `var` to `value` over a scope (Let, LetStmt, loop bodies)."""
        missing = object()
        old = self.env.get(var, missing)
        old_factor = self.var_factors.get(var)
        self.env[var] = value
        if source is not None and E.is_int_dtype(source.dtype):
            self.var_factors[var] = known_factor(source, self.var_factors)
        else:
            self.var_factors.pop(var, None)
        try:
            yield
        finally:
            if old is missing:
                del self.env[var]
            else:
                self.env[var] = old
            if old_factor is None:
                self.var_factors.pop(var, None)
            else:
                self.var_factors[var] = old_factor

    def buffer_slot(self, buffer: L.Buffer, node: Any) -> BufferSlot:
        slot = self.buffers.get(buffer.name)
        if slot is None:
            raise self.error(f"buffer {buffer.name} is neither a param nor allocated here",
                             node)
        if slot.buffer.dtype != buffer.dtype:
            raise self.error(f"buffer {buffer.name} is {slot.buffer.dtype} but accessed as "
                             f"{buffer.dtype}", node)
        return slot

    def emit_body(self, body: L.Stmt) -> None:
        self.stmt(body)
        self.finish()

    def finish(self) -> None:
        """Return success from the current block and close the entry (alloca) block."""
        self._return_success()
        self.allocas.branch(self.function.blocks[1])

    def _return_success(self) -> None:
        if self.function.ftype.return_type == T.VOID:
            self.builder.ret_void()
        else:
            self.builder.ret(T.I32(0))

    def fail_block(self) -> ir.Block:
        """A block that reports failure (heap exhaustion) and leaves the function."""
        if self._fail_block is None:
            saved = self.builder.block
            self._fail_block = self.function.append_basic_block("fail")
            self.builder.position_at_end(self._fail_block)
            if self.status_pointer is not None:
                self.builder.atomic_rmw("xchg", self.status_pointer, T.I32(1), "monotonic")
            if self.function.ftype.return_type == T.VOID:
                self.builder.ret_void()
            else:
                self.builder.ret(T.I32(1))
            self.builder.position_at_end(saved)
        return self._fail_block

    # ------------------------------------------------------------------ statements

    def stmt(self, s: L.Stmt) -> None:
        method = getattr(self, f"_stmt_{type(s).__name__}", None)
        if method is None:
            raise self.error(f"unsupported statement {type(s).__name__}", s)
        method(s)

    def _stmt_SeqStmt(self, s: L.SeqStmt) -> None:
        for child in s.stmts:
            self.stmt(child)

    def _stmt_Store(self, s: L.Store) -> None:
        index_lanes = max(E.lanes_of(i.dtype) for i in s.indices)
        value_lanes = E.lanes_of(s.value.dtype)
        if value_lanes not in (1, index_lanes):
            raise self.error(f"store of {s.value.dtype} at a {index_lanes}-lane index", s)
        if E.element_of(s.value.dtype) != s.buffer.dtype:
            raise self.error(f"store of {s.value.dtype} into the {s.buffer.dtype} buffer "
                             f"{s.buffer.name}", s)
        value = self.expr(s.value)
        self.memory_access(s.buffer, s.indices, s.predicate, value, s)

    def _stmt_Evaluate(self, s: L.Evaluate) -> None:
        self.expr(s.value)

    def _stmt_AttrStmt(self, s: L.AttrStmt) -> None:
        self.stmt(s.body)  # pragmas this backend does not know are hints: ignored

    def _stmt_LetStmt(self, s: L.LetStmt) -> None:
        value = self.expr(s.value)
        with self.binding(s.var, value, s.value):
            self.stmt(s.body)

    def _stmt_IfThenElse(self, s: L.IfThenElse) -> None:
        bld = self.builder
        condition = self.condition(s.condition)
        then_block = bld.append_basic_block("if.then")
        else_block = bld.append_basic_block("if.else") if s.else_case is not None else None
        done = bld.append_basic_block("if.end")
        bld.cbranch(condition, then_block, else_block or done)
        bld.position_at_end(then_block)
        self.stmt(s.then_case)
        bld.branch(done)
        if s.else_case is not None:
            bld.position_at_end(else_block)
            self.stmt(s.else_case)
            bld.branch(done)
        bld.position_at_end(done)

    def _stmt_Allocate(self, s: L.Allocate) -> None:
        buffer = s.buffer
        element_type = T.memory_type(buffer.dtype)
        itemsize = T.itemsize(buffer.dtype)
        size = _static_size(buffer)
        heap = size is None or size * itemsize > STACK_LIMIT_BYTES
        if not heap:
            pointer = T.alloca(self.allocas, ir.ArrayType(element_type, max(size, 1)),
                               buffer.name, ALLOCATION_ALIGN)
        else:
            count: ir.Value = T.I64(1)
            for dim in buffer.shape:
                count = self.builder.mul(count, self.index(E.const(dim)), flags=("nsw",))
            nbytes = self.builder.mul(count, T.I64(itemsize), flags=("nsw",))
            # aligned_alloc wants a multiple of the alignment
            rounded = self.builder.and_(self.builder.add(nbytes, T.I64(ALLOCATION_ALIGN - 1)),
                                        T.I64(-ALLOCATION_ALIGN))
            allocate = self.declare("aligned_alloc", ir.FunctionType(T.PTR, [T.I64, T.I64]))
            pointer = self.builder.call(allocate, [T.I64(ALLOCATION_ALIGN), rounded],
                                        name=buffer.name)
            failed = self.builder.icmp_unsigned("==", pointer, ir.Constant(T.PTR, None))
            ok = self.builder.append_basic_block(f"{buffer.name}.allocated")
            self.builder.cbranch(failed, self.fail_block(), ok)
            self.builder.position_at_end(ok)
        old = self.buffers.get(buffer.name)
        self.buffers[buffer.name] = BufferSlot(buffer, pointer, ALLOCATION_ALIGN)
        try:
            self.stmt(s.body)
        finally:
            if old is None:
                del self.buffers[buffer.name]
            else:
                self.buffers[buffer.name] = old
        if heap:
            self.builder.call(self.declare("free", ir.FunctionType(T.VOID, [T.PTR])), [pointer])

    def _stmt_For(self, s: L.For) -> None:
        if s.kind is L.ForKind.THREAD_BINDING:
            raise self.error(f"loop {s.var.name} is bound to GPU thread axis "
                             f"{s.thread_tag!r}; the llvm backend runs CPU loops only", s)
        if s.kind is L.ForKind.PARALLEL and not self.in_parallel:
            self._parallel_for(s)
            return
        # VECTORIZED/UNROLLED loops left by the passes (non-constant extents) run serially
        if s.min.dtype != s.extent.dtype:
            raise self.error(f"loop bounds differ in dtype ({s.min.dtype}, {s.extent.dtype})",
                             s)
        start = self._loop_bound(s.min, s.var)
        end = self._loop_bound(s.min + s.extent, s.var)
        self.serial_loop(s.var, start, end, s.body, _constant_value(s.extent))

    def _loop_bound(self, e: E.Expr, var: E.Var) -> ir.Value:
        value = self.index(e)  # an int64
        return self.convert(value, E.INDEX, var.dtype)

    def serial_loop(self, var: E.Var, start: ir.Value, end: ir.Value, body: L.Stmt,
                    constant_extent: int | None = None) -> None:
        """`for var in [start, end): body` as a rotated loop with a phi induction variable."""
        bld = self.builder
        if constant_extent is not None and constant_extent <= 0:
            return
        loop_block = bld.append_basic_block(f"for.{var.name}")
        exit_block = bld.append_basic_block(f"for.{var.name}.end")
        if constant_extent is None:
            bld.cbranch(bld.icmp_signed("<", start, end), loop_block, exit_block)
        else:
            bld.branch(loop_block)
        preheader = bld.block
        bld.position_at_end(loop_block)
        induction = bld.phi(start.type, name=var.name)
        induction.add_incoming(start, preheader)
        with self.binding(var, induction, None):
            self.stmt(body)
        following = bld.add(induction, ir.Constant(start.type, 1), flags=("nsw",))
        induction.add_incoming(following, bld.block)
        bld.cbranch(bld.icmp_signed("<", following, end), loop_block, exit_block)
        bld.position_at_end(exit_block)

    # ------------------------------------------------------------------ parallel loops

    def _parallel_for(self, s: L.For) -> None:
        """See [Note: parallel loops]."""
        bld = self.builder
        start, extent = self.index(s.min), self.index(s.extent)  # int64 values
        used_vars = set(collect(s.body, E.Var))
        captured_vars = [v for v in self.env if v in used_vars and v != s.var]
        used_buffers = {n.buffer.name for n in collect(s.body, (L.Load, L.Store))}
        captured_buffers = [self.buffers[name] for name in self.buffers if name in used_buffers]
        name = self.module_emitter.parallel_name(self.function.name)
        body_function = self._outline_body(name, s, captured_buffers, captured_vars)
        fields = [T.I64, T.I64, T.PTR] + [T.PTR] * len(captured_buffers) + \
            [self.env[v].type for v in captured_vars]
        closure_type = ir.LiteralStructType(fields)
        task = self._task_function(name, closure_type, body_function, len(captured_buffers),
                                   len(captured_vars))
        closure = T.alloca(self.allocas, closure_type, f"{name}.closure")
        if self._launch_status is None:
            self._launch_status = T.alloca(self.allocas, T.I32, "parallel.status")
        bld.store(T.I32(0), self._launch_status)
        values = [start, extent, self._launch_status] + \
            [slot.pointer for slot in captured_buffers] + [self.env[v] for v in captured_vars]
        for k, value in enumerate(values):
            field = bld.gep(closure, [T.I32(0), T.I32(k)], inbounds=True,
                            source_etype=closure_type)
            bld.store(value, field)
        launch = self.declare(LAUNCH_SYMBOL, _LAUNCH_TYPE)
        bld.call(launch, [task, closure, extent])
        status = bld.load(self._launch_status, typ=T.I32)
        done = bld.append_basic_block(f"{name}.done")
        bld.cbranch(bld.icmp_unsigned("!=", status, T.I32(0)), self.fail_block(), done)
        bld.position_at_end(done)

    def _outline_body(self, name: str, s: L.For, buffers: Sequence[BufferSlot],
                      variables: Sequence[E.Var]) -> ir.Function:
        """`name.body(bufs..., vars..., begin, end, status)`: iterations [begin, end)."""
        module = self.module_emitter
        argument_types = [T.PTR] * len(buffers) + [self.env[v].type for v in variables] + \
            [T.I64, T.I64, T.PTR]
        function = module.new_function(f"{name}.body", ir.FunctionType(T.VOID, argument_types),
                                       internal=True)
        arguments = list(function.args)
        status = arguments[-1]
        emitter = FunctionEmitter(module, self.func, function, self.fast, in_parallel=True,
                                  status_pointer=status)
        for argument, slot in zip(arguments, buffers):
            argument.name = slot.buffer.name
            size = _static_size(slot.buffer)
            _pointer_attributes(argument, slot.align,
                                size * T.itemsize(slot.buffer.dtype) if size else None)
            emitter.buffers[slot.buffer.name] = BufferSlot(slot.buffer, argument, slot.align)
        for argument, var in zip(arguments[len(buffers):], variables):
            argument.name = var.name
            emitter.env[var] = argument
            if var in self.var_factors:
                emitter.var_factors[var] = self.var_factors[var]
        begin, end = arguments[-3], arguments[-2]
        begin.name, end.name = "begin", "end"
        begin = emitter.convert(begin, E.INDEX, s.var.dtype)
        end = emitter.convert(end, E.INDEX, s.var.dtype)
        emitter.serial_loop(s.var, begin, end, s.body)
        emitter.finish()
        return function

    def _task_function(self, name: str, closure_type: ir.LiteralStructType,
                       body: ir.Function, num_buffers: int, num_vars: int) -> ir.Function:
        """`name(closure, task, num_tasks)`: the task's static block of the loop range."""
        function = self.module_emitter.new_function(name, _TASK_TYPE, internal=True)
        closure, task, num_tasks = function.args
        closure.name, task.name, num_tasks.name = "closure", "task", "num_tasks"
        bld = ir.IRBuilder(function.append_basic_block("entry"))

        def field(k: int) -> ir.Value:
            pointer = bld.gep(closure, [T.I32(0), T.I32(k)], inbounds=True,
                              source_etype=closure_type)
            return bld.load(pointer, typ=closure_type.elements[k])

        start, extent, status = field(0), field(1), field(2)
        captured = [field(3 + k) for k in range(num_buffers + num_vars)]
        tasks = bld.sext(num_tasks, T.I64)
        chunk = bld.sdiv(bld.add(extent, bld.sub(tasks, T.I64(1))), tasks)
        begin = bld.add(start, bld.mul(bld.sext(task, T.I64), chunk, flags=("nsw",)),
                        flags=("nsw",))
        stop = bld.add(start, extent, flags=("nsw",))
        end = bld.select(bld.icmp_signed("<", bld.add(begin, chunk), stop),
                         bld.add(begin, chunk), stop)
        run = function.append_basic_block("run")
        done = function.append_basic_block("done")
        bld.cbranch(bld.icmp_signed("<", begin, end), run, done)
        bld.position_at_end(run)
        bld.call(body, captured + [begin, end, status])
        bld.branch(done)
        bld.position_at_end(done)
        bld.ret_void()
        return function


def _constant_value(e: E.Expr) -> int | None:
    return e.value if isinstance(e, E.IntImm) else None


def build_module(funcs: Sequence[L.PrimFunc], info: TargetInfo, name: str = "ember",
                 param_align: int = 64) -> tuple[ir.Module, list[KernelSignature]]:
    """Translate `funcs` into one llvmlite module for `info`; returns it with the kernels'
    signatures (what the runtime needs to call them)."""
    if param_align < 1 or param_align & (param_align - 1):
        raise ValueError(f"param_align must be a power of two, got {param_align}")
    emitter = ModuleEmitter(info, name, param_align)
    for func in funcs:
        emitter.add(func)
    return emitter.module, emitter.signatures

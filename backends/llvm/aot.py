"""The AOT entry function: a whole program as one LLVM function.

    i32 ember_run(ptr inputs, ptr outputs, ptr params, ptr arena)

`inputs`, `outputs` and `params` are arrays of data pointers (graph inputs, output slots and
constants, in the program's order); `arena` is the scratch arena of the memory plan. The
function calls every step's kernel in order on pointers computed from the program's storage,
and returns the first non-zero status a kernel returns (a failed heap allocation), else 0.
One call from Python runs the whole model; the kernels' object code is linked beside it, in the
same MCJIT engine in-process and in the same shared library in a saved artefact.
"""

from __future__ import annotations

from collections.abc import Mapping

import llvmlite.ir as ir

from ember.backends.llvm import dtypes as T
from ember.backends.llvm.executor import ENTRY_SYMBOL
from ember.backends.llvm.host import TargetInfo, target_machine
from ember.backends.llvm.jit import optimize, parse_and_verify
from ember.backends.llvm.runtime import KernelSignature
from ember.runtime.program import Program

_TABLES = {"input": 0, "output": 1, "param": 2}


def entry_ir(program: Program, signatures: Mapping[str, KernelSignature],
             info: TargetInfo) -> str:
    """The LLVM IR of the entry function for `program` (kernels declared, not defined)."""
    module = ir.Module(name="ember_entry")
    module.triple = info.triple
    entry = ir.Function(module, ir.FunctionType(T.I32, [T.PTR] * 4), ENTRY_SYMBOL)
    tables = list(entry.args[:3])
    arena = entry.args[3]
    for arg, name in zip(entry.args, ("inputs", "outputs", "params", "arena")):
        arg.name = name
    bld = ir.IRBuilder(entry.append_basic_block("entry"))
    fail = entry.append_basic_block("fail")
    declared: dict[str, ir.Function] = {}
    pointers: dict[str, ir.Value] = {}

    def pointer(value: str) -> ir.Value:
        if value not in pointers:
            storage = program.storage(value)
            if storage.kind == "arena":
                at = bld.gep(arena, [ir.Constant(T.I64, storage.index)], inbounds=True,
                             source_etype=T.I8)
            else:
                slot = bld.gep(tables[_TABLES[storage.kind]], [ir.Constant(T.I64, storage.index)],
                               inbounds=True, source_etype=T.PTR)
                at = bld.load(slot, typ=T.PTR)
            pointers[value] = at
        return pointers[value]

    status_phi_sources = []
    for number, step in enumerate(program.steps):
        signature = signatures[step.kernel]
        if step.kernel not in declared:
            declared[step.kernel] = ir.Function(
                module, ir.FunctionType(T.I32, [T.PTR] * len(signature.params)),
                signature.symbol)
        status = bld.call(declared[step.kernel], [pointer(a) for a in step.args])
        status_phi_sources.append((status, bld.block))
        following = entry.append_basic_block(f"step{number + 1}")
        bld.cbranch(bld.icmp_signed("!=", status, ir.Constant(T.I32, 0)), fail, following)
        bld.position_at_end(following)
    bld.ret(ir.Constant(T.I32, 0))

    bld.position_at_end(fail)
    if status_phi_sources:
        phi = bld.phi(T.I32)
        for status, block in status_phi_sources:
            phi.add_incoming(status, block)
        bld.ret(phi)
    else:
        bld.unreachable()
    return str(module)


def entry_object(program: Program, signatures: Mapping[str, KernelSignature],
                 info: TargetInfo) -> bytes:
    """Position-independent object code of the entry function."""
    module = parse_and_verify(entry_ir(program, signatures, info), [ENTRY_SYMBOL])
    optimize(module, info)
    return target_machine(info, pic=True).emit_object(module)

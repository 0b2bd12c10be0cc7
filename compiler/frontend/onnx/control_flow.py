"""Control flow, sequence and optional ops: registered here, run on the host.

If, Loop, Scan, the Sequence* ops and the Optional* ops have no ember IR: their values are
lists or may be absent, and their bodies are whole graphs. `ember.compile` sees them in a model
and builds a host program instead (compiler/host_program.py): ordinary tensor nodes compile
as before, in segments, and these nodes run in the runtime's interpreter (runtime/host.py).

They are registered as converters so that the frontend's report of unsupported operators
(`find_unsupported`) does not list them. The converters themselves only run when a model with
such a node goes straight to `import_onnx`, which builds one tensor graph and cannot hold them.
"""

from __future__ import annotations

from typing import NoReturn

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.registry import converter

#: ONNX op -> the first opset that defines it; each runs on the host
HOST_OPS: dict[str, int] = {
    "If": 1,
    "Loop": 1,
    "Scan": 8,
    "SequenceConstruct": 11,
    "SequenceEmpty": 11,
    "SequenceAt": 11,
    "SequenceInsert": 11,
    "SequenceErase": 11,
    "SequenceLength": 11,
    "SplitToSequence": 11,
    "ConcatFromSequence": 11,
    "SequenceMap": 17,
    "Optional": 15,
    "OptionalHasElement": 15,
    "OptionalGetElement": 15,
}


def _runs_on_host(ctx: ConvertContext) -> NoReturn:
    ctx.fail(
        f"{ctx.op_type} runs on the host, not in one tensor graph: compile the model with "
        f"ember.compile, which runs it as a host program"
    )


for _op, _since in HOST_OPS.items():
    converter(_op, since=_since)(_runs_on_host)

"""Run onnx's node conformance cases (`onnx.backend.test.case.node`) through `ember.compile`.

A case passes when every one of its data sets gives outputs of the expected shapes that are
`np.allclose(out, expected, rtol=case.rtol, atol=case.atol, equal_nan=True)`; any exception
fails it. The test suite and `scripts/onnx_coverage.py` (which writes docs/onnx-coverage.md)
both use this module.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.compiler.frontend.onnx.importer import find_unsupported


@dataclasses.dataclass(frozen=True)
class CaseResult:
    name: str
    op: str
    status: str  # "pass", "fail" (wrong or missing output), "error" (exception), "unsupported"
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@functools.cache
def node_cases() -> dict[str, Any]:
    """All node cases by name (onnx generates them in a few seconds)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {case.name: case for case in collect_testcases(None)}


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def case_op(case: Any) -> str:
    """The ONNX op a case tests: the op type of its node whose name best matches the case;
    an "_expanded" case (the op's function body) counts for the op it expands."""
    base = re.sub(r"_expanded.*$", "", case.name)
    if base != case.name and base in node_cases():
        return case_op(node_cases()[base])
    ops = list(dict.fromkeys(node.op_type for node in case.model.graph.node))
    if len(ops) == 1:
        return ops[0]
    title = _normalize(case.name.removeprefix("test_"))
    matching = [op for op in ops if title.startswith(_normalize(op))]
    if matching:
        return max(matching, key=len)
    return next((op for op in ops if _normalize(op) in title), ops[0] if ops else "?")


def _compare(got: Any, expected: Any, rtol: float, atol: float) -> str:
    """"" when `got` matches `expected`, else why not."""
    if expected is None:  # an empty optional
        return "" if got is None else f"got {type(got).__name__}, expected an empty optional"
    if isinstance(expected, (list, tuple)):  # a sequence: element by element
        if not isinstance(got, (list, tuple)):
            return f"got {type(got).__name__}, expected a sequence"
        if len(got) != len(expected):
            return f"a sequence of {len(got)} element(s), expected {len(expected)}"
        for index, (g, e) in enumerate(zip(got, expected)):
            problem = _compare(g, as_array(e), rtol, atol)
            if problem:
                return f"element {index}: {problem}"
        return ""
    expected = np.asarray(expected)
    got = np.asarray(got)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if expected.dtype == object or expected.dtype.kind in "SU":
        same = np.array_equal(got.astype(object), expected.astype(object))
        return "" if same else "wrong strings"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    try:
        def widen(a: np.ndarray) -> np.ndarray:
            return a if a.dtype.kind in "fc" else a.astype(np.float64)

        ok = np.allclose(widen(got), widen(expected), rtol=rtol, atol=atol, equal_nan=True)
    except TypeError:  # float8 and other dtypes numpy cannot compare directly
        ok = np.allclose(got.astype(np.float32), expected.astype(np.float32), rtol=rtol,
                         atol=atol, equal_nan=True)
    if ok:
        return ""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return f"values differ (max abs diff {np.nanmax(diff) if diff.size else 0:.3g})"


def as_array(value: Any) -> Any:
    """A case's input or expected output as numpy: onnx stores some (Cast's, the float8 and
    4-bit cases) as TensorProto and some scalars as numpy scalars; sequences stay lists."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    return value


def case_input_names(case: Any) -> list[str]:
    """The names a case's data sets feed, in order: graph inputs that are not initializers."""
    initializers = {init.name for init in case.model.graph.initializer}
    return [v.name for v in case.model.graph.input if v.name not in initializers]


def check_outputs(case: Any, outputs: Sequence[Any], expected: Sequence[Any]) -> str:
    """"" when `outputs` match one data set's `expected`, else why not."""
    if len(outputs) != len(expected):
        return f"{len(outputs)} outputs, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(outputs, expected)):
        problem = _compare(got, as_array(want), case.rtol, case.atol)
        if problem:
            return f"output {index}: {problem}"
    return ""


def run_case(case: Any, target: str = "reference") -> CaseResult:
    """Compile and run one node case on `target`."""
    import ember

    op = case_op(case)
    if find_unsupported(case.model):
        return CaseResult(case.name, op, "unsupported")
    input_names = case_input_names(case)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            module = ember.compile(case.model, target=target)
            for inputs, expected in case.data_sets:
                outputs = module.run(dict(zip(input_names, map(as_array, inputs))))
                problem = check_outputs(case, outputs, expected)
                if problem:
                    return CaseResult(case.name, op, "fail", problem)
    except Exception as error:  # any exception fails the case; record its first line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return CaseResult(case.name, op, "error", f"{type(error).__name__}: {first_line}")
    return CaseResult(case.name, op, "pass")


def run_cases(names: Iterable[str] | None = None, target: str = "reference") -> list[CaseResult]:
    cases = node_cases()
    return [run_case(cases[name], target) for name in (names or sorted(cases))]


def summarize(results: Iterable[CaseResult]) -> dict[str, dict[str, int]]:
    """op -> {"pass": n, "fail": n, "error": n, "unsupported": n, "total": n}."""
    table: dict[str, dict[str, int]] = {}
    for result in results:
        row = table.setdefault(result.op, {"pass": 0, "fail": 0, "error": 0, "unsupported": 0})
        row[result.status] += 1
    for row in table.values():
        row["total"] = sum(row.values())
    return dict(sorted(table.items()))



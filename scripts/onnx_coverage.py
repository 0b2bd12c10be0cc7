"""Write docs/onnx-coverage.md: how many of onnx's node conformance cases ember passes.

    python scripts/onnx_coverage.py                     # regenerate docs/onnx-coverage.md
    python scripts/onnx_coverage.py --write-exclusions  # and refresh tests/onnx_node_exclusions.txt

Every case of `onnx.backend.test.case.node` is compiled for the llvm target (the count that
matters: compiled code) and for the reference target (numpy), and judged by
`ember.compiler.frontend.onnx.conformance` (expected shapes, `np.allclose` at the case's
tolerances). When onnxruntime is installed, each case's model also runs in an ONNX Runtime
InferenceSession (CPUExecutionProvider) under the same feeds and the same output check, and its
pass count stands beside ember's. The page holds no date or timing, so regenerating it without a
change in ember gives the same file.

`--write-exclusions` rewrites the exclusion list of tests/integration/test_onnx_node_conformance.py
(which runs the reference target; onnx's BackendTest runs llvm) from the failing supported
cases: every failure without a reason in the file is written commented out under "to review",
so an op bug never hides in the list until someone has read it and written a real reason.
Reasons already in the file are kept.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

import onnx

from ember.compiler.frontend.onnx.conformance import (
    CaseResult,
    as_array,
    case_input_names,
    case_op,
    check_outputs,
    node_cases,
    run_case,
)
from ember.compiler.frontend.onnx.registry import supported_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_PATH = os.path.join(ROOT, "docs", "onnx-coverage.md")
EXCLUSIONS_PATH = os.path.join(ROOT, "tests", "onnx_node_exclusions.txt")
COMMAND = "python scripts/onnx_coverage.py"

#: the first line of a failure whose cause is a shape-deciding input that is a graph input



# -- running the cases


def run_onnxruntime_case(case) -> CaseResult:
    """Run one case's model in ONNX Runtime under the harness ember's cases run under: a model
    that fails to load, any exception and any wrong output count as a failure."""
    import onnxruntime

    op = case_op(case)
    names = case_input_names(case)
    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # ORT logs every rejected model at warning level
        session = onnxruntime.InferenceSession(case.model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        for inputs, expected in case.data_sets:
            outputs = session.run(None, dict(zip(names, map(as_array, inputs))))
            problem = check_outputs(case, outputs, expected)
            if problem:
                return CaseResult(case.name, op, "fail", problem)
    except Exception as error:  # a load failure or a run failure: the case fails
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return CaseResult(case.name, op, "error", f"{type(error).__name__}: {first_line}")
    return CaseResult(case.name, op, "pass")


def _run_ember(name: str, target: str = "llvm") -> CaseResult:
    return run_case(node_cases()[name], target)


def _run_ember_reference(name: str) -> CaseResult:
    return _run_ember(name, "reference")


def _run_onnxruntime(name: str) -> CaseResult:
    return run_onnxruntime_case(node_cases()[name])


def run_all(names: Sequence[str], runner, jobs: int) -> list[CaseResult]:
    """`runner` over the named cases, in `jobs` worker processes (cases are independent)."""
    if jobs <= 1:
        return [runner(name) for name in names]
    node_cases()  # generate once, before the workers fork
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(runner, names, chunksize=8)


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


# -- the exclusion list


def read_exclusions(path: str = EXCLUSIONS_PATH) -> dict[str, str]:
    """case name -> reason, from lines `case_name: reason`; `#` starts a comment."""
    exclusions: dict[str, str] = {}
    if not os.path.exists(path):
        return exclusions
    with open(path, encoding="utf-8") as file:
        for number, raw in enumerate(file, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, reason = line.partition(":")
            if not sep or not name.strip() or not reason.strip():
                raise ValueError(f"{path}:{number}: expected 'case_name: reason', got {raw!r}")
            exclusions[name.strip()] = reason.strip()
    return exclusions


def render_exclusions(results: Iterable[CaseResult], kept: Mapping[str, str]) -> str:
    failing = [r for r in results if r.status in ("fail", "error")]
    reviewed, to_review = [], []
    for result in failing:
        if result.name in kept:
            reviewed.append((result.name, kept[result.name]))
        else:
            to_review.append((result.name, f"{result.op}: {result.message}"))
    lines = [
        "# Node conformance cases of supported ops that are expected to fail, as",
        "# `case_name: reason`. tests/integration/test_onnx_node_conformance.py fails a listed",
        "# case that passes, so the list stays honest. Regenerate with",
        f"# `{COMMAND} --write-exclusions`; reasons written by hand are kept.",
    ]
    if reviewed:
        lines += ["", "# Reviewed: out of reach in this issue, for the reason given."]
        lines += [f"{name}: {reason}" for name, reason in reviewed]
    if to_review:
        lines += ["", "# To review (not excluded): op bugs to fix, or cases to exclude with a real",
                  "# reason by uncommenting the line and rewriting its reason."]
        lines += [f"# {name}: {reason}" for name, reason in to_review]
    return "\n".join(lines) + "\n"


# -- the coverage page


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


#: ONNX ops that run in the runtime on the host (runtime/host.py), calling compiled subgraphs
HOST_OPS = ("If", "Loop", "Scan", "SequenceMap", "SequenceConstruct", "SequenceEmpty",
            "SequenceAt", "SequenceInsert", "SequenceErase", "SequenceLength", "SplitToSequence",
            "ConcatFromSequence", "Optional", "OptionalHasElement", "OptionalGetElement")


def render_page(ember: Sequence[CaseResult], reference: Sequence[CaseResult],
                ort: Sequence[CaseResult] | None, ort_version: str | None) -> str:
    total = len(ember)
    supported = [r for r in ember if r.status != "unsupported"]
    passed = sum(r.passed for r in ember)
    failing = [r for r in supported if not r.passed]
    ort_by_name = {r.name: r for r in ort} if ort is not None else {}
    reference_by_name = {r.name: r for r in reference}

    lines = [
        "# ONNX coverage",
        "",
        f"Generated by `{COMMAND}` (run it from the repository root to regenerate); do not edit.",
        "",
        f"ember passes **{passed:,} / {total:,}** of the node conformance cases of onnx "
        f"{onnx.__version__} (`onnx.backend.test.case.node`) on the `llvm` target, "
        f"and **{passed:,} / {len(supported):,}** of the cases whose operators it converts. "
        f"On the `reference` target (numpy) it passes "
        f"**{sum(r.passed for r in reference):,} / {total:,}**.",
    ]
    if ort is not None:
        ort_passed = sum(r.passed for r in ort)
        lines.append(
            f"ONNX Runtime {ort_version} (CPUExecutionProvider) passes **{ort_passed:,} / "
            f"{total:,}** of the same cases under the same harness."
        )
    lines += [
        "",
        "A case passes when every data set's outputs have the expected shapes and are "
        "`np.allclose(out, expected, rtol=case.rtol, atol=case.atol, equal_nan=True)`; any "
        "exception, including a model that fails to load, fails it. Inputs and expected "
        "outputs that onnx stores as TensorProto or as numpy scalars are fed and compared as "
        "arrays. A case is *unsupported* when one of its nodes has no ember converter at the "
        "model's opset.",
        "",
        "Models whose shape-deciding inputs (Reshape's shape, Slice's starts, ...) are graph "
        "inputs compile once per distinct value of those inputs, at run time.",
        "",
        "These ops run in the runtime on the host (runtime/host.py), calling compiled "
        "subgraphs for the tensor nodes around and inside their bodies: "
        + ", ".join(HOST_OPS) + " (and Identity of a sequence or optional).",
        "",
        "## By operator",
        "",
        "| ONNX op | cases | passed (llvm) | failed | unsupported | passed (reference) |"
        + (" ONNX Runtime passed |" if ort is not None else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if ort is not None else ""),
    ]
    by_op: dict[str, list[CaseResult]] = {}
    for result in ember:
        by_op.setdefault(result.op, []).append(result)
    for op, results in sorted(by_op.items(), key=lambda item: item[0].lower()):
        counts = [len(results), sum(r.passed for r in results),
                  sum(r.status in ("fail", "error") for r in results),
                  sum(r.status == "unsupported" for r in results)]
        counts.append(sum(reference_by_name[r.name].passed for r in results))
        row = f"| {op} | " + " | ".join(str(c) for c in counts) + " |"
        if ort is not None:
            row += f" {sum(ort_by_name[r.name].passed for r in results)} |"
        lines.append(row)

    lines += ["", "## Supported operators", "",
              "Converter versions: a model at opset N uses the newest version at or below N.", "",
              "| domain | ONNX op | converter versions (since opset) |", "|---|---|---|"]
    for (domain, op), versions in supported_ops().items():
        lines.append(f"| {domain or 'ai.onnx'} | {op} | {', '.join(map(str, versions))} |")

    lines += ["", "## Failing cases of supported operators (llvm)", ""]
    if failing:
        lines += ["| case | op | first line of the failure |", "|---|---|---|"]
        lines += [f"| {r.name} | {r.op} | {_cell(r.message)} |" for r in failing]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DOC_PATH, help="where to write the page")
    parser.add_argument("--no-onnxruntime", action="store_true",
                        help="leave ONNX Runtime's column out")
    parser.add_argument("--write-exclusions", action="store_true",
                        help=f"also rewrite {os.path.relpath(EXCLUSIONS_PATH, ROOT)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    args = parser.parse_args(argv)

    names = sorted(node_cases())
    ember = run_all(names, _run_ember, args.jobs)
    reference = run_all(names, _run_ember_reference, args.jobs)
    version = None if args.no_onnxruntime else onnxruntime_version()
    ort = run_all(names, _run_onnxruntime, args.jobs) if version else None
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        file.write(render_page(ember, reference, ort, version))
    passed = sum(r.passed for r in ember)
    supported = sum(r.status != "unsupported" for r in ember)
    print(f"ember (llvm) passes {passed} / {len(ember)} cases ({passed} / {supported} supported)"
          + f"; reference {sum(r.passed for r in reference)}"
          + (f"; ONNX Runtime {sum(r.passed for r in ort)}" if ort else "")
          + f"; wrote {args.output}")
    if args.write_exclusions:
        text = render_exclusions(reference, read_exclusions(EXCLUSIONS_PATH))
        with open(EXCLUSIONS_PATH, "w", encoding="utf-8") as file:
            file.write(text)
        print(f"wrote {EXCLUSIONS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""onnx's own backend test suite (`onnx.backend.test.BackendTest`) run through
`ember.onnx_backend` on target llvm: every node conformance case, and the "light" model cases
(small copies of the zoo's CNNs that ship with onnx; their expected outputs come from onnx's
ReferenceEvaluator, written under $ONNX_HOME), compiled and run as onnx's runner does it.

"Real" model cases that download data, and the "simple" and PyTorch cases, do not run. A case
ember cannot run is listed in tests/onnx_backend_exclusions.txt as `pattern: reason` (the
pattern is a regular expression matched against the whole case name, without onnx's `_cpu`
suffix); listed cases are expected failures, so one that starts to pass fails the run until its
line goes. Kernels are cached on disk: a cold run takes about a minute on two workers.
"""

from __future__ import annotations

import os
import re

import onnx.backend.test
from onnx.backend.test.loader import load_model_tests

import ember.onnx_backend

EXCLUSIONS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "onnx_backend_exclusions.txt")


def read_exclusions(path: str = EXCLUSIONS_PATH) -> dict[str, str]:
    """`pattern -> reason` from the exclusion list; every line must give a reason."""
    exclusions = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition(": ")
            if not sep or not reason.strip():
                raise ValueError(f"{path}:{number}: expected 'pattern: reason', got {line!r}")
            exclusions[pattern.strip()] = reason.strip()
    return exclusions


NODE_CASES = sorted(case.name for case in load_model_tests(kind="node"))
# The "real" kind holds both: light models stored inside onnx, and ones it would download.
LIGHT_CASES = sorted(case.name for case in load_model_tests(kind="real")
                     if (case.url or "").startswith("onnx/backend/test/data/light/"))
CASES = NODE_CASES + LIGHT_CASES
CATEGORIES = ("OnnxBackendNodeModelTest", "OnnxBackendRealModelTest")
EXCLUSIONS = read_exclusions()

backend_test = onnx.backend.test.BackendTest(ember.onnx_backend, __name__)
backend_test.include("^(" + "|".join(re.escape(name) for name in CASES) + ")_cpu$")
for _pattern in EXCLUSIONS:
    backend_test.xfail(f"^(?:{_pattern})_cpu$")

# Only the categories that hold included cases; every case of the others would be a skip.
globals().update({
    name: case for name, case in backend_test.enable_report().test_cases.items()
    if name in CATEGORIES
})


def test_exclusions_name_cases() -> None:
    stale = [p for p in EXCLUSIONS if not any(re.fullmatch(p, name) for name in CASES)]
    assert not stale, f"exclusion patterns that match no case that runs; remove them: {stale}"

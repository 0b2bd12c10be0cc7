"""Backends: one subpackage per target kind.

A backend module names the schedule-template family its kernels come from (`TEMPLATE_FAMILY`,
None when it runs graphs without kernels) and exposes
`check_target(target)` (TargetError before any work) and
`build(graph, target, kernels, num_threads) -> Module`.

Backends are imported only when a target of their kind is used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ember.errors import TargetError
from ember.target import Target

#: target kind -> the backend package that builds it
BACKENDS = {
    "reference": "ember.backends.reference",
    "llvm": "ember.backends.llvm.build",
}


def get_backend(target: Target) -> ModuleType:
    """The backend module for `target`; TargetError names the kinds that exist."""
    if target.kind not in BACKENDS:
        raise TargetError(
            f"unknown target kind {target.kind!r} (from {str(target)!r}); "
            f"available: {', '.join(sorted(BACKENDS))}"
        )
    return importlib.import_module(BACKENDS[target.kind])

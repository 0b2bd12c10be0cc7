"""Compilation targets: a kind ("reference", "llvm", ...) and its options.

`Target.parse("llvm -mcpu=native -num-threads=2")` gives `Target("llvm", {"mcpu": "native", ...})`.
Which kinds exist is decided by the backends that register themselves (`ember.backends`).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping

from ember.errors import TargetError


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str
    options: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def parse(spec: str | Target) -> Target:
        """Parse `"kind -key=value -flag ..."`; a `Target` is returned as it is."""
        if isinstance(spec, Target):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise TargetError(f"a target must be a non-empty string such as 'llvm', got {spec!r}")
        kind, *words = shlex.split(spec)
        options: dict[str, str] = {}
        for word in words:
            if not word.startswith("-") or word in ("-", "--"):
                raise TargetError(
                    f"target {spec!r}: option {word!r} must look like -key=value or -flag"
                )
            key, _, value = word.lstrip("-").partition("=")
            options[key] = value if value else "true"
        return Target(kind, tuple(sorted(options.items())))

    @property
    def attrs(self) -> Mapping[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        return " ".join([self.kind, *(f"-{k}={v}" for k, v in self.options)])

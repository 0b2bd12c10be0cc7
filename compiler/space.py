"""Knobs and config spaces: the choices a schedule template leaves open.

A template declares its space from the workload's shape, then schedules from one point of it:

    space = ConfigSpace()
    space.define_split("tile_n", extent=1024, num_outputs=3, policy="factors")
    space.define_knob("unroll_k", [1, 2, 4, 8])
    space.set_default("tile_n", (32, 16, 2))      # the template's heuristic choice
    cfg = space.default                           # or space.get(index), or a tuning record
    n_outer, n_mid, n_inner = cfg["tile_n"]

The space is the product of its knobs; a config is an index into that product (mixed radix,
first knob most significant), so the autotuner can sample, enumerate and walk neighbours.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ember.errors import EmberError


class SpaceError(EmberError):
    """A malformed config space or config (unknown knob, value outside a knob's choices)."""


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _factorizations(extent: int, parts: int, policy: str, max_factor: int | None
                    ) -> list[tuple[int, ...]]:
    """Tuples of `parts` factors: exact factorizations ("factors"), or powers of two whose
    product covers `extent` with a guarded tail ("power2")."""
    if parts == 1:
        return [(extent,)]
    if policy == "factors":
        choices = divisors(extent)
        out = []
        for head in itertools.product(choices, repeat=parts - 1):
            rest = extent // math.prod(head)
            if math.prod(head) * rest == extent:
                out.append((rest, *head))
    elif policy == "power2":
        powers = [1 << k for k in range(0, max(1, extent - 1).bit_length() + 1)]
        out = []
        for head in itertools.product(powers, repeat=parts - 1):
            inner = math.prod(head)
            if inner <= max(extent, 1):
                out.append((-(-extent // inner), *head))
    else:
        raise SpaceError(f"unknown split policy {policy!r}; use 'factors' or 'power2'")
    if max_factor is not None:
        out = [f for f in out if all(x <= max_factor for x in f[1:])]
    return sorted(set(out))


@dataclasses.dataclass(frozen=True)
class Knob:
    """One choice of a template: a name and its candidate values."""

    name: str
    values: tuple[Any, ...]
    kind: str = "other"  # "split", "reorder", "annotate" or "other" (the autotuner's features)

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            raise SpaceError(f"knob {self.name!r} has no value {value!r}; "
                             f"its values are {list(self.values)[:10]}...") from None


@dataclasses.dataclass(frozen=True)
class Config:
    """One point of a space: knob name -> value, and its index in the space."""

    index: int
    values: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        for key, value in self.values:
            if key == name:
                return value
        raise SpaceError(f"config has no knob {name!r}; it has {[k for k, _ in self.values]}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


class ConfigSpace:
    """The product of a template's knobs, with a default config."""

    def __init__(self) -> None:
        self.knobs: dict[str, Knob] = {}
        self._default: dict[str, Any] = {}
        self._filters: list[Callable[[Config], bool]] = []

    # -- declaring

    def _add(self, knob: Knob) -> Knob:
        if knob.name in self.knobs:
            raise SpaceError(f"knob {knob.name!r} is defined twice")
        if not knob.values:
            raise SpaceError(f"knob {knob.name!r} has no values")
        self.knobs[knob.name] = knob
        return knob

    def define_split(self, name: str, extent: int, num_outputs: int = 2,
                     policy: str = "factors", max_factor: int | None = None) -> Knob:
        """Split an axis of `extent` into `num_outputs` loops (outermost first)."""
        if extent < 1 or num_outputs < 1:
            raise SpaceError(f"split {name!r}: extent {extent} and outputs {num_outputs} "
                             f"must be positive")
        values = _factorizations(extent, num_outputs, policy, max_factor)
        return self._add(Knob(name, tuple(values), "split"))

    def define_reorder(self, name: str, num_axes: int,
                       candidates: Sequence[Sequence[int]] | None = None) -> Knob:
        """Loop orders as permutations of axis positions (all of them, or the candidates)."""
        perms = candidates if candidates is not None else itertools.permutations(range(num_axes))
        return self._add(Knob(name, tuple(tuple(p) for p in perms), "reorder"))

    def define_annotate(self, name: str, choices: Sequence[str]) -> Knob:
        """Annotations for a loop: e.g. ("none", "unroll", "vectorize")."""
        return self._add(Knob(name, tuple(choices), "annotate"))

    def define_knob(self, name: str, values: Sequence[Any]) -> Knob:
        """A free-form list of values."""
        return self._add(Knob(name, tuple(values), "other"))

    def add_filter(self, valid: Callable[[Config], bool]) -> None:
        """Only configs for which `valid(config)` is true are valid (the tuner skips others)."""
        self._filters.append(valid)

    def set_default(self, name: str, value: Any) -> None:
        if name not in self.knobs:
            raise SpaceError(f"set_default: no knob {name!r}")
        self.knobs[name].index(value)
        self._default[name] = value

    # -- the product

    def __len__(self) -> int:
        return math.prod(len(k) for k in self.knobs.values())

    def get(self, index: int) -> Config:
        """The config at `index` (mixed radix over the knobs, the first most significant)."""
        if not 0 <= index < len(self):
            raise SpaceError(f"config index {index} is outside the space of {len(self)}")
        values = []
        remaining = index
        for knob in reversed(self.knobs.values()):
            remaining, digit = divmod(remaining, len(knob))
            values.append((knob.name, knob.values[digit]))
        return Config(index, tuple(reversed(values)))

    def index_of(self, values: dict[str, Any]) -> int:
        index = 0
        for knob in self.knobs.values():
            if knob.name not in values:
                raise SpaceError(f"config lacks knob {knob.name!r}")
            index = index * len(knob) + knob.index(values[knob.name])
        return index

    def from_values(self, values: dict[str, Any]) -> Config:
        return self.get(self.index_of(values))

    @property
    def default(self) -> Config:
        """The template's default: its set_default choices, else each knob's first value."""
        return self.from_values({name: self._default.get(name, knob.values[0])
                                 for name, knob in self.knobs.items()})

    def is_valid(self, config: Config) -> bool:
        return all(valid(config) for valid in self._filters)

    def __iter__(self) -> Iterator[Config]:
        return (self.get(i) for i in range(len(self)))

    def sample(self, count: int, rng: random.Random) -> list[Config]:
        """Up to `count` distinct valid configs drawn uniformly."""
        size = len(self)
        chosen: dict[int, Config] = {}
        attempts = 0
        while len(chosen) < min(count, size) and attempts < 20 * count + 100:
            attempts += 1
            config = self.get(rng.randrange(size))
            if self.is_valid(config):
                chosen[config.index] = config
        return list(chosen.values())

    def neighbours(self, config: Config) -> list[Config]:
        """Configs that differ from `config` in one knob by one step (for annealing)."""
        out = []
        values = config.as_dict()
        for knob in self.knobs.values():
            position = knob.index(values[knob.name])
            for step in (-1, 1):
                if 0 <= position + step < len(knob):
                    out.append(self.from_values({**values,
                                                 knob.name: knob.values[position + step]}))
        return out

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k.name}[{len(k)}]" for k in self.knobs.values())
        return f"ConfigSpace({len(self)} configs: {knobs})"

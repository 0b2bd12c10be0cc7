"""Parallel simulated annealing over a config space, scored by a cost model: how the XGBoost
tuner (autotune/tuner.py) picks the next plan of configs to measure in a large space.

The walkers move on the space's knob grid as `ConfigSpace.neighbours` defines it (one knob
one step up or down), with a quarter of the moves instead setting the chosen knob to a random
value so that walkers cross flat regions. AutoTVM's schedule: 128 walkers, at most 500 steps,
temperature falling linearly from 1 to 0, stopped after 50 steps without a change to the set
of best points found; the walkers' positions are kept between plans. Everything is
vectorized over the walkers (knob features come from `KnobFeaturizer`, a table lookup per
knob), so a plan costs a few hundred model predictions on 128 rows, well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ember.autotune.features import KnobFeaturizer


class SimulatedAnnealingExplorer:
    """Finds the configs a scoring function likes best among those `allowed`.

    Args:
        featurizer: the knob featurizer of the space (its radices give the grid).
        allowed: whether a config index may be proposed (unvisited, valid, a candidate).
        seed: the walkers' random seed.
        walkers, steps, patience: parallel walkers, most steps per search, and steps without
            a change to the best points after which a search stops.
        jump: the share of moves that set a knob to a random value instead of a neighbour.
    """

    def __init__(self, featurizer: KnobFeaturizer, allowed: Callable[[int], bool],
                 seed: int = 0, walkers: int = 128, steps: int = 500, patience: int = 50,
                 jump: float = 0.25):
        self.featurizer = featurizer
        self.allowed = allowed
        self.rng = np.random.default_rng(seed)
        self.walkers = walkers
        self.steps = steps
        self.patience = patience
        self.jump = jump
        radices = np.array(featurizer.radices or [1], dtype=np.int64)
        self.radices = radices
        # mixed-radix place values: index = digits @ place (first knob most significant)
        self.place = np.concatenate([np.cumprod(radices[::-1])[::-1][1:], [1]]).astype(np.int64)
        self.positions: np.ndarray | None = None

    def explore(self, score: Callable[[np.ndarray], np.ndarray], count: int,
                starts: Sequence[int]) -> list[int]:
        """The best `count` allowed config indices met by the walk, best first.

        Args:
            score: feature rows -> scores (higher is better), e.g. a cost model's predict.
            count: how many indices to return (fewer when the walk meets fewer).
            starts: the walkers' first positions, used on the first search only.
        """
        if self.positions is None:
            self.positions = self.featurizer.digits(list(starts)[:self.walkers])
        digits = self.positions
        rows = np.arange(digits.shape[0])
        knobs = len(self.radices)
        scores = score(self.featurizer.of_digits(digits))
        scale = max(float(np.std(scores)), 1e-6)
        best: dict[int, float] = {}
        worst = self._consider(best, digits, scores, count)
        unchanged = 0
        for step in range(self.steps):
            temperature = max(1.0 - step / self.steps, 1e-3)
            moved = digits.copy()
            knob = self.rng.integers(0, knobs, size=len(rows))
            radix = self.radices[knob]
            neighbour = moved[rows, knob] + self.rng.choice((-1, 1), size=len(rows))
            anywhere = (self.rng.random(len(rows)) * radix).astype(np.int64)
            jumps = self.rng.random(len(rows)) < self.jump
            moved[rows, knob] = np.clip(np.where(jumps, anywhere, neighbour), 0, radix - 1)
            moved_scores = score(self.featurizer.of_digits(moved))
            gain = (moved_scores - scores) / (scale * temperature)
            accept = np.exp(np.minimum(gain, 0.0)) > self.rng.random(len(rows))
            digits = np.where(accept[:, None], moved, digits)
            scores = np.where(accept, moved_scores, scores)
            new_worst = self._consider(best, moved, moved_scores, count)
            if new_worst == worst and len(best) >= count:
                unchanged += 1
                if unchanged >= self.patience:
                    break
            else:
                unchanged = 0
            worst = new_worst
        self.positions = digits
        return [index for index, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]

    def _consider(self, best: dict[int, float], digits: np.ndarray, scores: np.ndarray,
                  count: int) -> float:
        """Add the allowed points among `digits` that beat the worst of `best` (kept at
        `count` entries); return the new worst score (-inf while `best` is not full)."""
        worst = min(best.values()) if len(best) >= count else -math.inf
        for index, value in zip((digits @ self.place).tolist(), scores.tolist()):
            if value <= worst or index in best or not self.allowed(index):
                continue
            best[index] = value
            if len(best) > count:
                del best[min(best, key=lambda k: (best[k], -k))]
            worst = min(best.values()) if len(best) >= count else -math.inf
        return worst


__all__ = ["SimulatedAnnealingExplorer"]

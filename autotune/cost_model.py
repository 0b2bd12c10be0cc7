"""The learned cost model of the XGBoost tuner (autotune/tuner.py): features -> a score that
orders configs by throughput.

Targets are each config's throughput divided by the best throughput measured so far (failed
configs 0), as AutoTVM normalizes them, so the scale of a task (GFLOP/s in the tens or the
hundreds) does not matter and a model fitted on one task can seed another. The objective is
pairwise ranking by default (only the order of configs matters to the tuner) or squared-error
regression; the tree parameters are AutoTVM's (depth 3, eta 0.3). The model is refitted from
scratch on all measurements after each batch: with at most a few thousand rows this takes
tens of milliseconds.

Transfer learning: `fit_base` fits a base model on earlier records of similar tasks (the same
anchor template, featurized on the new task's knobs: see `KnobFeaturizer.of_values`); the
base model's predictions then enter the new model as a base margin whose weight decays as
the new task's own measurements accumulate (`transfer_horizon`), TVM's scheme.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import EmberError


class CostModelError(EmberError):
    """A cost model used before it was fitted, or fitted on malformed data."""


#: AutoTVM's tree parameters
DEFAULT_PARAMS: Mapping[str, Any] = {
    "max_depth": 3,
    "eta": 0.3,
    "gamma": 1e-4,
    "min_child_weight": 1,
    "subsample": 1.0,
    "lambda": 1.0,
    "alpha": 0.0,
    "nthread": 1,
    "verbosity": 0,
}

OBJECTIVES = {"rank": "rank:pairwise", "reg": "reg:squarederror"}


def normalize(ys: Sequence[float] | np.ndarray) -> np.ndarray:
    """Throughputs divided by the best (0 where the best is 0 or a value is not finite)."""
    ys = np.nan_to_num(np.asarray(ys, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    ys = np.maximum(ys, 0.0)
    best = ys.max(initial=0.0)
    return ys / best if best > 0 else np.zeros_like(ys)


class XGBCostModel:
    """Gradient-boosted trees scoring configs by their normalized throughput (higher is
    faster).

    Args:
        objective: "rank" (pairwise ranking, AutoTVM's original) or "reg" (regression).
        num_rounds: boosting rounds per fit.
        seed: the trees' random seed (fits are deterministic per seed).
        transfer_horizon: with a base model, its margin weight falls linearly from 1 to 0
            as the new task's measurements grow from 0 to this many.
        params: overrides of DEFAULT_PARAMS.
    """

    def __init__(self, objective: str = "rank", num_rounds: int = 60, seed: int = 0,
                 transfer_horizon: int = 256, params: Mapping[str, Any] | None = None):
        if objective not in OBJECTIVES:
            raise CostModelError(f"unknown cost-model objective {objective!r}; use one of "
                                 f"{sorted(OBJECTIVES)}")
        self.objective = objective
        self.num_rounds = num_rounds
        self.seed = seed
        self.transfer_horizon = transfer_horizon
        self.params = {**DEFAULT_PARAMS, **(params or {}), "objective": OBJECTIVES[objective],
                       "seed": seed}
        self._booster: Any = None
        self._base: XGBCostModel | None = None
        self._base_weight = 0.0
        self.fitted_rows = 0

    @property
    def fitted(self) -> bool:
        return self._booster is not None

    # -- fitting

    def fit(self, xs: np.ndarray, ys: Sequence[float] | np.ndarray) -> XGBCostModel:
        """Fit on feature rows `xs` and their throughputs `ys` (any positive unit; failed
        configs 0). Rows where every target is 0 leave the model unfitted."""
        import xgboost

        xs = _matrix(xs)
        targets = normalize(ys)
        if xs.shape[0] != targets.shape[0]:
            raise CostModelError(f"{xs.shape[0]} feature rows but {targets.shape[0]} targets")
        self.fitted_rows = xs.shape[0]
        if xs.shape[0] < 2 or not targets.any():
            self._booster = None
            return self
        if self._base is not None:
            self._base_weight = self._trust_in_base(xs, targets)
        data = xgboost.DMatrix(xs, label=targets)
        margin = self._base_margin(xs)
        if margin is not None:
            data.set_base_margin(margin)
        if self.objective == "rank":
            data.set_group([xs.shape[0]])
        self._booster = xgboost.train(self.params, data, num_boost_round=self.num_rounds)
        return self

    def fit_base(self, xs: np.ndarray, ys: Sequence[float] | np.ndarray) -> XGBCostModel:
        """Transfer: fit a base model on earlier records' features and throughputs (of
        similar tasks, each task's throughputs normalized on its own beforehand if their
        scales differ); its predictions seed this model's until `transfer_horizon`."""
        base = XGBCostModel(self.objective, self.num_rounds, self.seed,
                            params={k: v for k, v in self.params.items()
                                    if k not in ("objective", "seed")})
        base.fit(xs, ys)
        if base.fitted:
            self._base = base
            self._base_weight = 1.0
        return self

    def _trust_in_base(self, xs: np.ndarray, targets: np.ndarray) -> float:
        """The base model's margin weight on this task's data: how well it ranks them
        (Spearman's rho, none when not positive), decaying to 0 at `transfer_horizon` rows.
        A base model fitted on tasks whose best configs differ from this one's is dropped as
        soon as this task's measurements say so, rather than steering the search for
        hundreds of trials."""
        decay = max(0.0, 1.0 - xs.shape[0] / max(1, self.transfer_horizon))
        if decay == 0.0 or np.ptp(targets) == 0.0:
            return decay
        rho = _spearman(self._base.predict(xs), targets)
        return decay * max(0.0, rho)

    @property
    def has_base(self) -> bool:
        return self._base is not None

    @property
    def base_weight(self) -> float:
        """The base model's margin weight in the last fit (0 without one)."""
        return self._base_weight if self._base is not None else 0.0

    # -- predicting

    def predict(self, xs: np.ndarray) -> np.ndarray:
        """Scores of feature rows (higher: faster); only their order is meaningful for the
        rank objective. A model without data predicts from its base model, else zeros."""
        xs = _matrix(xs)
        if self._booster is None:
            if self._base is not None:
                return self._base.predict(xs)
            return np.zeros(xs.shape[0])
        margin = self._base_margin(xs)
        scores = self._booster.inplace_predict(xs, base_margin=margin) if margin is not None \
            else self._booster.inplace_predict(xs)
        return np.asarray(scores, dtype=np.float64)

    def _base_margin(self, xs: np.ndarray) -> np.ndarray | None:
        if self._base is None or self._base_weight <= 0.0:
            return None
        return self._base_weight * self._base.predict(xs)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 0 when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if np.ptp(ra) == 0.0 or np.ptp(rb) == 0.0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _matrix(xs: Any) -> np.ndarray:
    xs = np.asarray(xs, dtype=np.float32)
    if xs.ndim != 2:
        raise CostModelError(f"features must be a 2-D array (rows x features), got shape "
                             f"{xs.shape}")
    return np.nan_to_num(xs, nan=0.0, posinf=0.0, neginf=0.0)


__all__ = ["DEFAULT_PARAMS", "CostModelError", "XGBCostModel", "normalize"]

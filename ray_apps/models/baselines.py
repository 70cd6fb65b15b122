"""Non-neural baselines: ridge regression on the features and a momentum factor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from ray_apps.models.base import ModelParams, ScoreModel
from ray_apps.models.panel import Panel


class RidgeParams(ModelParams):
    """Ridge regression.

    Attributes:
        alpha: L2 penalty on the standardized features' weights.
    """

    alpha: float = Field(1.0, ge=0)


class RidgeModel(ScoreModel):
    """Linear regression of the target on the standardized features, L2-penalized."""

    name = "ridge"
    Params = RidgeParams

    def __init__(self, params: RidgeParams, feature_columns: tuple[str, ...]) -> None:
        super().__init__(params, feature_columns)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.intercept = 0.0

    def fit_steps(self, panel: Panel, train: np.ndarray) -> Iterator[int]:
        """Solves the penalized normal equations on the training rows (one step)."""
        self.check_panel(panel)
        d, a = panel.samples(train)
        if len(d) == 0:
            raise ValueError("ridge: no training sample has all features and a target")
        x = panel.features[d, a].astype(np.float64)
        y = panel.target[d, a].astype(np.float64)
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        z = (x - self.mean) / self.scale
        self.intercept = float(y.mean())
        gram = z.T @ z + self.params.alpha * np.eye(z.shape[1])
        self.weights = np.linalg.solve(gram, z.T @ (y - self.intercept))
        yield 1

    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """The fitted linear score of each defined (date, asset)."""
        self.check_panel(panel)
        if self.weights is None:
            raise ValueError("ridge: predict before fit")
        x = panel.features[dates].astype(np.float64)
        return ((x - self.mean) / self.scale) @ self.weights + self.intercept


class MomentumParams(ModelParams):
    """A one-feature factor.

    Attributes:
        column: the feature used as the score (a trailing return for momentum).
        sign: 1 follows the feature (momentum), -1 bets against it (reversal).
    """

    column: str = "logret_5"
    sign: Literal[1, -1] = 1


class MomentumModel(ScoreModel):
    """Scores each asset by its trailing return: nothing to learn."""

    name = "momentum"
    Params = MomentumParams

    def __init__(self, params: MomentumParams, feature_columns: tuple[str, ...]) -> None:
        super().__init__(params, feature_columns)
        if params.column not in self.feature_columns:
            raise ValueError(
                f"momentum: column {params.column!r} is not a feature; pick one of "
                f"{list(self.feature_columns)}"
            )
        self.index = self.feature_columns.index(params.column)

    def fit_steps(self, panel: Panel, train: np.ndarray) -> Iterator[int]:
        """Nothing to learn: one step."""
        self.check_panel(panel)
        yield 1

    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """The chosen feature times the sign, NaN where any feature is undefined."""
        self.check_panel(panel)
        score = panel.features[dates, :, self.index].astype(np.float64) * self.params.sign
        return np.where(panel.defined()[dates], score, np.nan)

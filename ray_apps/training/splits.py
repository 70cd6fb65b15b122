"""Walk-forward splits of a calendar of dates: train, validation and a held-out test period.

The last ``test_fraction`` of the dates is the test period; the sweep never sees it. Before
it, ``folds`` consecutive validation blocks each get a model trained on every date before the
block (an expanding window). Between a training period and the block after it, and between
the last validation block and the test period, ``gap`` dates are left out so that no
training label (which looks ``horizon`` dates ahead) overlaps a later period: the gap must be
at least the label horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_apps.errors import UserError


class SplitConfig(BaseModel):
    """How dates are split.

    Attributes:
        test_fraction: share of the dates, at the end, held out as the test period.
        val_fraction: share of the dates used for validation, over all folds together.
        folds: validation blocks (each with its own expanding training window).
        gap: dates left out between periods; None uses the label horizon.
    """

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(1, ge=1, le=20)
    gap: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> SplitConfig:
        if self.test_fraction + self.val_fraction >= 0.9:
            raise ValueError("test_fraction + val_fraction must leave at least 10% to train on")
        return self


@dataclass(frozen=True)
class Fold:
    """One validation block and the dates trained on before it (indices into the calendar)."""

    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class WalkForward:
    """The folds the sweep uses and the test period it never sees.

    Attributes:
        folds: the validation folds, in time order.
        test: the held-out test dates.
        final_train: every date a final model may train on before the test period.
        gap: the dates left out between periods.
    """

    folds: list[Fold]
    test: np.ndarray
    final_train: np.ndarray
    gap: int


def walk_forward(n_dates: int, horizon: int, config: SplitConfig | None = None) -> WalkForward:
    """Splits ``n_dates`` consecutive dates for a label ``horizon`` dates ahead.

    Raises:
        UserError: the gap is shorter than the horizon, or the periods would be empty.
    """
    config = config or SplitConfig()
    gap = horizon if config.gap is None else config.gap
    if gap < horizon:
        raise UserError(
            f"split.gap: {gap} dates is shorter than the label horizon ({horizon}); training "
            "labels would overlap the next period"
        )
    n_test = round(n_dates * config.test_fraction)
    n_val = round(n_dates * config.val_fraction) // config.folds
    test_start = n_dates - n_test
    val_end = test_start - gap  # exclusive
    first_val = val_end - config.folds * n_val
    first_train_end = first_val - gap
    if n_test < 1 or n_val < 1 or first_train_end < 1:
        raise UserError(
            f"split: {n_dates} dates are too few for {config.folds} fold(s) of "
            f"{config.val_fraction:.0%} validation, {config.test_fraction:.0%} test and gaps of "
            f"{gap} dates"
        )
    folds = []
    for k in range(config.folds):
        start = first_val + k * n_val
        folds.append(Fold(train=np.arange(0, start - gap), val=np.arange(start, start + n_val)))
    return WalkForward(
        folds=folds,
        test=np.arange(test_start, n_dates),
        final_train=np.arange(0, val_end),
        gap=gap,
    )

"""The one interface every model implements: fit on a panel's dates, score (symbol, t).

A model is built from its typed parameters and the feature columns it reads; ``fit`` learns
from the samples on the training dates (reporting after each epoch, which lets a sweep stop it
early), ``predict`` scores every asset on the asked dates whose input is defined. Models are
plain picklable objects, so a fitted one can be checkpointed and logged to MLflow whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ray_apps.models.panel import Panel

EpochReport = Callable[[int, "ScoreModel"], bool | None]
"""Called after each epoch with its number (from 1) and the model; returning True stops."""


class ModelParams(BaseModel):
    """Base of every model's parameters: unknown names are errors."""

    model_config = ConfigDict(extra="forbid")


class ScoreModel(ABC):
    """A model that scores each asset on each date; higher means a higher expected target.

    Args:
        params: the model's parameters (its ``Params`` type).
        feature_columns: the panel features it reads, in order.
    """

    name: ClassVar[str]
    Params: ClassVar[type[ModelParams]]

    def __init__(self, params: ModelParams, feature_columns: tuple[str, ...]) -> None:
        self.params = params
        self.feature_columns = tuple(feature_columns)

    @property
    def lookback(self) -> int:
        """Dates of history one score reads (1: the features of the date itself)."""
        return 1

    @property
    def epochs(self) -> int:
        """Passes over the training samples ``fit`` makes (1 for closed-form models)."""
        return 1

    def fit(
        self,
        panel: Panel,
        train: np.ndarray,
        on_epoch: EpochReport | None = None,
    ) -> None:
        """Learns from the samples on the ``train`` dates (indices into ``panel.dates``).

        Args:
            panel: the data.
            train: the dates whose targets it may learn from.
            on_epoch: called after each epoch; returning True stops training there.
        """
        for epoch in self.fit_steps(panel, train):
            if on_epoch is not None and on_epoch(epoch, self):
                break

    @abstractmethod
    def fit_steps(self, panel: Panel, train: np.ndarray) -> Iterator[int]:
        """Trains one epoch per step, yielding the epoch number (from 1) after each.

        A model resumed from a pickle continues after the epochs it has done, so several
        models (one per walk-forward fold) can be trained in lockstep and checkpointed.
        """

    @abstractmethod
    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """Scores as float [len(dates), A]; NaN where an asset's input is undefined."""

    def check_panel(self, panel: Panel) -> None:
        """Raises ValueError when the panel lacks the model's features (or orders them else)."""
        if panel.feature_columns != self.feature_columns:
            raise ValueError(
                f"{self.name}: panel features {list(panel.feature_columns)} differ from the "
                f"model's {list(self.feature_columns)}"
            )

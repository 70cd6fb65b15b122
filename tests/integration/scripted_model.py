"""A test-only model whose validation score is known in advance and whose failures are scripted.

Sweep specs in the integration tests name it ``tests.integration.scripted_model:ScriptedModel``;
Ray workers import it through ``PYTHONPATH`` (the worktree root), which the test stack inherits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

from ray_apps.models.base import ModelParams, ScoreModel
from ray_apps.models.panel import Panel

NAME = "tests.integration.scripted_model:ScriptedModel"


class ScriptedParams(ModelParams):
    """What the test scripts.

    Attributes:
        epochs: epochs it trains (nothing is learned).
        quality: the score is ``quality * label + (1 - quality) * noise``: 1 ranks the assets
            exactly as their forward return, 0 at random; the same every epoch.
        fail_at_epoch: raise once when this epoch starts (0: never).
        flag_file: created at the failure; while it exists the failure is not raised again.
        epoch_log: a file that gets a line ``QUALITY EPOCH`` for every epoch trained.
    """

    epochs: int = Field(4, ge=1)
    quality: float = Field(0.0, ge=0, le=1)
    fail_at_epoch: int = 0
    flag_file: str = ""
    epoch_log: str = ""


class ScriptedModel(ScoreModel):
    """Scores from the known target: a validation rank IC set by ``quality``."""

    name = "scripted"
    Params = ScriptedParams

    def __init__(self, params: ScriptedParams, feature_columns: tuple[str, ...]) -> None:
        super().__init__(params, feature_columns)
        self.epochs_done = 0

    @property
    def epochs(self) -> int:
        """Epochs it trains."""
        return self.params.epochs

    def fit_steps(self, panel: Panel, train: np.ndarray) -> Iterator[int]:
        """Counts epochs, failing once where scripted, logging each epoch trained."""
        p = self.params
        for epoch in range(self.epochs_done + 1, p.epochs + 1):
            if epoch == p.fail_at_epoch and not Path(p.flag_file).exists():
                Path(p.flag_file).write_text(f"failed at epoch {epoch}\n")
                raise RuntimeError(f"scripted failure at epoch {epoch}")
            if p.epoch_log:
                with open(p.epoch_log, "a") as log:
                    log.write(f"{p.quality} {epoch}\n")
            self.epochs_done = epoch
            yield epoch

    def predict(self, panel: Panel, dates: np.ndarray) -> np.ndarray:
        """``quality * label + (1 - quality) * noise`` (fixed noise), NaN without a label."""
        noise = np.random.default_rng(0).uniform(size=panel.target.shape)[dates]
        q = self.params.quality
        return q * panel.target[dates].astype(np.float64) + (1 - q) * noise

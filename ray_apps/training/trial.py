"""One Tune trial: train a model per walk-forward fold in lockstep and report validation.

Each epoch, every fold's model trains one more pass; the models then score their validation
blocks, the fold-averaged metrics go to Tune (``val_<metric>``, which the scheduler compares)
and to the trial's MLflow run (one step per epoch), and the models are checkpointed whole
(weights, optimizer state, epoch count) to the sweep's storage. A trial restarted from its
checkpoint, after a failure or ``--resume``, continues after the last saved epoch in the same
MLflow run.
"""

from __future__ import annotations

import pickle
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs
import ray.data
from mlflow.tracking import MlflowClient
from ray import tune

from ray_apps.models.base import ScoreModel
from ray_apps.models.catalog import build_model, model_class
from ray_apps.models.panel import Panel
from ray_apps.training.dataset import TrainingData
from ray_apps.training.metrics import PortfolioConfig, evaluate_panel
from ray_apps.training.splits import Fold
from ray_apps.training.tracking import (
    PARENT_TAG,
    ROLE_TAG,
    TRIAL_TAG,
    find_or_create_run,
    log_metrics,
    log_params,
)

CHECKPOINT_FILE = "models.pkl"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares besides the data.

    Attributes:
        model: the model's name.
        fixed_params: its parameters not searched.
        folds: the walk-forward validation folds.
        portfolio: the portfolio in the metrics.
        tracking_uri: the MLflow server.
        experiment_id: the sweep's experiment.
        parent_run_id: the sweep's parent run.
        device: forced torch device (``cpu`` when the trial has no GPU), or None.
        storage: the sweep's Tune folder (``BUCKET/tune/RUN``) on ``filesystem``.
        filesystem: the storage's filesystem (S3).
        streams: per fold, the training rows as a Ray Dataset (``data.stream_rows``), or None
            to train from the in-memory panel.
    """

    model: str
    fixed_params: dict[str, Any]
    folds: list[Fold]
    portfolio: PortfolioConfig
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage: str
    filesystem: pyarrow.fs.FileSystem
    device: str | None = None
    streams: list[ray.data.Dataset] | None = None

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The model parameters of a trial: fixed ones, then the sampled ``config``."""
        params = {**self.fixed_params, **config}
        if self.device is not None and "device" in model_class(self.model).Params.model_fields:
            params["device"] = self.device
        return params


def validation_metrics(
    models: list[ScoreModel], panel: Panel, folds: list[Fold], portfolio: PortfolioConfig
) -> dict[str, float]:
    """``val_<metric>`` averaged over the folds (each model scored on its own block)."""
    per_fold = [
        evaluate_panel(model.predict(panel, fold.val), panel, fold.val, portfolio)
        for model, fold in zip(models, folds, strict=True)
    ]
    return {
        f"val_{name}": float(np.nanmean([m[name] for m in per_fold]))
        if any(np.isfinite(m[name]) for m in per_fold)
        else float("nan")
        for name in per_fold[0]
    }


def train_trial(config: dict[str, Any], data: TrainingData, setup: TrialSetup) -> None:
    """Tune's function trainable (bound to the data and setup by ``tune.with_parameters``)."""
    context = tune.get_context()
    trial_id, trial_name = context.get_trial_id(), context.get_trial_name()
    params = setup.params(config)
    client = MlflowClient(setup.tracking_uri)
    run_id, created = find_or_create_run(
        client,
        setup.experiment_id,
        trial_name,
        {PARENT_TAG: setup.parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"},
    )
    if created:
        log_params(client, run_id, {"model": setup.model, **params})
    checkpoint = newest_checkpoint(setup.filesystem, setup.storage, trial_id)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            models = pickle.loads((Path(folder) / CHECKPOINT_FILE).read_bytes())
    else:
        columns = data.panel.feature_columns
        models = [build_model(setup.model, params, columns) for _ in setup.folds]
    panel = data.panel
    if setup.streams is not None:
        steps = [m.fit_stream_steps(s) for m, s in zip(models, setup.streams, strict=True)]
    else:
        steps = [m.fit_steps(panel, f.train) for m, f in zip(models, setup.folds, strict=True)]
    trained = False
    for epochs in zip(*steps, strict=True):
        trained = True
        epoch = epochs[0]
        report: dict[str, Any] = validation_metrics(models, panel, setup.folds, setup.portfolio)
        log_metrics(client, run_id, report, step=epoch)
        report |= {"epoch": epoch, "mlflow_run_id": run_id}
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / CHECKPOINT_FILE).write_bytes(pickle.dumps(models))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
    if not trained:  # restored after its last epoch: give Tune the final metrics once more
        report = validation_metrics(models, panel, setup.folds, setup.portfolio)
        epoch = getattr(models[0], "epochs_done", 1)
        tune.report(report | {"epoch": epoch, "mlflow_run_id": run_id})


def newest_checkpoint(
    filesystem: pyarrow.fs.FileSystem, storage: str, trial_id: str
) -> tune.Checkpoint | None:
    """The newest complete checkpoint the trial saved, or None for a trial that saved none.

    Looked up in storage rather than taken from Tune: Tune's experiment state on S3 is written
    every few seconds, so after the driver is killed it may name an older checkpoint than the
    trial last saved, and with actor reuse a restored function trial is handed none at all.
    The trial's folders are found by its id: a trial that had started after the last state
    snapshot gets a new folder when restored (Tune dates its name), so its earlier folder
    holds its checkpoints. Starting from the newest saved one means no saved epoch is trained
    twice, and a trial that had finished is not retrained.

    Args:
        filesystem: the experiment's storage filesystem.
        storage: the experiment's folder (one sub-folder per trial start).
        trial_id: the trial's id (part of each of its folder names).
    """
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(storage, allow_not_found=True))
    folders = sorted(  # names differ only by their start time (or a suffix Tune adds)
        entry.path
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory and f"_{trial_id}_" in entry.base_name
    )
    for folder in reversed(folders):
        found = _newest_in(filesystem, folder)
        if found is not None:
            return found
    return None


def _newest_in(filesystem: pyarrow.fs.FileSystem, trial_folder: str) -> tune.Checkpoint | None:
    """The newest checkpoint of one trial folder whose models file was written whole."""
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_folder, allow_not_found=True))
    saved = sorted(
        entry.path
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith("checkpoint_")
    )
    for path in reversed(saved):
        file = filesystem.get_file_info(posixpath.join(path, CHECKPOINT_FILE))
        if file.type == pyarrow.fs.FileType.File:
            return tune.Checkpoint(path, filesystem=filesystem)
    return None

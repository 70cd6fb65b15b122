"""MLflow bookkeeping of a sweep: the experiment, one parent run, one child run per trial.

Runs are found again by tags, not by in-memory state, so a resumed sweep (a new driver) keeps
logging to the same parent, and a trial restarted from its checkpoint (after a failure or a
resume) keeps its own run instead of opening a second one.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from ray_apps.errors import UserError

SWEEP_TAG = "ray_apps.sweep_run"
"""Tag holding the sweep run's name (the Tune experiment folder) on every run of a sweep."""
ROLE_TAG = "ray_apps.role"
"""``sweep`` (the parent), ``trial`` or ``final`` (the model evaluated on the test period)."""
TRIAL_TAG = "ray_apps.trial_id"
"""Tune's trial id on a trial's run."""
PARENT_TAG = "mlflow.parentRunId"
PARAM_LIMIT = 100
"""MLflow takes at most 100 params per batch call."""


def ensure_reachable(client: MlflowClient) -> None:
    """Raises UserError unless the tracking server answers."""
    try:
        requests.get(f"{client.tracking_uri}/health", timeout=5).raise_for_status()
    except requests.RequestException as error:
        raise UserError(
            f"MLflow at {client.tracking_uri} is not reachable ({type(error).__name__}); "
            "run `ray-apps stack up` or set RAY_APPS_MLFLOW__TRACKING_URI"
        ) from None


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (or restored from deletion) when needed.

    Raises:
        UserError: the tracking server is not reachable.
    """
    ensure_reachable(client)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The id of the newest run of the experiment with every one of ``tags``, or None."""
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def find_or_create_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    match: dict[str, str],
    extra_tags: dict[str, str] | None = None,
) -> tuple[str, bool]:
    """The run with every one of the ``match`` tags, set running again, or a new one.

    Args:
        client: the tracking client.
        experiment_id: where to look and create.
        name: the new run's name.
        match: tags that identify the run (also set on a new one).
        extra_tags: further tags set only on a new run.

    Returns:
        (run id, whether it was created).
    """
    found = find_run(client, experiment_id, match)
    if found is not None:
        client.update_run(found, status=RunStatus.to_string(RunStatus.RUNNING))
        return found, False
    run = client.create_run(experiment_id, run_name=name, tags={**(extra_tags or {}), **match})
    return run.info.run_id, True


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Logs ``params`` (values as text), in batches MLflow accepts."""
    items = [Param(key, str(value)) for key, value in sorted(params.items())]
    for first in range(0, len(items), PARAM_LIMIT):
        client.log_batch(run_id, params=items[first : first + PARAM_LIMIT])


def log_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0
) -> None:
    """Logs numeric ``metrics`` at ``step`` in one call (NaN kept: MLflow stores it)."""
    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    client.log_batch(run_id, metrics=batch)


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Sets ``tags`` on a run in one call."""
    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


class TrialRunCloser(tune.Callback):
    """Ends each trial's MLflow run when Tune ends the trial.

    A trial stopped early by the scheduler is never told so inside its function; this driver
    side callback marks its run FINISHED (tagging how many epochs it trained and whether it was
    stopped early), and a failed attempt FAILED (a retry sets it running again).

    Args:
        tracking_uri: the MLflow server.
        experiment_id: the sweep's experiment.
        parent_id: the sweep's parent run.
        max_epochs: the epochs a trial runs when nothing stops it.
    """

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_id: str, max_epochs: int
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.max_epochs = max_epochs

    def _run_of(self, trial: tune.experiment.Trial) -> tuple[MlflowClient, str | None]:
        client = MlflowClient(self.tracking_uri)
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial.trial_id}
        return client, find_run(client, self.experiment_id, tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Marks the run FINISHED with the epochs trained."""
        client, run_id = self._run_of(trial)
        if run_id is None:
            return
        epochs = int((trial.last_result or {}).get("epoch", 0))
        set_tags(
            client,
            run_id,
            {"epochs_trained": str(epochs), "stopped_early": str(epochs < self.max_epochs)},
        )
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Marks the run FAILED (a retry of the trial sets it running again)."""
        client, run_id = self._run_of(trial)
        if run_id is not None:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

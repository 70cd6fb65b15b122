"""The sweep's result in the MLflow registry, and what the registry holds.

The best trial's parameters are trained once more on every date before the test period (the
trial's own models never saw the last validation block), for the epochs the trial ran; that
model is scored once on the held-out test period, logged as a pyfunc (raw feature rows in,
scores out) with its signature, an input example, the data and feature-spec tags and the test
metrics, registered as a new version of the spec's model name and given the alias. Loading
``models:/NAME@ALIAS`` back must reproduce the scores of the model before logging, or the step
fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from ray_apps.errors import UserError
from ray_apps.models.base import ScoreModel
from ray_apps.models.catalog import build_model
from ray_apps.models.pyfunc import ScorePyfunc, model_input
from ray_apps.training.dataset import TrainingData
from ray_apps.training.metrics import PortfolioConfig, evaluate_panel
from ray_apps.training.splits import WalkForward
from ray_apps.training.streaming import panel_rows
from ray_apps.training.tracking import ROLE_TAG, log_metrics, log_params, set_tags

EXAMPLE_SYMBOLS = 50
"""Symbols in the logged input example (the newest ``lookback`` dates of each)."""


def fit_final(
    model_name: str,
    params: dict[str, Any],
    data: TrainingData,
    walk: WalkForward,
    stream: bool = False,
) -> ScoreModel:
    """The model with ``params`` trained on every date before the test period.

    With ``stream``, a row model trains from a Ray Dataset of those rows, as its trials did.
    """
    model = build_model(model_name, params, data.panel.feature_columns)
    if stream:
        for _ in model.fit_stream_steps(panel_rows(data.panel, walk.final_train)):
            pass
    else:
        model.fit(data.panel, walk.final_train)
    return model


def held_out_metrics(
    model: ScoreModel, data: TrainingData, walk: WalkForward, portfolio: PortfolioConfig
) -> dict[str, float]:
    """``test_<metric>`` of the model on the held-out test period (the one time it is used)."""
    panel, test = data.panel, walk.test
    metrics = evaluate_panel(model.predict(panel, test), panel, test, portfolio)
    return {f"test_{name}": value for name, value in metrics.items()}


def held_out_rows(data: TrainingData, walk: WalkForward, lookback: int) -> pd.DataFrame:
    """The raw feature rows a served model would get for the test period (with history)."""
    first = data.panel.dates[max(int(walk.test[0]) - lookback + 1, 0)]
    rows = data.feature_rows
    return model_input(rows[rows["ts"] >= first])


def input_example(rows: pd.DataFrame, lookback: int) -> pd.DataFrame:
    """The newest ``lookback`` dates of a few symbols, for the model's page in MLflow."""
    dates = np.sort(rows["ts"].unique())[-lookback:]
    symbols = np.sort(rows["symbol"].unique())[:EXAMPLE_SYMBOLS]
    keep = rows["ts"].isin(dates) & rows["symbol"].isin(symbols)
    return model_input(rows[keep])


@dataclass(frozen=True)
class Registered:
    """A registered model version.

    Attributes:
        name: registered model name.
        version: its new version.
        alias: the alias now pointing at it.
        run_id: the MLflow run holding the model and its test metrics.
        uri: ``models:/NAME@ALIAS``.
        checked_rows: input rows whose scores the loaded model reproduced exactly.
    """

    name: str
    version: str
    alias: str
    run_id: str
    uri: str
    checked_rows: int


def register(
    client: MlflowClient,
    run_id: str,
    wrapper: ScorePyfunc,
    test_rows: pd.DataFrame,
    name: str,
    alias: str,
    tags: dict[str, str],
) -> Registered:
    """Logs the wrapped model to run ``run_id``, registers it, sets the alias, checks a reload.

    Raises:
        UserError: the model loaded back from the registry scores differently.
    """
    expected = wrapper.score(test_rows)
    example = input_example(test_rows, wrapper.model.lookback)
    signature = infer_signature(example, wrapper.score(example))
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            signature=signature,
            input_example=example,
            registered_model_name=name,
            pip_requirements=_requirements(),
            tags=tags,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    uri = f"models:/{name}@{alias}"
    loaded = mlflow.pyfunc.load_model(uri).predict(test_rows)
    if not np.array_equal(loaded["score"].to_numpy(), expected["score"].to_numpy(), equal_nan=True):
        raise UserError(f"{uri}: the model loaded back scores differently from the one logged")
    return Registered(name, version, alias, run_id, uri, int(expected["score"].notna().sum()))


def _requirements() -> list[str]:
    """What the pyfunc needs to load (ray-apps itself is installed from this repository)."""
    import importlib.metadata as metadata

    packages = ["mlflow", "torch", "numpy", "pandas", "pydantic", "scikit-learn"]
    found = []
    for package in packages:
        try:
            found.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def log_final(
    client: MlflowClient,
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> None:
    """Params, metrics and tags of the final run."""
    log_params(client, run_id, params)
    log_metrics(client, run_id, metrics)
    set_tags(client, run_id, {**tags, ROLE_TAG: "final"})


@dataclass(frozen=True)
class VersionRow:
    """One registered model version as ``ray-apps models list`` shows it."""

    name: str
    version: str
    aliases: list[str]
    created: pd.Timestamp
    metrics: dict[str, float]
    tags: dict[str, str]


def list_versions(client: MlflowClient, name: str | None = None) -> list[VersionRow]:
    """Every version of every registered model (or of ``name``), newest first per model."""
    query = f"name = '{name}'" if name else ""
    versions = client.search_model_versions(query)
    aliases: dict[str, dict[str, list[str]]] = {}  # search results leave aliases out
    for model_name in {version.name for version in versions}:
        for alias, number in client.get_registered_model(model_name).aliases.items():
            aliases.setdefault(model_name, {}).setdefault(str(number), []).append(alias)
    rows = []
    for version in versions:
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        rows.append(
            VersionRow(
                name=version.name,
                version=str(version.version),
                aliases=sorted(aliases.get(version.name, {}).get(str(version.version), [])),
                created=pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
                metrics={k: v for k, v in metrics.items() if k.startswith("test_")},
                tags=dict(version.tags or {}),
            )
        )
    return sorted(rows, key=lambda r: (r.name, -int(r.version)))

"""A served model: one registered version loaded from the MLflow registry.

Besides the scorer, serving needs the feature spec version the model was trained on (to read
the online store's features of that version) and its lookback (dates of history to read).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_apps.errors import UserError
from ray_apps.models.pyfunc import FEATURE_SPEC_TAG, ScorePyfunc


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, loaded.

    Attributes:
        name: registered model name.
        version: the version the alias pointed at when loaded.
        run_id: the MLflow run that logged it.
        alias: the alias it was loaded by (``champion``, ``challenger``).
        feature_spec_version: the feature spec version of its training features.
        lookback: dates of history one score reads.
        feature_columns: the raw feature columns it reads.
        loaded_at: when it was loaded (UTC).
        scorer: the registered pyfunc's model (raw ``symbol, ts, <features>`` rows in).
    """

    name: str
    version: str
    run_id: str
    alias: str
    feature_spec_version: str
    lookback: int
    feature_columns: tuple[str, ...]
    loaded_at: datetime
    scorer: ScorePyfunc

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``, the exact version loaded."""
        return f"models:/{self.name}/{self.version}"


def load_served_model(
    tracking_uri: str, name: str, alias: str, online_spec_versions: Collection[str] = ()
) -> ServedModel:
    """Loads ``models:/NAME@ALIAS`` (the version it points at now) for serving.

    Args:
        tracking_uri: the MLflow tracking server (its registry and artifacts).
        name: registered model name.
        alias: the alias to load.
        online_spec_versions: the feature spec versions the online store holds; a model
            trained on none of them is refused (empty: not checked).

    Raises:
        UserError: naming the model, the alias and the problem: no such model or alias, no
            feature spec version tag, a model that does not load or is not a ray-apps scoring
            model, or a feature spec version the online store does not hold.
    """
    where = f"model {name}@{alias}"
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise UserError(
            f"{where}: no such registered model or alias ({_first_line(error)})"
        ) from None
    spec_version = (version.tags or {}).get(FEATURE_SPEC_TAG)
    if not spec_version:
        raise UserError(f"{where}: version {version.version} has no {FEATURE_SPEC_TAG} tag")
    if online_spec_versions and spec_version not in online_spec_versions:
        held = ", ".join(repr(held) for held in sorted(online_spec_versions))
        raise UserError(
            f"{where}: version {version.version} was trained on feature spec version "
            f"{spec_version!r}, the online store holds {held}"
        )
    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{name}/{version.version}"
    try:
        scorer = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as error:  # any failure to fetch or unpickle is the same user problem
        raise UserError(
            f"{where}: version {version.version} does not load "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from None
    if not isinstance(scorer, ScorePyfunc):
        raise UserError(
            f"{where}: version {version.version} is a {type(scorer).__name__}, not a ray-apps "
            "scoring model (ScorePyfunc)"
        )
    return ServedModel(
        name=name,
        version=str(version.version),
        run_id=version.run_id or "",
        alias=alias,
        feature_spec_version=spec_version,
        lookback=scorer.model.lookback,
        feature_columns=tuple(scorer.feature_columns),
        loaded_at=datetime.now(UTC),
        scorer=scorer,
    )


def _first_line(error: BaseException) -> str:
    """The first line of an error's message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""A model deployment's replica: one registry alias, loaded and kept current, scoring online.

The replica checks its alias every ``serve.poll_s`` (and when told to, by canary control); a
new version is loaded beside the one serving and only then swapped in, so no request fails
during a swap. A version that does not load leaves the previous one serving, with the reason
in :meth:`ModelServer.info` (and so in ``/healthz`` and ``/v1/models``) and the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

import pandas as pd
import redis
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.serving.http import ServiceUnavailable
from ray_apps.serving.models import ServedModel, load_served_model
from ray_apps.serving.routing import CHAMPION
from ray_apps.serving.schemas import ModelInfo
from ray_apps.serving.scoring import Entry, OnlineScorer
from ray_apps.stores.online import OnlineStore, redis_client

log = logging.getLogger("ray.serve")
_MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
"""MLflow error codes of a missing registered model or alias."""


class ModelServer:
    """Serves the version ``models:/NAME@ALIAS`` points at.

    Args:
        settings: the platform settings (``serve``, ``redis``, ``mlflow``).
        role: ``champion`` or ``challenger``: follows ``serve.champion_alias`` or
            ``serve.challenger_alias``. A champion whose alias disappears keeps serving; a
            challenger stops.
        poll: check the alias in a background thread every ``serve.poll_s``.
    """

    def __init__(self, settings: Settings, role: str, poll: bool = True) -> None:
        cfg = settings.serve
        self.name = cfg.model_name
        self.role = role
        self.alias = cfg.champion_alias if role == CHAMPION else cfg.challenger_alias
        self.tracking_uri = settings.mlflow.uri
        self.max_age = timedelta(seconds=cfg.max_feature_age_s) if cfg.max_feature_age_s else None
        self.symbols = cfg.symbols
        self.store = OnlineStore(
            redis_client(settings),
            prefix=cfg.feature_key_prefix,
            pipeline_size=settings.redis.pipeline_size,
        )
        self.scorer: OnlineScorer | None = None
        self.error: str | None = None
        self._refreshing = threading.Lock()
        self.refresh()
        if poll:
            threading.Thread(
                target=self._poll, args=(cfg.poll_s,), daemon=True, name=f"poll-{role}"
            ).start()

    def refresh(self) -> ModelInfo:
        """Loads the alias's version if it moved (the previous one serves until then)."""
        with self._refreshing:
            try:
                version = (
                    MlflowClient(self.tracking_uri)
                    .get_model_version_by_alias(self.name, self.alias)
                    .version
                )
            except MlflowException as error:
                if error.error_code not in _MISSING:
                    self.error = (
                        f"model {self.name}@{self.alias}: registry unreachable "
                        f"({str(error).splitlines()[0]})"
                    )
                    return self.info()
                version = None
            if version is None:
                self._no_alias()
            elif self.scorer is None or self.scorer.model.version != str(version):
                self._load()
            return self.info()

    def info(self, weight: float = 0.0) -> ModelInfo:
        """What this replica serves now."""
        model = self.scorer.model if self.scorer else None
        return ModelInfo(
            alias=self.alias,
            name=self.name,
            version=model.version if model else None,
            run_id=model.run_id if model else None,
            weight=weight,
            loaded_at=model.loaded_at if model else None,
            feature_spec_version=model.feature_spec_version if model else None,
            feature_columns=list(model.feature_columns) if model else [],
            error=self.error,
        )

    def predict(self, symbols: Sequence[str]) -> list[Entry]:
        """Entries of the symbols at the online store's latest complete ``as_of``."""
        scorer = self._serving()
        try:
            return scorer.lookup(symbols)
        except (UserError, redis.RedisError) as error:
            raise ServiceUnavailable(f"online store: {error}") from None

    def score_rows(self, rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
        """The served version and its ``symbol, ts, score`` of the given rows."""
        model = self._serving().model
        return model.version, model.scorer.score(rows)

    def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(self.store.client.ping())

    def _serving(self) -> OnlineScorer:
        scorer = self.scorer
        if scorer is None:
            raise ServiceUnavailable(
                f"model {self.name}@{self.alias}: nothing loaded ({self.error or 'no version'})"
            )
        return scorer

    def _no_alias(self) -> None:
        message = f"model {self.name}@{self.alias}: no such registered model or alias"
        if self.role == CHAMPION and self.scorer is not None:
            self.error = message + f"; version {self.scorer.model.version} keeps serving"
        else:
            self.scorer = None  # a cleared challenger stops serving
            self.error = message
        log.info(self.error)

    def _load(self) -> None:
        try:
            model: ServedModel = load_served_model(self.tracking_uri, self.name, self.alias)
        except UserError as error:
            kept = f"; version {self.scorer.model.version} keeps serving" if self.scorer else ""
            self.error = f"{error}{kept}"
            log.warning(self.error)
            return
        cache = self.scorer.cache if self.scorer else None
        self.scorer = OnlineScorer(self.store, model, self.max_age, self.symbols, cache)
        self.error = None
        log.info("model %s@%s: serving version %s", self.name, self.alias, model.version)

    def _poll(self, every_s: float) -> None:
        while True:  # a daemon thread: it ends with the replica
            time.sleep(every_s)
            try:
                self.refresh()
            except Exception:  # the poller must outlive a registry outage
                log.exception("model %s@%s: refresh failed", self.name, self.alias)

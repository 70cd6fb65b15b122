"""A model deployment's replica: one registry alias, loaded and kept current, scoring online.

The replica checks its alias every ``serve.poll_s`` (and when told to, by canary control); a
new version is loaded beside the one serving, scores the universe, and only then is swapped
in, so no request fails or waits during a swap. A version that does not load, or was trained
on a feature spec version the online store does not hold, leaves the previous one serving,
with the reason in :meth:`ModelServer.info` (and so in ``/healthz`` and ``/v1/models``) and
the log.

Predictions are answered from the replica's last scoring of the universe. A follower thread
rescores as soon as the online store appends a batch event (the stream consumers do for each
micro-batch, ``materialize`` for each write) and at least every ``serve.refresh_s``; a request
reads Redis only when the last scoring failed (Redis down: a 503 naming the reason).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
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
from ray_apps.serving.scoring import Entry, OnlineScorer, ScoredCrossSection
from ray_apps.stores.online import OnlineStore, redis_client

log = logging.getLogger("ray.serve")
_MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
"""MLflow error codes of a missing registered model or alias."""


ScoringKey = tuple[str | None, pd.Timestamp | None, pd.Timestamp | None, str | None]
"""(model version, as_of, newest, read error): equal for equal scorings on every replica."""


@dataclass(frozen=True)
class Scoring:
    """What a replica answers predictions from, for the ingress to answer from a copy.

    Attributes:
        scored: the last scoring of the universe (None: nothing scored yet, or no model).
        read_error: why the last read of the online store failed (None: it did not).
    """

    scored: ScoredCrossSection | None
    read_error: str | None

    @property
    def key(self) -> ScoringKey:
        """What tells two scorings apart, on one replica or across replicas."""
        scored = self.scored
        if scored is None:
            return (None, None, None, self.read_error)
        return (scored.model_version, scored.as_of, scored.newest, self.read_error)


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
        self.refresh_s = cfg.refresh_s
        self.scorer: OnlineScorer | None = None
        self.scored: ScoredCrossSection | None = None
        self.error: str | None = None
        self.read_error: str | None = None
        self._changed = threading.Condition()
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.refresh()
        if poll:
            for target, every_s, name in (
                (self._poll, cfg.poll_s, f"poll-{role}"),
                (self._follow, cfg.refresh_s, f"follow-{role}"),
            ):
                thread = threading.Thread(target=target, args=(every_s,), daemon=True, name=name)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        """Stops the alias poller and the follower (a replica's end stops them too)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

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
            else:  # the alias is back on the version serving: an earlier refusal is over
                self.error = None
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
        """Entries of the symbols from the last scoring of the universe (module docstring)."""
        scorer = self._serving()
        scored = self.scored
        if scored is None or scored.model_version != scorer.model.version or self.read_error:
            scored = self._rescore(scorer)
        return scored.lookup(symbols)

    def score_rows(self, rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
        """The served version and its ``symbol, ts, score`` of the given rows."""
        model = self._serving().model
        return model.version, model.scorer.score(rows)

    def scoring_after(self, key: ScoringKey | None, timeout_s: float) -> Scoring:
        """The replica's scoring once its key is not ``key`` (a long poll).

        Args:
            key: the key of the scoring the caller holds (None: answer at once).
            timeout_s: the longest wait; then the current (unchanged) scoring is returned.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._scoring().key != key, timeout_s)
            return self._scoring()

    def _scoring(self) -> Scoring:
        return Scoring(self.scored, self.read_error)

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
            message += f"; version {self.scorer.model.version} keeps serving"
        elif self.scorer is not None or self.scored is not None:
            self.scorer = None  # a cleared challenger stops serving
            self._keep(None, self.read_error)
        if message != self.error:  # once, not at every poll
            log.info(message)
        self.error = message

    def _rescore(self, scorer: OnlineScorer) -> ScoredCrossSection:
        """Scores the universe now (a cache hit when ``as_of`` has not moved) and keeps it.

        Raises:
            ServiceUnavailable: the online store could not be read (its reason).
        """
        try:
            scored = scorer.current()
        except (UserError, redis.RedisError) as error:
            self._keep(self.scored, f"online store: {error}")
            raise ServiceUnavailable(f"online store: {error}") from None
        if scorer is self.scorer:  # not a version swapped out meanwhile
            self._keep(scored, None)
        return scored

    def _keep(self, scored: ScoredCrossSection | None, read_error: str | None) -> None:
        """Replaces the scoring answered from, and wakes the long polls."""
        with self._changed:
            self.scored, self.read_error = scored, read_error
            self._changed.notify_all()

    def _held_spec_versions(self) -> set[str]:
        """The feature spec versions of the universe's latest vectors (empty: unknown)."""
        try:
            symbols = self.symbols or self.store.symbols()
            return set(self.store.latest_times(symbols).column("spec_version").to_pylist())
        except (UserError, redis.RedisError) as error:
            log.warning("model %s@%s: spec versions not checked: %s", self.name, self.alias, error)
            return set()

    def _load(self) -> None:
        kept = f"; version {self.scorer.model.version} keeps serving" if self.scorer else ""
        try:
            model: ServedModel = load_served_model(
                self.tracking_uri, self.name, self.alias, self._held_spec_versions()
            )
        except UserError as error:
            self.error = f"{error}{kept}"
            log.warning(self.error)
            return
        cache = self.scorer.cache if self.scorer else None
        scorer = OnlineScorer(self.store, model, self.max_age, self.symbols, cache)
        try:
            scored, read_error = scorer.current(), None  # before the swap: no request waits
        except (UserError, redis.RedisError) as error:
            scored, read_error = None, f"online store: {error}"
            log.warning("model %s@%s: first scoring failed: %s", self.name, self.alias, error)
        self.scorer = scorer
        self._keep(scored, read_error)
        self.error = None
        log.info("model %s@%s: serving version %s", self.name, self.alias, model.version)

    def _follow(self, every_s: float) -> None:
        """Rescores on each batch event of the online store, and every ``every_s`` without."""
        after: str | None = None
        while not self._stop.is_set():
            try:
                if after is None:
                    after = self.store.last_event_id()
                if self.scorer is not None:
                    with contextlib.suppress(ServiceUnavailable):  # kept in read_error
                        self._rescore(self.scorer)
                events = self.store.wait_events(after, every_s)
                if events:
                    after = events[-1].id
            except UserError as error:  # Redis down: requests report it; retry after a pause
                self._keep(self.scored, f"online store: {error}")
                after = None
                self._stop.wait(every_s)
            except Exception:  # the follower must outlive anything
                log.exception("model %s@%s: rescoring failed", self.name, self.alias)
                self._stop.wait(every_s)

    def _poll(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.refresh()
            except Exception:  # the poller must outlive a registry outage
                log.exception("model %s@%s: refresh failed", self.name, self.alias)

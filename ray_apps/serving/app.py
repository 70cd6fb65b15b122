"""The Ray Serve application: a FastAPI ingress and one model deployment per alias.

``serve/app.yaml`` names :func:`build_app` (``import_path: ray_apps.serving.app:build_app``);
``ray-apps serve up`` calls :func:`build_application` with the settings it read. Every value
comes from the settings (``RAY_APPS_SERVE__...``), none from the YAML.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pandas as pd
from fastapi import FastAPI
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from ray_apps.config import Settings, load_settings
from ray_apps.serving.http import Conflict, ServiceUnavailable, create_api
from ray_apps.serving.model_server import ModelServer, Scoring
from ray_apps.serving.predictions import PredictionPublisher
from ray_apps.serving.request_metrics import RequestMetrics
from ray_apps.serving.routing import CHALLENGER, CHAMPION, ChallengerGuard, route
from ray_apps.serving.schemas import (
    FeaturesResponse,
    Health,
    ModelsResponse,
    PredictResponse,
    RowScore,
)

log = logging.getLogger("ray.serve")

T = TypeVar("T")
_LONG_POLL_S = 10.0
"""Longest wait of one :meth:`RegistryBackend.mirror` call for a new scoring."""
WEIGHT_TAG = "ray_apps.challenger_weight"
"""Registered model tag holding the challenger's weight (set by ``/v1/canary``)."""


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The application that ``serve run`` and ``serve deploy`` start (``import_path``).

    Args:
        args: the YAML's ``args``, unused: settings come from ``RAY_APPS_...`` variables, the
            ``RAY_APPS_CONFIG`` file and the state folder, as for every other command.
    """
    return build_application(load_settings())


def build_application(settings: Settings) -> serve.Application:
    """The ingress bound to a champion and a challenger deployment, sized by ``settings.serve``."""
    cfg = settings.serve
    logging_config = {"enable_access_log": cfg.access_log}
    if cfg.model_max_replicas is None:
        scale: dict[str, Any] = {"num_replicas": cfg.model_replicas}
    else:
        scale = {
            "autoscaling_config": {
                "min_replicas": cfg.model_replicas,
                "max_replicas": cfg.model_max_replicas,
                "target_ongoing_requests": cfg.target_ongoing_requests,
            }
        }
    model = serve.deployment(ModelServer).options(
        logging_config=logging_config,
        ray_actor_options={"num_cpus": cfg.model_cpus},
        max_ongoing_requests=cfg.max_ongoing_requests,
        health_check_period_s=5,
        **scale,
    )
    champion = model.options(name="champion").bind(settings, CHAMPION)
    challenger = model.options(name="challenger").bind(settings, CHALLENGER)
    return Ingress.options(
        logging_config=logging_config,
        num_replicas=cfg.ingress_replicas,
        ray_actor_options={"num_cpus": cfg.ingress_cpus},
        max_ongoing_requests=cfg.max_ongoing_requests,
    ).bind(settings, champion, challenger)


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress:
    """HTTP in; routes each prediction to the champion or the challenger by weight.

    Args:
        settings: the platform settings.
        champion: handle of the champion deployment.
        challenger: handle of the challenger deployment.
    """

    async def __init__(
        self, settings: Settings, champion: DeploymentHandle, challenger: DeploymentHandle
    ) -> None:
        self.settings = settings
        self.backend = RegistryBackend(settings, champion, challenger)
        self._tasks = [
            asyncio.create_task(self.backend.watch()),
            asyncio.create_task(self.backend.request_metrics.export_forever()),
            *(asyncio.create_task(self.backend.mirror(role)) for role in (CHAMPION, CHALLENGER)),
        ]

    def __serve_build_asgi_app__(self) -> FastAPI:
        cfg = self.settings.serve
        return create_api(self.backend, cfg.admin_key, cfg.prediction_keys, cfg.sticky_header)


class RegistryBackend:
    """Answers the endpoints from the two model deployments; canary state in the registry.

    The challenger's weight is a tag of the registered model, so every ingress replica (and a
    restarted one) reads the same; the aliases are the registry's. Predictions are answered
    from a copy of each deployment's scoring, kept by a long poll (:meth:`mirror`), so a
    request costs no call to a model replica; without a usable copy (none yet, the replica's
    last read of the online store failed, the replica died) the replica answers.
    """

    def __init__(
        self, settings: Settings, champion: DeploymentHandle, challenger: DeploymentHandle
    ) -> None:
        cfg = settings.serve
        self.name = cfg.model_name
        self.aliases = {CHAMPION: cfg.champion_alias, CHALLENGER: cfg.challenger_alias}
        self.default_weight = cfg.challenger_weight
        self.poll_s = cfg.poll_s
        self.registry = MlflowClient(settings.mlflow.uri)
        self.handles = {CHAMPION: champion, CHALLENGER: challenger}
        self.copies: dict[str, Scoring] = {}
        self.weight = 0.0
        self.challenger_version: str | None = None
        self._control = asyncio.Lock()
        self._draw = random.Random()
        self.guard = ChallengerGuard(
            cfg.challenger_window, cfg.challenger_max_error_rate, cfg.challenger_max_latency_ms
        )
        self._rolling_back: asyncio.Task | None = None
        self.publisher = PredictionPublisher(settings) if cfg.publish_predictions else None
        self.request_metrics = RequestMetrics()
        # Score distribution of each scoring of the universe, observed once per (version,
        # as_of) when the copy changes: per answered entry it cost 16 us each, a third of a
        # 500-symbol request. Ray's histograms take positive bounds, so size and sign apart.
        self.score_sizes = Histogram(
            "ray_apps_scoring_abs_scores",
            "Absolute values of the scores of each scoring of the universe.",
            boundaries=[0.01, 0.1, 0.25, 0.5, 1, 2, 4],
            tag_keys=("alias", "version"),
        )
        self.positive_scores = Counter(
            "ray_apps_scoring_positive_scores",
            "Scores above zero in each scoring of the universe.",
            ("alias", "version"),
        )
        self._observed: dict[str, tuple[str, pd.Timestamp]] = {}

    async def watch(self) -> None:
        """Follows the challenger and its weight (set by another replica or a restart)."""
        while True:
            try:
                await self._sync()
            except Exception:  # the watcher must outlive a registry or replica outage
                log.exception("canary state refresh failed")
            await asyncio.sleep(self.poll_s)

    async def mirror(self, role: str) -> None:
        """Keeps ``copies[role]`` equal to the deployment's scoring (a long poll per change)."""
        while True:
            held = self.copies.get(role)
            try:
                scoring = await self.handles[role].scoring_after.remote(
                    held.key if held else None, _LONG_POLL_S
                )
            except Exception as error:  # a dead or restarting replica: its replacement answers
                self.copies.pop(role, None)
                log.warning("%s scoring copy: %s", role, _first_line(_cause(error)))
                await asyncio.sleep(1.0)
                continue
            self._hold(role, scoring)

    def _hold(self, role: str, scoring: Scoring) -> None:
        """Keeps the copy; a scoring not seen before goes into the score distribution."""
        self.copies[role] = scoring
        scored = scoring.scored
        if scored is None or self._observed.get(role) == (
            key := (scored.model_version, scored.as_of)
        ):
            return
        self._observed[role] = key
        tags = {"alias": self.aliases[role], "version": scored.model_version}
        for score in scored.scores.values():
            self.score_sizes.observe(abs(score), tags)
        positive = sum(score > 0 for score in scored.scores.values())
        if positive:
            self.positive_scores.inc(positive, tags)

    async def predict(self, symbols: Sequence[str], client_key: str | None) -> PredictResponse:
        """Entries of the symbols from the routed model (the champion if the challenger fails)."""

        async def call(role: str) -> PredictResponse:
            copy = self.copies.get(role)
            if copy is not None and copy.scored is not None and copy.read_error is None:
                entries = copy.scored.lookup(symbols)
            else:
                entries = await self.handles[role].predict.remote(list(symbols))
            version = entries[0].model_version if entries else ""
            if self.publisher:
                self.publisher.online(self.aliases[role], entries)
            return PredictResponse(
                alias=self.aliases[role], model_version=version, predictions=entries
            )

        return await self._routed(call, client_key)

    async def score_rows(self, rows: pd.DataFrame, client_key: str | None) -> FeaturesResponse:
        """Scores of the rows sent from the routed model."""

        async def call(role: str) -> FeaturesResponse:
            version, scored = await self.handles[role].score_rows.remote(rows)
            scores = [
                RowScore(symbol=symbol, ts=ts, score=None if pd.isna(score) else float(score))
                for symbol, ts, score in zip(
                    rows["symbol"], rows["ts"], scored["score"], strict=True
                )
            ]
            if self.publisher:
                self.publisher.features(self.aliases[role], version, scores)
            return FeaturesResponse(alias=self.aliases[role], model_version=version, scores=scores)

        return await self._routed(call, client_key)

    async def feature_columns(self) -> list[str]:
        """The champion's feature columns."""
        info = await _once_more_if_replica_died(
            lambda: self.handles[CHAMPION].info.remote(), CHAMPION
        )
        if info.version is None:
            raise ServiceUnavailable(info.error or "no champion loaded")
        return info.feature_columns

    async def models(self) -> ModelsResponse:
        """The champion and the challenger as their deployments report them."""
        weight = self._live_weight()
        champion = await _once_more_if_replica_died(
            lambda: self.handles[CHAMPION].info.remote(1.0 - weight), CHAMPION
        )
        challenger = await _once_more_if_replica_died(
            lambda: self.handles[CHALLENGER].info.remote(weight), CHALLENGER
        )
        return ModelsResponse(
            champion=champion, challenger=challenger if challenger.version else None
        )

    async def health(self) -> Health:
        """``ok`` when the champion is loaded and Redis answers."""
        try:
            champion = await self.handles[CHAMPION].info.remote()
        except Exception as error:
            return Health(
                status="unavailable", reason=f"champion deployment: {_first_line(_cause(error))}"
            )
        if champion.version is None:
            return Health(status="unavailable", reason=champion.error or "no champion loaded")
        try:
            await self.handles[CHAMPION].ping.remote()
        except Exception as error:
            return Health(
                status="unavailable",
                champion_version=champion.version,
                reason=f"redis: {_first_line(_cause(error))}",
            )
        return Health(status="ok", champion_version=champion.version, reason=champion.error)

    async def canary(self, version: str, weight: float) -> ModelsResponse:
        """Loads ``version`` as the challenger, then gives it ``weight``."""
        async with self._control:
            try:
                self.registry.get_model_version(self.name, version)
            except MlflowException:
                raise Conflict(f"model {self.name} has no version {version}") from None
            self._set_weight(0.0)
            await self._move_alias(CHALLENGER, version, f"version {version} did not load")
            self.challenger_version = version
            self.guard.reset()
            self._set_weight(weight)
            return await self.models()

    async def promote(self) -> ModelsResponse:
        """The champion alias moves to the challenger's version; the challenger is cleared."""
        async with self._control:
            version = self._alias_version(CHALLENGER)
            if version is None:
                raise Conflict(f"model {self.name} has no {self.aliases[CHALLENGER]} to promote")
            await self._move_alias(CHAMPION, version, f"version {version} did not load as champion")
            await self._clear_challenger()
            return await self.models()

    async def rollback(self) -> ModelsResponse:
        """The challenger gets no more requests and its alias is removed."""
        async with self._control:
            await self._clear_challenger()
            return await self.models()

    async def _routed(self, call: Callable[[str], Awaitable[T]], client_key: str | None) -> T:
        """``call`` on the routed version; a failing challenger hands over to the champion.

        The challenger is rolled back automatically when too many of its last requests failed
        or were too slow (``serve.challenger_*``).
        """
        if route(self._live_weight(), client_key, self._draw) == CHALLENGER:
            try:
                return await self._measured(call, CHALLENGER)
            except Exception as error:
                log.warning(
                    "challenger failed, the champion answers: %s", _first_line(_cause(error))
                )
        return await self._measured(call, CHAMPION)

    def _auto_rollback(self) -> None:
        if self._rolling_back is None or self._rolling_back.done():
            log.warning(
                "challenger %s passed its error or latency limit: rolling back",
                self.challenger_version,
            )
            self.weight = 0.0  # at once; the registry follows in the task
            self._rolling_back = asyncio.create_task(self.rollback())

    async def _measured(self, call: Callable[[str], Awaitable[T]], role: str) -> T:
        """``call`` on ``role``, counted in the request metrics (and the challenger's guard)."""
        started = time.perf_counter()
        ok = False
        try:
            answer = await _once_more_if_replica_died(lambda: call(role), role)
            ok = True
            return answer
        except Exception as error:
            cause = _cause(error)
            if isinstance(cause, ServiceUnavailable):
                raise ServiceUnavailable(str(cause)) from None
            raise
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            self.request_metrics.record(self.aliases[role], latency_ms, ok)
            if role == CHALLENGER and self.guard.record(ok, latency_ms):
                self._auto_rollback()

    def _live_weight(self) -> float:
        return self.weight if self.challenger_version else 0.0

    async def _clear_challenger(self) -> None:
        self._set_weight(0.0)
        self.challenger_version = None
        self.guard.reset()
        with contextlib.suppress(MlflowException):  # no challenger alias: nothing to remove
            self.registry.delete_registered_model_alias(self.name, self.aliases[CHALLENGER])
        await self.handles[CHALLENGER].refresh.remote()
        await self._copy(CHALLENGER)

    async def _copy(self, role: str) -> None:
        """Copies the deployment's scoring now (after a control call changed it)."""
        self._hold(role, await self.handles[role].scoring_after.remote(None, 0))

    async def _sync(self) -> None:
        async with self._control:  # not in the middle of a canary call
            info = await self.handles[CHALLENGER].info.remote()
            tags = self.registry.get_registered_model(self.name).tags or {}
            self.challenger_version = info.version
            self.weight = float(tags.get(WEIGHT_TAG, self.default_weight))

    def _set_weight(self, weight: float) -> None:
        self.weight = weight
        self.registry.set_registered_model_tag(self.name, WEIGHT_TAG, str(weight))

    def _alias_version(self, role: str) -> str | None:
        try:
            return str(
                self.registry.get_model_version_by_alias(self.name, self.aliases[role]).version
            )
        except MlflowException:
            return None

    async def _move_alias(self, role: str, version: str, failed: str) -> None:
        """Points ``role``'s alias at ``version``; puts it back if that version did not load.

        Raises:
            Conflict: the deployment could not load the version (its reason, else ``failed``).
        """
        previous = self._alias_version(role)
        self.registry.set_registered_model_alias(self.name, self.aliases[role], version)
        info = await self.handles[role].refresh.remote()
        if info.version != version:
            self._restore(role, previous)
            await self.handles[role].refresh.remote()
            raise Conflict(info.error or failed)
        await self._copy(role)

    def _restore(self, role: str, version: str | None) -> None:
        if version is None:
            self.registry.delete_registered_model_alias(self.name, self.aliases[role])
        else:
            self.registry.set_registered_model_alias(self.name, self.aliases[role], version)


async def _once_more_if_replica_died(call: Callable[[], Awaitable[T]], role: str) -> T:
    """``call``, sent once more when the replica that took it died.

    Serve routes the second call to a live replica, or waits for the one it starts in place of
    the dead one.

    Raises:
        ServiceUnavailable: the second call's replica died too (a 503 to retry later).
    """
    try:
        return await call()
    except Exception as error:
        if not _replica_died(error):
            raise
        log.warning(
            "%s replica died during a request, sending it again: %s",
            role,
            _first_line(_cause(error)),
        )
    try:
        return await call()
    except Exception as error:
        if not _replica_died(error):
            raise
        raise ServiceUnavailable(
            f"{role} deployment: its replica died ({_first_line(_cause(error))}); "
            "Serve is starting another, retry shortly"
        ) from None


def _replica_died(error: BaseException) -> bool:
    """Whether ``error`` says the replica actor answering a call died or cannot be reached."""
    return isinstance(error, RayActorError) or isinstance(_cause(error), RayActorError)


def _cause(error: BaseException) -> BaseException:
    """The exception a deployment raised (Ray wraps it in a task error)."""
    return getattr(error, "cause", None) or error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__

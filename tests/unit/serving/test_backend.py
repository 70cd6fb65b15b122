"""The ingress's backend over fake deployment handles: a replica that dies mid-request."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from ray_apps.config import Settings
from ray_apps.serving.app import RegistryBackend
from ray_apps.serving.http import create_api
from ray_apps.serving.schemas import ModelInfo
from ray_apps.serving.scoring import ScoreEntry
from tests.unit.serving.asgi_client import AsgiClient

AS_OF = datetime(2024, 1, 5, tzinfo=UTC)


class Method:
    """``handle.method.remote(...)``: each call answers the next reply (an error is raised)."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.calls = 0

    def remote(self, *args):
        self.calls += 1
        reply = self.replies.pop(0)

        async def answer():
            if isinstance(reply, BaseException):
                raise reply
            return reply

        return answer()


def entries(symbols):
    return [
        ScoreEntry(symbol=s, score=0.5, rank=1, as_of=AS_OF, model_version="3") for s in symbols
    ]


def champion_info():
    return ModelInfo(alias="champion", name="m", version="3", weight=1.0)


def backend(predict: Method, info: Method | None = None) -> RegistryBackend:
    champion = SimpleNamespace(predict=predict, info=info or Method(champion_info()))
    challenger = SimpleNamespace(predict=Method(), info=Method())
    return RegistryBackend(Settings(), champion, challenger)


def api(registry: RegistryBackend) -> AsgiClient:
    return AsgiClient(create_api(registry, SecretStr("admin")))


@pytest.mark.parametrize(
    "death",
    [
        ActorDiedError(),
        ActorUnavailableError("connection lost", None),
        RayTaskError("predict", "traceback", ActorDiedError()),
    ],
    ids=["died", "unavailable", "wrapped"],
)
def test_a_request_whose_replica_died_is_sent_once_more_and_answered(death):
    predict = Method(death, entries(["A", "B"]))
    reply = api(backend(predict)).post("/v1/predict", json={"symbols": ["A", "B"]})
    assert reply.status_code == 200, reply.text
    assert [p["symbol"] for p in reply.json()["predictions"]] == ["A", "B"]
    assert predict.calls == 2


def test_a_second_death_is_a_503_with_retry_after_and_the_reason():
    predict = Method(ActorDiedError(), ActorDiedError())
    reply = api(backend(predict)).post("/v1/predict", json={"symbols": ["A"]})
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "1"
    detail = reply.json()["detail"]
    assert detail.startswith("champion deployment: its replica died (")
    assert detail.endswith("Serve is starting another, retry shortly")
    assert predict.calls == 2


def test_other_errors_are_not_sent_again():
    predict = Method(ValueError("a bug"), entries(["A"]))
    with pytest.raises(ValueError, match="a bug"):
        api(backend(predict)).post("/v1/predict", json={"symbols": ["A"]})
    assert predict.calls == 1


def test_the_models_endpoint_survives_a_replica_death_too():
    info = Method(ActorDiedError(), champion_info())
    registry = backend(Method(), info)
    registry.handles["challenger"].info = Method(
        ModelInfo(alias="challenger", name="m", version=None, weight=0.0)
    )
    client = api(registry)
    models = client.get("/v1/models")
    assert models.status_code == 200, models.text
    assert models.json()["champion"]["version"] == "3"
    assert info.calls == 2


class Recorded:
    """A Ray metric's ``inc`` / ``observe``, recorded as ``(value, tags)``."""

    def __init__(self) -> None:
        self.points: list[tuple[float, dict]] = []

    def inc(self, value, tags):
        self.points.append((value, tags))

    observe = inc


def test_requests_and_errors_reach_the_metrics_per_alias_on_export():
    registry = backend(Method(entries(["A"]), entries(["B"]), ActorDiedError(), ActorDiedError()))
    metrics = registry.request_metrics
    metrics.requests, metrics.errors, metrics.latency = Recorded(), Recorded(), Recorded()
    client = api(registry)
    assert client.post("/v1/predict", json={"symbols": ["A"]}).status_code == 200
    assert client.post("/v1/predict", json={"symbols": ["B"]}).status_code == 200
    assert client.post("/v1/predict", json={"symbols": ["C"]}).status_code == 503
    assert metrics.requests.points == []  # nothing per request: counted until the export
    metrics.export()
    champion = {"alias": "champion"}
    assert metrics.requests.points == [(3, champion)]
    assert metrics.errors.points == [(1, champion)]
    assert [tags for _, tags in metrics.latency.points] == [champion] * 3
    assert all(value >= 0 for value, _ in metrics.latency.points)
    metrics.export()  # nothing new: nothing added
    assert len(metrics.requests.points) == 1 and len(metrics.latency.points) == 3

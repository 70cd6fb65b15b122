"""The HTTP API over a fake backend: validation, auth and status codes, without Ray."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from pydantic import SecretStr

from ray_apps.serving.http import Conflict, ServiceUnavailable, create_api
from ray_apps.serving.schemas import (
    FeaturesResponse,
    Health,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    RowScore,
)
from ray_apps.serving.scoring import ErrorEntry, ScoreEntry
from tests.unit.serving.asgi_client import AsgiClient

AS_OF = datetime(2024, 1, 5, tzinfo=UTC)
ROW = {"symbol": "A", "ts": "2024-01-05T00:00:00Z", "f1": 0.5, "f2": -1.0}


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.health_reply = Health(status="ok", champion_version="1")
        self.fail_with: Exception | None = None

    async def predict(self, symbols, client_key):
        self.calls.append(("predict", list(symbols), client_key))
        if self.fail_with:
            raise self.fail_with
        entries = [
            ScoreEntry(symbol=s, score=1.0, rank=1, as_of=AS_OF, model_version="1")
            if s != "X"
            else ErrorEntry(
                symbol=s, error="unknown_symbol", detail="none", as_of=AS_OF, model_version="1"
            )
            for s in symbols
        ]
        return PredictResponse(alias="champion", model_version="1", predictions=entries)

    async def score_rows(self, rows: pd.DataFrame, client_key):
        self.calls.append(("score_rows", rows, client_key))
        scores = [
            RowScore(symbol=s, ts=t, score=0.0)
            for s, t in zip(rows["symbol"], rows["ts"], strict=True)
        ]
        return FeaturesResponse(alias="champion", model_version="1", scores=scores)

    async def feature_columns(self):
        return ["f1", "f2"]

    async def models(self):
        return ModelsResponse(
            champion=ModelInfo(alias="champion", name="m", version="1", weight=1.0), challenger=None
        )

    async def health(self):
        return self.health_reply

    async def canary(self, version, weight):
        self.calls.append(("canary", version, weight))
        raise Conflict(f"model m has no version {version}")

    async def promote(self):
        self.calls.append(("promote",))
        return await self.models()

    async def rollback(self):
        self.calls.append(("rollback",))
        return await self.models()


@pytest.fixture
def backend():
    return FakeBackend()


def client(backend, prediction_keys=()):
    api = create_api(backend, SecretStr("admin-secret"), [SecretStr(k) for k in prediction_keys])
    return AsgiClient(api)


def test_predict_answers_one_entry_per_symbol_in_order_with_the_sticky_key(backend):
    reply = client(backend).post(
        "/v1/predict", json={"symbols": ["B", "X", "A"]}, headers={"x-client-key": "c1"}
    )
    assert reply.status_code == 200
    assert [p["symbol"] for p in reply.json()["predictions"]] == ["B", "X", "A"]
    assert reply.json()["predictions"][1]["error"] == "unknown_symbol"
    assert backend.calls == [("predict", ["B", "X", "A"], "c1")]


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"symbols": []}, [["body", "symbols"]]),
        ({"symbols": "A"}, [["body", "symbols"]]),
        ({"symbol": ["A"]}, [["body", "symbols"], ["body", "symbol"]]),
    ],
)
def test_bad_predict_bodies_are_422_naming_the_field(backend, body, locs):
    reply = client(backend).post("/v1/predict", json=body)
    assert reply.status_code == 422
    assert [problem["loc"] for problem in reply.json()["detail"]] == locs
    assert backend.calls == []


@pytest.mark.parametrize(
    ("change", "loc_end", "words"),
    [
        ({"f2": None}, "f2", "missing"),  # dropped below
        ({"f3": 1.0}, "f3", "is not one the model reads"),
        ({"f1": "high"}, None, "feature f1: expected a number, got a string"),
        ({"f1": True}, None, "feature f1: expected a number, got a boolean"),
        ({"ts": "soon"}, "ts", "datetime"),
        ({"symbol": ""}, "symbol", "at least 1 character"),
    ],
    ids=["missing", "unknown", "string", "boolean", "bad-time", "empty-symbol"],
)
def test_bad_feature_rows_are_422_naming_the_field(backend, change, loc_end, words):
    row = {**ROW, **change}
    if change == {"f2": None}:
        row.pop("f2")
    reply = client(backend).post("/v1/predict/features", json={"rows": [ROW, row]})
    assert reply.status_code == 422, reply.text
    problem = reply.json()["detail"][0]
    assert problem["loc"][:3] == ["body", "rows", 1]
    if loc_end:
        assert problem["loc"][-1] == loc_end
    assert words in problem["msg"]
    assert backend.calls == []


def test_nan_and_infinity_features_are_422(backend):
    for literal in ("NaN", "Infinity"):
        text = (
            '{"rows": [{"symbol": "A", "ts": "2024-01-05T00:00:00Z", '
            f'"f1": {literal}, "f2": 1}}]}}'
        )
        reply = client(backend).post(
            "/v1/predict/features", content=text, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 422, reply.text
        assert "feature f1:" in reply.text and "is not a finite number" in reply.text


@pytest.mark.parametrize(
    "ts", ["2024-01-05T00:00:00Z", "2024-01-05T00:00:00", "2024-01-05T05:00:00+05:00"]
)
def test_a_row_repeating_a_symbol_and_time_is_422_naming_it(backend, ts):
    """Found by fuzzing the running app: the model's panel refused the repeat (a 500).
    The same instant in another offset, or without one (read as UTC), repeats too."""
    rows = [ROW, {**ROW, "symbol": "B"}, {**ROW, "ts": ts}]
    reply = client(backend).post("/v1/predict/features", json={"rows": rows})
    assert reply.status_code == 422, reply.text
    (problem,) = reply.json()["detail"]
    assert problem["loc"] == ["body", "rows", 2, "ts"]
    assert problem["msg"] == (
        "row 2 repeats row 0: symbol A at 2024-01-05T00:00:00+00:00; "
        "send one row per symbol and time"
    )
    assert backend.calls == []


def test_good_feature_rows_reach_the_backend_as_a_frame_in_the_models_columns(backend):
    reply = client(backend).post("/v1/predict/features", json={"rows": [ROW]})
    assert reply.status_code == 200, reply.text
    ((_, frame, key),) = backend.calls
    assert list(frame.columns) == ["symbol", "ts", "f1", "f2"] and key is None
    assert frame.iloc[0]["f1"] == 0.5 and frame.iloc[0]["ts"] == pd.Timestamp(AS_OF)


@pytest.mark.parametrize("path", ["/v1/promote", "/v1/rollback"])
def test_control_needs_the_admin_key(backend, path):
    api = client(backend)
    missing = api.post(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert api.post(path, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert backend.calls == []
    ok = api.post(path, headers={"Authorization": "Bearer admin-secret"})
    assert ok.status_code == 200 and backend.calls == [(path.rsplit("/", 1)[1],)]


def test_control_refuses_every_key_when_no_admin_key_is_configured(backend):
    api = AsgiClient(create_api(backend, None))
    assert api.post("/v1/rollback", headers={"Authorization": "Bearer "}).status_code in (401, 403)
    assert api.post("/v1/rollback", headers={"Authorization": "Bearer x"}).status_code == 403


def test_canary_validates_its_body_and_a_conflict_is_409(backend):
    api, auth = client(backend), {"Authorization": "Bearer admin-secret"}
    bad = api.post("/v1/canary", json={"version": "2", "weight": 1.5}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "weight"]
    missing = api.post("/v1/canary", json={"version": "9", "weight": 0.2}, headers=auth)
    assert missing.status_code == 409 and missing.json() == {"detail": "model m has no version 9"}


def test_prediction_keys_are_needed_only_when_configured(backend):
    open_api = client(backend)
    assert open_api.post("/v1/predict", json={"symbols": ["A"]}).status_code == 200
    keyed = client(backend, prediction_keys=["p1", "p2"])
    assert keyed.post("/v1/predict", json={"symbols": ["A"]}).status_code == 401
    assert (
        keyed.post(
            "/v1/predict", json={"symbols": ["A"]}, headers={"Authorization": "Bearer admin-secret"}
        ).status_code
        == 403
    )
    assert (
        keyed.post(
            "/v1/predict", json={"symbols": ["A"]}, headers={"Authorization": "Bearer p2"}
        ).status_code
        == 200
    )


def test_health_is_503_with_the_reason_and_unavailable_predictions_too(backend):
    api = client(backend)
    assert api.get("/healthz").status_code == 200
    backend.health_reply = Health(status="unavailable", reason="redis: connection refused")
    reply = api.get("/healthz")
    assert reply.status_code == 503 and reply.json()["reason"] == "redis: connection refused"
    backend.fail_with = ServiceUnavailable("online store: connection refused")
    reply = api.post("/v1/predict", json={"symbols": ["A"]})
    assert reply.status_code == 503
    assert reply.json() == {"detail": "online store: connection refused"}


def test_openapi_lists_every_endpoint(backend):
    paths = client(backend).get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/healthz",
        "/v1/models",
        "/v1/predict",
        "/v1/predict/features",
        "/v1/canary",
        "/v1/promote",
        "/v1/rollback",
    }

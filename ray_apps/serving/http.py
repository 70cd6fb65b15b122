"""The FastAPI application of the Serve ingress: endpoints, bearer keys and error bodies.

It calls a :class:`Backend` (the Serve ingress, or a fake in unit tests) for everything that
needs models or stores, so routing, validation and auth are tested without Ray.
"""

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Protocol

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from ray_apps.serving.schemas import (
    CanaryRequest,
    FeaturesRequest,
    FeaturesResponse,
    Health,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
)

RETRY_AFTER_S = 1
"""Seconds a 503 asks the client to wait before trying again (its ``Retry-After``)."""


class ServiceUnavailable(Exception):
    """The request cannot be answered now (no model loaded, Redis down); a 503 with the reason."""


class Conflict(Exception):
    """A canary control call that does not apply to the current state; a 409 with the reason."""


class Backend(Protocol):
    """What the endpoints need from the models and stores."""

    async def predict(self, symbols: Sequence[str], client_key: str | None) -> PredictResponse:
        """Entries of the symbols from the routed model."""

    async def score_rows(self, rows: pd.DataFrame, client_key: str | None) -> FeaturesResponse:
        """Scores of a given cross-section from the routed model."""

    async def feature_columns(self) -> list[str]:
        """The feature columns the champion reads."""

    async def models(self) -> ModelsResponse:
        """What each alias serves."""

    async def health(self) -> Health:
        """``ok``, or why not."""

    async def canary(self, version: str, weight: float) -> ModelsResponse:
        """Serve ``version`` as the challenger with ``weight``."""

    async def promote(self) -> ModelsResponse:
        """The challenger's version becomes the champion; the challenger is cleared."""

    async def rollback(self) -> ModelsResponse:
        """The challenger is cleared (weight 0)."""


_bearer = HTTPBearer(auto_error=False, description="Bearer key from the serve settings.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def create_api(
    backend: Backend,
    admin_key: SecretStr | None,
    prediction_keys: Sequence[SecretStr] = (),
    sticky_header: str = "x-client-key",
) -> FastAPI:
    """The HTTP API over ``backend``.

    Args:
        backend: answers the endpoints.
        admin_key: the bearer key of the canary control endpoints (None: they refuse all).
        prediction_keys: bearer keys of the prediction endpoints (empty: no key needed).
        sticky_header: the request header whose value pins a client to one version.
    """
    api = FastAPI(
        title="ray-apps online inference",
        description="Scores of the online store's latest cross-section by the registry's "
        "champion (and challenger, with its canary weight).",
    )

    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop (and at
    # times a thread start) per request that cost more than the whole prediction
    async def admin(credentials: Credentials) -> None:
        _check_key(credentials, [admin_key] if admin_key else [])

    async def predictor(credentials: Credentials) -> None:
        if prediction_keys:
            _check_key(credentials, list(prediction_keys))

    sticky = Header(alias=sticky_header, description="Pins a client to one version.")

    @api.exception_handler(RequestValidationError)
    async def _invalid_request(_, error: RequestValidationError) -> JSONResponse:
        # The field, the problem and its kind; not the input (it may hold NaN, not JSON).
        detail = [
            {key: problem[key] for key in ("type", "loc", "msg")} for problem in error.errors()
        ]
        return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @api.exception_handler(ServiceUnavailable)
    async def _unavailable(_, error: ServiceUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": str(error)},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @api.exception_handler(Conflict)
    async def _conflict(_, error: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_409_CONFLICT)

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> JSONResponse:
        """200 when a champion is loaded and Redis answers, else 503 with the reason."""
        health = await backend.health()
        code = status.HTTP_200_OK if health.status == "ok" else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse(health.model_dump(mode="json"), code)

    @api.get("/v1/models", response_model=ModelsResponse)
    async def models() -> ModelsResponse:
        """The champion and challenger: version, run, weight, load time, feature spec."""
        return await backend.models()

    @api.post("/v1/predict", response_model=PredictResponse, dependencies=[Depends(predictor)])
    async def predict(body: PredictRequest, key: Annotated[str | None, sticky] = None) -> Response:
        """One entry per symbol: score and rank at the latest complete as_of, or an error."""
        answer = await backend.predict(body.symbols, key or None)
        # rendered from the entries' kept JSON: FastAPI would validate and serialize each again
        return Response(answer.render(), media_type="application/json")

    @api.post(
        "/v1/predict/features",
        response_model=FeaturesResponse,
        dependencies=[Depends(predictor)],
    )
    async def predict_features(
        body: FeaturesRequest, key: Annotated[str | None, sticky] = None
    ) -> FeaturesResponse:
        """Scores of the cross-section sent (every feature the model reads, no other)."""
        columns = await backend.feature_columns()
        _check_names(body, columns)
        _check_unique(body)
        frame = pd.DataFrame(
            [{"symbol": row.symbol, "ts": row.ts, **row.features} for row in body.rows],
            columns=["symbol", "ts", *columns],
        )
        return await backend.score_rows(frame, key or None)

    @api.post("/v1/canary", response_model=ModelsResponse, dependencies=[Depends(admin)])
    async def canary(body: CanaryRequest) -> ModelsResponse:
        """Point the challenger alias at ``version`` and give it ``weight`` of the requests."""
        return await backend.canary(body.version, body.weight)

    @api.post("/v1/promote", response_model=ModelsResponse, dependencies=[Depends(admin)])
    async def promote() -> ModelsResponse:
        """The challenger's version becomes the champion; the challenger is cleared."""
        return await backend.promote()

    @api.post("/v1/rollback", response_model=ModelsResponse, dependencies=[Depends(admin)])
    async def rollback() -> ModelsResponse:
        """The challenger is cleared and gets no more requests."""
        return await backend.rollback()

    return api


def _check_key(credentials: HTTPAuthorizationCredentials | None, keys: list[SecretStr]) -> None:
    """401 without a bearer key, 403 with one that is not among ``keys``."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer key is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = credentials.credentials.encode()
    if not any(hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the bearer key is not accepted")


def _check_names(body: FeaturesRequest, columns: list[str]) -> None:
    """A 422 naming the first row field that is missing or unknown to the model."""
    wanted = set(columns)
    for index, row in enumerate(body.rows):
        names = set(row.features)
        for name in sorted(wanted - names):
            _invalid(
                index,
                name,
                "missing",
                f"feature {name} is missing; the model reads {', '.join(columns)}",
            )
        for name in sorted(names - wanted):
            _invalid(
                index,
                name,
                "extra_forbidden",
                f"feature {name} is not one the model reads ({', '.join(columns)})",
            )


def _check_unique(body: FeaturesRequest) -> None:
    """A 422 naming the first row whose symbol and time repeat an earlier row's.

    Times are compared as instants, a time without an offset read as UTC (as the model does).
    """
    seen: dict[tuple[str, datetime], int] = {}
    for index, row in enumerate(body.rows):
        ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
        first = seen.setdefault((row.symbol, ts), index)
        if first != index:
            _invalid(
                index,
                "ts",
                "value_error",
                f"row {index} repeats row {first}: symbol {row.symbol} at "
                f"{pd.Timestamp(ts).tz_convert('UTC').isoformat()}; "
                "send one row per symbol and time",
            )


def _invalid(index: int, name: str, kind: str, message: str) -> None:
    raise RequestValidationError(
        [{"type": kind, "loc": ("body", "rows", index, name), "msg": message, "input": None}]
    )

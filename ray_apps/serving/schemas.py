"""The HTTP API's request and response bodies (their OpenAPI schema is served at ``/docs``)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ray_apps.serving.scoring import ErrorEntry, ScoreEntry

MAX_SYMBOLS = 10_000
"""Most symbols one prediction request may ask for."""
MAX_ROWS = 100_000
"""Most rows one cross-section request may send."""
_ENVELOPE = TypeAdapter(dict[str, str])


class PredictRequest(BaseModel):
    """Symbols to score at the online store's latest complete ``as_of``."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(
        min_length=1, max_length=MAX_SYMBOLS, description="Symbols, answered in this order."
    )


class PredictResponse(BaseModel):
    """One entry per symbol asked: its score and rank, or why it has none."""

    alias: str = Field(description="The registry alias that answered (champion, challenger).")
    model_version: str
    predictions: list[ScoreEntry | ErrorEntry]

    def render(self) -> bytes:
        """The response's JSON, as ``model_dump_json`` gives it, from each entry's kept JSON.

        An entry is rendered once and shared by every request that asks for its symbol, so a
        response for 500 symbols is a join, not 500 serializations.
        """
        head = _ENVELOPE.dump_json({"alias": self.alias, "model_version": self.model_version})
        entries = b",".join([entry.json_bytes for entry in self.predictions])
        return b"".join((head[:-1], b',"predictions":[', entries, b"]}"))


class FeatureRow(BaseModel):
    """One row of a cross-section: ``symbol``, ``ts`` and one finite number per feature."""

    model_config = ConfigDict(extra="allow")

    symbol: str = Field(min_length=1)
    ts: datetime

    @model_validator(mode="after")
    def _finite_features(self) -> FeatureRow:
        for name, value in (self.model_extra or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"feature {name}: expected a number, got {_kind(value)}")
            if not math.isfinite(value):
                raise ValueError(f"feature {name}: {value} is not a finite number")
        return self

    @property
    def features(self) -> dict[str, float]:
        """The feature values by name."""
        return {name: float(value) for name, value in (self.model_extra or {}).items()}


class FeaturesRequest(BaseModel):
    """A cross-section to score: rows of ``symbol, ts, <features>``.

    Each row has every feature the model reads and no other.
    """

    model_config = ConfigDict(extra="forbid")

    rows: list[FeatureRow] = Field(min_length=1, max_length=MAX_ROWS)


class RowScore(BaseModel):
    """The score of one row (null: the model gives none, e.g. too few symbols at ``ts``)."""

    symbol: str
    ts: datetime
    score: float | None


class FeaturesResponse(BaseModel):
    """One score per row sent, in the order sent."""

    alias: str
    model_version: str
    scores: list[RowScore]


class ModelInfo(BaseModel):
    """What one alias serves now."""

    alias: str
    name: str
    version: str | None = Field(description="Null when nothing is loaded.")
    run_id: str | None = None
    weight: float = Field(description="Share of prediction requests it gets.")
    loaded_at: datetime | None = None
    feature_spec_version: str | None = None
    feature_columns: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the alias's current version is not served.")


class ModelsResponse(BaseModel):
    """The champion and, when one is loaded, the challenger."""

    champion: ModelInfo
    challenger: ModelInfo | None


class CanaryRequest(BaseModel):
    """Serve ``version`` as the challenger to a share ``weight`` of requests."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[1-9][0-9]*$", description="Registered model version.")
    weight: float = Field(ge=0, le=1, description="Share of requests the challenger gets.")


class Health(BaseModel):
    """``ok``, or the reason the service cannot answer predictions."""

    status: str
    reason: str | None = None
    champion_version: str | None = None


def _kind(value: Any) -> str:
    """A JSON type name of a value."""
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )

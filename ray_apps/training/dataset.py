"""The data a sweep trains on: bars -> features (the one definition) -> point-in-time panel.

Bars come from a packaged data set (validated; bad rows are quarantined and counted, never
used), a CSV/Parquet file, or the offline store; features are computed with the batch kernels
of the feature spec; labels and the cross-sectional transform come from
:func:`~ray_apps.features.training_set.build_training_set`. The raw next-bar log return is
kept beside the (possibly ranked) target so portfolios are evaluated in real returns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_apps.errors import UserError
from ray_apps.features.batch import compute_frame
from ray_apps.features.spec import DEFAULT_SPEC_PATH, FeatureSpec, load_spec
from ray_apps.features.training_set import (
    TrainingSetConfig,
    build_training_set,
    forward_returns,
)
from ray_apps.marketdata.loaders import sp500_sectors
from ray_apps.marketdata.sources import SyntheticSource, parse_source
from ray_apps.marketdata.synthetic import generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.models.panel import Panel

RETURN_COLUMN = "return_1"
"""The raw next-bar log return kept for portfolio evaluation."""
FORWARD_RETURN_COLUMN = "forward_return"
"""The raw log return over the label's horizon, what IC and accuracy are measured against."""


class DataConfig(BaseModel):
    """Where the bars come from and how training rows are made.

    Attributes:
        source: what ``ray-apps ingest --source`` takes (a packaged data set such as
            ``sp500-panel``, ``synthetic:SYMBOLS:BARS[:INTERVAL]``, or a CSV/Parquet path), or
            ``store`` (the offline store).
        interval: bar interval read from the store.
        symbols: only these symbols (all when None).
        start: first bar time used (features warm up from here).
        end: end of the bars used (exclusive).
        feature_spec: the feature spec file.
        horizon: the target is the log return over the next ``horizon`` bars.
        normalize: per-date cross-sectional transform of features and target.
        min_symbols: with a transform, dates with fewer symbols are dropped.
        stream_rows: row models (``mlp``) train from a Ray Dataset of the training rows
            through ``iter_torch_batches`` instead of indexing the in-memory panel.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = "sp500-panel"
    interval: str = "1d"
    symbols: list[str] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    feature_spec: Path = DEFAULT_SPEC_PATH
    horizon: int = Field(1, ge=1, le=250)
    normalize: Literal["none", "rank", "zscore"] = "rank"
    min_symbols: int = Field(5, ge=2)
    stream_rows: bool = False

    @property
    def target_column(self) -> str:
        """The label the models learn."""
        return f"label_{self.horizon}"


@dataclass(frozen=True)
class TrainingData:
    """A panel ready to train on and what it was made from.

    Attributes:
        panel: features, target and raw returns per (date, asset).
        spec: the feature spec used.
        tags: provenance to log beside a model (source, spec version and fingerprint, data
            range, horizon).
        feature_rows: ``symbol, ts`` and the raw (untransformed) features of every row whose
            features are all defined: what a served model receives.
    """

    panel: Panel
    spec: FeatureSpec
    tags: dict[str, str]
    feature_rows: pd.DataFrame


def load_bars(config: DataConfig, store: object | None = None) -> pd.DataFrame:
    """The bars named by ``config`` (``store`` is the offline-store actor for ``store``).

    Raises:
        UserError: unknown source, no bars left after filtering.
    """
    if config.source == "store":
        if store is None:
            raise UserError("data.source: store needs a running stack (ray-apps stack up)")
        import ray

        bars = ray.get(
            store.bars.remote(
                symbols=config.symbols, start=config.start, end=config.end,
                interval=config.interval,
            )
        )
    else:
        try:
            source = parse_source(config.source)
        except UserError as error:
            raise UserError(f"data.source: {error} (or 'store')") from None
        if isinstance(source, SyntheticSource):
            raw = generate_bars(source.spec)
        else:
            raw = pd.concat(list(source.read()), ignore_index=True)
        bars = validate_bars(raw).accepted
        if config.symbols:
            bars = bars[bars["symbol"].isin(config.symbols)]
        if config.start is not None:
            bars = bars[bars["ts"] >= pd.Timestamp(config.start, tz="UTC")]
        if config.end is not None:
            bars = bars[bars["ts"] < pd.Timestamp(config.end, tz="UTC")]
    if bars.empty:
        raise UserError(f"data: no bars in {config.source} for the symbols and dates asked")
    return bars.reset_index(drop=True)


def load_training_data(config: DataConfig, store: object | None = None) -> TrainingData:
    """Bars -> features -> point-in-time rows -> a panel, with provenance tags."""
    spec = load_spec(config.feature_spec)
    bars = load_bars(config, store)
    features = compute_frame(bars, spec)
    horizons = sorted({1, config.horizon})
    rows = build_training_set(
        bars,
        features,
        TrainingSetConfig(
            horizons=horizons, normalize=config.normalize, min_symbols=config.min_symbols
        ),
    )
    raw = forward_returns(bars, horizons)
    raw = raw.rename(columns={f"label_{config.horizon}": FORWARD_RETURN_COLUMN})
    raw[RETURN_COLUMN] = raw[FORWARD_RETURN_COLUMN] if config.horizon == 1 else raw.pop("label_1")
    raw["ts"] = pd.to_datetime(raw["ts"], utc=True)
    rows = rows.merge(raw, on=["symbol", "ts"], how="left", validate="one_to_one")
    if rows.empty:
        raise UserError(
            f"data: no training rows from {config.source}: too few bars for the features' "
            f"warm-up ({spec.warmup} bars) and the {config.horizon}-bar label"
        )
    sectors = sp500_sectors().drop_duplicates("symbol").set_index("symbol")
    groups = {level: sectors[level].astype(str).to_dict() for level in ("sector", "industry")}
    panel = Panel.from_frame(
        rows, spec.columns, config.target_column, RETURN_COLUMN, FORWARD_RETURN_COLUMN, groups
    )
    tags = {
        "data.source": config.source,
        "data.interval": config.interval,
        "data.start": str(panel.dates[0]),
        "data.end": str(panel.dates[-1]),
        "data.symbols": str(len(panel.symbols)),
        "data.horizon": str(config.horizon),
        "data.normalize": config.normalize,
        "feature_spec.version": spec.version,
        "feature_spec.fingerprint": spec.fingerprint,
    }
    defined = features.replace([np.inf, -np.inf], np.nan).dropna(subset=spec.columns)
    defined = defined.assign(ts=pd.to_datetime(defined["ts"], utc=True))
    return TrainingData(
        panel=panel, spec=spec, tags=tags, feature_rows=defined.reset_index(drop=True)
    )

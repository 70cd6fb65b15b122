"""The data a sweep trains on: stored features -> point-in-time rows -> a panel.

Training stands on what the feature engines stored: the ``features`` table of the offline
store, read for the feature spec's version and fingerprint. Symbols whose stored features are
missing, stale (bars ingested after them) or of another fingerprint are computed first with
the chosen engine (Ray Data by default) and stored, then read, so a sweep, the batch engines
and serving all see the same rows. A CSV/Parquet file of bars is computed with the same engine
without touching the store. Labels come from the same bars
(:func:`~ray_apps.features.training_set.build_training_set`), and every training set passes
the look-ahead check on a sample of its symbols before a trial starts.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, ConfigDict, Field

from ray_apps.errors import UserError
from ray_apps.features.bar_checks import check_bars
from ray_apps.features.batch import compute_frame, normalize_bars
from ray_apps.features.compute import ComputeRequest, compute_features
from ray_apps.features.sources import BarsInput, read_all
from ray_apps.features.spec import DEFAULT_SPEC_PATH, FeatureSpec, load_spec
from ray_apps.features.training_set import (
    TrainingSetConfig,
    build_training_set,
    check_point_in_time,
    forward_returns,
)
from ray_apps.marketdata.loaders import sp500_sectors
from ray_apps.marketdata.universes import UNIVERSES, universe_symbols
from ray_apps.models.panel import Panel
from ray_apps.models.pyfunc import FEATURE_SPEC_TAG
from ray_apps.stores.offline_actor import OfflineStoreHandle

RETURN_COLUMN = "return_1"
"""The raw next-bar log return kept for portfolio evaluation."""
FORWARD_RETURN_COLUMN = "forward_return"
"""The raw log return over the label's horizon, what IC and accuracy are measured against."""

Echo = Callable[[str], None]
Engine = Literal["ray", "spark", "incremental"]


class DataConfig(BaseModel):
    """Which bars and features a sweep trains on, and how training rows are made.

    Attributes:
        bars: the bars, as ``ray-apps features compute`` takes them: the offline store
            (default) or a CSV/Parquet file, with symbols, interval, start and end.
        universe: train on the symbols of a packaged data set (e.g. ``sp500-panel``) as
            stored; combined with ``bars.symbols`` when both are given.
        feature_spec: the feature spec file.
        engine: the engine that computes features the store lacks (or a file's features).
        horizon: the target is the log return over the next ``horizon`` bars.
        normalize: per-date cross-sectional transform of features and target.
        min_symbols: with a transform, dates with fewer symbols are dropped.
        stream_rows: row models (``mlp``) train from a Ray Dataset of the training rows
            through ``iter_torch_batches`` instead of indexing the in-memory panel.
        look_ahead_symbols: symbols whose features are recomputed on cut histories before
            training (the point-in-time check); a feature that used later bars fails the sweep.
    """

    model_config = ConfigDict(extra="forbid")

    bars: BarsInput = Field(default_factory=BarsInput)
    universe: Literal[tuple(UNIVERSES)] | None = None  # type: ignore[valid-type]
    feature_spec: Path = DEFAULT_SPEC_PATH
    engine: Engine = "ray"
    horizon: int = Field(1, ge=1, le=250)
    normalize: Literal["none", "rank", "zscore"] = "rank"
    min_symbols: int = Field(5, ge=2)
    stream_rows: bool = False
    look_ahead_symbols: int = Field(10, ge=1)

    @property
    def target_column(self) -> str:
        """The label the models learn."""
        return f"label_{self.horizon}"

    def bars_input(self) -> BarsInput:
        """``bars`` with the universe's symbols applied."""
        if self.universe is None:
            return self.bars
        symbols = universe_symbols(self.universe)
        if self.bars.symbols:
            symbols = [s for s in symbols if s in set(self.bars.symbols)]
        return self.bars.model_copy(update={"symbols": symbols})


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


def load_training_data(
    config: DataConfig, store: OfflineStoreHandle | None, echo: Echo = print
) -> TrainingData:
    """Stored (or freshly computed) features and their bars -> a checked point-in-time panel.

    Args:
        config: what to train on.
        store: the offline-store actor (needed for store input, and for file input when the
            engine reads through it).
        echo: progress lines.

    Raises:
        UserError: no bars for the symbols and dates asked, too little history, or a feature
            that looks ahead.
    """
    spec = load_spec(config.feature_spec)
    source = config.bars_input()
    if source.path is None:
        if store is None:
            raise UserError("data: reading the offline store needs the stack (ray-apps stack up)")
        bars, features = _from_store(config, source, spec, store, echo)
    else:
        bars, features = _from_file(config, source, spec, echo)
    return build_training_data(bars, features, spec, config, {"data.source": source.label})


def build_training_data(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    spec: FeatureSpec,
    config: DataConfig,
    tags: dict[str, str] | None = None,
) -> TrainingData:
    """Bars and their features -> point-in-time rows -> a panel, with provenance tags.

    Args:
        bars: ``symbol, ts`` and at least ``close`` (the labels come from it).
        features: ``symbol, ts`` and the spec's columns, computed from ``bars``' history.
        spec: the feature spec the features were computed with.
        config: horizon, transform and the rest of the data settings.
        tags: provenance to add (e.g. ``data.source``).

    Raises:
        UserError: no training row is left (too few bars for the warm-up and the label).
    """
    horizons = sorted({1, config.horizon})
    rows = build_training_set(
        bars,
        features[["symbol", "ts", *spec.columns]],
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
            f"data: no training rows: too few bars for the features' warm-up ({spec.warmup} "
            f"bars) and the {config.horizon}-bar label"
        )
    sectors = sp500_sectors().drop_duplicates("symbol").set_index("symbol")
    groups = {level: sectors[level].astype(str).to_dict() for level in ("sector", "industry")}
    panel = Panel.from_frame(
        rows, spec.columns, config.target_column, RETURN_COLUMN, FORWARD_RETURN_COLUMN, groups
    )
    tags = {
        **(tags or {}),
        "data.interval": config.bars.interval,
        "data.universe": config.universe or "",
        "data.start": str(panel.dates[0]),
        "data.end": str(panel.dates[-1]),
        "data.symbols": str(len(panel.symbols)),
        "data.horizon": str(config.horizon),
        "data.normalize": config.normalize,
        FEATURE_SPEC_TAG: spec.version,
        "feature_spec.fingerprint": spec.fingerprint,
    }
    defined = features.replace([np.inf, -np.inf], np.nan).dropna(subset=spec.columns)
    defined = defined.assign(ts=pd.to_datetime(defined["ts"], utc=True))
    return TrainingData(
        panel=panel,
        spec=spec,
        tags=tags,
        feature_rows=defined[["symbol", "ts", *spec.columns]].reset_index(drop=True),
    )


def _from_store(
    config: DataConfig,
    source: BarsInput,
    spec: FeatureSpec,
    store: OfflineStoreHandle,
    echo: Echo,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars and stored features over the asked range, computing the symbols the store lacks."""
    bars = ray.get(
        store.bars.remote(source.symbols, source.start, source.end, source.interval)
    ).to_pandas()
    if bars.empty:
        raise UserError(
            f"data: the store holds no {source.interval} bars for the symbols and dates asked; "
            "ingest them first (ray-apps ingest --source ...)"
        )
    symbols = sorted(bars["symbol"].unique())
    stale = stale_symbols(store, spec, source.interval, symbols)
    if stale:
        echo(
            f"  features of spec {spec.version} are missing or stale for {len(stale):,} of "
            f"{len(symbols):,} symbols: computing them with the {config.engine} engine"
        )
        request = ComputeRequest(
            engine=config.engine,
            source=BarsInput(symbols=stale, interval=source.interval),
            to_store=True,
        )
        summary = compute_features(request, spec, store, echo=lambda line: echo(f"  {line}"))
        echo("  " + summary.render().replace("\n", "\n  "))
    else:
        echo(f"  features of spec {spec.version} ({len(symbols):,} symbols) read from the store")
    features = _stored_features(store, spec, symbols, source.start, source.end, source.interval)
    # The look-ahead check recomputes from each sampled symbol's whole history.
    sample = _look_ahead_sample(symbols, config.look_ahead_symbols)
    history = ray.get(store.bars.remote(sample, None, source.end, source.interval)).to_pandas()
    stored = _stored_features(store, spec, sample, None, source.end, source.interval)
    check_look_ahead(history, stored, spec)
    return bars, features


def stale_symbols(
    store: OfflineStoreHandle, spec: FeatureSpec, interval: str, symbols: list[str]
) -> list[str]:
    """Symbols whose stored features of ``spec`` do not match their stored bars.

    A symbol is stale when the store has no rows of the spec's version *and* fingerprint for
    it, fewer or more rows than bars, another last time, or bars ingested after its features
    were computed (a corrected re-delivery).
    """
    bars = ray.get(store.symbols.remote()).to_pandas()
    bars = bars[(bars["interval"] == interval) & bars["symbol"].isin(symbols)]
    coverage = ray.get(
        store.feature_coverage.remote(spec.version, spec.fingerprint, interval, symbols)
    ).to_pandas()
    both = bars.merge(coverage, on="symbol", how="left", suffixes=("", "_features"))
    fresh = (
        (both["rows"] == both["bars"])
        & (both["last_ts_features"] == both["last_ts"])
        & (both["computed_at"] >= both["ingested_at"])
    )
    return sorted(both.loc[~fresh.fillna(False).astype(bool), "symbol"])


def _stored_features(
    store: OfflineStoreHandle,
    spec: FeatureSpec,
    symbols: list[str],
    start: dt.datetime | None,
    end: dt.datetime | None,
    interval: str,
) -> pd.DataFrame:
    table = ray.get(
        store.features.remote(
            symbols, start, end, interval, spec.columns, spec_version=spec.version
        )
    )
    return table.select(["symbol", "ts", *spec.columns]).to_pandas()


def _from_file(
    config: DataConfig, source: BarsInput, spec: FeatureSpec, echo: Echo
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A file's good bars and their features, computed with the chosen engine (not stored)."""
    with tempfile.TemporaryDirectory(prefix="ray-apps-features-") as folder:
        output = Path(folder) / "features.parquet"
        request = ComputeRequest(engine=config.engine, source=source, output=output)
        summary = compute_features(request, spec, None, echo=lambda line: echo(f"  {line}"))
        echo("  " + summary.render().replace("\n", "\n  "))
        features = pq.read_table(output).to_pandas()
    good, _ = check_bars(normalize_bars(read_all(source), coerce=True))
    bars = good.to_pandas()
    sample = _look_ahead_sample(sorted(bars["symbol"].unique()), config.look_ahead_symbols)
    check_look_ahead(
        bars[bars["symbol"].isin(sample)], features[features["symbol"].isin(sample)], spec
    )
    return bars, features


def check_look_ahead(bars: pd.DataFrame, features: pd.DataFrame, spec: FeatureSpec) -> None:
    """The point-in-time check of features as stored, against the kernels on cut histories.

    Args:
        bars: the whole history of a few symbols.
        features: their features as training will read them.
        spec: the feature spec.

    Raises:
        LookAheadError: a stored value at t differs from the one computed from bars up to t.
    """
    check_point_in_time(
        lambda cut: compute_frame(cut, spec),
        bars,
        full=features[["symbol", "ts", *spec.columns]],
    )


def _look_ahead_sample(symbols: list[str], count: int) -> list[str]:
    """Up to ``count`` of the sorted symbols, spread evenly (the same ones every run)."""
    symbols = np.asarray(symbols)
    picks = np.unique(np.linspace(0, len(symbols) - 1, min(count, len(symbols))).astype(int))
    return symbols[picks].tolist()

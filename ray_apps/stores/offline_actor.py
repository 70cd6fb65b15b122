"""The one process that owns the offline store: a named, detached Ray actor.

The embedded engine (chdb) locks its folder to one process, so every reader and writer on the
cluster goes through this actor; with a ClickHouse server it simply holds the client.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import ray

from ray_apps.config import Settings, load_settings
from ray_apps.stores.offline import OfflineStore

ACTOR_NAME = "offline-store"


@ray.remote(num_cpus=0, max_restarts=-1)
class OfflineStoreActor:
    """Serializes access to the offline store; methods mirror ``OfflineStore``."""

    def __init__(self) -> None:
        self.store = OfflineStore.open(load_settings())

    def insert_bars(self, bars: pa.Table | pd.DataFrame) -> int:
        """Insert validated bars."""
        return self.store.insert_bars(bars)

    def insert_quarantine(
        self, rows: pa.Table | pd.DataFrame, ingest_id: str, source: str
    ) -> int:
        """Keep rejected rows with their reasons."""
        return self.store.insert_quarantine(rows, ingest_id, source)

    def bars(
        self,
        symbols: Sequence[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        interval: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Bars of symbols over a time range."""
        return self.store.bars(symbols, start, end, interval, limit)

    def symbols(self) -> pd.DataFrame:
        """Symbols with their ranges."""
        return self.store.symbols()

    def latest(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Latest bar per symbol."""
        return self.store.latest(symbols)

    def quarantine(self, ingest_id: str | None = None, limit: int = 100) -> pd.DataFrame:
        """Quarantined rows."""
        return self.store.quarantine(ingest_id, limit)

    def quarantine_counts(self, ingest_id: str) -> dict[str, int]:
        """Quarantined rows of one ingest per reason."""
        return self.store.quarantine_counts(ingest_id)

    def count_bars(self) -> int:
        """Distinct bars stored."""
        return self.store.count_bars()

    def insert_features(self, features: pa.Table, interval: str, spec_version: str) -> int:
        """Upsert feature rows."""
        return self.store.insert_features(features, interval, spec_version)

    def features(
        self,
        symbols: Sequence[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        interval: str | None = None,
        columns: Sequence[str] | None = None,
        latest: bool = False,
    ) -> pd.DataFrame:
        """Stored feature rows."""
        return self.store.features(symbols, start, end, interval, columns, latest)

    def count_features(self) -> int:
        """Distinct feature rows stored."""
        return self.store.count_features()


def offline_store(settings: Settings) -> ray.actor.ActorHandle:
    """The cluster's offline-store actor, started on first use."""
    return OfflineStoreActor.options(
        name=ACTOR_NAME,
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote()

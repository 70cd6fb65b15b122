"""The offline store: bars and quarantined rows in ClickHouse (embedded chdb or a server).

One code path serves both engines: clickhouse-connect drives chdb in-process and a server over
HTTP with the same client API. Only the bulk insert differs: on chdb it goes through the Python
table function (``INSERT ... SELECT * FROM Python(df)``), which is about three times faster
than clickhouse-connect's insert on the embedded engine; on a server it is an Arrow insert.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

import clickhouse_connect
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.marketdata.schema import BAR_COLUMNS, bars_table
from ray_apps.marketdata.validation import QUARANTINE_COLUMNS

BARS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.bars (
    symbol LowCardinality(String),
    interval LowCardinality(String),
    ts DateTime64(6, 'UTC'),
    open Float64, high Float64, low Float64, close Float64, volume Float64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (symbol, interval, ts)
"""
QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS {db}.bars_quarantine (
    ingest_id String,
    source String,
    row_number UInt64,
    reason LowCardinality(String),
    field String,
    raw String,
    quarantined_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree
ORDER BY (ingest_id, row_number)
"""


FEATURES_DDL = """
CREATE TABLE IF NOT EXISTS {db}.{table} (
    spec_version LowCardinality(String),
    symbol LowCardinality(String),
    interval LowCardinality(String),
    ts DateTime64(6, 'UTC'),
    fingerprint LowCardinality(String),
    computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (spec_version, symbol, interval, ts)
"""
FEATURES_KEY = "spec_version, symbol, interval, ts"
"""The features table's key: each spec version keeps its own rows of the same bars."""
MERGE_PAUSE_TTL_S = 120.0
"""A bulk load that inserted nothing for this long (its driver died) stops holding merges off."""

log = logging.getLogger(__name__)


def connect(settings: Settings) -> Client:
    """A clickhouse-connect client of the configured engine (chdb unless a DSN is set).

    Raises:
        UserError: the server is unreachable or rejects the credentials, or the chdb folder is
            owned by another process.
    """
    dsn = settings.clickhouse.dsn
    try:
        if dsn is None:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=f"chdb://{settings.chdb_path}")
        return clickhouse_connect.get_client(dsn=dsn.get_secret_value())
    except ClickHouseError as exc:
        where = "the ClickHouse server (RAY_APPS_CLICKHOUSE__DSN)" if dsn else settings.chdb_path
        raise UserError(f"clickhouse: cannot open {where}: {str(exc).splitlines()[0]}") from exc


class OfflineStore:
    """Bars ordered by (symbol, interval, ts); a re-ingested bar replaces, never duplicates.

    Reads return Arrow tables (timestamps ``timestamp[us, UTC]``); writes take them.
    """

    def __init__(self, settings: Settings) -> None:
        """Open the configured store and create its database and tables if missing."""
        self.client = connect(settings)
        self.db = settings.clickhouse.database
        self._chdb = None
        if settings.clickhouse.dsn is None:
            import chdb  # the embedded engine; shares the data of the client above

            self._chdb = chdb.connect(str(settings.chdb_path.resolve()))
        self._merge_holders: dict[str, float] = {}  # bulk loads -> when each last inserted
        self._merges_paused = False
        self.create_tables()

    def create_tables(self) -> None:
        """Create the database and the tables (idempotent)."""
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
        self.client.command(BARS_DDL.format(db=self.db))
        self.client.command(QUARANTINE_DDL.format(db=self.db))
        self._create_features_table()

    def insert_bars(self, bars: pa.Table | pd.DataFrame, bulk_load: str | None = None) -> int:
        """Insert validated bars (``BAR_COLUMNS``) in one bulk insert; return the row count.

        An Arrow table in ``BAR_TABLE_SCHEMA`` (what validation produces) goes to the engine
        as it is; a frame is converted first.

        Args:
            bars: the bars.
            bulk_load: the bulk load (see :meth:`pause_merges`) this insert belongs to, if any.
        """
        if bulk_load in self._merge_holders:
            self._merge_holders[bulk_load] = time.monotonic()
        if self._merge_holders:
            self._apply_merges()
        table = bars_table(bars)
        if table.num_rows == 0:
            return 0
        # Validation already dropped repeated keys within a block, and reads use FINAL: the
        # engine need not merge the block on insert (measured about 1.5x faster without).
        self._bulk_insert("bars", table, {"optimize_on_insert": 0})
        return table.num_rows

    def pause_merges(self, bulk_load: str) -> None:
        """Holds the bars table's background merges off while a bulk load inserts.

        On two cores the engine's merges take CPU from the load's own inserts and tasks; parts
        inserted meanwhile are merged once the last load calls :meth:`resume_merges`. Reads
        use ``FINAL``, so they see one copy of each bar either way. A load that inserts
        nothing for :data:`MERGE_PAUSE_TTL_S` no longer holds merges off (at the next insert
        or pause). Where the engine refuses (a server without the privilege), merges run.
        """
        self._merge_holders[bulk_load] = time.monotonic()
        self._apply_merges()

    def resume_merges(self, bulk_load: str) -> None:
        """Ends a bulk load's hold on merges; they run again once no load holds them."""
        self._merge_holders.pop(bulk_load, None)
        self._apply_merges()

    def _apply_merges(self) -> None:
        now = time.monotonic()
        self._merge_holders = {
            load: at for load, at in self._merge_holders.items() if now - at < MERGE_PAUSE_TTL_S
        }
        paused = bool(self._merge_holders)
        if paused == self._merges_paused:
            return
        verb = "STOP" if paused else "START"
        try:
            self.client.command(f"SYSTEM {verb} MERGES {self.db}.bars")
        except ClickHouseError as error:
            log.warning("offline store: SYSTEM %s MERGES refused: %s", verb, error)
            return
        self._merges_paused = paused

    def insert_quarantine(self, rows: pa.Table | pd.DataFrame, ingest_id: str, source: str) -> int:
        """Keep rejected rows (``QUARANTINE_COLUMNS``) with their reasons; return the count."""
        frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
        if frame.empty:
            return 0
        frame = frame[list(QUARANTINE_COLUMNS)].copy()
        frame.insert(0, "source", source)
        frame.insert(0, "ingest_id", ingest_id)
        self._bulk_insert("bars_quarantine", frame)
        return len(frame)

    def insert_features(
        self, features: pa.Table, interval: str, spec_version: str, fingerprint: str
    ) -> int:
        """Upsert feature rows (``symbol, ts`` and float columns); return the row count.

        The ``features`` table is keyed by (spec_version, symbol, interval, ts): writing the
        same bars again under a spec version replaces that version's rows and leaves other
        versions' rows alone. Columns of a new spec are added to the table on first write.

        Args:
            features: ``symbol, ts`` and the spec's feature columns.
            interval: the bar interval the features were computed from.
            spec_version: the spec's version label (part of the key).
            fingerprint: the spec's fingerprint, kept with each row.
        """
        if features.num_rows == 0:
            return 0
        self._add_feature_columns([c for c in features.column_names if c not in ("symbol", "ts")])
        frame = features.to_pandas()
        frame.insert(0, "spec_version", spec_version)
        frame.insert(2, "interval", interval)
        frame.insert(4, "fingerprint", fingerprint)
        self._bulk_insert("features", frame)
        return len(frame)

    def features(
        self,
        symbols: Sequence[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        interval: str | None = None,
        columns: Sequence[str] | None = None,
        latest: bool = False,
        spec_version: str | None = None,
    ) -> pa.Table:
        """Stored feature rows (one copy of each), by spec version, symbol and time.

        Args:
            symbols: only these symbols (all when None).
            start: rows at or after this time.
            end: rows before this time.
            interval: only rows of this bar interval.
            columns: feature columns to return (all stored ones when None).
            latest: only the newest row of each (spec_version, symbol, interval).
            spec_version: only rows of this spec version (all versions when None).

        Raises:
            UserError: a column in ``columns`` was never stored.
        """
        where, params = self._filters(symbols, start, end, interval, spec_version)
        names = self.feature_columns() if columns is None else list(columns)
        missing = sorted(set(names) - set(self.feature_columns()))
        if missing:
            raise UserError(f"offline store: no feature column(s) {missing}; compute them first")
        selected = ", ".join([*FEATURES_KEY.split(", "), "fingerprint", *names])
        order = f"ORDER BY {FEATURES_KEY}"
        if latest:
            order = f"ORDER BY {FEATURES_KEY} DESC LIMIT 1 BY spec_version, symbol, interval"
        sql = f"SELECT {selected} FROM {self.db}.features FINAL {where} {order}"
        return self._query(sql, params)

    def feature_coverage(
        self,
        spec_version: str,
        fingerprint: str,
        interval: str,
        symbols: Sequence[str] | None = None,
    ) -> pa.Table:
        """What the store holds of one spec: per symbol, rows, first and last ts, computed_at.

        Only rows stored under this version *and* fingerprint count: rows of an edited spec
        that kept its version label are not the same features.

        Args:
            spec_version: the spec's version label.
            fingerprint: the spec's fingerprint.
            interval: the bar interval.
            symbols: only these symbols (all when None); a symbol without rows is absent.

        Returns:
            ``symbol, rows, first_ts, last_ts, computed_at`` (the oldest row's), one row per
            symbol, by symbol.
        """
        where, params = self._filters(symbols, None, None, interval, spec_version)
        where += " AND fingerprint = {fingerprint:String}"
        params["fingerprint"] = fingerprint
        sql = (
            "SELECT symbol, count() AS rows, min(ts) AS first_ts, max(ts) AS last_ts, "
            f"min(computed_at) AS computed_at FROM {self.db}.features FINAL {where} "
            "GROUP BY symbol ORDER BY symbol"
        )
        return self._query(sql, params)

    def drop_features(self, spec_version: str) -> None:
        """Deletes every stored feature row of one spec version (other versions stay)."""
        self.client.command(
            f"DELETE FROM {self.db}.features WHERE spec_version = {{spec_version:String}}",
            parameters={"spec_version": spec_version},
        )

    def feature_columns(self) -> list[str]:
        """The feature columns the table holds."""
        rows = self.client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND "
            "table = 'features' AND type = 'Float64' ORDER BY position",
            parameters={"db": self.db},
        ).result_rows
        return [str(row[0]) for row in rows]

    def count_features(self, spec_version: str | None = None) -> int:
        """Distinct feature rows stored (of one spec version, or of all)."""
        where, params = self._filters(None, None, None, None, spec_version)
        return int(
            self.client.command(
                f"SELECT count() FROM {self.db}.features FINAL {where}", parameters=params
            )
        )

    def _create_features_table(self) -> None:
        """Creates the features table; one from before the spec-version key is converted."""
        key = self.client.command(
            "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND "
            "name = 'features'",
            parameters={"db": self.db},
        )
        if not key or str(key).startswith("spec_version"):
            self.client.command(FEATURES_DDL.format(db=self.db, table="features"))
            return
        # rows of the (symbol, interval, ts) key: the same rows under the new key
        columns = self.feature_columns()
        self.client.command(FEATURES_DDL.format(db=self.db, table="features_keyed"))
        for column in columns:
            self.client.command(
                f"ALTER TABLE {self.db}.features_keyed ADD COLUMN {column} Float64 DEFAULT nan"
            )
        copied = ", ".join(["spec_version", "symbol", "interval", "ts", "computed_at", *columns])
        self.client.command(
            f"INSERT INTO {self.db}.features_keyed ({copied}) "
            f"SELECT {copied} FROM {self.db}.features FINAL"
        )
        self.client.command(f"EXCHANGE TABLES {self.db}.features AND {self.db}.features_keyed")
        self.client.command(f"DROP TABLE {self.db}.features_keyed")

    def _add_feature_columns(self, columns: list[str]) -> None:
        known = set(self.feature_columns())
        for column in columns:
            if column not in known:
                self.client.command(
                    f"ALTER TABLE {self.db}.features ADD COLUMN IF NOT EXISTS "
                    f"{column} Float64 DEFAULT nan"
                )

    def _bulk_insert(
        self, table: str, frame: pd.DataFrame | pa.Table, settings: dict[str, int] | None = None
    ) -> None:
        columns = ", ".join(frame.column_names if isinstance(frame, pa.Table) else frame.columns)
        if self._chdb is not None:
            pairs = ", ".join(f"{key} = {value}" for key, value in (settings or {}).items())
            tail = f" SETTINGS {pairs}" if pairs else ""
            self._chdb.query(
                f"INSERT INTO {self.db}.{table} ({columns}) SELECT * FROM Python(frame){tail}"
            )
        elif isinstance(frame, pa.Table):
            plain = pa.schema(
                [
                    (f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                    for f in frame.schema
                ]
            )
            self.client.insert_arrow(f"{self.db}.{table}", frame.cast(plain), settings=settings)
        else:
            self.client.insert_df(f"{self.db}.{table}", frame)

    def bars(
        self,
        symbols: Sequence[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        interval: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Bars of ``symbols`` (all when None) with ``start <= ts < end``, one copy of each."""
        where, params = self._filters(symbols, start, end, interval)
        sql = (
            f"SELECT {', '.join(BAR_COLUMNS)} FROM {self.db}.bars FINAL {where} "
            "ORDER BY symbol, interval, ts"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, params)

    def symbols(self) -> pa.Table:
        """Each (symbol, interval): first and last bar time, bar count, newest ingest time."""
        sql = (
            f"SELECT symbol, interval, min(ts) AS first_ts, max(ts) AS last_ts, "
            f"count() AS bars, max(ingested_at) AS ingested_at FROM {self.db}.bars FINAL "
            "GROUP BY symbol, interval "
            "ORDER BY symbol, interval"
        )
        return self._query(sql)

    def latest(self, symbols: Sequence[str] | None = None) -> pa.Table:
        """The latest bar of each (symbol, interval)."""
        where, params = self._filters(symbols, None, None, None)
        sql = (
            f"SELECT {', '.join(BAR_COLUMNS)} FROM {self.db}.bars FINAL {where} "
            "ORDER BY symbol, interval, ts DESC LIMIT 1 BY symbol, interval"
        )
        return self._query(sql, params)

    def quarantine(self, ingest_id: str | None = None, limit: int = 100) -> pa.Table:
        """Quarantined rows, newest ingest first."""
        where = "WHERE ingest_id = {ingest_id:String}" if ingest_id else ""
        sql = (
            f"SELECT ingest_id, source, row_number, reason, field, raw FROM "
            f"{self.db}.bars_quarantine {where} ORDER BY quarantined_at DESC, row_number "
            f"LIMIT {int(limit)}"
        )
        return self._query(sql, {"ingest_id": ingest_id})

    def quarantine_counts(self, ingest_id: str) -> dict[str, int]:
        """Quarantined rows of one ingest, per reason."""
        rows = self.client.query(
            f"SELECT reason, count() FROM {self.db}.bars_quarantine "
            "WHERE ingest_id = {ingest_id:String} GROUP BY reason",
            parameters={"ingest_id": ingest_id},
        ).result_rows
        return {str(reason): int(count) for reason, count in rows}

    def count_bars(self) -> int:
        """Distinct bars stored."""
        return int(self.client.command(f"SELECT count() FROM {self.db}.bars FINAL"))

    def close(self) -> None:
        """Release the engine."""
        self.client.close()
        if self._chdb is not None:
            self._chdb.close()

    def _query(self, sql: str, parameters: dict | None = None) -> pa.Table:
        """A query's rows as an Arrow table (nullability dropped so tables concatenate)."""
        table = self.client.query_arrow(sql, parameters=parameters or {})
        return pa.Table.from_arrays(
            table.columns, schema=pa.schema([f.with_nullable(True) for f in table.schema])
        )

    @staticmethod
    def _filters(
        symbols: Sequence[str] | None,
        start: dt.datetime | None,
        end: dt.datetime | None,
        interval: str | None,
        spec_version: str | None = None,
    ) -> tuple[str, dict]:
        clauses, params = [], {}
        if spec_version is not None:
            clauses.append("spec_version = {spec_version:String}")
            params["spec_version"] = spec_version
        if symbols:
            clauses.append("symbol IN {symbols:Array(String)}")
            params["symbols"] = list(symbols)
        if interval:
            clauses.append("interval = {interval:String}")
            params["interval"] = interval
        if start is not None:
            clauses.append("ts >= {start:DateTime64(6, 'UTC')}")
            params["start"] = start
        if end is not None:
            clauses.append("ts < {end:DateTime64(6, 'UTC')}")
            params["end"] = end
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

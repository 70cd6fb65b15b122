"""The universe's cross-section at the latest complete ``as_of``, read from the online store.

Every model scores a cross-section (features are ranked or z-scored per date across symbols,
window models read ``lookback`` dates, GAT reads every asset), so serving reads the whole
universe, never one symbol. For one feature spec version:

- **universe**: the symbols whose latest vector is stored (:meth:`OnlineStore.symbols`), or a
  list given by the caller. Symbols whose latest vector has another spec version are left out
  and reported (``spec_version``).
- **newest**: the newest bar time among the universe's latest vectors.
- **stale**: a symbol whose latest vector is older than ``newest - max_age`` (never, when
  ``max_age`` is None). Age is measured against the store's own newest bar, not the wall
  clock, so a replay of old bars serves as a live feed does; comparing ``newest`` with the
  clock (is the whole feed late?) is the caller's health check.
- **as_of**, the latest complete as_of: the oldest latest-vector time among the fresh (not
  stale) symbols, i.e. the newest bar time that every fresh symbol's latest vector has
  reached. A fresh symbol already past it is scored at ``as_of`` from its window.
- **rows**: ``symbol, ts, <features>`` of the last ``lookback`` dates up to ``as_of`` (dates: the
  bar times any symbol of the universe has a vector at, up to ``as_of``), for every symbol of
  the universe, stale ones included: offline, their older rows are part of those dates'
  cross-sections too. The rows come from the windows, and from the latest vector where a
  window lacks it (stores written with :meth:`OnlineStore.write` keep no window; reading those
  takes a third round trip).

These rows are what the registered pyfunc gets offline from the ``features`` table for the
same dates, so its scores at ``as_of`` are the online scores. Reading takes two pipelined round
trips (latest vectors, then windows up to ``as_of``), plus the ``SCAN`` when no universe is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ray_apps.errors import UserError
from ray_apps.stores.online import OnlineStore

ProblemCode = Literal["unknown_symbol", "spec_version", "stale_features", "no_score"]
"""Why a symbol has no score: not in the store; its features have another spec version;
its latest vector is older than the maximum age; the model gave no score at ``as_of``
(no vector at ``as_of``, fewer than ``lookback`` dates of history, or an undefined feature)."""


@dataclass(frozen=True)
class SymbolProblem:
    """Why one symbol is not scored.

    Attributes:
        code: the kind of problem.
        detail: one line a user can read (times, versions, counts).
    """

    code: ProblemCode
    detail: str


@dataclass(frozen=True)
class Universe:
    """The first read: which symbols are scored at which ``as_of``.

    Attributes:
        spec_version: the feature spec version read.
        as_of: the latest complete as_of (module docstring).
        newest: the newest bar time of any latest vector of the spec version.
        fresh: the symbols to score at ``as_of``, sorted.
        members: the symbols whose rows enter the cross-section (fresh and stale), sorted.
        latest: ``symbol, ts, spec_version`` of the latest vectors of ``members``.
        problems: per symbol not scored, why.
    """

    spec_version: str
    as_of: pd.Timestamp
    newest: pd.Timestamp
    fresh: list[str]
    members: list[str]
    latest: pa.Table
    problems: dict[str, SymbolProblem] = field(default_factory=dict)


@dataclass(frozen=True)
class CrossSection:
    """The universe and its rows of the last ``lookback`` dates up to ``as_of``.

    Attributes:
        universe: the first read.
        lookback: dates read.
        rows: ``symbol, ts`` (UTC) and the feature columns, sorted by ``ts`` then ``symbol``.
    """

    universe: Universe
    lookback: int
    rows: pd.DataFrame


def read_universe(
    store: OnlineStore,
    spec_version: str,
    max_age: timedelta | None = None,
    symbols: Sequence[str] | None = None,
) -> Universe:
    """Reads every latest vector and fixes ``as_of``, the fresh symbols and the problems.

    Args:
        store: the online store.
        spec_version: the feature spec version the model was trained on.
        max_age: a symbol whose latest vector is older than the newest one by more than this
            is stale (None: no limit).
        symbols: the universe (None: every symbol of the store, listed with ``SCAN``).

    Raises:
        UserError: no symbol has features of ``spec_version``, or Redis fails.
    """
    asked = store.symbols() if symbols is None else list(dict.fromkeys(symbols))
    latest = store.latest_times(asked)
    found = set(latest.column("symbol").to_pylist())
    problems = {
        s: SymbolProblem("unknown_symbol", "no features in the online store")
        for s in asked
        if s not in found
    }
    same = pc.equal(latest.column("spec_version"), spec_version)
    other = latest.filter(pc.invert(same))
    for symbol, version in zip(
        other.column("symbol").to_pylist(), other.column("spec_version").to_pylist(), strict=True
    ):
        problems[symbol] = SymbolProblem(
            "spec_version", f"features have spec version {version!r}, the model {spec_version!r}"
        )
    latest = latest.filter(same).sort_by("symbol")
    if latest.num_rows == 0:
        raise UserError(
            f"online store: no symbol has features of spec version {spec_version!r} "
            f"({len(asked)} symbols looked at)"
        )
    members = latest.column("symbol").to_pylist()
    times = latest.column("ts").to_numpy()
    newest = times.max()
    fresh = np.ones(len(times), dtype=bool)
    if max_age is not None:
        fresh = times >= newest - np.timedelta64(max_age)
        for index in np.flatnonzero(~fresh):
            problems[members[index]] = SymbolProblem(
                "stale_features",
                f"latest features at {_iso(times[index])} are older than {max_age} before the "
                f"newest features, at {_iso(newest)}",
            )
    return Universe(
        spec_version=spec_version,
        as_of=pd.Timestamp(times[fresh].min(), tz="UTC"),
        newest=pd.Timestamp(newest, tz="UTC"),
        fresh=[s for s, ok in zip(members, fresh, strict=True) if ok],
        members=members,
        latest=latest,
        problems=problems,
    )


def read_rows(
    store: OnlineStore, universe: Universe, lookback: int, feature_columns: Sequence[str]
) -> CrossSection:
    """Reads the rows of the last ``lookback`` dates up to ``as_of`` (module docstring).

    Args:
        store: the online store.
        universe: the first read.
        lookback: dates of history the model reads (1: ``as_of`` alone).
        feature_columns: the columns the model reads.

    Raises:
        UserError: the stored features lack a column the model reads, or Redis fails.
    """
    windows = store.read_windows(universe.members, lookback, until=universe.as_of)
    latest = universe.latest.filter(pc.less_equal(universe.latest.column("ts"), universe.as_of))
    held = windows.select(["symbol", "ts"]).append_column(
        "held", pa.array(np.ones(windows.num_rows, dtype=bool))
    )
    found = latest.select(["symbol", "ts"]).join(held, ["symbol", "ts"], join_type="left outer")
    lacking = found.filter(pc.is_null(found.column("held"))).column("symbol").to_pylist()
    # Latest vectors written without a window (OnlineStore.write) take a third round trip.
    latest = store.read_latest(lacking) if lacking else windows.slice(0, 0)
    latest = latest.filter(pc.less_equal(latest.column("ts"), universe.as_of))
    missing = [
        c for c in feature_columns if c not in latest.column_names and c not in windows.column_names
    ]
    if missing:
        raise UserError(
            f"online store: features of spec version {universe.spec_version!r} lack the "
            f"model's column(s) {missing}"
        )
    keep = ["symbol", "ts", *feature_columns]
    rows = pa.concat_tables([_with_columns(t, keep) for t in (windows, latest)]).to_pandas()
    # A vector read twice (a write moved a latest vector between the two reads) counts once.
    rows = rows.drop_duplicates(["symbol", "ts"], keep="first")
    dates = np.sort(rows["ts"].unique())[-lookback:]
    rows = rows[rows["ts"] >= dates[0]] if len(dates) else rows
    rows = rows.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    return CrossSection(universe=universe, lookback=lookback, rows=rows)


def read_cross_section(
    store: OnlineStore,
    spec_version: str,
    lookback: int,
    feature_columns: Sequence[str],
    max_age: timedelta | None = None,
    symbols: Sequence[str] | None = None,
) -> CrossSection:
    """:func:`read_universe` then :func:`read_rows`: the whole cross-section at ``as_of``."""
    universe = read_universe(store, spec_version, max_age, symbols)
    return read_rows(store, universe, lookback, feature_columns)


def _with_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` with exactly ``columns`` (null float columns where it lacks one)."""
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    return table.select(columns)


def _iso(ts: np.datetime64) -> str:
    """ISO-8601 text of a UTC time."""
    return pd.Timestamp(ts, tz="UTC").isoformat()

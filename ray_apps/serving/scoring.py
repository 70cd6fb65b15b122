"""The cross-section scored by a served model, cached per (model version, as_of).

A request for one symbol or for 500 is answered from the same :class:`ScoredCrossSection`, so
both give the same score for a symbol: the score the registered pyfunc gives offline on the
same rows (:mod:`ray_apps.serving.cross_section`). Ranks are 1 for the highest score among the
symbols scored at ``as_of``; tied scores share the lowest rank of their group.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ray_apps.serving.cross_section import (
    CrossSection,
    ProblemCode,
    SymbolProblem,
    read_rows,
    read_universe,
)
from ray_apps.serving.models import ServedModel
from ray_apps.stores.online import OnlineStore


class _Rendered(BaseModel):
    """An entry that keeps its JSON once rendered (entries are frozen and shared by requests)."""

    model_config = ConfigDict(frozen=True)

    @cached_property
    def json_bytes(self) -> bytes:
        """The entry's JSON, as ``model_dump_json`` gives it; rendered once."""
        return self.__pydantic_serializer__.to_json(self)


class ScoreEntry(_Rendered):
    """One symbol's score at ``as_of``."""

    symbol: str
    score: float
    rank: int
    as_of: datetime
    model_version: str


class ErrorEntry(_Rendered):
    """Why one symbol has no score (``as_of``: the cross-section asked about)."""

    symbol: str
    error: ProblemCode
    detail: str
    as_of: datetime
    model_version: str


Entry = ScoreEntry | ErrorEntry
CacheKey = tuple[str, str, pd.Timestamp]
"""(model name, model version, as_of)."""


@dataclass(frozen=True)
class ScoredCrossSection:
    """One model version's scores of the universe at one ``as_of``.

    Attributes:
        model_name: registered model name.
        model_version: its version.
        as_of: the bar time scored.
        newest: the newest bar time in the online store when read.
        scores: per scored symbol, its score (finite).
        ranks: per scored symbol, its rank (1: highest score).
        errors: per symbol of the universe not scored, why.

    Each symbol's entry is made once and shared by every request that asks for it (with its
    rendered JSON), so a request for the whole universe costs dictionary lookups.
    """

    model_name: str
    model_version: str
    as_of: pd.Timestamp
    newest: pd.Timestamp
    scores: dict[str, float]
    ranks: dict[str, int]
    errors: dict[str, SymbolProblem]
    _entries: dict[str, Entry] = field(default_factory=dict, init=False, repr=False, compare=False)

    def entry(self, symbol: str) -> Entry:
        """The entry of one symbol (an ``unknown_symbol`` error when the universe lacks it)."""
        made = self._entries.get(symbol)
        if made is not None:
            return made
        made = self._make_entry(symbol)
        if symbol in self.scores or symbol in self.errors:  # a stranger's name is not kept
            self._entries[symbol] = made
        return made

    def _make_entry(self, symbol: str) -> Entry:
        common = {
            "symbol": symbol,
            "as_of": self.as_of.to_pydatetime(),
            "model_version": self.model_version,
        }
        if symbol in self.scores:
            return ScoreEntry(score=self.scores[symbol], rank=self.ranks[symbol], **common)
        problem = self.errors.get(symbol) or SymbolProblem(
            "unknown_symbol", "no features in the online store"
        )
        return ErrorEntry(error=problem.code, detail=problem.detail, **common)

    def lookup(self, symbols: Sequence[str] | None = None) -> list[Entry]:
        """Entries of ``symbols`` in the order asked (None: every symbol scored or not)."""
        if symbols is None:
            symbols = sorted(self.scores.keys() | self.errors.keys())
        made = list(map(self._entries.get, symbols))  # one C loop when all were made before
        if not all(made):  # (entries are always true)
            made = [e or self.entry(s) for e, s in zip(made, symbols, strict=True)]
        return made


def score_cross_section(model: ServedModel, section: CrossSection) -> ScoredCrossSection:
    """Scores the cross-section with the model's pyfunc; keeps the scores at ``as_of``."""
    universe = section.universe
    rows = section.rows
    scored = model.scorer.score(rows) if len(rows) else rows.assign(score=np.nan)
    at = pd.to_datetime(scored["ts"], utc=True) == universe.as_of
    now = pd.Series(scored["score"][at].to_numpy(), index=scored["symbol"][at].to_numpy())
    errors = dict(universe.problems)
    scores: dict[str, float] = {}
    for symbol in universe.fresh:
        value = now.get(symbol)
        if value is None:
            errors[symbol] = SymbolProblem("no_score", f"no features at {_iso(universe.as_of)}")
        elif not np.isfinite(value):
            errors[symbol] = SymbolProblem(
                "no_score",
                f"no score at {_iso(universe.as_of)}: fewer than {model.lookback} dates of "
                "history, an undefined feature, or too few symbols on a date",
            )
        else:
            scores[symbol] = float(value)
    ranked = pd.Series(scores, dtype=np.float64).rank(ascending=False, method="min")
    return ScoredCrossSection(
        model_name=model.name,
        model_version=model.version,
        as_of=universe.as_of,
        newest=universe.newest,
        scores=scores,
        ranks={symbol: int(rank) for symbol, rank in ranked.items()},
        errors=errors,
    )


class ScoreCache:
    """The newest few scored cross-sections, keyed by (model name, model version, as_of).

    The key assumes that the vectors at or before a complete ``as_of`` no longer change (the
    online store refuses replays of stored vectors); scorers sharing a cache must read the same
    universe with the same maximum age.

    Args:
        size: how many to keep (the least recently used goes first).
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: OrderedDict[CacheKey, ScoredCrossSection] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_score(
        self,
        model_name: str,
        model_version: str,
        as_of: pd.Timestamp,
        score: Callable[[], ScoredCrossSection],
    ) -> ScoredCrossSection:
        """The cached scoring of the model version at ``as_of``, or ``score()`` run once and kept.

        Concurrent callers of one missing key wait for a single scoring.
        """
        key = (model_name, model_version, as_of)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            scored = score()
            self._entries[key] = scored
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return scored

    def __len__(self) -> int:
        """Cross-sections kept."""
        return len(self._entries)


class OnlineScorer:
    """Scores the online store's universe with one served model, once per ``as_of``.

    Each :meth:`current` reads the latest vectors (one round trip) to find ``as_of``; only a
    new (model version, as_of) reads the windows and runs the model.

    Args:
        store: the online store.
        model: the served model (its feature spec version picks the store's symbols).
        max_age: latest features older than the newest by more than this are stale.
        symbols: the universe (None: every symbol of the store).
        cache: where scored cross-sections are kept (shared by several scorers if given).
    """

    def __init__(
        self,
        store: OnlineStore,
        model: ServedModel,
        max_age: timedelta | None = None,
        symbols: Sequence[str] | None = None,
        cache: ScoreCache | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.max_age = max_age
        self.symbols = list(symbols) if symbols is not None else None
        self.cache = cache or ScoreCache()

    def current(self) -> ScoredCrossSection:
        """The scored cross-section at the store's latest complete ``as_of``."""
        model = self.model
        universe = read_universe(self.store, model.feature_spec_version, self.max_age, self.symbols)

        def score() -> ScoredCrossSection:
            section = read_rows(self.store, universe, model.lookback, model.feature_columns)
            return score_cross_section(model, section)

        return self.cache.get_or_score(model.name, model.version, universe.as_of, score)

    def lookup(self, symbols: Sequence[str] | None = None) -> list[Entry]:
        """Entries of ``symbols`` at the latest complete ``as_of`` (None: every symbol)."""
        return self.current().lookup(symbols)


def _iso(ts: pd.Timestamp) -> str:
    """ISO-8601 text of a time."""
    return ts.isoformat()

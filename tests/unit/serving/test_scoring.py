"""Scoring a cross-section: scores at as_of, ranks, per-symbol errors, one-symbol and
all-symbol lookups, and the cache (no servers: a momentum model scores a column)."""

from __future__ import annotations

import json
import pickle
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_apps.models.baselines import MomentumModel, MomentumParams
from ray_apps.models.pyfunc import ScorePyfunc
from ray_apps.serving.cross_section import CrossSection, SymbolProblem, Universe
from ray_apps.serving.models import ServedModel
from ray_apps.serving.schemas import PredictResponse
from ray_apps.serving.scoring import (
    ErrorEntry,
    ScoreCache,
    ScoredCrossSection,
    ScoreEntry,
    score_cross_section,
)

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")


def served(normalize: str = "none") -> ServedModel:
    model = MomentumModel(MomentumParams(column="f"), ("f",))
    return ServedModel(
        name="m",
        version="3",
        run_id="r",
        alias="champion",
        feature_spec_version="v1",
        lookback=1,
        feature_columns=("f",),
        loaded_at=datetime.now(UTC),
        scorer=ScorePyfunc(model, normalize, 1),
    )


def section(
    rows: list[tuple[str, int, float]],
    fresh: list[str],
    problems: dict[str, SymbolProblem] | None = None,
    as_of: int = 1,
) -> CrossSection:
    frame = pd.DataFrame(rows, columns=["symbol", "d", "f"])
    frame["ts"] = DAY0 + pd.to_timedelta(frame.pop("d"), unit="D")
    universe = Universe(
        spec_version="v1",
        as_of=DAY0 + pd.Timedelta(days=as_of),
        newest=DAY0 + pd.Timedelta(days=as_of),
        fresh=fresh,
        members=sorted(frame["symbol"].unique()),
        latest=pa.table({}),
        problems=problems or {},
    )
    return CrossSection(universe=universe, lookback=1, rows=frame[["symbol", "ts", "f"]])


def test_scores_at_as_of_and_ranks_with_ties_by_hand():
    rows = [("A", 0, 9.0), ("A", 1, 0.25), ("B", 1, 0.75), ("C", 1, 0.25), ("D", 1, -1.0)]
    scored = score_cross_section(served(), section(rows, ["A", "B", "C", "D"]))
    assert scored.as_of == DAY0 + pd.Timedelta(days=1)
    assert scored.scores == {"A": 0.25, "B": 0.75, "C": 0.25, "D": -1.0}  # float32-exact
    assert scored.ranks == {"B": 1, "A": 2, "C": 2, "D": 4}
    assert scored.model_name == "m" and scored.model_version == "3"


def test_the_cross_sectional_rank_is_applied_per_date():
    rows = [
        ("A", 0, 1.0),
        ("B", 0, 2.0),
        ("C", 0, 3.0),
        ("D", 0, 4.0),
        ("A", 1, 3.0),
        ("B", 1, 1.0),
        ("C", 1, 2.0),
        ("D", 1, -5.0),
    ]
    scored = score_cross_section(served("rank"), section(rows, ["A", "B", "C", "D"]))
    assert scored.scores == {"A": 1.0, "B": 0.5, "C": 0.75, "D": 0.25}


def test_symbols_without_a_score_get_the_reason():
    rows = [("A", 1, 1.0), ("B", 1, np.nan), ("C", 0, 5.0)]
    stale = SymbolProblem("stale_features", "latest features at 2024-01-01 are old")
    scored = score_cross_section(served(), section(rows, ["A", "B", "C"], {"S": stale}))
    assert scored.scores == {"A": 1.0}
    assert {s: p.code for s, p in scored.errors.items()} == {
        "B": "no_score",
        "C": "no_score",
        "S": "stale_features",
    }
    assert "undefined feature" in scored.errors["B"].detail
    assert scored.errors["C"].detail == "no features at 2024-01-02T00:00:00+00:00"


def test_a_lookup_of_one_symbol_equals_its_entry_in_a_lookup_of_all():
    rows = [(s, 1, v) for s, v in zip("ABCDE", [0.5, -0.25, 0.125, np.nan, 0.75], strict=True)]
    scored = score_cross_section(served(), section(rows, list("ABCDE")))
    everything = {entry.symbol: entry for entry in scored.lookup()}
    assert list(everything) == list("ABCDE")
    for symbol in "ABCDE":
        assert scored.lookup([symbol]) == [everything[symbol]]
    as_of = datetime(2024, 1, 2, tzinfo=UTC)
    assert everything["E"] == ScoreEntry(
        symbol="E", score=0.75, rank=1, as_of=as_of, model_version="3"
    )
    assert isinstance(everything["D"], ErrorEntry) and everything["D"].error == "no_score"
    (unknown,) = scored.lookup(["ZZZ"])
    assert unknown.error == "unknown_symbol" and unknown.as_of == as_of
    assert scored.lookup(["B", "ZZZ", "A"])[0].symbol == "B"


def test_entries_are_made_once_per_scoring_and_strangers_are_not_kept():
    rows = [(s, 1, v) for s, v in zip("ABC", [0.5, np.nan, 0.75], strict=True)]
    scored = score_cross_section(served(), section(rows, list("ABC")))
    first = scored.lookup(["A", "B", "ZZZ"])
    again = scored.lookup(["A", "B", "ZZZ"])
    assert again[0] is first[0] and again[1] is first[1]  # a score and an error entry, shared
    assert again[2] is not first[2] and again[2] == first[2]  # made again for each request
    assert "ZZZ" not in scored._entries  # a client's made-up names do not grow the scoring


@pytest.mark.parametrize("alias", ["champion", 'chal"len\\ger \u00e9\n'])
def test_a_rendered_response_is_byte_for_byte_the_models_json(alias):
    rows = [(s, 1, v) for s, v in zip(["A", 'B"\\', "C\u00e9"], [0.1, np.nan, -3e-7], strict=True)]
    scored = score_cross_section(served(), section(rows, ["A", 'B"\\', "C\u00e9"]))
    entries = scored.lookup(["A", 'B"\\', "C\u00e9", "ZZZ", "A"])
    for entry in entries:
        entry.json_bytes  # noqa: B018  (rendered and kept before the comparisons)
    response = PredictResponse(alias=alias, model_version="3", predictions=entries)
    assert response.render() == response.model_dump_json().encode()
    assert json.loads(response.render())["predictions"][1]["error"] == "no_score"
    assert pickle.loads(pickle.dumps(entries)) == entries  # as replicas send them


def scored_at(version: str, day: int) -> ScoredCrossSection:
    return ScoredCrossSection("m", version, DAY0 + pd.Timedelta(days=day), DAY0, {}, {}, {})


def test_the_cache_scores_each_key_once_and_forgets_the_least_recently_used():
    cache = ScoreCache(size=2)
    calls = []

    def scorer(version: str, day: int):
        def score():
            calls.append((version, day))
            return scored_at(version, day)

        return score

    def get(version: str, day: int) -> ScoredCrossSection:
        return cache.get_or_score("m", version, DAY0 + pd.Timedelta(days=day), scorer(version, day))

    first = get("1", 0)
    assert get("1", 0) is first
    get("2", 0)
    get("1", 0)  # now the most recently used
    get("1", 1)  # evicts ("2", 0)
    get("2", 0)
    assert calls == [("1", 0), ("2", 0), ("1", 1), ("2", 0)]
    assert len(cache) == 2
    assert cache.get_or_score("other", "1", DAY0, lambda: scored_at("x", 0)).model_version == "x"


def test_concurrent_requests_for_a_new_as_of_share_one_scoring():
    cache = ScoreCache()
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return scored_at("1", 0)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_score("m", "1", DAY0, slow)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


@pytest.mark.parametrize("normalize", ["none", "rank"])
def test_an_empty_cross_section_scores_nothing(normalize):
    scored = score_cross_section(served(normalize), section([], []))
    assert scored.scores == {} and scored.ranks == {}

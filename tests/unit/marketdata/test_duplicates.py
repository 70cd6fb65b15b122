import numpy as np
import pandas as pd

from ray_apps.marketdata.duplicates import SeenKeys, first_occurrences
from ray_apps.marketdata.ingest import IngestRequest, validated_chunks
from ray_apps.marketdata.sources import parse_source
from ray_apps.marketdata.validation import validate_bars

HEADER = "symbol,ts,open,high,low,close,volume"


def row(symbol: str, day: int, close: str = "10.5") -> str:
    return f"{symbol},2024-01-{day:02d},10,11,9,{close},100"


def test_first_occurrences_in_sorted_and_unsorted_keys():
    assert first_occurrences(np.array([0, 0, 1]), np.array([1, 2, 1])).tolist() == [True] * 3
    group, ts = np.array([1, 0, 1, 0, 1]), np.array([5, 5, 5, 6, 4])
    assert first_occurrences(group, ts).tolist() == [True, True, False, True, True]


def test_seen_keys_flag_repeats_from_earlier_calls_only():
    seen = SeenKeys()
    names = [("A", "1d"), ("B", "1d")]
    new = seen.add_new(names, np.array([0, 0, 1]), np.array([1, 2, 1]), np.ones(3, bool))
    assert new.tolist() == [True, True, True]
    again = seen.add_new(
        names, np.array([1, 0, 0, 1]), np.array([1, 3, 2, 2]), np.array([True, True, True, False])
    )
    assert again.tolist() == [False, True, False, False]  # B@1, A@2 seen; last not a candidate
    assert len(seen) == 4


def test_a_duplicate_in_a_later_chunk_is_quarantined(tmp_path):
    lines = [
        row("AA", 2),
        row("AA", 3),
        row("BB", 2),
        row("AA", 4),
        row("AA", 2, "10.7"),
        row("BB", 2),
    ]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    request = IngestRequest(source=str(path), interval="1d", chunk_rows=3)
    results = [r for r, _ in validated_chunks(parse_source(str(path), chunk_rows=3), request)]
    assert len(results) == 2
    quarantined = pd.concat([r.quarantined for r in results])
    assert quarantined[["row_number", "reason"]].values.tolist() == [
        [4, "duplicate_symbol_ts"],
        [5, "duplicate_symbol_ts"],
    ]
    accepted = pd.concat([r.accepted for r in results])
    assert len(accepted) == 4
    assert accepted.loc[accepted["symbol"] == "AA", "close"].tolist() == [10.5, 10.5, 10.5]


def test_row_numbers_with_symbols_point_at_the_source_rows(tmp_path):
    lines = [row("AA", 2), row("BB", 2), row("BB", 3, "99"), row("AA", 3), row("AA", 4, "inf")]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    for chunk_rows in (2, 100):
        request = IngestRequest(source=str(path), symbols=["AA"], interval="1d")
        chunks = list(validated_chunks(parse_source(str(path), chunk_rows=chunk_rows), request))
        quarantined = pd.concat([r.quarantined for r, _ in chunks])
        assert quarantined[["row_number", "reason"]].values.tolist() == [[4, "non_finite_price"]]
        assert sum(outside for _, outside in chunks) == 2
        request = IngestRequest(source=str(path), symbols=["BB"], interval="1d")
        chunks = list(validated_chunks(parse_source(str(path), chunk_rows=chunk_rows), request))
        quarantined = pd.concat([r.quarantined for r, _ in chunks])
        assert quarantined[["row_number", "reason"]].values.tolist() == [
            [2, "high_below_open_close"]
        ]


def test_validate_bars_row_numbers_override_the_first_row_number():
    raw = pd.DataFrame(
        [
            ["A", "2024-01-02", "1", "2", "0.5", "1.5", "3"],
            ["A", "2024-01-03", "x", "2", "1", "1", "1"],
        ],
        columns=HEADER.split(","),
    )
    result = validate_bars(raw, "1d", 0, row_numbers=np.array([7, 9]))
    assert result.quarantined["row_number"].tolist() == [9]

"""`ray-apps ingest` and `ray-apps data` against the real stack, and the same as a Ray job."""

import re

import pandas as pd
from arch.data import sp500

from .conftest import BIN


def summary_counts(out: str) -> dict[str, int]:
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].replace(",", "").isdigit():
            counts[parts[0]] = int(parts[1].replace(",", ""))
    return counts


def test_ingest_packaged_data_then_query_it_back(stack):
    out = stack.ok("ingest", "--source", "arch:sp500")
    assert summary_counts(out)["accepted"] == 5031
    listing = {r["symbol"]: r for r in stack.records("symbols")}
    assert listing["SP500"]["bars"] == 5031
    assert listing["SP500"]["first_ts"].startswith("1999-01-04T00:00:00")

    shown = pd.DataFrame(
        stack.records(
            "show", "SP500", "--start", "2008-10-01", "--end", "2008-11-01", "--limit", "100"
        )
    )
    reference = sp500.load().loc["2008-10-01":"2008-10-31"]  # the package's own frame
    assert len(shown) == len(reference) == 23
    assert shown["close"].tolist() == reference["Close"].tolist()
    assert shown["volume"].tolist() == reference["Volume"].astype(float).tolist()
    latest = stack.records("latest", "SP500")
    assert latest[0]["ts"].startswith("2018-12-31")


def test_ingesting_twice_leaves_one_copy(stack):
    first = summary_counts(stack.ok("ingest", "--source", "btc-15m"))
    second = summary_counts(stack.ok("ingest", "--source", "btc-15m"))
    assert first["accepted"] == second["accepted"] > 8000
    listing = {r["symbol"]: r for r in stack.records("symbols")}
    assert listing["BTC-USD"]["bars"] == first["accepted"]
    assert listing["BTC-USD"]["interval"] == "15m"


def test_quarantine_counts_for_a_file_with_known_bad_rows(stack, tmp_path):
    rows = [
        "symbol,ts,open,high,low,close,volume",
        "QQ,2024-01-02,10,11,9,10.5,100",  # good
        "QQ,2024-01-03,10,11,9,10.5,100",  # good
        "QQ,2024-01-04,10,11,9,10.5,100",  # good
        "QQ,2024-01-04,10,11,9,10.6,100",  # duplicate of the row above
        "QQ,not-a-date,10,11,9,10.5,100",  # unparseable ts
        "QQ,2024-01-05,nan,11,9,10.5,100",  # NaN price
        "QQ,2024-01-08,10,11,9,inf,100",  # inf price
        "QQ,2024-01-09,0,11,9,10.5,100",  # non-positive price
        "QQ,2024-01-10,10,10.2,9,10.5,100",  # high below close
        "QQ,2024-01-11,10,11,10.2,10.5,100",  # low above open
        "QQ,2024-01-12,10,11,9,10.5,-3",  # negative volume
        ",2024-01-15,10,11,9,10.5,100",  # no symbol
    ]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(rows) + "\n")
    out = stack.ok("ingest", "--source", str(path), "--interval", "1d")
    counts = summary_counts(out)
    assert counts == {
        "accepted": 3,
        "quarantined": 9,
        "duplicate_symbol_ts": 1,
        "unparseable_ts": 1,
        "non_finite_price": 2,
        "non_positive_price": 1,
        "high_below_open_close": 1,
        "low_above_open_close": 1,
        "negative_volume": 1,
        "missing_symbol": 1,
    }
    ingest_id = re.search(r"^ingest (\w+) of ", out, re.MULTILINE)[1]
    kept = stack.records("quarantine", "--ingest", ingest_id)
    assert sorted(r["row_number"] for r in kept) == list(range(3, 12))
    assert {r["source"] for r in kept} == {str(path)}
    stored = stack.records("show", "QQ")
    assert [r["ts"][:10] for r in stored] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert stored[2]["close"] == 10.5  # the first of the duplicates was kept


def test_symbol_and_time_filters(stack):
    out = stack.ok(
        "ingest",
        "--source",
        "sp500-panel",
        "--symbols",
        "AAPL",
        "MSFT",
        "--start",
        "2010-01-01",
        "--end",
        "2010-02-01",
    )
    counts = summary_counts(out)
    assert counts["accepted"] == 2 * 19  # trading days in January 2010
    shown = stack.records("show", "MSFT", "--limit", "1000")
    assert len(shown) == 19
    assert shown[0]["ts"].startswith("2010-01-04")


def test_synthetic_ingest_runs_in_parallel_tasks(stack):
    out = stack.ok("ingest", "--source", "synthetic:40:2000:1h", "--seed", "3")
    assert summary_counts(out)["accepted"] == 80_000
    listing = [r for r in stack.records("symbols") if r["symbol"].startswith("SYN")]
    assert len(listing) == 40
    assert {r["bars"] for r in listing} == {2000}
    assert {r["interval"] for r in listing} == {"1h"}


def test_bad_file_is_one_line(stack, tmp_path):
    path = tmp_path / "bars.txt"
    path.write_text("x")
    done = stack.cli("ingest", "--source", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == f"ray-apps: {path}: expected a .csv or .parquet file"


def test_ingest_job_with_the_token_and_refused_without(stack):
    job_env = stack.job_env()
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--",
        "python",
        "-m",
        "ray_apps.jobs.ingest",
        "--source",
        "synthetic:4:500",
        "--seed",
        "99",
    ]
    done = stack.run(*submit, env=job_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted             2,000" in done.stdout
    assert "succeeded" in done.stdout + done.stderr

    no_token = {k: v for k, v in job_env.items() if not k.startswith("RAY_AUTH")}
    refused = stack.run(*submit, env=no_token)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stdout + refused.stderr

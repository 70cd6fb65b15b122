"""`ray-apps ingest` and `ray-apps data` against the real stack, and the same as a Ray job."""

import os
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest
from arch.data import sp500

from .conftest import BIN

pytestmark = pytest.mark.integration


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


def one_line_error(done, *fragments: str) -> str:
    """The single ``ray-apps: ...`` line of a failed command (exit 2, no traceback)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ray-apps: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


YAHOO = [
    "Date,Open,High,Low,Close,Adj Close,Volume",
    "2024-01-02,472.16,473.67,470.49,472.65,466.71,123623700",
    "2024-01-03,470.43,471.19,468.17,468.79,462.90,103585900",
    "2024-01-04,468.30,470.96,467.05,467.28,461.41,84232200",
]


def test_price_download_csv_with_symbol(stack, tmp_path):
    path = tmp_path / "spy.csv"
    path.write_text("\n".join(YAHOO) + "\n")
    out = stack.ok("ingest", "--source", str(path), "--symbol", "YSPY")
    assert summary_counts(out) == {"accepted": 3, "quarantined": 0}
    stored = stack.records("show", "YSPY")
    assert [r["close"] for r in stored] == [472.65, 468.79, 467.28]  # traded, not adjusted
    assert {r["interval"] for r in stored} == {"1d"}


def test_price_download_csv_without_symbol_is_one_line(stack, tmp_path):
    path = tmp_path / "spy.csv"
    path.write_text("\n".join(YAHOO) + "\n")
    one_line_error(stack.cli("ingest", "--source", str(path)), "pass --symbol SYMBOL")


def test_unmappable_columns_are_one_line(stack, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("Day,Price,Vol\n2024-01-02,1,2\n")
    one_line_error(
        stack.cli("ingest", "--source", str(path), "--symbol", "X"),
        "cannot map columns Day, Price, Vol to bars",
        "missing ts, open, high, low, close, volume",
    )


def test_a_file_with_no_good_row_exits_2_and_keeps_its_quarantine(stack, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("symbol,ts,open,high,low,close,volume\nZZ,2024-01-02,10,9,9,10.5,100\n")
    line = one_line_error(
        stack.cli("ingest", "--source", str(path), "--interval", "1d"),
        "no row accepted of 1: 1 quarantined (high_below_open_close 1",
    )
    ingest_id = re.search(r"--ingest (\w+)", line)[1]
    assert [r["reason"] for r in stack.records("quarantine", "--ingest", ingest_id)] == [
        "high_below_open_close"
    ]


def test_duplicates_in_different_chunks_are_quarantined(stack, tmp_path):
    rows = [
        "symbol,ts,open,high,low,close,volume",
        "DC,2024-01-02,10,11,9,10.5,100",
        "DC,2024-01-03,10,11,9,10.5,100",
        "DC,2024-01-04,10,11,9,10.5,100",
        "DC,2024-01-05,10,11,9,10.5,100",  # second chunk of 3 rows
        "DC,2024-01-02,10,11,9,10.9,100",  # repeats row 0
        "DC,2024-01-08,10,11,9,10.5,100",
    ]
    path = tmp_path / "dups.csv"
    path.write_text("\n".join(rows) + "\n")
    out = stack.ok("ingest", "--source", str(path), "--interval", "1d", "--chunk-rows", "3")
    assert summary_counts(out) == {"accepted": 5, "quarantined": 1, "duplicate_symbol_ts": 1}
    ingest_id = re.search(r"^ingest (\w+) of ", out, re.MULTILINE)[1]
    assert [r["row_number"] for r in stack.records("quarantine", "--ingest", ingest_id)] == [4]
    assert [r["close"] for r in stack.records("show", "DC")] == [10.5] * 5  # first copy kept


def test_quarantine_row_numbers_with_symbols_are_source_rows(stack, tmp_path):
    rows = [
        "symbol,ts,open,high,low,close,volume",
        "RA,2024-01-02,10,11,9,10.5,100",
        "RB,2024-01-02,10,11,9,10.5,100",
        "RB,2024-01-03,10,11,9,10.5,100",
        "RA,2024-01-03,10,11,9,inf,100",  # source row 3
        "RA,2024-01-04,10,11,9,10.5,100",
    ]
    path = tmp_path / "two.csv"
    path.write_text("\n".join(rows) + "\n")
    out = stack.ok("ingest", "--source", str(path), "--interval", "1d", "--symbols", "RA")
    ingest_id = re.search(r"^ingest (\w+) of ", out, re.MULTILINE)[1]
    assert [r["row_number"] for r in stack.records("quarantine", "--ingest", ingest_id)] == [3]


def store_actor_pid(stack) -> int:
    """The process id of the offline-store actor, from Ray's state API."""
    script = (
        "from ray.util.state import list_actors;"
        "from ray_apps._private.ray_cluster import connect_ray;"
        "from ray_apps.config import load_settings;"
        "settings = load_settings();"
        "connect_ray(settings);"
        "alive = list_actors(address=settings.ray_address, filters=["
        "('class_name', '=', 'OfflineStoreActor'), ('state', '=', 'ALIVE')]);"
        "print(alive[0].pid)"
    )
    done = stack.run(sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_killing_the_store_actor_mid_ingest_loses_nothing(stack):
    command = [str(BIN / "ray-apps"), "ingest", "--source", "synthetic:200:20000:1h"]
    ingest = subprocess.Popen(
        command, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = ingest.stdout.readline()  # the first block has been handed to the store
    assert "blocks generated" in first, first + ingest.stderr.read()
    pid = store_actor_pid(stack)
    assert ingest.poll() is None, "the ingest ended before the actor could be killed"
    os.kill(pid, signal.SIGKILL)
    out, err = ingest.communicate()
    assert ingest.returncode == 0, first + out + err
    assert store_actor_pid(stack) != pid  # Ray restarted it
    assert summary_counts(out)["accepted"] == 4_000_000
    assert "Traceback" not in err

    again = summary_counts(stack.ok(*command[1:]))  # the same command again: still one copy
    assert again["accepted"] == 4_000_000
    listing = [
        r
        for r in stack.records("symbols")
        if r["symbol"].startswith("SYN") and r["interval"] == "1h"
    ]
    assert len(listing) == 200
    assert {r["bars"] for r in listing} == {20_000}

"""Serving's read of the universe's cross-section against a per-symbol baseline.

Starts the project's Redis alone on a free port in a temp folder (never yours), writes
``--symbols`` symbols x ``--bars`` bars of the default spec's columns (`data/features.yaml`,
random values) with a window of ``--window``, then times, ``--repeat`` times each:
  - baseline: per symbol, `OnlineStore.read` (latest vector), then per symbol
    `OnlineStore.read_window` cut at as_of (two round trips per symbol), frames concatenated;
  - `read_cross_section` given the universe (two pipelined round trips);
  - `read_cross_section` listing the universe with SCAN first;
  - `read_universe` alone: what a request costs when the scored cross-section is cached.
Both paths must give the same rows (checked). Prints p50/p99 ms and the speed-up.

    python bench/serving_read.py [--symbols 500] [--bars 30] [--window 20] [--lookback 20]

Measured 2026-11-26, 2-core machine shared with four other engineers (load about 2.5), one
run, 500 symbols, 21 features, window 20, lookback 20 (10,000 rows), p50 / p99 ms: baseline
1,446 / 2,392; read_cross_section 31.6 / 45.1 (45.7x) with the universe given, 33.1 / 39.3 with
SCAN; read_universe alone 2.0 / 3.9. (The first version, with one pipelined command per
symbol and key instead of one script call per 1,000 symbols, took 46 ms; read_universe 17 ms.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ray_apps.config import Settings
from ray_apps.features.spec import load_spec
from ray_apps.serving.cross_section import read_cross_section, read_universe
from ray_apps.stack import stack_down, stack_up
from ray_apps.stack.isolated import redis_only_overrides
from ray_apps.stores.online import OnlineStore, redis_client

BASE_US = 1_704_067_200_000_000  # 2024-01-01 UTC
MINUTE_US = 60_000_000


def history(symbols: int, bars: int, columns: list[str]) -> pa.Table:
    """``bars`` consecutive one-minute bars of every symbol, random feature values."""
    rng = np.random.default_rng(0)
    names = [f"S{i:04d}" for i in range(symbols)]
    steps = np.repeat(np.arange(bars), symbols)
    ts = pa.array(BASE_US + steps * MINUTE_US, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    data = {"symbol": names * bars, "ts": ts}
    data |= {c: rng.normal(size=symbols * bars) for c in columns}
    return pa.table(data)


def per_symbol_read(
    store: OnlineStore, symbols: list[str], lookback: int, columns: list[str]
) -> pd.DataFrame:
    """The baseline: each symbol's latest vector, then each window, one call per symbol."""
    latest = {s: store.read(s) for s in symbols}
    as_of = pd.Timestamp(min(v["as_of"] for v in latest.values() if v))
    frames = []
    for symbol in symbols:
        window = store.read_window(symbol).to_pandas()
        window = window[window["ts"] <= as_of].tail(lookback)
        frames.append(window.assign(symbol=symbol))
    rows = pd.concat(frames)
    dates = np.sort(rows["ts"].unique())[-lookback:]
    rows = rows[rows["ts"] >= dates[0]][["symbol", "ts", *columns]]
    return rows.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def timed_ms(read: Callable[[], object], repeat: int) -> np.ndarray:
    """Milliseconds of each call."""
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        read()
        took.append((time.perf_counter() - started) * 1000)
    return np.array(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=30)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--lookback", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    spec = load_spec()
    columns = list(spec.columns)
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-serving-read-") as tmp:
        settings = Settings(**redis_only_overrides(Path(tmp)))
        stack_up(settings, echo=quiet)
        try:
            client = redis_client(settings)
            store = OnlineStore(client, "bench:serving:", settings.redis.pipeline_size)
            store.write_batch(history(args.symbols, args.bars, columns), spec.version, args.window)
            symbols = store.symbols()
            paths: dict[str, Callable[[], object]] = {
                "baseline: per-symbol read + read_window": lambda: per_symbol_read(
                    store, symbols, args.lookback, columns
                ),
                "read_cross_section (universe given)": lambda: read_cross_section(
                    store, spec.version, args.lookback, columns, symbols=symbols
                ),
                "read_cross_section (SCAN universe)": lambda: read_cross_section(
                    store, spec.version, args.lookback, columns
                ),
                "read_universe alone (cached scores)": lambda: read_universe(
                    store, spec.version, symbols=symbols
                ),
            }
            expected = per_symbol_read(store, symbols, args.lookback, columns)
            got = read_cross_section(store, spec.version, args.lookback, columns).rows
            pd.testing.assert_frame_equal(got, expected, check_dtype=False)
            print(
                f"{args.symbols} symbols x {args.lookback} dates ({len(expected):,} rows), "
                f"{len(columns)} features, window {args.window}; Redis "
                f"{client.info()['redis_version']} on 127.0.0.1; {args.repeat} reads each"
            )
            took = {name: timed_ms(read, args.repeat) for name, read in paths.items()}
            base = np.percentile(took["baseline: per-symbol read + read_window"], 50)
            print(f"{'path':<42}{'p50 ms':>9}{'p99 ms':>9}{'vs baseline':>13}")
            for name, ms in took.items():
                p50 = np.percentile(ms, 50)
                print(f"{name:<42}{p50:>9.2f}{np.percentile(ms, 99):>9.2f}{base / p50:>12.1f}x")
        finally:
            stack_down(settings, echo=quiet)


if __name__ == "__main__":
    main()

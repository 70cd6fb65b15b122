"""Online-store write path: the row loop `OnlineStore.write` used before against `write_batch`.

Starts the project's Redis alone on a free port in a temp folder (never yours). Feature
vectors have the default spec's columns (`data/features.yaml`), random values. Prints:
  - vectors/s for micro-batches like a consumer's (symbols x bars per symbol), for the
    baseline row loop (latest vectors only, one script call and one text value per vector
    and column: the code `write` had before, copied below) and for the new path with and
    without a window;
  - p50/p99 latency of one `write_batch` of a small micro-batch (100 bars: 5,000 bars/s in
    20 ms batches), the same for the row loop.

    python bench/online_store.py [--symbols 500] [--bars 10] [--batches 10] [--latency 300]

Measured 2026-11-26, 2-core machine shared with two other engineers (load about 2), one run,
21 features: row loop 8,130 vectors/s; write (latest only) 167,263 (20.6x); write_batch with a
window of 20: 62,515 (7.7x; 41,321 in a noisier run). One 100-bar write: row loop p50 9.9 ms
p99 22.7 ms; write_batch p50 11.3 ms p99 16.9 ms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis

from ray_apps.config import Settings
from ray_apps.features.spec import load_spec
from ray_apps.stack import stack_down, stack_up
from ray_apps.stack.isolated import redis_only_overrides
from ray_apps.stores.online import OnlineStore, redis_client

BASE_US = 1_704_067_200_000_000  # 2024-01-01 UTC
MINUTE_US = 60_000_000
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'as_of')
if current and current >= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], unpack(ARGV, 2))
return 1
"""


def row_loop_write(
    client: redis.Redis, prefix: str, vectors: pa.Table, spec_version: str, pipeline_size: int
) -> int:
    """The baseline: the row loop of `OnlineStore.write` before `write_batch` (vectors written)."""
    script = client.register_script(_WRITE_IF_NEWER)
    written = 0
    features = [c for c in vectors.column_names if c not in ("symbol", "ts")]
    symbols = vectors.column("symbol").to_pylist()
    times = [ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for ts in vectors.column("ts").to_pylist()]
    values = [vectors.column(c).to_pylist() for c in features]
    for first in range(0, len(symbols), pipeline_size):
        pipe = client.pipeline(transaction=False)
        for row in range(first, min(first + pipeline_size, len(symbols))):
            fields: list[str] = ["spec_version", spec_version]
            for name, column in zip(features, values, strict=True):
                value = column[row]
                fields += [name, repr(float("nan") if value is None else float(value))]
            script(keys=[prefix + symbols[row]], args=[times[row], *fields], client=pipe)
        written += sum(1 for stored in pipe.execute() if stored)
    return written


def micro_batches(
    symbols: int, bars: int, count: int, columns: list[str], seed: int = 0
) -> list[pa.Table]:
    """``count`` consecutive micro-batches: each symbol's next ``bars`` bars, by time."""
    rng = np.random.default_rng(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    tables = []
    for batch in range(count):
        steps = np.repeat(np.arange(batch * bars, (batch + 1) * bars), symbols)
        ts = pa.array(BASE_US + steps * MINUTE_US, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        data = {"symbol": names * bars, "ts": ts}
        data |= {c: rng.normal(size=symbols * bars) for c in columns}
        tables.append(pa.table(data))
    return tables


def throughput(write: Callable[[pa.Table], object], batches: list[pa.Table]) -> float:
    """Vectors per second writing every batch once, in order."""
    started = time.perf_counter()
    for batch in batches:
        write(batch)
    return sum(b.num_rows for b in batches) / (time.perf_counter() - started)


def latencies_ms(write: Callable[[pa.Table], object], batches: list[pa.Table]) -> np.ndarray:
    """Milliseconds of each write."""
    took = []
    for batch in batches:
        started = time.perf_counter()
        write(batch)
        took.append((time.perf_counter() - started) * 1000)
    return np.array(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=10, help="bars per symbol per micro-batch")
    parser.add_argument("--batches", type=int, default=10, help="micro-batches per path")
    parser.add_argument("--latency", type=int, default=300, help="100-bar writes timed")
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    spec = load_spec()
    columns = spec.columns
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-online-") as tmp:
        settings = Settings(**redis_only_overrides(Path(tmp)))
        stack_up(settings, echo=quiet)
        try:
            client = redis_client(settings)
            size = settings.redis.pipeline_size
            batches = micro_batches(args.symbols, args.bars, args.batches, columns)
            latest = OnlineStore(client, "bench:latest:", size)
            windows = OnlineStore(client, "bench:window:", size)
            paths: dict[str, Callable[[pa.Table], object]] = {
                "baseline: row loop (latest only)": lambda b: row_loop_write(
                    client, "bench:loop:", b, spec.version, 500
                ),
                "write (latest only)": lambda b: latest.write(b, spec.version),
                f"write_batch (window {args.window})": lambda b: windows.write_batch(
                    b, spec.version, args.window
                ),
            }
            print(
                f"{args.batches} micro-batches of {args.symbols} symbols x {args.bars} bars, "
                f"{len(columns)} features; Redis {client.info()['redis_version']} on "
                f"127.0.0.1 (same machine)"
            )
            rates = {name: throughput(write, batches) for name, write in paths.items()}
            base = rates["baseline: row loop (latest only)"]
            print(f"{'path':<36}{'vectors/s':>12}{'vs baseline':>13}")
            for name, rate in rates.items():
                print(f"{name:<36}{rate:>12,.0f}{rate / base:>12.1f}x")
            small = micro_batches(100, 1, args.latency, columns, seed=1)
            print(f"one write of 100 bars (100 symbols x 1 bar), {args.latency} writes:")
            for name, write in paths.items():
                client.flushdb()
                took = latencies_ms(write, small)
                print(
                    f"{name:<36}p50 {np.percentile(took, 50):6.2f} ms   "
                    f"p99 {np.percentile(took, 99):6.2f} ms"
                )
        finally:
            stack_down(settings, echo=quiet)


if __name__ == "__main__":
    main()

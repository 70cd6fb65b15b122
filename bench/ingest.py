"""Ingest throughput: `ray-apps ingest` of synthetic bars against single-process baselines.

Starts a private stack on free ports in a temp folder, so it never touches yours. Prints, for
the same N symbols x M bars:
  - baseline "engine": the bulk insert alone (chdb's Python table function), one process;
  - baseline "sequential": generate + validate + insert in one process, no Ray, holding the
    table's merges off as the platform's ingest does;
  - "ray-apps ingest": the platform's path (parallel Ray tasks, the offline-store actor).

    python bench/ingest.py [--symbols 500] [--bars 20000] [--repeat 3]

Measured 2026-11-27, 10M rows, 2-core machine, median of 3, two runs: bulk insert alone
3.23 / 3.05 M rows/s, sequential baseline 1.32 / 1.29 M rows/s, ray-apps ingest 2.19 / 2.15 M
rows/s (1.65x / 1.66x the baseline). Both hold the table's merges off while they load.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ray_apps.config import Settings
from ray_apps.jobs.ingest import ingest
from ray_apps.marketdata.ingest import IngestRequest
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars
from ray_apps.marketdata.validation import validate_bars
from ray_apps.stack import stack_down, stack_up
from ray_apps.stack.isolated import isolated_overrides
from ray_apps.stores.offline import OfflineStore

#: Seconds to wait before a measured run, so the last one's merges and the stack's start-up
#: do not count against it.
SETTLE_S = 8


def baselines(spec: SyntheticSpec, folder: Path) -> dict[str, float]:
    """Seconds for each single-process stage on the whole data set."""
    store = OfflineStore(Settings(state_dir=folder / "baseline"))
    store.pause_merges("baseline")  # as `ray-apps ingest` does: merges after the load
    started = time.perf_counter()
    bars = generate_bars(spec, text_as_category=True)  # as the ingest tasks do
    generated = time.perf_counter()
    accepted = validate_bars(bars, spec.interval).bars
    validated = time.perf_counter()
    for first in range(0, accepted.num_rows, 1_000_000):
        store.insert_bars(accepted.slice(first, 1_000_000))
    store.resume_merges("baseline")
    inserted = time.perf_counter()
    assert store.count_bars() == spec.rows
    store.close()
    return {
        "generate": generated - started,
        "validate": validated - generated,
        "insert": inserted - validated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each path; the median is reported"
    )
    args = parser.parse_args()
    spec = SyntheticSpec(n_symbols=args.symbols, n_bars=args.bars)
    rows = spec.rows
    source = f"synthetic:{args.symbols}:{args.bars}"
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        print(
            f"{rows:,} synthetic rows ({args.symbols} symbols x {args.bars} bars), "
            f"median of {args.repeat} runs"
        )
        runs = [baselines(spec, folder / f"baseline-{i}") for i in range(args.repeat)]
        stages = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        sequential = statistics.median(sum(run.values()) for run in runs)
        settings = Settings(**isolated_overrides(folder / "stack"))
        stack_up(settings, echo=quiet)
        try:
            # The first ingest after `stack up` also starts the store actor and Ray workers.
            first = ingest(IngestRequest(source="synthetic:2:1000"), settings, echo=quiet)
            time.sleep(SETTLE_S)  # let the stack's services finish starting
            platform = []
            for seed in range(args.repeat):
                summary = ingest(IngestRequest(source=source, seed=seed), settings, echo=quiet)
                assert summary.accepted == rows
                platform.append(summary.seconds)
                time.sleep(SETTLE_S)  # the engine's merges of the last run settle
        finally:
            stack_down(settings, echo=quiet)
    seconds = statistics.median(platform)
    print(f"{'path':<44}{'seconds':>9}{'rows/s':>14}{'vs sequential':>15}")
    lines = [
        ("baseline: bulk insert only (chdb, 1 process)", stages["insert"]),
        ("baseline: generate+validate+insert, 1 process", sequential),
        ("ray-apps ingest (Ray tasks + store actor)", seconds),
    ]
    for name, took in lines:
        print(f"{name:<44}{took:>9.2f}{rows / took:>14,.0f}{sequential / took:>14.2f}x")
    print(
        "single-process stages: "
        + ", ".join(f"{k} {rows / v:,.0f} rows/s" for k, v in stages.items())
    )
    print(
        "ray-apps ingest runs: "
        + ", ".join(f"{s:.2f} s" for s in platform)
        + f"; the first ingest after stack up (2,000 rows) took {first.seconds:.2f} s"
    )
    print(
        f"ray-apps ingest: {rows / seconds / 1e6:.2f} M rows/s end to end, "
        f"{sequential / seconds:.2f}x the single-process baseline (aims: 1.0 M rows/s, 1.3x)"
    )


if __name__ == "__main__":
    main()

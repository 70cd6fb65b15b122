"""What the bar checks cost the feature engines, against the engines' own work, in one run.

Synthetic 15-minute bars; one process, no Ray:
  - batch: ``compute_table`` (the kernels alone, the baseline) against ``compute_checked``
    (bar rules, then the kernels: what the ray and spark engines now run per block);
  - incremental: ``IncrementalEngine.update_arrays`` with micro-batches of one bar per symbol
    (rules included) against ``kernels.run_rows`` on the same micro-batches (the baseline: the
    state update alone, no checks, no bookkeeping), and the rules alone on those batches.

    python bench/feature_checks.py [--symbols 500] [--bars 2000]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from features import best_rate  # bench/features.py, beside this script

from ray_apps.features import kernels
from ray_apps.features.bar_checks import bar_verdicts
from ray_apps.features.batch import compute_checked, compute_table
from ray_apps.features.engines.incremental import IncrementalEngine
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def incremental_rates(table: pa.Table) -> tuple[float, float, float]:
    """Bars per second: engine with checks, bare kernel, rules alone (one bar a symbol a batch)."""
    table = table.sort_by([("ts", "ascending"), ("symbol", "ascending")])
    symbols = table.column("symbol").to_pylist()
    micros = table.column("ts").cast(pa.int64()).to_numpy()
    arrays = [table.column(c).to_numpy() for c in ("high", "low", "close", "volume")]
    opens = table.column("open").to_numpy()
    edges = list(itertools.pairwise([0, *(np.flatnonzero(np.diff(micros)) + 1), len(symbols)]))
    plan = SPEC.plan
    index = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    rows = np.array([index[s] for s in symbols], dtype=np.int64)

    def engine() -> None:
        incremental = IncrementalEngine(SPEC)
        for first, last in edges:
            incremental.update_arrays(
                symbols[first:last],
                micros[first:last],
                *(a[first:last] for a in arrays),
                open_=opens[first:last],
            )

    def bare() -> None:
        states = np.zeros((len(index), plan.state_size))
        for first, last in edges:
            values = np.empty((last - first, len(plan.columns)))
            kernels.run_rows(
                plan.plan,
                plan.params,
                states,
                rows[first:last],
                *(np.ascontiguousarray(a[first:last]) for a in arrays),
                values,
            )

    def rules() -> None:
        for first, last in edges:
            bar_verdicts(*(a[first:last] for a in arrays), open_=opens[first:last])

    n = len(symbols)
    return best_rate(n, engine), best_rate(n, bare), best_rate(n, rules)


def main() -> None:
    """Run the benchmark and print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2000, help="bars per symbol")
    args = parser.parse_args()
    bars = generate_bars(SyntheticSpec(n_symbols=args.symbols, n_bars=args.bars, interval="15m"))
    table = pa.Table.from_pandas(bars, preserve_index=False)
    print(
        f"bar checks, default spec ({len(SPEC.columns)} columns), {args.symbols} symbols x "
        f"{args.bars} bars = {table.num_rows:,} rows"
    )
    compute_checked(table.slice(0, 100), SPEC)  # compile the kernels first
    results = {
        "batch: compute_table (baseline, kernels only)": best_rate(
            table.num_rows, lambda: compute_table(table, SPEC)
        ),
        "batch: compute_checked (rules + kernels)": best_rate(
            table.num_rows, lambda: compute_checked(table, SPEC)
        ),
    }
    first_symbols = pa.array(sorted(set(bars["symbol"]))[:100])
    cutoff = np.sort(bars["ts"].unique())[min(args.bars, 500) - 1]
    small = table.filter(  # 100 symbols x 500 bar times: the stream engine's per-batch costs
        pc.and_(
            pc.is_in(table.column("symbol"), first_symbols),
            pc.less_equal(table.column("ts"), pa.scalar(cutoff, table.schema.field("ts").type)),
        )
    )
    engine, bare, rules = incremental_rates(small)
    results["incremental: run_rows (baseline, state update only)"] = bare
    results["incremental: update_arrays (rules + bookkeeping)"] = engine
    results["incremental: bar_verdicts alone (the rules)"] = rules
    for name, rate in results.items():
        print(f"  {name:<55} {rate / 1e6:8.2f} M rows/s")


if __name__ == "__main__":
    main()

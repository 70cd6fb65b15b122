"""Test-period results of every model at two horizons: one sweep per spec and horizon.

Runs each ``tune/*.yaml`` spec at label horizons 1 and 5 bars on the S&P 500 panel (the spec's
own search, scheduler and samples), registers each best model (``NAME-h1``, ``NAME-h5``), and
prints the held-out test-period metrics as a Markdown table. The test period is scored once
per sweep, after the search. Every sweep reads the stored features of the panel (the first
computes them with Ray Data). Needs the stack with the panel ingested: ``ray-apps stack up &&
ray-apps ingest --source sp500-panel``.

    python bench/model_results.py [--horizons 1 5] [--models momentum ridge mlp ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ray_apps.config import load_settings
from ray_apps.training.sweep import run_sweep
from ray_apps.training.sweep_spec import load_sweep_spec, with_horizon

MODELS = ["momentum", "ridge", "mlp", "lstm", "transformer", "gat"]
COLUMNS = [
    "ic",
    "rank_ic",
    "icir",
    "rank_icir",
    "sharpe",
    "max_drawdown",
    "annual_return",
    "turnover",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    args = parser.parse_args()
    settings = load_settings()
    rows = []
    for horizon in args.horizons:
        for model in args.models:
            spec = with_horizon(load_sweep_spec(Path("tune") / f"{model}.yaml"), horizon)
            started = time.monotonic()
            result = run_sweep(spec, settings)
            seconds = time.monotonic() - started
            print(result.render(), flush=True)
            rows.append(
                (horizon, model, len(result.trials), result.best.metric, result.test, seconds)
            )
    print(
        "\n| horizon | model | trials | best val rank IC | "
        + " | ".join(f"test {c}" for c in COLUMNS)
        + " | wall s |"
    )
    print("| --- " * (len(COLUMNS) + 5) + "|")
    for horizon, model, trials, val, test, seconds in rows:
        cells = " | ".join(f"{test[f'test_{c}']:+.4f}" for c in COLUMNS)
        print(f"| {horizon} | {model} | {trials} | {val:+.4f} | {cells} | {seconds:.0f} |")


if __name__ == "__main__":
    main()

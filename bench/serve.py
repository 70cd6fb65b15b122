"""Online inference on Ray Serve against the same scorer behind a bare FastAPI + uvicorn.

Starts a private stack on free ports in a temp folder (never yours), writes ``--symbols``
symbols x ``--bars`` daily bars of three features to Redis, registers a ridge model as the
champion, starts the app with ``serve_up``, and runs closed-loop load (each of C clients sends
its next request when the last one answered) against ``POST /v1/predict`` with 1 symbol and
with all symbols, at each concurrency of ``--concurrency``, ``--requests`` requests each.
Then the baseline: the same HTTP API (``create_api``) over the champion deployment's class
(``ModelServer``) in one uvicorn process, no Serve, under the same load. Prints throughput,
p50/p95/p99 ms and errors.

    python bench/serve.py [--symbols 500] [--requests 400] [--concurrency 1 8 32 64]

Measured 2026-11-26 12:08, 2-core machine shared with another engineer's feature benchmark,
one run, --requests 300, ridge model, 500 symbols; req/s and p50 / p99 ms. Both servers answer
from the champion's last scoring of the universe (rescored on the online store's events): Serve
from the ingress's copy of it (no call to the model replica), bare from its ModelServer.

    symbols clients   Serve                      bare FastAPI + uvicorn
       1       1       56.3   15.8 /   45.1      756.0    1.2 /    4.2
       1       8      107.0   70.1 /  165.0      812.1    8.3 /   41.2
       1      32      107.1  280.0 /  563.6      954.1   30.6 /   61.7
       1      64      102.9  617.8 /  933.5      610.1   66.8 /  271.1
     500       1       28.0   29.9 /  120.3      134.1    6.4 /   22.9
     500       8       21.1  309.3 / 1252.5      137.0   49.5 /  209.6
     500      32       28.3  996.9 / 2257.5       69.6  396.6 /  847.5
     500      64       23.8 2421.7 / 4713.1      102.6  551.4 /  839.9

Zero errors. Serve's peak is 11% of the bare peak with 1 symbol (107.1 / 954.1) and 21% with
500 (28.3 / 137.0); the aims (70%, p99 <= 25 ms at 8 clients) are missed. Against the previous
run (each request read Redis and called the model replica: Serve 75.4 and 31.3 req/s, bare 189.3
and 83.6) Serve gained 42% with one symbol, and the bare server 5x: what is left in Serve is
its own path, HTTP proxy -> ingress replica -> proxy, two processes and pickled hops on 2 busy
cores. A trivial Serve app measured the same ceiling here (../shared/DESIGN.md: 145-218 req/s
through the proxy, bare speed with ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``): direct ingress is
the next step for the aims, after its port on all interfaces is kept on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import pyarrow as pa

from ray_apps.config import Settings, load_settings, settings_env

BARS = 30
FEATURES = ["f1", "f2", "f3"]
SPEC_VERSION = "bench-serve"
PREFIX = "bench-serve:"
MODEL = "bench-serve-ridge"


def features(symbols: int, bars: int) -> pd.DataFrame:
    """``symbol, ts, f1..f3``: random daily values."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2024-01-01", periods=bars, freq="D", tz="UTC")
    frame = pd.DataFrame(
        [(f"S{i:04d}", t) for t in dates for i in range(symbols)], columns=["symbol", "ts"]
    )
    frame[FEATURES] = rng.normal(size=(len(frame), len(FEATURES)))
    return frame


def prepare(settings: Settings, symbols: int) -> None:
    """Features into Redis, a ridge model registered as the champion."""
    from mlflow.tracking import MlflowClient

    from ray_apps.features.training_set import cross_section
    from ray_apps.models.catalog import build_model
    from ray_apps.models.panel import Panel
    from ray_apps.models.pyfunc import ScorePyfunc, model_input
    from ray_apps.stores.online import OnlineStore, redis_client
    from ray_apps.training.registry import register

    raw = features(symbols, BARS)
    store = OnlineStore(redis_client(settings), prefix=PREFIX)
    for _, day in raw.groupby("ts"):
        store.write_batch(pa.Table.from_pandas(day, preserve_index=False), SPEC_VERSION, window=8)
    rows = cross_section(raw, FEATURES, "rank", 5)
    rows = rows.assign(target=rows["f1"] - rows["f3"], ret=0.0)
    panel = Panel.from_frame(rows, FEATURES, "target", "ret")
    model = build_model("ridge", {"alpha": 1.0}, tuple(FEATURES))
    model.fit(panel, np.arange(len(panel.dates) - 3))
    client = MlflowClient(settings.mlflow.uri)
    run_id = client.create_run(client.create_experiment("bench-serve")).info.run_id
    register(
        client,
        run_id,
        ScorePyfunc(model, "rank", 5),
        model_input(raw.tail(5 * symbols)),
        MODEL,
        "champion",
        {"feature_spec.version": SPEC_VERSION},
    )


async def closed_loop(url: str, body: dict, clients: int, total: int) -> dict:
    """``clients`` concurrent clients sending ``total`` requests in all; figures of the run."""
    latencies: list[float] = []
    errors = 0
    left = min(total, 20)  # warm-up

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as reply:
                    await reply.read()
                    ok = reply.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(min(clients, 4))))
        left = total
        latencies.clear()
        errors = 0
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"rps": total / elapsed, "p50": p50, "p95": p95, "p99": p99, "errors": errors}


def load(url: str, symbols: list[str], concurrency: Sequence[int], total: int) -> dict:
    """Figures per (symbols asked, concurrency)."""
    figures = {}
    for asked in (symbols[:1], symbols):
        for clients in concurrency:
            figures[(len(asked), clients)] = asyncio.run(
                closed_loop(url + "/v1/predict", {"symbols": asked}, clients, total)
            )
    return figures


def bare_server(port: int) -> None:
    """The baseline process: ``create_api`` over one in-process ``ModelServer``.

    The champion deployment's own class: it answers from its last scoring of the universe and
    rescores on the online store's events, as a Serve replica does.
    """
    import uvicorn

    from ray_apps.serving.http import create_api
    from ray_apps.serving.model_server import ModelServer
    from ray_apps.serving.routing import CHAMPION
    from ray_apps.serving.schemas import PredictResponse

    server = ModelServer(load_settings(), CHAMPION)

    class Bare:
        async def predict(self, symbols, client_key):
            entries = await asyncio.to_thread(server.predict, symbols)
            version = server.scorer.model.version
            return PredictResponse(alias="champion", model_version=version, predictions=entries)

    uvicorn.run(create_api(Bare(), None), host="127.0.0.1", port=port, log_level="warning")


def wait_ready(url: str) -> None:
    """Until ``url`` answers 200."""
    import requests

    while True:
        try:
            if (
                requests.post(
                    url + "/v1/predict", json={"symbols": ["S0000"]}, timeout=30
                ).status_code
                == 200
            ):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)


def report(name: str, figures: dict) -> None:
    for (asked, clients), f in figures.items():
        print(
            f"{name:6} symbols {asked:4} clients {clients:3}: {f['rps']:8.1f} req/s  p50 "
            f"{f['p50']:7.1f}  p95 {f['p95']:7.1f}  p99 {f['p99']:7.1f} ms  errors "
            f"{f['errors']}"
        )


def summary(runs: dict[str, dict], sizes: Sequence[int]) -> None:
    """Each Serve path's peak throughput against the bare peak, and p99 at 8 clients."""
    for size in sizes:
        bare = max(f["rps"] for (asked, _), f in runs["bare"].items() if asked == size)
        for name in ("direct", "proxy"):
            figures = {c: f for (asked, c), f in runs[name].items() if asked == size}
            peak = max(f["rps"] for f in figures.values())
            p99 = f"{figures[8]['p99']:.1f} ms" if 8 in figures else "n/a"
            errors = sum(f["errors"] for f in figures.values())
            print(
                f"{name:6} {size:4} symbols: peak {peak:.1f} req/s = {peak / bare:.0%} of bare "
                f"({bare:.1f}); p99 at 8 clients {p99}; errors {errors}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_port:
        bare_server(args.bare_port)
        return

    from ray_apps._private.ray_cluster import connect_ray
    from ray_apps.serving.control import serve_down, serve_up, wait_direct_ingress
    from ray_apps.stack import stack_down, stack_up
    from ray_apps.stack.isolated import free_ports, isolated_overrides

    with tempfile.TemporaryDirectory() as tmp:
        overrides = isolated_overrides(Path(tmp) / "state")
        overrides["serve"] |= {"model_name": MODEL, "feature_key_prefix": PREFIX}
        settings = Settings(**overrides)
        stack_up(settings, echo=lambda _: None)
        symbols = [f"S{i:04d}" for i in range(args.symbols)]
        try:
            prepare(settings, args.symbols)
            connect_ray(settings)
            serve_up(settings)
            url = f"http://127.0.0.1:{settings.serve.port}"
            wait_ready(url)
            (direct,) = wait_direct_ingress(settings)
            runs = {"direct": load(direct, symbols, args.concurrency, args.requests)}
            report("direct", runs["direct"])
            runs["proxy"] = load(url, symbols, args.concurrency, args.requests)
            report("proxy", runs["proxy"])
            serve_down(settings)

            (port,) = free_ports(1)
            env = os.environ | settings_env(overrides)
            bare = subprocess.Popen([sys.executable, __file__, "--bare-port", str(port)], env=env)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url)
                runs["bare"] = load(url, symbols, args.concurrency, args.requests)
                report("bare", runs["bare"])
            finally:
                bare.terminate()
                bare.wait()
            summary(runs, (1, args.symbols))
        finally:
            stack_down(settings, echo=lambda _: None)


if __name__ == "__main__":
    main()

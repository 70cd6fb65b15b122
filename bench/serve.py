"""Online inference on Ray Serve against the same scorer behind a bare FastAPI + uvicorn.

Starts a private stack on free ports in a temp folder (never yours), writes ``--symbols``
symbols x ``--bars`` daily bars of three features to Redis, registers a ridge model as the
champion, starts the app with ``serve_up``, and runs closed-loop load (each of C clients sends
its next request when the last one answered) against ``POST /v1/predict`` with 1 symbol and
with all symbols, at each concurrency of ``--concurrency``, ``--requests`` requests each.
Then the baseline: the same HTTP API (``create_api``) over the champion deployment's class
(``ModelServer``) in one uvicorn process, no Serve, under the same load. Serve is measured at
both of its addresses: the ingress replica's own port (direct ingress, ``serve.direct_ingress``)
and Serve's HTTP proxy. Prints throughput, p50/p95/p99 ms and errors, then each Serve address's
peak against the bare peak.

    python bench/serve.py [--symbols 500] [--requests 400] [--concurrency 1 8 32 64]

Measured 2026-11-26 15:50, 2-core machine, nothing else running, one run, --requests 400,
ridge model, 500 symbols; req/s and p50 / p99 ms. All three answer from the champion's last
scoring of the universe (rescored on the online store's events).

    symbols clients   direct ingress           Serve proxy               bare FastAPI + uvicorn
       1       1      391.8   2.2 /   6.8      53.1   17.7 /   37.9      643.1    1.4 /    4.0
       1       8      492.2  14.7 /  36.8      91.7   82.3 /  171.7      659.7   11.8 /   23.5
       1      32      462.5  64.6 / 100.4      92.6  343.3 /  477.7      491.3   47.6 /  295.4
       1      64      430.7 137.1 / 236.6      90.4  688.7 /  969.0     1073.6   49.9 /   94.2
     500       1       83.9  11.5 /  24.5      38.1   25.2 /   51.9       98.7    9.4 /   16.2
     500       8       88.6  88.5 / 134.5      47.1  168.0 /  241.4       94.7   65.6 /  307.6
     500      32      113.4 259.2 / 378.2      54.2  591.1 /  790.0       91.1  285.9 /  644.6
     500      64      109.1 550.0 / 760.2      54.6 1128.3 / 1536.1       82.3  719.6 / 1042.6

Zero errors. Direct ingress: 46% of the bare peak with one symbol (492.2 / 1073.6; 75% of the
bare server at 8 clients, 659.7) and 115% with 500 (113.4 / 98.7); p99 at 8 clients 36.8 ms
(aim 25). The proxy: 9% and 55%. Before direct ingress, replicas running user code on their
own loop and the score distribution observed once per scoring (it was observed per answered
entry, 16 us each), Serve peaked at 107.1 and 28.3 req/s. What is left between direct ingress
and bare with one symbol is Serve's per-request work in the replica (request context, routing
metadata, its own metrics) on the same two cores as the load generator.
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

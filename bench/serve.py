"""Online inference on Ray Serve against the same scorer behind a bare FastAPI + uvicorn.

Starts a private stack on free ports in a temp folder (never yours), writes ``--symbols``
symbols x ``--bars`` daily bars of three features to Redis, registers a ridge model as the
champion, starts the app with ``serve_up``, and runs closed-loop load (each of C clients sends
its next request when the last one answered) against ``POST /v1/predict`` with 1 symbol and
with all symbols, at each concurrency of ``--concurrency``, for ``--seconds`` each (after a
second of warm-up).
Then the baseline: the same HTTP API (``create_api``) over the champion deployment's class
(``ModelServer``) in one uvicorn process, no Serve, under the same load. Serve is measured at
both of its addresses: the ingress replica's own port (direct ingress, ``serve.direct_ingress``)
and Serve's HTTP proxy. Prints throughput, p50/p95/p99 ms and errors, then each Serve address's
peak against the bare peak.

    python bench/serve.py [--symbols 500] [--seconds 3] [--concurrency 1 8 32 64]

Measured 2026-11-27 06:14 and 07:04, 2-core machine, nothing else running, two runs, 3 s a
point, ridge model, 500 symbols; req/s and p50 / p99 ms. All three answer from the champion's
last scoring of the universe (rescored on the online store's events), each symbol's entry and
its JSON made once per scoring. First run:

    symbols clients  direct ingress          Serve proxy             bare FastAPI+uvicorn
        1      1    807.1   1.1 /   3.4      96.6  10.0 /  21.6     833.6   1.2 /   2.3
        1      8   1095.3   7.0 /  15.4     150.4  50.4 / 101.8    1070.2   6.3 /  15.3
        1     32   1232.7  24.6 /  57.0     183.4 166.9 / 341.1    1413.3  17.9 / 186.7
        1     64   1033.8  51.9 / 141.5     198.2 322.5 / 470.5    1529.8  30.8 / 214.2
      500      1    514.9   1.7 /   4.9      83.4  11.4 /  26.9     663.0   1.5 /   2.6
      500      8    901.1   8.6 /  19.1     129.0  59.0 / 106.7    1271.4   5.9 /  11.6
      500     32    843.8  39.9 /  54.0     155.6 190.1 / 373.2    1385.5  18.9 / 181.6
      500     64   1038.7  55.3 / 119.8     145.0 431.8 / 608.7     911.1  57.8 / 233.6

Second run:

    symbols clients  direct ingress          Serve proxy             bare FastAPI+uvicorn
        1      1    688.9   1.3 /   3.3      91.9  10.1 /  20.9    1163.6   0.9 /   2.0
        1      8   1583.8   4.1 /  11.9     146.7  52.3 / 102.7    2027.1   3.6 /   8.4
        1     32   1785.3  16.0 /  34.8     162.0 180.5 / 331.9    1829.8  15.4 / 147.6
        1     64   1230.0  45.9 / 133.6     138.4 452.7 / 614.5    1894.6  26.3 / 164.2
      500      1    769.6   1.2 /   3.0      80.2  12.0 /  21.3     628.2   1.6 /   2.8
      500      8    980.3   7.3 /  17.5     140.0  55.2 /  99.8    1091.3   6.9 /  12.3
      500     32   1280.4  22.7 /  54.0     136.3 231.1 / 366.9    1081.7  28.0 /  46.0
      500     64   1133.0  51.6 /  90.0     151.8 410.4 / 615.6    1011.6  54.2 / 221.4

Zero errors. Direct ingress: 81% / 88% of the bare peak with one symbol (1,232.7 / 1,529.8 and
1,785.3 / 2,027.1) and 75% / 117% with 500 (1,038.7 / 1,385.5 and 1,280.4 / 1,091.3); p99 at 8
clients 15.4 / 11.9 ms with one symbol and 19.1 / 17.5 ms with 500 (aims: 70%, 25 ms). Before
the entries kept their JSON (03:53 the same day), 500 symbols gave 306.5 req/s direct (p99 at 8
clients 41.6 ms) against a bare 241.1: making 500 entries and FastAPI's validate-and-serialize
took 5 ms a request. The machine's speed moves by day: the bare peak with one symbol was
1,301-1,841 on 2026-11-26 and 2,708-2,779 early on 2026-11-27.
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


async def closed_loop(url: str, body: dict, clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients sending requests for ``seconds``; figures of the run.

    A second of the same load runs first as a warm-up. A fixed time per point, not a fixed
    count: at 1,000 req/s a few hundred requests last a fraction of a second, and one GC
    pause or scheduler hiccup moved a point by a third.
    """
    latencies: list[float] = []
    errors = 0
    deadline = 0.0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
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
        deadline = time.perf_counter() + 1.0
        await asyncio.gather(*(client(session) for _ in range(clients)))
        latencies.clear()
        errors = 0
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "rps": len(latencies) / elapsed,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "errors": errors,
        "requests": len(latencies),
    }


def load(url: str, symbols: list[str], concurrency: Sequence[int], seconds: float) -> dict:
    """Figures per (symbols asked, concurrency)."""
    figures = {}
    for asked in (symbols[:1], symbols):
        for clients in concurrency:
            figures[(len(asked), clients)] = asyncio.run(
                closed_loop(url + "/v1/predict", {"symbols": asked}, clients, seconds)
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
            f"{f['errors']} of {f['requests']}"
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
    parser.add_argument("--seconds", type=float, default=3.0, help="load per point")
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
            runs = {"direct": load(direct, symbols, args.concurrency, args.seconds)}
            report("direct", runs["direct"])
            runs["proxy"] = load(url, symbols, args.concurrency, args.seconds)
            report("proxy", runs["proxy"])
            serve_down(settings)

            (port,) = free_ports(1)
            env = os.environ | settings_env(overrides)
            bare = subprocess.Popen([sys.executable, __file__, "--bare-port", str(port)], env=env)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url)
                runs["bare"] = load(url, symbols, args.concurrency, args.seconds)
                report("bare", runs["bare"])
            finally:
                bare.terminate()
                bare.wait()
            summary(runs, (1, args.symbols))
        finally:
            stack_down(settings, echo=lambda _: None)


if __name__ == "__main__":
    main()

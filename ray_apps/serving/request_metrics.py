"""Per-alias prediction metrics, counted in the replica and handed to Ray a few times a second.

A Ray metric call costs about 16 us on this machine, and each prediction made two. A request
now only appends its latency here; :meth:`RequestMetrics.export` passes the totals on, as
Serve does with its own request metrics (``RAY_SERVE_METRICS_EXPORT_INTERVAL_MS``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from ray.serve.metrics import Counter, Histogram

log = logging.getLogger("ray.serve")

EXPORT_INTERVAL_S = 0.1
"""How often the counts go to Ray's metrics (Ray itself exports every few seconds)."""
LATENCY_BOUNDS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 1000]


class RequestMetrics:
    """Prediction requests, errors and latency per alias (``ray_apps_prediction*``)."""

    def __init__(self) -> None:
        self.requests = Counter("ray_apps_predictions", "Prediction requests.", ("alias",))
        self.errors = Counter(
            "ray_apps_prediction_errors", "Failed prediction requests.", ("alias",)
        )
        self.latency = Histogram(
            "ray_apps_prediction_latency_ms",
            "Prediction latency in ms.",
            boundaries=LATENCY_BOUNDS_MS,
            tag_keys=("alias",),
        )
        self._errors: defaultdict[str, int] = defaultdict(int)
        self._latencies: defaultdict[str, list[float]] = defaultdict(list)

    def record(self, alias: str, latency_ms: float, ok: bool) -> None:
        """One answered (``ok``) or failed request of ``alias``."""
        self._latencies[alias].append(latency_ms)
        if not ok:
            self._errors[alias] += 1

    def export(self) -> None:
        """Hands what was recorded since the last export to Ray's metrics."""
        latencies, self._latencies = self._latencies, defaultdict(list)
        errors, self._errors = self._errors, defaultdict(int)
        for alias, values in latencies.items():
            tags = {"alias": alias}
            self.requests.inc(len(values), tags)
            for value in values:
                self.latency.observe(value, tags)
        for alias, count in errors.items():
            self.errors.inc(count, {"alias": alias})

    async def export_forever(self) -> None:
        """Exports every :data:`EXPORT_INTERVAL_S` (a task of the ingress replica)."""
        while True:
            await asyncio.sleep(EXPORT_INTERVAL_S)
            try:
                self.export()
            except Exception:  # a metrics failure must not end the task
                log.exception("exporting prediction metrics failed")

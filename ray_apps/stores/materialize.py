"""Materialization: the newest stored feature row of each symbol, copied to the online store."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow.compute as pc
import ray
from pydantic import BaseModel

from ray_apps.errors import UserError
from ray_apps.stores.offline_actor import OfflineStoreHandle
from ray_apps.stores.online import OnlineStore, WriteSummary


class MaterializeSummary(BaseModel):
    """What a materialize run did."""

    symbols: int
    result: WriteSummary
    seconds: float

    def render(self) -> str:
        """One line for the terminal."""
        return (
            f"materialized {self.result.written:,} of {self.symbols:,} symbols to Redis in "
            f"{self.seconds:.1f} s ({self.result.stale:,} kept: Redis already had newer)"
        )


def materialize_latest(
    offline: OfflineStoreHandle,
    online: OnlineStore,
    spec_version: str,
    fingerprint: str,
    columns: Sequence[str],
    interval: str = "1d",
    symbols: Sequence[str] | None = None,
) -> MaterializeSummary:
    """Writes the newest stored feature row of each symbol of one spec to the online store.

    Args:
        offline: the offline-store actor.
        online: the online store.
        spec_version: the spec's version label.
        fingerprint: the spec's fingerprint; rows stored under another one are refused.
        columns: the spec's feature columns.
        interval: the bar interval.
        symbols: only these symbols (all stored ones when None).

    Raises:
        UserError: nothing of this spec and interval is stored (for these symbols), or it was
            stored by an edited spec under the same version.
    """
    started = time.monotonic()
    coverage = ray.get(
        offline.feature_coverage.remote(spec_version, fingerprint, interval, symbols)
    )
    if coverage.num_rows == 0:
        stored = ray.get(offline.count_features.remote(spec_version))
        if stored:
            raise UserError(
                f"stored features of spec version {spec_version} were computed by another "
                f"definition (fingerprint not {fingerprint}) or another interval than "
                f"{interval}; recompute them with `ray-apps features compute` first"
            )
        raise UserError(
            f"no {interval} features of spec version {spec_version} stored; run "
            "`ray-apps features compute --from-store` first"
        )
    latest = ray.get(
        offline.features.remote(
            symbols=coverage["symbol"].to_pylist(),
            interval=interval,
            columns=list(columns),
            latest=True,
            spec_version=spec_version,
        )
    )
    vectors = latest.select(["symbol", "ts", *columns])
    newest = pc.max(vectors.column("ts")).as_py() if vectors.num_rows else None
    result = online.write(vectors, spec_version, event_as_of=newest)
    return MaterializeSummary(
        symbols=latest.num_rows, result=result, seconds=time.monotonic() - started
    )

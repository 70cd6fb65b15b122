"""Starting, stopping and watching the stream consumers (``ray-apps stream start|stop|status``).

Consumers are detached, named Ray actors (``stream-consumer-0``, ``-1``...) in the platform's
namespace, restarted by Ray when their process dies; they keep running after the command that
started them ends, and ``stream stop`` stores what they hold before removing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from pydantic import BaseModel

from ray_apps.config import Settings
from ray_apps.errors import UserError
from ray_apps.streaming.consumer import StreamConsumer
from ray_apps.streaming.metrics import ConsumerStatus
from ray_apps.streaming.topics import ensure_topics

NAME_PREFIX = "stream-consumer-"
#: Seconds a new consumer may take to report that it runs.
START_TIMEOUT_S = 120.0

Echo = Callable[[str], None]

_remote_consumer = ray.remote(max_restarts=-1, max_task_retries=0)(StreamConsumer)


class StreamStatus(BaseModel):
    """Every consumer's figures."""

    consumers: list[ConsumerStatus]

    def render(self) -> str:
        """The table ``ray-apps stream status`` prints."""
        if not self.consumers:
            return "no stream consumers running; start them with `ray-apps stream start`"
        lines = []
        for c in self.consumers:
            consumed = ", ".join(f"{t} {n:,}" for t, n in sorted(c.consumed.items())) or "none"
            dead = ", ".join(f"{k} {n:,}" for k, n in sorted(c.dead_letters.items())) or "none"
            lag = sum(c.lag.values())
            lines += [
                f"{c.name}: {c.state}, up {c.uptime_s:,.0f} s, partitions "
                f"{', '.join(c.partitions) or 'none'}",
                f"  consumed {consumed}; bars applied {c.bars_applied:,}; skipped (replays) "
                f"{c.skipped:,}; batches {c.batches:,}; checkpoints {c.checkpoints:,}",
                f"  dead letters: {dead}",
                f"  batch latency p50 {_ms(c.batch_p50_ms)} p99 {_ms(c.batch_p99_ms)}; "
                f"freshness p50 {_ms(c.freshness_p50_ms)} p99 {_ms(c.freshness_p99_ms)}; "
                f"lag {lag:,}",
            ]
            if c.errors:
                lines.append(f"  errors {c.errors:,}; last: {c.last_error}")
        return "\n".join(lines)


def start_consumers(settings: Settings, count: int, echo: Echo = print) -> StreamStatus:
    """Create the topics if missing and start consumers ``0..count-1`` (running ones stay).

    Raises:
        UserError: the broker is unreachable, or a consumer failed to start.
    """
    if count < 1:
        raise UserError(f"--consumers must be at least 1, not {count}")
    topics = ensure_topics(settings)
    echo(f"topics ready: {', '.join(topics)}")
    handles = []
    for index in range(count):
        handles.append(
            _remote_consumer.options(
                name=f"{NAME_PREFIX}{index}",
                namespace=settings.ray.namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=settings.stream.consumer_cpus,
                max_concurrency=4,
            ).remote(f"{NAME_PREFIX}{index}", settings)
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        statuses = ray.get([h.status.remote() for h in handles])
        failed = [s for s in statuses if s.state.startswith("failed")]
        if failed:
            raise UserError(f"{failed[0].name} {failed[0].state}")
        if all(s.state == "running" for s in statuses):
            break
        if time.monotonic() > deadline:
            waiting = next(s for s in statuses if s.state != "running")
            raise UserError(
                f"stream consumers did not start within {START_TIMEOUT_S:.0f} s: "
                f"{waiting.name} is {waiting.state}"
                + (f" (last error: {waiting.last_error})" if waiting.last_error else "")
            )
        time.sleep(0.5)
    echo(f"{count} stream consumer(s) running in group {settings.stream.group_id}")
    return StreamStatus(consumers=statuses)


def stop_consumers(settings: Settings, echo: Echo = print) -> StreamStatus:
    """Stop every consumer: each stores, checkpoints and commits what it holds, then goes.

    Consumers leave the group one at a time, each once the others have taken over its
    partitions: a member leaving while the group rebalances can stay behind as a leader that
    never answers on the local broker (tansu 0.6), and no consumer could join the group again.
    """
    handles = _consumers(settings)
    statuses: list[ConsumerStatus] = []
    owned = sum(len(s.partitions) for s in ray.get([h.status.remote() for h in handles]))
    settle_s = (settings.stream.max_poll_interval_ms + settings.stream.session_timeout_ms) / 1000
    for index in range(len(handles) - 1, -1, -1):
        handle = handles[index]
        statuses.insert(0, ray.get(handle.stop.remote()))
        ray.kill(handle, no_restart=True)
        if index and not _taken_over(handles[:index], owned, settle_s):
            echo(f"the remaining consumers did not take over within {settle_s:.0f} s")
    echo(f"stopped {len(handles)} stream consumer(s)")
    return StreamStatus(consumers=statuses)


def _taken_over(handles: list[ray.actor.ActorHandle], owned: int, limit_s: float) -> bool:
    """Wait until ``handles`` own ``owned`` partitions between them (a rebalance is over)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        statuses = ray.get([h.status.remote() for h in handles])
        if sum(len(s.partitions) for s in statuses) >= owned:
            return True
        time.sleep(0.2)
    return False


def stream_status(settings: Settings) -> StreamStatus:
    """Every running consumer's figures."""
    handles = _consumers(settings)
    return StreamStatus(consumers=ray.get([h.status.remote() for h in handles]))


def _consumers(settings: Settings) -> list[ray.actor.ActorHandle]:
    names = sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == settings.ray.namespace and entry["name"].startswith(NAME_PREFIX)
    )
    return [ray.get_actor(name, namespace=settings.ray.namespace) for name in names]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"

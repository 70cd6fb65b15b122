"""``stack up | down | status``: start, health-check and stop the local services by recorded pid."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from ray_apps._private import processes
from ray_apps.config import SECRETS_FILE, Settings, apply_generated_secrets
from ray_apps.errors import UserError
from ray_apps.stack.mlflow_server import MlflowServer
from ray_apps.stack.ray_head import RayHead
from ray_apps.stack.redis_server import RedisServer
from ray_apps.stack.seaweedfs import SeaweedFS
from ray_apps.stack.service import Service
from ray_apps.stack.tansu import TansuBroker

#: Start order; a service starts once every service it ``needs`` is healthy.
SERVICE_TYPES: tuple[type[Service], ...] = (
    SeaweedFS,
    RedisServer,
    RayHead,
    TansuBroker,
    MlflowServer,
)
PIDS_FILE = "stack.json"
EXTERNAL_TOKEN_FILE = "external_ray_auth_token"

Echo = Callable[[str], None]


class ServiceStatus(BaseModel):
    """What ``stack status`` reports for one service."""

    name: str
    url: str
    state: str
    pid: int | None = None
    rss_mb: float | None = None


def services(settings: Settings) -> list[Service]:
    """Every service of the stack, in start order."""
    return [kind(settings) for kind in SERVICE_TYPES]


def stack_up(settings: Settings, echo: Echo = print) -> list[ServiceStatus]:
    """Start every managed service that is not already running and wait until all are healthy.

    Raises:
        UserError: a port is taken, a binary is missing or a service fails its health check;
            services started by this call are stopped again before it is raised.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _ensure_secrets(settings)
    pids = _read_pids(settings)
    todo = []
    for svc in services(settings):
        if not svc.managed:
            continue
        record = pids.get(svc.name)
        if record and _is_ours(settings, record):
            svc.after_start()  # e.g. buckets: also proves the credentials still work
            echo(f"{svc.name:7} already running (pid {record['pid']})")
            continue
        todo.append(svc)
    for svc in todo:  # check everything before starting anything
        svc.command()
        for label, port in svc.ports().items():
            if not processes.port_is_free(port):
                raise UserError(
                    f"port {port} ({svc.name} {label}) is taken by another process; stop it or "
                    f"set {svc.port_setting} (and the other {svc.name} ports) to free ones"
                )
    started: list[Service] = []
    try:
        for wave in _waves(todo):
            for svc in wave:
                svc.prepare()
                pid = processes.spawn(svc.command(), svc.env(), svc.log_path, settings.state_dir)
                pids[svc.name] = {"pid": pid, "create_time": processes.create_time(pid)}
                _write_pids(settings, pids)
                started.append(svc)
            _await_healthy(wave, settings, pids, echo)
    except BaseException:
        for svc in reversed(started):
            processes.stop_group(pids.pop(svc.name)["pid"], svc.stop_grace_s)
        _write_pids(settings, pids)
        raise
    return stack_status(settings)


def stack_down(settings: Settings, echo: Echo = print) -> None:
    """Stop the processes this stack started (by recorded pid), newest first; data stays."""
    pids = _read_pids(settings)
    for svc in reversed(services(settings)):
        record = pids.pop(svc.name, None)
        if record is None:
            continue
        if _is_ours(settings, record):
            started = time.monotonic()
            processes.stop_group(record["pid"], svc.stop_grace_s)
            echo(f"{svc.name:7} stopped (pid {record['pid']}, {time.monotonic() - started:.1f} s)")
        elif processes.is_running(record["pid"]):
            echo(f"{svc.name:7} left alone: pid {record['pid']} is not one this stack started")
        _write_pids(settings, pids)
    if not pids:
        (settings.state_dir / PIDS_FILE).unlink(missing_ok=True)


def stack_status(settings: Settings) -> list[ServiceStatus]:
    """Each service with its URL, pid, memory and health; credentials never appear."""
    pids = _read_pids(settings)
    rows = []
    for svc in services(settings):
        record = pids.get(svc.name)
        pid = record["pid"] if record else None
        if not svc.managed:
            state = "external, " + ("healthy" if _probe(svc) else "unreachable")
        elif record and _is_ours(settings, record):
            state = "healthy" if _probe(svc) else "running, unhealthy"
        else:
            state, pid = "stopped", None
        rss = processes.group_rss_mb(pid) if pid else None
        rows.append(ServiceStatus(name=svc.name, url=svc.url, state=state, pid=pid, rss_mb=rss))
    rows.append(_offline_store_status(settings))
    return rows


def stack_env(settings: Settings) -> dict[str, str]:
    """Variables that let ``ray job submit`` and drivers reach and authenticate to the head.

    They name the token's file, never the token: a token given in the settings (an external
    cluster's) is written to ``<state_dir>/external_ray_auth_token`` (mode 600) for them.
    """
    env = {"RAY_ADDRESS": settings.dashboard_url, "RAY_APPS_STATE_DIR": str(settings.state_dir)}
    env |= settings.ray_env()
    token = env.pop("RAY_AUTH_TOKEN", None)
    if token is not None:
        path = settings.state_dir / EXTERNAL_TOKEN_FILE
        _write_private(path, token)
        env["RAY_AUTH_TOKEN_PATH"] = str(path)
    return env


def _offline_store_status(settings: Settings) -> ServiceStatus:
    if settings.clickhouse.dsn is not None:
        return ServiceStatus(
            name="clickhouse", url="server (RAY_APPS_CLICKHOUSE__DSN)", state="external"
        )
    return ServiceStatus(
        name="clickhouse",
        url=f"chdb://{settings.chdb_path}",
        state="embedded (owned by the offline-store actor)",
    )


def _probe(svc: Service) -> bool:
    try:
        return svc.healthy()
    except Exception:
        return False


def _waves(todo: list[Service]) -> list[list[Service]]:
    """Group services so that each starts after the ones it needs (already-running ones count)."""
    pending = {svc.name: svc for svc in todo}
    waves = []
    while pending:
        wave = [s for s in pending.values() if not any(n in pending for n in s.needs)]
        waves.append(wave)
        for svc in wave:
            del pending[svc.name]
    return waves


def _await_healthy(wave: list[Service], settings: Settings, pids: dict, echo: Echo) -> None:
    """Wait for every service of a wave in parallel; the first failure is a user error."""
    started = time.monotonic()

    def wait(svc: Service) -> str | None:
        def check() -> bool:
            if not processes.is_running(pids[svc.name]["pid"]):
                raise _Exited
            return svc.healthy()

        try:
            ok = processes.wait_until(check, settings.health_timeout_s)
        except _Exited:
            return f"{svc.name} exited during start-up"
        if not ok:
            if not processes.is_running(pids[svc.name]["pid"]):
                return f"{svc.name} exited during start-up"
            return f"{svc.name} failed its health check within {settings.health_timeout_s:.0f} s"
        svc.after_start()
        echo(
            f"{svc.name:7} healthy at {svc.url} (pid {pids[svc.name]['pid']}, "
            f"{time.monotonic() - started:.1f} s)"
        )
        return None

    with ThreadPoolExecutor(max_workers=len(wave)) as pool:
        failures = [f for f in pool.map(wait, wave) if f]
    if failures:
        svc = next(s for s in wave if failures[0].startswith(s.name))
        last = processes.tail(svc.log_path, 1).strip()
        hint = f"; last log line: {last[:200]}" if last else ""
        raise UserError(f"{failures[0]}; see {svc.log_path}{hint}")


class _Exited(Exception):
    """The service process ended while we waited for it."""


def _ensure_secrets(settings: Settings) -> None:
    """Generate credentials for the local services once, keep them (mode 600), apply them."""
    path = settings.state_dir / SECRETS_FILE
    if not path.is_file():
        generated = {
            "s3_access_key": "rayapps" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(30),
            "redis_password": secrets.token_urlsafe(24),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(generated, fh)
    apply_generated_secrets(settings)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (mode 600 before any byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _is_ours(settings: Settings, record: dict) -> bool:
    """Whether a recorded service process still runs, and is the one this stack started."""
    return processes.is_ours(record["pid"], record["create_time"], settings.state_dir)


def _read_pids(settings: Settings) -> dict[str, dict]:
    path: Path = settings.state_dir / PIDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_pids(settings: Settings, pids: dict[str, dict]) -> None:
    (settings.state_dir / PIDS_FILE).write_text(json.dumps(pids, indent=2))

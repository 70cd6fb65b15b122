"""One real local stack for the whole integration session, on free ports in a temp folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ray_apps._private import processes
from ray_apps.config import Settings, settings_env
from ray_apps.stack import stack_down, stack_up
from ray_apps.stack.isolated import isolated_overrides, redis_only_overrides
from ray_apps.stack.manager import PIDS_FILE

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
#: A hang guard for each integration test (stack start-up included), not a speed limit.
INTEGRATION_TIMEOUT_S = 900


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration ``integration``, with a generous timeout.

    ``pytest -m "not integration"`` is then the quick loop; the timeout (pytest-timeout) turns a
    hung server or driver into a failure instead of a stuck run.
    """
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S))


def stack_overrides(state_dir: Path) -> dict:
    """Settings for a private stack: its own state folder and ports, patient health checks."""
    overrides = isolated_overrides(state_dir)
    overrides["health_timeout_s"] = 120
    overrides["ray"]["object_store_memory_gb"] = 1.0
    return overrides


@dataclass
class Stack:
    """A running stack and helpers to drive it the way a user does."""

    overrides: dict
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_APPS_", "RAY_AUTH", "RAY_ADDRESS"))
        }
        # The repository root on the path: Ray workers import test-only models from tests/.
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = (
            clean
            | settings_env(self.overrides)
            | {
                "PATH": f"{BIN}:{os.environ['PATH']}",
                "PYTHONPATH": path,
            }
        )

    @property
    def settings(self) -> Settings:
        return Settings(**self.overrides)

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command with this stack's settings (in ``cwd`` if given); output is text."""
        return subprocess.run(
            list(args),
            env=env or self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``ray-apps ARGS``."""
        return self.run(str(BIN / "ray-apps"), *args, **kwargs)

    def ok(self, *args: str) -> str:
        """Run ``ray-apps ARGS``, fail the test on a non-zero exit, return stdout."""
        done = self.cli(*args)
        assert done.returncode == 0, f"ray-apps {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def run_background(self, *args: str) -> subprocess.Popen:
        """Start ``ray-apps ARGS`` and return at once (text pipes for its output)."""
        return subprocess.Popen(
            [str(BIN / "ray-apps"), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill_service(self, name: str) -> None:
        """Kill one of the stack's services (SIGKILL); ``stack up`` brings it back."""
        pids = json.loads((self.settings.state_dir / PIDS_FILE).read_text())
        pid = pids[name]["pid"]
        os.kill(pid, signal.SIGKILL)
        while processes.is_running(pid):
            time.sleep(0.2)

    def restart_service(self, name: str) -> None:
        """Kill one of the stack's services (SIGKILL) and bring it back with ``stack up``."""
        self.kill_service(name)
        self.ok("stack", "up")

    def job_env(self) -> dict[str, str]:
        """This stack's environment plus what `ray-apps stack env` exports for `ray job`."""
        env = dict(self.env)
        for line in self.ok("stack", "env").splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        return env

    def records(self, *args: str) -> list[dict]:
        """JSON records of ``ray-apps data --json ARGS``."""
        return [
            json.loads(line)
            for line in self.ok("data", "--json", *args).splitlines()
            if line.strip()
        ]


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    running = Stack(stack_overrides(tmp_path_factory.mktemp("stack") / "state"))
    up = running.cli("stack", "up")
    if up.returncode != 0:
        running.cli("stack", "down")
        pytest.fail(f"stack up failed:\n{up.stdout}\n{up.stderr}")
    yield running
    down = running.cli("stack", "down")
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def redis_settings(tmp_path_factory) -> Settings:
    """A Redis of its own (the online store alone, not the stack) for one test module."""
    settings = Settings(**redis_only_overrides(tmp_path_factory.mktemp("redis-stack")))
    stack_up(settings, echo=lambda _: None)
    yield settings
    stack_down(settings, echo=lambda _: None)

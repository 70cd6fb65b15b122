import json
import subprocess
import sys

import psutil
import pytest

from ray_apps._private import processes
from ray_apps.config import Settings
from ray_apps.stack import stack_down, stack_status
from ray_apps.stack.manager import PIDS_FILE


@pytest.fixture
def sleeper():
    """An unrelated process: started the ordinary way, not by the stack."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def record(state_dir, **pids: int) -> None:
    """A stack.json naming these pids, with their true start times (the format `up` writes)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    entries = {
        name: {"pid": pid, "create_time": processes.create_time(pid)} for name, pid in pids.items()
    }
    (state_dir / PIDS_FILE).write_text(json.dumps(entries))


def test_down_leaves_an_unrelated_process_on_a_recorded_pid_alone(sleeper, tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    record(settings.state_dir, redis=sleeper.pid)
    said = []
    stack_down(settings, echo=said.append)
    assert sleeper.poll() is None, "stack down killed a process it did not start"
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE
    assert said == [f"redis   left alone: pid {sleeper.pid} is not one this stack started"]
    assert not (settings.state_dir / PIDS_FILE).exists()


def test_status_does_not_count_an_unrelated_process_as_the_service(sleeper, tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    record(settings.state_dir, redis=sleeper.pid)
    redis_row = next(row for row in stack_status(settings) if row.name == "redis")
    assert redis_row.state == "stopped" and redis_row.pid is None


def test_down_stops_a_process_the_stack_spawned(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    command = [sys.executable, "-c", "import time; time.sleep(300)"]
    log = settings.state_dir / "logs" / "redis.log"
    pid = processes.spawn(command, {}, log, settings.state_dir)
    record(settings.state_dir, redis=pid)
    stack_down(settings, echo=lambda line: None)
    assert not processes.is_running(pid)

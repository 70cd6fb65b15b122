"""Starting, finding and stopping the local stack's processes, and probing ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(cmd: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path) -> int:
    """Start ``cmd`` in its own session with output appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {cmd[0]}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def is_running(pid: int, create_time: float | None = None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and, if given, started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def is_ours(pid: int, create_time: float, home: Path) -> bool:
    """Whether ``pid`` is still the process ``spawn`` started with ``cwd=home``.

    A recorded pid and start time alone do not prove it: the record may be stale or copied. The
    process must also lead its own session (``spawn`` starts one) and run in ``home`` or a folder
    under it (a service may change into its data folder), so an unrelated process is never
    taken for ours and stopped.
    """
    if not is_running(pid, create_time):
        return False
    try:
        cwd = Path(psutil.Process(pid).cwd()).resolve()
        return os.getsid(pid) == pid and home.resolve() in (cwd, *cwd.parents)
    except (psutil.Error, OSError):
        return False


def create_time(pid: int) -> float:
    """Start time of ``pid``, recorded so a reused pid is never mistaken for ours."""
    return psutil.Process(pid).create_time()


def stop_group(pid: int, grace_s: float = 15.0) -> None:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace_s``."""
    members = _group_members(pid)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        if wait_until(lambda: not any(_alive(p) for p in members), wait_s, interval_s=0.1):
            return


def _alive(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has yet to reap it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_members(pid: int) -> list[psutil.Process]:
    """The leader and every descendant, including ones that left its process group."""
    try:
        leader = psutil.Process(pid)
    except psutil.Error:
        return []
    return [leader, *leader.children(recursive=True)]


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or an empty string if there is none."""
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def group_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and its descendants in MiB, or None if it is gone."""
    members = _group_members(pid)
    total = 0
    for proc in members:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20 if members else None

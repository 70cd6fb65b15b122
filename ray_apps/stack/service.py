"""What every service of the local stack provides to the stack manager."""

from __future__ import annotations

import os
import shutil
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from ray_apps.config import Settings
from ray_apps.errors import UserError


class Service(ABC):
    """One process of the local stack: how to start it, which ports it owns, how to probe it."""

    name: ClassVar[str]
    #: Names of services that must be healthy before this one starts.
    needs: ClassVar[tuple[str, ...]] = ()
    #: The setting that moves this service's main port, for error messages.
    port_setting: ClassVar[str]
    #: Seconds between SIGTERM and SIGKILL when the stack stops it.
    stop_grace_s: ClassVar[float] = 15.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def data_dir(self) -> Path:
        """Folder for this service's persistent data."""
        return self.settings.state_dir / self.name

    @property
    def log_path(self) -> Path:
        """File receiving the service's stdout and stderr."""
        return self.settings.state_dir / "logs" / f"{self.name}.log"

    @property
    @abstractmethod
    def managed(self) -> bool:
        """Whether ``stack up`` starts this service (false: an external one is configured)."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where users and clients reach the service (never with credentials)."""

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every port the service listens on, by a short label."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the service in the foreground."""

    @abstractmethod
    def healthy(self) -> bool:
        """One health probe: true when the service answers as it should."""

    def prepare(self) -> None:
        """Create folders and config files the service needs before it starts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """Environment of the service process."""
        return dict(os.environ)

    def after_start(self) -> None:  # noqa: B027 - optional hook, most services need nothing
        """Work to do once the service is healthy (e.g. create buckets)."""


def find_binary(name: str, hint: str) -> str:
    """Path of an executable from the venv or PATH, or a user error saying how to install it."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"{name} not found on PATH; {hint}")
    return found


def venv_path_env() -> dict[str, str]:
    """The current environment with this interpreter's ``bin`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env

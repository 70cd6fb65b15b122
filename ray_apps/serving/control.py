"""Starting, stopping and watching the Serve application (``ray-apps serve up|down|status``)."""

from __future__ import annotations

import json
import os
import secrets

from pydantic import BaseModel, SecretStr
from ray import serve

from ray_apps.config import SECRETS_FILE, Settings, read_secrets
from ray_apps.errors import UserError
from ray_apps.serving.app import build_application

ADMIN_KEY_SECRET = "serve_admin_key"
"""The entry of ``<state_dir>/secrets.json`` holding a generated admin key."""


class ServeStatus(BaseModel):
    """The application's state and where it answers."""

    url: str
    status: str
    deployments: dict[str, str]
    message: str = ""

    def render(self) -> str:
        """The lines ``ray-apps serve status`` prints."""
        lines = [f"{self.url}: {self.status}{' (' + self.message + ')' if self.message else ''}"]
        lines += [f"  {name}: {state}" for name, state in sorted(self.deployments.items())]
        return "\n".join(lines)


def serve_url(settings: Settings) -> str:
    """The application's base URL."""
    return f"http://{settings.serve.host}:{settings.serve.port}"


def ensure_admin_key(settings: Settings) -> str:
    """Generates the admin key into the state folder (mode 600) when none is configured.

    Returns:
        where the key is: the setting, or the secrets file.
    """
    if settings.serve.admin_key is not None:
        return "RAY_APPS_SERVE__ADMIN_KEY"
    path = settings.state_dir / SECRETS_FILE
    generated = read_secrets(settings.state_dir)
    generated[ADMIN_KEY_SECRET] = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file was there with another mode
    with os.fdopen(fd, "w") as fh:
        json.dump(generated, fh)
    settings.serve.admin_key = SecretStr(generated[ADMIN_KEY_SECRET])
    return f"{path} ({ADMIN_KEY_SECRET})"


def serve_up(settings: Settings) -> str:
    """Starts (or updates) the application on the connected cluster; returns what to print."""
    where = ensure_admin_key(settings)
    cfg = settings.serve
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    try:
        serve.run(build_application(settings), name=cfg.app_name, route_prefix="/")
    except RuntimeError as error:  # Serve's "Deploying application ... failed: ..."
        raise UserError(
            f"serve up: {str(error).strip().splitlines()[0]}; the replicas' errors are in "
            f"the Serve logs under {settings.state_dir}"
        ) from None
    url = serve_url(settings)
    return f"serving {cfg.model_name} at {url} (OpenAPI at {url}/docs); canary admin key in {where}"


def serve_down(settings: Settings) -> str:
    """Deletes the application, and Serve itself when no other application is left."""
    name = settings.serve.app_name
    applications = serve.status().applications
    if name in applications:
        serve.delete(name)
    if not set(applications) - {name}:
        serve.shutdown()
    return f"stopped {name}" if name in applications else f"{name} was not running"


def serve_status(settings: Settings) -> ServeStatus:
    """The application's status and its deployments'."""
    name = settings.serve.app_name
    app = serve.status().applications.get(name)
    if app is None:
        return ServeStatus(
            url=serve_url(settings),
            status="NOT_RUNNING",
            deployments={},
            message="start it with `ray-apps serve up`",
        )
    return ServeStatus(
        url=serve_url(settings),
        status=str(app.status),
        deployments={n: str(d.status) for n, d in app.deployments.items()},
        message=app.message,
    )

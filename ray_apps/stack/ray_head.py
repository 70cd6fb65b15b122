"""The Ray head: token authentication on, everything bound to loopback."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import requests
from typing_extensions import override

from ray_apps.config import ENV_PREFIX, LOOPBACK, OTHER_VARIABLES, ServeSettings
from ray_apps.stack.service import Service, find_binary, venv_path_env

GIB = 1024**3
#: Variables of the caller that must not reach every Ray worker.
_CREDENTIAL_VARIABLES = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
)


class RayHead(Service):
    """Compute: jobs, Tune sweeps, Serve, Ray Data; the dashboard at 127.0.0.1:8265."""

    name = "ray"
    port_setting = "RAY_APPS_RAY__PORT"
    stop_grace_s = 5.0  # its components exit on SIGTERM; `ray start --block` itself hangs

    @override
    @property
    def managed(self) -> bool:
        return self.settings.ray.managed

    @override
    @property
    def url(self) -> str:
        return self.settings.dashboard_url

    @property
    def temp_dir(self) -> Path:
        """Ray's session folder: short (socket paths are limited), one per state folder."""
        digest = hashlib.sha1(str(self.settings.state_dir).encode()).hexdigest()[:10]
        return Path("/tmp") / f"ray-apps-{digest}"

    @override
    def ports(self) -> dict[str, int]:
        cfg = self.settings.ray
        return {
            "gcs": cfg.port,
            "dashboard": cfg.dashboard_port,
            "client server": cfg.client_server_port,
            "dashboard agent": cfg.dashboard_agent_listen_port,
        }

    @override
    def prepare(self) -> None:
        super().prepare()
        token_path = self.settings.ray_token_path
        if not token_path.is_file():
            token_path.write_text(secrets.token_hex(32))
        os.chmod(token_path, 0o600)

    @override
    def command(self) -> list[str]:
        cfg = self.settings.ray
        cmd = [
            find_binary("ray", "reinstall the project (pip package ray)"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            LOOPBACK,
            "--port",
            str(cfg.port),
            "--dashboard-host",
            LOOPBACK,
            "--dashboard-port",
            str(cfg.dashboard_port),
            "--ray-client-server-port",
            str(cfg.client_server_port),
            "--dashboard-agent-listen-port",
            str(cfg.dashboard_agent_listen_port),
            "--min-worker-port",
            str(cfg.min_worker_port),
            "--max-worker-port",
            str(cfg.max_worker_port),
            "--object-store-memory",
            str(int(cfg.object_store_memory_gb * GIB)),
            "--temp-dir",
            str(self.temp_dir),
            "--disable-usage-stats",
        ]
        if cfg.num_cpus is not None:
            cmd += ["--num-cpus", str(cfg.num_cpus)]
        return cmd

    @override
    def env(self) -> dict[str, str]:
        """The head's environment, inherited by every worker and job driver.

        The venv's ``bin`` goes first so a job's ``python`` is the venv's; every setting but the
        credentials goes along as ``RAY_APPS_`` variables, so jobs and actors see the same
        configuration. No credential is in it: a process that needs one reads it from the state
        folder (``load_settings``) or gets a client built with it (Tune's S3 filesystem); MLflow
        artifacts go through the MLflow server's proxy. The caller's ``AWS_*`` keys and its
        ``RAY_APPS_`` variables (credentials among them) are dropped: the settings they made are
        passed on without the credentials, and a job reads those from the state folder or the
        ``RAY_APPS_CONFIG`` file.
        """
        env = {
            key: value
            for key, value in venv_path_env().items()
            if key not in _CREDENTIAL_VARIABLES
            and (not key.startswith(ENV_PREFIX) or key in OTHER_VARIABLES)
        }
        env |= self.settings.ray_env()
        env |= serve_env(self.settings.serve)
        env |= self.settings.public_env()
        env["MLFLOW_TRACKING_URI"] = self.settings.mlflow.uri
        if "RAY_APPS_CONFIG" in env:  # credentials given in the file still reach the workers
            env["RAY_APPS_CONFIG"] = str(Path(env["RAY_APPS_CONFIG"]).resolve())
        return env

    @override
    def healthy(self) -> bool:
        token = self.settings.ray_token_path.read_text().strip()
        reply = requests.get(
            f"{self.url}/api/version", timeout=2, headers={"Authorization": f"Bearer {token}"}
        )
        return reply.status_code == 200


DIRECT_INGRESS_DRAIN_S = 2
"""How long a stopping direct-ingress replica keeps answering (Serve's default, 30 s, gives a
cloud load balancer time to drop it; on the local stack nothing sits in front of it)."""


def serve_env(serve: ServeSettings) -> dict[str, str]:
    """Ray Serve's variables for the head, read by its controller and replicas at start.

    Replicas run their methods on the replica's own event loop rather than a second thread
    (`RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0`; sync methods still go to a thread pool):
    on 2 cores it saved the hop between the two loops, 1.6x the requests per second through
    direct ingress (bench/serve.py). With ``serve.direct_ingress`` each ingress replica runs
    its own HTTP server on ``serve.host`` and a port from ``serve.direct_ingress_port`` up; a
    released port is reused at once (no quarantine: there is no HAProxy to drain), so a
    replaced replica usually takes its predecessor's port.
    """
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    if not serve.direct_ingress:
        return env
    ports = serve.direct_ingress_ports
    return env | {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(ports.start),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(ports.stop - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DIRECT_INGRESS_DRAIN_S),
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }

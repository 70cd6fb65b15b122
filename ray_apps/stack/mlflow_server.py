"""The MLflow tracking server: sqlite backend, artifacts proxied to the S3 server."""

from __future__ import annotations

import sys

import requests
from typing_extensions import override

from ray_apps.config import LOOPBACK
from ray_apps.stack.service import Service
from ray_apps.stores.objects import s3_env


class MlflowServer(Service):
    """Experiment tracking and the model registry."""

    name = "mlflow"
    needs = ("s3",)
    port_setting = "RAY_APPS_MLFLOW__PORT"

    @override
    @property
    def managed(self) -> bool:
        return self.settings.mlflow.managed

    @override
    @property
    def url(self) -> str:
        return self.settings.mlflow.uri

    @override
    def ports(self) -> dict[str, int]:
        return {"mlflow": self.settings.mlflow.port}

    @override
    def command(self) -> list[str]:
        cfg = self.settings.mlflow
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(cfg.port),
            "--workers",
            str(cfg.workers),
            "--backend-store-uri",
            f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{self.settings.s3.artifacts_bucket}/artifacts",
        ]

    @override
    def env(self) -> dict[str, str]:
        enabled = "true" if self.settings.mlflow.job_execution else "false"
        return (
            super().env() | s3_env(self.settings) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": enabled}
        )

    @override
    def healthy(self) -> bool:
        return requests.get(f"{self.url}/health", timeout=2).status_code == 200

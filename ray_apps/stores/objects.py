"""The object store (S3: SeaweedFS locally, MinIO or any S3 in production) and its clients.

Credentials go only where a client is built from the settings: nothing here puts them in a
process environment except ``s3_env``, which the services that need them (the broker, the MLflow
server) get. Ray workers reach S3 through a filesystem object handed to them (Tune's storage) or
through the MLflow server's artifact proxy, never through their environment.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pyarrow.fs
from minio import Minio
from minio.error import S3Error

from ray_apps.config import Settings
from ray_apps.errors import UserError

_AUTH_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}


def object_store_client(settings: Settings) -> Minio:
    """A MinIO SDK client for the configured S3 endpoint.

    Raises:
        UserError: no credentials are configured or generated yet.
    """
    s3 = settings.s3
    access_key, secret_key = _credentials(settings)
    endpoint = urlparse(s3.url)
    return Minio(
        endpoint.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=endpoint.scheme == "https",
        region=s3.region,
    )


def s3_filesystem(settings: Settings) -> pyarrow.fs.S3FileSystem:
    """A pyarrow filesystem on the configured S3 endpoint (it carries the keys when pickled)."""
    s3 = settings.s3
    endpoint = urlparse(s3.url)
    return pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme or "http",
        access_key=s3.access_key.get_secret_value() if s3.access_key else None,
        secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
        region=s3.region,
    )


def s3_env(settings: Settings) -> dict[str, str]:
    """Environment for a process whose own S3 client reads it (boto3, MLflow's server, tansu)."""
    s3 = settings.s3
    if s3.access_key is None or s3.secret_key is None:
        return {}
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": s3.secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": s3.region,
        "MLFLOW_S3_ENDPOINT_URL": s3.url,
    }


def ensure_buckets(settings: Settings) -> None:
    """Create the platform's buckets where missing; wrong credentials are a user error."""
    client = object_store_client(settings)
    try:
        for bucket in settings.s3.buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
    except S3Error as exc:
        if exc.code in _AUTH_ERRORS:
            raise UserError(
                f"s3: {settings.s3.url} rejected the credentials ({exc.code}); check "
                "RAY_APPS_S3__ACCESS_KEY and RAY_APPS_S3__SECRET_KEY"
            ) from exc
        raise


def _credentials(settings: Settings) -> tuple[str, str]:
    s3 = settings.s3
    if s3.access_key is None or s3.secret_key is None:
        raise UserError(
            "no S3 credentials: run `ray-apps stack up` or set RAY_APPS_S3__ACCESS_KEY "
            "and RAY_APPS_S3__SECRET_KEY"
        )
    return s3.access_key.get_secret_value(), s3.secret_key.get_secret_value()

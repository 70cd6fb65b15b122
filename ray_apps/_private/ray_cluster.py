"""Connecting a driver to the platform's Ray cluster with its auth token."""

from __future__ import annotations

import os

import ray
from ray._private import ray_constants
from ray._raylet import AuthenticationTokenLoader, Config

from ray_apps._private.processes import port_accepts
from ray_apps.config import Settings
from ray_apps.errors import UserError


def connect_ray(settings: Settings, log_to_driver: bool = True) -> None:
    """Connect this process to the cluster (no-op when already connected, e.g. inside a job).

    Args:
        settings: the platform settings.
        log_to_driver: print the logs of this driver's tasks and actors (and, for Serve, of
            every replica) here.

    Raises:
        UserError: the head is not reachable or refuses the token.
    """
    if ray.is_initialized():
        return
    if "RAY_ADDRESS" in os.environ and os.environ.get("RAY_JOB_ID"):
        address = None  # a submitted job: the job supervisor set the address
    else:
        address = settings.ray_address
        host, _, port = address.rpartition(":")
        if not port_accepts(int(port), host):
            raise UserError(
                f"the Ray head at {address} is not reachable; run `ray-apps stack up`"
                " (or set RAY_APPS_RAY__ADDRESS)"
            )
        if settings.ray.managed and not settings.ray_token_path.is_file():
            raise UserError(
                f"no Ray auth token at {settings.ray_token_path}; "
                "was the stack started with another state folder?"
            )
    os.environ.update(settings.ray_env())  # only once the head is known to be there
    # Ray reads these variables when it is first imported; make it read them again, as Ray's
    # own test utilities do. Without the first, Ray 2.60 rewrites a loopback address to the
    # machine's network address.
    if settings.ray.managed:
        ray_constants.ENABLE_RAY_CLUSTER = False
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        ray.init(
            address=address,
            namespace=settings.ray.namespace,
            log_to_driver=log_to_driver,
            logging_level="WARNING",
        )
    except (ray.exceptions.AuthenticationError, ConnectionError) as exc:
        raise UserError(
            f"the Ray head at {address} refused the connection: {str(exc).splitlines()[0]}"
        ) from exc


def direct_ingress_urls(app_name: str) -> list[str]:
    """Where a Serve application's ingress replicas answer HTTP themselves (direct ingress).

    Reads the Serve controller's target groups (a private API, hence here). Empty when direct
    ingress is off (the groups are then Serve's proxies) or no ingress replica is running yet.

    Args:
        app_name: the Serve application.
    """
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    groups = ray.get(controller.get_target_groups.remote(app_name))
    return sorted(
        f"http://{target.ip}:{target.port}"
        for group in groups
        if group.app_name == app_name and group.protocol == RequestProtocol.HTTP
        for target in group.targets
    )

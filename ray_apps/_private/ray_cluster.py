"""Connecting a driver to the platform's Ray cluster with its auth token."""

from __future__ import annotations

import collections
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


def require_task_cpus(need: float, work: str) -> None:
    """Refuses work whose tasks could never start, instead of letting them wait for ever.

    Ray holds an actor's CPUs for as long as it lives: the Serve replicas and stream consumers
    of a running stack keep theirs. A task asking for more CPUs than the cluster has, or than
    its live actors leave, would wait without end and without a word. CPUs held by other jobs'
    tasks come back when those end, so such work waits for them as Ray does.

    Args:
        need: CPUs one task of the work asks for.
        work: what is refused, for the message (e.g. ``features compute --engine ray``).

    Raises:
        UserError: one task needs more CPUs than the cluster has, or than its live actors leave.
    """
    total = ray.cluster_resources().get("CPU", 0.0)
    if need > total:
        raise UserError(f"{work}: a task asks for {need:g} CPU(s), the cluster has {total:g}")
    holders = _actor_cpus()
    held = sum(holders.values())
    if total - held < need:
        names = ", ".join(f"{name} {cpus:g}" for name, cpus in holders.most_common(4))
        raise UserError(
            f"{work}: a task asks for {need:g} CPU(s) and running actors hold {held:g} of the "
            f"cluster's {total:g} ({names}); stop some (`ray-apps serve down`, `ray-apps "
            "stream stop`) or give Ray more CPUs (RAY_APPS_RAY__NUM_CPUS, then `ray-apps stack "
            "down` and `up`)"
        )


def _actor_cpus() -> collections.Counter[str]:
    """CPUs held by the cluster's live actors, per actor class (empty if Ray cannot say)."""
    from ray.util.state import list_actors  # the state API: imported only when asked

    try:
        actors = list_actors(
            address=ray.get_runtime_context().gcs_address,
            filters=[("state", "=", "ALIVE")],
            detail=True,
            limit=10_000,
            timeout=10,
        )
    except Exception:  # no dashboard to ask (e.g. a bare local Ray): let Ray schedule as usual
        return collections.Counter()
    held: collections.Counter[str] = collections.Counter()
    for actor in actors:
        cpus = (actor.required_resources or {}).get("CPU", 0.0)
        if cpus:
            held[actor.class_name] += cpus
    return held


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

"""The local stack: real services on 127.0.0.1, each in the state folder."""

from ray_apps.stack.manager import ServiceStatus, stack_down, stack_env, stack_status, stack_up

__all__ = ["ServiceStatus", "stack_down", "stack_env", "stack_status", "stack_up"]

"""A handler module that builds its own ``workers.Registry`` (``--app apps.basic_registry:registry``)."""

from __future__ import annotations

from workers import Registry, Task

registry = Registry()


def shout(task: Task) -> str:
    """Upper-case the payload."""
    return str(task.payload).upper()


registry.register("basic.shout", shout)

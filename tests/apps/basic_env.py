"""A handler module named by ``DISPATCHER_APP`` in the app discovery tests."""

from __future__ import annotations

from workers import Task, handler


@handler("basic.from_env")
def from_env(task: Task) -> str:
    """Say where the app came from."""
    return f"env:{task.payload}"

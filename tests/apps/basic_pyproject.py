"""A handler module named by ``[tool.agent-dispatcher] app`` in a pyproject.toml (app discovery tests)."""

from __future__ import annotations

from workers import Task, handler


@handler("basic.from_pyproject")
async def from_pyproject(task: Task) -> str:
    """Say where the app came from."""
    return f"pyproject:{task.payload}"

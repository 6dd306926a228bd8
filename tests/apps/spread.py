"""Handlers for the cluster tests (``--app apps.spread``): capabilities whose slots fall on each of the three
primaries of a 3-primary cluster (cap1: slot 126, cap2: 12317, cap3: 8252), plus a failing one."""

from __future__ import annotations

from typing import Any

from workers import Task, handler

CAPABILITIES = ("cap1", "cap2", "cap3")


@handler("cap1")
def cap1(task: Task) -> Any:
    """The payload back."""
    return task.payload


@handler("cap2")
def cap2(task: Task) -> Any:
    """The payload back."""
    return task.payload


@handler("cap3")
def cap3(task: Task) -> Any:
    """The payload back."""
    return task.payload


@handler("fails")
def fails(task: Task) -> Any:
    """Always raises: retried, then a dead letter."""
    raise RuntimeError(f"failing on purpose: {task.payload!r}")

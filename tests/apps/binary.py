"""Handlers whose results JSON cannot hold as such (``--app apps.binary``), for the CLI's JSON form of values."""

from __future__ import annotations

from typing import Any

from workers import Task, handler


@handler("binary.blob")
def blob(task: Task) -> Any:
    """Bytes at the top, inside a list and a map, and as a map key: ``{"raw": ..., "list": [...], "keyed": ...}``."""
    return {"raw": b"\x00\xffbin", "list": [b"a", 1], "keyed": {b"k": b"v"}, "nan": float("nan")}


@handler("binary.bytes")
def raw_bytes(task: Task) -> bytes:
    """The payload (a string) as UTF-8 bytes."""
    return str(task.payload).encode()

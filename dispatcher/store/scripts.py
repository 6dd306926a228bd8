"""Loads the Lua scripts (one file per atomic transition) and maps their return codes to outcomes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script by name, with its source and SHA1 for EVALSHA."""

    name: str
    source: bytes
    sha: str


@cache
def script(name: str) -> Script:
    """The script ``dispatcher/lua/<name>.lua`` (read once, on first use)."""
    source = resources.files("dispatcher.store").joinpath("lua", f"{name}.lua").read_bytes()
    return Script(name, source, hashlib.sha1(source, usedforsecurity=False).hexdigest())


def source_by_sha(sha: str) -> bytes | None:
    """The source of an already-loaded script with this SHA1, to answer NOSCRIPT."""
    for name in NAMES:
        if script(name).sha == sha:
            return script(name).source
    return None


NAMES = ("submit", "settle", "settle_many", "retry", "bury", "promote", "lease", "forget", "requeue")


def call(name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
    """The EVALSHA command that runs script ``name`` with ``keys`` and ``args``."""
    return ("EVALSHA", script(name).sha, len(keys), *keys, *args)


class Settle(Enum):
    """What a settle, retry or bury script did."""

    DONE = "done"
    LEASE_LOST = "lease_lost"
    OWNER_ALIVE = "owner_alive"


def settle_outcome(reply: Any) -> Settle:
    """Map a settle/retry/bury reply (0, 1, 2, or a new entry id / "d") to a ``Settle``."""
    if reply == 0:
        return Settle.LEASE_LOST
    if reply == 2:
        return Settle.OWNER_ALIVE
    return Settle.DONE

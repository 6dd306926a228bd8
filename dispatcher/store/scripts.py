"""Loads the Lua scripts (one file per atomic transition) and builds their EVALSHA calls.

A script may share code with others through ``-- @include <file>.lua`` lines, each replaced by the text of
``lua/include/<file>.lua`` when the script is loaded (BullMQ's ``includes/`` work the same way): the owner check,
the entry layout, the delayed record and the storing of a result are each written once. What the scripts reply is
decoded in ``dispatcher.store.wire``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

NAMES = (
    "submit",
    "settle",
    "retry",
    "bury",
    "promote",
    "lease",
    "forget",
    "requeue",
    "drop",
    "admit",
    "take",
    "admit_fair",
    "peek_fair",
    "count_permits",
    "rejoin",
)
_INCLUDE = re.compile(rb"^-- @include ([a-z_]+\.lua)\n", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script by name, with its source (includes expanded) and SHA1 for EVALSHA."""

    name: str
    source: bytes
    sha: str


def _text(*path: str) -> bytes:
    return resources.files("dispatcher.store").joinpath("lua", *path).read_bytes()


def expand(source: bytes) -> bytes:
    """``source`` with every ``-- @include`` line replaced by the included file (which includes nothing)."""
    return _INCLUDE.sub(lambda m: _text("include", m.group(1).decode()), source)


@cache
def script(name: str) -> Script:
    """The script ``lua/<name>.lua`` (read and expanded once, on first use)."""
    source = expand(_text(f"{name}.lua"))
    return Script(name, source, hashlib.sha1(source, usedforsecurity=False).hexdigest())


_PUBLISH = b"redis.call('PUBLISH', "


@cache
def sharded(name: str) -> Script:
    """The variant of script ``name`` that a Redis Cluster runs: it announces with ``SPUBLISH`` (sharded pub/sub,
    kept on the shard of the channel's ``{C}`` slot) where the plain one uses ``PUBLISH`` (broadcast to every
    node of a cluster). The same script for a script that publishes nothing."""
    plain = script(name)
    if _PUBLISH not in plain.source:
        return plain
    source = plain.source.replace(_PUBLISH, b"redis.call('SPUBLISH', ")
    return Script(name, source, hashlib.sha1(source, usedforsecurity=False).hexdigest())


@cache
def sharded_sha(sha: str) -> str:
    """The SHA1 of the sharded variant of the script with SHA1 ``sha`` (``sha`` itself when unknown)."""
    return next((sharded(name).sha for name in NAMES if script(name).sha == sha), sha)


def source_by_sha(sha: str) -> bytes | None:
    """The source of an already-loaded script (or of its sharded variant) with this SHA1, to answer NOSCRIPT."""
    for name in NAMES:
        for variant in (script(name), sharded(name)):
            if variant.sha == sha:
                return variant.source
    return None


def name_by_sha(sha: str) -> str:
    """The name of the script with this SHA1 (for error messages), or the SHA itself."""
    return next((name for name in NAMES if sha in (script(name).sha, sharded(name).sha)), sha)


def call(name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
    """The EVALSHA command that runs script ``name`` with ``keys`` and ``args``."""
    return ("EVALSHA", script(name).sha, len(keys), *keys, *args)

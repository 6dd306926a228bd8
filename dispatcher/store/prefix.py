"""Operations on a whole key prefix: whether it holds any key, and deleting all of its keys (SCAN + UNLINK).

For a prefix the caller owns outright, such as the demo's own ``demo-<random>``: ``delete_all`` removes whatever
lives under the prefix, whoever wrote it. Never on a hot path: SCAN walks the server's whole keyspace. On Redis
Cluster SCAN covers one node only; these operations are for a single server.
"""

from __future__ import annotations

from typing import Any

from dispatcher.store.gateway import Op, check, text
from dispatcher.store.keys import KeySpace

SCAN_COUNT = 1000


def _scan_reply(reply: Any) -> tuple[int, list[str]]:
    cursor, names = check(reply)
    return int(cursor), [text(n) for n in names]


def holds_keys(keyspace: KeySpace) -> Op[bool]:
    """Whether any key lives under ``keyspace``'s prefix (stops at the first one found)."""
    cursor = 0
    while True:
        cursor, names = _scan_reply((yield [("SCAN", cursor, "MATCH", keyspace.pattern, "COUNT", SCAN_COUNT)])[0])
        if names:
            return True
        if cursor == 0:
            return False


def delete_all(keyspace: KeySpace) -> Op[int]:
    """Delete every key under ``keyspace``'s prefix with SCAN MATCH and UNLINK; returns how many were deleted.

    Only for a prefix the caller owns: nothing else may be kept under it. A key written while the scan runs may
    be missed; call it once the writers have stopped.
    """
    cursor, deleted = 0, 0
    while True:
        cursor, names = _scan_reply((yield [("SCAN", cursor, "MATCH", keyspace.pattern, "COUNT", SCAN_COUNT)])[0])
        if names:
            deleted += int(check((yield [("UNLINK", *names)])[0]))
        if cursor == 0:
            return deleted

"""Reading several capability streams on a Redis Cluster, where one XREADGROUP over several slots is CROSSSLOT.

``read`` sends one non-blocking XREADGROUP per stream in one batch: the cluster pipeline groups them by node, so
a read over C capabilities costs one round trip per node that owns some of them (sent concurrently by the
asyncio client), not C. When every stream came back empty and the caller wanted to block, it blocks on one stream
only, for at most ``SHORT_BLOCK_MS``, then returns: a worker with 50 capabilities holds one connection per node
and one blocked read at a time, never 50. The blocking stream rotates (``block_on``), so each stream in turn wakes
the reader at once; a task on another stream waits at most one short block. An idle worker with C capabilities
thus sends about C / (SHORT_BLOCK_MS / 1000) reads per second (measured in docs/scaling.md).

The single-server path keeps ``streams.read``: one blocking XREADGROUP over every stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.store.codec import Fields
from dispatcher.store.gateway import Op, is_error
from dispatcher.store.streams import ensure_groups, read_command, read_reply

SHORT_BLOCK_MS = 100
"""Longest block on one stream when a read over several found nothing."""

Replies = list[tuple[str, list[tuple[str, Fields | None]]]]


def read(
    streams: Sequence[str],
    consumer: str,
    count: int,
    block_ms: int | None,
    after: Sequence[str] | None = None,
    block_on: int = 0,
) -> Op[Replies]:
    """``streams.read`` for a cluster: the same arguments and reply, one command per stream.

    ``block_on`` picks (modulo the count of streams) the stream a blocking read waits on once all were empty.
    """
    commands = [
        read_command([s], consumer, count, None, None if after is None else [after[i]]) for i, s in enumerate(streams)
    ]
    replies = yield commands
    out: Replies = []
    missing = [s for s, r in zip(streams, replies, strict=True) if is_error(r, "NOGROUP")]
    for reply in replies:
        if not is_error(reply, "NOGROUP"):
            out += read_reply(reply)
    if missing:
        yield from ensure_groups(missing)
        return out
    if out or block_ms is None or after is not None or not streams:
        return out
    stream = streams[block_on % len(streams)]
    reply = (yield [read_command([stream], consumer, count, min(block_ms, SHORT_BLOCK_MS))])[0]
    if is_error(reply, "NOGROUP") or is_error(reply, "UNBLOCKED"):
        yield from ensure_groups([stream])
        return []
    return read_reply(reply)

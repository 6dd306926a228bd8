"""The result listener's pub/sub on a Redis Cluster: sharded pub/sub (``SSUBSCRIBE``), one connection per shard.

On a cluster the settlement scripts announce with ``SPUBLISH`` (``store/scripts.py`` ``sharded``), which keeps a
message on the shard that owns the channel's ``{C}`` slot instead of broadcasting it to every node. A listener
then holds one connection per shard it waits on: redis-py's ``ClusterPubSub`` opens one per node as channels of
that node are subscribed (and follows a channel whose slot moved). These adapters give it the face the listeners
use (``subscribe``, ``unsubscribe``, ``get_message`` whose messages read ``message`` / ``subscribe``), so
``listener.py`` and ``aio_listener.py`` drive it as they drive a plain ``PubSub``.

redis-py's ``get_sharded_message(timeout)`` waits on each node's connection in turn; a long wait on one node would
delay a message on another, so each call here waits at most ``SLICE_S`` per node and loops until its timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio.cluster
import redis.cluster

SLICE_S = 0.01
"""Longest wait on one shard's connection before looking at the next."""
_KINDS = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


def _plain(message: dict[str, Any] | None) -> dict[str, Any] | None:
    if message is None:
        return None
    kind = message.get("type")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    return {**message, "type": _KINDS.get(str(kind), kind)}


class ShardedPubSub:
    """Sync sharded pub/sub over a ``redis.RedisCluster``."""

    connection = None
    """No single connection (``Listener.close`` disconnects ``close``-ing this instead)."""

    def __init__(self, client: redis.RedisCluster) -> None:
        self._pubsub: redis.cluster.ClusterPubSub = client.pubsub()

    def subscribe(self, *channels: str) -> None:
        self._pubsub.ssubscribe(*channels)

    def unsubscribe(self, *channels: str) -> None:
        self._pubsub.sunsubscribe(*channels)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._pubsub.node_pubsub_mapping:  # nothing subscribed: nothing to wait on
                time.sleep(min(SLICE_S, max(deadline - time.monotonic(), 0.0)))
                message = None
            else:
                message = self._pubsub.get_sharded_message(timeout=SLICE_S)
            if message is not None or time.monotonic() >= deadline:
                return _plain(message)

    def close(self) -> None:
        for node_pubsub in list(self._pubsub.node_pubsub_mapping.values()):
            node_pubsub.close()
        self._pubsub.close()


class AsyncShardedPubSub:
    """The asyncio twin of ``ShardedPubSub``, over a ``redis.asyncio.RedisCluster``."""

    def __init__(self, client: redis.asyncio.RedisCluster) -> None:
        self._pubsub: redis.asyncio.cluster.ClusterPubSub = client.pubsub()

    async def subscribe(self, *channels: str) -> None:
        await self._pubsub.ssubscribe(*channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._pubsub.sunsubscribe(*channels)

    async def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._pubsub.node_pubsub_mapping:
                await asyncio.sleep(min(SLICE_S, max(deadline - time.monotonic(), 0.0)))
                message = None
            else:
                message = await self._pubsub.get_sharded_message(timeout=SLICE_S)
            if message is not None or time.monotonic() >= deadline:
                return _plain(message)

    async def aclose(self) -> None:
        await self._pubsub.aclose()

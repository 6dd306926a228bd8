"""``wait_replicas``: a submit that returns only once N replicas hold its writes (``WAIT N timeout``).

Replication is asynchronous: a primary that fails right after it answered a submit can lose that submit when a
replica takes over. ``WAIT`` narrows that window: it blocks until ``N`` replicas acknowledged every write the
*same connection* made before it, or until its timeout, and answers how many did. So ``confirmed`` sends it in the
same round trip (one pipeline, one connection) as the submit's commands, after them: no extra round trip, the
cost is the wait for the replicas' acknowledgement. On a Redis Cluster, the gateway sends each node's share of the
batch and a ``WAIT`` through one connection to that node (``store/sharding.py``); the fewest confirmations count.

``WAIT`` does not make a failover lossless (a replica that acknowledged may not be the one promoted, and Redis
does not roll back a write that timed out): it makes a loss need two failures instead of one.
"""

from __future__ import annotations

from typing import TypeVar

from dispatcher.store.gateway import Op, check

T = TypeVar("T")


def wait_command(replicas: int, timeout_ms: int) -> tuple[str, int, int]:
    """The ``WAIT`` that follows a batch."""
    return ("WAIT", replicas, timeout_ms)


def confirmed(op: Op[T], replicas: int, timeout_ms: int) -> Op[tuple[T, int]]:
    """Run ``op``, each batch it sends followed by ``WAIT replicas timeout_ms``; returns its value and the fewest
    replicas any of those WAITs confirmed (``replicas`` when every WAIT was satisfied)."""
    fewest = replicas
    try:
        commands = next(op)
        while True:
            replies = yield [*commands, wait_command(replicas, timeout_ms)]
            fewest = min(fewest, int(check(replies[-1])))
            commands = op.send(replies[:-1])
    except StopIteration as stop:
        return stop.value, fewest

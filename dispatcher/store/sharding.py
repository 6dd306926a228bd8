"""How the gateway sends one batch of commands to a Redis Cluster (the single-server path never comes here).

redis-py's cluster pipeline groups keyed commands by the node that owns their slot and sends each group in one
round trip (the asyncio pipeline sends the groups concurrently), but it cannot place a command without a key
(``INFO``, ``TIME``, ``CONFIG GET``, ``SCRIPT LOAD``): those go one by one through the client, which routes each
by its command flags (``SCRIPT LOAD`` to every primary, so that a script is on whichever node runs it next).
Replies come back in the batch's order, failed ones as exception instances, as ``Gateway.send`` promises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import AskError, RedisClusterException

from dispatcher.store import scripts

KEYLESS = frozenset({"INFO", "TIME", "CONFIG", "SCRIPT", "PING", "WAIT", "CLUSTER", "DBSIZE"})
"""Commands we send that name no key."""


def sharded_calls(commands: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``commands`` with each EVALSHA naming the sharded variant of its script (``scripts.sharded``)."""
    return [(c[0], scripts.sharded_sha(c[1]), *c[2:]) if c[0] == "EVALSHA" else c for c in commands]


def split(commands: Sequence[tuple[Any, ...]]) -> tuple[list[int], list[int]]:
    """Positions of keyed and of keyless commands in ``commands``."""
    keyed: list[int] = []
    keyless: list[int] = []
    for i, command in enumerate(commands):
        (keyless if str(command[0]).upper() in KEYLESS else keyed).append(i)
    return keyed, keyless


def _args(command: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if command and isinstance(command[-1], dict):
        return command[:-1], dict(command[-1])  # a copy: the caller's dict may be shared (EACH_PRIMARY)
    return command, {}


def _keyless(command: tuple[Any, ...], primaries: Any, default: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A keyless command's arguments and its target nodes: every primary for ``SCRIPT`` and a command marked
    ``gateway.EACH_PRIMARY``, else the default node.
    Named as nodes, not as redis-py's flags: its routing by flag does not find two-word commands (``CONFIG
    GET``) sent as separate arguments."""
    args, options = _args(command)
    every = options.pop("each_primary", False) or str(args[0]).upper() == "SCRIPT"
    return args, {**options, "target_nodes": primaries if every else default}


def send(client: redis.RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` over a sync cluster client: keyed ones in one pipeline, keyless ones each on its own (a
    batch that ends with ``WAIT``: see ``send_then_wait``)."""
    if commands and str(commands[-1][0]).upper() == "WAIT":
        return send_then_wait(client, commands)
    keyed, keyless = split(commands)
    replies: list[Any] = [None] * len(commands)
    if keyed:
        pipe = client.pipeline()
        for i in keyed:
            args, options = _args(commands[i])
            pipe.execute_command(*args, **options)
        try:
            done = pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            _reread_slots_sync(client)  # see send_async
            raise
        for i, reply in zip(keyed, done, strict=True):
            replies[i] = reply
    for i in keyless:
        args, options = _keyless(commands[i], client.get_primaries(), client.get_default_node())
        try:
            replies[i] = client.execute_command(*args, **options)
        except redis.exceptions.ResponseError as e:
            replies[i] = e
    return replies


async def send_async(client: redis.asyncio.RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The asyncio twin of ``send``."""
    if commands and str(commands[-1][0]).upper() == "WAIT":
        return await send_then_wait_async(client, commands)
    keyed, keyless = split(commands)
    replies: list[Any] = [None] * len(commands)
    if keyed:
        pipe = client.pipeline()
        for i in keyed:
            args, options = _args(commands[i])
            pipe.execute_command(*args, **options)
        try:
            done = await pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # A node is gone (killed, failing over): read the slot map again, or every later pipeline goes to the
            # dead node (redis-py's pipeline leaves the map as it was; its plain commands re-read it themselves).
            await _reread_slots(client)
            raise
        for i, reply in zip(keyed, done, strict=True):
            replies[i] = reply
    if keyless:
        await client.initialize()  # the node table (a no-op once initialized)
    for i in keyless:
        args, options = _keyless(commands[i], client.get_primaries(), client.get_default_node())
        try:
            replies[i] = await client.execute_command(*args, **options)
        except redis.exceptions.ResponseError as e:
            replies[i] = e
    return replies


def send_then_wait(client: redis.RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send keyed ``commands`` whose last one is ``WAIT``: each node's share and a ``WAIT`` through one connection
    to that node (WAIT counts the writes of its own connection only); the reply of the ``WAIT`` is the fewest
    replicas any node confirmed. A node that answers MOVED or ASK (a failover or resharding since the slot map was
    read) makes the client read the map again before its next command."""
    *body, wait = commands
    nodes: dict[str, Any] = {}
    by_node: dict[str, list[int]] = {}
    for i, command in enumerate(body):
        slot = client.determine_slot(*_args(command)[0])
        assert slot is not None, f"{command[0]} names a key"
        node = client.nodes_manager.get_node_from_slot(slot)
        nodes[node.name] = node
        by_node.setdefault(node.name, []).append(i)
    replies: list[Any] = [None] * len(commands)
    confirmed: list[Any] = []
    for name, positions in by_node.items():
        pipe = nodes[name].redis_connection.pipeline(transaction=False)
        for i in positions:
            args, options = _args(body[i])
            pipe.execute_command(*args, **options)
        pipe.execute_command(*wait)
        try:
            got = pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            _reread_slots_sync(client)
            raise
        if _place(replies, positions, got):
            _reread_slots_sync(client)
        confirmed.append(got[-1])
    replies[-1] = _fewest(confirmed, wait)
    return replies


async def send_then_wait_async(client: redis.asyncio.RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The asyncio twin of ``send_then_wait``: the nodes' shares are sent concurrently, each with its ``WAIT`` on
    one connection of that node."""
    await client.initialize()  # the slot map (a no-op once initialized)
    *body, wait = commands
    nodes: dict[str, Any] = {}
    by_node: dict[str, list[int]] = {}
    for i, command in enumerate(body):
        args, _ = _args(command)
        node = client.nodes_manager.get_node_from_slot(await client._determine_slot(*args))
        nodes[node.name] = node
        by_node.setdefault(node.name, []).append(i)

    async def one_node(name: str) -> list[Any]:
        calls = [PipelineCommand(i, *_args(body[i])[0], **_args(body[i])[1]) for i in by_node[name]]
        calls.append(PipelineCommand(len(body), *wait))
        await nodes[name].execute_pipeline(calls)
        return [c.result for c in calls]

    try:
        results = await asyncio.gather(*(one_node(name) for name in by_node))
        lost = next((r for got in results for r in got if isinstance(r, LOST_CONNECTION)), None)
        if lost is not None:  # a reply lost with its connection is no reply: the submit may or may not be written
            raise lost
    except LOST_CONNECTION:
        await _reread_slots(client)
        raise
    replies: list[Any] = [None] * len(commands)
    moved = False
    for positions, got in zip(by_node.values(), results, strict=True):
        moved = _place(replies, positions, got) or moved
    if moved:
        await _reread_slots(client)
    replies[-1] = _fewest([got[-1] for got in results], wait)
    return replies


LOST_CONNECTION = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _place(replies: list[Any], positions: list[int], got: list[Any]) -> bool:
    """Put one node's replies (its ``WAIT``'s last) at their positions; True when one was MOVED or ASK."""
    moved = False
    for i, reply in zip(positions, got, strict=False):
        replies[i] = reply
        moved = moved or isinstance(reply, AskError)  # MovedError is an AskError
    return moved


def _fewest(confirmed: list[Any], wait: tuple[Any, ...]) -> Any:
    """The reply of a batch's ``WAIT``: the first node's error, else the fewest replicas a node confirmed."""
    errors = [c for c in confirmed if isinstance(c, Exception)]
    return errors[0] if errors else min((int(c) for c in confirmed), default=int(wait[1]))


def primaries(client: redis.asyncio.RedisCluster) -> frozenset[str]:
    """The primaries in the client's slot map as it stands (no round trip): it changes when the client re-read
    the map after a lost node and found a replica promoted in its place."""
    return frozenset(node.name for node in client.get_primaries())


async def _reread_slots(client: redis.asyncio.RedisCluster) -> None:
    with contextlib.suppress(redis.exceptions.RedisError, RedisClusterException):  # none answers: next failure
        await client.nodes_manager.initialize()


def _reread_slots_sync(client: redis.RedisCluster) -> None:
    with contextlib.suppress(redis.exceptions.RedisError, RedisClusterException):
        client.nodes_manager.initialize()

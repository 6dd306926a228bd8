"""The Redis gateway: the one place commands are sent, for the sync and the asyncio face alike.

Operations are written once, as generators (sans-IO): an operation yields a list of commands, receives their
replies (an exception instance in place of a reply that failed), and finally returns its value. ``Gateway``
and ``AsyncGateway`` drive the same operations over a sync or an asyncio client, sending each list in one
round trip, loading Lua scripts on NOSCRIPT, and turning redis-py's exceptions into ours.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.exceptions import NoScriptError, RedisClusterException

from dispatcher.errors import PoolExhausted, RedisError, RedisFull, RedisUnavailable
from dispatcher.store import scripts, sharding
from dispatcher.store.connection import AsyncClient, PoolTimeout, SyncClient, mask_url

T = TypeVar("T")
Command = tuple[Any, ...]
"""A Redis command as its arguments; a trailing dict holds redis-py parser options (``parse_detail``)."""
Op = Generator[list[Command], list[Any], T]


TRANSIENT = ("LOADING", "BUSY ", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")
"""Error replies of a server that is starting, failing over or stuck in a script: retry, as for a lost
connection."""


def text(value: bytes | str) -> str:
    """A reply's bytes as str (ids and names come back as bytes: the clients do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def check(reply: Any) -> Any:
    """Return ``reply``, or raise it as our own error when it is an exception."""
    if isinstance(reply, Exception):
        raise wrap_error(reply, None) from reply
    return reply


def error_text(error: BaseException) -> str:
    """An error reply as Redis sent it. redis-py moves a code it knows (``OOM``, ``NOPERM``, ``TRYAGAIN``...)
    out of the message into ``status_code``: put it back, so that matching on the code works for every reply."""
    code = getattr(error, "status_code", None)
    text = str(error)
    first = text.split(" ", 1)[0]
    if not code or text.startswith(code) or (first.isupper() and first.isalpha()):  # the code is in the text
        return text
    return f"{code} {text}"


def is_error(reply: Any, code: str) -> bool:
    """Whether ``reply`` is a Redis error whose reply starts with ``code`` (e.g. ``NOGROUP``, ``OOM``)."""
    return isinstance(reply, redis.exceptions.ResponseError) and error_text(reply).startswith(code)


def wrap_error(error: Exception, url: str | None, written: str | None = None) -> Exception:
    """Our exception for a redis-py one (already ours or not from Redis: returned as is).

    ``written`` says what the failed call wrote, for a call of several commands (a batch submit); by default
    the message of a refused write says that it wrote nothing.
    """
    where = f" at {mask_url(url)}" if url else ""
    also = f"; {written}" if written else ""
    if isinstance(error, PoolTimeout):  # a ConnectionError for redis-py, but Redis may be fine
        return PoolExhausted(f"Redis{where}: {error}{also}")
    if (
        isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)
        or (isinstance(error, redis.exceptions.ResponseError) and error_text(error).startswith(TRANSIENT))
        or _no_cluster_node(error)
    ):
        return RedisUnavailable(f"Redis{where} is unavailable: {error}{also}")
    if isinstance(error, redis.exceptions.ResponseError) and error_text(error).startswith("OOM"):
        return RedisFull(f"Redis{where} is full (maxmemory reached): {written or 'nothing was written'}")
    if isinstance(error, redis.exceptions.RedisError | RedisClusterException):
        return RedisError(f"Redis{where} answered with an error: {error}{also}")
    return error


def _no_cluster_node(error: Exception) -> bool:
    # redis-py's cluster client says it reached no node with a RedisClusterException (not a ConnectionError),
    # told apart from its other ones (CROSSSLOT, a command it cannot place) by this message only.
    return isinstance(error, RedisClusterException) and "cannot be connected" in str(error)


def rewrap(error: RedisError, url: str | None, written: str) -> RedisError:
    """``error`` (ours, raised by ``Gateway.run``) again, its message saying what was written."""
    cause = error.__cause__
    again = wrap_error(cause, url, written) if isinstance(cause, redis.exceptions.RedisError) else None
    return again if isinstance(again, RedisError) else type(error)(f"{error}; {written}")


def refused_whole(error: Exception) -> bool:
    """Whether Redis refused this command before it wrote anything: out of memory (a script's first write is
    refused, and nothing after it runs), or a server that is loading, failing over or busy."""
    # A reply, not a lost connection: redis-py makes LOADING a BusyLoadingError, which is a ConnectionError.
    return isinstance(error, redis.exceptions.RedisError) and error_text(error).startswith(("OOM", *TRANSIENT))


EACH_PRIMARY: dict[str, Any] = {"each_primary": True}
"""The last element of a keyless command to send to every primary of a Redis Cluster (its reply then maps each
node's ``host:port`` to that node's reply); on one server it means nothing."""


def _split(command: Command) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if command and isinstance(command[-1], dict):
        return command[:-1], {k: v for k, v in command[-1].items() if k != "each_primary"}
    return command, {}


def _noscript_retry(commands: Sequence[Command], replies: list[Any]) -> list[int]:
    return [i for i, r in enumerate(replies) if isinstance(r, NoScriptError) and commands[i][0] == "EVALSHA"]


def _load_commands(commands: Sequence[Command], missing: list[int]) -> list[Command]:
    """One SCRIPT LOAD per distinct missing script (a batch may hold hundreds of calls of one script)."""
    loads = []
    for sha in dict.fromkeys(commands[i][1] for i in missing):
        source = scripts.source_by_sha(sha)
        if source is None:
            raise RedisError(f"unknown script sha {sha}")
        loads.append(("SCRIPT", "LOAD", source))
    return loads


def _with_wait(commands: Sequence[Command], missing: list[int]) -> list[int]:
    """Positions re-sent after NOSCRIPT: the refused calls, and a trailing ``WAIT`` (``store/replication.py``),
    which must follow the writes it confirms, not the ones refused."""
    if commands[-1][0] == "WAIT" and len(commands) - 1 not in missing:
        return [*missing, len(commands) - 1]
    return missing


def _retried(commands: Sequence[Command], missing: list[int]) -> list[Command]:
    return [commands[i] for i in _with_wait(commands, missing)]


class Gateway:
    """Runs operations over a sync redis-py client."""

    def __init__(self, client: SyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.cluster = isinstance(client, redis.RedisCluster)
        """Whether commands go to a Redis Cluster (``store/sharding.py`` sends them there)."""

    def run(self, op: Op[T]) -> T:
        """Drive ``op`` to completion, one round trip per list of commands it yields."""
        try:
            commands = next(op)
            while True:
                commands = op.send(self.send(commands))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except (redis.exceptions.RedisError, RedisClusterException) as e:
            raise wrap_error(e, self.url) from e

    def send(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip; failed replies come back as exception instances."""
        if self.cluster:
            commands = sharding.sharded_calls(commands)
        replies = self._send(commands)
        missing = _noscript_retry(commands, replies)
        if missing:
            self._send(_load_commands(commands, missing))
            for i, reply in zip(_with_wait(commands, missing), self._send(_retried(commands, missing)), strict=True):
                replies[i] = reply
        return replies

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        if isinstance(self.client, redis.RedisCluster):
            return sharding.send(self.client, commands)
        if len(commands) == 1:
            try:
                args, options = _split(commands[0])
                return [self.client.execute_command(*args, **options)]
            except redis.exceptions.ResponseError as e:
                return [e]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            args, options = _split(command)
            pipe.execute_command(*args, **options)
        return pipe.execute(raise_on_error=False)


class AsyncGateway:
    """Runs operations over an asyncio redis-py client."""

    def __init__(self, client: AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.cluster = isinstance(client, redis.asyncio.RedisCluster)
        """Whether commands go to a Redis Cluster (``store/sharding.py`` sends them there)."""

    def primaries(self) -> frozenset[str]:
        """A Redis Cluster's primaries as the client's slot map names them now (empty for one server)."""
        if isinstance(self.client, redis.asyncio.RedisCluster):
            return sharding.primaries(self.client)
        return frozenset()

    async def run(self, op: Op[T]) -> T:
        """Drive ``op`` to completion, one round trip per list of commands it yields."""
        try:
            commands = next(op)
            while True:
                commands = op.send(await self.send(commands))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except (redis.exceptions.RedisError, RedisClusterException) as e:
            raise wrap_error(e, self.url) from e

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip; failed replies come back as exception instances."""
        if self.cluster:
            commands = sharding.sharded_calls(commands)
        replies = await self._send(commands)
        missing = _noscript_retry(commands, replies)
        if missing:
            await self._send(_load_commands(commands, missing))
            retried = await self._send(_retried(commands, missing))
            for i, reply in zip(_with_wait(commands, missing), retried, strict=True):
                replies[i] = reply
        return replies

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        if isinstance(self.client, redis.asyncio.RedisCluster):
            return await sharding.send_async(self.client, commands)
        if len(commands) == 1:
            try:
                args, options = _split(commands[0])
                return [await self.client.execute_command(*args, **options)]
            except redis.exceptions.ResponseError as e:
                return [e]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            args, options = _split(command)
            pipe.execute_command(*args, **options)
        return await pipe.execute(raise_on_error=False)

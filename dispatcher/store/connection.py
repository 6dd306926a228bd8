"""Redis clients built from settings: timeouts, bounded retries with backoff, TLS and ACL users."""

from __future__ import annotations

import asyncio
import queue
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialBackoff, NoBackoff

from dispatcher.settings import Settings
from dispatcher.store import topology

SyncClient = redis.Redis | redis.RedisCluster
"""A sync client: of one server (or a Sentinel-managed primary), or of a Redis Cluster."""
AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
"""The asyncio twin of ``SyncClient``."""


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log and to put in error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by the sync and async clients (not the ``retry`` object: each kind of client needs
    its own, see ``make_client`` and ``make_async_client``)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "health_check_interval": 30,
    }
    if settings.redis_url.startswith(("rediss://", "rediss+")):
        if settings.ssl_ca_file:
            options["ssl_ca_certs"] = settings.ssl_ca_file
        if settings.ssl_certfile:
            options["ssl_certfile"] = settings.ssl_certfile
        if settings.ssl_keyfile:
            options["ssl_keyfile"] = settings.ssl_keyfile
    return options


def make_client(settings: Settings, **extra: Any) -> SyncClient:
    """A sync client for ``settings.redis_url`` (one server, a cluster or a Sentinel-managed primary: see
    ``store/topology.py``), retrying a command ``retry_attempts`` times after a lost connection; nothing connects
    until the first command."""
    options = {**_sync_options(settings), **extra}
    where = topology.parse(settings.redis_url)
    if where.kind == "cluster":
        return topology.cluster_client(where, options)
    if where.kind == "sentinel":
        return topology.sentinel_client(where, options)
    return redis.Redis.from_url(settings.redis_url, **options)


def _sync_options(settings: Settings) -> dict[str, Any]:
    options = client_options(settings)
    options["retry"] = redis.retry.Retry(_backoff(), settings.retry_attempts)
    return options


class PoolTimeout(redis.exceptions.ConnectionError):
    """No connection of a bounded pool came free within its timeout. A ``ConnectionError``, as the one redis-py
    raises there, so redis-py treats it alike; ``wrap_error`` makes it our ``PoolExhausted``, not "unavailable"."""

    def __init__(self, timeout_s: float | None, max_connections: int) -> None:
        super().__init__(
            f"no free connection within {timeout_s} s (all max_connections={max_connections} in use): raise "
            "max_connections or lower the concurrency of callers"
        )


class _BoundedPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, whose wait timeout raises ``PoolTimeout``."""

    def get_connection(self, *args: Any, **options: Any) -> Any:
        try:
            return super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        except redis.exceptions.ConnectionError as e:
            if isinstance(e.__context__, queue.Empty):  # raised while handling the wait's timeout, not connecting
                raise PoolTimeout(self.timeout, self.max_connections) from None
            raise


class _AsyncBoundedPool(redis.asyncio.BlockingConnectionPool):
    """The asyncio twin of ``_BoundedPool``."""

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        except redis.exceptions.ConnectionError as e:
            if isinstance(e.__cause__, asyncio.TimeoutError):  # the wait's timeout (connecting raises others)
                raise PoolTimeout(self.timeout, self.max_connections) from None
            raise


def make_shared_client(settings: Settings, **extra: Any) -> SyncClient:
    """``make_client`` for a client that many threads share (a ``Dispatcher``'s).

    Its pool opens at most ``max_connections``, and a caller that finds them all in use waits up to
    ``pool_timeout_s`` for one (then ``PoolTimeout``): redis-py's default pool fails at once past 100 connections
    ("Too many connections"), which a web app's threads reach while Redis is fine. A cluster or Sentinel client
    opens at most ``max_connections`` per node, failing at once past it (redis-py has no waiting pool there).
    """
    if topology.kind(settings.redis_url) != "single":
        return make_client(settings, max_connections=settings.max_connections, **extra)
    pool = _BoundedPool.from_url(
        settings.redis_url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        **{**_sync_options(settings), **extra},
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() disconnects the pool, as from_url's clients do
    return client


def _hiredis_pack(args: tuple[Any, ...]) -> bytes:
    if isinstance(args[0], str) and " " in args[0]:  # "XINFO CONSUMERS": the server wants two arguments
        args = (*args[0].split(), *args[1:])
    return hiredis.pack_command(args)  # type: ignore[no-any-return]


class _HiredisPacking:
    """Packs commands with hiredis' C packer; redis-py's asyncio connections pack in Python (the worker's
    hottest spot when profiled: about 14 arguments per settle script call)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [_hiredis_pack(args)]

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(_hiredis_pack(tuple(c)) for c in commands)]


class _ClosedTransportIsLost:
    """uvloop raises ``RuntimeError`` ("the handler is closed") when a command is written to a transport it already
    closed after the peer reset the connection; asyncio's loop drops such a write and the read then fails.
    redis-py has disconnected the connection by then (its send path disconnects on any exception) but does not
    know the error for a lost connection, so it was neither retried nor reported as Redis unavailable. It is one
    now: a ``ConnectionError``, which the client's retry and our gateway's error mapping handle."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except RuntimeError as e:
            raise redis.exceptions.ConnectionError(f"Error writing to socket: connection closed ({e})") from e


class _FastConnection(_HiredisPacking, _ClosedTransportIsLost, redis.asyncio.Connection):
    pass


class _FastSSLConnection(_HiredisPacking, _ClosedTransportIsLost, redis.asyncio.SSLConnection):
    pass


def make_async_client(settings: Settings, retry: bool = True, **extra: Any) -> AsyncClient:
    """An asyncio client for ``settings.redis_url``; nothing connects until the first command.

    With ``retry`` (the default) a command is re-sent ``retry_attempts`` times after a lost connection. A client
    that must see every lost reply (the worker's reads: a re-sent ``XREADGROUP >`` would leave the entries of the
    lost reply pending and unseen) is made with ``retry=False``.
    """
    options = {**_async_options(settings, retry), **extra}
    where = topology.parse(settings.redis_url)
    if where.kind == "cluster":
        return topology.async_cluster_client(where, options)
    if where.kind == "sentinel":
        return topology.async_sentinel_client(where, options)
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)


def _async_options(settings: Settings, retry: bool) -> dict[str, Any]:
    options = client_options(settings)
    # The asyncio client awaits ``retry.call_with_retry(...)``: a sync Retry there returns the command's
    # coroutine unawaited, so its errors escape the retry loop and nothing is ever retried.
    attempts = settings.retry_attempts if retry else 0
    options["retry"] = redis.asyncio.retry.Retry(_backoff() if retry else NoBackoff(), attempts)
    scheme = urlsplit(settings.redis_url).scheme
    if scheme in ("redis", "rediss"):
        options["connection_class"] = _FastSSLConnection if scheme == "rediss" else _FastConnection
    return options


def make_shared_async_client(settings: Settings, **extra: Any) -> AsyncClient:
    """``make_async_client`` (retrying) for a client that many tasks share (an ``AsyncDispatcher``'s), with the
    bounded waiting pool of ``make_shared_client`` (for one server)."""
    if topology.kind(settings.redis_url) != "single":
        return make_async_client(settings, max_connections=settings.max_connections, **extra)
    pool = _AsyncBoundedPool.from_url(
        settings.redis_url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        **{**_async_options(settings, retry=True), **extra},
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def make_read_client(settings: Settings) -> AsyncClient:
    """The asyncio client a worker reads its streams through: it never retries (a lost XREADGROUP reply must reach
    the fetch loop, which then re-reads its own pending entries), and it hands XREADGROUP replies over raw, so an
    entry's fields stay the flat list the codec reads in place instead of a dict built per entry."""
    client = make_async_client(settings, retry=False)
    if "XREADGROUP" in client.response_callbacks:
        del client.response_callbacks["XREADGROUP"]
    return client

"""Clients built from settings: the asyncio client really retries a command whose connection was lost; the
dispatchers' shared clients wait, for a bounded time, for a connection of a bounded pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio.retry
import uvloop
from conftest import RedisServer

from dispatcher import AsyncDispatcher, Dispatcher, Settings
from dispatcher.store.connection import make_async_client, make_client, make_shared_async_client, make_shared_client


@pytest.mark.parametrize("make", [make_async_client, make_shared_async_client])
def test_the_async_client_retries_a_command_after_its_connection_was_killed(
    make: Callable[[Settings], redis.asyncio.Redis],
) -> None:
    # A private server: CLIENT KILL TYPE normal would cut the session's other clients too.
    with RedisServer() as server:
        admin = server.client()
        settings = Settings.build(redis_url=server.url, retry_attempts=2)

        async def scenario() -> object:
            client = make(settings)
            try:
                assert await client.set("k", "before")
                # Killed from another client, with no turn of the loop in between: the pool hands out the dead
                # connection, the command fails on it, and only the client's retry can save it.
                assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
                value = await client.get("k")
                retry = client.get_retry()  # a sync Retry here would return the command's coroutine unawaited
                assert isinstance(retry, redis.asyncio.retry.Retry) and retry.get_retries() == 2
                return value
            finally:
                await client.aclose()

        assert asyncio.run(scenario()) == b"before"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("make", [make_async_client, make_shared_async_client])
def test_a_command_written_to_a_transport_the_loop_closed_is_retried_as_a_lost_connection(
    make: Callable[[Settings], redis.asyncio.Redis], loop: str, redis_server: RedisServer
) -> None:
    # After a connection reset the loop closes the transport while redis-py still holds the connection as open;
    # uvloop then raises RuntimeError on the next write (seen in chaos scenario 7: a settle failed "unexpectedly").
    settings = Settings.build(redis_url=redis_server.url, retry_attempts=2)

    async def scenario() -> object:
        client = make(settings)
        try:
            await client.set("transport-closed", "before")
            pool = client.connection_pool
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            conn._writer.transport.abort()  # what the loop does when the peer resets the connection
            await pool.release(conn)
            await asyncio.sleep(0.05)
            return await client.get("transport-closed")
        finally:
            await client.aclose()

    run = asyncio.run if loop == "asyncio" else uvloop.run
    assert run(scenario()) == b"before"


@pytest.mark.parametrize("make", [make_client, make_shared_client])
def test_the_sync_client_keeps_a_sync_retry_with_the_same_attempts(make: Callable[[Settings], redis.Redis]) -> None:
    client = make(Settings.build(retry_attempts=2))
    retry = client.get_retry()
    assert type(retry) is redis.retry.Retry and retry.get_retries() == 2
    client.close()


@pytest.mark.parametrize(
    ("make", "pool_class"),
    [
        (make_shared_client, redis.BlockingConnectionPool),
        (make_shared_async_client, redis.asyncio.BlockingConnectionPool),
    ],
)
def test_shared_clients_wait_a_bounded_time_for_a_bounded_pool(
    make: Callable[[Settings], Any], pool_class: type
) -> None:
    client = make(Settings.build(max_connections=7, pool_timeout_s=1.5, socket_timeout_s=3.0))
    pool = client.connection_pool
    assert isinstance(pool, pool_class)
    assert (pool.max_connections, pool.timeout) == (7, 1.5)
    assert pool.connection_kwargs["socket_timeout"] == 3.0  # the other options as make_client sets them
    assert client.auto_close_connection_pool


def test_dispatchers_build_shared_clients() -> None:
    settings = Settings.build(redis_url="redis://127.0.0.1:1/0", max_connections=3)  # never connects
    with Dispatcher(settings) as d:
        assert isinstance(d.client.connection_pool, redis.BlockingConnectionPool)
        assert d.client.connection_pool.max_connections == 3

    async def main() -> None:
        async with AsyncDispatcher(settings) as d:
            assert isinstance(d.client.connection_pool, redis.asyncio.BlockingConnectionPool)
            assert d.client.connection_pool.max_connections == 3

    asyncio.run(main())

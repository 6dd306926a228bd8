"""Clients built from settings: the asyncio client really retries a command whose connection was lost."""

from __future__ import annotations

import asyncio

import redis.asyncio.retry
from conftest import RedisServer

from dispatcher import Settings
from dispatcher.store.connection import make_async_client, make_client


def test_the_async_client_retries_a_command_after_its_connection_was_killed() -> None:
    # A private server: CLIENT KILL TYPE normal would cut the session's other clients too.
    with RedisServer() as server:
        admin = server.client()
        settings = Settings.build(redis_url=server.url, retry_attempts=2)

        async def scenario() -> object:
            client = make_async_client(settings)
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


def test_the_sync_client_keeps_a_sync_retry_with_the_same_attempts() -> None:
    client = make_client(Settings.build(retry_attempts=2))
    retry = client.get_retry()
    assert type(retry) is redis.retry.Retry and retry.get_retries() == 2
    client.close()

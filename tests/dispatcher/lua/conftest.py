"""The Lua scripts are tested twice: on fakeredis (fast, logic only) and on the private redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace


@pytest.fixture(params=["fakeredis", "redis"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "fakeredis":
        fake = fakeredis.FakeRedis()
        yield fake
        fake.close()
    else:
        real = request.getfixturevalue("redis_server").client()
        yield real
        real.close()


@pytest.fixture
def gw(client: redis.Redis) -> Gateway:
    return Gateway(client, "redis://test")


@pytest.fixture
def keys(prefix: str) -> CapabilityKeys:
    """The keys of capability ``echo`` under the test's prefix."""
    return KeySpace(prefix).capability("echo")

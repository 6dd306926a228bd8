"""``store/prefix.py`` on the session's real redis-server: a prefix's keys are found and deleted, and only its own."""

from __future__ import annotations

from conftest import RedisServer

from dispatcher.store import prefix as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace


def test_delete_all_removes_every_key_of_the_prefix_and_no_other(redis_server: RedisServer, prefix: str) -> None:
    client = redis_server.client()
    gateway = Gateway(client, redis_server.url)
    ours, neighbour = KeySpace(prefix), KeySpace(prefix + "x")  # shares every leading character
    assert gateway.run(ops.holds_keys(ours)) is False
    for i in range(2500):  # more than one SCAN page
        client.set(f"{prefix}:{{cap}}:result:{i}", b"v")
    client.xadd(ours.capability("cap").stream, {"f": "v"})
    client.set(f"{prefix}x:workers", b"v")
    client.set(prefix, b"the bare prefix is not under it")
    assert gateway.run(ops.holds_keys(ours)) is True
    assert gateway.run(ops.delete_all(ours)) == 2501
    assert gateway.run(ops.holds_keys(ours)) is False
    assert list(client.scan_iter(match=f"{prefix}:*")) == []
    assert client.exists(f"{prefix}x:workers", prefix) == 2
    assert gateway.run(ops.holds_keys(neighbour)) is True
    client.delete(f"{prefix}x:workers", prefix)


def test_the_pattern_escapes_glob_characters() -> None:
    assert KeySpace("a.b-c").pattern == "a.b-c:*"
    assert KeySpace().pattern == "dispatcher:*"
    assert KeySpace("a*b?[c]").pattern == "a\\*b\\?\\[c\\]:*"

"""Cluster and Sentinel URLs, the slot of a read, and the scripts' sharded variants (no Redis needed)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from dispatcher import Settings
from dispatcher.errors import ConfigError
from dispatcher.store import scripts, sharding, topology


def test_cluster_url_lists_its_seed_nodes() -> None:
    t = topology.parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert (t.kind, t.nodes, t.tls) == ("cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)), False)


def test_sentinel_url_carries_service_and_credentials() -> None:
    t = topology.parse("rediss+sentinel://app:s%40cret@s1:26379,s2:26379/mymaster")
    assert (t.kind, t.nodes, t.service, t.username, t.password, t.tls) == (
        "sentinel",
        (("s1", 26379), ("s2", 26379)),
        "mymaster",
        "app",
        "s@cret",
        True,
    )


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h", "unix:///tmp/r.sock"])
def test_plain_urls_are_one_server(url: str) -> None:
    assert topology.parse(url).kind == "single"


@pytest.mark.parametrize(
    "url", ["redis+sentinel://h:1", "redis+cluster://", "redis+cluster://h", "redis+cluster://h:port"]
)
def test_bad_topology_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        Settings.build(redis_url=url)


def test_read_slot_is_the_first_streams_slot() -> None:
    command = ("XREADGROUP", "GROUP", "workers", "c1", "COUNT", 5, "BLOCK", 100, "STREAMS", "p:{echo}:stream", ">")
    assert topology.read_slot(command) == key_slot(b"echo")
    assert topology.read_slot(("XADD", "p:{echo}:stream", "*", "a", "b")) is None


def test_sharded_scripts_publish_with_spublish_and_only_they_change() -> None:
    for name in scripts.NAMES:
        plain, sharded = scripts.script(name), scripts.sharded(name)
        if b"'PUBLISH'" in plain.source:
            assert b"redis.call('SPUBLISH', " in sharded.source and b"'PUBLISH'" not in sharded.source
            assert sharded.sha != plain.sha and scripts.source_by_sha(sharded.sha) == sharded.source
        else:
            assert sharded == plain
    settle = scripts.call("settle", ["k"], [])
    assert sharding.sharded_calls([settle, ("GET", "x")]) == [
        ("EVALSHA", scripts.sharded("settle").sha, *settle[2:]),
        ("GET", "x"),
    ]

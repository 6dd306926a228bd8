"""The key space: every key under the prefix, every capability key in its hash tag."""

from __future__ import annotations

import dataclasses

import pytest

from dispatcher import KeySpace
from dispatcher.store.keys import GROUP


def slot_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes (the first non-empty ``{...}``)."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


@pytest.mark.parametrize("prefix", ["dispatcher", "t1", "a.b:c"])
def test_every_capability_key_carries_the_capability_tag_and_prefix(prefix: str) -> None:
    keys = KeySpace(prefix).capability("llm.chat")
    names = [
        keys.stream,
        keys.index,
        keys.delayed,
        keys.dead,
        keys.result("T1"),
        keys.idempotency("order-1"),
        keys.heartbeat("host-1"),
        keys.channel("T1"),
    ]
    for name in names:
        assert name.startswith(f"{prefix}:{{llm.chat}}:"), name
        assert slot_tag(name) == "llm.chat", name
    assert len(set(names)) == len(names)
    string_fields = [f.name for f in dataclasses.fields(keys) if f.name != "capability"]
    assert all(getattr(keys, f).startswith(f"{prefix}:{{llm.chat}}:") for f in string_fields)


def test_capability_keys_differ_between_capabilities_and_prefixes() -> None:
    a, b, c = KeySpace("p").capability("a"), KeySpace("p").capability("b"), KeySpace("q").capability("a")
    assert len({a.stream, b.stream, c.stream}) == 3
    assert a.result("x") != b.result("x")


def test_fleet_keys_are_under_the_prefix_without_a_capability_tag() -> None:
    ks = KeySpace("p1")
    for name in (ks.capabilities, ks.workers, ks.reaper_lease, ks.promoter_lease, ks.admitter_lease, ks.limits):
        assert name.startswith("p1:") and "{" not in name
    assert len({ks.capabilities, ks.workers, ks.reaper_lease, ks.promoter_lease, ks.admitter_lease, ks.limits}) == 6


def test_default_prefix_and_group() -> None:
    assert KeySpace().capability("x").stream == "dispatcher:{x}:stream"
    assert GROUP == "workers"

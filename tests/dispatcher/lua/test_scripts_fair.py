"""``peek_fair.lua`` + ``admit_fair.lua`` (through the fair gate) and submit's fair path on fakeredis and Redis:
weighted shares under contention (3:2:1 within ±10 %), work conservation (an idle tenant's share goes to the
others), no banked credit, and each return value."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from dispatcher import Task
from dispatcher.fleet.fairgate import FairGate
from dispatcher.store import codec, flow, streams
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace

LIMIT = 64 * 1024


@pytest.fixture
def keys(prefix: str) -> CapabilityKeys:
    return KeySpace(prefix).capability("fair")


def submit(gw: Gateway, keys: CapabilityKeys, tenant: str, n: int) -> None:
    items = []
    for i in range(n):
        task = Task(capability="fair", payload=f"{tenant}-{i}", fairness_key=tenant)
        blob = codec.encode_task(task, LIMIT)
        items.append(streams.Enqueue(task.id, blob, version=codec.version_of(task), fairness_key=tenant))
    gw.run(streams.submit([(keys, items)], 60_000, 8))


def drain(client: redis.Redis, keys: CapabilityKeys) -> list[str]:
    """Read and delete what the stream holds (as workers that settle at once): tenants in stream order."""
    out = []
    for entry_id, fields in client.xrange(keys.stream):
        out.append(str(codec.decode_entry("fair", "0-0", fields, LIMIT).task.fairness_key))
        client.xdel(keys.stream, entry_id)
    return out


def admit(gw: Gateway, keys: CapabilityKeys, window: int) -> tuple[int, int]:
    """One pass of the fair gate (peek_fair.lua, then admit_fair.lua with its choices)."""
    return FairGate(gw, KeySpace(keys.stream.split(":", 1)[0]), window, LIMIT).admit([keys])


def test_weights_3_2_1_give_shares_within_10_percent(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    for tenant, weight in (("a", 3), ("b", 2), ("c", 1)):
        gw.run(flow.set_weight(keys, tenant, weight))
        submit(gw, keys, tenant, 400)
    order: list[str] = []
    while len(order) < 600:
        moved, _ = admit(gw, keys, 30)
        assert moved > 0
        order += drain(client, keys)
    shares = Counter(order[:600])
    for tenant, want in (("a", 0.5), ("b", 1 / 3), ("c", 1 / 6)):
        assert abs(shares[tenant] / 600 - want) <= want * 0.10, shares


def test_an_idle_tenants_share_goes_to_the_others_and_a_flood_does_not_delay_a_newcomer(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    submit(gw, keys, "flood", 500)
    assert admit(gw, keys, 20) == (20, 1)  # alone: it takes the whole window (work-conserving)
    drain(client, keys)
    submit(gw, keys, "small", 10)  # joins at the lowest virtual time: no credit banked, no debt either
    order: list[str] = []
    for _ in range(2):
        admit(gw, keys, 10)
        order += drain(client, keys)
    assert order.count("small") == 10  # within its fair half of 20 admissions: all of it
    assert order[:2].count("small") >= 1


def test_admit_fair_returns_what_it_moved_and_the_tenants_left(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    submit(gw, keys, "t1", 2)
    assert admit(gw, keys, 5) == (2, 0)
    assert client.exists(keys.tenants, keys.fair("t1")) == 0  # an empty tenant leaves the set
    gw.run(streams.ensure_groups([keys.stream]))
    assert client.xinfo_groups(keys.stream)[0]["name"] == GROUP.encode()
    submit(gw, keys, "t2", 3)
    assert admit(gw, keys, 2) == (0, 1)  # the window is full: 2 unread entries already

"""The throughput ring (tput.lua): settle, retry and bury count what they changed, on fakeredis and Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from script_kit import (
    bury,
    raw,
    read_one,
    record,
    record_all,
    requeue,
    running,
    settle,
)

from dispatcher.store import throughput
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.wire import Applied

# ---- throughput ring (tput.lua): settle, retry and bury count what they changed -------------------------------


def counts(client: redis.Redis, keys: CapabilityKeys) -> tuple[int, int]:
    t = throughput.window(client.hgetall(keys.throughput), time.time())
    return t.completed, t.failed


def test_a_settle_batch_counts_every_settled_task_once(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    batch = []
    for i in range(3):
        task, _, entry_id = running(gw, keys)
        batch.append(settle(keys, entry_id, "c1", task.id, record(value=i)))
    assert record_all(gw, *batch) == [Applied.DONE] * 3
    assert counts(client, keys) == (3, 0)
    assert 0 < client.pttl(keys.throughput) <= 90_000


def test_a_refused_settle_counts_nothing(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, _, entry_id = running(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c2", task.id, record())) == 0
    assert not client.exists(keys.throughput)


def test_a_failed_attempt_counts_as_failed_and_a_hand_back_not(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob, failed_attempt=False)) == 1
    assert counts(client, keys) == (0, 0)
    entry_id, _ = read_one(gw, keys, "c1")
    assert raw(gw, requeue(keys, entry_id, "c1", task, blob)) == 1
    assert counts(client, keys) == (0, 1)


def test_a_dead_letter_counts_as_failed(gw: Gateway, client: redis.Redis, keys: CapabilityKeys) -> None:
    task, blob, entry_id = running(gw, keys)
    assert raw(gw, bury(keys, entry_id, "c1", task.id, None, blob)) == 1
    assert counts(client, keys) == (0, 1)


def test_a_slot_holding_an_old_bucket_is_reset_before_counting(
    gw: Gateway, client: redis.Redis, keys: CapabilityKeys
) -> None:
    now_bucket = int(time.time() // throughput.BUCKET_S)
    # Two of the 16 slots hold buckets 16 and 32 back (80 s, 160 s ago): the slot is reused, not added to.
    for old in (now_bucket - 16, now_bucket - 32):
        slot = old % throughput.RING
        client.hset(keys.throughput, mapping={f"b{slot}": old, f"c{slot}": 500, f"f{slot}": 7})
    assert counts(client, keys) == (0, 0), "buckets outside the window are ignored"
    task, _, entry_id = running(gw, keys)
    assert raw(gw, settle(keys, entry_id, "c1", task.id, record())) == 1
    fields: dict[Any, Any] = client.hgetall(keys.throughput)
    assert len(fields) <= 3 * throughput.RING
    assert counts(client, keys) == (1, 0)


def test_window_sums_the_last_minute_and_rates_over_the_time_it_covers() -> None:
    now = 1_000_000.0  # the start of bucket 200000
    ring = {}
    for back, (c, f) in {0: (10, 1), 1: (20, 0), 11: (30, 2), 12: (999, 9)}.items():
        bucket = int(now // 5) - back
        ring.update({f"b{bucket % 16}": str(bucket), f"c{bucket % 16}": str(c), f"f{bucket % 16}": str(f)})
    t = throughput.window(ring, now + 2.0)
    assert (t.completed, t.failed) == (60, 3), "the 12th bucket back is outside the window"
    assert t.window_s == pytest.approx(57.0)  # from the start of bucket now-11 to now
    assert t.completed_per_s == pytest.approx(60 / 57.0)
    assert throughput.window({}, now).completed_per_s == 0.0

"""``take.lua`` (GCRA units of a named rate limit) on fakeredis and Redis: each return code, refunds, pauses, and
the bound: at most burst + elapsed x rate units over any span."""

from __future__ import annotations

import pytest
import redis

from dispatcher.store import limits
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace, LimitKeys
from dispatcher.store.limits import Taken


@pytest.fixture
def keyspace(prefix: str) -> KeySpace:
    return KeySpace(prefix)


@pytest.fixture
def limit(gw: Gateway, keyspace: KeySpace) -> LimitKeys:
    gw.run(limits.define(keyspace, "api", 60.0, 5))  # 1 unit per second, 5 at once
    return keyspace.limit("api")


def test_a_limit_lives_under_its_own_hash_tag(keyspace: KeySpace) -> None:
    assert keyspace.limit("openai-rpm").state == f"{keyspace.prefix}:{{limit.openai-rpm}}"


def test_take_within_the_burst_then_not_now_with_the_wait(gw: Gateway, limit: LimitKeys) -> None:
    assert gw.run(limits.take(limit, 3)) == (Taken.TAKEN, 0)
    assert gw.run(limits.take(limit, 2)) == (Taken.TAKEN, 0)
    outcome, wait_ms = gw.run(limits.take(limit, 2))
    assert outcome is Taken.NOT_NOW
    assert 1_900 <= wait_ms <= 2_000  # two more units fit two emission intervals later


def test_a_refund_gives_units_back(gw: Gateway, limit: LimitKeys) -> None:
    gw.run(limits.take(limit, 5))
    assert gw.run(limits.take(limit, -2)) == (Taken.TAKEN, 0)
    assert gw.run(limits.take(limit, 2)) == (Taken.TAKEN, 0)
    assert gw.run(limits.take(limit, 1))[0] is Taken.NOT_NOW


def test_unknown_limit_and_units_over_the_burst(gw: Gateway, keyspace: KeySpace, limit: LimitKeys) -> None:
    assert gw.run(limits.take(keyspace.limit("nope"), 1)) == (Taken.UNKNOWN, 0)
    assert gw.run(limits.take(limit, 6)) == (Taken.OVER_BURST, 0)


def test_a_pause_refuses_every_take_until_it_ends(gw: Gateway, limit: LimitKeys) -> None:
    assert gw.run(limits.pause(limit, 30_000)) is Taken.TAKEN
    outcome, wait_ms = gw.run(limits.take(limit, 1))
    assert outcome is Taken.NOT_NOW
    assert 29_000 <= wait_ms <= 31_000


def test_the_state_reads_back_with_what_is_available(gw: Gateway, keyspace: KeySpace, limit: LimitKeys) -> None:
    gw.run(limits.take(limit, 2))
    (state,), now_ms = gw.run(limits.every(keyspace))
    assert (state.name, state.rate_per_min, state.burst) == ("api", 60.0, 5)
    assert state.available(now_ms) in (2, 3)  # 3 left; a unit may have come back meanwhile
    assert gw.run(limits.exist(keyspace, ["api", "nope"]))[1] is None


def test_over_any_span_at_most_burst_plus_rate_units(client: redis.Redis, gw: Gateway, keyspace: KeySpace) -> None:
    gw.run(limits.define(keyspace, "fast", 60_000.0, 10))  # 1 unit per ms, 10 at once
    fast = keyspace.limit("fast")
    t0 = client.time()
    taken = sum(1 for _ in range(300) if gw.run(limits.take(fast, 1))[0] is Taken.TAKEN)
    t1 = client.time()
    elapsed_ms = (t1[0] - t0[0]) * 1000 + (t1[1] - t0[1]) / 1000
    assert taken <= 10 + elapsed_ms + 1

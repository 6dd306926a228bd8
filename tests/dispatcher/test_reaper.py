"""The reaper on a real redis-server, with pending entries placed by hand: reclaim, keep, poison, forget, paging."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from conftest import RedisServer
from helpers import wait_until

from dispatcher import Settings, Task
from dispatcher.fleet.reaper import PAGE, Reaper
from dispatcher.store import codec
from dispatcher.store import pending as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, CapabilityKeys, KeySpace

CAPABILITY = "reap.me"
LIMIT = 64 * 1024
HEARTBEAT_TTL_S = 1.0
"""The reaper skips a pass while the server's uptime is under 1.5 TTL: keep it short."""


@pytest.fixture
def reaper_settings(redis_server: RedisServer, prefix: str) -> Settings:
    return Settings.build(
        redis_url=redis_server.url, prefix=prefix, heartbeat_ttl_s=HEARTBEAT_TTL_S, max_deliveries=3, block_ms=200
    )


@pytest.fixture
def reaper(client: redis.Redis, reaper_settings: Settings) -> Reaper:
    # A session server may have started a moment ago: wait out the after-restart skip once.
    wait_until(
        lambda: int(client.info("server")["uptime_in_seconds"]) >= HEARTBEAT_TTL_S * 1.5,
        timeout_s=10,
        message="server uptime past 1.5 heartbeat TTLs",
    )
    return Reaper(Gateway(client, reaper_settings.redis_url), reaper_settings)


@pytest.fixture
def keys(client: redis.Redis, prefix: str) -> CapabilityKeys:
    """The capability's keys; the capability is known to the fleet (the reaper walks the known ones)."""
    client.sadd(KeySpace(prefix).capabilities, CAPABILITY)
    return KeySpace(prefix).capability(CAPABILITY)


def place(
    client: redis.Redis, keys: CapabilityKeys, consumer: str, n: int = 1, attempt: int = 1, reclaims: int = 0
) -> list[tuple[Task, str]]:
    """Add ``n`` tasks and deliver them to ``consumer`` (in its PEL, as a worker that read them)."""
    try:
        client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as e:
        assert str(e).startswith("BUSYGROUP")
    placed = []
    pipe = client.pipeline(transaction=False)
    tasks = [Task(capability=CAPABILITY, payload=i) for i in range(n)]
    for task in tasks:
        fields = codec.entry_fields(codec.encode_task(task, LIMIT), attempt, reclaims)
        pipe.xadd(keys.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
    entry_ids = [e.decode() for e in pipe.execute()]
    for task, entry_id in zip(tasks, entry_ids, strict=True):
        client.hset(keys.index, task.id, entry_id)
        placed.append((task, entry_id))
    ((_, delivered),) = client.xreadgroup(GROUP, consumer, {keys.stream: ">"}, count=n)
    assert [e.decode() for e, _ in delivered] == entry_ids
    return placed


def beat(client: redis.Redis, keys: CapabilityKeys, consumer: str) -> None:
    """Make ``consumer`` alive: its heartbeat key exists."""
    client.set(keys.heartbeat(consumer), consumer, px=60_000)


def pending_of(client: redis.Redis, keys: CapabilityKeys) -> dict[str, str]:
    """entry id -> owner of every pending entry."""
    rows = client.xpending_range(keys.stream, GROUP, "-", "+", 10_000)
    return {r["message_id"].decode(): r["consumer"].decode() for r in rows}


def consumer_names(client: redis.Redis, keys: CapabilityKeys) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(keys.stream, GROUP)}


def stream_entries(client: redis.Redis, keys: CapabilityKeys) -> list[codec.Delivery]:
    return [codec.decode_entry(CAPABILITY, e.decode(), f, LIMIT) for e, f in client.xrange(keys.stream)]


def decode_result(client: redis.Redis, keys: CapabilityKeys, task_id: str) -> codec.Outcome:
    blob = client.get(keys.result(task_id))
    assert blob is not None, f"no result for {task_id}"
    return codec.decode_outcome(blob, LIMIT)


def test_dead_consumer_entries_are_reclaimed_with_attempt_and_reclaims_plus_one(
    client: redis.Redis, reaper: Reaper, keys: CapabilityKeys
) -> None:
    placed = place(client, keys, "dead-1", n=3, attempt=2, reclaims=1)

    report = reaper.run_once()

    assert (report.reclaimed, report.poison, report.deleted) == (3, 0, 0)
    assert report.by_capability[CAPABILITY] == 3
    assert pending_of(client, keys) == {}, "the old entries stay pending"
    fresh = stream_entries(client, keys)
    assert [d.task.id for d in fresh] == [t.id for t, _ in placed]
    assert {(d.attempt, d.reclaims) for d in fresh} == {(3, 2)}
    assert not {d.entry_id for d in fresh} & {e for _, e in placed}, "the old entries were deleted"
    index = {k.decode(): v.decode() for k, v in client.hgetall(keys.index).items()}
    assert index == {d.task.id: d.entry_id for d in fresh}
    # Undelivered: the next reader gets them all.
    (_, delivered), *_ = client.xreadgroup(GROUP, "next", {keys.stream: ">"}, count=10)
    assert len(delivered) == 3
    assert "dead-1" not in consumer_names(client, keys), "an emptied dead consumer is forgotten"
    assert report.forgotten == 1


def test_live_consumer_keeps_its_entries(client: redis.Redis, reaper: Reaper, keys: CapabilityKeys) -> None:
    beat(client, keys, "live-1")
    placed = place(client, keys, "live-1", n=2)
    dead = place(client, keys, "dead-1", n=1)

    report = reaper.run_once()

    assert report.reclaimed == 1
    pending = pending_of(client, keys)
    assert pending == {e: "live-1" for _, e in placed}
    assert dead[0][1] not in pending
    assert "live-1" in consumer_names(client, keys)


def test_poison_after_max_deliveries(client: redis.Redis, reaper: Reaper, keys: CapabilityKeys) -> None:
    # reclaims=2: this is the third delivery that died with its worker (max_deliveries=3).
    ((poisoned, poisoned_entry),) = place(client, keys, "dead-1", attempt=3, reclaims=2)
    ((survivor, _),) = place(client, keys, "dead-1", attempt=2, reclaims=1)

    report = reaper.run_once()

    assert (report.poison, report.reclaimed) == (1, 1)
    ((_, letter),) = client.xrange(keys.dead)
    assert letter[b"reason"] == b"poison"
    assert letter[b"task_id"].decode() == poisoned.id
    assert letter[b"entry_id"].decode() == poisoned_entry
    assert (int(letter[b"attempt"]), int(letter[b"reclaims"])) == (3, 2)
    error = codec.unpack(letter[b"error"], LIMIT)
    assert "3 times" in error["message"]
    outcome = decode_result(client, keys, poisoned.id)
    assert (outcome.status, outcome.reason) == ("dead", "poison")
    assert [(d.task.id, d.reclaims) for d in stream_entries(client, keys)] == [(survivor.id, 2)]
    assert not client.hexists(keys.index, poisoned.id)
    assert pending_of(client, keys) == {}


def test_entry_deleted_from_the_stream_is_acked(client: redis.Redis, reaper: Reaper, keys: CapabilityKeys) -> None:
    ((_, entry_id),) = place(client, keys, "dead-1")
    client.xdel(keys.stream, entry_id)
    assert pending_of(client, keys) == {entry_id: "dead-1"}

    report = reaper.run_once()

    assert (report.deleted, report.reclaimed, report.poison) == (1, 0, 0)
    assert pending_of(client, keys) == {}
    assert client.xlen(keys.stream) == 0
    assert client.xlen(keys.dead) == 0


def test_forgets_only_empty_dead_consumers(
    client: redis.Redis, reaper: Reaper, keys: CapabilityKeys, reaper_settings: Settings
) -> None:
    place(client, keys, "placeholder")  # creates the stream and group
    client.xgroup_createconsumer(keys.stream, GROUP, "empty-dead")
    client.xgroup_createconsumer(keys.stream, GROUP, "empty-live")
    beat(client, keys, "empty-live")
    beat(client, keys, "placeholder")

    report = reaper.run_once()

    assert report.forgotten == 1
    assert consumer_names(client, keys) == {"placeholder", "empty-live"}

    # A dead consumer that still holds entries is never deleted (DELCONSUMER would drop its PEL).
    held = place(client, keys, "held-dead")
    gateway = Gateway(client, reaper_settings.redis_url)
    assert gateway.run(ops.forget(keys, "held-dead")) is False
    assert "held-dead" in consumer_names(client, keys)
    assert pending_of(client, keys)[held[0][1]] == "held-dead"
    # ... nor a live one without entries.
    assert gateway.run(ops.forget(keys, "empty-live")) is False


def test_pages_through_a_pending_list_larger_than_a_page(
    client: redis.Redis, reaper: Reaper, keys: CapabilityKeys
) -> None:
    n = 2 * PAGE + 50
    placed = place(client, keys, "dead-big", n=n)
    beat(client, keys, "live-1")
    live = place(client, keys, "live-1", n=5)

    report = reaper.run_once()

    assert report.reclaimed == n
    assert pending_of(client, keys) == {e: "live-1" for _, e in live}
    fresh = stream_entries(client, keys)
    reclaimed_ids = [d.task.id for d in fresh if d.reclaims == 1]
    assert reclaimed_ids == [t.id for t, _ in placed], "every entry reclaimed once, in order"


def test_skips_a_pass_right_after_a_redis_restart(prefix: str) -> None:
    with RedisServer() as server:
        client = server.client()
        keys = KeySpace(prefix).capability(CAPABILITY)
        client.sadd(KeySpace(prefix).capabilities, CAPABILITY)
        settings = Settings.build(redis_url=server.url, prefix=prefix, heartbeat_ttl_s=HEARTBEAT_TTL_S, block_ms=200)
        reaper = Reaper(Gateway(client, server.url), settings)
        ((_, entry_id),) = place(client, keys, "dead-after-restart")

        report = reaper.run_once()  # uptime 0 s: every heartbeat may just have been lost with the restart

        assert report.skipped_after_restart
        assert (report.reclaimed, report.forgotten) == (0, 0)
        assert pending_of(client, keys) == {entry_id: "dead-after-restart"}

        def reclaimed() -> Any:
            r = reaper.run_once()
            return not r.skipped_after_restart and r.reclaimed == 1

        wait_until(reclaimed, timeout_s=10, interval_s=0.1, message="a pass once uptime > 1.5 TTL")
        assert pending_of(client, keys) == {}


def test_hung_handler_on_a_live_worker_is_reclaimed_past_timeout_plus_a_ttl(
    client: redis.Redis, reaper: Reaper, keys: CapabilityKeys
) -> None:
    beat(client, keys, "live-stuck")
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    bounded = Task(capability=CAPABILITY, payload="bounded", timeout_s=0.5)
    unbounded = Task(capability=CAPABILITY, payload="unbounded")
    entry_ids = {}
    for task in (bounded, unbounded):
        fields = codec.entry_fields(codec.encode_task(task, LIMIT))
        entry_ids[task.id] = client.xadd(keys.stream, dict(zip(fields[::2], fields[1::2], strict=True))).decode()  # type: ignore[arg-type]
    client.xreadgroup(GROUP, "live-stuck", {keys.stream: ">"}, count=2)

    # Not before timeout_s + one heartbeat TTL of idleness; then only the task with a timeout comes back.
    assert reaper.run_once().hung == 0
    wait_until(lambda: reaper.run_once().hung == 1, timeout_s=15, interval_s=0.2, message="a hung reclaim")

    assert pending_of(client, keys) == {entry_ids[unbounded.id]: "live-stuck"}, "no timeout_s: never hung"
    (fresh,) = stream_entries(client, keys)[-1:]
    assert (fresh.task.id, fresh.attempt, fresh.reclaims) == (bounded.id, 2, 1)
    assert "live-stuck" in consumer_names(client, keys)

"""stats.collect(): exact counts for a state built by hand, the nil-lag fallback, workers from heartbeats."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher, KeySpace, Task
from dispatcher.cli.render import stats_json, stats_table
from dispatcher.fleet import ratelimits
from dispatcher.fleet.stats import Advice, CapabilityStats, FleetStats, Totals, advise, collect
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.gateway import Command, Gateway
from dispatcher.store.keys import GROUP


class CountingGateway(Gateway):
    """A gateway that counts its round trips."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        super().__init__(client, url)
        self.round_trips = 0

    def send(self, commands: Sequence[Command]) -> list[Any]:
        self.round_trips += 1
        return super().send(commands)


def by_name(stats: FleetStats) -> dict[str, CapabilityStats]:
    return {c.name: c for c in stats.capabilities}


def register(client: redis.Redis, ks: KeySpace, consumer: str, capabilities: tuple[str, ...], **extra: Any) -> None:
    fields: dict[str, Any] = {
        "host": "box",
        "pid": 4242,
        "concurrency": 8,
        "inflight": 1,
        "version": "0.1.0",
        "started_at": 1.0,
        "last_seen": 2.0,
        "circuits": dict.fromkeys(capabilities, "closed"),
        **extra,
    }
    client.hset(
        ks.workers, consumer, encode_worker(WorkerRecord(consumer=consumer, capabilities=capabilities, **fields))
    )


def beat(client: redis.Redis, ks: KeySpace, capability: str, consumer: str) -> None:
    client.set(ks.capability(capability).heartbeat(consumer), consumer, px=60_000)


def submit(dispatcher: Dispatcher, capability: str, n: int, delay_s: float | None = None) -> None:
    extra = {"not_before": time.time() + delay_s} if delay_s else {}
    dispatcher.submit_many([Task(capability=capability, payload=i, **extra) for i in range(n)])


def read(client: redis.Redis, ks: KeySpace, capability: str, consumer: str, count: int) -> list[bytes]:
    stream = ks.capability(capability).stream
    client.xgroup_create(stream, GROUP, "0", mkstream=True)
    reply = client.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]]


def test_empty_fleet(dispatcher: Dispatcher, prefix: str) -> None:
    stats = collect(dispatcher.gateway, KeySpace(prefix))
    assert stats.capabilities == ()
    assert stats.workers == ()
    assert stats.totals == Totals(0, 0, 0, 0, 0)


def test_exact_counts_for_a_known_state(dispatcher: Dispatcher, redis_server: Any, prefix: str) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    submit(dispatcher, "alpha", 5)
    read(client, ks, "alpha", "w1", 2)  # 2 running, 3 waiting
    submit(dispatcher, "alpha", 2, delay_s=3600)
    client.xadd(ks.capability("alpha").dead, {"reason": "poison"})
    submit(dispatcher, "gamma", 3)  # a stream without a group yet: all 3 waiting
    client.sadd(ks.capabilities, "beta")  # a capability with no keys at all
    register(client, ks, "w1", ("alpha", "beta"))
    register(client, ks, "w2", ("alpha",), inflight=0, circuits={"alpha": "open"})
    register(client, ks, "w3", ("alpha",))  # its heartbeat is gone
    beat(client, ks, "alpha", "w1")
    beat(client, ks, "alpha", "w2")

    stats = collect(dispatcher.gateway, ks)

    caps = by_name(stats)
    assert list(caps) == ["alpha", "beta", "gamma"]
    assert caps["alpha"].waiting == 3
    assert caps["alpha"].running == 2
    assert caps["alpha"].delayed == 2
    assert caps["alpha"].dead == 1
    assert caps["alpha"].workers == 2
    assert (caps["beta"].waiting, caps["beta"].running, caps["beta"].delayed, caps["beta"].dead) == (0, 0, 0, 0)
    assert caps["beta"].workers == 0  # w1 lists beta but has no heartbeat for it
    assert (caps["gamma"].waiting, caps["gamma"].running, caps["gamma"].workers) == (3, 0, 0)
    t = stats.totals
    assert (t.waiting, t.running, t.delayed, t.dead, t.workers) == (6, 2, 2, 1, 2)
    workers = {w.consumer: w for w in stats.workers}
    assert [w.consumer for w in stats.workers] == ["w1", "w2", "w3"]
    assert (workers["w1"].alive, workers["w2"].alive, workers["w3"].alive) == (True, True, False)
    assert workers["w1"].capabilities == ("alpha", "beta")
    assert (workers["w2"].host, workers["w2"].pid, workers["w2"].concurrency, workers["w2"].inflight) == (
        "box",
        4242,
        8,
        0,
    )
    assert workers["w2"].circuits == {"alpha": "open"}
    assert (caps["alpha"].open_circuits, caps["alpha"].unserved) == (1, False)  # w1 still serves alpha


def test_a_capability_whose_live_workers_all_have_open_circuits_is_unserved(
    dispatcher: Dispatcher, redis_server: Any, prefix: str
) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    submit(dispatcher, "gpu", 3)
    register(client, ks, "w1", ("gpu",), circuits={"gpu": "open"})
    register(client, ks, "w2", ("gpu",), circuits={"gpu": "half_open"})
    register(client, ks, "w3", ("gpu",))  # closed, but its heartbeat is gone: it serves nothing
    beat(client, ks, "gpu", "w1")
    beat(client, ks, "gpu", "w2")

    stats = collect(dispatcher.gateway, ks)

    gpu = by_name(stats)["gpu"]
    assert (gpu.workers, gpu.open_circuits, gpu.unserved) == (2, 2, True)
    assert stats_json(stats)["capabilities"][0]["open_circuits"] == 2
    assert "WARNING: gpu: the circuit of all 2 live worker(s) is open; its 3 waiting task(s)" in stats_table(stats)


def test_nil_lag_falls_back_to_counting(dispatcher: Dispatcher, redis_server: Any, prefix: str) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    stream = ks.capability("delta").stream
    submit(dispatcher, "delta", 4)
    read(client, ks, "delta", "w1", 1)
    last = client.xrevrange(stream, count=1)[0][0]
    # A tombstone past the group's last-delivered-id: how lag becomes nil (never done by the library).
    client.xdel(stream, last)
    assert client.xinfo_groups(stream)[0]["lag"] is None

    caps = by_name(collect(dispatcher.gateway, ks))

    assert (caps["delta"].waiting, caps["delta"].running) == (2, 1)


def test_workers_count_only_heartbeats_of_that_capability(
    dispatcher: Dispatcher, redis_server: Any, prefix: str
) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    client.sadd(ks.capabilities, "a", "b")
    register(client, ks, "w1", ("a", "b"))
    register(client, ks, "w2", ("b",))
    beat(client, ks, "b", "w1")
    beat(client, ks, "b", "w2")

    stats = collect(dispatcher.gateway, ks)

    assert (by_name(stats)["a"].workers, by_name(stats)["b"].workers) == (0, 2)
    assert stats.totals.workers == 2
    assert all(w.alive for w in stats.workers)
    client.delete(ks.capability("b").heartbeat("w2"))
    stats = collect(dispatcher.gateway, ks)
    assert by_name(stats)["b"].workers == 1
    assert {w.consumer: w.alive for w in stats.workers} == {"w1": True, "w2": False}


def test_an_unreadable_registry_record_is_left_out(dispatcher: Dispatcher, redis_server: Any, prefix: str) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    client.hset(ks.workers, "junk", b"\xc1not msgpack")
    register(client, ks, "w1", ("a",))
    assert [w.consumer for w in collect(dispatcher.gateway, ks).workers] == ["w1"]


def test_oldest_waiting_age_from_the_first_undelivered_entry(
    dispatcher: Dispatcher, redis_server: Any, prefix: str
) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    submit(dispatcher, "alpha", 3)
    delivered = read(client, ks, "alpha", "w1", 1)
    undelivered = [e for e, _ in client.xrange(ks.capability("alpha").stream) if e not in delivered]
    first_ms = int(undelivered[0].split(b"-")[0])
    client.sadd(ks.capabilities, "idle")

    caps = by_name(collect(dispatcher.gateway, ks, now=first_ms / 1000 + 7.5))

    assert caps["alpha"].oldest_waiting_s == pytest.approx(7.5)
    assert caps["idle"].oldest_waiting_s is None


def test_two_round_trips_for_any_number_of_capabilities(dispatcher: Dispatcher, redis_server: Any, prefix: str) -> None:
    client = redis_server.client()
    ks = KeySpace(prefix)
    names = [f"cap-{i}" for i in range(30)]
    client.sadd(ks.capabilities, *names)
    for i, name in enumerate(names):
        register(client, ks, f"w{i}", (name,))
        beat(client, ks, name, f"w{i}")
    gateway = CountingGateway(dispatcher.client, dispatcher.settings.redis_url)

    stats = collect(gateway, ks)

    assert gateway.round_trips == 2
    assert stats.totals.workers == 30
    submit(dispatcher, "cap-0", 1)  # something waits: one more round trip for its age
    gateway.round_trips = 0
    collect(gateway, ks)
    assert gateway.round_trips == 3


def test_advice_from_a_known_rate() -> None:
    # 600 tasks in the last 60 s by 2 workers: 5 tasks/s each; 1 200 waiting + 0 running within 60 s needs 4.
    assert advise(1200, 0, 600, 60.0, 2, 60.0) == Advice(4, "measured")
    assert advise(1200, 0, 600, 60.0, 2, 120.0) == Advice(2, "measured")
    assert advise(1201, 0, 600, 60.0, 2, 60.0) == Advice(5, "measured")  # rounds up
    assert advise(10, 0, 600, 60.0, 2, 60.0) == Advice(1, "measured")  # never 0 while work is left
    assert advise(0, 3, 600, 60.0, 2, 60.0) == Advice(1, "measured")  # running tasks need their worker
    assert advise(0, 0, 600, 60.0, 2, 60.0) == Advice(0, "idle")
    assert advise(50, 0, 0, 0.0, 3, 60.0) == Advice(3, "no_rate")  # no rate yet: keep the live workers
    assert advise(50, 0, 0, 0.0, 0, 60.0) == Advice(1, "no_rate")  # and start at least one
    assert advise(50, 0, 40, 30.0, 0, 60.0) == Advice(1, "no_rate")  # completions, but nobody alive now


def test_tasks_waiting_for_admission_are_counted_apart_from_the_lag(
    settings: Any, redis_server: Any, prefix: str
) -> None:
    with Dispatcher(settings.model_copy(update={"flow_window": 3})) as d:
        d.submit_many([Task(capability="ranked", payload=i, priority=1) for i in range(10)])
        stats = collect(d.gateway, KeySpace(prefix))
    (cap,) = stats.capabilities
    assert (cap.waiting, cap.waiting_admission) == (3, 7)
    doc = stats_json(stats)
    assert doc["capabilities"][0]["waiting_admission"] == 7
    assert doc["totals"]["waiting_admission"] == 7


def test_tasks_waiting_for_a_rate_limit_are_counted_apart(settings: Any, redis_server: Any, prefix: str) -> None:
    with Dispatcher(settings) as d:
        ratelimits.define(d.gateway, KeySpace(prefix), "api", 60.0, 5)
        d.submit_many([Task(capability="quota", payload=i, rate_limits={"api": 1}) for i in range(4)])
        stats = collect(d.gateway, KeySpace(prefix))
    (cap,) = stats.capabilities
    assert (cap.waiting, cap.waiting_admission, cap.waiting_limit) == (0, 0, 4)
    assert cap.workers_needed == 0  # a quota holds them back: more workers would not help
    assert stats_json(stats)["totals"]["waiting_limit"] == 4
    assert "FLOW: quota: 0 waiting for admission (more workers help), 4 waiting for a rate limit, 0 for a key's" in (
        stats_table(stats)
    )


def test_tasks_waiting_in_fair_queues_count_as_waiting_for_admission(
    settings: Any, redis_server: Any, prefix: str
) -> None:
    with Dispatcher(settings) as d:
        d.submit_many([Task(capability="tenanted", payload=i, fairness_key=f"t{i % 3}") for i in range(7)])
        d.submit("tenanted", "plain")
        stats = collect(d.gateway, KeySpace(prefix))
    (cap,) = stats.capabilities
    assert (cap.waiting, cap.waiting_admission, cap.waiting_limit) == (1, 7, 0)


def test_tasks_waiting_for_a_keys_permit_are_counted_apart(settings: Any, redis_server: Any, prefix: str) -> None:
    with Dispatcher(settings) as d:
        ratelimits.set_concurrency(d.gateway, KeySpace(prefix), "repo", 2)
        ratelimits.define(d.gateway, KeySpace(prefix), "api", 60.0, 5)
        d.submit_many([Task(capability="repo", payload=i, concurrency_key="r1") for i in range(3)])
        d.submit("repo", "both", concurrency_key="r1", rate_limits={"api": 1})  # counted as waiting for the limit
        stats = collect(d.gateway, KeySpace(prefix))
    (cap,) = stats.capabilities
    assert (cap.waiting_admission, cap.waiting_limit, cap.waiting_key) == (0, 1, 3)
    assert stats_json(stats)["totals"]["waiting_key"] == 3

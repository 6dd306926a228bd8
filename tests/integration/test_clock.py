"""Due times, expiry and liveness are decided by Redis' clock, not by a worker's (issue 11, item 14): a worker
whose clock runs 30 s ahead, holding the mover's lease, neither starts delayed tasks or retries early nor
dead-letters a task as expired that has time left, and it looks alive all along."""

from __future__ import annotations

import time

import pytest
import redis
from apps.faulty import Ledger
from conftest import WorkerRunner
from helpers import wait_until, worker_log

from dispatcher import Dispatcher
from dispatcher.fleet.stats import collect
from dispatcher.producer import shared
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
DEADLINE_S = 30.0


def test_a_worker_30_s_ahead_keeps_to_redis_clock(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    worker = run_worker("--capability", "skewed.run", *TIMERS, app="apps.skewed", env={"FAULTY_LEDGER": ledger.path})
    wait_until(lambda: "worker started" in worker_log(worker), DEADLINE_S, message=worker_log(worker))
    submitted = time.time()
    delayed = dispatcher.submit("skewed.run", {}, delay_s=3)
    retried = dispatcher.submit("skewed.run", {"retry_after_s": 3})
    expiring = dispatcher.submit("skewed.run", {}, expires_at=time.time() + 20)

    assert expiring.result(timeout_s=DEADLINE_S) == 1, "dead-lettered as expired by a clock 30 s ahead"
    gateway = Gateway(client, dispatcher.settings.redis_url)
    seen_alive = []
    deadline = time.monotonic() + DEADLINE_S
    while not (delayed.status() == "succeeded" and retried.status() == "succeeded"):
        assert time.monotonic() < deadline, worker_log(worker)
        stats = collect(gateway, KeySpace(prefix))
        seen_alive.append(all(w.alive for w in stats.workers) and bool(stats.workers))
        time.sleep(0.2)
    starts = {(r["task"], r["attempt"]): r["t"] for r in ledger.records("start")}
    delayed_after = starts[(delayed.id, 1)] - submitted
    retry_gap = starts[(retried.id, 2)] - starts[(retried.id, 1)]
    print(f"\ndelay_s=3 started after {delayed_after:.2f} s; a 3 s retry came {retry_gap:.2f} s later")
    assert delayed_after >= 2.9, "a delayed task started early"
    assert retry_gap >= 2.9, "a retry started early"
    assert all(seen_alive), "the worker's liveness flapped"


def test_a_producer_whose_clock_is_wrong_still_delays_by_what_it_asked(
    client: redis.Redis, dispatcher: Dispatcher, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer 30 s behind started ``delay_s=15`` tasks at once (its due time was in Redis' past), one 30 s
    ahead held them 45 s: the delay is now added to Redis' clock by the submit script."""
    keys = KeySpace(prefix).capability("echo")
    real_time = time.time
    for skew_s in (-30.0, 30.0):
        monkeypatch.setattr(shared.time, "time", lambda skew_s=skew_s: real_time() + skew_s)
        seconds, micros = client.time()
        before_ms = seconds * 1000 + micros // 1000
        handle = dispatcher.submit("echo", skew_s, delay_s=15)
        monkeypatch.undo()
        due = client.zscore(keys.delayed, handle.id)
        assert due is not None, f"not delayed with the producer's clock {skew_s:+.0f} s off"
        delay_s = (due - before_ms) / 1000
        assert 14.0 <= delay_s <= 16.0, f"delayed {delay_s:.1f} s by Redis' clock with the producer {skew_s:+.0f} s off"

"""Due times, expiry and liveness are decided by Redis' clock, not by a worker's (issue 11, item 14): a worker
whose clock runs 30 s ahead, holding the mover's lease, neither starts delayed tasks or retries early nor
dead-letters a task as expired that has time left, and it looks alive all along."""

from __future__ import annotations

import time

import redis
from apps.faulty import Ledger
from conftest import WorkerRunner
from helpers import wait_until, worker_log

from dispatcher import Dispatcher
from dispatcher.fleet.stats import collect
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

"""A sync handler past its ``timeout_s``, run by a real worker (README, Semantics: Timeouts): the attempt is failed
and retried at the timeout, its thread runs on until the function returns, its late result is discarded, and its
slot stays taken until then, so the worker never runs more than ``--concurrency`` handler threads.

The handler (``apps.gated``) blocks until the test creates its gate file, so the test decides when the
timed-out thread returns; each run's ``start`` record says how many runs were inside the handler at that moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from apps.faulty import LEDGER_ENV, Ledger, worker_record
from conftest import WorkerRunner
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Task
from dispatcher.store import codec
from dispatcher.store.keys import GROUP, KeySpace

CAP = "gated.sync"
CONCURRENCY = 2
TIMEOUT_S = 0.5
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
BACKOFF = ("--backoff-base-s", "0.05", "--backoff-jitter", "0")
DEADLINE_S = 30.0
WINDOW_S = 1.0
"""How long the test watches that a queued task is not taken: five of the worker's 200 ms reads."""


def start(run_worker: WorkerRunner, client: redis.Redis, prefix: str, ledger: Ledger) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = run_worker(
        "--capability", CAP, "--concurrency", str(CONCURRENCY), *TIMERS, *BACKOFF,
        app="apps.gated", env={LEDGER_ENV: ledger.path},
    )  # fmt: skip
    wait_until(lambda: worker_record(client, prefix, proc.pid), DEADLINE_S, message="the worker to register")
    return proc


def inflight_since(client: redis.Redis, prefix: str, pid: int, since: float) -> int | None:
    """The worker's published ``inflight`` (held entries + stray threads) from a heartbeat after ``since``."""
    found = worker_record(client, prefix, pid)
    return found.inflight if found is not None and found.last_seen > since else None


def test_a_sync_handler_past_its_timeout_is_retried_while_its_thread_keeps_a_slot(
    client: redis.Redis,
    dispatcher: Dispatcher,
    run_worker: WorkerRunner,
    ledger: Ledger,
    prefix: str,
    tmp_path: Path,
) -> None:
    keys = KeySpace(prefix).capability(CAP)
    stray_gate, busy_gate = tmp_path / "stray-gate", tmp_path / "busy-gate"
    worker = start(run_worker, client, prefix, ledger)
    record = worker_record(client, prefix, worker.pid)
    assert record is not None
    consumer = record.consumer

    # Attempt 1 blocks past its timeout; attempt 2 (the retry) returns at once.
    payload = {"tag": "A", "gate": str(stray_gate), "gate_attempts": [1]}
    timed_out = dispatcher.submit(CAP, payload, timeout_s=TIMEOUT_S, max_retries=1)
    value = timed_out.result(timeout_s=DEADLINE_S)
    returned_at = time.time()
    assert (value["tag"], value["attempt"]) == ("A", 2)

    first, second = ledger.records("start", timed_out.id)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert second["t"] - first["t"] >= TIMEOUT_S - 0.01, "retried before the timeout"
    assert first["thread"] != second["thread"], "the retry ran on the thread still held by attempt 1"
    assert [r["attempt"] for r in ledger.records("end", timed_out.id)] == [2], "attempt 1 is still in its thread"
    assert "sync handler past its timeout" in worker_log(worker)
    print(f"\nretry started {second['t'] - first['t']:.3f} s after attempt 1 (timeout_s={TIMEOUT_S})")

    # Nothing is held any more, but the stray thread keeps a slot: the worker publishes inflight 1.
    wait_until(
        lambda: inflight_since(client, prefix, worker.pid, returned_at) == 1,
        DEADLINE_S,
        message="inflight 1 (the stray thread) after the task settled",
    )

    # Two more tasks, both blocking: the stray and the first of them fill the 2 slots, so the second is not even
    # read (it stays undelivered in the stream) until the stray thread returns.
    queued = dispatcher.submit_many(
        [Task(capability=CAP, payload={"tag": tag, "gate": str(busy_gate)}) for tag in ("B", "C")]
    )
    ids = [h.id for h in queued]
    wait_until(
        lambda: sum(len(ledger.records("start", i)) for i in ids) == 1,
        DEADLINE_S,
        message="exactly one of the two tasks to start",
    )
    took_at = time.time()
    wait_until(lambda: inflight_since(client, prefix, worker.pid, took_at) == 2, DEADLINE_S, message="inflight 2")
    deadline = time.monotonic() + WINDOW_S
    while time.monotonic() < deadline:  # sampling over several read cycles, not synchronisation
        assert len(client.xpending_range(keys.stream, GROUP, "-", "+", 10, consumername=consumer)) == 1
        assert int(client.xinfo_groups(keys.stream)[0]["lag"]) == 1, "read the second task with no slot free"
        time.sleep(0.05)
    assert sum(len(ledger.records("start", i)) for i in ids) == 1

    stray_gate.touch()  # attempt 1's thread returns: its slot is free, the second task is read and started
    wait_until(lambda: all(ledger.records("start", i) for i in ids), DEADLINE_S, message="the second task to start")
    events = [(r["event"], r["task"], r["attempt"]) for r in ledger.records()]
    assert events.index(("end", timed_out.id, 1)) < max(events.index(("start", i, 1)) for i in ids)

    busy_gate.touch()
    assert [h.result(timeout_s=DEADLINE_S)["tag"] for h in queued] == ["B", "C"]
    # Attempt 1's late result was discarded: the stored result is still attempt 2's.
    stored = codec.decode_outcome(client.get(keys.result(timed_out.id)), 1 << 20)
    assert (stored.status, stored.attempt, stored.value["attempt"]) == ("succeeded", 2, 2)

    starts = ledger.records("start")
    print(f"\nhandler runs inside at each start: {[r['active'] for r in starts]}")
    assert max(r["active"] for r in starts) == CONCURRENCY, "never more handler runs at once than --concurrency"
    assert len({r["thread"] for r in starts}) == CONCURRENCY
    idle_after = time.time()
    wait_until(lambda: inflight_since(client, prefix, worker.pid, idle_after) == 0, DEADLINE_S, message="inflight 0")
    os.kill(worker.pid, signal.SIGTERM)
    assert wait_exit(worker, timeout_s=15) == 0, worker_log(worker)

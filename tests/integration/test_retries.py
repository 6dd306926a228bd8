"""Failures a handler reports, with real worker processes: backoff and max_retries, Retry, Reject, delays,
expiry, idempotency, undecodable entries, the circuit breaker, and requeueing a dead letter.

Every handler run is written to a ledger file (``apps.faulty``) with its time, so the tests count runs and
measure the gaps between attempts.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from apps.faulty import FAIL_FLAG_ENV, LEDGER_ENV, Ledger, worker_record
from conftest import WorkerRunner
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Task, TaskDead
from dispatcher.fleet.deadletters import DeadLetters
from dispatcher.store import codec
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
BACKOFF = ("--backoff-base-s", "0.05", "--backoff-max-s", "0.2", "--backoff-factor", "2", "--backoff-jitter", "0")
DEADLINE_S = 30.0
EARLY_SLACK_S = 0.01
"""How much earlier than its due time a run may be recorded: due times and ledger times are both the host's
``time.time()``, rounded to the millisecond on the way through Redis. How *late* a due task starts is the
mover's speed (it runs every 0.1 s): printed here, not asserted."""


def start(run_worker: WorkerRunner, ledger: Ledger, capability: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker of ``apps.faulty`` writing to ``ledger``, with short timers and a fast, exact backoff."""
    return run_worker(  # type: ignore[no-any-return]
        "--capability", capability, *TIMERS, *BACKOFF, *args, app="apps.faulty", env={LEDGER_ENV: ledger.path, **env}
    )


def circuit(client: redis.Redis, prefix: str, proc: subprocess.Popen[bytes], capability: str) -> str:
    """The circuit state the worker ``proc`` last published for ``capability`` ("" before its first beat)."""
    assert proc.poll() is None, f"worker exited with {proc.returncode}\n{worker_log(proc)}"
    found = worker_record(client, prefix, proc.pid)
    return found.circuits.get(capability, "") if found else ""


def dead_letters(client: redis.Redis, prefix: str, capability: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(KeySpace(prefix).capability(capability).dead)]


def test_failures_retry_with_backoff_then_dead_letter_max_retries(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    # 6 failures in a row (doomed 4, healed 2) would trip the default breaker threshold of 5 and could hold a
    # retry for the cool-down; this test is about backoff (the breaker has tests of its own).
    worker = start(run_worker, ledger, "faulty.flaky", "--breaker-threshold", "10")
    doomed = dispatcher.submit("faulty.flaky", {"fail_times": 100}, max_retries=3)
    healed = dispatcher.submit("faulty.flaky", {"fail_times": 2}, max_retries=3)

    with pytest.raises(TaskDead) as caught:
        doomed.result(timeout_s=DEADLINE_S)
    dead = caught.value
    assert (dead.reason, dead.error_type, dead.error_message) == (
        "max_retries",
        "ValueError",
        "flaky failure on attempt 4",
    )
    assert "Traceback" in dead.traceback and "raise ValueError" in dead.traceback
    assert healed.result(timeout_s=DEADLINE_S) == 3

    runs = ledger.records("start", doomed.id)
    assert [r["attempt"] for r in runs] == [1, 2, 3, 4], "1 run + max_retries retries"
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(runs)]
    expected = [0.05, 0.1, 0.2]  # base 0.05, factor 2, capped at 0.2, no jitter
    print(f"\nretry gaps {[round(g, 3) for g in gaps]} s for backoff {expected} s")
    for gap, delay in zip(gaps, expected, strict=True):  # each retry waits out its own, growing delay
        assert gap >= delay - EARLY_SLACK_S, (gaps, worker_log(worker))
    assert [r["attempt"] for r in ledger.records("start", healed.id)] == [1, 2, 3]

    (letter,) = dead_letters(client, prefix, "faulty.flaky")
    assert (letter[b"reason"], letter[b"task_id"].decode(), int(letter[b"attempt"])) == (
        b"max_retries",
        doomed.id,
        4,
    )
    error = codec.unpack(letter[b"error"], 1 << 20)
    assert (error["type"], error["message"]) == ("ValueError", "flaky failure on attempt 4")
    assert "raise ValueError" in error["traceback"]


def test_retry_signal_delay_is_honoured(dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger) -> None:
    start(run_worker, ledger, "faulty.retry")
    handle = dispatcher.submit("faulty.retry", {"retry_delay_s": 1.0})

    assert handle.result(timeout_s=DEADLINE_S) == 2
    first, second = ledger.records("start", handle.id)
    waited_s = second["t"] - first["t"]
    print(f"\nRetry(delay_s=1.0) waited {waited_s:.3f} s")
    assert waited_s >= 1.0 - EARLY_SLACK_S  # the handler's delay, not the backoff's 0.05 s


def test_reject_dead_letters_at_once(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    start(run_worker, ledger, "faulty.reject")
    handle = dispatcher.submit("faulty.reject", {"reason": "not my kind of task"}, max_retries=5)

    with pytest.raises(TaskDead) as caught:
        handle.result(timeout_s=DEADLINE_S)
    assert (caught.value.reason, caught.value.error_message) == ("rejected", "not my kind of task")
    assert ledger.count("start", handle.id) == 1
    (letter,) = dead_letters(client, prefix, "faulty.reject")
    assert letter[b"reason"] == b"rejected"


def test_delayed_submit_does_not_start_early(dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger) -> None:
    start(run_worker, ledger, "faulty.ledger")
    submitted_at = time.time()
    handle = dispatcher.submit("faulty.ledger", {"tag": "later"}, delay_s=1)

    assert handle.result(timeout_s=DEADLINE_S) == "later"
    (run,) = ledger.records("start", handle.id)
    waited_s = run["t"] - submitted_at
    print(f"\nsubmit(delay_s=1) started after {waited_s:.3f} s")
    assert waited_s >= 1.0 - EARLY_SLACK_S


def test_expired_task_is_dead_lettered_without_running(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    start(run_worker, ledger, "faulty.ledger")
    expired = dispatcher.submit("faulty.ledger", {"tag": "too late"}, expires_at=time.time() - 1)
    fresh = dispatcher.submit("faulty.ledger", {"tag": "in time"}, expires_at=time.time() + 60)

    with pytest.raises(TaskDead) as caught:
        expired.result(timeout_s=DEADLINE_S)
    assert caught.value.reason == "expired"
    assert fresh.result(timeout_s=DEADLINE_S) == "in time"
    assert ledger.count("start", expired.id) == 0
    assert [f[b"reason"] for f in dead_letters(client, prefix, "faulty.ledger")] == [b"expired"]


def test_idempotency_key_runs_once(dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger) -> None:
    first = dispatcher.submit("faulty.ledger", {"tag": "first"}, idempotency_key="order-42")
    again = dispatcher.submit("faulty.ledger", {"tag": "second"}, idempotency_key="order-42")
    assert again.id == first.id
    start(run_worker, ledger, "faulty.ledger")

    assert first.result(timeout_s=DEADLINE_S) == again.result(timeout_s=DEADLINE_S) == "first"
    assert ledger.count("start", first.id) == 1
    after_run = dispatcher.submit("faulty.ledger", {"tag": "third"}, idempotency_key="order-42")
    assert after_run.id == first.id
    assert len(ledger.records("start")) == 1


def test_undecodable_entry_is_dead_lettered_and_the_batch_runs(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("faulty.ledger")
    before = dispatcher.submit("faulty.ledger", {"tag": "before"})
    garbage_id = client.xadd(keys.stream, {"v": "1", "task": b"\xc1\xc1garbage", "attempt": "1"}).decode()
    after = dispatcher.submit("faulty.ledger", {"tag": "after"})
    worker = start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")  # one read takes all three

    assert [before.result(timeout_s=DEADLINE_S), after.result(timeout_s=DEADLINE_S)] == ["before", "after"]
    letters = wait_until(lambda: dead_letters(client, prefix, "faulty.ledger"), timeout_s=DEADLINE_S)
    ((letter),) = letters
    assert (letter[b"reason"], letter[b"entry_id"].decode()) == (b"decode_error", garbage_id)
    assert worker.poll() is None, worker_log(worker)
    assert dispatcher.submit("faulty.ledger", {"tag": "still"}).result(timeout_s=DEADLINE_S) == "still"
    assert client.xlen(keys.stream) == 0


def test_circuit_breaker_stops_a_broken_worker_and_recovers(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str, tmp_path: Path
) -> None:
    cap = "faulty.breakable"
    flag = tmp_path / "broken"
    flag.touch()
    broken = start(
        run_worker, ledger, cap, "--concurrency", "1", "--breaker-cooldown-s", "2", **{FAIL_FLAG_ENV: str(flag)}
    )
    handles = dispatcher.submit_many([Task(capability=cap, payload={"tag": i}, max_retries=0) for i in range(20)])

    wait_until(lambda: circuit(client, prefix, broken, cap) == "open", timeout_s=DEADLINE_S, message="circuit open")
    tripped_after = len(dead_letters(client, prefix, cap))
    assert tripped_after == 5, "the breaker opens after breaker_threshold (5) consecutive failures"

    healthy = start(run_worker, ledger, cap, "--concurrency", "4")
    settled = []
    for h in handles:
        try:
            settled.append(h.result(timeout_s=DEADLINE_S))
        except TaskDead as e:
            assert (e.reason, e.error_type) == ("max_retries", "RuntimeError")
    assert len(settled) >= 13 and set(settled) == {healthy.pid}, "the healthy worker drained the rest"
    dead = dead_letters(client, prefix, cap)
    print(f"\nbroken worker dead-lettered {len(dead)} of 20 tasks; healthy worker ran {len(settled)}")
    assert len(dead) <= 7, "a broken worker must not drain the queue into the dead-letter stream"
    record = worker_record(client, prefix, broken.pid)
    assert record is not None
    assert {f[b"worker"].decode() for f in dead} == {record.consumer}, "only the broken worker failed tasks"

    os.kill(healthy.pid, signal.SIGTERM)
    assert wait_exit(healthy, timeout_s=15) == 0
    flag.unlink()  # the dependency is back
    later = dispatcher.submit_many([Task(capability=cap, payload={"tag": i}, max_retries=0) for i in range(3)])
    assert [h.result(timeout_s=DEADLINE_S) for h in later] == [broken.pid] * 3, "half-open trial, then closed"
    wait_until(lambda: circuit(client, prefix, broken, cap) == "closed", timeout_s=DEADLINE_S)


def test_a_late_success_that_closes_the_circuit_lets_the_worker_read_at_once(
    dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger
) -> None:
    # A task taken before the circuit opened may still succeed, which closes the circuit again; the worker must
    # then read at once, not sleep out the whole cool-down it planned while the circuit was open. (That sleep
    # was the 5.0 s retry gap once seen in the backoff test above: its 6 failures trip the default threshold 5.)
    cap = "faulty.flaky"
    cooldown_s = 60.0  # far beyond the read "at once" this test expects; result() below gives up after 30 s
    breaker = ("--breaker-threshold", "1", "--breaker-cooldown-s", str(cooldown_s))
    start(run_worker, ledger, cap, "--concurrency", "2", *breaker)
    slow, failing = dispatcher.submit_many(
        [
            Task(capability=cap, payload={"fail_times": 0, "sleep_s": 0.5}, max_retries=0),
            Task(capability=cap, payload={"fail_times": 1}, max_retries=0),
        ]
    )
    with pytest.raises(TaskDead):
        failing.result(timeout_s=DEADLINE_S)  # its failure opens the circuit (threshold 1) ...
    assert slow.result(timeout_s=DEADLINE_S) == 1  # ... and this late success closes it
    closed_at = time.time()
    after = dispatcher.submit(cap, {"fail_times": 0})

    assert after.result(timeout_s=DEADLINE_S) == 1
    (run,) = ledger.records("start", after.id)
    waited_s = run["t"] - closed_at
    print(f"\nfirst task after the circuit closed started after {waited_s:.3f} s")
    # The bound separates reading at once from sleeping out the cool-down: half of it either way.
    assert waited_s < cooldown_s / 2, "the worker slept out the cool-down of a circuit that was closed again"


def test_a_half_open_trial_that_asks_for_a_retry_does_not_wedge_the_capability(
    dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger
) -> None:
    # A half-open trial ending in Retry (or Reject) gives no verdict on the worker; the next trial must be let
    # through, or the capability is never read on this worker again.
    cap = "faulty.flaky"
    start(run_worker, ledger, cap, "--breaker-threshold", "1", "--breaker-cooldown-s", "0.2")
    with pytest.raises(TaskDead):
        dispatcher.submit(cap, {"fail_times": 1}, max_retries=0).result(timeout_s=DEADLINE_S)  # opens the circuit
    trial = dispatcher.submit(cap, {"retry_times": 1}, max_retries=3)  # the trial raises Retry once, then succeeds
    later = dispatcher.submit(cap, {"fail_times": 0})
    assert trial.result(timeout_s=DEADLINE_S) is not None
    assert later.result(timeout_s=DEADLINE_S) == 1


def test_requeued_dead_letter_runs_to_success(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str, tmp_path: Path
) -> None:
    cap = "faulty.breakable"
    flag = tmp_path / "broken"
    flag.touch()
    worker = start(run_worker, ledger, cap, **{FAIL_FLAG_ENV: str(flag)})
    handle = dispatcher.submit(cap, {"tag": "again"}, max_retries=0)
    with pytest.raises(TaskDead):
        handle.result(timeout_s=DEADLINE_S)

    flag.unlink()
    letters = DeadLetters(Gateway(client, dispatcher.settings.redis_url), KeySpace(prefix), 1 << 20)
    assert letters.requeue(cap, [handle.id]) == (1, [])

    assert handle.result(timeout_s=DEADLINE_S) == worker.pid
    assert [r["attempt"] for r in ledger.records("start", handle.id)] == [1, 1], "a fresh attempt count"
    assert dead_letters(client, prefix, cap) == []

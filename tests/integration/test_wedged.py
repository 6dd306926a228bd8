"""Wedged workers, with real worker processes: a consumer name used twice, an event loop blocked by a handler,
sync handlers hung past their timeout, a handler that ignores its cancellation (issue 11, items 1, 3 and 15).

Timers: heartbeat TTL 2 s, reaper every 0.5 s; deadlines are generous, figures are printed, not asserted."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import redis
from apps.faulty import LEDGER_ENV, Ledger
from conftest import WorkerRunner
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Task

TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
DEADLINE_S = 30.0


def start(run_worker: WorkerRunner, ledger: Ledger, capability: str, *args: str) -> subprocess.Popen[bytes]:
    return run_worker(  # type: ignore[no-any-return]
        "--capability", capability, *TIMERS, *args, app="apps.faulty", env={LEDGER_ENV: ledger.path}
    )


def starts(ledger: Ledger, task_id: str) -> list[int]:
    return [r["pid"] for r in ledger.records("start", task_id)]


def test_a_second_worker_with_a_live_name_refuses_to_start_and_runs_nothing(
    dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger
) -> None:
    first = start(run_worker, ledger, "faulty.ledger", "--name", "dup", "--concurrency", "4")
    handles = dispatcher.submit_many(
        [Task(capability="faulty.ledger", payload={"first_sleep_s": 60, "tag": i}) for i in range(4)]
    )
    wait_until(lambda: all(starts(ledger, h.id) for h in handles), DEADLINE_S, message=worker_log(first))
    second = start(run_worker, ledger, "faulty.ledger", "--name", "dup")
    code = wait_exit(second, timeout_s=DEADLINE_S)
    err = second.stderr_path.read_text()  # type: ignore[attr-defined]
    assert code == 2, worker_log(second)
    assert [line for line in err.splitlines() if "error:" in line] == [
        "worker: error: consumer name 'dup' is held by another live worker (its heartbeat is fresh): give each "
        "worker its own --name, or leave --name unset for a unique one"
    ]
    assert all(starts(ledger, h.id) == [first.pid] for h in handles), "the second worker re-ran the first's tasks"

    # The name's holder dies: its tasks come back to a worker of another name, as for any dead worker.
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    rescuer = start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")
    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [0, 1, 2, 3], worker_log(rescuer)


def test_a_handler_that_blocks_the_event_loop_stops_the_heartbeat_and_its_tasks_move_on(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    blocked = start(run_worker, ledger, "faulty.block_loop", "--capability", "faulty.ledger", "--concurrency", "4")
    wait_until(lambda: "worker started" in worker_log(blocked), DEADLINE_S, message=worker_log(blocked))
    # One read takes the blocking task and three ordinary ones; the first blocks the loop for 60 s, so the other
    # three are held by a worker that cannot run them, and only its silent heartbeat can free them.
    wedge, *held = dispatcher.submit_many(
        [
            Task(capability="faulty.block_loop", payload={"sleep_s": 60}),
            *(Task(capability="faulty.ledger", payload={"tag": i}) for i in range(3)),
        ]
    )
    wait_until(lambda: starts(ledger, wedge.id), DEADLINE_S, message=worker_log(blocked))
    helper = start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")
    began = time.monotonic()
    assert [h.result(timeout_s=DEADLINE_S) for h in held] == [0, 1, 2], worker_log(helper)
    took = time.monotonic() - began
    print(f"\nthe blocked worker's tasks done elsewhere {took:.1f} s later (its loop is blocked 60 s)")
    assert all(starts(ledger, h.id) == [helper.pid] for h in held)
    wait_until(lambda: "event loop blocked" in worker_log(blocked), DEADLINE_S, message=worker_log(blocked))
    log = worker_log(blocked)
    assert "in block_loop" in log, "the blocking stack names the handler"
    assert log.count("event loop blocked") == 1, "the stack is logged once per stall"


def test_sync_handlers_hung_past_their_timeout_make_the_worker_exit_non_zero_and_hand_back(
    dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger
) -> None:
    stuck = start(
        run_worker, ledger, "faulty.hang", "--capability", "faulty.ledger", "--concurrency", "2", "--hung-exit-s", "2"
    )
    hangs = dispatcher.submit_many(
        [Task(capability="faulty.hang", payload={"sleep_s": 120}, timeout_s=0.5, max_retries=0) for _ in range(2)]
    )
    wait_until(lambda: all(starts(ledger, h.id) for h in hangs), DEADLINE_S, message=worker_log(stuck))
    ordinary = dispatcher.submit_many([Task(capability="faulty.ledger", payload={"tag": i}) for i in range(4)])
    code = wait_exit(stuck, timeout_s=DEADLINE_S)
    assert code == 1, worker_log(stuck)
    assert "handler threads running past their timeout" in stuck.stderr_path.read_text()  # type: ignore[attr-defined]
    start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")
    assert [h.result(timeout_s=DEADLINE_S) for h in ordinary] == list(range(4))


def test_a_handler_that_ignores_its_cancellation_does_not_hold_the_worker_past_its_grace(
    dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger
) -> None:
    worker = start(run_worker, ledger, "faulty.stubborn", "--grace-s", "1")
    handle = dispatcher.submit("faulty.stubborn", {"sleep_s": 30})
    wait_until(lambda: starts(ledger, handle.id), DEADLINE_S, message=worker_log(worker))
    signalled = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    assert wait_exit(worker, timeout_s=15) == 0, worker_log(worker)
    print(f"\nexited {time.monotonic() - signalled:.1f} s after SIGTERM with grace_s 1 (the handler ran 30 s)")
    assert ledger.records("cancel ignored", handle.id), "the handler was cancelled and ignored it"
    assert handle.status() == "queued", "handed back to the fleet"

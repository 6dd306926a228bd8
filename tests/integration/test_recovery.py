"""Crash recovery with real worker processes: kill -9, SIGTERM (once and twice), slow live tasks, a paused
("zombie") worker's late result, poison tasks.

Every handler run is written to a ledger file (``apps.faulty``), so the tests count executions exactly:
at-least-once means each task ends at least once and none is lost; where the design promises more (a
graceful stop, a live slow task), each task runs exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
import redis
from apps.faulty import LEDGER_ENV, Ledger, worker_record
from conftest import WorkerRunner
from helpers import free_tcp_port, sample_value, scrape, wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Task, TaskDead
from dispatcher.store import codec
from dispatcher.store.keys import GROUP, KeySpace

HEARTBEAT_TTL_S = 2.0
REAPER_INTERVAL_S = 0.5
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
DEADLINE_S = 30.0


def start(run_worker: WorkerRunner, ledger: Ledger, capability: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker of ``apps.faulty`` writing to ``ledger``, with short timers."""
    return run_worker(  # type: ignore[no-any-return]
        "--capability", capability, *TIMERS, *args, app="apps.faulty", env={LEDGER_ENV: ledger.path, **env}
    )


def ready(client: redis.Redis, prefix: str, proc: subprocess.Popen[bytes]) -> float:
    """Wait until ``proc`` has beaten once (it is about to read); returns the time it was seen."""

    def seen() -> bool:
        assert proc.poll() is None, f"worker exited with {proc.returncode}\n{worker_log(proc)}"
        return worker_record(client, prefix, proc.pid) is not None

    wait_until(seen, timeout_s=DEADLINE_S, message=f"worker {proc.pid} to register")
    return time.time()


def started_on(ledger: Ledger, task_ids: list[str], pid: int) -> bool:
    return all(any(r["pid"] == pid for r in ledger.records("start", t)) for t in task_ids)


def in_log(proc: subprocess.Popen[bytes], text: str) -> bool:
    return text in worker_log(proc)


def test_kill_9_with_tasks_in_flight_loses_none(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    victim = start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")
    ready(client, prefix, victim)
    tasks = [Task(capability="faulty.ledger", payload={"first_sleep_s": 60, "tag": i}) for i in range(4)]
    handles = dispatcher.submit_many(tasks)
    ids = [h.id for h in handles]
    wait_until(lambda: started_on(ledger, ids, victim.pid), timeout_s=DEADLINE_S, message="all 4 running")
    rescuer = start(run_worker, ledger, "faulty.ledger", "--concurrency", "4")
    ready(client, prefix, rescuer)

    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [0, 1, 2, 3]
    for task_id in ids:
        assert ledger.count("end", task_id) >= 1, f"task {task_id} lost"
        rerun = ledger.records("start", task_id)[-1]
        assert (rerun["pid"], rerun["attempt"]) == (rescuer.pid, 2)
    restarts = [r["t"] for r in ledger.records("start") if r["pid"] == rescuer.pid]
    # How fast is scripts/chaos's to measure (docs/reliability.md); here it is only shown.
    print(
        f"\nreclaim time after kill -9: {min(restarts) - killed_at:.2f} s (first task) .. "
        f"{max(restarts) - killed_at:.2f} s (last), heartbeat TTL {HEARTBEAT_TTL_S} s + reaper {REAPER_INTERVAL_S} s"
    )
    assert rescuer.poll() is None


def test_sigterm_finishes_in_flight_and_leaves_unstarted_tasks_to_others(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("faulty.ledger")
    stopping = start(run_worker, ledger, "faulty.ledger", "--concurrency", "2", "--grace-s", "10")
    ready(client, prefix, stopping)
    running = dispatcher.submit_many(
        [Task(capability="faulty.ledger", payload={"sleep_s": 1.5, "tag": f"long{i}"}) for i in range(2)]
    )
    wait_until(lambda: started_on(ledger, [h.id for h in running], stopping.pid), timeout_s=DEADLINE_S)
    waiting = dispatcher.submit_many([Task(capability="faulty.ledger", payload={"tag": f"short{i}"}) for i in range(3)])

    os.kill(stopping.pid, signal.SIGTERM)
    wait_until(lambda: in_log(stopping, "stopping gracefully"), timeout_s=DEADLINE_S, message="the signal to land")
    # Pull balancing: the stopping worker holds only what it runs; the 3 others were never delivered.
    assert client.xpending(keys.stream, GROUP)["pending"] == 2
    rescuer = start(run_worker, ledger, "faulty.ledger", "--concurrency", "3")
    rescuer_ready = ready(client, prefix, rescuer)

    assert [h.result(timeout_s=DEADLINE_S) for h in waiting] == ["short0", "short1", "short2"]
    assert wait_exit(stopping, timeout_s=15) == 0, worker_log(stopping)
    assert [h.result(timeout_s=1) for h in running] == ["long0", "long1"]
    for h in running:  # finished within the grace period by the worker that started them, once
        assert [(r["event"], r["pid"]) for r in ledger.records(task_id=h.id)] == [
            ("start", stopping.pid),
            ("end", stopping.pid),
        ]
    for h in waiting:
        assert [(r["event"], r["pid"]) for r in ledger.records(task_id=h.id)] == [
            ("start", rescuer.pid),
            ("end", rescuer.pid),
        ]
    waited_s = max(r["t"] for h in waiting for r in ledger.records("start", h.id)) - rescuer_ready
    print(f"\nthe last unstarted task started {waited_s:+.2f} s after the rescuer was seen registered")
    assert "transitions not recorded" not in worker_log(stopping)


def test_sigterm_hands_back_a_task_still_running_after_the_grace_period(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    stopping = start(run_worker, ledger, "faulty.ledger", "--concurrency", "1", "--grace-s", "0.3")
    ready(client, prefix, stopping)
    handle = dispatcher.submit("faulty.ledger", {"first_sleep_s": 60, "tag": "stuck"})
    wait_until(lambda: started_on(ledger, [handle.id], stopping.pid), timeout_s=DEADLINE_S)
    rescuer = start(run_worker, ledger, "faulty.ledger", "--concurrency", "1")
    ready(client, prefix, rescuer)

    signalled_at = time.time()
    os.kill(stopping.pid, signal.SIGTERM)

    assert handle.result(timeout_s=DEADLINE_S) == "stuck"
    assert wait_exit(stopping, timeout_s=15) == 0, worker_log(stopping)
    first, second = ledger.records("start", handle.id)
    # Handed back by the stopping worker itself, not reclaimed by the reaper once its heartbeat was gone: a
    # hand-back is not an attempt (the rescuer runs attempt 1 again), a reclaim counts one (attempt 2). The
    # attempt tells the two apart; a time bound could not (after a clean exit deletes the heartbeat, the
    # reaper needs only a reaper interval, no heartbeat TTL).
    assert (first["pid"], second["pid"], first["attempt"], second["attempt"]) == (stopping.pid, rescuer.pid, 1, 1)
    assert "finished_in_grace=0 handed_back=1" in worker_log(stopping)
    print(f"\nrestarted on the rescuer {second['t'] - signalled_at:.2f} s after SIGTERM (grace 0.3 s)")


def test_second_sigterm_exits_at_once_and_the_reaper_recovers(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    stopping = start(run_worker, ledger, "faulty.ledger", "--concurrency", "2", "--grace-s", "30")
    ready(client, prefix, stopping)
    handles = dispatcher.submit_many(
        [Task(capability="faulty.ledger", payload={"first_sleep_s": 60, "tag": i}) for i in range(2)]
    )
    wait_until(lambda: started_on(ledger, [h.id for h in handles], stopping.pid), timeout_s=DEADLINE_S)
    rescuer = start(run_worker, ledger, "faulty.ledger", "--concurrency", "2")
    ready(client, prefix, rescuer)

    os.kill(stopping.pid, signal.SIGTERM)
    wait_until(lambda: in_log(stopping, "stopping gracefully"), timeout_s=DEADLINE_S, message="the first signal")
    second_at = time.monotonic()
    os.kill(stopping.pid, signal.SIGTERM)
    # At once, not after the grace: exit code 130 is the second signal's (a graceful stop exits 0), and the
    # deadline is half the 30 s grace that a graceful stop would wait out (its tasks sleep 60 s).
    code = wait_exit(stopping, timeout_s=15)
    assert code == 130, worker_log(stopping)
    print(f"\nexited {time.monotonic() - second_at:.3f} s after the second signal")

    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [0, 1]
    for h in handles:
        runs = ledger.records("start", h.id)
        assert [(r["pid"], r["attempt"]) for r in runs] == [(stopping.pid, 1), (rescuer.pid, 2)]


def test_a_live_task_slower_than_the_heartbeat_ttl_is_not_reclaimed(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    slow_s = 3 * HEARTBEAT_TTL_S
    busy = start(run_worker, ledger, "faulty.ledger", "--concurrency", "1")
    ready(client, prefix, busy)
    handle = dispatcher.submit("faulty.ledger", {"sleep_s": slow_s, "tag": "slow"})
    wait_until(lambda: started_on(ledger, [handle.id], busy.pid), timeout_s=DEADLINE_S)
    idle = start(run_worker, ledger, "faulty.ledger", "--concurrency", "1")  # its reaper watches too
    ready(client, prefix, idle)

    assert handle.result(timeout_s=DEADLINE_S) == "slow"
    runs = ledger.records(task_id=handle.id)
    assert [(r["event"], r["pid"], r["attempt"]) for r in runs] == [("start", busy.pid, 1), ("end", busy.pid, 1)]
    # It ran its whole sleep once (an event loop may fire a timer up to its clock resolution early: 1 ms here).
    assert runs[1]["t"] - runs[0]["t"] >= slow_s - 0.01
    assert "lease lost" not in worker_log(busy)
    assert busy.poll() is None and idle.poll() is None


def lease_lost(port: int, capability: str) -> float | None:
    """The worker's ``dispatcher_leases_lost_total`` for ``capability`` (None while it does not answer)."""
    families = scrape(port)
    if families is None:
        return None
    return sample_value(families, "dispatcher_leases_lost", "dispatcher_leases_lost_total", capability=capability)


def test_a_zombies_late_result_is_refused_and_counted(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str, tmp_path: Any
) -> None:
    cap = "gated.async"
    keys = KeySpace(prefix).capability(cap)
    gate = tmp_path / "gate"
    port = free_tcp_port()
    # The zombie runs no reaper: the rescuer's reaper, the only one, must not sit behind a lease the paused
    # process holds.
    zombie = run_worker(
        "--capability", cap, "--concurrency", "1", "--no-upkeep", "--metrics-port", str(port), *TIMERS,
        app="apps.gated", env={LEDGER_ENV: ledger.path},
    )  # fmt: skip
    ready(client, prefix, zombie)
    wait_until(lambda: scrape(port) is not None, DEADLINE_S, message="the zombie's metrics endpoint")
    before = lease_lost(port, cap)
    handle = dispatcher.submit(cap, {"gate": str(gate), "tag": "z"})
    wait_until(lambda: started_on(ledger, [handle.id], zombie.pid), timeout_s=DEADLINE_S, message="the zombie's run")
    rescuer = run_worker(
        "--capability", cap, "--concurrency", "1", *TIMERS, app="apps.gated", env={LEDGER_ENV: ledger.path}
    )
    ready(client, prefix, rescuer)
    found = worker_record(client, prefix, rescuer.pid)
    assert found is not None

    os.kill(zombie.pid, signal.SIGSTOP)  # paused past its heartbeat TTL, while its handler holds the task
    try:
        wait_until(lambda: started_on(ledger, [handle.id], rescuer.pid), DEADLINE_S, message="the rescuer's run")
        gate.touch()  # both runs may finish now; the zombie's only once it is continued
        assert handle.result(timeout_s=DEADLINE_S) == rescuer.pid
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    wait_until(lambda: ledger.count("end", handle.id) == 2, DEADLINE_S, message="the zombie's handler to return")
    wait_until(lambda: lease_lost(port, cap) == before + 1, DEADLINE_S, message="lease_lost_total to go up by one")

    stored = codec.decode_outcome(client.get(keys.result(handle.id)), 1 << 20)
    assert (stored.value, stored.worker, stored.attempt) == (rescuer.pid, found.consumer, 2), "the late result won"
    assert [(r["pid"], r["attempt"]) for r in ledger.records("start", handle.id)] == [(zombie.pid, 1), (rescuer.pid, 2)]
    (lost,) = [line for line in worker_log(zombie).splitlines() if "lease lost" in line]
    assert " WARNING " in lost and f"capability={cap} task_id={handle.id} " in lost and "reason=" in lost, lost
    assert zombie.poll() is None and rescuer.poll() is None


def test_poison_task_is_dead_lettered_after_max_deliveries(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    keys = KeySpace(prefix).capability("faulty.poison")
    # Concurrency 1: a worker the poison kills holds nothing else, so the other tasks are never collateral.
    flags = ("--capability", "faulty.ledger", "--concurrency", "1")
    workers = [start(run_worker, ledger, "faulty.poison", *flags) for _ in range(2)]
    for w in workers:
        ready(client, prefix, w)
    poison = dispatcher.submit("faulty.poison", {"tag": "poison"})
    good = dispatcher.submit_many(
        [Task(capability="faulty.ledger", payload={"sleep_s": 0.2, "tag": i}) for i in range(6)]
    )

    kills = 0
    deadline = time.monotonic() + 60
    for _ in range(20):  # bounded: each round sees a worker die or the dead letter
        if client.xlen(keys.dead) or time.monotonic() > deadline:
            break

        def change() -> Any:
            return client.xlen(keys.dead) or any(w.poll() is not None for w in workers)

        wait_until(change, timeout_s=DEADLINE_S, interval_s=0.05, message="a worker to die or the dead letter")
        for i, w in enumerate(workers):
            if w.poll() is not None:
                assert w.returncode == 137, worker_log(w)
                kills += 1
                workers[i] = start(run_worker, ledger, "faulty.poison", *flags)

    with pytest.raises(TaskDead) as caught:
        poison.result(timeout_s=DEADLINE_S)
    assert caught.value.reason == "poison"
    assert ledger.count("start", poison.id) == 3 == kills, "exactly max_deliveries runs"
    ((_, letter),) = client.xrange(keys.dead)
    assert (letter[b"reason"], letter[b"task_id"].decode()) == (b"poison", poison.id)
    assert (int(letter[b"attempt"]), int(letter[b"reclaims"])) == (3, 2)
    logs = "\n".join(run_worker.log(w) for w in run_worker.procs)  # the reaper of one of them buried it
    buried = [
        line for line in logs.splitlines() if f"dead letter capability=faulty.poison task_id={poison.id} " in line
    ]
    assert len(buried) == 1 and " WARNING " in buried[0] and "reason=poison" in buried[0], logs

    assert [h.result(timeout_s=DEADLINE_S) for h in good] == list(range(6))
    assert all(ledger.count("start", h.id) == 1 for h in good), "other tasks ran once each"

"""Redis itself failing under a running worker: killed (SIGKILL) and restarted on the same port with its AOF.

A private redis-server per test (never the session's, never the shared one): this one is killed on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.faulty import LEDGER_ENV, Ledger, worker_record
from conftest import RedisServer, WorkerRunner
from helpers import wait_until, worker_log

from dispatcher import Dispatcher, RedisUnavailable, Settings, Task

TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
BACKOFF = ("--backoff-base-s", "0.05", "--backoff-max-s", "0.2")
DEADLINE_S = 30.0


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    """A private server whose data survives a crash of the process (AOF, fsync every second)."""
    with RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "everysec")) as server:
        yield server


@pytest.fixture
def workers(aof_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[WorkerRunner]:
    runner = WorkerRunner(aof_server.url, prefix, tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


def test_worker_rides_out_a_redis_crash_and_restart(
    aof_server: RedisServer, workers: WorkerRunner, prefix: str, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    client = aof_server.client()
    worker = workers(
        "--capability", "faulty.ledger", "--concurrency", "2", *TIMERS, app="apps.faulty", env={LEDGER_ENV: ledger.path}
    )
    wait_until(lambda: worker_record(client, prefix, worker.pid), timeout_s=DEADLINE_S, message="worker registered")
    settings = Settings.build(redis_url=aof_server.url, prefix=prefix, retry_attempts=0, block_ms=200)
    with Dispatcher(settings) as producer:
        handles = producer.submit_many(
            [Task(capability="faulty.ledger", payload={"sleep_s": 0.25, "tag": i}) for i in range(12)]
        )
        wait_until(lambda: len(ledger.records("end")) >= 3, timeout_s=DEADLINE_S, message="a few tasks done")

        aof_server.kill()
        killed_at = time.monotonic()
        # The outage lasts until every connection of the worker has failed: reads, settling a task that
        # finished meanwhile, the heartbeat thread and the upkeep thread.
        noticed = ("read failed", "settle delayed", "heartbeat failed", "upkeep failed")
        wait_until(
            lambda: all(s in worker_log(worker) for s in noticed),
            timeout_s=DEADLINE_S,
            message="the worker to see the outage",
        )
        assert len(ledger.records("end")) < 12
        aof_server.start()
        outage_s = time.monotonic() - killed_at

        def settled() -> bool:
            try:
                return all(h.status() == "succeeded" for h in handles)
            except RedisUnavailable:
                return False

        wait_until(settled, timeout_s=DEADLINE_S, interval_s=0.1, message="every task to succeed after the restart")
        assert [h.result(timeout_s=5) for h in handles] == list(range(12))

    for h in handles:
        assert ledger.count("end", h.id) >= 1, f"task {h.id} lost"
    log = worker_log(worker)
    print(f"\nredis down for {outage_s:.2f} s; {len(ledger.records('start'))} runs for 12 tasks")
    assert worker.poll() is None, log
    assert log.count("worker started") == 1, "the worker restarted itself"
    assert "Traceback" not in log, log
    assert log.count("read failed") <= 10, "reconnect attempts must back off"
    # Still serving after the outage.
    assert worker_record(client, prefix, worker.pid) is not None


def test_worker_recovers_after_redis_came_back_empty(prefix: str, tmp_path: Path) -> None:
    """No persistence: everything is lost, the worker and a long-lived producer carry on. A retry after a
    backoff needs the delayed-task mover, which only visits capabilities in the fleet-wide set: the set must
    come back with the workers' heartbeats, not only when a worker or producer process starts."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with RedisServer() as server:
        runner = WorkerRunner(server.url, prefix, tmp_path)
        try:
            client = server.client()
            worker = runner(
                "--capability", "faulty.flaky", *TIMERS, *BACKOFF, app="apps.faulty", env={LEDGER_ENV: ledger.path}
            )
            wait_until(lambda: worker_record(client, prefix, worker.pid), timeout_s=DEADLINE_S)
            settings = Settings.build(redis_url=server.url, prefix=prefix, block_ms=200)
            with Dispatcher(settings) as producer:
                assert producer.submit("faulty.flaky", {"fail_times": 1}).result(timeout_s=DEADLINE_S) == 2

                server.kill()
                server.start()
                assert client.dbsize() == 0
                wait_until(lambda: worker_record(client, prefix, worker.pid), timeout_s=DEADLINE_S)

                handle = producer.submit("faulty.flaky", {"fail_times": 1})
                assert handle.result(timeout_s=DEADLINE_S) == 2, worker_log(worker)
            assert [r["attempt"] for r in ledger.records("start", handle.id)] == [1, 2]
            assert worker.poll() is None
            assert worker_log(worker).count("worker started") == 1
        finally:
            runner.stop_all()

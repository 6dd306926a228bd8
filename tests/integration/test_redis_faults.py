"""Redis itself failing under a running worker: killed (SIGKILL) and restarted on the same port with its AOF.

A private redis-server per test (never the session's, never the shared one) when it is killed on purpose; a
dropping TCP proxy in front of the session's server for a lost reply.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.faulty import LEDGER_ENV, Ledger, worker_record
from conftest import RedisServer, WorkerRunner, free_port
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
        # The outage lasts until every connection of the worker has failed: settling a task that finished
        # meanwhile, the heartbeat thread and the upkeep thread. (Reads may not fail: a task holds its slot
        # until its outcome is recorded, so a worker whose slots all wait to settle does not read.)
        noticed = ("settle delayed", "heartbeat failed", "upkeep failed")
        try:
            wait_until(lambda: all(s in worker_log(worker) for s in noticed), timeout_s=DEADLINE_S)
        except AssertionError:
            missing = [s for s in noticed if s not in worker_log(worker)]
            raise AssertionError(f"the worker did not log {missing} in the outage\n{worker_log(worker)}") from None
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


class DroppingProxy:
    """A TCP proxy to a Redis server that, once armed, drops the connection in place of forwarding the first
    reply containing ``marker``: Redis acted on the command, the client never hears of it."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.marker = marker
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():  # bounded by close()
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            upstream.settimeout(None)
            self._sockets += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):  # ends when either side closes
                if replies and self.armed.is_set() and self.marker in data:
                    self.armed.clear()
                    self.dropped.set()
                    break
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for s in self._sockets:
            s.close()


def test_entries_of_a_lost_read_reply_are_recovered_from_the_own_pending_list(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """XREADGROUP put the entry in the worker's pending list, the reply was lost with the connection: the
    worker is alive (the reaper keeps away), so it must re-read its own pending entries after reconnecting."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    proxy = DroppingProxy(redis_server.port, b"LOST-REPLY")
    runner = WorkerRunner(proxy.url, prefix, tmp_path)
    client = redis_server.client()
    try:
        worker = runner("--capability", "faulty.ledger", *TIMERS, app="apps.faulty", env={LEDGER_ENV: ledger.path})
        wait_until(lambda: worker_record(client, prefix, worker.pid), timeout_s=DEADLINE_S)
        with Dispatcher(Settings.build(redis_url=redis_server.url, prefix=prefix, block_ms=200)) as producer:
            proxy.armed.set()
            handle = producer.submit("faulty.ledger", {"tag": "LOST-REPLY"})
            wait_until(proxy.dropped.is_set, timeout_s=DEADLINE_S, message="the read reply to be dropped")
            dropped_at = time.monotonic()
            assert handle.result(timeout_s=DEADLINE_S) == "LOST-REPLY"
            recovered_s = time.monotonic() - dropped_at
        # The worker is alive, so no reaper takes the entry (and the task has no timeout_s that could make it
        # look hung): only the worker's re-read of its own pending list can have run it before result()'s deadline.
        assert ledger.count("start", handle.id) == 1
        print(f"\nrecovered {recovered_s:.2f} s after the reply was dropped")
        assert worker.poll() is None
    finally:
        runner.stop_all()
        proxy.close()

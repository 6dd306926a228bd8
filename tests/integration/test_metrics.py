"""A worker's ``--metrics-port``: every metric of ``dispatcher.observe.metrics`` is served with its type and its
labels, and after a scripted run (successes, retries, dead letters of each kind a worker writes, a reclaim by
its reaper, a tripped circuit, a broken read connection) each count equals what the ledger and Redis show.

The run has a private redis-server, so that the test can find and kill the worker's read connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from apps.faulty import FAIL_FLAG_ENV, LEDGER_ENV, Ledger, worker_record
from conftest import RedisServer, WorkerRunner
from helpers import free_tcp_port, sample_value, scrape, wait_until, worker_log
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from dispatcher import Dispatcher, Settings, TaskDead, TaskHandle
from dispatcher.observe import metrics
from dispatcher.store.keys import KeySpace

TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
BACKOFF = ("--backoff-base-s", "0.05", "--backoff-jitter", "0")
DEADLINE_S = 30.0
CAPS = ("faulty.flaky", "faulty.reject", "faulty.breakable", "faulty.ledger")

DEFINED: dict[str, tuple[str, set[str]]] = {
    **{
        m.describe()[0].name: (m.describe()[0].type, set(m._labelnames))
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    },
    **{f.name: (f.type, set(f._labelnames)) for f in metrics.TASK_COLLECTOR.describe()},  # type: ignore[attr-defined]
}
"""Every metric the package defines, by family name (a counter's family name has no ``_total``): its type and
label names."""


def ready(client: redis.Redis, prefix: str, proc: subprocess.Popen[bytes]) -> None:
    def seen() -> bool:
        assert proc.poll() is None, worker_log(proc)
        return worker_record(client, prefix, proc.pid) is not None

    wait_until(seen, DEADLINE_S, message=f"worker {proc.pid} to register")


def circuit(client: redis.Redis, prefix: str, proc: subprocess.Popen[bytes], capability: str) -> str:
    """The circuit state the worker last published for ``capability`` ("" before its first beat)."""
    found = worker_record(client, prefix, proc.pid)
    return found.circuits.get(capability, "") if found else ""


def dead(handle: TaskHandle) -> None:
    with pytest.raises(TaskDead):
        handle.result(timeout_s=DEADLINE_S)


def samples(families: dict[str, Metric], family: str) -> dict[tuple[str, ...], float]:
    """A family's main samples (not a histogram's buckets), by their label values."""
    wanted = {family, family + "_total", family + "_count"}
    return {tuple(s.labels.values()): s.value for s in families[family].samples if s.name in wanted}


def test_every_metric_is_served_with_its_type_labels_and_counts(
    private: tuple[RedisServer, WorkerRunner], ledger: Ledger, prefix: str, tmp_path: Path
) -> None:
    server, workers = private
    client = server.client()
    ks = KeySpace(prefix)
    flag = tmp_path / "broken"
    env = {LEDGER_ENV: ledger.path, FAIL_FLAG_ENV: str(flag)}
    victim = workers("--capability", "faulty.ledger", "--no-upkeep", *TIMERS, app="apps.faulty", env=env)
    ready(client, prefix, victim)
    port = free_tcp_port()
    handles: dict[str, list[TaskHandle]] = {c: [] for c in CAPS}

    with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:

        def submit(cap: str, payload: Any, **options: Any) -> TaskHandle:
            handles[cap].append(d.submit(cap, payload, **options))
            return handles[cap][-1]

        # A reclaim: the victim dies holding a task; the observed worker's reaper (the only one) gives it back.
        lost = submit("faulty.ledger", {"first_sleep_s": 60, "tag": "reclaimed"})
        wait_until(lambda: ledger.count("start", lost.id) == 1, DEADLINE_S, message="the victim's run")
        registered_s = float(client.time()[0])  # Redis' clock, whole seconds: before the worker's first beat
        observed = workers(
            *(a for c in CAPS for a in ("--capability", c)), "--metrics-port", str(port),
            "--breaker-threshold", "2", "--breaker-cooldown-s", "300", *TIMERS, *BACKOFF,
            app="apps.faulty", env=env,
        )  # fmt: skip
        ready(client, prefix, observed)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        assert lost.result(timeout_s=DEADLINE_S) == "reclaimed"

        # One at a time, so that no two failures in a row trip the flaky circuit (threshold 2).
        assert submit("faulty.flaky", {}).result(timeout_s=DEADLINE_S) == 1  # succeeded
        assert submit("faulty.flaky", {"retry_times": 1}).result(timeout_s=DEADLINE_S) == 2  # Retry, then succeeded
        assert submit("faulty.flaky", {"fail_times": 1}, max_retries=1).result(timeout_s=DEADLINE_S) == 2
        dead(submit("faulty.flaky", {"fail_times": 9}, max_retries=0))  # max_retries
        dead(submit("faulty.reject", {}))  # rejected
        flag.touch()  # breakable fails from now on: two failures in a row open its circuit
        dead(submit("faulty.breakable", {}, max_retries=0))
        dead(submit("faulty.breakable", {}, max_retries=0))
        wait_until(lambda: circuit(client, prefix, observed, "faulty.breakable") == "open", DEADLINE_S)
        client.xadd(ks.capability("faulty.ledger").stream, {"v": "1", "task": b"\xc1\xc1garbage", "attempt": "1"})
        wait_until(lambda: client.xlen(ks.capability("faulty.ledger").dead) == 1, DEADLINE_S, message="decode_error")

        # A read error: kill the connection the worker reads on (the only one that sends XREADGROUP; its last
        # command is XPENDING for a moment after each reconcile, so wait for it to be reading again).
        readers = wait_until(
            lambda: [c for c in client.client_list() if c.get("cmd") == "xreadgroup"], DEADLINE_S, message="a read"
        )
        assert len(readers) == 1, readers
        client.client_kill_filter(_id=readers[0]["id"])
        wait_until(lambda: "read failed" in worker_log(observed), DEADLINE_S, message="the read error")
        assert submit("faulty.ledger", {"tag": "after"}).result(timeout_s=DEADLINE_S) == "after"  # reading again

    families = wait_until(lambda: scrape(port), DEADLINE_S, message="the metrics endpoint")

    # Every metric defined is served (and nothing else of ours), with its type and exactly its labels. The text
    # format serves a counter's or histogram's creation time as a gauge family of its own, NAME_created.
    ours = {n for n in families if n.startswith("dispatcher_")}
    assert {n for n in ours if not (n.endswith("_created") and n.removesuffix("_created") in DEFINED)} == set(DEFINED)
    for name, (kind, labels) in DEFINED.items():
        family = families[name]
        assert family.type == kind, name
        for s in family.samples:
            extra = {"le"} if s.name.endswith("_bucket") else set()
            assert set(s.labels) == labels | extra, (name, s)
            assert "task_id" not in s.labels

    # Each count is what happened, read from the ledger (handler runs on the observed worker) and from Redis.
    pid = observed.pid
    for cap in CAPS:
        ids = {h.id for h in handles[cap]}
        runs = [r for r in ledger.records("start") if r["pid"] == pid and r["task"] in ids]
        ends = [r for r in ledger.records("end") if r["pid"] == pid and r["task"] in ids]
        letters = Counter(f[b"reason"].decode() for _, f in client.xrange(ks.capability(cap).dead))
        handler_deaths = letters["max_retries"] + letters["rejected"]  # the other kinds ran no handler
        counted = {
            o: sample_value(
                families, "dispatcher_tasks_completed", "dispatcher_tasks_completed_total", capability=cap, outcome=o
            )
            for o in ("succeeded", "retried", "dead")
        }
        happened = {"succeeded": len(ends), "retried": len(runs) - len(ends) - handler_deaths, "dead": letters.total()}
        assert counted == happened, cap
        assert samples(families, "dispatcher_tasks_started")[(cap,)] == len(runs), cap
        assert samples(families, "dispatcher_task_duration_seconds")[(cap,)] == len(runs), cap
        assert samples(families, "dispatcher_task_queue_wait_seconds")[(cap,)] == len(runs), cap
        assert samples(families, "dispatcher_tasks_in_progress")[(cap,)] == 0, cap
        written = {(cap, reason): n for reason, n in letters.items()}
        assert {k: v for k, v in samples(families, "dispatcher_dead_letters").items() if k[0] == cap} == written
    # What the script above made happen, as (succeeded, retried, dead) per capability.
    tasks = samples(families, "dispatcher_tasks_completed")
    assert {c: tuple(tasks.get((c, o), 0) for o in ("succeeded", "retried", "dead")) for c in CAPS} == {
        "faulty.flaky": (3, 2, 1),
        "faulty.reject": (0, 0, 1),
        "faulty.breakable": (0, 0, 2),
        "faulty.ledger": (2, 0, 1),
    }
    assert samples(families, "dispatcher_dead_letters") == {
        ("faulty.flaky", "max_retries"): 1,
        ("faulty.reject", "rejected"): 1,
        ("faulty.breakable", "max_retries"): 2,
        ("faulty.ledger", "decode_error"): 1,
    }
    assert samples(families, "dispatcher_tasks_reclaimed") == {("faulty.ledger", "dead_worker"): 1}
    assert [(r["pid"], r["attempt"]) for r in ledger.records("start", lost.id)] == [(victim.pid, 1), (pid, 2)]
    assert samples(families, "dispatcher_circuit_open") == {("faulty.breakable",): 1}
    assert samples(families, "dispatcher_leases_lost") == {}  # no late result was refused
    assert samples(families, "dispatcher_redis_errors") == {("read",): 1}  # the one killed read connection
    assert samples(families, "dispatcher_worker_concurrency") == {(): 64}  # the default
    # Stamped by Redis' clock at a beat after the worker registered (read before it started).
    assert samples(families, "dispatcher_worker_last_heartbeat_timestamp_seconds")[()] >= registered_s


def test_the_circuit_open_gauge_falls_back_to_0_when_the_circuit_closes(
    dispatcher: Dispatcher, run_worker: WorkerRunner, client: redis.Redis, ledger: Ledger, prefix: str, tmp_path: Path
) -> None:
    cap = "faulty.breakable"
    flag = tmp_path / "broken"
    flag.touch()
    port = free_tcp_port()
    worker = run_worker(
        "--capability", cap, "--breaker-threshold", "1", "--breaker-cooldown-s", "0.2", "--metrics-port", str(port),
        *TIMERS, app="apps.faulty", env={LEDGER_ENV: ledger.path, FAIL_FLAG_ENV: str(flag)},
    )  # fmt: skip
    ready(client, prefix, worker)

    def gauge() -> float | None:
        families = scrape(port)
        return None if families is None else samples(families, "dispatcher_circuit_open").get((cap,), 0.0)

    dead(dispatcher.submit(cap, {}, max_retries=0))  # one failure opens the circuit (threshold 1)
    wait_until(lambda: gauge() == 1, DEADLINE_S, message="the gauge at 1 while the circuit is open")
    flag.unlink()
    assert dispatcher.submit(cap, {}).result(timeout_s=DEADLINE_S) == worker.pid  # the half-open trial succeeds
    wait_until(lambda: circuit(client, prefix, worker, cap) == "closed", DEADLINE_S, message="the circuit to close")
    wait_until(lambda: gauge() == 0, 5, message="the gauge at 0 once the circuit is closed")


def test_queue_wait_counts_from_the_submit_by_redis_clock(
    dispatcher: Dispatcher, run_worker: WorkerRunner, client: redis.Redis, prefix: str
) -> None:
    handles = [dispatcher.submit("faulty.flaky", {}) for _ in range(4)]
    submitted_ms = max(int(client.xrange(KeySpace(prefix).capability("faulty.flaky").stream)[-1][0].split(b"-")[0]), 0)

    def redis_s() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    # Nothing serves the capability until Redis' clock is 1.5 s past the last submit: each task waited that long.
    wait_until(lambda: redis_s() >= submitted_ms / 1000 + 1.5, DEADLINE_S, message="Redis' clock to move on")
    port = free_tcp_port()
    run_worker("--capability", "faulty.flaky", "--metrics-port", str(port), *TIMERS, app="apps.faulty")
    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [1, 1, 1, 1]
    families = wait_until(lambda: scrape(port), DEADLINE_S, message="the metrics endpoint")
    waits = {s.name: s for s in families["dispatcher_task_queue_wait_seconds"].samples if not s.labels.get("le")}
    assert waits["dispatcher_task_queue_wait_seconds_count"].value == 4
    assert waits["dispatcher_task_queue_wait_seconds_sum"].value >= 4 * 1.5
    buckets = {
        s.labels["le"]: s.value for s in families["dispatcher_task_queue_wait_seconds"].samples if "le" in s.labels
    }
    assert buckets["1.0"] == 0 and buckets["+Inf"] == 4

"""A primary of a replicated cluster killed with kill -9 under a running task, a waiting ``result()`` and a worker
serving its capability: the worker carries on against the promoted replica without a restart, and the waiter
gets its result or a clear ``RedisUnavailable``, after which a new ``result()`` gets it. Figures are printed,
not asserted (``scripts/chaos --scenario 17`` measures them); deadlines are generous."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from conftest import WorkerRunner
from helpers import wait_until
from topology import Cluster

from dispatcher import Dispatcher, DispatcherError, RedisUnavailable, ResultTimeout, Settings, TaskHandle
from dispatcher.store.keys import KeySpace

DEADLINE_S = 60.0
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")


def took_over(cluster: Cluster, stream: str, victim_port: int) -> bool:
    """A replica owns ``stream``'s slot instead of ``victim_port``, and every live node says the cluster is ok."""
    try:
        if cluster.owner_port(stream) == victim_port:
            return False
        cluster.wait_ok()
    except Exception:  # a node that is still re-forming its view answers errors: not yet
        return False
    return True


def result_now(handle: TaskHandle) -> object:
    """The task's result, or None while Redis cannot answer or has none yet."""
    try:
        return {"result": handle.result(timeout_s=1)}
    except (RedisUnavailable, ResultTimeout):
        return None


def test_a_shard_failover_under_a_running_task_and_a_waiting_result(
    replicated_cluster: Cluster, prefix: str, tmp_path: Path
) -> None:
    cluster = replicated_cluster
    stream = KeySpace(prefix).capability("sleep").stream
    victim = cluster.node(cluster.owner_port(stream))
    settings = Settings.build(redis_url=cluster.url, prefix=prefix, heartbeat_ttl_s=2, wait_replicas=1)
    runner = WorkerRunner(cluster.url, prefix, tmp_path)
    try:
        worker = runner("--capability", "sleep", *TIMERS)
        with Dispatcher(settings) as dispatcher:
            assert dispatcher.submit("sleep", 0).result(timeout_s=DEADLINE_S) == 0.0, runner.log(worker)
            handle = dispatcher.submit("sleep", 2)  # confirmed by the replica: it survives the kill
            wait_until(lambda: handle.status() == "running", timeout_s=DEADLINE_S, message="the task to start")
            outcome: dict[str, object] = {}

            def wait() -> None:
                try:
                    outcome["result"] = handle.result(timeout_s=DEADLINE_S)
                except DispatcherError as e:
                    outcome["error"] = e

            waiter = threading.Thread(target=wait)
            waiter.start()
            victim.kill()
            killed_at = time.monotonic()
            wait_until(lambda: took_over(cluster, stream, victim.port), DEADLINE_S, 0.1, "a replica to take over")
            takeover_s = time.monotonic() - killed_at
            waiter.join(timeout=DEADLINE_S + 10)
            assert not waiter.is_alive(), "result() returned or raised within its timeout"
            if "error" in outcome:
                assert isinstance(outcome["error"], RedisUnavailable), repr(outcome["error"])
            else:
                assert outcome["result"] == 2.0
            # Recorded by the worker that ran it, on the promoted replica; a new result() finds it.
            found = wait_until(lambda: result_now(handle), DEADLINE_S, 0.2, "the result after the takeover")
            assert found == {"result": 2.0}
            # The same worker process reads the capability again: a new task on the promoted replica runs.
            after = wait_until(lambda: submit_now(dispatcher), DEADLINE_S, 0.2, "a submit to the promoted replica")
            assert after.result(timeout_s=DEADLINE_S) == 0.5, runner.log(worker)
            resumed_s = time.monotonic() - killed_at - takeover_s
            assert worker.poll() is None, "the worker kept running (no restart)"
            print(f"\ntakeover {takeover_s:.2f} s; waiter: {outcome}; resumed {resumed_s:.2f} s after it")
    finally:
        runner.stop_all()


def submit_now(dispatcher: Dispatcher) -> TaskHandle | None:
    """A submit without ``WAIT`` (the promoted replica has no replica of its own), or None while refused."""
    try:
        return dispatcher.submit("sleep", 0.5, wait_replicas=0)
    except RedisUnavailable:
        return None

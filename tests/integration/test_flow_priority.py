"""Priorities end to end, with a real worker and the admitter: a priority-9 task submitted behind a backlog of
priority-0 tasks starts within the admission window, and every task runs once with nothing left behind."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from helpers import keyspace, wait_until

from dispatcher import Dispatcher, Settings, Task
from workers import Registry, Worker

BACKLOG = 2_000
WINDOW = 4
CONCURRENCY = 2
BOUND = 4 + CONCURRENCY
"""Backlog tasks that may start between the priority-9 submit and its start: the window of 4 and the slots."""


@pytest.fixture
def flow_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"flow_window": WINDOW})


class Started:
    """The order in which handlers started (payloads), appended from the worker's handler threads."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.lock = threading.Lock()

    def handler(self, task: Task) -> None:
        with self.lock:
            self.order.append(str(task.payload))
        time.sleep(0.002)

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.order)


@pytest.fixture
def serving(flow_settings: Settings) -> Iterator[Started]:
    """A worker (not burst: the admitter keeps feeding its stream) with its upkeep, stopped at teardown."""
    started = Started()
    registry = Registry()
    registry.register("ranked", started.handler)
    worker = Worker(registry, ["ranked"], flow_settings, concurrency=CONCURRENCY)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    try:
        yield started
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"


def test_a_priority_9_task_behind_a_backlog_starts_within_the_window(
    flow_settings: Settings, client: redis.Redis, serving: Started
) -> None:
    with Dispatcher(flow_settings) as d:
        d.submit_many([Task(capability="ranked", payload=f"low-{i}", priority=0) for i in range(BACKLOG)])
        wait_until(lambda: len(serving.snapshot()) >= 20, 30, message="the backlog started")
        before = len(serving.snapshot())
        urgent = d.submit("ranked", "urgent", priority=9)
        wait_until(lambda: "urgent" in serving.snapshot(), 30, message="the priority-9 task started")
        order = serving.snapshot()
        ahead = order.index("urgent") - before
        print(f"\npriority 9 started after {ahead} more backlog starts; {BACKLOG - len(order)} still waiting")
        # At its submit, at most WINDOW entries waited unread on the stream and CONCURRENCY were read.
        assert ahead <= BOUND, order[before : before + 20]
        assert urgent.result(timeout_s=30) is None
        wait_until(lambda: len(serving.snapshot()) == BACKLOG + 1, 60, message="the backlog drained")
    assert sorted(serving.snapshot()) == sorted([f"low-{i}" for i in range(BACKLOG)] + ["urgent"])  # each once
    ks = {k for k in keyspace(client, flow_settings.prefix) if "{ranked}" in k}
    wait_until(lambda: client.hlen(f"{flow_settings.prefix}:{{ranked}}:tasks") == 0, 10, message="index emptied")
    assert not any(k.endswith(":ready") for k in keyspace(client, flow_settings.prefix)), ks


def test_tasks_of_one_priority_run_in_submit_order(
    flow_settings: Settings, client: redis.Redis, serving: Started
) -> None:
    with Dispatcher(flow_settings) as d:
        handles = d.submit_many([Task(capability="ranked", payload=f"{i:04d}", priority=3) for i in range(200)])
        for h in handles:
            h.result(timeout_s=60)
    order = serving.snapshot()
    assert len(order) == 200
    # Within one ms ties go by task id (time-sortable); allow the window's own reordering by concurrent reads.
    late = sum(1 for a, b in itertools.pairwise(order) if b < a)
    assert late <= 200 // 10, order


def test_a_waiting_task_is_queued_not_delayed(flow_settings: Settings) -> None:
    with Dispatcher(flow_settings) as d:
        d.submit_many([Task(capability="ranked", payload=i, priority=0) for i in range(WINDOW)])
        waiting = d.submit("ranked", "w", priority=5)
        info = waiting.info()
    assert (info.status, info.delayed, info.due_at, info.entry_id) == ("queued", False, None, None)

"""Handlers for the crash-recovery tests: each run is written to a ledger file, some handlers misbehave.

The ledger is the file named by the ``FAULTY_LEDGER`` environment variable of the worker (or by the task's
``ledger`` payload key). Each line is one JSON record ``{"event", "task", "pid", "t", "attempt", "tag"}``,
written with a single ``write()`` on a file opened with ``O_APPEND``, so records of concurrent workers never
interleave and a record written just before the process dies is kept.

Payloads are dicts; every handler reads ``tag`` and ``sleep_s`` (seconds to sleep before finishing), and
``first_sleep_s`` in its place on the task's first run (a task that hangs on the worker that is about to die;
the first run is the one with a single ``start`` record in the ledger).

The module also holds what the tests read these with: ``Ledger`` and ``worker_record``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis

from dispatcher.store import codec
from dispatcher.store.keys import KeySpace
from workers import Reject, Retry, Task, handler

LEDGER_ENV = "FAULTY_LEDGER"
FAIL_FLAG_ENV = "FAULTY_FAIL_FLAG"
"""A path: while a file exists there, ``faulty.breakable`` fails on this worker."""


def _payload(task: Task) -> dict[str, Any]:
    return task.payload if isinstance(task.payload, dict) else {}


def record(task: Task, event: str, **extra: Any) -> None:
    """Append one record about ``task`` to the ledger (nothing when no ledger is configured); ``extra`` adds
    fields."""
    path = _payload(task).get("ledger") or os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = json.dumps(
        {
            "event": event,
            "task": task.id,
            "pid": os.getpid(),
            "t": time.time(),
            "attempt": task.attempt,
            "tag": _payload(task).get("tag", ""),
            **extra,
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _runs(task: Task) -> int:
    """How many runs of ``task`` the ledger holds (``start`` records), this one included."""
    path = _payload(task).get("ledger") or os.environ.get(LEDGER_ENV)
    if not path or not os.path.exists(path):
        return 1
    return Ledger(path).count("start", task.id)


async def _sleep(task: Task) -> None:
    payload = _payload(task)
    seconds = float(payload.get("sleep_s", 0))
    if "first_sleep_s" in payload and _runs(task) <= 1:
        seconds = float(payload["first_sleep_s"])
    if seconds > 0:
        await asyncio.sleep(seconds)


@handler("faulty.ledger")
async def ledger(task: Task) -> Any:
    """Record ``start``, sleep ``sleep_s``, record ``end``; returns the tag."""
    record(task, "start")
    await _sleep(task)
    record(task, "end")
    return _payload(task).get("tag", "")


@handler("faulty.flaky")
async def flaky(task: Task) -> Any:
    """Ask for a retry in 50 ms while the attempt is at most ``retry_times``, then fail (ValueError) while it is at
    most ``fail_times``, then succeed."""
    record(task, "start")
    await _sleep(task)
    if task.attempt <= int(_payload(task).get("retry_times", 0)):
        raise Retry(delay_s=0.05, reason="not yet")
    if task.attempt <= int(_payload(task).get("fail_times", 0)):
        raise ValueError(f"flaky failure on attempt {task.attempt}")
    record(task, "end")
    return task.attempt


@handler("faulty.poison")
def poison(task: Task) -> None:
    """Kill the whole worker process, as a segfault or the OOM killer would."""
    record(task, "start")
    os._exit(137)


@handler("faulty.retry")
async def retry_later(task: Task) -> Any:
    """On the first attempt ask for a retry after ``retry_delay_s``; succeed afterwards."""
    record(task, "start")
    if task.attempt == 1:
        raise Retry(delay_s=float(_payload(task).get("retry_delay_s", 1.0)), reason="not yet")
    record(task, "end")
    return task.attempt


@handler("faulty.reject")
async def reject(task: Task) -> None:
    """Refuse the task for good."""
    record(task, "start")
    raise Reject(str(_payload(task).get("reason", "refused")))


@handler("faulty.breakable")
async def breakable(task: Task) -> Any:
    """Fail (RuntimeError) while the file named by ``FAULTY_FAIL_FLAG`` exists; else succeed."""
    record(task, "start")
    await _sleep(task)
    flag = os.environ.get(FAIL_FLAG_ENV)
    if flag and os.path.exists(flag):
        raise RuntimeError("dependency unavailable")
    record(task, "end")
    return os.getpid()


@handler("faulty.moody")
async def moody(task: Task) -> Any:
    """While the file named by ``FAULTY_FAIL_FLAG`` exists, misbehave as the payload's ``mode`` says: ``fail``
    (RuntimeError), ``reject`` (Reject) or ``hang`` (sleep up to 60 s, for a worker that is about to be killed);
    else succeed with the tag."""
    record(task, "start")
    flag = os.environ.get(FAIL_FLAG_ENV)
    if flag and os.path.exists(flag):
        mode = _payload(task).get("mode")
        if mode == "reject":
            raise Reject("refused while broken")
        if mode == "hang":
            await asyncio.sleep(60)
        raise RuntimeError(f"broken ({mode})")
    record(task, "end")
    return _payload(task).get("tag", "")


@handler("faulty.block_loop")
async def block_loop(task: Task) -> Any:
    """The mistake the watchdog is for: block the event loop with a sync sleep of ``sleep_s`` inside async code."""
    record(task, "start")
    time.sleep(float(_payload(task).get("sleep_s", 0)))
    record(task, "end")
    return task.attempt


@handler("faulty.hang")
def hang(task: Task) -> Any:
    """A sync handler that returns only after ``sleep_s`` (run it with a short ``timeout_s``: a hung thread)."""
    record(task, "start")
    time.sleep(float(_payload(task).get("sleep_s", 0)))
    record(task, "end")
    return task.attempt


@handler("faulty.stubborn")
async def stubborn(task: Task) -> Any:
    """An async handler that swallows its cancellation and goes on for ``sleep_s``."""
    record(task, "start")
    end = time.monotonic() + float(_payload(task).get("sleep_s", 0))
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            record(task, "cancel ignored")
    record(task, "end")
    return task.attempt


class Ledger:
    """Reads a ledger file back, for the tests' assertions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def count(self, event: str, task_id: str) -> int:
        """How many ``event`` records ``task_id`` has."""
        return len(self.records(event, task_id))

    def records(self, event: str | None = None, task_id: str | None = None) -> list[dict[str, Any]]:
        """Every record (of ``event``, of ``task_id``), in the order written."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in lines if line.endswith("}")]  # a torn last line is skipped
        return [
            r for r in found if (event is None or r["event"] == event) and (task_id is None or r["task"] == task_id)
        ]


def worker_record(client: redis.Redis, prefix: str, pid: int) -> codec.WorkerRecord | None:
    """The registry record of the worker process ``pid`` (None until its first heartbeat)."""
    for blob in client.hgetall(KeySpace(prefix).workers).values():
        found = codec.decode_worker(blob)
        if found.pid == pid:
            return found
    return None

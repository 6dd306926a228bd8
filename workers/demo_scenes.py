"""The demo's scenes, each shown as it happens: a batch of tasks, a task that fails once and succeeds on retry, a
task dead-lettered with its reason, and a worker killed mid-run whose tasks finish on another worker.

Each scene returns None when everything expected happened, else one line saying what did not. Every wait is
bounded by the stage's deadline.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dispatcher.cli import render
from dispatcher.cli.main import main as dispatcher_main
from dispatcher.errors import ResultTimeout, TaskDead, TaskFailed
from dispatcher.fleet.stats import CapabilityStats, FleetStats, collect
from dispatcher.producer import Dispatcher, TaskHandle
from dispatcher.store import pending
from dispatcher.store.keys import KeySpace
from dispatcher.task import Task
from workers.demo_app import FLAKY, SLOW, STRICT
from workers.demo_procs import Proc

logger = logging.getLogger(__name__)

BATCH = "sleep"
"""The built-in capability of the batch scene."""
POLL_INTERVAL_S = 0.05
PROGRESS_INTERVAL_S = 0.25
SETTLED = ("succeeded", "failed", "dead")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the batch is: settled tasks out of ``total``, seconds since submit, live workers."""

    done: int
    total: int
    elapsed_s: float
    workers: int


@dataclass(slots=True)
class Stage:
    """What every scene works with: the demo's dispatcher, its workers, where to say what happens, the deadline
    (``time.monotonic()``) of the whole demo."""

    dispatcher: Dispatcher
    workers: list[Proc]
    say: Callable[[str], None]
    deadline: float

    @property
    def keyspace(self) -> KeySpace:
        return KeySpace(self.dispatcher.settings.prefix)

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def stats(self) -> FleetStats:
        return collect(self.dispatcher.gateway, self.keyspace)

    def capability(self, name: str) -> CapabilityStats | None:
        return next((c for c in self.stats().capabilities if c.name == name), None)

    def poll(self, probe: Callable[[], T | None], interval_s: float = POLL_INTERVAL_S) -> T | None:
        """Call ``probe`` until it returns something truthy (returned), or None once the deadline passed."""
        while True:
            value = probe()
            if value:
                return value
            if self.remaining_s() <= 0:
                return None
            time.sleep(interval_s)


def batch(stage: Stage, tasks: int, max_sleep_s: float, on_progress: Callable[[Progress], None]) -> str | None:
    """Submit ``tasks`` short ``sleep`` tasks and show progress until every one succeeded."""
    rng = random.Random()
    stage.say(f"batch: {tasks} tasks of up to {max_sleep_s:g} s ({BATCH}), shared by {len(stage.workers)} workers")
    started = time.monotonic()
    handles = stage.dispatcher.submit_many(
        [Task(capability=BATCH, payload=round(rng.uniform(0.0, max_sleep_s), 4)) for _ in range(tasks)]
    )

    outstanding = tasks

    def settled() -> bool:
        nonlocal outstanding
        stats = stage.stats()
        found = next((c for c in stats.capabilities if c.name == BATCH), None)
        outstanding = found.waiting + found.running + found.delayed if found else tasks
        on_progress(Progress(max(tasks - outstanding, 0), tasks, time.monotonic() - started, stats.totals.workers))
        return outstanding == 0 or not any(w.alive() for w in stage.workers)

    stage.poll(settled, PROGRESS_INTERVAL_S)
    if not any(w.alive() for w in stage.workers):
        return "every worker exited before the tasks were done\n" + stage.workers[0].log_tail()
    if outstanding:
        return f"batch: {outstanding} of {tasks} tasks still outstanding at the deadline"
    failed = sum(1 for h in handles if _value(stage, h) is None)
    if failed:
        return f"batch: {failed} of {tasks} tasks did not succeed"
    stage.say(f"  {tasks}/{tasks} succeeded in {time.monotonic() - started:.1f} s")
    return None


def _value(stage: Stage, handle: TaskHandle) -> Any:
    """The task's result, or None (logged) when it failed or did not finish before the deadline."""
    try:
        return handle.result(timeout_s=max(stage.remaining_s(), 0.1))
    except (TaskFailed, ResultTimeout) as e:
        logger.info("demo task did not succeed task_id=%s error=%s", handle.id, e)
        return None


def retry(stage: Stage) -> str | None:
    """One task whose handler raises on its first attempt: it waits out its backoff, then succeeds."""
    handle = stage.dispatcher.submit(FLAKY, None)
    stage.say(f"retry: task {handle.id} ({FLAKY}) raises RuntimeError on its first attempt")

    def backoff_or_settled() -> str | None:
        found = stage.capability(FLAKY)
        if found is not None and found.delayed:
            return "backoff"
        return "settled" if handle.status() in SETTLED else None

    if stage.poll(backoff_or_settled) == "backoff":
        stage.say("  attempt 1 failed: the task waits out its retry backoff (delayed 1)")
    value = _value(stage, handle)
    if value is None:
        return f"retry: task {handle.id} did not succeed"
    stage.say(f"  attempt {value['attempt']} succeeded on worker pid {value['pid']}")
    return None if value["attempt"] == 2 else f"retry: task {handle.id} succeeded on attempt {value['attempt']}, not 2"


def dead_letter(stage: Stage) -> str | None:
    """One task with bad input: its handler's declared input error dead-letters it at once, with its reason."""
    handle = stage.dispatcher.submit(STRICT, {"txt": "hello"})
    stage.say(f"dead letter: task {handle.id} ({STRICT}) gets {{'txt': 'hello'}}; its handler reads payload['text']")
    try:
        handle.result(timeout_s=max(stage.remaining_s(), 0.1))
    except TaskDead as e:
        stage.say(f"  dead-lettered at once, reason {e.reason}: {e.error_type}: {e.error_message}")
        if e.reason != "rejected":
            return f"dead letter: task {handle.id} was dead-lettered as {e.reason}, not rejected"
    except (TaskFailed, ResultTimeout) as e:
        return f"dead letter: task {handle.id} was not dead-lettered: {e}"
    else:
        return f"dead letter: task {handle.id} succeeded on bad input"
    settings = stage.dispatcher.settings
    stage.say(f"  $ dispatcher dlq list {STRICT} --prefix {settings.prefix}")
    code = dispatcher_main(["dlq", "list", STRICT, "--redis-url", settings.redis_url, "--prefix", settings.prefix])
    return None if code == 0 else f"dead letter: dispatcher dlq list exited with {code}"


def kill(stage: Stage, tasks: int, seconds: float) -> str | None:
    """``tasks`` slow tasks; the worker running most of them is killed with SIGKILL; its tasks finish elsewhere."""
    keys = stage.keyspace.capability(SLOW)
    handles = stage.dispatcher.submit_many([Task(capability=SLOW, payload=seconds) for _ in range(tasks)])
    stage.say(f"kill: {tasks} tasks of {seconds:g} s ({SLOW}); the worker running most of them gets SIGKILL")

    def held() -> dict[str, int]:
        return {c.name: c.pending for c in stage.dispatcher.gateway.run(pending.consumers(keys))}

    def busiest() -> Proc | None:
        alive = [w for w in stage.workers if w.alive()]
        counts = held()
        running = [w for w in alive if counts.get(w.name, 0) > 0]
        return max(running, key=lambda w: counts[w.name]) if running and len(alive) > 1 else None

    victim = stage.poll(busiest)
    if victim is None:
        return "kill: no worker took a slow task before the deadline, with another worker alive"
    victim.kill()
    killed_at = time.monotonic()
    lost = held().get(victim.name, 0)  # a killed consumer's pending entries stay as they were until the reaper
    stage.say(f"  killed {victim.name} (pid {victim.pid}) with SIGKILL while it ran {lost} of them")
    if stage.poll(lambda: held().get(victim.name, 0) == 0):
        stage.say(
            f"  its heartbeat expired; the reaper handed its {lost} tasks back "
            f"{time.monotonic() - killed_at:.1f} s after the kill"
        )
    return _finish_elsewhere(stage, handles, victim, lost)


def _finish_elsewhere(stage: Stage, handles: list[TaskHandle], victim: Proc, lost: int) -> str | None:
    """Show each slow task as it finishes; None when the ``lost`` ones ran again on another worker."""
    waiting, again = list(handles), 0
    while waiting and stage.remaining_s() > 0:
        for handle in [h for h in waiting if h.status() in SETTLED]:
            waiting.remove(handle)
            value = _value(stage, handle)
            if value is None:
                return f"kill: task {handle.id} did not succeed"
            if value["pid"] == victim.pid:
                return f"kill: task {handle.id} reports the killed worker pid {victim.pid}"
            again += value["attempt"] > 1
            note = " (handed back from the killed worker)" if value["attempt"] > 1 else ""
            stage.say(f"  task {handle.id} finished on worker pid {value['pid']}, attempt {value['attempt']}{note}")
        time.sleep(POLL_INTERVAL_S)
    if waiting:
        return f"kill: {len(waiting)} slow tasks still unfinished at the deadline"
    if again != lost:
        return f"kill: {again} tasks ran again after the kill, but the killed worker held {lost}"
    return None


def show_progress(tty: bool) -> Callable[[Progress], None]:
    """A progress printer: one line rewritten in place on a terminal, a line per refresh otherwise."""

    def show(p: Progress) -> None:
        line = render.progress_line(p.done, p.total, p.elapsed_s, p.workers)
        print("\r" + line if tty else line, end="" if tty else "\n", flush=True)
        if tty and p.done == p.total:
            print()

    return show

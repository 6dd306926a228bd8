"""What a worker's logs say about its tasks (``python -m workers`` processes): each task's start and end at DEBUG
only, dead letters at WARNING with the task id and reason, one line at shutdown on the in-flight tasks, and never
a payload at INFO."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, TaskDead

DEADLINE_S = 30.0
MARKER = "payload-marker-7f3a"
NO_ENV_LEVEL = {"DISPATCHER_LOG_LEVEL": ""}


def drain(run_worker: Any, dispatcher: Dispatcher, *flags: str, env: dict[str, str]) -> tuple[str, str, str]:
    """Submit one task that succeeds and one that is rejected, drain them with a burst worker; its log and ids."""
    ok = dispatcher.submit("echo", {"secret": MARKER})
    bad = dispatcher.submit("faulty.reject", {"reason": "bad input", "secret": MARKER})
    proc = run_worker(
        "--capability", "echo", "--capability", "faulty.reject", "--burst", *flags, app="apps.faulty", env=env
    )
    assert wait_exit(proc) == 0, worker_log(proc)
    assert ok.result(timeout_s=DEADLINE_S) == {"secret": MARKER}
    with pytest.raises(TaskDead):
        bad.result(timeout_s=DEADLINE_S)
    return worker_log(proc), ok.id, bad.id


@pytest.mark.parametrize(
    ("flags", "env"), [(["--log-level", "DEBUG"], NO_ENV_LEVEL), ([], {"DISPATCHER_LOG_LEVEL": "debug"})]
)
def test_at_debug_each_task_logs_its_start_and_end(
    run_worker: Any, dispatcher: Dispatcher, flags: list[str], env: dict[str, str]
) -> None:
    log, ok, bad = drain(run_worker, dispatcher, *flags, env=env)
    lines = log.splitlines()
    for capability, task_id, outcome in (
        ("echo", ok, "outcome=succeeded reason=-"),
        ("faulty.reject", bad, "outcome=dead reason=rejected"),
    ):
        (started,) = [line for line in lines if f"task started capability={capability} task_id={task_id} " in line]
        assert " DEBUG " in started and "attempt=1" in started
        (ended,) = [line for line in lines if f"task ended capability={capability} task_id={task_id} " in line]
        assert " DEBUG " in ended and f"attempt=1 {outcome} duration_s=" in ended, ended
        assert float(ended.rsplit("duration_s=", 1)[1]) >= 0


def test_at_info_no_task_is_logged_but_dead_letters_are_and_payloads_never(
    run_worker: Any, dispatcher: Dispatcher
) -> None:
    log, ok, bad = drain(run_worker, dispatcher, env=NO_ENV_LEVEL)
    assert "task started" not in log and "task ended" not in log and ok not in log
    assert MARKER not in log
    (dead,) = [line for line in log.splitlines() if "dead letter" in line]
    assert " WARNING " in dead and f"capability=faulty.reject task_id={bad} " in dead and "reason=rejected" in dead


def test_shutdown_says_how_many_tasks_finished_in_the_grace_period(run_worker: Any, dispatcher: Dispatcher) -> None:
    proc = run_worker("--capability", "sleep", "--log-level", "DEBUG", "--grace-s", "30")
    handle = dispatcher.submit("sleep", 3.0)  # outlasts the read the worker is blocked in when signalled
    wait_until(lambda: f"task started capability=sleep task_id={handle.id}" in worker_log(proc), DEADLINE_S)
    os.kill(proc.pid, signal.SIGTERM)
    assert wait_exit(proc) == 0, worker_log(proc)
    assert handle.result(timeout_s=DEADLINE_S) == 3.0
    (summary,) = [line for line in worker_log(proc).splitlines() if "finished_in_grace=" in line]
    assert " INFO " in summary and "stopping: in-flight tasks finished_in_grace=1 handed_back=0" in summary

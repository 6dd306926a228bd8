"""``--log-format json`` (and ``DISPATCHER_LOG_FORMAT``) on a worker process: every line of its log is one JSON
object, the task's ids ride as fields, and the payload is never logged."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import WorkerRunner
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, TaskDead

DEADLINE_S = 30.0
TIMERS = ("--heartbeat-ttl-s", "2", "--block-ms", "200", "--backoff-base-s", "0.05", "--backoff-jitter", "0")
SECRET = "payload-marker-7f3a"


def records(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    lines = proc.stderr_path.read_text().splitlines()  # type: ignore[attr-defined]
    return [json.loads(line) for line in lines]  # raises on any line that is not one JSON object


def test_every_line_is_a_json_object_with_the_tasks_fields(dispatcher: Dispatcher, run_worker: WorkerRunner) -> None:
    worker = run_worker(
        "--capability", "faulty.flaky", "--log-format", "json", "--log-level", "debug", *TIMERS, app="apps.faulty"
    )  # fmt: skip
    ok = dispatcher.submit("faulty.flaky", {"secret": SECRET})
    flaky = dispatcher.submit("faulty.flaky", {"fail_times": 1, "secret": SECRET}, max_retries=1)
    dead = dispatcher.submit("faulty.flaky", {"fail_times": 9, "secret": SECRET}, max_retries=0)
    assert ok.result(timeout_s=DEADLINE_S) == 1
    assert flaky.result(timeout_s=DEADLINE_S) == 2
    with pytest.raises(TaskDead):
        dead.result(timeout_s=DEADLINE_S)
    worker.terminate()  # SIGTERM, by PID
    assert wait_exit(worker, DEADLINE_S) == 0

    found = records(worker)
    assert all({"time", "level", "logger", "event"} <= r.keys() for r in found)
    assert all(str(r["time"]).endswith("Z") for r in found)
    finished = {(r["task_id"], r["attempt"]): r for r in found if str(r["event"]).startswith("task finished")}
    assert {k: r["outcome"] for k, r in finished.items()} == {
        (ok.id, 1): "succeeded",
        (flaky.id, 1): "retried",
        (flaky.id, 2): "succeeded",
        (dead.id, 1): "dead",
    }
    for r in finished.values():
        assert r["capability"] == "faulty.flaky" and r["level"] == "DEBUG"
        assert isinstance(r["duration_s"], float) and r["duration_s"] >= 0 and r["consumer"]
    failed = [r for r in found if str(r["event"]).startswith("handler failed")]
    assert [(r["task_id"], r["attempt"], r["level"]) for r in failed] == [(flaky.id, 1, "INFO"), (dead.id, 1, "INFO")]
    assert all(r["error"] == "ValueError" and r["capability"] == "faulty.flaky" for r in failed)
    assert SECRET not in worker.stderr_path.read_text()  # type: ignore[attr-defined]  # not even at DEBUG


def test_the_environment_chooses_json_and_a_bad_value_is_one_line(run_worker: WorkerRunner) -> None:
    worker = run_worker(
        "--capability", "faulty.flaky", *TIMERS, app="apps.faulty", env={"DISPATCHER_LOG_FORMAT": "json"}
    )
    wait_until(lambda: any("worker started" in str(r["event"]) for r in records(worker)), DEADLINE_S, message="start")
    worker.terminate()
    assert wait_exit(worker, DEADLINE_S) == 0
    assert any(r["event"].startswith("worker stopped") for r in records(worker))  # type: ignore[union-attr]

    bad = run_worker("--capability", "faulty.flaky", app="apps.faulty", env={"DISPATCHER_LOG_FORMAT": "xml"})
    assert wait_exit(bad, DEADLINE_S) == 2
    err = bad.stderr_path.read_text()  # type: ignore[attr-defined]
    assert err == "worker: error: DISPATCHER_LOG_FORMAT: 'xml' is not one of text, json\n", worker_log(bad)

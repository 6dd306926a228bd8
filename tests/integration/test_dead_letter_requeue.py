"""``dispatcher dlq requeue CAPABILITY --all`` (the CLI in-process) against dead letters of every reason a
capability collects, written by real workers: each letter that holds a task goes back on the stream with a fresh
attempt count and runs again; a ``decode_error`` letter holds no task, is reported as not requeued, and stays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from apps.faulty import FAIL_FLAG_ENV, LEDGER_ENV, Ledger, worker_record
from conftest import WorkerRunner
from helpers import wait_until, worker_log

from dispatcher import Dispatcher, TaskDead, TaskHandle
from dispatcher.cli.main import main
from dispatcher.store.keys import KeySpace

CAP = "faulty.moody"
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
DEADLINE_S = 30.0


def ready(client: redis.Redis, prefix: str, proc: subprocess.Popen[bytes]) -> None:
    def seen() -> bool:
        assert proc.poll() is None, worker_log(proc)
        return worker_record(client, prefix, proc.pid) is not None

    wait_until(seen, DEADLINE_S, message=f"worker {proc.pid} to register")


def reason(handle: TaskHandle) -> str:
    with pytest.raises(TaskDead) as caught:
        handle.result(timeout_s=DEADLINE_S)
    return caught.value.reason


@dataclass(frozen=True)
class Letters:
    """Dead letters of every reason in ``CAP``, written by real workers; the worker that runs requeued tasks."""

    handles: dict[str, TaskHandle]
    """The task of each letter that holds one, by reason (poison, max_retries, rejected)."""
    letter_ids: dict[str, str]
    """Letter id by reason, decode_error included."""
    keeper: subprocess.Popen[bytes]


def dead_letters_of_every_reason(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str, flag: Path
) -> Letters:
    keys = KeySpace(prefix).capability(CAP)
    flag.touch()  # faulty.moody misbehaves while it exists
    env = {LEDGER_ENV: ledger.path, FAIL_FLAG_ENV: str(flag)}

    # poison: its worker dies holding it, and the keeper's reaper (max_deliveries 1) buries it instead of re-adding.
    victim = run_worker("--capability", CAP, "--concurrency", "1", "--no-upkeep", *TIMERS, app="apps.faulty", env=env)
    ready(client, prefix, victim)
    hung = dispatcher.submit(CAP, {"mode": "hang", "tag": "poison"})
    wait_until(lambda: ledger.count("start", hung.id) == 1, DEADLINE_S, message="the victim's run")
    keeper = run_worker("--capability", CAP, "--max-deliveries", "1", *TIMERS, app="apps.faulty", env=env)
    ready(client, prefix, keeper)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert reason(hung) == "poison"
    failing = dispatcher.submit(CAP, {"mode": "fail", "tag": "max_retries"}, max_retries=0)
    refused = dispatcher.submit(CAP, {"mode": "reject", "tag": "rejected"})
    assert (reason(failing), reason(refused)) == ("max_retries", "rejected")
    client.xadd(keys.stream, {"v": "1", "task": b"\xc1\xc1garbage", "attempt": "1"})  # decode_error: no task
    wait_until(lambda: client.xlen(keys.dead) == 4, DEADLINE_S, message="four dead letters")
    letter_ids = {f[b"reason"].decode(): i.decode() for i, f in client.xrange(keys.dead)}
    assert set(letter_ids) == {"poison", "max_retries", "rejected", "decode_error"}
    flag.unlink()  # healthy again
    handles = {"poison": hung, "max_retries": failing, "rejected": refused}
    return Letters(handles, letter_ids, keeper)


def test_requeue_all_puts_back_every_letter_that_holds_a_task_and_they_run_again(
    client: redis.Redis,
    dispatcher: Dispatcher,
    run_worker: WorkerRunner,
    ledger: Ledger,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = KeySpace(prefix).capability(CAP)
    letters = dead_letters_of_every_reason(client, dispatcher, run_worker, ledger, prefix, tmp_path / "broken")
    cli = ["--redis-url", dispatcher.settings.redis_url, "--prefix", prefix]
    assert main(["dlq", "requeue", CAP, "--all", *cli]) in (0, 1)  # what it reports: the test below
    capsys.readouterr()

    for tag, handle in letters.handles.items():  # run again, on the keeper, with a fresh attempt count
        assert handle.result(timeout_s=DEADLINE_S) == tag
        last = ledger.records("start", handle.id)[-1]
        assert (last["pid"], last["attempt"]) == (letters.keeper.pid, 1), tag
    assert main(["dlq", "list", CAP, "--json", *cli]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["letter_id"], r["reason"]) for r in rows] == [(letters.letter_ids["decode_error"], "decode_error")]
    assert client.xlen(keys.stream) == 0  # every entry settled, the undecodable one when it was dead-lettered


def test_requeue_all_reports_the_decode_error_letter_as_not_requeued(
    client: redis.Redis,
    dispatcher: Dispatcher,
    run_worker: WorkerRunner,
    ledger: Ledger,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    letters = dead_letters_of_every_reason(client, dispatcher, run_worker, ledger, prefix, tmp_path / "broken")
    capsys.readouterr()
    cli = ["--redis-url", dispatcher.settings.redis_url, "--prefix", prefix]
    code = main(["dlq", "requeue", CAP, "--all", *cli])
    out, err = capsys.readouterr()
    undecodable = letters.letter_ids["decode_error"]
    assert (out.strip(), err.strip()) == (
        "requeued 3",
        f"dispatcher: not requeued: {undecodable}: holds no task to requeue (decode_error)",
    )
    assert code == 1  # partial: one letter could not be requeued

"""`dispatcher dlq` and `dispatcher reaper`, in-process against the private redis-server."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from helpers import wait_until

from dispatcher import ConfigError, Dispatcher, TaskDead
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main
from dispatcher.fleet.deadletters import DeadLetters
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace


def _args(settings: Any) -> list[str]:
    return ["--redis-url", settings.redis_url, "--prefix", settings.prefix]


@pytest.fixture
def dead_task(dispatcher: Dispatcher, run_worker: Any) -> str:
    """A task of `sleep` that was dead-lettered (a payload sleep refuses, no retries)."""
    worker = run_worker("--capability", "sleep", "--concurrency", "2")
    handle = dispatcher.submit("sleep", "not a number", max_retries=0)
    with pytest.raises(TaskDead):
        handle.result(timeout_s=30)
    worker.terminate()
    worker.wait(timeout=30)
    return handle.id


def test_dlq_list_and_show(dead_task: str, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "sleep", "--json", *_args(settings)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["task_id"], r["reason"]) for r in rows] == [(dead_task, "max_retries")]
    assert "ValueError" in rows[0]["error"]

    assert main(["dlq", "show", "sleep", "--id", dead_task, *_args(settings)]) == 0
    out = capsys.readouterr().out
    assert "payload: not a number" in out and "Traceback" in out


def test_dlq_requeue_brings_the_task_back(
    dead_task: str, settings: Any, dispatcher: Dispatcher, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = KeySpace(settings.prefix).capability("sleep")
    client = redis_server.client()
    assert main(["dlq", "requeue", "sleep", "--id", dead_task, *_args(settings)]) == 0
    assert "requeued 1" in capsys.readouterr().out
    assert client.xlen(keys.dead) == 0
    assert dispatcher.handle(dead_task, "sleep").status() == "queued"  # fresh entry, old dead result gone
    fields = client.xrange(keys.stream)[-1][1]
    assert fields[b"attempt"] == b"1"
    # Requeueing the same letter again finds nothing: one requeue adds the task once.
    assert main(["dlq", "requeue", "sleep", "--id", dead_task, *_args(settings)]) == 0
    assert "requeued 0" in capsys.readouterr().out
    assert client.xlen(keys.stream) == 1


def test_dlq_purge_needs_confirmation(dead_task: str, settings: Any, redis_server: Any, capsys: Any) -> None:
    keys = KeySpace(settings.prefix).capability("sleep")
    assert main(["dlq", "purge", "sleep", "--all", *_args(settings)]) == 2
    assert "not confirmed" in capsys.readouterr().err
    assert redis_server.client().xlen(keys.dead) == 1
    assert main(["dlq", "purge", "sleep", "--all", "--yes", *_args(settings)]) == 0
    assert redis_server.client().xlen(keys.dead) == 0


@pytest.mark.parametrize(
    "argv",
    [["dlq", "requeue", "sleep"], ["dlq", "show", "sleep"], ["dlq", "purge", "sleep", "--all", "--id", "x"]],
)
def test_dlq_usage_mistakes(argv: list[str], settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, *_args(settings)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dispatcher: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_dlq_with_a_bad_capability_name_is_one_line(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "Bad Name", *_args(settings)]) == Exit.USAGE
    out, err = capsys.readouterr()
    assert err == (
        "dispatcher: error: invalid capability 'Bad Name': use 1-64 lowercase letters, digits, '_', '.' or '-'\n"
    )
    assert out == ""


@pytest.mark.parametrize("call", ["oldest", "find", "requeue", "purge"])
def test_dead_letters_refuse_a_bad_capability_name_with_config_error(call: str, settings: Any) -> None:
    letters = DeadLetters(Gateway(make_client(settings), settings.redis_url), KeySpace(settings.prefix), 1024)
    method = getattr(letters, call)
    with pytest.raises(ConfigError, match="invalid capability"):
        method("Bad Name") if call == "oldest" else method("Bad Name", None)


def test_reaper_once_reclaims_a_dead_consumer(
    dispatcher: Dispatcher,
    settings: Any,
    redis_server: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCHER_HEARTBEAT_TTL_S", str(settings.heartbeat_ttl_s))  # the CLI reads settings from env
    keys = KeySpace(settings.prefix).capability("echo")
    client = redis_server.client()
    handle = dispatcher.submit("echo", 1)
    client.xgroup_create(keys.stream, "workers", id="0", mkstream=True)
    client.xreadgroup("workers", "ghost", {keys.stream: ">"}, count=10)  # a consumer that never beats
    # The reaper waits 1.5 heartbeat TTLs after a Redis restart; the session server is older than that.
    wait_until(lambda: int(client.info("server")["uptime_in_seconds"]) >= settings.heartbeat_ttl_s * 1.5)
    assert main(["reaper", "--once", *_args(settings)]) == 0
    assert "reclaimed 1" in capsys.readouterr().out
    assert client.xpending(keys.stream, "workers")["pending"] == 0
    fields = client.xrange(keys.stream)[-1][1]
    assert (fields[b"attempt"], fields[b"reclaims"]) == (b"2", b"1")
    assert handle.status() == "queued"


def test_dlq_requeue_and_purge_print_json(dead_task: str, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["dlq", "requeue", "sleep", "--id", dead_task, "--json", *_args(settings)]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1, "problems": []}
    assert main(["dlq", "purge", "sleep", "--all", "--yes", "--json", *_args(settings)]) == 0
    assert json.loads(capsys.readouterr().out) == {"purged": 0}


def test_stats_watch_redraws_in_place_on_a_terminal(
    settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["stats", "--watch", "--count", "2", "--interval-s", "0.01", *_args(settings)]) == 0
    out = capsys.readouterr().out
    assert out.count("\x1b[H\x1b[J") == 2, "cursor home + clear to end before each refresh, no full-screen clear"
    assert "\x1b[2J" not in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["stats", "--watch", "--count", "2", "--interval-s", "0.01", *_args(settings)]) == 0
    assert "\x1b[" not in capsys.readouterr().out, "piped: plain tables"

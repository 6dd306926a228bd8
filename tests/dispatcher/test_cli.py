"""The ``dispatcher`` CLI, called in-process: submit, stats (table and --json schema), demo, user mistakes."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
import redis
from conftest import free_port
from helpers import one_error_line, wait_for_worker

from dispatcher import Dispatcher, KeySpace, Settings
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import build_parser, main
from dispatcher.store.codec import WorkerRecord, encode_worker

# --- submit -----------------------------------------------------------------------------------------------


def test_submit_prints_the_id_of_a_queued_task(
    cli: list[str], dispatcher: Dispatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "echo", '{"n": 1}', *cli]) == Exit.OK
    task_id = capsys.readouterr().out.strip()
    assert dispatcher.handle(task_id).capability == "echo"
    assert dispatcher.handle(task_id, "echo").status() == "queued"


def test_submit_with_options(
    cli: list[str], dispatcher: Dispatcher, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submit", "echo", "1", "--delay-s", "3600", "--max-retries", "0", "--timeout-s", "5", *cli]
    assert main([*args, "--idempotency-key", "k1"]) == Exit.OK
    first = capsys.readouterr().out.strip()
    assert main([*args, "--idempotency-key", "k1"]) == Exit.OK
    assert capsys.readouterr().out.strip() == first
    client = redis_server.client()
    assert client.zrange(KeySpace(dispatcher.settings.prefix).capability("echo").delayed, 0, -1) == [first.encode()]


def test_submit_wait_prints_the_result_as_json(
    cli: list[str], dispatcher: Dispatcher, run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wait_for_worker(dispatcher, "echo", run_worker("--capability", "echo"))
    assert main(["submit", "echo", '{"a": [1, 2]}', "--wait", "--wait-timeout-s", "30", *cli]) == Exit.OK
    assert json.loads(capsys.readouterr().out) == {"a": [1, 2]}


def test_submit_wait_for_a_failing_task(
    cli: list[str], dispatcher: Dispatcher, run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wait_for_worker(dispatcher, "sleep", run_worker("--capability", "sleep"))
    argv = ["submit", "sleep", '"not a number"', "--max-retries", "0", "--wait", "--wait-timeout-s", "30", *cli]
    assert main(argv) == Exit.FAILED
    out, err = capsys.readouterr()
    assert out == ""
    assert "ValueError" in one_error_line(err)


def test_submit_wait_timeout(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "echo", "1", "--wait", "--wait-timeout-s", "0.2", *cli]) == Exit.TIMEOUT
    warning, error = capsys.readouterr().err.splitlines()  # no worker serves echo: the warning comes first
    assert warning.startswith("dispatcher: warning: no live worker serves capability 'echo'")
    one_error_line(error)


# --- user mistakes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["submit", "echo", "{bad json"], Exit.USAGE),
        (["submit", "Not A Capability", "1"], Exit.USAGE),
        (["submit", "echo", "1", "--max-retries", "-1"], Exit.USAGE),
        (["submit", "echo", "1", "--max-retries", "many"], Exit.USAGE),
        (["submit", "echo", "1", "--delay-s", "-5"], Exit.USAGE),
        (["submit", "echo"], Exit.USAGE),
        (["frobnicate"], Exit.USAGE),
        ([], Exit.USAGE),
        (["stats", "--prefix", "has space"], Exit.USAGE),
        (["stats", "--watch", "--count", "0"], Exit.USAGE),
        (["stats", "--watch", "--interval-s", "0"], Exit.USAGE),
    ],
)
def test_user_mistakes_print_one_line(
    argv: list[str], code: int, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--redis-url", settings.redis_url] if argv[:1] in (["stats"], ["submit"]) else argv) == code
    out, err = capsys.readouterr()
    one_error_line(err)
    assert out == ""


@pytest.mark.parametrize("argv", [["stats"], ["stats", "--json"], ["submit", "echo", "1"]])
def test_unreachable_redis(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main([*argv, "--redis-url", url]) == Exit.UNAVAILABLE
    out, err = capsys.readouterr()
    assert "unavailable" in one_error_line(err)
    assert out == ""


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == Exit.OK
    assert "submit" in capsys.readouterr().out


def test_subcommand_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--help"]) == Exit.OK
    assert "--redis-url" in capsys.readouterr().out


def test_every_flag_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {
        "submit",
        "status",
        "result",
        "capabilities",
        "limits",
        "stats",
        "workers",
        "pending",
        "pause",
        "resume",
        "dlq",
        "reaper",
        "exporter",
        "healthcheck",
    }
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_bad_settings_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--redis-url", "http://x"]) == Exit.USAGE
    out, err = capsys.readouterr()
    assert "redis_url" in one_error_line(err)
    assert out == ""


# --- stats ------------------------------------------------------------------------------------------------


def fill(dispatcher: Dispatcher, client: redis.Redis) -> None:
    ks = KeySpace(dispatcher.settings.prefix)
    dispatcher.submit("echo", 1)
    dispatcher.submit("echo", 2)
    dispatcher.submit("sleep", 0.1, delay_s=3600)
    record = WorkerRecord("w1", "box", 7, ("echo",), 4, 0, "0.1.0", 1.0, 2.0, {"echo": "closed"})
    client.hset(ks.workers, "w1", encode_worker(record))
    client.set(ks.capability("echo").heartbeat("w1"), "w1", px=60_000)


def test_stats_json_schema(
    cli: list[str], dispatcher: Dispatcher, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(dispatcher, redis_server.client())
    assert main(["stats", "--json", *cli]) == Exit.OK
    doc = json.loads(capsys.readouterr().out)
    first_schema = {
        "capabilities": [
            {"name": "echo", "waiting": 2, "running": 0, "delayed": 0, "dead": 0, "workers": 1, "open_circuits": 0},
            {"name": "sleep", "waiting": 0, "running": 0, "delayed": 1, "dead": 0, "workers": 0, "open_circuits": 0},
        ],
        "totals": {"waiting": 2, "running": 0, "delayed": 1, "dead": 0, "workers": 1},
        "workers": [
            {
                "consumer": "w1",
                "host": "box",
                "pid": 7,
                "capabilities": ["echo"],
                "concurrency": 4,
                "inflight": 0,
                "circuits": {"echo": "closed"},
                "alive": True,
            }
        ],
    }
    # The documented schema is kept: every key of its first version, same values; new keys only added.
    for section in ("capabilities", "workers"):
        kept = [{k: row[k] for k in want} for row, want in zip(doc[section], first_schema[section], strict=True)]
        assert kept == first_schema[section]
    assert {k: doc["totals"][k] for k in first_schema["totals"]} == first_schema["totals"]
    echo, sleep = doc["capabilities"]
    assert echo["oldest_waiting_s"] >= 0 and sleep["oldest_waiting_s"] is None
    added = {k: echo[k] for k in ("stale_consumers", "oldest_running_s", "paused", "completed_1m", "failed_1m")}
    assert added == {"stale_consumers": 0, "oldest_running_s": None, "paused": False, "completed_1m": 0, "failed_1m": 0}
    assert (echo["drain_eta_s"], echo["workers_needed"], echo["workers_needed_basis"]) == (None, 1, "no_rate")
    assert (sleep["workers_needed"], sleep["workers_needed_basis"]) == (0, "idle")
    assert set(doc["redis"]) == {"version", "used_memory", "maxmemory", "maxmemory_policy"}
    assert doc["redis"]["version"].split(".")[0].isdigit() and doc["redis"]["used_memory"] > 0
    assert doc["target_age_s"] == 60
    assert doc["workers"][0]["version"] == "0.1.0" and doc["workers"][0]["started_at"] == 1.0


def test_stats_table(
    cli: list[str], dispatcher: Dispatcher, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(dispatcher, redis_server.client())
    assert main(["stats", *cli]) == Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["capability", "waiting", "running", "delayed", "dead", "workers"]
    assert lines[1].split()[:6] == ["echo", "2", "0", "0", "0", "1"]
    assert lines[2].split()[:6] == ["sleep", "0", "0", "1", "0", "0"]
    assert lines[3].split()[:6] == ["TOTAL", "2", "0", "1", "0", "1"]
    assert any(line.startswith("w1") and "alive" in line for line in lines[4:])


def test_stats_watch_is_bounded_by_count(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--json", "--watch", "--count", "3", "--interval-s", "0.01", *cli]) == Exit.OK
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["totals"]["waiting"] for d in docs] == [0, 0, 0]

"""``dispatcher submit`` (payload sources, the unserved warning), ``status`` and ``result`` as a user runs them,
against the session's real Redis, with real worker processes where a result is needed."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from helpers import fake_live_worker, keyspace, one_error_line, read_as, settle, wait_exit, wait_for_worker

from dispatcher import Dispatcher, KeySpace, Settings
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main
from dispatcher.store import codec

DISPATCHER_BIN = str(Path(sys.executable).parent / "dispatcher")
DEADLINE_S = "60"
BIG = {"blob": "x" * (250 * 1024), "n": 1}
"""A payload over 200 KiB: more than one argument may hold (the OS refuses ~128 KiB)."""


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- item 3: bytes results in one JSON form ---------------------------------------------------------------


def test_submit_wait_prints_bytes_in_their_json_form(
    cli: list[str], run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run_worker("--capability", "binary.blob", app="apps.binary")
    assert main(["submit", "binary.blob", "null", "--wait", "--wait-timeout-s", DEADLINE_S, *cli]) == Exit.OK
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert json.loads(out) == {
        "raw": {"$bytes": b64(b"\x00\xffbin")},
        "list": [{"$bytes": b64(b"a")}, 1],
        "keyed": {"$map": [[{"$bytes": b64(b"k")}, {"$bytes": b64(b"v")}]]},
        "nan": {"$float": "nan"},
    }


def test_result_prints_a_bytes_result(
    cli: list[str], dispatcher: Dispatcher, run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = dispatcher.submit("binary.bytes", "héllo")
    run_worker("--capability", "binary.bytes", app="apps.binary")
    assert main(["result", handle.id, "--wait", "--timeout-s", DEADLINE_S, *cli]) == Exit.OK
    assert json.loads(capsys.readouterr().out) == {"$bytes": b64("héllo".encode())}


def test_a_record_with_an_ext_type_is_one_error_line(
    cli: list[str], dispatcher: Dispatcher, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = dispatcher.submit("echo", 1)
    record = msgpack.packb({"status": "succeeded", "value": msgpack.ExtType(5, b"x"), "attempt": 1, "worker": "w"})
    client.set(KeySpace(dispatcher.settings.prefix).capability("echo").result(handle.id), record)
    assert main(["result", handle.id, *cli]) == Exit.ERROR
    out, err = capsys.readouterr()
    assert "ext type 5" in one_error_line(err)
    assert out == ""


# --- item 7: the payload from stdin and from a file -------------------------------------------------------


def test_a_large_payload_through_stdin(settings: Settings, run_worker: Any) -> None:
    run_worker("--capability", "echo")
    argv = [DISPATCHER_BIN, "submit", "echo", "-", "--wait", "--wait-timeout-s", DEADLINE_S]
    argv += ["--redis-url", settings.redis_url, "--prefix", settings.prefix]
    done = subprocess.run(argv, input=json.dumps(BIG).encode(), capture_output=True, timeout=120, check=False)
    assert done.returncode == Exit.OK, done.stderr
    assert json.loads(done.stdout) == BIG


def test_a_large_payload_from_a_file(
    cli: list[str], run_worker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(BIG))
    run_worker("--capability", "echo")
    assert main(["submit", "echo", f"@{path}", "--wait", "--wait-timeout-s", DEADLINE_S, *cli]) == Exit.OK
    assert json.loads(capsys.readouterr().out) == BIG


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read payload file"),  # missing
        ("dir", "cannot read payload file"),  # a directory
        (b'{"a": ', "is not valid JSON"),
        (b'"\xff\xfe"', "is not UTF-8 text"),
    ],
)
def test_bad_payload_files_are_one_line(
    content: bytes | str | None,
    said: str,
    cli: list[str],
    dispatcher: Dispatcher,
    client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "payload.json"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert main(["submit", "echo", f"@{path}", *cli]) == Exit.USAGE
    out, err = capsys.readouterr()
    assert said in one_error_line(err)
    assert out == ""
    assert client.exists(KeySpace(dispatcher.settings.prefix).capability("echo").stream) == 0  # nothing submitted


@pytest.mark.parametrize("priority", ["10", "-1"])
def test_a_priority_out_of_range_is_one_line_and_nothing_written(
    priority: str, cli: list[str], dispatcher: Dispatcher, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "echo", "1", "--priority", priority, *cli]) == Exit.USAGE
    out, err = capsys.readouterr()
    assert "priority" in one_error_line(err)
    assert out == ""
    assert not [k for k in keyspace(client, dispatcher.settings.prefix) if "{echo}" in k]


def test_submit_with_a_priority_writes_a_version_3_entry(
    cli: list[str], dispatcher: Dispatcher, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "echo", "1", "--priority", "7", *cli]) == Exit.OK
    ((_, fields),) = client.xrange(KeySpace(dispatcher.settings.prefix).capability("echo").stream)
    assert fields[b"v"] == b"3"
    assert msgpack.unpackb(fields[b"task"])["priority"] == 7


def test_invalid_json_on_stdin_is_one_line(settings: Settings) -> None:
    argv = [DISPATCHER_BIN, "submit", "echo", "-", "--redis-url", settings.redis_url, "--prefix", settings.prefix]
    done = subprocess.run(argv, input=b"{not json", capture_output=True, timeout=60, check=False)
    assert done.returncode == Exit.USAGE
    assert "the payload read from stdin is not valid JSON" in one_error_line(done.stderr.decode())
    assert done.stdout == b""


# --- item 8: no live worker -------------------------------------------------------------------------------


def test_submit_warns_when_no_live_worker_serves_the_capability(
    cli: list[str], dispatcher: Dispatcher, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_live_worker(client, dispatcher.settings.prefix, "echo")
    assert main(["submit", "ehco", "1", *cli]) == Exit.OK
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("dispatcher: warning: no live worker serves capability 'ehco'")
    assert "capabilities with live workers: echo" in line
    assert dispatcher.handle(out.strip(), "ehco").status() == "queued"  # submitted all the same

    assert main(["submit", "echo", "1", *cli]) == Exit.OK
    out, err = capsys.readouterr()
    assert err == ""
    assert dispatcher.handle(out.strip(), "echo").status() == "queued"


def test_wait_without_timeout_says_what_it_waits_for(
    cli: list[str], dispatcher: Dispatcher, run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = run_worker("--capability", "echo")
    wait_for_worker(dispatcher, "echo", worker)
    assert main(["submit", "echo", '"hi"', "--wait", *cli]) == Exit.OK
    out, err = capsys.readouterr()
    assert json.loads(out) == "hi"
    lines = [line for line in err.splitlines() if "waiting for task" in line]
    assert len(lines) == 1, err + run_worker.log(worker)
    assert "of capability 'echo' (no timeout; Ctrl-C to stop)" in lines[0]


def test_wait_without_timeout_and_without_worker_says_so(settings: Settings) -> None:
    argv = [DISPATCHER_BIN, "submit", "ehco", "1", "--wait", "--redis-url", settings.redis_url]
    proc = subprocess.Popen([*argv, "--prefix", settings.prefix], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline().decode() for _ in range(2)]  # the warning, then the waiting line
        assert lines[0].startswith("dispatcher: warning: no live worker serves capability 'ehco'"), lines
        assert lines[1].startswith("dispatcher: waiting for task "), lines
        assert "of capability 'ehco' (no timeout; no live worker serves it yet; Ctrl-C to stop)" in lines[1]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = wait_exit(proc)
        _, rest = proc.communicate()  # the pipes closed whatever the outcome, the rest of stderr kept for a failure
        assert code == Exit.INTERRUPTED, rest.decode()


# --- item 9: status and result ----------------------------------------------------------------------------


def status_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", *argv]) == Exit.OK
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)  # type: ignore[no-any-return]


def test_status_of_a_task_in_each_state(
    cli: list[str],
    dispatcher: Dispatcher,
    settings: Settings,
    client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queued = dispatcher.submit("echo", 1)
    doc = status_json([queued.id, *cli], capsys)
    assert doc["status"] == "queued"
    assert (doc["capability"], doc["attempt"], doc["reclaims"], doc["delayed"]) == ("echo", 1, 0, False)
    assert doc["entry_id"] and doc["worker"] is None

    keys = KeySpace(settings.prefix).capability("echo")
    read_as(client, keys.stream, "c7")
    doc = status_json([queued.id, "--capability", "echo", *cli], capsys)
    assert (doc["status"], doc["worker"], doc["attempt"]) == ("running", "c7", 1)

    later = dispatcher.submit("sleep", 1, delay_s=3600)
    doc = status_json([later.id, *cli], capsys)
    assert (doc["status"], doc["delayed"], doc["attempt"], doc["entry_id"]) == ("queued", True, 1, None)
    assert doc["due_at"] > time.time() + 3000

    done = dispatcher.submit("other", 2)
    settle(client, settings, done, codec.Outcome("succeeded", value=4, attempt=1, worker="c1"))
    doc = status_json([done.id, *cli], capsys)
    assert (doc["status"], doc["attempt"], doc["worker"], doc["error_type"]) == ("succeeded", 1, "c1", None)
    assert doc["finished_at"] > 0


def test_a_failed_task(
    cli: list[str], dispatcher: Dispatcher, run_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = dispatcher.submit("sleep", "not a number", max_retries=0)
    run_worker("--capability", "sleep")
    assert main(["result", handle.id, "--wait", "--timeout-s", DEADLINE_S, *cli]) == Exit.FAILED
    out, err = capsys.readouterr()
    assert "ValueError" in one_error_line(err)
    assert out == ""
    doc = status_json([handle.id, *cli], capsys)
    assert (doc["status"], doc["reason"], doc["error_type"]) == ("dead", "max_retries", "ValueError")


@pytest.mark.parametrize("command", ["status", "result"])
def test_an_unknown_id_is_not_found(command: str, cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "01NOSUCHTASK", *cli]) == Exit.NOT_FOUND
    out, err = capsys.readouterr()
    assert "01NOSUCHTASK" in one_error_line(err)
    assert out == ""


def test_result_of_an_unfinished_task(
    cli: list[str], dispatcher: Dispatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = dispatcher.submit("echo", 1)
    assert main(["result", handle.id, *cli]) == Exit.NOT_FINISHED
    out, err = capsys.readouterr()
    assert "has not finished (status: queued); use --wait" in one_error_line(err)
    assert out == ""
    assert main(["result", handle.id, "--wait", "--timeout-s", "0.2", *cli]) == Exit.TIMEOUT
    one_error_line(capsys.readouterr().err)


def test_result_timeout_needs_wait(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["result", "x", "--timeout-s", "3", *cli]) == Exit.USAGE
    assert "--timeout-s needs --wait" in one_error_line(capsys.readouterr().err)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == Exit.OK
    assert capsys.readouterr().out.strip() == f"dispatcher {version('agent-dispatcher')}"

"""The demo (``python -m workers.demo``, what ``scripts/demo`` runs), run as a user would: against the session's
Redis under a prefix, and on a private redis-server of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RedisServer
from helpers import children, keyspace

from dispatcher.cli.exits import Exit
from workers.demo import main

REPO = Path(__file__).resolve().parents[2]


def run_demo(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DISPATCHER_REDIS_URL", "DISPATCHER_PREFIX")}
    return subprocess.run(
        [sys.executable, "-m", "workers.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "DISPATCHER_REDIS_URL", "DISPATCHER_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_demo_without_redis_server_installed(
    no_redis_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["--tasks", "1"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: error: ") and "redis-server not found" in err


@pytest.mark.parametrize("argv", [["--tasks", "0"], ["--workers", "1"], ["--deadline-s", "0"]])
def test_demo_refuses_bad_sizes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: error: ")


def test_help_names_the_default_redis_truthfully(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == Exit.OK
    text = " ".join(capsys.readouterr().out.split())
    assert "$DISPATCHER_REDIS_URL, else $REDIS_URL, else a private redis-server" in text
    assert "localhost" not in text


@pytest.mark.timeout(150)
def test_demo_on_a_users_redis_shows_retry_dead_letter_and_kill_and_leaves_no_key(
    redis_server: RedisServer, prefix: str
) -> None:
    before = children()
    done = run_demo("--redis-url", redis_server.url, "--prefix", prefix, "--tasks", "60")
    out = done.stdout
    assert done.returncode == Exit.OK, done.stdout + done.stderr
    assert f"prefix: {prefix} " in out
    # the retry: the first attempt failed and waited out its backoff, the second succeeded
    assert "raises RuntimeError on its first attempt" in out
    assert re.search(r"^  attempt 2 succeeded on worker pid \d+$", out, re.M), out
    # the dead letter, with its reason, as `dispatcher dlq list` shows it
    assert "dead-lettered at once, reason rejected: KeyError: 'text'" in out
    assert f"$ dispatcher dlq list demo.strict --prefix {prefix}" in out
    assert re.search(r"^\S+-\d+\s+\w{26}\s+rejected\s+1\s+KeyError: 'text'$", out, re.M), out
    # the kill: a worker killed by SIGKILL mid-run, its tasks handed back and finished by the other worker
    killed = re.search(r"killed (demo-worker-\d) \(pid (\d+)\) with SIGKILL while it ran (\d+) of them", out)
    assert killed, out
    lost, victim_pid = int(killed.group(3)), killed.group(2)
    assert lost >= 1
    assert f"the reaper handed its {lost} tasks back" in out
    again = re.findall(r"finished on worker pid (\d+), attempt 2 \(handed back from the killed worker\)", out)
    assert len(again) == lost and victim_pid not in again, out
    # no key of the prefix left, the user's Redis named (not as stopped), every process stopped
    assert keyspace(redis_server.client(), prefix) == set()
    assert re.search(
        rf"^prefix {prefix}: \d+ keys deleted, none left \({re.escape(redis_server.url)}, left running\)$", out, re.M
    )
    assert "everything expected happened" in out
    assert done.stderr == ""
    assert children() <= before


@pytest.mark.timeout(150)
def test_demo_on_its_private_server_never_prints_its_url_once_stopped() -> None:
    done = run_demo("--tasks", "40")
    assert done.returncode == Exit.OK, done.stdout + done.stderr
    first, *rest = done.stdout.splitlines()
    url = re.fullmatch(
        r"Redis: (redis://127\.0\.0\.1:\d+/0) \(private: started for the demo, stopped at its end\)", first
    )
    assert url, first
    port = url.group(1).rsplit(":", 1)[1].split("/")[0]
    assert not any(port in line for line in rest), done.stdout  # neither the URL nor its port after the start
    assert re.search(r"keys deleted, none left \(a private redis-server, now stopped and gone\)$", done.stdout, re.M)


def test_demo_refuses_a_prefix_that_holds_keys(
    redis_server: RedisServer, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis_server.client()
    client.set(f"{prefix}:someone-else", b"keep me")
    before = children()
    assert main(["--redis-url", redis_server.url, "--prefix", prefix]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"demo: error: prefix '{prefix}' already holds keys")
    assert client.get(f"{prefix}:someone-else") == b"keep me"
    assert children() <= before
    client.delete(f"{prefix}:someone-else")


def test_a_demo_that_runs_out_of_time_fails_and_still_deletes_its_keys(redis_server: RedisServer, prefix: str) -> None:
    done = run_demo("--redis-url", redis_server.url, "--prefix", prefix, "--tasks", "5000", "--deadline-s", "1")
    assert done.returncode == Exit.FAILED, done.stdout + done.stderr
    assert done.stderr.startswith("demo: error: ")
    assert keyspace(redis_server.client(), prefix) == set()
    assert "none left" in done.stdout

"""The ``worker`` CLI called in-process, for user mistakes: each is one readable line and a named exit code."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import free_port

from dispatcher import Settings
from dispatcher.cli.exits import Exit
from workers.command import main, parser


@pytest.fixture
def cli(settings: Settings) -> list[str]:
    return ["--redis-url", settings.redis_url, "--prefix", settings.prefix]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("worker: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_every_setting_has_a_flag_of_the_same_name() -> None:
    options = {a.dest: a.option_strings for a in parser()._actions}
    for name in Settings.model_fields:
        assert options[name] == ["--" + name.replace("_", "-")], name


def test_every_flag_has_help() -> None:
    for action in parser()._actions:
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), action.option_strings
    helps = {a.dest: a.help or "" for a in parser()._actions}
    for name, field in Settings.model_fields.items():  # a settings flag shows its description and default
        assert helps[name].startswith(str(field.description)), name
        default = "none" if field.default is None else field.default
        assert f"$DISPATCHER_{name.upper()}" in helps[name] and f"else {default})" in helps[name], name


def test_help_returns_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == Exit.OK  # returned, not raised as SystemExit
    out = capsys.readouterr().out
    assert "--heartbeat-ttl-s" in out and "in seconds" in out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--heartbeat-ttl-s", "-1"], "heartbeat_ttl_s"),
        (["--heartbeat-ttl-s", "soon"], "heartbeat_ttl_s"),
        (["--block-ms", "9000"], "block_ms"),
        (["--prefix", "has space"], "prefix"),
        (["--concurrency", "0"], "concurrency"),
    ],
)
def test_an_invalid_value_is_one_line_and_exit_2(
    cli: list[str], capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    assert main([*cli, "--capability", "echo", *flags]) == Exit.USAGE
    assert named in one_error_line(capsys)


def test_an_unknown_capability_names_what_was_searched(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli, "--capability", "echo", "--capability", "no-such-thing"]) == Exit.USAGE
    line = one_error_line(capsys)
    assert "'no-such-thing'" in line and "workers.builtins" in line
    # in-process, other tests may have filled the process-wide registry too: check for the built-ins only
    assert all(name in line.rsplit("capabilities found: ", 1)[1].split(", ") for name in ("echo", "noop", "sleep"))


def test_an_unimportable_app_is_one_line(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli, "--capability", "echo", "--app", "no_such_module_at_all"]) == Exit.USAGE
    assert "no_such_module_at_all" in one_error_line(capsys)


def test_a_redis_url_that_is_not_redis_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--redis-url", "http://localhost:6379", "--capability", "echo"]) == Exit.USAGE
    assert "redis_url" in one_error_line(capsys)


def test_a_capability_without_a_handler_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--capability", "nosuch"]) == Exit.USAGE  # found before Redis is needed
    assert "no handler for capability 'nosuch'" in one_error_line(capsys)


def test_an_unreachable_redis_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    # Today the worker exits at once when Redis is down (issue 12 will make it wait, bounded, at start).
    url = f"redis://127.0.0.1:{free_port()}/0"
    argv = ["--redis-url", url, "--capability", "echo", "--retry-attempts", "0", "--connect-timeout-s", "0.5"]
    assert main(argv) == Exit.UNAVAILABLE
    assert "unavailable" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "--capability"),
        (["--capability"], "--capability"),
        (["--capability", "x", "--concurrency", "abc"], "--concurrency"),
        (["--capability", "echo", "--no-such-flag"], "--no-such-flag"),
        (["--capability", "echo", "--log-level", "chatty"], "--log-level"),
    ],
)
def test_argument_errors_are_one_line_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == Exit.USAGE  # returned, not raised as SystemExit
    assert named in one_error_line(capsys)


def test_python_m_workers_exits_2_with_one_line() -> None:
    """The real process: ``sys.exit(main())`` exits with the code, and stderr is one line, no traceback."""
    argv = [sys.executable, "-m", "workers", "--capability", "x", "--concurrency", "abc"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == Exit.USAGE
    assert done.stderr.splitlines() == ["worker: error: argument --concurrency: invalid int value: 'abc'"]

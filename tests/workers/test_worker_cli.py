"""The ``worker`` CLI called in-process, for user mistakes: each is one readable line and a named exit code."""

from __future__ import annotations

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


def test_an_unreachable_redis_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["--redis-url", url, "--capability", "echo", "--retry-attempts", "0"]) == Exit.UNAVAILABLE
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

"""The ``worker`` CLI called in-process, for user mistakes: each is one readable line and a named exit code."""

from __future__ import annotations

import argparse
import importlib.metadata
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == Exit.OK
    assert capsys.readouterr().out == f"worker {importlib.metadata.version('agent-dispatcher')}\n"


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
    # --start-wait-s 0: one try (tests/integration/test_worker_startup.py covers the bounded wait).
    url = f"redis://127.0.0.1:{free_port()}/0"
    argv = ["--redis-url", url, "--capability", "echo", "--retry-attempts", "0", "--start-wait-s", "0"]
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


# ---- every start-up mistake is one line (issue 12, item 4) ----------------------------------------------------

BROKEN_APPS = {
    "w12_syntax.py": "x = 1\ndef broken(:\n    pass\n",
    "w12_raises.py": "import os\n\nraise RuntimeError('boom at import ' + os.sep)\n",
    "w12_needs_dep.py": "import w12_no_such_dependency  # noqa\n",
    "w12_empty.py": "",
}


@pytest.fixture
def broken_apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """App modules that fail in each way, in the working directory; forgotten by the import system afterwards."""
    for name, text in BROKEN_APPS.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in BROKEN_APPS:
        sys.modules.pop(name.removesuffix(".py"), None)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--app", "./w12_missing.py"], "no file w12_missing.py"),
        (["--app", "w12_empty.txt/"], "not a .py file"),
        (["--app", ":x"], "no module before ':'"),
        (["--app", "w12_empty:"], "nothing after ':'"),
        (["--app", "w12_syntax"], "syntax error at {cwd}/w12_syntax.py:2: invalid syntax"),
        (["--app", "w12_raises"], "failed at import at {cwd}/w12_raises.py:3: RuntimeError: boom at import /"),
        (["--app", "w12_needs_dep"], "ModuleNotFoundError: No module named 'w12_no_such_dependency'"),
        (["--app", "w12_not_there"], "cannot import app module 'w12_not_there'"),
        (["--log-level", "verbose"], "--log-level: 'VERBOSE' is not one of DEBUG"),
        (["--metrics-port", "{taken}"], "Address already in use"),
        (["--metrics-port", "-1"], "argument --metrics-port: -1 is not a TCP port (1-65535)"),
        (["--metrics-port", "0"], "argument --metrics-port: 0 is not a TCP port"),
        (["--metrics-port", "65536"], "argument --metrics-port: 65536 is not a TCP port"),
        (["--metrics-port", "http"], "argument --metrics-port: invalid int value: 'http'"),
        (["--concurrency", "0"], "argument --concurrency: 0 is not a count of at least 1"),
        (["--concurrency", "-4"], "argument --concurrency: -4 is not a count of at least 1"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_every_start_up_mistake_is_one_line_and_a_named_exit(
    cli: list[str],
    broken_apps: Path,
    taken_port: int,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    named: str,
) -> None:
    """A mistake never starts the worker (with --burst, one that did would drain nothing and return OK)."""
    flags = [f.format(taken=taken_port) for f in flags]
    code = main([*cli, "--capability", "echo", "--burst", *flags])
    line = one_error_line(capsys)
    assert code == Exit.USAGE, line
    assert named.format(cwd=broken_apps) in line


def test_an_app_that_fails_at_import_shows_its_traceback_at_debug(tmp_path: Path) -> None:
    (tmp_path / "w12_raises.py").write_text(BROKEN_APPS["w12_raises.py"])
    argv = [sys.executable, "-m", "workers", "--capability", "echo", "--app", "w12_raises", "--log-level", "DEBUG"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == Exit.USAGE
    assert "Traceback" in done.stderr and 'w12_raises.py", line 3' in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("worker: error: app module 'w12_raises'"), done.stderr

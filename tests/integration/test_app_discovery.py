"""How a worker finds its handlers: ``--app module``, ``--app module:attr``, ``DISPATCHER_APP``, a pyproject.toml
in its working directory, or the built-ins alone; and the one-line errors when it cannot.

Each serving case submits first and runs a ``--burst`` worker, which drains the stream and exits 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_exit, worker_log

from dispatcher import ConfigError, Dispatcher
from workers import app

NO_ENV_APP = {"DISPATCHER_APP": ""}  # whatever the test process's environment says, no app from there


def serve(run_worker: Any, capability: str, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    proc = run_worker("--capability", capability, "--burst", *args, env={**NO_ENV_APP, **(env or {})}, **kw)
    assert wait_exit(proc) == 0, worker_log(proc)
    return proc


def stderr_of(proc: Any) -> str:
    return str(proc.stderr_path.read_text())


# ---- where the app comes from ---------------------------------------------------------------------------------


def test_app_module(run_worker: Any, dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit("basic.square", 7)
    serve(run_worker, "basic.square", app="apps.basic")
    assert handle.result(timeout_s=10) == 49


def test_app_module_attr_names_a_registry(run_worker: Any, dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit("basic.shout", "hi")
    serve(run_worker, "basic.shout", app="apps.basic_registry:registry")
    assert handle.result(timeout_s=10) == "HI"


def test_dispatcher_app_env_wins_over_pyproject(run_worker: Any, dispatcher: Dispatcher, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.agent-dispatcher]\napp = "apps.basic_pyproject"\n')
    handle = dispatcher.submit("basic.from_env", "x")
    serve(run_worker, "basic.from_env", env={"DISPATCHER_APP": "apps.basic_env"})
    assert handle.result(timeout_s=10) == "env:x"


def test_pyproject_in_the_working_directory(run_worker: Any, dispatcher: Dispatcher, tmp_path: Path) -> None:
    # run_worker starts its workers in tmp_path: the pyproject.toml there is the one in the worker's cwd
    toml = '[project]\nname = "x"\n\n[tool.agent-dispatcher]\napp = "apps.basic_pyproject"\n'
    (tmp_path / "pyproject.toml").write_text(toml)
    handle = dispatcher.submit("basic.from_pyproject", "y")
    serve(run_worker, "basic.from_pyproject")
    assert handle.result(timeout_s=10) == "pyproject:y"


def test_app_flag_wins_over_dispatcher_app(run_worker: Any) -> None:
    proc = run_worker("--capability", "basic.from_env", app="apps.basic", env={"DISPATCHER_APP": "apps.basic_env"})
    assert wait_exit(proc, timeout_s=10) == 2
    assert "apps.basic " in stderr_of(proc) and "apps.basic_env" not in stderr_of(proc)


@pytest.mark.parametrize("form", ["./handlers/myapp.py", "handlers/myapp.py", "{dir}/handlers/myapp.py"])
def test_app_path_to_a_py_file(run_worker: Any, dispatcher: Dispatcher, tmp_path: Path, form: str) -> None:
    """``--app ./myapp.py`` imports that file (relative to the working directory, or absolute), and
    ``path.py:attr`` names a registry in it."""
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "myapp.py").write_text(
        "from workers import Registry\n\nregistry = Registry()\n"
        "registry.register('basic.by_path', lambda t: t.payload * 2)\n"
    )
    handle = dispatcher.submit("basic.by_path", 21)
    serve(run_worker, "basic.by_path", app=form.format(dir=tmp_path) + ":registry")
    assert handle.result(timeout_s=10) == 42


def test_builtins_need_no_app(run_worker: Any, dispatcher: Dispatcher) -> None:
    echo = dispatcher.submit("echo", {"a": [1, 2]})
    sleep = dispatcher.submit("sleep", {"seconds": 0.01})
    noop = dispatcher.submit("noop", "ignored")
    serve(run_worker, "echo", "--capability", "sleep", "--capability", "noop")
    assert echo.result(timeout_s=10) == {"a": [1, 2]}
    assert sleep.result(timeout_s=10) == 0.01
    assert noop.result(timeout_s=10) is None


# ---- mistakes -------------------------------------------------------------------------------------------------


def one_line_error(proc: Any, timeout_s: float = 10.0) -> str:
    """The worker exited non-zero promptly with a single readable line on stderr, and no traceback."""
    started = time.monotonic()
    code = wait_exit(proc, timeout_s=timeout_s)
    print(f"\nexit {code} after {time.monotonic() - started:.2f} s: {stderr_of(proc).strip()}")
    assert code == 2, worker_log(proc)
    err = stderr_of(proc)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("worker: error: "), err
    return err


def test_a_capability_without_handler_exits_at_once_naming_what_was_searched(run_worker: Any) -> None:
    proc = run_worker("--capability", "basic.square", "--capability", "nope", app="apps.basic", env=NO_ENV_APP)
    err = one_line_error(proc)
    assert "'nope'" in err and "'basic.square'" not in err
    assert "workers.builtins" in err and "apps.basic" in err  # the modules searched
    for found in ("basic.square", "basic.async_square", "echo", "noop", "sleep"):  # the capabilities found
        assert found in err


def test_without_any_app_the_error_names_the_builtins(run_worker: Any) -> None:
    err = one_line_error(run_worker("--capability", "nope", env=NO_ENV_APP))
    assert "workers.builtins" in err and "built-ins only" in err
    assert "echo, noop, sleep" in err


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("apps.basic_no_such_module", "apps.basic_no_such_module"),
        ("no_such_package.handlers", "no_such_package"),
        ("apps.basic:no_such_attr", "no_such_attr"),
    ],
)
def test_a_bad_app_is_one_clear_line(run_worker: Any, value: str, named: str) -> None:
    err = one_line_error(run_worker("--capability", "echo", app=value))
    assert named in err and "--app" in err


def test_a_bad_app_in_pyproject_names_the_file(run_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.agent-dispatcher]\napp = "apps.basic_missing"\n')
    err = one_line_error(run_worker("--capability", "echo", env=NO_ENV_APP))
    assert "apps.basic_missing" in err and "pyproject.toml" in err


# ---- app_name in-process ------------------------------------------------------------------------------------


def test_app_name_precedence(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.agent-dispatcher]\napp = "from.pyproject"\n')
    assert app.app_name("from.flag", {"DISPATCHER_APP": "from.env"}, tmp_path) == ("from.flag", "--app")
    assert app.app_name(None, {"DISPATCHER_APP": "from.env"}, tmp_path) == ("from.env", "DISPATCHER_APP")
    assert app.app_name(None, {}, tmp_path) == ("from.pyproject", str(tmp_path / "pyproject.toml"))
    assert app.app_name(None, {}, tmp_path / "elsewhere") == ("", "built-ins only")


def test_app_name_ignores_a_pyproject_without_the_table_and_reports_a_broken_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert app.app_name(None, {}, tmp_path) == ("", "built-ins only")
    (tmp_path / "pyproject.toml").write_text("[tool.agent-dispatcher\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml"):
        app.app_name(None, {}, tmp_path)

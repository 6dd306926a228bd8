"""``scripts/lib/venv.sh``, the .venv helper of ``scripts/test``, ``scripts/demo``, bench and chaos: a stale venv is
rebuilt with one line saying why, and the install runs only when pyproject.toml or the Python changed.

No real pip install here: ``DISPATCHER_VENV_INSTALL`` replaces it with a command that logs what it was asked to
install (and the venv is then built without pip, in a fraction of a second).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "scripts" / "lib" / "venv.sh"
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
LOG_INSTALL = 'echo "$VENV_SPEC" >> installs.log'


def ensure(cwd: Path, spec: str = ".[dev]", install: str = LOG_INSTALL) -> subprocess.CompletedProcess[str]:
    """``venv_ensure SPEC`` in ``cwd``, building with this test's Python."""
    env = {
        **os.environ,
        "DISPATCHER_VENV_PYTHON": sys.executable,
        "DISPATCHER_VENV_INSTALL": install,
        "VENV_PROG": "scripts/x",
    }
    return subprocess.run(
        ["bash", "-c", f'. "{HELPER}" && venv_ensure "$1"', "bash", spec],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def installs(cwd: Path) -> list[str]:
    log = cwd / "installs.log"
    return log.read_text().splitlines() if log.exists() else []


def fake_venv(cwd: Path, cfg_version: str, python: str | None = sys.executable) -> Path:
    """A .venv whose pyvenv.cfg names ``cfg_version`` and whose bin/python links to ``python`` (None: a link to
    nothing, as when the interpreter it was built from was removed)."""
    venv = cwd / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = /nowhere\nversion = {cfg_version}\n")
    (venv / "bin" / "python").symlink_to(python or cwd / "gone" / "python3.10")
    return venv


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    return tmp_path


def rebuilt(project: Path) -> bool:
    cfg = (project / ".venv" / "pyvenv.cfg").read_text()
    return f"version = {VERSION}." in cfg or f"version_info = {VERSION}." in cfg


def test_a_venv_built_by_another_python_is_rebuilt_with_one_line_saying_why(project: Path) -> None:
    fake_venv(project, "3.10.12")
    done = ensure(project)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"scripts/x: rebuilding .venv: its pyvenv.cfg says it was built by Python 3.10 and {sys.executable} is "
        f"Python {VERSION}\n"
    )
    assert rebuilt(project)
    assert installs(project) == [".[dev]"]


def test_a_venv_whose_python_runs_another_version_is_rebuilt(project: Path) -> None:
    other = project / "python3.10"
    other.write_text("#!/bin/sh\necho 3.10\n")
    other.chmod(0o755)
    fake_venv(project, "3.10.12", python=str(other))
    done = ensure(project)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"scripts/x: rebuilding .venv: it was built by Python 3.10 and {sys.executable} is Python {VERSION}\n"
    )
    assert rebuilt(project)


def test_a_venv_whose_python_is_gone_is_rebuilt(project: Path) -> None:
    fake_venv(project, VERSION + ".0", python=None)
    done = ensure(project)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "scripts/x: rebuilding .venv: its python (.venv/bin/python) is missing or does not run\n"
    assert rebuilt(project)
    assert installs(project) == [".[dev]"]


def test_the_install_runs_only_when_pyproject_or_the_spec_changed(project: Path) -> None:
    for _ in range(2):
        done = ensure(project)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert installs(project) == [".[dev]"]  # the second run installed nothing
    assert ensure(project, spec=".").returncode == 0  # the package alone is part of .[dev]
    assert installs(project) == [".[dev]"]
    (project / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    assert ensure(project, spec=".").returncode == 0
    assert ensure(project, spec=".").returncode == 0
    assert installs(project) == [".[dev]", "."]
    assert ensure(project, spec=".[dev]").returncode == 0  # "." does not hold the dev extra
    assert installs(project) == [".[dev]", ".", ".[dev]"]


def test_a_failed_install_is_tried_again_on_the_next_run(project: Path) -> None:
    failed = ensure(project, install=LOG_INSTALL + "; exit 3")
    assert failed.returncode != 0
    assert ensure(project).returncode == 0
    assert installs(project) == [".[dev]", ".[dev]"]


def test_scripts_demo_rebuilds_a_stale_venv_and_runs(tmp_path: Path) -> None:
    """The real scripts/demo, in a copy of the repository's scripts with a 3.10 .venv: one line says why it is
    rebuilt, then the demo runs in the new venv (the injected install points it at this checkout and its
    dependencies instead of pip-installing them)."""
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    for name in ("scripts/demo", "scripts/lib/venv.sh", "pyproject.toml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "scripts" / "demo").chmod(0o755)
    fake_venv(tmp_path, "3.10.12")
    ours = sysconfig.get_paths()["purelib"]
    install = (
        'site=$("$VENV_DIR/bin/python" -c "import sysconfig; print(sysconfig.get_paths()[\\"purelib\\"])")'
        f' && printf "%s\\n%s\\n" "{REPO}" "{ours}" > "$site/checkout.pth"'
    )
    env = {**os.environ, "DISPATCHER_VENV_PYTHON": sys.executable, "DISPATCHER_VENV_INSTALL": install}
    done = subprocess.run(
        [str(tmp_path / "scripts" / "demo"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("scripts/demo: rebuilding .venv: its pyvenv.cfg says it was built by Python 3.10")
    assert done.stderr.count("\n") == 1
    assert done.stdout.startswith("usage: demo")
    assert rebuilt(tmp_path)

"""The peers' virtualenv, ``.bench/peers-venv``: created on first use, upgraded to the latest releases when its
requirement list changes or it is a week old, and read back for the versions it holds.

The peers live there so the project venv never holds a peer package; every peer process (producer and workers)
runs with that venv's Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib.env import REPO

VENV = REPO / ".bench" / "peers-venv"
REQUIREMENTS = ("celery[redis]", "dramatiq[redis]", "taskiq", "taskiq-redis", "redis", "hiredis", "msgpack")
PACKAGES = ("celery", "kombu", "billiard", "dramatiq", "taskiq", "taskiq-redis", "redis", "hiredis", "msgpack")
"""What ``versions()`` reports (the requirements plus the Celery parts that matter to its speed)."""
REFRESH_S = 7 * 86_400
CREATE_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 600.0
STAMP = "bench-requirements.json"


def python() -> Path:
    return VENV / "bin" / "python"


def _stale() -> bool:
    stamp = VENV / STAMP
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return True
    return recorded.get("requirements") != list(REQUIREMENTS) or time.time() - recorded.get("at", 0) > REFRESH_S


def _run(argv: list[str], timeout_s: float) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"bench: {' '.join(argv[:4])} ... failed (exit {done.returncode}):\n{tail}")


def ensure(log: Callable[[str], None]) -> dict[str, str]:
    """Create or upgrade the venv when needed; return ``{package: version}`` as installed in it."""
    if not python().exists():
        log(f"creating {VENV.relative_to(REPO)}")
        # This interpreter's venv module: the peers run on the same Python version as ours.
        _run([sys.executable, "-m", "venv", str(VENV)], CREATE_TIMEOUT_S)
    if _stale():
        log(f"installing the latest {', '.join(REQUIREMENTS)} into {VENV.relative_to(REPO)} (PyPI)")
        pip = [str(python()), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        _run([*pip, "install", "--quiet", "--upgrade", *REQUIREMENTS], INSTALL_TIMEOUT_S)
        (VENV / STAMP).write_text(json.dumps({"requirements": list(REQUIREMENTS), "at": time.time()}))
    return versions()


def versions() -> dict[str, str]:
    """``importlib.metadata`` versions of ``PACKAGES`` inside the peers venv."""
    code = "import importlib.metadata as m, json, sys\nprint(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    done = subprocess.run(
        [str(python()), "-c", code, *PACKAGES], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(done.stdout))

"""Re-execute a script of ``scripts/`` with the repository's ``.venv`` Python (``scripts/bench``, ``scripts/chaos``).

When ``.venv`` exists and is not the running interpreter's, ``scripts/lib/venv.sh`` first makes it sound (rebuilt,
with one line saying why, when another Python built it or its python is gone; the package installed only when
pyproject.toml or the Python changed), then the script starts again in it. Without a ``.venv`` the script runs
with the interpreter it was started with (the package installed there, as in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent
REPO = LIB.parent.parent
VENV = REPO / ".venv"


def in_venv(script: Path) -> None:
    """Re-execute ``script`` with ``.venv``'s Python when there is a ``.venv`` and it is not running already."""
    if not VENV.exists() and not VENV.is_symlink():
        return
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    env = {**os.environ, "VENV_PROG": f"scripts/{script.name}"}
    if subprocess.run(["bash", str(LIB / "venv.sh"), "."], env=env, check=False).returncode != 0:
        sys.exit(1)
    python = VENV / "bin" / "python"
    os.execv(str(python), [str(python), str(script), *sys.argv[1:]])

"""Running commands for the check: logged, bounded in time, and the background processes it started, by PID."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".deploy"


def say(message: str) -> None:
    """One line of the check's report, with the seconds since it started."""
    print(f"[{time.monotonic() - START:7.1f}s] {message}", flush=True)


START = time.monotonic()


def run(argv: Sequence[str], timeout_s: float = 600, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` to its end (at most ``timeout_s``); its stdout. A failure raises with its stderr's tail."""
    done = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if check and done.returncode != 0:
        raise CheckFailed(f"{' '.join(argv[:4])} ... exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def wait_until(what: str, predicate: Callable[[], bool], deadline_s: float, every_s: float = 1.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every_s)
    raise CheckFailed(f"timed out after {deadline_s:.0f} s waiting for {what}")


class CheckFailed(Exception):
    """A step of the check did not hold."""


class Background:
    """Processes the check started in the background, stopped by PID at the end (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(list(argv), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        say(f"started {name} (pid {proc.pid}, log {log.relative_to(ROOT)})")
        return proc

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            say(f"stopped {name} (pid {proc.pid}, exit {proc.returncode})")
        self.procs.clear()


def fail(message: str) -> int:
    print(f"deploy-check: error: {message}", file=sys.stderr)
    return 1

"""The processes the demo starts: a private redis-server and worker processes, each stopped by its PID.

Every start registers its stop on the caller's ``ExitStack`` (SIGTERM, a bounded wait, then SIGKILL), so
everything is stopped whether the demo succeeded, failed or was interrupted.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from dispatcher.errors import ConfigError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Proc:
    """A process the demo started: its handle, a name for people, and the file its output goes to."""

    popen: subprocess.Popen[bytes]
    name: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no shutdown, its tasks stay pending for the reaper) and reap it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self) -> str:
        """The end of its output, for an error message."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"{self.name} (pid {self.pid}, exit code {self.popen.returncode}) said:\n{text[-LOG_TAIL_CHARS:]}"


def _spawn(stack: ExitStack, argv: Sequence[str], name: str, log_path: Path, env: Mapping[str, str]) -> Proc:
    with log_path.open("ab") as log:
        # A session of its own: Ctrl-C reaches only the demo, which then stops workers before Redis.
        popen = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(env)
        )
    proc = Proc(popen, name, log_path)
    stack.callback(stop, proc)
    return proc


def start_redis(stack: ExitStack, workdir: Path) -> str:
    """Start a private redis-server on a free loopback port (no persistence); its URL once it answers PING.

    Raises:
        ConfigError: ``redis-server`` is not on PATH, or it did not start.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise ConfigError(
            "redis-server not found on PATH: install it (Debian/Ubuntu: sudo apt-get install redis-server) "
            "or pass --redis-url"
        )
    log_path = workdir / "redis.log"
    for _ in range(3):  # the free port we picked can be taken before redis-server binds it
        port = free_port()
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), "--daemonize", "no"]
        proc = _spawn(stack, argv, "redis-server", log_path, os.environ)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.alive() and time.monotonic() < deadline:
            if answers_ping(port):
                return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.02)
        stop(proc)
    raise ConfigError(f"could not start redis-server: {log_path.read_text(errors='replace')[-LOG_TAIL_CHARS:]}")


def start_worker(stack: ExitStack, workdir: Path, name: str, args: Sequence[str], env: Mapping[str, str]) -> Proc:
    """Start ``python -m workers ARGS`` named ``name``; Redis URL and prefix come in ``env`` (not on the command
    line, where ``ps`` would show a password)."""
    argv = [sys.executable, "-m", "workers", "--name", name, *args]
    return _spawn(stack, argv, name, workdir / f"{name}.log", env)


def stop(proc: Proc) -> None:
    """SIGTERM by PID, wait, then SIGKILL; always reaps the process."""
    if not proc.alive():
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("process did not stop on SIGTERM, killing pid=%s", proc.pid)
        proc.kill()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False

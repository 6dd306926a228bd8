"""Processes the bench starts and stops by PID: private redis-servers and worker processes; machine facts."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGTERMed when its parent dies, even by SIGKILL (Linux; None
    elsewhere), so the child's own cleanup still runs (a worker's graceful stop, the peer harness stopping its
    workers) and a killed bench leaves no redis-server or worker behind. libc is loaded here, in the parent: the
    child only makes the one prctl call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1, persistence off unless ``extra_args`` turn AOF on."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("bench: redis-server not found (apt-get install redis-server)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.argv += ["--dir", str(self.dir), "--daemonize", "no", *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            preexec_fn=parent_death_signal(),  # noqa: PLW1509 - one prctl call, see parent_death_signal
        )
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def client(self, **options: Any) -> redis.Redis:
        """A new sync client (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **options)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        shutil.rmtree(self.dir, ignore_errors=True)


def status_kb(pid: int, field: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-style field of ``/proc/PID/status`` in kB, None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/PID/stat``), 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Processes:
    """Child processes started by the bench, each stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        stdout: int = subprocess.DEVNULL,
        cwd: Path = REPO,
    ) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "PYTHONPATH": str(SCRIPTS), **(env or {})}
        proc = subprocess.Popen(
            list(argv),
            env=full_env,
            cwd=cwd,
            stdout=stdout,
            preexec_fn=parent_death_signal(),  # noqa: PLW1509 - one prctl call, see parent_death_signal
        )
        self.procs.append(proc)
        return proc

    def workers(self, count: int, url: str, prefix: str, args: Sequence[str]) -> list[subprocess.Popen[bytes]]:
        """``count`` processes of the ``worker`` CLI (``python -m workers``) with ``args``."""
        env = {"DISPATCHER_REDIS_URL": url, "DISPATCHER_PREFIX": prefix}
        argv = [sys.executable, "-m", "workers", "--log-level", "WARNING", *args]
        return [self.spawn(argv, env) for _ in range(count)]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
        self.procs.clear()


def wait_until(check: Any, timeout_s: float, interval_s: float = 0.002, what: str = "condition") -> float:
    """Poll ``check()`` until true (bounded by ``timeout_s``); returns the time.time() it was first seen true."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} not reached within {timeout_s} s")
        time.sleep(interval_s)


def machine(redis_version: str) -> dict[str, Any]:
    """nproc, CPU model, Python and Redis versions, kernel."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import hiredis  # noqa: F401 - fail loudly if the parser the workers use is missing
    import msgpack

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "redis": redis_version,
        "redis_py": redis.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "kernel": platform.release(),
    }

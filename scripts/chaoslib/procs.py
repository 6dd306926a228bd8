"""Processes the harness starts: private redis-servers and workers, each recorded by PID and stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis

SCRIPTS_DIR = Path(__file__).resolve().parent.parent
REPO = SCRIPTS_DIR.parent
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    """Every process the harness started, by PID; ``stop_all`` ends those and nothing else."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}
        self._n = 0

    def spawn(self, tag: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout+stderr in ``<workdir>/<tag>-<n>.log``; the PID is recorded."""
        self._n += 1
        log_path = self.workdir / f"{tag}-{self._n}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, env=dict(env or os.environ), cwd=self.workdir
            )
        self.started[proc.pid] = proc
        self.logs[proc.pid] = log_path
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What ``proc`` wrote so far."""
        path = self.logs.get(proc.pid)
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def signal(self, proc: subprocess.Popen[bytes], sig: int) -> bool:
        """Send ``sig`` to a process we started, if it is still running. True when sent."""
        assert proc.pid in self.started, "not one of ours"
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, sig)
        return True

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL and reap (bounded)."""
        if self.signal(proc, signal.SIGKILL):
            proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGCONT+SIGTERM, wait ``timeout_s``, then SIGKILL; returns the exit code."""
        if proc.poll() is None:
            self.signal(proc, signal.SIGCONT)
            self.signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(proc)
        return proc.poll()

    def stop_all(self, only: Sequence[subprocess.Popen[bytes]] | None = None) -> None:
        """Stop every recorded process (or those of ``only``) that still runs: SIGTERM all, then SIGKILL the
        stragglers."""
        chosen = self.started.values() if only is None else [p for p in only if p.pid in self.started]
        live = [p for p in chosen if p.poll() is None]
        for proc in live:
            self.signal(proc, signal.SIGCONT)
            self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
            except subprocess.TimeoutExpired:
                self.kill(proc)


class RedisProc:
    """A private redis-server on 127.0.0.1 (never the shared 6379), started and killed through ``Procs``."""

    def __init__(self, procs: Procs, workdir: Path, extra_args: Sequence[str] = (), aof: bool = False) -> None:
        self.procs = procs
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        if aof:
            self.extra_args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(self.dir), "--daemonize", "no"),
            *self.extra_args,
        ]

    def start(self) -> RedisProc:
        """Start (again, on the same port and dir) and return once it answers PING (or LOADING is over)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = self.procs.spawn("redis", self.argv())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: {self.procs.log(self.proc)[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start in time")
            time.sleep(0.02)
        return self

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: a crash, nothing flushed beyond what the OS already has."""
        if self.proc is not None:
            self.procs.kill(self.proc)

    def client(self, **options: object) -> redis.Redis:
        """A plain client for checks and fault injection (not through any proxy)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **options)  # type: ignore[arg-type]


def worker_argv(url: str, prefix: str, name: str, capabilities: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Command line of ``python -m workers`` for one of our workers."""
    argv = [sys.executable, "-m", "workers", "--redis-url", url, "--prefix", prefix, "--name", name]
    for capability in capabilities:
        argv += ["--capability", capability]
    return argv + list(extra)


def worker_env(ledger: Path, fault: str = "", extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a worker: the execution ledger, an optional fault point, chaoslib importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["DISPATCHER_TEST_LEDGER"] = str(ledger)
    if fault:
        env["DISPATCHER_TEST_FAULT"] = fault
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SCRIPTS_DIR), str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env

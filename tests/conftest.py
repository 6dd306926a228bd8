"""Shared fixtures: a private redis-server per session, per-test key prefixes, settings, and worker processes.

The shared Redis on 6379 is never touched: every test talks to a ``redis-server`` started here on a free
loopback port, and isolates its keys by a unique prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher, Settings

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # helpers.py and tests/apps importable whatever pytest's import mode
    sys.path.insert(0, str(TESTS_DIR))

from helpers import worker_log  # noqa: E402

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` process on 127.0.0.1, controlled by its PID.

    Args:
        port: the port to listen on; a free one by default.
        extra_args: more ``redis-server`` arguments, e.g. ``("--appendonly", "yes")`` (later ones win).
        dir: its working directory (RDB/AOF files); a fresh temporary one by default, removed by ``stop()``.
    """

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = (), dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self._own_dir = dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-")) if dir is None else Path(dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not running"
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def args(self) -> list[str]:
        """The full command line."""
        return [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def start(self) -> RedisServer:
        """Start (again) on the same port with the same arguments; returns once it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis-server is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers_ping():
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s:\n{self.log()}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        # A raw socket, not redis-py: works whatever ACL/requirepass extra_args set up (NOAUTH is an answer).
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def log(self) -> str:
        """The server's own output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **options: Any) -> redis.Redis:
        """A new sync client to this server (closed by ``stop()``)."""
        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 5.0)
        client = redis.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    def kill(self) -> None:
        """SIGKILL the server by its PID (a crash: nothing is flushed) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited within 10 s; close clients; remove a temporary dir."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's private redis-server (never the shared one on 6379)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: install it with 'sudo apt-get install redis-server' (Debian/Ubuntu)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(redis_server: RedisServer, prefix: str) -> Settings:
    """Fast settings against the private server, under this test's prefix."""
    return Settings.build(
        redis_url=redis_server.url,
        prefix=prefix,
        heartbeat_ttl_s=2,
        reaper_interval_s=0.5,
        block_ms=200,
        grace_s=5,
    )


@pytest.fixture
def cli(settings: Settings) -> list[str]:
    """The connection flags of this test's server and prefix, for the ``dispatcher`` command."""
    return ["--redis-url", settings.redis_url, "--prefix", settings.prefix]


@pytest.fixture
def dispatcher(settings: Settings) -> Iterator[Dispatcher]:
    """A ``Dispatcher`` for ``settings``, closed at teardown."""
    with Dispatcher(settings) as d:
        yield d


class WorkerRunner:
    """Starts ``python -m workers`` processes; every one it started is stopped (by PID) at teardown."""

    def __init__(self, url: str, prefix: str, tmp_path: Path) -> None:
        self.url = url
        self.prefix = prefix
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, *cli_args: str, env: dict[str, str] | None = None, app: str | None = None) -> Any:
        """Start a worker: ``run_worker("--capability", "echo", "--burst", app="apps.echo")``."""
        argv = [sys.executable, "-m", "workers", "--redis-url", self.url, "--prefix", self.prefix]
        if app is not None:
            argv += ["--app", app]
        argv += list(cli_args)
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), full_env.get("PYTHONPATH", "")) if p)
        n = len(self.procs)
        stdout_path = self.tmp_path / f"worker-{n}.out"
        stderr_path = self.tmp_path / f"worker-{n}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=self.tmp_path)
        proc.stdout_path = stdout_path  # type: ignore[attr-defined]
        proc.stderr_path = stderr_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """The captured stdout and stderr of ``proc``."""
        return worker_log(proc)

    def stop_all(self) -> None:
        """SIGTERM every live worker, wait up to 10 s each, then SIGKILL; by PID only."""
        live = [p for p in self.procs if p.poll() is None]
        for proc in live:
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture
def run_worker(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[WorkerRunner]:
    """Factory of worker processes for this test's server and prefix (see ``WorkerRunner``)."""
    runner = WorkerRunner(redis_server.url, prefix, tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's private redis-server, closed after the test."""
    c = redis_server.client()
    yield c
    c.close()

"""A worker's ``/livez`` and ``/readyz`` on its metrics port, and ``dispatcher healthcheck``, against a private
redis-server that the test kills and restarts: liveness never depends on Redis, readiness follows it."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import RedisServer, WorkerRunner, free_port
from helpers import free_tcp_port, wait_until, worker_log

from dispatcher.cli.main import main

DEADLINE_S = 30.0
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")


def get(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of GET ``path`` on the worker's port; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None


def started(private: tuple[RedisServer, WorkerRunner]) -> tuple[subprocess.Popen[bytes], int]:
    _, workers = private
    port = free_tcp_port()
    proc = workers("--capability", "faulty.ledger", "--metrics-port", str(port), *TIMERS, app="apps.faulty")

    def ready() -> bool:
        assert proc.poll() is None, worker_log(proc)
        return get(port, "/readyz") == (200, "ok\n")

    wait_until(ready, DEADLINE_S, message="the worker's /readyz to say ok")
    return proc, port


def test_livez_stays_200_while_redis_is_down_and_readyz_turns_503_and_back(
    private: tuple[RedisServer, WorkerRunner],
) -> None:
    server, _ = private
    proc, port = started(private)
    assert get(port, "/livez") == (200, "ok\n")

    server.kill()
    down = wait_until(lambda: (r := get(port, "/readyz")) and r[0] == 503 and r, DEADLINE_S, message="503")
    assert down[1].startswith("Redis unavailable: "), down
    assert down[1].count("\n") == 1  # one line
    # Liveness does not follow Redis: every look while it is down says ok (20 looks, 50 ms apart: a second, a
    # heartbeat TTL's half, the threshold of a blocked loop).
    for _ in range(20):
        assert get(port, "/livez") == (200, "ok\n")
        assert (get(port, "/readyz") or (0, ""))[0] == 503
        time.sleep(0.05)

    server.start()  # same port, empty
    wait_until(lambda: get(port, "/readyz") == (200, "ok\n"), DEADLINE_S, message="ready again after the restart")
    assert get(port, "/livez") == (200, "ok\n")
    assert proc.poll() is None
    assert (get(port, "/nope") or (0, ""))[0] == 404


def test_healthcheck_exit_codes(
    private: tuple[RedisServer, WorkerRunner], prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = private
    _, port = started(private)
    assert main(["healthcheck", "--redis-url", server.url, "--prefix", prefix]) == 0
    assert main(["healthcheck", "--worker", f"http://127.0.0.1:{port}"]) == 0
    assert main(["healthcheck", "--worker", f"http://127.0.0.1:{port}/readyz"]) == 0
    capsys.readouterr()

    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert main(["healthcheck", "--redis-url", nobody, "--timeout-s", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dispatcher: error: unhealthy: ") and err.count("\n") == 1, err

    server.kill()
    wait_until(lambda: (get(port, "/readyz") or (0, ""))[0] == 503, DEADLINE_S, message="the worker's 503")
    assert main(["healthcheck", "--worker", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dispatcher: error: unhealthy: http://127.0.0.1:{port}/readyz answered 503: Redis"), err
    assert err.count("\n") == 1

    assert main(["healthcheck", "--worker", f"http://127.0.0.1:{free_tcp_port()}"]) == 1  # nothing answers
    assert "cannot reach" in capsys.readouterr().err

    assert main(["healthcheck", "--worker", "127.0.0.1:9100"]) == 2  # a user mistake: not a URL
    err = capsys.readouterr().err
    assert err.startswith("dispatcher: error: --worker: '127.0.0.1:9100' is not an http:// URL"), err
    assert err.count("\n") == 1

"""A worker started with --metrics-port serves Prometheus metrics named dispatcher_*, labelled by capability."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

from helpers import wait_until

from dispatcher import Dispatcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_worker_serves_task_metrics(dispatcher: Dispatcher, run_worker: Any) -> None:
    port = _free_port()
    run_worker("--capability", "echo", "--metrics-port", str(port))
    handles = [dispatcher.submit("echo", i) for i in range(5)]
    assert [h.result(timeout_s=30) for h in handles] == list(range(5))

    def counted() -> bool:
        try:
            text = _scrape(port)
        except OSError:
            return False
        return 'dispatcher_tasks_total{capability="echo",outcome="succeeded"} 5.0' in text

    wait_until(counted, timeout_s=30, message="the succeeded counter at 5")
    text = _scrape(port)
    assert 'dispatcher_task_duration_seconds_count{capability="echo"} 5.0' in text
    assert 'dispatcher_inflight_tasks{capability="echo"} 0.0' in text
    assert "task_id" not in text  # labels come from bounded sets only

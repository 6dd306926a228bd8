"""A worker's start-up, as a user runs it (``python -m workers`` processes): it waits for a Redis that is not up
yet (bounded by ``start_wait_s``), then says where it is in its banner."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import RedisServer, WorkerRunner, free_port
from helpers import free_tcp_port, wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Settings, __version__
from dispatcher.cli.exits import Exit

DEADLINE_S = 60.0
PASSWORD = "s3cret-pw"


def test_a_worker_started_before_redis_waits_for_it_then_serves(prefix: str, tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), extra_args=("--requirepass", PASSWORD))
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    runner = WorkerRunner(url, prefix, tmp_path)
    metrics_port = free_tcp_port()
    try:
        proc = runner(
            "--capability", "basic.square", "--capability", "basic.async_square", "--concurrency", "3",
            "--name", "early-bird", "--metrics-port", str(metrics_port), "--start-wait-s", "60",
            app="apps.basic",
        )  # fmt: skip
        wait_until(lambda: "waiting for it" in worker_log(proc) or proc.poll() is not None, DEADLINE_S)
        time.sleep(2.5)  # Redis comes up a few attempts later (the backoff reaches 2 s in between)
        assert proc.poll() is None, worker_log(proc)
        server.start()
        with Dispatcher(Settings.build(redis_url=url, prefix=prefix)) as d:
            assert d.submit("basic.square", 12).result(timeout_s=DEADLINE_S) == 144
        redis_version = server.client(password=PASSWORD).info("server")["redis_version"]
    finally:
        runner.stop_all()
        server.stop()
    assert wait_exit(proc) == Exit.OK, worker_log(proc)
    log = worker_log(proc)
    assert PASSWORD not in log
    masked = f"redis://:***@127.0.0.1:{server.port}/0"
    waits = [line for line in log.splitlines() if "redis not reachable at start" in line]
    assert len(waits) == 1 and " WARNING " in waits[0] and f"url={masked}" in waits[0], log  # once, not per try
    assert f"redis reachable url={masked}" in log
    (started,) = [line for line in log.splitlines() if "worker started" in line]
    for part in (
        f"version={__version__}", "consumer=early-bird", f"redis={masked}", f"redis_version={redis_version}",
        f"prefix={prefix}", "app=apps.basic app_source=--app", "concurrency=3",
        f"metrics=http://127.0.0.1:{metrics_port}/metrics",
    ):  # fmt: skip
        assert part in started, started
    assert "serving capability=basic.square handler=apps.basic.square (sync, in the thread pool)" in log
    assert "serving capability=basic.async_square handler=apps.basic.async_square (async, on the event loop)" in log


def test_the_wait_for_redis_is_bounded(prefix: str, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    runner = WorkerRunner(url, prefix, tmp_path)
    try:
        proc = runner("--capability", "echo", "--start-wait-s", "1")
        code = wait_exit(proc, DEADLINE_S)
    finally:
        runner.stop_all()
    err = proc.stderr_path.read_text()
    assert code == Exit.UNAVAILABLE, err
    assert "Traceback" not in err and "worker started" not in err
    errors = [line for line in err.splitlines() if line.startswith("worker: error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert f"Redis at {url} is unavailable" in errors[0] and "Connection refused" in errors[0]
    waited = float(errors[0].split("gave up after ", 1)[1].split(" s,")[0])
    assert waited >= 1.0 and "start_wait_s=1)" in errors[0], errors[0]


def test_a_start_wait_of_zero_fails_at_once(prefix: str, tmp_path: Path) -> None:
    runner = WorkerRunner(f"redis://127.0.0.1:{free_port()}/0", prefix, tmp_path)
    try:
        proc = runner("--capability", "echo", "--start-wait-s", "0")
        code = wait_exit(proc, DEADLINE_S)
    finally:
        runner.stop_all()
    err = proc.stderr_path.read_text()
    assert code == Exit.UNAVAILABLE, err
    assert "waiting for it" not in err  # no wait announced: one try
    assert err.splitlines()[-1].startswith("worker: error: ") and "start_wait_s=0" in err, err

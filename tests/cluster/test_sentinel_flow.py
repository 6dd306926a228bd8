"""The dispatch path through a ``redis+sentinel://`` URL: producer, worker, result and stats find the primary by
asking three real Sentinels."""

from __future__ import annotations

import json

import pytest
from apps.spread import CAPABILITIES as CAPS
from conftest import WorkerRunner, free_port
from helpers import one_error_line, wait_exit
from topology import SentinelSet

from dispatcher import Dispatcher, Settings
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main
from dispatcher.store.keys import KeySpace


def test_round_trip_through_sentinel(
    sentinel_set: SentinelSet,
    sentinel_settings: Settings,
    sentinel_worker: WorkerRunner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Dispatcher(sentinel_settings) as dispatcher:
        handles = [dispatcher.submit(c, {"c": c}) for c in CAPS]
        worker = sentinel_worker(*(a for c in CAPS for a in ("--capability", c)), "--burst", app="apps.spread")
        assert wait_exit(worker, timeout_s=60) == 0, sentinel_worker.log(worker)
        assert [h.result(timeout_s=10) for h in handles] == [{"c": c} for c in CAPS]
    # The writes went to the primary the Sentinels name (and replicated to the replica).
    stream = KeySpace(sentinel_settings.prefix).capability("cap1").stream
    assert sentinel_set.primary.client().exists(stream) == 1
    capsys.readouterr()
    assert main(["stats", "--json", "--redis-url", sentinel_set.url, "--prefix", sentinel_settings.prefix]) == 0
    assert {c["name"] for c in json.loads(capsys.readouterr().out)["capabilities"]} == set(CAPS)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://127.0.0.1:1", "the service name is missing"),
        ("redis+sentinel:///mymaster", "no host:port given"),
        ("redis+cluster://127.0.0.1", "node '127.0.0.1' is not host:port"),
    ],
)
def test_a_bad_topology_url_is_one_line_and_a_config_exit(
    url: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", "--redis-url", url]) == Exit.USAGE
    line = one_error_line(capsys.readouterr().err)
    assert expected in line


def test_an_unreachable_cluster_is_one_line_and_unavailable(
    capsys: pytest.CaptureFixture[str], cluster_worker: WorkerRunner
) -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    assert main(["stats", "--redis-url", url]) == Exit.UNAVAILABLE
    assert "is unavailable" in one_error_line(capsys.readouterr().err)
    worker = WorkerRunner(url, "t-unreachable", cluster_worker.tmp_path)
    proc = worker("--capability", "echo", "--start-wait-s", "0.5")
    try:
        assert wait_exit(proc, timeout_s=30) == Exit.UNAVAILABLE
        err = proc.stderr_path.read_text()  # type: ignore[attr-defined]
        assert "worker: error: " in err and "is unavailable" in err and "Traceback" not in err
    finally:
        worker.stop_all()

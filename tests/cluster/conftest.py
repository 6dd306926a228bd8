"""Fixtures of the cluster and Sentinel tests: real topologies on loopback, started only when a test here runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apps.faulty import Ledger
from conftest import WorkerRunner
from topology import Cluster, SentinelSet

from dispatcher import Dispatcher, Settings


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A 3-primary Redis Cluster (no replicas) for the session."""
    c = Cluster(primaries=3).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[Cluster]:
    """A 3-primary Redis Cluster with one replica per primary, for the tests of one module (a failover test may
    leave it with a promoted replica and no replica of its own)."""
    c = Cluster(primaries=3, replicas_per_primary=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A primary, a replica and three Sentinels for the session."""
    s = SentinelSet().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def cluster_settings(cluster: Cluster, prefix: str) -> Settings:
    """Fast settings against the session's cluster, under this test's prefix."""
    return Settings.build(
        redis_url=cluster.url, prefix=prefix, heartbeat_ttl_s=2, reaper_interval_s=0.5, block_ms=200, grace_s=5
    )


@pytest.fixture
def cluster_dispatcher(cluster_settings: Settings) -> Iterator[Dispatcher]:
    """A ``Dispatcher`` on the cluster, closed at teardown."""
    with Dispatcher(cluster_settings) as d:
        yield d


@pytest.fixture
def cluster_worker(cluster: Cluster, prefix: str, tmp_path: Path) -> Iterator[WorkerRunner]:
    """Factory of worker processes on the cluster (see ``WorkerRunner``), stopped by PID at teardown."""
    runner = WorkerRunner(cluster.url, prefix, tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture
def cluster_client(cluster: Cluster) -> Iterator[redis.RedisCluster]:
    """A redis-py cluster client of the session's cluster, closed after the test."""
    c = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=5)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """An execution ledger outside Redis that the ``apps.faulty`` handlers append to."""
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def sentinel_settings(sentinel_set: SentinelSet, prefix: str) -> Settings:
    """Fast settings through the session's Sentinels, under this test's prefix."""
    return Settings.build(
        redis_url=sentinel_set.url, prefix=prefix, heartbeat_ttl_s=2, reaper_interval_s=0.5, block_ms=200, grace_s=5
    )


@pytest.fixture
def sentinel_worker(sentinel_set: SentinelSet, prefix: str, tmp_path: Path) -> Iterator[WorkerRunner]:
    """Factory of worker processes that find their primary through the Sentinels."""
    runner = WorkerRunner(sentinel_set.url, prefix, tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()

"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.faulty import Ledger
from conftest import RedisServer, WorkerRunner

from dispatcher.producer import subscriptions


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """An execution ledger outside Redis that the ``apps.faulty`` handlers append to."""
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def no_recheck(monkeypatch: pytest.MonkeyPatch) -> float:
    """Push the waiters' periodic re-read (``RECHECK_S``, the backstop for a lost announcement) out to an hour,
    in this process and in children forked from it; returns the new period.

    A ``result()`` with a timeout well under that period which returns its value was then woken by an
    announcement, a subscribe confirmation or a reconnect: never by the backstop. Tests of the wake-up path
    assert that instead of a wall-clock bound.
    """
    monkeypatch.setattr(subscriptions, "RECHECK_S", 3600.0)
    # Guards the patch itself: a waiter that took the period by value at import would ignore it.
    assert subscriptions.remaining_s(None) == 3600.0
    return 3600.0


@pytest.fixture
def private(tmp_path: Path, prefix: str) -> Iterator[tuple[RedisServer, WorkerRunner]]:
    """A redis-server of this test's own (which it may stop and restart), and a worker factory for it."""
    with RedisServer() as server:
        runner = WorkerRunner(server.url, prefix, tmp_path)
        try:
            yield server, runner
        finally:
            runner.stop_all()

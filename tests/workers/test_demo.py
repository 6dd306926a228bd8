"""The demo (``python -m workers.demo``, what ``scripts/demo`` runs), called in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import children

from dispatcher.cli.exits import Exit
from workers.demo import main


def test_demo_without_redis_server_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DISPATCHER_REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["--tasks", "1"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: error: ") and "redis-server not found" in err


def test_demo_refuses_non_positive_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tasks", "0"]) == Exit.USAGE
    assert capsys.readouterr().err.startswith("demo: error: ")


def test_demo_runs_its_own_server_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DISPATCHER_REDIS_URL", raising=False)
    before = children()
    assert main(["--tasks", "40", "--workers", "2", "--deadline-s", "60"]) == Exit.OK
    out = capsys.readouterr().out
    assert "40/40 done" in out
    assert "40/40 succeeded" in out
    assert children() <= before

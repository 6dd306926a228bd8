"""Fixtures of the crash-recovery tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from apps.faulty import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """An execution ledger outside Redis that the ``apps.faulty`` handlers append to."""
    return Ledger(tmp_path / "ledger.jsonl")

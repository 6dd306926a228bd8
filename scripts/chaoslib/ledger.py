"""Ledgers kept outside Redis: what producers got acknowledged, what handlers finished, what handlers started.

Counting in Redis would hide Redis data loss, so a verdict is computed from these files plus the dead-letter
streams (a dead letter is the one outcome that has no ledger line: its handler never finished).
Each line is written with one ``write()`` on an ``O_APPEND`` file, so concurrent writers never interleave; a
torn last line (a writer killed mid-write) is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Execution:
    """One finished handler run, as the worker's test hook wrote it."""

    task_id: str
    worker: str
    pid: int
    t: float


class Appender:
    """Appends lines to a ledger file, one ``os.write`` per call (thread- and process-safe for small lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, lines: list[str]) -> None:
        if lines:
            os.write(self._fd, ("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Span:
    """One ``start`` or ``end`` line of a keyed handler run (``chaoslib.handlers.keyed``)."""

    kind: str
    task_id: str
    capability: str
    key: str
    pid: int
    t: float


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]  # the part after the last newline may be torn


def submitted(path: Path) -> list[str]:
    """Task ids whose ``submit()`` returned, in order (one per line)."""
    return [line.split()[0] for line in _lines(path)]


def executions(path: Path) -> list[Execution]:
    """Every finished handler run."""
    out = []
    for line in _lines(path):
        parts = line.split()
        if len(parts) == 4:
            out.append(Execution(parts[0], parts[1], int(parts[2]), float(parts[3])))
    return out


def runs(path: Path) -> Counter[str]:
    """How many times each task id appears in a plain ledger (e.g. handler starts written by chaoslib.handlers)."""
    return Counter(line.split()[0] for line in _lines(path))


def spans(path: Path) -> list[Span]:
    """Every start and end of a keyed handler run, in ledger order."""
    out = []
    for line in _lines(path):
        parts = line.split()
        if len(parts) == 6 and parts[0] in ("start", "end"):
            out.append(Span(parts[0], parts[1], parts[2], parts[3], int(parts[4]), float(parts[5])))
    return out

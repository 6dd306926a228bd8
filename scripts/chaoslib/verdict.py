"""A scenario's verdict, the table printed at the end of a run, and the JSON report."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslib.world import Tally, Timers


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    timing: bool = False
    """A wall-clock bound (how fast): part of ``scripts/chaos``'s verdict, shown but not asserted by the test
    suite, which runs the quick tier on a shared machine (speed is measured, not tested)."""


@dataclass(slots=True)
class Verdict:
    """What one scenario showed: the counts, timings, and each check against the issue's promise."""

    number: int
    title: str
    tally: Tally | None = None
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def check(self, name: str, ok: bool, detail: object = "", *, timing: bool = False) -> bool:
        self.checks.append(Check(name, bool(ok), str(detail), timing))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def passed_untimed(self) -> bool:
        """``passed`` over the checks that are not wall-clock bounds (the test suite's verdict)."""
        untimed = [c for c in self.checks if not c.timing]
        return not self.error and bool(untimed) and all(c.ok for c in untimed)

    def failures(self) -> list[str]:
        out = [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]
        return [*out, self.error] if self.error else out

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.number,
            "title": self.title,
            "passed": self.passed,
            "counts": self.tally.as_dict() if self.tally else None,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "figures": self.figures,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "timing": c.timing} for c in self.checks],
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "error": self.error,
        }


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": pct(values, 0.5), "max": max(values), "mean": statistics.fmean(values)}


def table(verdicts: list[Verdict]) -> str:
    """One line per scenario: verdict, counts, and its headline timings."""
    head = f"{'#':>2}  {'scenario':<34} {'verdict':<7} {'subm':>7} {'done':>7} {'lost':>4} {'dup':>5}  dead / timings"
    lines = [head, "-" * len(head)]
    for v in verdicts:
        t = v.tally
        dead = ",".join(f"{k}={n}" for k, n in sorted(t.dead.items())) if t else ""
        timing = " ".join(f"{k}={val:.2f}" for k, val in list(v.timings.items())[:4])
        counts = (
            f"{t.submitted:>7} {t.completed:>7} {t.lost:>4} {t.duplicates:>5}"
            if t
            else f"{'':>7} {'':>7} {'':>4} {'':>5}"
        )
        word = "PASS" if v.passed else ("ERROR" if v.error else "FAIL")
        lines.append(f"{v.number:>2}  {v.title[:34]:<34} {word:<7} {counts}  {dead} {timing}".rstrip())
        lines.extend(f"      ! {f}" for f in v.failures())
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the figures came from."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        redis_version = "?"
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    import os

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": redis_version,
        "kernel": platform.release(),
        "loadavg_at_end": load,
    }


def write_json(path: Path, verdicts: list[Verdict], argv: list[str], timers: Timers, seed: int) -> None:
    report = {
        "command": " ".join(argv),
        "seed": seed,
        "timers": {
            "heartbeat_ttl_s": timers.heartbeat_ttl_s,
            "reaper_interval_s": timers.reaper_interval_s,
            "block_ms": timers.block_ms,
            "grace_s": timers.grace_s,
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "passed": all(v.passed for v in verdicts),
        "scenarios": [v.as_dict() for v in verdicts],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")

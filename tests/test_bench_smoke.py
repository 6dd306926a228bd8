"""Smoke test of ``scripts/bench --quick``: it runs end to end on a private Redis, prints its table and writes
valid JSON lines. Not a speed test: no figure is compared with a target here."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"ceiling", "submit", "drain", "end to end", "latency", "memory", "scale", "cost"}


@pytest.mark.timeout(60)
def test_quick_bench_prints_a_table_and_json_lines(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: install it with 'sudo apt-get install redis-server' (Debian/Ubuntu)")
    out = tmp_path / "bench.jsonl"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    header = done.stdout.splitlines()[0].split()
    assert header[:4] == ["workload", "variant", "result", "unit"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    meta, results = lines[0], lines[1:]
    assert meta["kind"] == "meta" and meta["nproc"] >= 1 and meta["redis"]
    assert {r["workload"] for r in results} == EXPECTED
    for r in results:
        assert r["kind"] == "result"
        assert isinstance(r["value"], int | float), r
        if math.isnan(r["value"]):
            # A ratio to a raw figure that a --quick run was too short to measure (under one 10 ms CPU tick).
            assert r["unit"] == "x raw" and r["ok"] is False, r
        else:
            assert r["value"] >= 0, r
        assert r["ok"] in (None, True, False)
    memory = next(r for r in results if r["variant"].startswith("after drain"))
    assert memory["extra"]["stream_length"] == 0 and memory["extra"]["pending"] == 0


@pytest.mark.timeout(90)
def test_quick_flow_bench_keeps_the_limits_it_measures() -> None:
    """``scripts/bench --flow --quick`` (the quick tier of the flow-control workloads): the cap and the rate bound
    hold even at this size; the shares and the jump are printed, not judged (a few hundred tasks)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench"), "--flow", "--quick"],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[1]] = float(cells[2].replace(",", ""))
    assert rows["cap 2 per key, 50 keys: most running per key"] <= 2
    assert rows["rate limit 100/s: busiest 1 s window"] <= 110

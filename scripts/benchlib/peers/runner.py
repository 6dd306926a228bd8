"""Runs each peer's drain and latency workloads in the peers venv, one fresh private redis-server per run, and
turns the raw figures they print into rows (workload ``peers``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.common import percentiles_ms
from benchlib.env import REPO, SCRIPTS, RedisServer, parent_death_signal
from benchlib.peers import venv
from benchlib.report import Row

PEERS = {"celery": ("Celery", "celery"), "dramatiq": ("Dramatiq", "dramatiq"), "taskiq": ("taskiq", "taskiq")}
"""harness name → (display name, distribution whose version labels the rows)."""
STARTUP_ALLOWANCE_S = 90.0
"""Beyond the workload's own deadline: venv imports, queueing, worker start and stop."""
OURS_DRAIN = ("drain", "async echo, 2 workers, --concurrency 100")
OURS_START_P50 = ("latency", "submit→start p50")

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PeerSizes:
    tasks: int
    latency: int
    rate_per_s: float
    timeout_s: float


def prepare(log: Log) -> dict[str, str]:
    """Create or refresh the peers venv; the versions installed there."""
    versions = venv.ensure(log)
    log("peers venv: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return versions


def run_one(
    peer: str, workload: str, s: PeerSizes, options: Mapping[str, str] | None = None, log: Log = print
) -> dict[str, Any]:
    """One workload of one peer on a fresh private redis-server: the harness's JSON figures."""
    n = s.tasks if workload == "drain" else s.latency
    server = RedisServer().start()
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-peer-{peer}-{workload}-"))
    argv = [str(venv.python()), "-m", "benchlib.peers.harness", peer, workload, "--url", server.url]
    argv += ["--tasks", str(n), "--rate", str(s.rate_per_s), "--timeout", str(s.timeout_s), "--log-dir", str(log_dir)]
    for key, value in (options or {}).items():
        argv += ["--option", f"{key}={value}"]
    loadavg = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=parent_death_signal(),  # noqa: PLW1509 - a killed bench still gets its peer workers stopped
    )
    try:
        out, err = proc.communicate(timeout=s.timeout_s + STARTUP_ALLOWANCE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness stops its workers in a finally
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += f"\nrunner: stopped after {s.timeout_s + STARTUP_ALLOWANCE_S:.0f} s"
    finally:
        server.stop()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err.strip().splitlines()[-12:])
        # SystemExit: one message (the harness's own traceback tail included), not a traceback of the runner.
        raise SystemExit(f"bench: {peer} {workload} failed (exit {proc.returncode}), logs in {log_dir}:\n{tail}")
    shutil.rmtree(log_dir, ignore_errors=True)
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["loadavg_before"] = loadavg
    return figures


def _drain_row(name: str, d: dict[str, Any], common: dict[str, Any]) -> Row:
    seconds = d["end"] - d["first_start"]
    extra = {
        **common,
        "config": d["config"]["detail"],
        "options": d["options"],
        "measured": "first handler start → later of (queue + in-flight empty, polled every 2 ms) and the last "
        "handler finish; handler runs counted in process, published every 50 ms (no per-task round trip)",
        "with_worker_startup": d["tasks"] / (d["end"] - d["spawned"]),
        "seconds": seconds,
        "ran": d["ran"],
        "processes_that_ran": d["processes_that_ran"],
        "loadavg_before": d["loadavg_before"],
        "loadavg_after": d["loadavg"],
    }
    return Row("peers", f"{name} drain, {d['config']['label']}", d["tasks"] / seconds, "tasks/s", extra=extra)


def _latency_rows(name: str, lat: dict[str, Any], common: dict[str, Any]) -> list[Row]:
    start = percentiles_ms(lat["submit_to_start_s"])
    returned = percentiles_ms(lat["submit_to_result_returned_s"])
    label = lat["config"]["label"]
    extra = {
        **common,
        "config": lat["config"]["detail"],
        "options": lat["options"],
        "tasks": lat["tasks"],
        "rate_per_s": lat["rate_per_s"],
        "processes_that_ran": lat["processes_that_ran"],
        "submit_to_start_ms": start,
        "submit_to_result_returned_ms": returned,
        "returned_measured": f"{len(lat['submit_to_result_returned_s'])} tasks, each awaited before the next",
        "loadavg_before": lat["loadavg_before"],
        "loadavg_after": lat["loadavg"],
    }
    return [
        Row("peers", f"{name} submit→start p50, {label}", start["p50"], "ms"),
        Row("peers", f"{name} submit→start p95", start["p95"], "ms"),
        Row("peers", f"{name} submit→start p99", start["p99"], "ms"),
        Row("peers", f"{name} submit→result returned p50", returned["p50"], "ms"),
        Row("peers", f"{name} submit→result returned p99", returned["p99"], "ms", extra=extra),
    ]


def rows(s: PeerSizes, versions: dict[str, str], log: Log) -> list[Row]:
    """Every peer's drain and latency rows (one run each)."""
    out: list[Row] = []
    for peer, (display, dist) in PEERS.items():
        name = f"{display} {versions.get(dist, '?')}"
        common = {"peer": name, "versions": versions}
        log(f"peer {name}: drain {s.tasks:,} tasks")
        out.append(_drain_row(name, run_one(peer, "drain", s, log=log), common))
        log(f"peer {name}: latency, {s.latency:,} tasks at {s.rate_per_s:.0f}/s")
        out += _latency_rows(name, run_one(peer, "latency", s, log=log), common)
    return out


def compare(ours: list[Row], peers: list[Row]) -> list[Row]:
    """The "ours ÷ peer" rows for drain throughput and "peer ÷ ours" for submit→start p50, when our suite ran."""
    by_key = {(r.workload, r.variant): r.value for r in ours}
    drain, start = by_key.get(OURS_DRAIN), by_key.get(OURS_START_P50)
    out: list[Row] = []
    for row in peers:
        name = row.variant.split(" drain,")[0].split(" submit→start p50,")[0]
        if drain and " drain, " in row.variant and row.value:
            row.extra["ours_over_peer"] = drain / row.value
            out.append(Row("peers", f"ours ÷ {name}, drain tasks/s", drain / row.value, "x", extra={"ours": drain}))
        elif start and " submit→start p50, " in row.variant and start > 0:
            row.extra["peer_over_ours"] = row.value / start
            out.append(Row("peers", f"{name} ÷ ours, submit→start p50", row.value / start, "x", extra={"ours": start}))
    return out


def describe(rows: list[Row], versions: dict[str, str]) -> str:
    """The versions, each peer's configuration and the load around its runs, as printed under the table."""
    lines = [f"peers ({venv.VENV.relative_to(REPO)}): " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    configs: dict[str, list[str]] = {}
    for r in rows:
        if r.workload == "peers" and "config" in r.extra:
            run = "drain" if r.unit == "tasks/s" else "latency"
            load = f"{run} loadavg {r.extra['loadavg_before']:.2f}→{r.extra['loadavg_after']:.2f}"
            configs.setdefault(f"  {r.extra['peer']}: {r.extra['config']}", []).append(load)
    lines += [f"{config} ({', '.join(loads)})" for config, loads in configs.items()]
    return "\n".join(lines)

"""Rendering for the ``dispatcher`` CLI: stats as a table or as JSON (schema in ``docs/stats.md``), demo progress."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dispatcher.fleet.stats import CapabilityStats, FleetStats, WorkerStats

COLUMNS = ("waiting", "running", "delayed", "dead", "workers")
ADDED = (
    "stale_consumers",
    "oldest_waiting_s",
    "oldest_running_s",
    "paused",
    "completed_1m",
    "failed_1m",
    "throughput_window_s",
    "drain_eta_s",
    "workers_needed",
    "workers_needed_basis",
    "waiting_admission",
    "waiting_limit",
    "waiting_key",
)
"""Per-capability keys added to the JSON after its first schema (which ``COLUMNS`` and ``open_circuits`` hold)."""
TOTALS_ADDED = (
    "stale_consumers",
    "completed_1m",
    "failed_1m",
    "oldest_waiting_s",
    "oldest_running_s",
    "paused",
    "workers_needed",
    "waiting_admission",
    "waiting_limit",
    "waiting_key",
)


def stats_json(stats: FleetStats) -> dict[str, Any]:
    """The stable JSON shape of ``dispatcher stats --json`` (documented in ``docs/stats.md``)."""
    return {
        "capabilities": [
            {"name": c.name, **{col: getattr(c, col) for col in COLUMNS}, "open_circuits": c.open_circuits}
            | {key: _rounded(getattr(c, key)) for key in ADDED}
            for c in stats.capabilities
        ],
        "totals": {col: getattr(stats.totals, col) for col in (*COLUMNS, *TOTALS_ADDED)},
        "workers": [worker_json(w) for w in stats.workers],
        "redis": None if stats.redis is None else dataclasses.asdict(stats.redis),
        "redis_nodes": [{"node": node, **dataclasses.asdict(info)} for node, info in stats.redis_nodes],
        "target_age_s": stats.target_age_s,
        "collected_at": round(stats.collected_at, 3),
    }


def worker_json(w: WorkerStats) -> dict[str, Any]:
    """One worker as ``stats --json`` and ``workers --json`` print it."""
    return {
        "consumer": w.consumer,
        "host": w.host,
        "pid": w.pid,
        "capabilities": list(w.capabilities),
        "concurrency": w.concurrency,
        "inflight": w.inflight,
        "circuits": dict(w.circuits),
        "alive": w.alive,
        "version": w.version,
        "started_at": round(w.started_at, 3),
        "uptime_s": round(w.uptime_s, 3),
        "last_seen": round(w.last_seen, 3),
        "heartbeat_age_s": round(w.heartbeat_age_s, 3),
    }


def _held_back(c: CapabilityStats) -> str:
    return (
        f"FLOW: {c.name}: {c.waiting_admission} waiting for admission (more workers help),"
        f" {c.waiting_limit} waiting for a rate limit, {c.waiting_key} for a key's permit (more workers do not help)"
    )


def stats_table(stats: FleetStats) -> str:
    """A readable table: one row per capability, a totals row, then the workers."""
    header = ["capability", *COLUMNS, "stale", "oldest waiting", "oldest running", "done/1m", "failed/1m"]
    header += ["drain eta", "need", "paused"]
    rows = [_capability_row(c) for c in stats.capabilities]
    t = stats.totals
    rows.append(["TOTAL", *(str(getattr(t, col)) for col in COLUMNS), str(t.stale_consumers), *_total_tail(stats)])
    lines = table(header, rows, right=frozenset(range(1, len(header) - 1)))
    lines.append(f"need: workers that drain waiting + running within {stats.target_age_s:g} s (docs/stats.md)")
    lines += [unserved_warning(c.name, c.workers, c.waiting) for c in stats.capabilities if c.unserved]
    lines += [f"PAUSED: {c.name}: workers do not read it ({c.waiting} waiting)" for c in stats.capabilities if c.paused]
    lines += [_held_back(c) for c in stats.capabilities if c.waiting_admission or c.waiting_limit or c.waiting_key]
    if stats.workers:
        lines.append("")
        lines += workers_table(stats.workers, long=False)
    return "\n".join(lines)


def _total_tail(stats: FleetStats) -> list[str]:
    t = stats.totals
    ages = [age(t.oldest_waiting_s), age(t.oldest_running_s)]
    return [*ages, str(t.completed_1m), str(t.failed_1m), "", str(t.workers_needed), str(t.paused)]


def _capability_row(c: CapabilityStats) -> list[str]:
    need = str(c.workers_needed) + ("?" if c.workers_needed_basis == "no_rate" else "")
    return [
        c.name,
        *(str(getattr(c, col)) for col in COLUMNS),
        str(c.stale_consumers),
        age(c.oldest_waiting_s),
        age(c.oldest_running_s),
        str(c.completed_1m),
        str(c.failed_1m),
        age(c.drain_eta_s),
        need,
        "yes" if c.paused else "",
    ]


def workers_table(workers: Sequence[WorkerStats], long: bool) -> list[str]:
    """The workers as table lines; ``long`` adds version, uptime and every circuit (``dispatcher workers``)."""
    header = ["worker", "state", "host:pid", "capabilities", "inflight", "heartbeat"]
    header += ["version", "uptime", "circuits"] if long else ["open circuits"]
    rows = []
    for w in workers:
        row = [w.consumer, "alive" if w.alive else "gone", f"{w.host}:{w.pid}", ",".join(w.capabilities)]
        row += [f"{w.inflight}/{w.concurrency}", age(w.heartbeat_age_s) + " ago"]
        circuits = sorted(w.circuits.items())
        if long:
            row += [w.version, age(w.uptime_s), ",".join(f"{cap}={state}" for cap, state in circuits) or "-"]
        else:
            row.append(",".join(f"{cap}={state}" for cap, state in circuits if state != "closed") or "-")
        rows.append(row)
    return table(header, rows, right=frozenset({4, 5}))


def unserved_warning(capability: str, workers: int, waiting: int) -> str:
    """The line that says a capability is served by no one: every live worker's circuit for it is open."""
    return (
        f"WARNING: {capability}: the circuit of all {workers} live worker(s) is open; its {waiting} waiting "
        "task(s) run only as trials until a handler succeeds again (see the workers' logs)"
    )


def progress_line(done: int, total: int, elapsed_s: float, workers: int) -> str:
    """One line of demo progress: done/total, rate, live workers."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    return f"{done}/{total} done  {rate:7.1f} tasks/s  {elapsed_s:5.1f} s  workers {workers}"


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def age(age_s: float | None) -> str:
    """A duration for people: seconds, minutes or hours; "-" for none."""
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.1f} s"
    if age_s < 7200:
        return f"{age_s / 60:.1f} min"
    return f"{age_s / 3600:.1f} h"


def table(header: list[str], rows: list[list[str]], right: frozenset[int]) -> list[str]:
    """Aligned columns: the ones in ``right`` (numbers) right-aligned, the others left-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(r) for r in rows)]


def capabilities_table(stats: FleetStats) -> str:
    """``dispatcher capabilities``: one row per known capability with its counters and live workers."""
    if not stats.capabilities:
        return "no capabilities known (none was submitted to or served yet)"
    header = ["capability", *COLUMNS]
    rows = [[c.name, *(str(getattr(c, col)) for col in COLUMNS)] for c in stats.capabilities]
    lines = table(header, rows, right=frozenset(range(1, len(header))))
    unserved = [c.name for c in stats.capabilities if c.workers == 0]
    if unserved:
        lines.append(
            f"no live worker: {', '.join(unserved)} (a name nothing uses: dispatcher capabilities forget NAME)"
        )
    return "\n".join(lines)

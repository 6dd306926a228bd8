"""Rendering for the ``dispatcher`` CLI: stats as a table or as JSON (schema in ``docs/stats.md``), demo progress."""

from __future__ import annotations

from typing import Any

from dispatcher.fleet.stats import FleetStats

COLUMNS = ("waiting", "running", "delayed", "dead", "workers")


def stats_json(stats: FleetStats) -> dict[str, Any]:
    """The stable JSON shape of ``dispatcher stats --json`` (documented in ``docs/stats.md``)."""
    return {
        "capabilities": [
            {"name": c.name, **{col: getattr(c, col) for col in COLUMNS}, "open_circuits": c.open_circuits}
            for c in stats.capabilities
        ],
        "totals": {col: getattr(stats.totals, col) for col in COLUMNS},
        "workers": [
            {
                "consumer": w.consumer,
                "host": w.host,
                "pid": w.pid,
                "capabilities": list(w.capabilities),
                "concurrency": w.concurrency,
                "inflight": w.inflight,
                "circuits": dict(w.circuits),
                "alive": w.alive,
            }
            for w in stats.workers
        ],
    }


def stats_table(stats: FleetStats) -> str:
    """A readable table: one row per capability, a totals row, then the workers."""
    header = ["capability", *COLUMNS, "oldest waiting"]
    rows = [
        [c.name, *(str(getattr(c, col)) for col in COLUMNS), _age(c.oldest_waiting_age_s)] for c in stats.capabilities
    ]
    rows.append(["TOTAL", *(str(getattr(stats.totals, col)) for col in COLUMNS), ""])
    lines = _table(header, rows, right=frozenset(range(1, len(header))))
    lines += [unserved_warning(c.name, c.workers, c.waiting) for c in stats.capabilities if c.unserved]
    if stats.workers:
        lines.append("")
        worker_rows = [
            [
                w.consumer,
                "alive" if w.alive else "gone",
                f"{w.host}:{w.pid}",
                ",".join(w.capabilities),
                f"{w.inflight}/{w.concurrency}",
                ",".join(f"{cap}={state}" for cap, state in sorted(w.circuits.items()) if state != "closed") or "-",
            ]
            for w in stats.workers
        ]
        header = ["worker", "state", "host:pid", "capabilities", "inflight", "open circuits"]
        lines += _table(header, worker_rows, right=frozenset({4}))
    return "\n".join(lines)


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


def _age(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.1f} s"
    if age_s < 7200:
        return f"{age_s / 60:.1f} min"
    return f"{age_s / 3600:.1f} h"


def _table(header: list[str], rows: list[list[str]], right: frozenset[int]) -> list[str]:
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
    lines = _table(header, rows, right=frozenset(range(1, len(header))))
    unserved = [c.name for c in stats.capabilities if c.workers == 0]
    if unserved:
        lines.append(
            f"no live worker: {', '.join(unserved)} (a name nothing uses: dispatcher capabilities forget NAME)"
        )
    return "\n".join(lines)

"""Scenario 19: kill -9 of workers holding concurrency permits under load (flow control, issue 14).

Producers submit tasks with a ``concurrency_key`` (two capabilities, caps 1 and 2 per key, several keys each) and
one unit of a generous rate limit, half of the second capability's tasks with a ``fairness_key`` too (3 tenants,
through the fair gate, sharing keys with the others); workers run them with the keyed handler, which writes the
start and end of each run with its key to the spans ledger. A worker with keyed runs in progress (each holding its
key's permit) is killed with ``kill -9`` a bounded number of times, by PID, and a new worker started each time.
Counted from the ledgers at the end: every submitted task ran (0 lost), every extra run is a rerun of a run the
kills cut short, at most the cap of one key ran at once (a killed run ends when its process died), and, once
settled, no task holds a permit and no permit set is left in Redis.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from chaoslib import ledger
from chaoslib.handlers import SPANS_ENV
from chaoslib.scenarios.common import Ctx, tracebacks, wait_for
from chaoslib.verdict import Verdict
from chaoslib.world import Producer, Tally, World
from dispatcher import Dispatcher
from dispatcher.fleet import ratelimits
from dispatcher.store import flow

APP = "chaoslib.handlers"
CAPS = {"chaos.keyed1": 1, "chaos.keyed2": 2}
"""Capability -> per-key cap (the keyed handler serves both)."""
LIMIT = "chaos-provider"
LIMIT_PER_MIN = 60_000.0
"""1,000 units/s, one unit per task: several times what the keys let run, so the caps decide the pace."""
LIMIT_BURST = 200
WORKERS = 3
CONCURRENCY = 8
EXTRA = ("--max-deliveries", "10")
"""Several kills may catch one task's holders in turn; this scenario is about loss and permits, not poison."""


@dataclass(slots=True)
class Kill:
    pid: int
    t: float
    """Epoch seconds (the spans' clock) once the victim was stopped: it ran no further."""
    at: float
    """Monotonic seconds."""


@dataclass(slots=True)
class Fleet:
    """The live workers by name, and every kill."""

    world: World
    live: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    spawned: int = 0

    def start(self, wait: bool) -> None:
        name = f"k{self.spawned}"
        self.spawned += 1
        env = {SPANS_ENV: str(self.world.dir / "spans.ledger")}
        self.live[name] = self.world.start_worker(
            name, list(CAPS), concurrency=CONCURRENCY, app=APP, extra=EXTRA, env=env, wait=wait
        )

    def holder(self) -> str | None:
        """A live worker with a keyed run in progress (started, not ended): its task holds its key's permit."""
        pids = {p.pid: name for name, p in self.live.items() if p.poll() is None}
        busy = sorted({pids[pid] for _, pid in self.running() if pid in pids})
        return self.world.rng.choice(busy) if busy else None

    def running(self) -> set[tuple[str, int]]:
        return _open_runs(ledger.spans(self.world.dir / "spans.ledger"))

    def kill_one(self, timeout_s: float) -> bool:
        """``kill -9`` a worker that holds permits at that moment: it is stopped (``SIGSTOP``) first, so that its
        runs in progress are known, and resumed to try another if it has none left (bounded tries)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(50):
            name = wait_for(self.holder, max(0.0, deadline - time.monotonic()))
            if not name:
                return False
            proc = self.live[name]
            self.world.procs.signal(proc, signal.SIGSTOP)
            wait_for(partial(_stopped, proc.pid), 2)
            stopped_at, at = time.time(), time.monotonic()
            if any(pid == proc.pid for _, pid in self.running()):
                del self.live[name]
                self.world.procs.kill(proc)
                self.kills.append(Kill(proc.pid, stopped_at, at))
                self.start(wait=False)
                return True
            self.world.procs.signal(proc, signal.SIGCONT)
        return False


def _stopped(pid: int) -> bool:
    """The process is stopped (state ``T`` in ``/proc/<pid>/stat``)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _open_runs(spans: list[ledger.Span]) -> set[tuple[str, int]]:
    """(task id, pid) of the runs started and not ended."""
    started = {(s.task_id, s.pid) for s in spans if s.kind == "start"}
    return started - {(s.task_id, s.pid) for s in spans if s.kind == "end"}


def max_concurrent(spans: list[ledger.Span], killed: dict[int, float]) -> dict[tuple[str, str], int]:
    """The most runs of one (capability, key) in progress at once. A run without an end ends when its process was
    killed (``killed``: pid -> epoch seconds), or never (it counts to the end: a run that did not end otherwise is
    not explained)."""
    ends: dict[tuple[str, int], list[float]] = defaultdict(list)
    for s in spans:
        if s.kind == "end":
            ends[(s.task_id, s.pid)].append(s.t)
    events: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for s in sorted((s for s in spans if s.kind == "start"), key=lambda s: s.t):
        mine = ends[(s.task_id, s.pid)]  # a run's end is the first end of its task on its process after it
        later = [t for t in mine if t >= s.t]
        end = min(later) if later else killed.get(s.pid, math.inf)
        if later:
            mine.remove(end)
        events[(s.capability, s.key)] += [(s.t, 1), (end, -1)]
    most: dict[tuple[str, str], int] = {}
    for key, points in events.items():
        now = top = 0
        for _, delta in sorted(points):  # at one instant an end (-1) sorts before a start (+1)
            now += delta
            top = max(top, now)
        most[key] = top
    return most


def reruns(spans: list[ledger.Span], killed: dict[int, float]) -> dict[str, int]:
    """Extra starts (beyond one per task), tasks started more than once, and extra starts that no kill explains:
    each later start of a task needs an earlier start of it on a process killed before that later start (one
    cut run explains one rerun); a task run twice by a live process is unexplained, even if it was killed later."""
    by_task: dict[str, list[ledger.Span]] = defaultdict(list)
    for s in spans:
        if s.kind == "start":
            by_task[s.task_id].append(s)
    unexplained = 0
    for runs in by_task.values():
        runs.sort(key=lambda s: s.t)
        used = 0
        for i, later in enumerate(runs[1:], 1):
            cut = sum(1 for r in runs[:i] if r.pid in killed and killed[r.pid] <= later.t)
            if cut > used:
                used += 1
            else:
                unexplained += 1
    return {
        "extra_starts": sum(len(r) - 1 for r in by_task.values()),
        "tasks_rerun": sum(1 for r in by_task.values() if len(r) > 1),
        "unexplained": unexplained,
    }


def held_at_kills(spans: list[ledger.Span], kills: list[Kill]) -> list[set[str]]:
    """Per kill: the tasks of the keyed runs in progress on the victim at that moment (each held its key's
    permit)."""
    out = []
    for k in kills:
        mine = [s for s in spans if s.pid == k.pid]
        started = {s.task_id for s in mine if s.kind == "start" and s.t <= k.t}
        out.append(started - {s.task_id for s in mine if s.kind == "end" and s.t <= k.t})
    return out


def rerun_after_s(spans: list[ledger.Span], kills: list[Kill], held: list[set[str]]) -> list[float]:
    """Per kill: seconds until the last of the runs it cut short started again elsewhere (inf: never)."""
    out = []
    for k, tasks in zip(kills, held, strict=True):
        again = {
            t: min((s.t for s in spans if s.task_id == t and s.kind == "start" and s.t > k.t), default=math.inf)
            for t in tasks
        }
        out.append(max(again.values(), default=k.t) - k.t)
    return out


def first_runs_after(spans: list[ledger.Span], t: float) -> int:
    """Tasks whose first run started after ``t`` (the backlog left at the last kill)."""
    first: dict[str, float] = {}
    for s in spans:
        if s.kind == "start":
            first[s.task_id] = min(first.get(s.task_id, math.inf), s.t)
    return sum(1 for x in first.values() if x > t)


def permits_left(w: World, keys: dict[str, list[str]]) -> dict[str, int]:
    """Once settled: permits still held by a task in the index, members left in ``P:{C}:permits:*`` before and
    after the gate's cleanup of stale members (``flow.holders``), and index entries left."""
    c = w.client()

    def members() -> int:
        found = 0
        for capability in keys:
            for name in c.scan_iter(match=w.keys(capability).permits("*"), count=1000):
                found += int(c.zcard(name))
        return found

    before = members()
    with Dispatcher(w.settings()) as d:
        held = sum(sum(d.gateway.run(flow.holders(w.keys(cap), ks)).values()) for cap, ks in keys.items())
    return {
        "held": held,
        "members_before_cleanup": before,
        "members_after_cleanup": members(),
        "index_entries": sum(int(c.hlen(w.keys(cap).index)) for cap in keys),
    }


def _producers(ctx: Ctx, w: World, keys: dict[str, list[str]]) -> list[Producer]:
    total = ctx.scale(240, 6000)
    hold_s = ctx.scale(100, 50) / 1000

    def options(capability: str) -> Any:
        names = keys[capability]
        tenants = capability == "chaos.keyed2"  # half of its tasks through the fair gate, of 3 tenants

        def of(i: int) -> dict[str, Any]:
            found: dict[str, Any] = {"concurrency_key": names[i % len(names)], "rate_limits": {LIMIT: 1}}
            if tenants and i % 2 == 0:
                found["fairness_key"] = f"tenant-{i % 3}"
            return found

        return of

    return [
        Producer(
            w,
            cap,
            total,
            batch=ctx.scale(10, 20),
            pause_s=0.1,
            payload=lambda i: {"s": hold_s},
            options=options(cap),
            deadline_s=ctx.scale(120, 600),
        )
        for cap in CAPS
    ]


def permit_kills(ctx: Ctx, v: Verdict) -> None:
    n_keys = ctx.scale(4, 8)
    planned = ctx.scale(3, 10)
    interval_s = ctx.scale(1500, 3000) / 1000
    keys = {cap: [f"key-{j}" for j in range(n_keys)] for cap in CAPS}
    with ctx.world("s19") as w:
        with Dispatcher(w.settings()) as d:
            ratelimits.define(d.gateway, d.core.keyspace, LIMIT, LIMIT_PER_MIN, LIMIT_BURST)
            for cap, per_key in CAPS.items():
                ratelimits.set_concurrency(d.gateway, d.core.keyspace, cap, per_key)
        fleet = Fleet(w)
        for _ in range(WORKERS):
            fleet.start(wait=True)
        producers = _producers(ctx, w, keys)
        for p in producers:
            p.start()
        started = time.monotonic()
        for _ in range(planned):
            time.sleep(interval_s)
            if not fleet.kill_one(timeout_s=10):
                v.notes.append("no live worker had a keyed run in progress for 10 s: a kill skipped")
        for p in producers:
            p.join(timeout=ctx.scale(120, 600))
        tally, _ = w.wait_settled(list(CAPS), ctx.timers.redelivery_bound_s + 120)
        drain_s = time.monotonic() - (fleet.kills[-1].at if fleet.kills else started)
        _verdict(v, w, fleet, producers, keys, tally)
        v.timings = {"elapsed_s": time.monotonic() - started, "drain_after_last_kill_s": drain_s}


def _verdict(
    v: Verdict, w: World, fleet: Fleet, producers: list[Producer], keys: dict[str, list[str]], tally: Tally
) -> None:
    spans = ledger.spans(w.dir / "spans.ledger")
    killed = {k.pid: k.t for k in fleet.kills}
    most = max_concurrent(spans, killed)
    again = reruns(spans, killed)
    cut = held_at_kills(spans, fleet.kills)
    held = [len(tasks) for tasks in cut]
    rerun_s = rerun_after_s(spans, fleet.kills, cut)
    left = permits_left(w, keys)
    over = {f"{c}/{k}": n for (c, k), n in most.items() if n > CAPS[c]}
    v.tally = tally
    v.figures = {
        "kills": len(fleet.kills),
        "keyed_runs_held_per_kill": held,
        "caps": CAPS,
        "keys_per_capability": len(next(iter(keys.values()))),
        "rate_limit": {"name": LIMIT, "per_min": LIMIT_PER_MIN, "burst": LIMIT_BURST},
        "rerun_after_kill_s": [round(x, 2) for x in rerun_s],
        "first_runs_after_last_kill": first_runs_after(spans, fleet.kills[-1].t) if fleet.kills else 0,
        "max_concurrent_per_key": {c: max((n for (cc, _), n in most.items() if cc == c), default=0) for c in CAPS},
        **again,
        "finished_runs_extra": tally.duplicates,
        "permits": left,
        "producer_errors": {k: n for p in producers for k, n in p.errors.items()},
    }
    v.check("producers submitted everything", all(p.sent == p.total for p in producers), [p.sent for p in producers])
    v.check("0 lost", tally.lost == 0, f"{tally.lost} e.g. {tally.lost_sample}")
    v.check("kills happened, each holding permits", len(held) >= 3 and min(held) > 0, held)
    v.check("every run cut by a kill started again", all(math.isfinite(x) for x in rerun_s), rerun_s)
    v.check("extra runs explained by the kills only", again["unexplained"] == 0, again)
    v.check("cap never exceeded (counted in the handlers)", not over and bool(most), over or most)
    v.check("0 permits held once settled", left["held"] == 0 and left["index_entries"] == 0, left)
    v.check("0 permit members left after cleanup", left["members_after_cleanup"] == 0, left)
    v.check("no dead letters", not tally.dead, dict(tally.dead))
    v.check("no crash", not tracebacks(w), tracebacks(w))

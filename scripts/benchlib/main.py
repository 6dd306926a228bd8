"""``scripts/bench``: runs the workloads of issue 4 on private redis-servers and prints one table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import cluster, cost, fairgate, flow, ours, profile, raw, scale, stats_cost
from benchlib.env import Processes, RedisServer, machine
from benchlib.report import Row, json_lines, markdown, table

FASTEST_PEER = 8_000.0  # issue 4: Dramatiq ~8k tasks/s drained here; the floor is 3x that, "today ≈ 24k tasks/s"
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


@dataclass(frozen=True, slots=True)
class Sizes:
    tasks: int
    single: int
    latency: int
    rate_per_s: float
    capabilities: int
    workers: int
    stats_runs: int
    pel: int
    timeout_s: float
    variants: bool


FULL = Sizes(20_000, 5_000, 2_000, 500.0, 100, 1_000, 20, 100_000, 120.0, True)
QUICK = Sizes(500, 200, 100, 500.0, 5, 20, 3, 1_000, 20.0, False)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, no variants (a smoke run, not a measurement)")
    p.add_argument("--tasks", type=int, help="tasks per drain / end-to-end / submit_many run (default 20,000)")
    p.add_argument("--json", metavar="PATH", help="write JSON lines to PATH ('-' for stdout)")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument(
        "--peers",
        action="store_true",
        help="after our suite, run the drain and latency workloads through Celery, Dramatiq and taskiq "
        "(installed from PyPI into .bench/peers-venv on first use)",
    )
    p.add_argument("--peers-only", action="store_true", help="run only the peers, not our suite")
    p.add_argument("--profile", metavar="CAPABILITY", help="only profile one worker draining 200,000 tasks (echo/noop)")
    p.add_argument(
        "--stats-cost",
        action="store_true",
        help="only time stats.collect() over 100 capabilities / 1,000 workers / 10,000 running tasks",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="only drain 3 capabilities on one Redis vs a 3-primary cluster (Redis CPU, commands per task per shard)",
    )
    p.add_argument(
        "--baseline-src",
        metavar="PATH",
        help="with --cluster: also drain with workers whose code comes from PATH (a checkout of another revision)",
    )
    p.add_argument(
        "--flow",
        action="store_true",
        help="only the flow-control workloads: tasks with priorities drained, a priority-9 task behind a backlog",
    )
    p.add_argument(
        "--fair-gate",
        action="store_true",
        help="only the fair gate's workloads: plain and all-options drains, the sybil flood, 10 behind 100,000",
    )
    p.add_argument("--repeat", type=int, default=1, help="run everything N times, report each figure's median")
    p.add_argument("--no-aof", action="store_true", help="skip the drain run on a Redis with AOF everysec")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ceiling_rows(server: RedisServer, procs: Processes, s: Sizes) -> tuple[list[Row], dict[str, float]]:
    log("raw redis-py ceiling")
    sub = raw.submit(server, s.tasks)
    c = {
        "single": sub["single"],
        "batch100": sub["batch100"],
        "batch1000": sub["batch1000"],
        "drain": raw.drain(server, procs, s.tasks, s.timeout_s),
        "e2e": raw.end_to_end(server, procs, s.tasks, 100, s.timeout_s),
        "rtt_us": ours.ping_rtt_us(server),
    }
    rows = [
        Row("ceiling", "XADD one at a time", c["single"], "tasks/s"),
        Row("ceiling", "XADD pipelined x100", c["batch100"], "tasks/s"),
        Row("ceiling", "XADD pipelined x1000", c["batch1000"], "tasks/s"),
        Row("ceiling", "drain, 2 procs, COUNT 100 + XACK/XDEL", c["drain"], "tasks/s"),
        Row("ceiling", "end to end, 1 producer x100 + 2 procs", c["e2e"], "tasks/s"),
        Row("ceiling", "PING round trip", c["rtt_us"], "µs"),
    ]
    return rows, c


def submit_rows(server: RedisServer, s: Sizes, c: dict[str, float]) -> list[Row]:
    log("submit")
    single = ours.submit_single(server, s.single)
    rows = [
        Row(
            "submit",
            "submit() one at a time",
            single["rate"],
            "tasks/s",
            c["single"],
            f"≤ 2 RTT ({2 * c['rtt_us']:.0f} µs/task)",
            single["us_per_task"] <= 2 * c["rtt_us"],
            single,
        )
    ]
    for batch in (100, 1000):
        many = ours.submit_many(server, s.tasks, batch)
        rows.append(
            Row(
                "submit",
                f"submit_many() x{batch}",
                many["rate"],
                "tasks/s",
                c[f"batch{batch}"],
                "≥ 50,000",
                many["rate"] >= 50_000,
                many,
            )
        )
        rows.append(Row("submit", f"submit_many() x{batch} client CPU", many["cpu_us_per_task"], "µs/task"))
    rows.append(Row("submit", "submit() client CPU", single["cpu_us_per_task"], "µs/task"))
    return rows


def drain_row(
    server: RedisServer, procs: Processes, s: Sizes, c: dict[str, float], variant: str, cap: str, args: list[str]
) -> tuple[Row, ours.DrainResult]:
    log(f"drain {variant}")
    d = ours.drain(server, procs, s.tasks, cap, args, s.timeout_s)
    goal = max(3 * FASTEST_PEER, 0.3 * c["e2e"])
    extra: dict[str, Any] = {
        "with_worker_startup": d.rate_with_startup,
        "seconds": d.seconds,
        "redis_cpu_us_per_task": d.redis_cpu_us_per_task,
    }
    row = Row("drain", variant, d.rate, "tasks/s", c["drain"], f"≥ {goal:,.0f}", d.rate >= goal, extra)
    return row, d


IO_LIGHT = ["--concurrency", "100"]
"""What a user runs for I/O-light tasks (the issue's drain setting): many slots, since a slot costs little."""


def drain_rows(server: RedisServer, procs: Processes, s: Sizes, c: dict[str, float], aof: bool) -> list[Row]:
    rows: list[Row] = []
    row, main = drain_row(server, procs, s, c, "async echo, 2 workers, --concurrency 100", "echo", IO_LIGHT)
    rows.append(row)
    if s.variants:
        rows.append(drain_row(server, procs, s, c, "sync noop, 2 workers, --concurrency 100", "noop", IO_LIGHT)[0])
        rows.append(drain_row(server, procs, s, c, "async echo, 2 workers, default --concurrency (64)", "echo", [])[0])
        rows.append(drain_row(server, procs, s, c, "sync noop, 2 workers, default --concurrency (64)", "noop", [])[0])
    if aof:
        aof_server = RedisServer(AOF).start()
        try:
            rows.append(
                drain_row(aof_server, procs, s, c, "async echo, --concurrency 100, AOF everysec", "echo", IO_LIGHT)[0]
            )
        finally:
            aof_server.stop()
    m = main.memory
    rows += [
        Row("memory", "worker peak RSS under load (drain)", max(main.rss_hwm_kb) / 1024, "MB"),
        Row(
            "memory",
            "Redis per queued task",
            m["bytes_per_queued_task"],
            "B",
            None,
            "≤ 300",
            m["bytes_per_queued_task"] <= 300,
        ),
        Row("memory", "Redis per stored result", m["results_bytes_per_task"], "B"),
        Row(
            "memory",
            "after drain, results expired: delta",
            m["after_drain_without_results_delta_bytes"] / 1e6,
            "MB",
            None,
            "≤ 1 MB, stream 0, pending 0",
            abs(m["after_drain_without_results_delta_bytes"]) <= 1e6 and m["stream_length"] == 0 and m["pending"] == 0,
            m,
        ),
    ]
    return rows


def e2e_latency_rows(server: RedisServer, procs: Processes, s: Sizes, c: dict[str, float]) -> list[Row]:
    log("end to end")
    e = ours.end_to_end(server, procs, s.tasks, 100, s.timeout_s)
    rows = [
        Row("end to end", "submit_many x100 + 2 workers", e["rate"], "tasks/s", c["e2e"], "", None, e),
        Row("end to end", "worker CPU per task (sum of 2)", e["worker_cpu_us_per_task"], "µs/task"),
        Row("end to end", "Redis CPU per task", e["redis_cpu_us_per_task"], "µs/task"),
    ]
    log(f"latency: {s.latency} tasks at {s.rate_per_s:.0f}/s, then {s.latency} awaited with result()")
    lat = ours.latency(server, procs, s.latency, s.rate_per_s)
    start, stored = lat["submit_to_start"], lat["submit_to_result_stored"]
    returned, lag = lat["submit_to_result_returned"], lat["result_returns_after_stored"]
    finished = lat["result_returns_after_handler_finished"]
    rows += [
        Row("latency", "submit→start p50", start["p50"], "ms", None, "≤ 0.5", start["p50"] <= 0.5),
        Row("latency", "submit→start p95", start["p95"], "ms"),
        Row("latency", "submit→start p99", start["p99"], "ms", None, "≤ 2", start["p99"] <= 2),
        Row("latency", "submit() call itself p50", lat["submit_call"]["p50"], "ms"),
        Row("latency", "submit→result stored p50", stored["p50"], "ms"),
        Row("latency", "submit→result stored p95", stored["p95"], "ms"),
        Row("latency", "submit→result stored p99", stored["p99"], "ms"),
        Row("latency", "submit→result() returned p50", returned["p50"], "ms"),
        Row("latency", "submit→result() returned p99", returned["p99"], "ms"),
        Row("latency", "result() after stored p50", lag["p50"], "ms", None, "≤ 1", lag["p50"] <= 1),
        Row("latency", "result() after stored p99", lag["p99"], "ms", None, "≤ 1", lag["p99"] <= 1, lat),
        Row("latency", "result() after handler finished p50", finished["p50"], "ms"),
        Row("latency", "result() after handler finished p99", finished["p99"], "ms"),
    ]
    idle = max(e["idle_rss_kb"] + lat["idle_rss_kb"]) / 1024
    rows.append(Row("memory", "worker RSS idle", idle, "MB", None, "≤ 60", idle <= 60))
    rows.append(Row("memory", "worker peak RSS under load (e2e)", max(e["rss_hwm_kb"]) / 1024, "MB"))
    return rows


def scale_rows(server: RedisServer, s: Sizes) -> list[Row]:
    log(f"stats with {s.capabilities} capabilities / {s.workers} workers")
    st = scale.stats(server, s.capabilities, s.workers, s.stats_runs)
    rows = [
        Row(
            "scale",
            f"stats.collect, {s.capabilities} caps / {s.workers} workers",
            st["median_ms"],
            "ms",
            None,
            "≤ 100",
            st["median_ms"] <= 100,
            st,
        )
    ]
    for alive in (False, True):
        who = "live" if alive else "dead"
        log(f"reaper pass, {s.pel:,}-entry pending list of a {who} consumer")
        r = scale.reaper(server, s.pel, alive)
        rows.append(Row("scale", f"reaper pass, {s.pel:,} PEL, {who} consumer", r["seconds"], "s", None, "", None, r))
    return rows


COST_TARGETS = {
    # (shape, variant) -> (Redis CPU target, worker CPU target), as ratios to the raw loop of the same shape
    ("batched", "results stored"): (3.5, 4.0),
    ("batched", "store_result=False"): (2.5, 4.0),
    ("single", "results stored"): (3.5, 6.0),
    ("single", "store_result=False"): (2.5, 6.0),
}
"""Issue 10's targets: Redis CPU per task <= 2.5x raw without results, <= 3.5x with; worker CPU <= 4x raw for
async handlers (the batched shape) and <= 6x for sync handlers (the single shape)."""


def cost_rows(s: Sizes) -> list[Row]:
    """Redis CPU and worker CPU per task, ours against the raw loop of the same shape (``benchlib.cost``)."""
    log("cost per task: batched (async echo x100) and single (sync noop, one submit() per task)")
    rows: list[Row] = []
    for r in cost.ratios(cost.run(s.tasks, max(s.tasks // 2, 100))):
        if r["variant"] == "raw loop":
            rows.append(Row("cost", f"{r['shape']}, raw loop: Redis CPU", r["redis_us"], "µs/task"))
            rows.append(Row("cost", f"{r['shape']}, raw loop: reader CPU", r["worker_us"], "µs/task"))
            continue
        redis_goal, worker_goal = COST_TARGETS[(r["shape"], r["variant"])]
        name = f"{r['shape']}, {r['variant']}"
        rows.append(Row("cost", f"{name}: Redis CPU", r["redis_us"], "µs/task", extra={"commands": r["commands"]}))
        rows.append(Row("cost", f"{name}: worker CPU", r["worker_us"], "µs/task"))
        ratio_rows = ((f"{name}: Redis ÷ raw", r["redis_ratio"], redis_goal),)
        ratio_rows += ((f"{name}: worker ÷ raw", r["worker_ratio"], worker_goal),)
        for variant, ratio, goal in ratio_rows:
            rows.append(Row("cost", variant, ratio, "x raw", None, f"≤ {goal}", ratio <= goal))
    return rows


def suite(s: Sizes, aof: bool) -> list[Row]:
    """Every workload once, on a fresh private server (the cost workload on its own)."""
    procs = Processes()
    server = RedisServer().start()
    try:
        rows, c = ceiling_rows(server, procs, s)
        rows += submit_rows(server, s, c)
        rows += drain_rows(server, procs, s, c, aof)
        rows += e2e_latency_rows(server, procs, s, c)
        rows += scale_rows(server, s)
    finally:
        procs.stop_all()
        server.stop()
    return rows + cost_rows(s)


def medians(runs: list[list[Row]]) -> list[Row]:
    """Each figure's median over the runs (ceilings too, so ratios stay within one kind of run); the spread
    goes in ``extra.runs``."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for i, row in enumerate(runs[0]):
        values = [r[i].value for r in runs]
        ceilings = [r[i].ceiling for r in runs if r[i].ceiling is not None]
        oks = [r[i].ok for r in runs]
        mid = statistics.median(values)
        closest = _closest(runs, i, mid)
        out.append(
            Row(
                row.workload,
                row.variant,
                mid,
                row.unit,
                statistics.median(ceilings) if ceilings else None,
                closest[i].target,  # a target may depend on its run's ceiling: shown with the run that decides ok
                None if oks[0] is None else bool(closest[i].ok),
                {**runs[values.index(sorted(values)[len(values) // 2])][i].extra, "runs": values},
            )
        )
    return out


def _closest(runs: list[list[Row]], i: int, mid: float) -> list[Row]:
    # The run whose value is closest to the median decides "ok" (its target test saw that value).
    return min(runs, key=lambda r: abs(r[i].value - mid))


def _meta(s: Sizes) -> dict[str, Any]:
    server = RedisServer().start()
    client = server.client()
    try:
        return {
            **machine(client.info("server")["redis_version"]),
            "command": " ".join(["scripts/bench", *sys.argv[1:]]),
            "sizes": dataclasses.asdict(s),
            "loadavg_before": os.getloadavg()[0],
        }
    finally:
        client.close()
        server.stop()


def _report(args: argparse.Namespace, rows: list[Row], meta: dict[str, Any], runs: int) -> None:
    print(table(rows))
    print(
        f"\nmachine: {meta['nproc']} CPUs, {meta['cpu']}, Redis {meta['redis']}, Python {meta['python']}; "
        f"{meta['seconds']} s, {runs} run(s) of our suite{', medians' if max(args.repeat, 1) > 1 else ''}"
    )
    if "peers" in meta:
        from benchlib.peers import runner as peers

        print("\n" + peers.describe(rows, meta["peers"]))
    if args.markdown:
        print("\n" + markdown(rows))
    if args.json:
        text = json_lines(meta, rows)
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)


def run(args: argparse.Namespace) -> int:
    if args.profile:
        out = Path(tempfile.gettempdir()) / f"bench-profile-{args.profile}.txt"
        print(profile.run(args.profile, args.tasks or 200_000, [], out))
        print(f"\ncollapsed stacks: {out}")
        return 0
    s = QUICK if args.quick else FULL
    only = _only(s, args)
    if only is not None:
        return only
    if args.tasks:
        s = dataclasses.replace(s, tasks=args.tasks)
    with_peers = args.peers or args.peers_only
    if with_peers:
        from benchlib.peers import runner as peers

        versions = peers.prepare(log)  # before our suite: an install failure should not cost a whole run
    started = time.monotonic()
    meta = _meta(s)
    runs = []
    for i in range(0 if args.peers_only else max(args.repeat, 1)):
        if args.repeat > 1:
            log(f"run {i + 1} of {args.repeat}")
        runs.append(suite(s, aof=not (args.no_aof or args.quick)))
    rows = medians(runs) if runs else []
    if with_peers:
        sizes = peers.PeerSizes(s.tasks, s.latency, s.rate_per_s, s.timeout_s)
        peer_rows = medians([peers.rows(sizes, versions, log) for _ in range(max(args.repeat, 1))])
        rows += peer_rows + peers.compare(rows, peer_rows)
        meta["peers"] = versions
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["runs"] = len(runs)
    _report(args, rows, meta, len(runs))
    return 0


def _only(s: Sizes, args: argparse.Namespace) -> int | None:
    """Run the one group of workloads a flag asks for (its exit code), or None when no such flag is given."""
    if args.stats_cost:
        return _stats_cost(s)
    if args.cluster:
        return _cluster(s, args)
    if args.flow:
        return _flow(s, args.tasks or (10_000 if s is FULL else 500))
    if args.fair_gate:
        return _fair_gate(s, args.tasks or (20_000 if s is FULL else 500))
    return None


def _cluster(s: Sizes, args: argparse.Namespace) -> int:
    per_cap = (args.tasks or s.tasks) // 3
    baseline = Path(args.baseline_src).resolve() if args.baseline_src else None
    log(f"cluster: {per_cap:,} tasks per capability, {max(args.repeat, 1)} run(s)")
    rows = cluster.run(per_cap, s.timeout_s, baseline, max(args.repeat, 1))
    print(cluster.report(rows))
    if args.json:
        text = "\n".join(json.dumps({"drain": label, **figures}) for label, figures in rows) + "\n"
        sys.stdout.write(text) if args.json == "-" else Path(args.json).write_text(text)
    return 0


def _stats_cost(s: Sizes) -> int:
    running = 10_000 if s is FULL else 100
    log(f"stats.collect with {s.capabilities} capabilities / {s.workers} workers / {running:,} running tasks")
    server = RedisServer().start()
    try:
        r = stats_cost.run(server, s.capabilities, s.workers, running, s.stats_runs)
    finally:
        server.stop()
    what = f"stats.collect, {s.capabilities} caps / {s.workers} workers / {running:,} running"
    row = Row("scale", what, r["median_ms"], "ms", None, "≤ 100", r["median_ms"] <= 100, r)
    print(table([row]))
    print(f"best {r['best_ms']:.1f} ms, {r['round_trips']} round trips per collect()")
    return 0


def _flow(s: Sizes, n: int) -> int:
    server, procs = RedisServer().start(), Processes()
    try:
        log(f"flow: {n:,} tasks with priorities 0-9, 2 workers")
        d = flow.drain(server, procs, n, s.timeout_s)
        log(f"flow: {flow.JUMPS} priority-9 tasks behind {n:,} priority-0")
        j = flow.jump(server, procs, n, s.timeout_s)
        seconds = 30.0 if s is FULL else 3.0
        log(f"flow: a 100/s limit under a backlog for {seconds:g} s, 4 workers")
        r = flow.rate(server, procs, 100, seconds, s.timeout_s)
        log("flow: cap 2 per key, 50 keys x 20 tasks of 10 ms, 4 workers x 16 slots")
        c = flow.concurrency(server, procs, 50, 2, s.timeout_s)
        log("flow: tenants weighing 3:2:1")
        f = flow.fairness(server, procs, n // 3, s.timeout_s)
    finally:
        procs.stop_all()
        server.stop()
    rows_fair = fairgate.rows(n, s is FULL, s.timeout_s, log)
    rows = [
        Row("flow", "drain, priorities 0-9, 2 workers, --concurrency 100", d["rate"], "tasks/s", None, "", None, d),
        Row("flow", "Redis commands per task at submit (scripts' calls included)", d["submit_commands_per_task"], ""),
        Row("flow", "Redis commands per task, admit + run + settle", d["run_commands_per_task"], ""),
        Row("flow", f"priority 9 behind {n:,}: backlog starts ahead, p99", j["ahead_p99"], "tasks", None, "", None, j),
        Row("flow", f"priority 9 behind {n:,}: submit to start, p99", j["wait"]["p99"], "ms"),
        Row("flow", "rate limit 100/s: observed after the burst", r["rate"], "tasks/s", None, "95-100", None, r),
        Row("flow", "rate limit 100/s: busiest 1 s window", r["busiest_1s"], "starts", None, f"≤ {r['bound']}"),
        Row(
            "flow", "cap 2 per key, 50 keys: most running per key", c["most_running_per_key"], "", None, "≤ 2", None, c
        ),
        Row("flow", "cap 2 per key, 50 keys: drain time", c["seconds"], "s"),
        Row("flow", "fairness 3:2:1: share of a", f["a"], "", None, "0.50 ± 10 %", None, f),
        Row("flow", "fairness 3:2:1: share of b", f["b"], "", None, "0.33 ± 10 %"),
        Row("flow", "fairness 3:2:1: share of c", f["c"], "", None, "0.17 ± 10 %"),
    ]
    print(table(rows + rows_fair))
    return 0


def _fair_gate(s: Sizes, n: int) -> int:
    print(table(fairgate.rows(n, s is FULL, s.timeout_s, log)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))

"""Network faults through the proxy: 7 Redis unreachable, 8 half-open connection, 9 reply loss."""

from __future__ import annotations

import dataclasses
import time

from chaoslib import ledger
from chaoslib.proxy import Proxy
from chaoslib.scenarios.common import Ctx, pending_of, tracebacks
from chaoslib.scenarios.kills import _log_lines, _submit
from chaoslib.scenarios.redis_faults import _reclaims_after
from chaoslib.verdict import Verdict, summary
from chaoslib.world import Producer, World


def _proxy(w: World, seed: int) -> Proxy:
    proxy = Proxy(w.redis.port, seed).start()
    w.on_close(proxy.stop)
    return proxy


# ---- 7: Redis unreachable ------------------------------------------------------------------------------------------


def unreachable(ctx: Ctx, v: Verdict) -> None:
    """Every connection reset for ``down_s``: each submit either returned (and the task is in Redis) or raised
    our unavailable error within a bounded time; workers resume."""
    down_s = ctx.scale(5, 10)
    with ctx.world("s7") as w:
        proxy = _proxy(w, ctx.seed)
        procs = [w.start_worker(f"u{i}", url=proxy.url) for i in range(2)]
        producer = Producer(w, "echo", 10_000_000, batch=1, url=proxy.url, deadline_s=down_s + 30, pause_s=0.005)
        producer.start()
        time.sleep(2)
        cut_at = time.time()
        proxy.reset(down_s)
        time.sleep(down_s)
        back_at = time.time()
        time.sleep(4)
        producer.stop()
        tally, waited = w.wait_settled(["echo"], 60)
        v.tally = tally
        failed_s = [d for _, d, _ in producer.failures]
        kinds = {k for _, _, k in producer.failures}
        first = min((e.t for e in ledger.executions(w.exec_path) if e.t > back_at), default=float("inf"))
        in_outage_ok = [lat for lat in producer.latencies_s if lat > 5.0]
        v.timings = {
            "failed_submit_max_s": max(failed_s, default=0.0),
            "failed_submit_p50_s": summary(failed_s).get("p50", 0.0),
            "resumed_after_s": first - back_at,
            "down_s": down_s,
            "drain_s": waited,
        }
        v.figures = {
            "submits_ok": producer.sent,
            "submits_raised": len(producer.failures),
            "error_types": sorted(kinds),
            "slow_successes_over_5s": len(in_outage_ok),
            "reclaimed_after_outage": _reclaims_after(w, back_at),
            "connections_reset": proxy.resets,
            "cut_at": cut_at,
        }
        v.check("0 false successes: every returned submit is in Redis", tally.lost == 0, tally.lost)
        v.check("failures raised RedisUnavailable", kinds <= {"RedisUnavailable"} and bool(kinds), kinds)
        v.check("each failure within 5 s", max(failed_s, default=0.0) <= 5.0, max(failed_s, default=0.0), timing=True)
        v.check("workers resume", first - back_at < 5.0, f"{first - back_at:.2f}s", timing=True)
        v.check("workers alive", all(p.poll() is None for p in procs), [p.poll() for p in procs])
        v.check("no crash", not tracebacks(w), tracebacks(w))


# ---- 8: half-open connection ---------------------------------------------------------------------------------------


def blackhole(ctx: Ctx, v: Verdict) -> None:
    """Every connection of a blocked worker goes silent: it must notice within its socket timeout, reconnect,
    and run everything, including entries delivered by the read whose reply vanished."""
    # A heartbeat on a silent connection also waits a socket timeout: keep the TTL above two of them.
    timers = dataclasses.replace(ctx.timers, socket_timeout_s=2.0, heartbeat_ttl_s=6.0)
    rounds = ctx.scale(2, 5)
    took_all = []
    with ctx.world("s8", timers=timers) as w:
        proxy = _proxy(w, ctx.seed)
        worker = w.start_worker("h0", url=proxy.url, concurrency=8)
        for r in range(rounds):
            time.sleep(1.0)  # blocked in XREADGROUP on an established connection
            silenced = proxy.blackhole()
            ids = _submit(w, "echo", list(range(20)))  # straight to Redis, not through the proxy
            tally, took = w.wait_settled(["echo"], timers.socket_timeout_s * 4 + 20, ids)
            took_all.append(took)
            v.check(f"round {r}: connections silenced", silenced > 0, silenced)
            v.check(f"round {r}: nothing stuck (0 lost, drained)", tally.lost == 0 and w.drained(["echo"]), tally.lost)
        v.tally = w.tally(["echo"])
        bound = timers.socket_timeout_s * 2 + 2
        v.timings = {"recovered_max_s": max(took_all), "recovered_p50_s": summary(took_all)["p50"], "bound_s": bound}
        v.figures = {"rounds": rounds, "socket_timeout_s": timers.socket_timeout_s, "per_round_s": took_all}
        v.check(
            "noticed and recovered within the socket timeout (x2 + 2 s)",
            max(took_all) <= bound,
            max(took_all),
            timing=True,
        )
        v.check("PEL empty", pending_of(w, "echo") == 0, pending_of(w, "echo"))
        v.check("same worker process throughout", worker.poll() is None, worker.poll())
        v.check("no crash", not tracebacks(w), tracebacks(w))


# ---- 9: reply loss -------------------------------------------------------------------------------------------------


def reply_loss(ctx: Ctx, v: Verdict) -> None:
    """Replies dropped (and their connection reset) at random, for producers and workers alike."""
    total = ctx.scale(500, 3000)
    with ctx.world("s9") as w:
        proxy = _proxy(w, ctx.seed)
        procs = [w.start_worker(f"l{i}", url=proxy.url, concurrency=8) for i in range(2)]
        proxy.drop_reply_p = 0.03
        producer = Producer(w, "echo", total, batch=1, url=proxy.url, deadline_s=300)
        producer.start()
        producer.join(timeout=300)
        time.sleep(2)
        proxy.drop_reply_p = 0.0
        tally, waited = w.wait_settled(["echo"], 60)
        v.tally = tally
        lease_lost = len(_log_lines(w, "lease lost"))
        v.timings = {"drain_after_faults_s": waited}
        v.figures = {
            "replies_dropped": proxy.replies_dropped,
            "producer_errors": dict(producer.errors),
            "lease_lost_logged": lease_lost,
            "reclaimed": _reclaims_after(w, 0),
        }
        v.check("replies were dropped", proxy.replies_dropped > 10, proxy.replies_dropped)
        v.check("0 lost", tally.lost == 0, f"{tally.lost} e.g. {tally.lost_sample}")
        v.check("nothing stuck pending", pending_of(w, "echo") == 0 and w.drained(["echo"]), pending_of(w, "echo"))
        v.check("workers alive", all(p.poll() is None for p in procs), [p.poll() for p in procs])
        v.notes.append("duplicates (extra runs) are counted, not prevented: at-least-once")

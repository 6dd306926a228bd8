"""Redis itself misbehaving: 6 crash with AOF, 12 memory full, 13 keys deleted, 14 memory bound."""

from __future__ import annotations

import time

from chaoslib import ledger
from chaoslib.scenarios.common import Ctx, pending_of, tracebacks, wait_for
from chaoslib.scenarios.kills import APP, HOLD, _log_lines, _submit
from chaoslib.verdict import Verdict
from chaoslib.world import Producer
from dispatcher import Dispatcher, DispatcherError, RedisFull, Task


def _reclaims_after(w: object, since: float) -> int:
    """Entries the reaper re-added after ``since`` (epoch s), from the workers' INFO lines."""
    total = 0
    for line in _log_lines(w, "reclaimed capability="):  # type: ignore[arg-type]
        stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        if stamp >= since:
            total += int(line.rsplit("count=", 1)[1])
    return total


# ---- 6: Redis kill -9 under load, restart from the AOF --------------------------------------------------------------


def redis_crash(ctx: Ctx, v: Verdict) -> None:
    down_s = ctx.scale(5, 10)
    with ctx.world("s6", aof=True) as w:
        procs = [w.start_worker(f"r{i}", concurrency=8) for i in range(2)]
        producer = Producer(w, "echo", 10_000_000, batch=20, deadline_s=down_s + 60)
        producer.start()
        time.sleep(3)
        before = producer.sent
        killed_at = time.time()
        w.redis.kill()
        time.sleep(down_s)
        w.redis.start()
        back_at = time.time()
        first = wait_for(
            lambda: min((e.t for e in ledger.executions(w.exec_path) if e.t > back_at), default=0.0), down_s + 30
        )
        time.sleep(3)
        producer.stop()
        tally, waited = w.wait_settled(["echo"], 120)
        v.tally = tally
        resume_s = (first - back_at) if first else float("inf")
        reclaims = _reclaims_after(w, back_at)
        v.timings = {"consumption_resumed_s": resume_s, "down_s": down_s, "drain_s": waited}
        v.figures = {
            "acked_before_kill": before,
            "acked_total": producer.sent,
            "producer_errors": dict(producer.errors),
            "reclaimed_after_restart": reclaims,
            "killed_at": killed_at,
        }
        v.check("0 acknowledged submits lost", tally.lost == 0, f"{tally.lost} e.g. {tally.lost_sample}")
        v.check("workers alive", all(p.poll() is None for p in procs), [p.poll() for p in procs])
        v.check("no crash", not tracebacks(w), tracebacks(w))
        v.check("consumption resumed <= 2 s after Redis is back", resume_s <= 2.0, f"{resume_s:.2f}s", timing=True)
        v.check("no reclaim storm of live workers' tasks", reclaims == 0, reclaims)
        v.check("producer got errors while down (not hangs)", sum(producer.errors.values()) > 0, producer.errors)


# ---- 12: maxmemory reached ----------------------------------------------------------------------------------------


def memory_full(ctx: Ctx, v: Verdict) -> None:
    with ctx.world("s12") as w:
        c = w.client()
        c.config_set("maxmemory-policy", "noeviction")
        procs = [w.start_worker(f"m{i}", ["sleep"], concurrency=4) for i in range(2)]
        queued = _submit(w, "sleep", [0.02] * 3000)
        time.sleep(1.0)
        used = int(c.info("memory")["used_memory"])
        c.config_set("maxmemory", used + 256 * 1024)
        full_at = time.time()
        full_error = ""
        accepted = []
        with Dispatcher(w.settings()) as d:
            for _ in range(2000):  # bounded: fill up until Redis refuses
                try:
                    accepted += [h.id for h in d.submit_many([Task(capability="sleep", payload=0) for _ in range(50)])]
                except RedisFull as e:
                    full_error = str(e)
                    break
                except DispatcherError as e:
                    full_error = f"{type(e).__name__}: {e}"
                    break
        if accepted:
            out = ledger.Appender(w.submit_path)
            out.write(accepted)
            out.close()
        refused_at = time.time()
        done_at_refusal = len({e.task_id for e in ledger.executions(w.exec_path)})
        stream = w.keys("sleep").stream
        len_at_refusal = int(c.xlen(stream))
        time.sleep(5)
        done_while_full = len({e.task_id for e in ledger.executions(w.exec_path)}) - done_at_refusal
        settled_while_full = len_at_refusal - int(c.xlen(stream))
        still_full = int(c.info("memory")["used_memory"]) > int(c.config_get("maxmemory")["maxmemory"]) - 64 * 1024
        reclaims_while_full = _reclaims_after(w, full_at)
        c.config_set("maxmemory", 0)
        raised_at = time.time()
        later = _submit(w, "sleep", [0] * 20)
        tally, waited = w.wait_settled(["sleep"], 120)
        v.tally = tally
        v.timings = {"full_after_s": refused_at - full_at, "drain_after_raise_s": waited}
        v.figures = {
            "submit_error": full_error,
            "accepted_before_full": len(accepted),
            "completed_in_5s_while_full": done_while_full,
            "settled_in_5s_while_full": settled_while_full,
            "still_at_limit_after_5s": still_full,
            "queued": len(queued),
            "reclaims_while_full": reclaims_while_full,
            "reclaims_after_raise": _reclaims_after(w, raised_at),
        }
        v.check("submit raises a clear 'Redis is full' error", "full" in full_error.lower(), full_error)
        v.check("workers keep draining while full", done_while_full > 0 and settled_while_full > 0, settled_while_full)
        v.check("no false reclaims while full", reclaims_while_full == 0, reclaims_while_full)
        v.check("recovery once memory is raised: 0 lost", tally.lost == 0 and bool(later), tally.lost)
        v.check("workers alive", all(p.poll() is None for p in procs), [p.poll() for p in procs])


# ---- 13: stream or group deleted under blocked workers ------------------------------------------------------------


def deleted(ctx: Ctx, v: Verdict) -> None:
    caps = ["echo", HOLD]
    with ctx.world("s13") as w:
        c = w.client()
        procs = [w.start_worker(f"d{i}", caps, concurrency=4, app=APP) for i in range(2)]
        keys = w.keys("echo")
        w.wait_settled(caps, 20, _submit(w, "echo", list(range(10))))
        time.sleep(0.5)  # every worker is now blocked in XREADGROUP
        timings = {}
        # a) the stream is deleted; a producer's XADD recreates it without the group.
        c.delete(keys.stream)
        t0 = time.monotonic()
        ids = _submit(w, "echo", list(range(20)))
        tally, timings["stream_deleted_recovered_s"] = w.wait_settled(caps, 30, ids)
        v.check("stream deleted: every task after it ran", tally.lost == 0, tally.lost)
        # b) the group is destroyed under blocked readers; tasks queued at once.
        time.sleep(0.5)
        c.xgroup_destroy(keys.stream, "workers")
        ids = _submit(w, "echo", list(range(20)))
        tally, timings["group_destroyed_recovered_s"] = w.wait_settled(caps, 30, ids)
        v.check("group destroyed: every task after it ran", tally.lost == 0, tally.lost)
        # c) the group is destroyed while tasks run: their pending entries vanish with it.
        hkeys = w.keys(HOLD)
        running = _submit(w, HOLD, [{"s": 1.0}] * 6)
        wait_for(lambda: pending_of(w, HOLD) >= 6, 10)
        c.xgroup_destroy(hkeys.stream, "workers")
        tally, timings["group_destroyed_running_recovered_s"] = w.wait_settled(caps, 60, running)
        v.check("group destroyed while running: 0 lost", tally.lost == 0, tally.lost)
        v.figures["reruns_after_group_destroyed_while_running"] = tally.duplicates
        del t0
        groups = {g["name"].decode(): g for g in c.xinfo_groups(keys.stream)}
        v.check("group recreated", "workers" in groups, list(groups))
        v.check("workers alive", all(p.poll() is None for p in procs), [p.poll() for p in procs])
        v.check("no crash", not tracebacks(w), tracebacks(w))
        v.tally = w.tally(caps)
        v.timings = timings
        v.notes.append(
            "a group destroyed under running tasks loses their pending entries; the settle is refused (lease lost)"
            " and the entries, still in the stream, are read again from 0: counted as duplicates, none lost"
        )


# ---- 14: memory bound ---------------------------------------------------------------------------------------------


def memory_bound(ctx: Ctx, v: Verdict) -> None:
    total = ctx.scale(20_000, 1_000_000)
    result_ttl_s = 10
    with ctx.world("s14") as w:
        c = w.client()
        extra = ["--result-ttl-s", str(result_ttl_s)]
        procs = [w.start_worker(f"b{i}", ["echo"], concurrency=32, extra=extra) for i in range(2)]
        _submit(w, "echo", [0])
        time.sleep(1)
        c.execute_command("MEMORY", "PURGE")
        start_mb = int(c.info("memory")["used_memory"]) / 1e6
        peak_len = 0
        producer = Producer(w, "echo", total, batch=500, deadline_s=3600, result_ttl_s=result_ttl_s)
        t0 = time.monotonic()
        producer.start()
        while producer.is_alive():
            peak_len = max(peak_len, int(c.xlen(w.keys("echo").stream)))
            time.sleep(1)
        tally, _ = w.wait_settled(["echo"], 3600)
        elapsed = time.monotonic() - t0
        time.sleep(result_ttl_s + 2)
        wait_for(lambda: int(c.dbsize()) < 100, 60, 1.0)  # results expire (active expiry)
        c.execute_command("MEMORY", "PURGE")
        end_mb = int(c.info("memory")["used_memory"]) / 1e6
        v.tally = tally
        v.timings = {"elapsed_s": elapsed}
        v.figures = {
            "tasks": total,
            "used_memory_start_mb": round(start_mb, 2),
            "used_memory_end_mb": round(end_mb, 2),
            "peak_stream_len": peak_len,
            "throughput_tasks_per_s": round(tally.completed / elapsed, 1),
            "keys_left": int(c.dbsize()),
        }
        v.check("0 lost (nothing pending was ever trimmed)", tally.lost == 0, tally.lost)
        v.check("stream length 0", c.xlen(w.keys("echo").stream) == 0, c.xlen(w.keys("echo").stream))
        v.check("PEL 0", pending_of(w, "echo") == 0, pending_of(w, "echo"))
        v.check("used_memory back within 5 MB of start", end_mb - start_mb < 5, f"{start_mb:.1f} -> {end_mb:.1f} MB")
        v.check("workers alive", all(p.poll() is None for p in procs), "")

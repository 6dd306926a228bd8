"""Scenarios about workers dying or pausing: 1 kill storm, 2 exact kill points, 3 redelivery time, 4 long task,
5 zombie, 15 graceful shutdown."""

from __future__ import annotations

import signal
import time
from collections import Counter

from chaoslib import ledger
from chaoslib.scenarios.common import Ctx, pending_of, tracebacks, wait_exit, wait_for
from chaoslib.verdict import Verdict, summary
from chaoslib.world import Producer, World
from dispatcher import Dispatcher, Task
from dispatcher.store import codec

APP = "chaoslib.handlers"
HOLD = "chaos.hold"


def _submit(world: World, capability: str, payloads: list[object], **options: object) -> list[str]:
    """Submit and record in the producer ledger; returns the ids."""
    with Dispatcher(world.settings()) as d:
        handles = d.submit_many([Task(capability=capability, payload=p, **options) for p in payloads])  # type: ignore[arg-type]
    ids = [h.id for h in handles]
    out = ledger.Appender(world.submit_path)
    out.write(ids)
    out.close()
    return ids


def _runs_env(world: World) -> dict[str, str]:
    return {"CHAOS_RUNS": str(world.runs_path)}


# ---- 2: exact kill points -----------------------------------------------------------------------------------------


def kill_points(ctx: Ctx, v: Verdict) -> None:
    """Three sub-runs, one per fault point, each with exact expected outcomes."""
    n = ctx.scale(20, 100)
    bound_s = ctx.timers.redelivery_bound_s + 30
    # after_read: the victim dies with read-but-unstarted tasks: nothing ran, so nothing may run twice.
    with ctx.world("s2-after-read") as w:
        ids = _submit(w, "echo", list(range(n)))
        victim = w.start_worker("victim", fault="after_read", wait=False)
        code = wait_exit(victim, 20)
        held = pending_of(w, "echo", "victim")
        w.start_worker("rescuer")
        tally, _ = w.wait_settled(["echo"], bound_s, ids)
        v.check("after_read: victim exited 137", code == 137, code)
        v.check("after_read: victim held tasks", held > 0, held)
        v.check("after_read: 0 lost", tally.lost == 0, tally.lost)
        v.check("after_read: 0 duplicates", tally.duplicates == 0, tally.duplicates)
        v.figures["after_read"] = {"held_by_victim": held, **tally.as_dict()}
        total = tally
    # after_handler: one task finished (ledger line written), its result never recorded: exactly one re-run.
    with ctx.world("s2-after-handler") as w:
        ids = _submit(w, "echo", list(range(n)))
        victim = w.start_worker("victim", concurrency=1, fault="after_handler", wait=False)
        code = wait_exit(victim, 20)
        w.start_worker("rescuer")
        tally, _ = w.wait_settled(["echo"], bound_s, ids)
        runs = Counter(e.task_id for e in ledger.executions(w.exec_path))
        twice = [t for t, k in runs.items() if k > 1]
        v.check("after_handler: victim exited 137", code == 137, code)
        v.check("after_handler: 0 lost", tally.lost == 0, tally.lost)
        v.check("after_handler: exactly one re-run", tally.duplicates == 1 and len(twice) == 1, tally.duplicates)
        v.figures["after_handler"] = tally.as_dict()
        total.submitted += tally.submitted
        total.completed += tally.completed
        total.duplicates += tally.duplicates
    # after_reclaim_read: the reaper dies between reading a dead worker's entries and re-adding them.
    with ctx.world("s2-after-reclaim-read") as w:
        ids = _submit(w, "echo", list(range(n)))
        victim = w.start_worker("victim", fault="after_read", wait=False)
        wait_exit(victim, 20)
        held = pending_of(w, "echo", "victim")
        reaper = w.start_worker("reaper", fault="after_reclaim_read", wait=False)
        code = wait_exit(reaper, bound_s)
        still_held = pending_of(w, "echo", "victim")
        w.start_worker("rescuer")
        tally, _ = w.wait_settled(["echo"], bound_s, ids)
        v.check("after_reclaim_read: reaper exited 137", code == 137, code)
        v.check("after_reclaim_read: entries still pending after reaper died", still_held == held, (still_held, held))
        v.check("after_reclaim_read: 0 lost", tally.lost == 0, tally.lost)
        v.figures["after_reclaim_read"] = {"held_by_victim": held, **tally.as_dict()}
        total.submitted += tally.submitted
        total.completed += tally.completed
        total.duplicates += tally.duplicates
        total.lost += tally.lost
    v.tally = total


# ---- 3: detection to redelivery ------------------------------------------------------------------------------------


def redelivery(ctx: Ctx, v: Verdict) -> None:
    """Kill a worker holding >= 10 tasks; time until each is run again elsewhere. Repeated runs."""
    rounds = ctx.scale(3, 10)
    held_n = 12
    bound_s = ctx.timers.redelivery_bound_s
    per_round_max: list[float] = []
    per_task: list[float] = []
    with ctx.world("s3") as w:
        for r in range(rounds):
            name = f"victim{r}"
            victim = w.start_worker(name, [HOLD], concurrency=held_n, app=APP)
            ids = _submit(w, HOLD, [{"s": 600}] * held_n)
            held = wait_for(lambda n=name: pending_of(w, HOLD, n) >= held_n, 20)
            # Started only now, so that the victim holds every task (a blocked reader would take some).
            rescuer = w.start_worker(f"rescuer{r}", [HOLD], concurrency=held_n, app=APP)
            # A fresh Redis makes the reaper wait 1.5 TTL on purpose (no reclaim storm after a restart).
            wait_for(lambda: w.uptime_s() >= ctx.timers.heartbeat_ttl_s * 2, 10)
            killed_at = time.time()
            w.procs.kill(victim)
            tally, _ = w.wait_settled([HOLD], bound_s + 30, ids)
            times = [e.t - killed_at for e in ledger.executions(w.exec_path) if e.task_id in set(ids)]
            per_task += times
            per_round_max.append(max(times) if times else float("inf"))
            v.check(f"round {r}: victim held >= 10", bool(held), pending_of(w, HOLD, name))
            v.check(f"round {r}: 0 lost", tally.lost == 0, tally.lost)
            w.procs.stop(rescuer)
        v.tally = w.tally([HOLD])
    s = summary(per_round_max)
    v.timings = {"redeliver_p50_s": s["p50"], "redeliver_max_s": s["max"], "bound_s": bound_s}
    v.figures = {
        "rounds": rounds,
        "tasks_per_round": held_n,
        "per_round_max_s": [round(x, 3) for x in per_round_max],
        "per_task": {k: round(x, 3) for k, x in summary(per_task).items()},
    }
    v.check(
        "all re-delivered within TTL + reaper + 1 s",
        s["max"] <= bound_s,
        f"max={s['max']:.2f}s bound={bound_s}",
        timing=True,
    )


# ---- 1: kill storm -------------------------------------------------------------------------------------------------


def kill_storm(ctx: Ctx, v: Verdict) -> None:
    """4 workers, SIGKILL a random one every interval and start a new one, while a producer submits."""
    total = ctx.scale(3000, 100_000)
    concurrency = 8
    interval_s = 2.0
    deadline_s = ctx.scale(150, 900)
    with ctx.world("s1") as w:
        # A random kill every 2 s can catch the same task's holder three times (seen once in a CI run: one task
        # dead-lettered as poison). That is the poison rule working, not a loss; this scenario is about loss, so
        # the storm allows more deliveries than the default 3. Scenario 11 covers poison.
        extra = ("--max-deliveries", "10")
        live = {f"w{i}": w.start_worker(f"w{i}", ["sleep"], concurrency=concurrency, extra=extra) for i in range(4)}
        # Paced in the quick tier so that the storm lasts long enough to kill several times.
        # ``sleep`` 20 ms: a kill always catches tasks in flight (instant tasks would rarely be held).
        producer = Producer(
            w, "sleep", total, batch=ctx.scale(20, 200), pause_s=ctx.scale(0.1, 0.0), payload=lambda i: 0.02
        )
        producer.start()
        started = time.monotonic()
        kills = 0
        spawned = 4
        end = started + deadline_s
        while time.monotonic() < end:
            time.sleep(interval_s)
            done = len({e.task_id for e in ledger.executions(w.exec_path)})
            if not producer.is_alive() and done >= producer.sent:
                break
            victim = w.rng.choice(sorted(live))
            w.procs.kill(live.pop(victim))
            kills += 1
            name = f"w{spawned}"
            spawned += 1
            live[name] = w.start_worker(name, ["sleep"], concurrency=concurrency, extra=extra, wait=False)
        producer.stop()
        tally, waited = w.wait_settled(["sleep"], ctx.timers.redelivery_bound_s + 60)
        reclaimed = sum(int(line.rsplit("count=", 1)[1]) for line in _log_lines(w, "reclaimed capability="))
        v.tally = tally
        elapsed = time.monotonic() - started
        bound = kills * concurrency
        v.timings = {"elapsed_s": elapsed, "drain_after_storm_s": waited}
        v.figures = {
            "kills": kills,
            "workers": 4,
            "concurrency": concurrency,
            "dup_bound_kills_x_concurrency": bound,
            "producer_errors": dict(producer.errors),
            "reclaimed_by_reaper": reclaimed,
            "throughput_tasks_per_s": round(tally.completed / elapsed, 1) if elapsed else 0,
        }
        v.check("producer submitted everything", producer.sent == total, producer.sent)
        v.check("0 lost", tally.lost == 0, f"{tally.lost} e.g. {tally.lost_sample}")
        v.check("kills happened", kills >= 3, kills)
        v.check("duplicates <= kills x concurrency", tally.duplicates <= bound, f"{tally.duplicates} > {bound}")
        v.check("no dead letters", not tally.dead, dict(tally.dead))


# ---- 15: graceful shutdown -----------------------------------------------------------------------------------------


def graceful(ctx: Ctx, v: Verdict) -> None:
    """SIGTERM a busy worker: tasks that can finish within grace do; the rest go back; exit 0 in time."""
    grace_s = ctx.timers.grace_s
    short_n, long_n = 6, 2
    with ctx.world("s15") as w:
        busy = w.start_worker("busy", [HOLD], concurrency=short_n + long_n, app=APP)
        payloads: list[object] = [{"s": 1.0}] * short_n + [{"s": grace_s + 30}] * long_n
        ids = _submit(w, HOLD, payloads)
        wait_for(lambda: pending_of(w, HOLD, "busy") >= short_n + long_n, 20)
        # More work queued behind it that the stopping worker must not start.
        backlog = _submit(w, HOLD, [{"s": 0}] * 20)
        sent_at = time.monotonic()
        w.procs.signal(busy, signal.SIGTERM)
        code = wait_exit(busy, grace_s + 10)
        exit_s = time.monotonic() - sent_at
        finished_by_busy = {e.task_id for e in ledger.executions(w.exec_path) if e.pid == busy.pid}
        w.start_worker("after", [HOLD], concurrency=8, app=APP)
        tally, _ = w.wait_settled([HOLD], 60, ids + backlog)
        v.tally = tally
        v.timings = {"exit_s": exit_s, "limit_s": grace_s + 2}
        v.figures = {"finished_within_grace": len(finished_by_busy), "handed_back": long_n}
        v.check("exit code 0", code == 0, code)
        v.check("exit within grace + 2 s", exit_s <= grace_s + 2, f"{exit_s:.2f}s", timing=True)
        v.check("short tasks finished within grace", len(finished_by_busy) == short_n, len(finished_by_busy))
        v.check("0 lost", tally.lost == 0, tally.lost)
        v.check("no duplicates", tally.duplicates == 0, tally.duplicates)


# ---- 4: long task on a live worker --------------------------------------------------------------------------------


def long_task(ctx: Ctx, v: Verdict) -> None:
    """A task running 5 x the heartbeat TTL (async sleep, and a CPU-bound sync one) is never reclaimed."""
    run_s = 5 * ctx.timers.heartbeat_ttl_s
    with ctx.world("s4") as w:
        env = _runs_env(w)
        w.start_worker("long", [HOLD, "chaos.spin"], concurrency=2, app=APP, env=env)
        ids = _submit(w, HOLD, [{"s": run_s}]) + _submit(w, "chaos.spin", [{"s": run_s}])
        w.start_worker("other", [HOLD, "chaos.spin"], concurrency=2, app=APP, env=env)
        tally, waited = w.wait_settled([HOLD, "chaos.spin"], run_s + 30, ids)
        starts = ledger.runs(w.runs_path)
        v.tally = tally
        v.timings = {"task_s": run_s, "settled_after_s": waited}
        v.check("0 lost", tally.lost == 0, tally.lost)
        v.check("each ran exactly once", tally.duplicates == 0 and all(starts[i] == 1 for i in ids), dict(starts))
        v.check("no reclaim logged", not _log_lines(w, "reclaimed capability="), _log_lines(w, "reclaimed"))


def _log_lines(w: World, needle: str) -> list[str]:
    out = []
    for path in w.procs.logs.values():
        if path.exists():
            out += [line for line in path.read_text(errors="replace").splitlines() if needle in line]
    return out


# ---- 5: zombie -----------------------------------------------------------------------------------------------------


def zombie(ctx: Ctx, v: Verdict) -> None:
    """SIGSTOP a worker past its lease, SIGCONT it: its tasks went elsewhere, its late results are refused."""
    held_n = 5
    hold_s = 2.0
    pause_s = ctx.timers.redelivery_bound_s + 2
    with ctx.world("s5") as w:
        z = w.start_worker("zombie", [HOLD], concurrency=held_n, app=APP)
        ids = _submit(w, HOLD, [{"s": hold_s}] * held_n)
        wait_for(lambda: pending_of(w, HOLD, "zombie") >= held_n, 20)
        w.procs.signal(z, signal.SIGSTOP)
        stopped_at = time.monotonic()
        w.start_worker("rescuer", [HOLD], concurrency=held_n, app=APP)
        tally, _ = w.wait_settled([HOLD], pause_s + 30, ids)
        redelivered_s = time.monotonic() - stopped_at
        time.sleep(max(0.0, pause_s - redelivered_s))
        w.procs.signal(z, signal.SIGCONT)
        resumed_at = time.time()
        # Its handlers' sleeps are long over: they finish at once and try to settle.
        wait_for(lambda: len(_log_lines(w, "lease lost")) >= held_n, 15)
        lease_lost = len(_log_lines(w, "lease lost"))
        c = w.client()
        winners = []
        for task_id in ids:
            raw = c.get(w.keys(HOLD).result(task_id))
            winners.append(codec.decode_outcome(raw, 1 << 20).worker if raw else None)
        # The zombie carries on: new work reaches it.
        later = _submit(w, HOLD, [{"s": 0.2}] * 20)
        w.wait_settled([HOLD], 30, later)
        zombie_later = [e for e in ledger.executions(w.exec_path) if e.pid == z.pid and e.t > resumed_at]
        zombie_late_runs = [e for e in zombie_later if e.task_id in set(ids)]
        v.tally = w.tally([HOLD])
        v.timings = {"redelivered_after_stop_s": redelivered_s, "paused_s": pause_s}
        v.figures = {
            "lease_lost_logged": lease_lost,
            "zombie_late_runs": len(zombie_late_runs),
            "result_writers": dict(Counter(str(x) for x in winners)),
        }
        v.check("tasks re-delivered while the zombie slept", tally.lost == 0, tally.lost)
        v.check("late results refused (lease lost), counted", lease_lost == held_n, lease_lost)
        v.check("one result each, by the rescuer", all(x == "rescuer" for x in winners), winners)
        v.check("zombie alive and working again", z.poll() is None and len(zombie_later) > len(zombie_late_runs), "")
        v.check("no crash", not tracebacks(w), tracebacks(w))
        v.notes.append("duplicates here are the zombie's late runs: its results were refused, not stored")

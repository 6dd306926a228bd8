"""Scenarios about hostile input: 10 malformed entries, 11 poison tasks."""

from __future__ import annotations

import time
from collections import Counter

import msgpack

from chaoslib import ledger
from chaoslib.scenarios.common import Ctx, pending_of, tracebacks
from chaoslib.scenarios.kills import APP, _submit
from chaoslib.verdict import Verdict
from chaoslib.world import World
from dispatcher.store import codec

MAX_BYTES = 4096
"""The workers of scenario 10 run with ``--max-payload-bytes 4096`` so an oversized entry stays cheap."""


def _task(**body: object) -> bytes:
    return codec.pack({"id": "bad-" + str(time.monotonic_ns()), "payload": 1, "submitted_at": time.time(), **body})


def malformed_kinds() -> dict[str, dict[bytes, bytes]]:
    """Every kind of malformed entry the issue lists (and a few more), as raw stream fields."""
    good = _task()

    def entry(blob: bytes, **extra: bytes) -> dict[bytes, bytes]:
        return {
            b"v": b"1",
            b"task": blob,
            b"attempt": b"1",
            b"reclaims": b"0",
            **{k.encode(): x for k, x in extra.items()},
        }

    invalid_utf8 = b"\x83\xa2id\xa4\xff\xfe\xfd\xfc\xa7payload\x01\xacsubmitted_at\x00"
    return {
        "not_msgpack": entry(b"\xc1\xc1 this is not msgpack"),
        "truncated": entry(good[:-4]),
        "trailing_garbage": entry(good + b"\x00garbage"),
        "missing_task_field": {b"v": b"1", b"attempt": b"1"},
        "missing_version": {b"task": good},
        "missing_id": entry(codec.pack({"payload": 1, "submitted_at": 0})),
        "wrong_type_id": entry(codec.pack({"id": 42, "payload": 1})),
        "wrong_type_options": entry(_task(max_retries="three", headers=[1, 2])),
        "wrong_type_attempt": entry(good, attempt=b"first"),
        "task_not_a_map": entry(codec.pack([1, 2, 3])),
        "unknown_version": {b"v": b"99", b"task": good},
        "huge_array_header": entry(b"\xdd\xff\xff\xff\xff"),
        "huge_map_header": entry(b"\xdf\xff\xff\xff\xff"),
        "huge_str_header": entry(b"\xdb\xff\xff\xff\xff"),
        "deep_nesting": entry(b"\x91" * 3000 + b"\xc0"),
        "moderate_nesting_over_limit": entry(_task(payload=_nest(100))),
        "invalid_utf8": entry(invalid_utf8),
        "unknown_ext_type": entry(_task(payload=msgpack.ExtType(42, b"x"))),
        "timestamp_ext": entry(msgpack.packb({"id": "ts", "payload": msgpack.Timestamp(1, 0)}, use_bin_type=True)),
        "non_string_map_key": entry(codec.pack({1: 2})),
        "unknown_task_field": entry(_task(evil="__import__('os')")),
        "over_size_limit": entry(_task(payload="x" * (MAX_BYTES + 100))),
        "empty_entry_blob": entry(b""),
    }


def _nest(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def _inject(
    w: World, capability: str, kinds: dict[str, dict[bytes, bytes]], good_n: int
) -> tuple[dict[str, str], list[str]]:
    """XADD bad entries interleaved with good tasks; returns bad entry ids by kind and the good task ids."""
    c = w.client()
    stream = w.keys(capability).stream
    bad: dict[str, str] = {}
    good: list[str] = []
    per = max(1, good_n // len(kinds))
    for kind, fields in kinds.items():
        good += _submit(w, capability, list(range(per)))
        bad[kind] = c.xadd(stream, fields).decode()  # type: ignore[arg-type,union-attr]
    return bad, good


def _check_phase(v: Verdict, w: World, phase: str, bad: dict[str, str], good: list[str], t0: float) -> float:
    letters = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        letters = {d.get("entry_id"): d for d in w.dead_letters(["echo"])}
        if all(e in letters for e in bad.values()):
            break
        time.sleep(0.02)
    took = time.monotonic() - t0
    missing = [k for k, e in bad.items() if e not in letters]
    wrong = {
        k: letters[e].get("reason")
        for k, e in bad.items()
        if e in letters and letters[e].get("reason") != "decode_error"
    }
    retried = {
        k: letters[e].get("attempt")
        for k, e in bad.items()
        if e in letters and letters[e].get("attempt") not in ("0", "1")
    }
    v.check(f"{phase}: every kind dead-lettered", not missing, missing)
    v.check(f"{phase}: reason decode_error", not wrong, wrong)
    v.check(f"{phase}: 0 retries spent", not retried, retried)
    tally, _ = w.wait_settled(["echo"], 20, good)
    v.check(
        f"{phase}: good tasks unaffected", tally.lost == 0 and tally.duplicates == 0 and not tally.dead, tally.as_dict()
    )
    return took


def malformed(ctx: Ctx, v: Verdict) -> None:
    """Raw XADDs of every malformed kind, before a worker starts (one read) and under a live worker."""
    kinds = malformed_kinds()
    with ctx.world("s10") as w:
        bad_a, good_a = _inject(w, "echo", kinds, 40)
        worker = w.start_worker("reader", concurrency=128, extra=["--max-payload-bytes", str(MAX_BYTES)])
        took_a = _check_phase(v, w, "queued before start", bad_a, good_a, time.monotonic())
        t0 = time.monotonic()
        bad_b, good_b = _inject(w, "echo", malformed_kinds(), 40)
        took_b = _check_phase(v, w, "injected live", bad_b, good_b, t0)
        letters = [d for d in w.dead_letters(["echo"]) if d.get("reason") == "decode_error"]
        v.check("exactly one dead letter per bad entry", len(letters) == 2 * len(kinds), len(letters))
        v.check("nothing left pending", pending_of(w, "echo") == 0, pending_of(w, "echo"))
        v.check("worker alive", worker.poll() is None, worker.poll())
        v.check("no crash", not tracebacks(w), tracebacks(w))
        v.tally = w.tally(["echo"])
        v.tally.dead["decode_error"] = len(letters)
        v.timings = {"all_buried_after_start_s": took_a, "all_buried_live_s": took_b}
        v.figures = {"kinds": sorted(kinds), "bad_entries": 2 * len(kinds)}
        v.notes.append("bad entries have no submit ledger line: the 'dead' column counts them by entry id")


def poison(ctx: Ctx, v: Verdict) -> None:
    """A task that kills its worker runs exactly max_deliveries times, then is buried as ``poison``."""
    max_deliveries = 3
    caps = ["chaos.poison", "chaos.balloon", "echo"]
    with ctx.world("s11") as w:
        env = {"CHAOS_RUNS": str(w.runs_path)}
        extra = ["--max-deliveries", str(max_deliveries)]
        fleet = {f"p{i}": w.start_worker(f"p{i}", caps, concurrency=4, app=APP, env=env, extra=extra) for i in range(2)}
        killer = _submit(w, "chaos.poison", [None])
        balloon = _submit(w, "chaos.balloon", [None], max_retries=1)
        good = _submit(w, "echo", list(range(50)))
        restarts = 0
        deadline = time.monotonic() + 20 * ctx.timers.redelivery_bound_s + 30
        while time.monotonic() < deadline and restarts < 3 * max_deliveries:
            letters = {d.get("task_id"): d.get("reason") for d in w.dead_letters(caps)}
            if killer[0] in letters and balloon[0] in letters:
                break
            for name, proc in list(fleet.items()):
                if proc.poll() is not None:  # the supervisor's job: start a replacement
                    restarts += 1
                    new = f"p{len(fleet) + restarts}"
                    del fleet[name]
                    fleet[new] = w.start_worker(new, caps, concurrency=4, app=APP, env=env, extra=extra, wait=False)
            time.sleep(0.1)
        runs = ledger.runs(w.runs_path)
        letters = {d.get("task_id"): d.get("reason") for d in w.dead_letters(caps)}
        tally, _ = w.wait_settled(["echo"], 30, good)
        v.tally = w.tally(caps)
        v.figures = {
            "poison_runs": runs[killer[0]],
            "worker_restarts": restarts,
            "balloon_runs": runs[balloon[0]],
            "balloon_reason": letters.get(balloon[0]),
            "reasons": dict(Counter(letters.values())),
        }
        v.check("os._exit task ran exactly max_deliveries times", runs[killer[0]] == max_deliveries, runs[killer[0]])
        v.check("then buried as poison", letters.get(killer[0]) == "poison", letters.get(killer[0]))
        v.check("others unaffected: 0 lost", tally.lost == 0, tally.lost)
        v.check("others unaffected: none dead", not tally.dead, dict(tally.dead))
        v.check(
            "memory blow-up buried within bounded runs",
            letters.get(balloon[0]) in ("max_retries", "poison") and 1 <= runs[balloon[0]] <= max_deliveries,
            (letters.get(balloon[0]), runs[balloon[0]]),
        )
        v.notes.append(
            "memory blow-up under RLIMIT_AS: CPython raises MemoryError in the handler (a failure: retried, then"
            " max_retries); the limit is process-wide, so the event loop may hit MemoryError too and the worker"
            " exits, and then the task counts deliveries like any poison task"
        )

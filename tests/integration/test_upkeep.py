"""Fleet upkeep: the delayed-task mover keeps its own schedule while the reaper works through a huge pending list."""

from __future__ import annotations

import time

import redis
from helpers import wait_until

from dispatcher import Dispatcher, Settings, Task
from dispatcher.fleet.upkeep import Upkeep
from dispatcher.store import codec, wire
from dispatcher.store.keys import GROUP, KeySpace

PEL = 100_000
LATE_BOUND_S = 0.5


def dead_consumer_with_pending(client: redis.Redis, settings: Settings, capability: str, n: int) -> None:
    """``n`` tasks delivered to a consumer that has no heartbeat: the reaper's work."""
    ks = KeySpace(settings.prefix)
    keys = ks.capability(capability)
    client.sadd(ks.capabilities, capability)
    client.xgroup_create(keys.stream, GROUP, "0", mkstream=True)
    blob = codec.encode_task(Task(capability=capability, payload="x"), 1 << 20)
    fields = codec.entry_fields(blob)
    entry = dict(zip(fields[::2], fields[1::2], strict=True))
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(2000, n - start)):
            pipe.xadd(keys.stream, entry)  # type: ignore[arg-type]
        pipe.execute()
        client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=2000)


def test_a_100k_entry_reaper_pass_does_not_delay_a_due_retry(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis
) -> None:
    bulk = KeySpace(settings.prefix).capability("bulk")
    timed = KeySpace(settings.prefix).capability("timed")
    dead_consumer_with_pending(client, settings, "bulk", PEL)
    upkeep = Upkeep(settings, "upkeep-test")
    upkeep.start()
    try:
        wait_until(lambda: client.xpending(bulk.stream, GROUP)["pending"] < PEL, 60, message="the reaper pass began")
        task = Task(capability="timed", payload=None)
        due_at = time.time() + 1.0
        dispatcher.submit(task.model_copy(update={"not_before": due_at}))
        assert isinstance(wire.place(client.hget(timed.index, task.id)), wire.Delayed)

        def moved() -> float | None:
            place = wire.place(client.hget(timed.index, task.id))
            return time.time() if isinstance(place, str) else None

        moved_at = wait_until(moved, 30, interval_s=0.01, message="the delayed task was moved")
        still_reaping = client.xpending(bulk.stream, GROUP)["pending"]
        late_s = moved_at - due_at
        print(f"\ndue task moved {late_s:.3f} s after its due time; {still_reaping} entries left to reclaim")
        assert late_s <= LATE_BOUND_S, f"the mover waited for the reaper: {late_s:.2f} s late"
        assert still_reaping > 0, "the reaper pass ended before the task was due: the test did not overlap them"
    finally:
        upkeep.stop()

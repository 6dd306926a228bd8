"""A foreign producer, written from docs/wire-format.md with nothing but redis-py and msgpack.

The producing and reading parts below must not use ``dispatcher``: they check that the document alone is
enough to submit a task with a plain XADD and read its result. Fixtures come from ``tests/conftest.py``.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from helpers import keyspace, wait_until, worker_log

DEADLINE_S = 30.0
RECHECK_S = 5.0  # the document: re-GET the result at least every few seconds while waiting

# Section 4 of the document: XADD and index in one script.
SUBMIT_LUA = """
local id = redis.call('XADD', KEYS[1], '*', 'v', '1', 'task', ARGV[2], 'attempt', '1', 'reclaims', '0')
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
"""


def cap_key(prefix: str, capability: str, name: str) -> str:
    return f"{prefix}:{{{capability}}}:{name}"


def subscribe(client: redis.Redis, channel: str) -> Any:
    """SUBSCRIBE and read the confirmation: only then is a settlement announced to us."""
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "subscribe":
            return pubsub
        assert time.monotonic() < deadline, f"no subscribe confirmation for {channel}"


def wait_for_result(client: redis.Redis, pubsub: Any, result_key: str) -> tuple[bytes, list[bytes]]:
    """GET, then wait for notifications until the record is there; returns it and the messages seen."""
    deadline = time.monotonic() + DEADLINE_S
    seen: list[bytes] = []
    record = client.get(result_key)
    while record is None:
        left = deadline - time.monotonic()
        assert left > 0, f"{result_key} not set within {DEADLINE_S} s"
        message = pubsub.get_message(timeout=min(left, RECHECK_S))
        if message is not None and message["type"] == "message":
            seen.append(message["data"])
        record = client.get(result_key)
    return record, seen


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def test_foreign_producer_xadd_and_result(redis_server: Any, prefix: str, run_worker: Any) -> None:
    client = redis_server.client()
    capability = "echo"
    task_id = uuid.uuid4().hex
    stream = cap_key(prefix, capability, "stream")
    index = cap_key(prefix, capability, "tasks")
    result_key = cap_key(prefix, capability, f"result:{task_id}")
    channel = cap_key(prefix, capability, f"done:{task_id}")
    payload = {"text": "héllo", "blob": b"\x00\xff", "n": 7, "x": 1.5, "items": [1, None, True], "nested": {"k": []}}
    blob = msgpack.packb({"id": task_id, "payload": payload, "submitted_at": time.time()}, use_bin_type=True)

    pubsub = subscribe(client, channel)
    try:
        entry_id = client.eval(SUBMIT_LUA, 2, stream, index, task_id, blob)
        client.sadd(f"{prefix}:capabilities", capability)
        assert client.hget(index, task_id) == entry_id
        assert client.get(result_key) is None  # no worker yet: the notification below is what wakes us

        worker = run_worker("--capability", capability, "--concurrency", "2")
        try:
            record, seen = wait_for_result(client, pubsub, result_key)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{worker_log(worker)}") from None
    finally:
        pubsub.close()

    assert seen in ([], [record]), "the announcement carries the stored record itself"
    result = unpack(record)
    assert result["status"] == "succeeded", result
    assert result["value"] == payload
    assert result["attempt"] == 1
    assert isinstance(result["worker"], str) and result["worker"]
    assert isinstance(result["finished_at"], float) and result["finished_at"] <= time.time() + 1
    assert "error" not in result and "reason" not in result
    assert 0 < client.pttl(result_key) <= 24 * 3600 * 1000

    # Settled: entry deleted, index field removed, nothing pending, nothing dead.
    assert client.xlen(stream) == 0
    assert not client.hexists(index, task_id)
    assert client.xpending(stream, "workers")["pending"] == 0
    assert not client.exists(cap_key(prefix, capability, "dead"))

    # Every key under the prefix is one the document lists.
    documented = re.compile(
        rf"^{re.escape(prefix)}:("
        r"capabilities|workers|limits|reaper:lease|promoter:lease|admitter:lease|\{limit\.[a-z0-9_.\-]{1,64}\}|"
        r"\{[a-z0-9_.\-]{1,64}\}:(stream|tasks|delayed|ready|limited|keyed|tenants|weights|caps|fair:.+|permits:.+|dead|tput|paused|result:.+|idem:.+|hb:.+)"
        r")$"
    )
    undocumented = {k for k in keyspace(client, prefix) if not documented.match(k)}
    assert not undocumented, f"keys the wire format does not document: {undocumented}"


def test_unknown_version_is_dead_lettered(redis_server: Any, prefix: str, run_worker: Any) -> None:
    client = redis_server.client()
    capability = "echo"
    task_id = uuid.uuid4().hex
    stream = cap_key(prefix, capability, "stream")
    dead = cap_key(prefix, capability, "dead")
    blob = msgpack.packb({"id": task_id, "payload": "from the future", "submitted_at": time.time()}, use_bin_type=True)

    entry_id = client.xadd(stream, {"v": "99", "task": blob, "attempt": "1", "reclaims": "0"})
    worker = run_worker("--capability", capability, "--concurrency", "2")

    def dead_letters() -> list[tuple[bytes, dict[bytes, bytes]]]:
        assert worker.poll() is None, f"worker exited with {worker.returncode}\n{worker_log(worker)}"
        return client.xrange(dead)  # type: ignore[no-any-return]

    letters = wait_until(dead_letters, timeout_s=DEADLINE_S, interval_s=0.1, message="a dead letter")
    assert len(letters) == 1
    _, fields = letters[0]
    assert fields[b"reason"] == b"decode_error", fields
    assert fields[b"v"] == b"1"
    assert fields[b"entry_id"] == entry_id  # how a producer finds its undecodable task (section 8)
    assert fields[b"task_id"] == task_id.encode()  # the id inside could be read, so it is kept
    error = unpack(fields[b"error"])
    assert error["type"] and "version" in error["message"], error
    assert unpack(fields[b"raw"])[b"v"] == b"99"

    # Never run, never left behind: the work entry is acked and deleted. The id was readable, so a producer
    # waiting on this task is told: its result says dead with reason decode_error.
    wait_until(lambda: client.xlen(stream) == 0, timeout_s=DEADLINE_S, message="the entry to leave the stream")
    assert client.xpending(stream, "workers")["pending"] == 0
    record = unpack(client.get(cap_key(prefix, capability, f"result:{task_id}")))
    assert record["status"] == "dead" and record["reason"] == "decode_error", record


@pytest.mark.parametrize(
    "fields",
    [
        {"v": "1", "task": b"\xc1", "attempt": "1", "reclaims": "0"},  # 0xc1 is never valid msgpack
        {"v": "1", "attempt": "1", "reclaims": "0"},  # no task
    ],
    ids=["bad-msgpack", "no-task"],
)
def test_undecodable_entry_is_dead_lettered(
    redis_server: Any, prefix: str, run_worker: Any, fields: dict[str, Any]
) -> None:
    client = redis_server.client()
    stream = cap_key(prefix, "echo", "stream")
    dead = cap_key(prefix, "echo", "dead")
    client.xadd(stream, fields)
    worker = run_worker("--capability", "echo", "--concurrency", "2")

    def dead_letters() -> list[tuple[bytes, dict[bytes, bytes]]]:
        assert worker.poll() is None, f"worker exited with {worker.returncode}\n{worker_log(worker)}"
        return client.xrange(dead)  # type: ignore[no-any-return]

    letters = wait_until(dead_letters, timeout_s=DEADLINE_S, interval_s=0.1, message="a dead letter")
    assert [f[b"reason"] for _, f in letters] == [b"decode_error"]
    wait_until(lambda: client.xlen(stream) == 0, timeout_s=DEADLINE_S, message="the entry to leave the stream")


def test_state_written_by_the_previous_version_is_served(redis_server: Any, prefix: str, run_worker: Any) -> None:
    """Entries, delayed records and dead letters exactly as version 0.1.0 wrote them (its submit.lua, retry.lua
    and bury.lua) are served by today's worker and requeued by today's ``dlq requeue``."""
    client = redis_server.client()
    capability = "echo"
    stream, index = cap_key(prefix, capability, "stream"), cap_key(prefix, capability, "tasks")
    delayed, dead = cap_key(prefix, capability, "delayed"), cap_key(prefix, capability, "dead")

    def blob_of(task_id: str, payload: Any) -> bytes:
        return msgpack.packb({"id": task_id, "payload": payload, "submitted_at": time.time()}, use_bin_type=True)

    queued_id, delayed_id, buried_id = (uuid.uuid4().hex for _ in range(3))
    entry_id = client.xadd(stream, {"v": "1", "task": blob_of(queued_id, "q"), "attempt": "1", "reclaims": "0"})
    client.hset(index, queued_id, entry_id)
    # A retry of attempt 2 (one reclaim before it) waiting in backoff, due now: "d<attempt>:<reclaims>:<blob>".
    client.hset(index, delayed_id, b"d2:1:" + blob_of(delayed_id, "d"))
    client.zadd(delayed, {delayed_id: int(time.time() * 1000)})
    letter_id = client.xadd(
        dead,
        {"v": "1", "task_id": buried_id, "task": blob_of(buried_id, "b"), "attempt": "4", "reclaims": "0",
         "reason": "max_retries", "error": msgpack.packb({"type": "E", "message": "m", "traceback": ""}),
         "worker": "old", "entry_id": "1-1", "failed_at_ms": "1"},
    )  # fmt: skip
    client.sadd(f"{prefix}:capabilities", capability)

    from dispatcher.cli.main import main  # the operator's requeue of the old letter

    assert main(["dlq", "requeue", capability, "--id", letter_id.decode(), "--redis-url", redis_server.url,
                 "--prefix", prefix]) == 0  # fmt: skip
    worker = run_worker("--capability", capability)
    result_keys = [cap_key(prefix, capability, f"result:{tid}") for tid in (queued_id, delayed_id, buried_id)]
    wait_until(lambda: all(client.exists(k) for k in result_keys), DEADLINE_S, message=worker_log(worker))

    results = {tid: unpack(client.get(cap_key(prefix, capability, f"result:{tid}")) or b"\xc0") for tid in
               (queued_id, delayed_id, buried_id)}  # fmt: skip
    assert {tid: (r or {}).get("value") for tid, r in results.items()} == {
        queued_id: "q",
        delayed_id: "d",
        buried_id: "b",
    }
    assert results[delayed_id]["attempt"] == 2
    assert client.xlen(stream) == 0 and client.zcard(delayed) == 0 and client.xlen(dead) == 0


def test_version_2_task_that_keeps_no_result(redis_server: Any, prefix: str, run_worker: Any) -> None:
    """Sections 3.1, 4 and 6: a version 2 entry with store_result false is served, leaves no result and announces
    nothing; the entry, its index field and its pending entry are gone; its id may then be submitted again."""
    client = redis_server.client()
    capability = "echo"
    task_id = uuid.uuid4().hex
    stream, index = cap_key(prefix, capability, "stream"), cap_key(prefix, capability, "tasks")
    blob = msgpack.packb(
        {"id": task_id, "payload": "fire and forget", "submitted_at": time.time(), "store_result": False},
        use_bin_type=True,
    )
    pubsub = subscribe(client, cap_key(prefix, capability, f"done:{task_id}"))
    try:
        client.eval(SUBMIT_LUA.replace("'v', '1'", "'v', '2'"), 2, stream, index, task_id, blob)
        client.sadd(f"{prefix}:capabilities", capability)
        worker = run_worker("--capability", capability, "--concurrency", "2")
        wait_until(
            lambda: client.xlen(stream) == 0 and not client.hexists(index, task_id),
            timeout_s=DEADLINE_S,
            message=f"the task to be served\n{worker_log(worker)}",
        )
        assert pubsub.get_message(timeout=0.5) is None, "nothing is announced"
    finally:
        pubsub.close()
    assert client.xpending(stream, "workers")["pending"] == 0
    assert not client.exists(cap_key(prefix, capability, f"result:{task_id}"))
    assert not client.exists(cap_key(prefix, capability, "dead"))

    from dispatcher.store import streams  # nothing is kept, so the submit script does not refuse the id again
    from dispatcher.store.gateway import Gateway
    from dispatcher.store.keys import KeySpace

    keys = KeySpace(prefix).capability(capability)
    again = streams.Enqueue(task_id, blob, version=b"2", store_result=False)
    (enqueued,) = Gateway(client, redis_server.url).run(streams.submit([(keys, [again])], 60_000))
    assert enqueued.added and enqueued.task_id == task_id


def acl_rule(name: str, prefix: str) -> list[str]:
    """The ``ACL SETUSER`` rule words of section 17 for ``name`` (producer or worker), for this prefix."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    found = re.search(rf"^```text acl:{name}\n(.*?)\n```$", text, re.MULTILINE | re.DOTALL)
    assert found, f"no acl:{name} block in docs/wire-format.md"
    return [word.replace("P:", f"{prefix}:", 1) if word[:3] in ("~P:", "&P:") else word for word in found[1].split()]


def test_acl_rules_of_the_document(prefix: str, tmp_path: Path) -> None:
    """Section 17: a Python producer and a Python worker (its retries through the delayed set and the mover, its
    dead letters, its reaper's reclaim and forget, its admitter's gates for tasks with every flow-control option
    and a tenant's retry through the rejoin set, its clean exit) work under exactly the documented rules, and
    Redis denies them nothing (ACL LOG stays empty)."""
    from conftest import RedisServer, WorkerRunner

    from dispatcher import Dispatcher, Settings, TaskDead
    from dispatcher.fleet import ratelimits
    from dispatcher.store.gateway import Gateway
    from dispatcher.store.keys import KeySpace

    with RedisServer() as server:
        admin = server.client()
        operator = Gateway(admin, server.url)  # the operator's commands: limits and caps are set up front
        ratelimits.define(operator, KeySpace(prefix), "api", 6000.0, 10)
        for name in ("echo", "sleep"):
            ratelimits.set_concurrency(operator, KeySpace(prefix), name, 2)
        for user in ("producer", "worker"):
            admin.execute_command("ACL", "SETUSER", user, "reset", ">pw", *acl_rule(user, prefix))
        base = f"redis://%s:pw@127.0.0.1:{server.port}/0"
        workers = WorkerRunner(base % "worker", prefix, tmp_path)
        capability = "echo"
        stream = cap_key(prefix, capability, "stream")
        try:
            with Dispatcher(Settings.build(redis_url=base % "producer", prefix=prefix)) as d:
                # A task taken by a consumer that never beat: dead to the reaper, which reclaims it.
                orphan = d.submit(capability, "orphan")
                admin.xgroup_create(stream, "workers", id="0", mkstream=True)
                assert admin.xreadgroup("workers", "ghost", {stream: ">"}, count=1)
                worker = workers(
                    "--capability", capability, "--capability", "sleep", "--heartbeat-ttl-s", "1",
                    "--reaper-interval-s", "0.3", "--block-ms", "200", "--backoff-base-s", "0.2",
                    "--backoff-jitter", "0",
                )  # fmt: skip
                try:
                    assert d.submit(capability, {"x": 1}).result(timeout_s=DEADLINE_S) == {"x": 1}
                    later = d.submit(capability, "later", delay_s=0.3)  # the submit script reads TIME
                    assert later.result(timeout_s=DEADLINE_S) == "later"
                    failing = d.submit("sleep", "not a number", max_retries=1)  # fails twice, then dead
                    with pytest.raises(TaskDead) as dead:
                        failing.result(timeout_s=DEADLINE_S)
                    assert dead.value.reason == "max_retries"
                    flow = {"priority": 5, "concurrency_key": "k", "rate_limits": {"api": 1}}
                    for options in ({"priority": 5}, {"rate_limits": {"api": 1}}, {"concurrency_key": "k"}, flow):
                        assert d.submit(capability, "gated", **options).result(timeout_s=DEADLINE_S) == "gated"
                        fair = d.submit(capability, "fair", fairness_key="t", **options)
                        assert fair.result(timeout_s=DEADLINE_S) == "fair"
                    retried = d.submit("sleep", "not a number", max_retries=1, fairness_key="t", **flow)
                    with pytest.raises(TaskDead):  # its retry went through the rejoin set and the tenant's queue
                        retried.result(timeout_s=DEADLINE_S)
                    assert orphan.result(timeout_s=DEADLINE_S) == "orphan"
                    assert d.handle(orphan.id).status() == "succeeded"
                    wait_until(
                        lambda: b"ghost" not in {c["name"] for c in admin.xinfo_consumers(stream, "workers")},
                        timeout_s=DEADLINE_S,
                        message="the reaper to forget the dead consumer",
                    )
                except Exception as e:
                    raise AssertionError(f"{e}\n{worker_log(worker)}") from e
                workers.stop_all()
                assert worker.returncode == 0, worker_log(worker)
            letters = admin.xrange(cap_key(prefix, "sleep", "dead"))
            assert [(f[b"reason"], f[b"attempt"]) for _, f in letters] == [(b"max_retries", b"2")] * 2
            denied = admin.execute_command("ACL", "LOG")
            assert not denied, f"denied by the documented ACL rules: {denied}"
            left = keyspace(admin, prefix)
            assert not {k for k in left if ":hb:" in k or k.endswith(":lease")}, left  # a clean exit
            assert not admin.hlen(f"{prefix}:workers")
        finally:
            workers.stop_all()


# Sections 11 and 12.1, written as a foreign worker would: the owner check, the result, its announcement, then the
# ack, the delete and the index field, in one script.
FOREIGN_SETTLE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], 'workers', ARGV[1], ARGV[1], 1, ARGV[2])
if #pending == 0 then
  return 0
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[4])
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
"""


class ForeignWorker:
    """A worker of capability ``echo`` written from sections 2, 10, 11 and 12 with redis-py and msgpack only."""

    def __init__(self, client: redis.Redis, prefix: str, consumer: str) -> None:
        self.client, self.prefix, self.consumer = client, prefix, consumer
        self.stream, self.index = cap_key(prefix, "echo", "stream"), cap_key(prefix, "echo", "tasks")
        self.heartbeat = cap_key(prefix, "echo", f"hb:{consumer}")

    def start(self) -> None:
        try:
            self.client.xgroup_create(self.stream, "workers", id="0", mkstream=True)
        except redis.ResponseError as e:
            assert str(e).startswith("BUSYGROUP"), e
        if not self.client.pexpire(self.heartbeat, 30_000):  # PEXPIRE first, SET only when missing
            self.client.set(self.heartbeat, self.consumer, px=30_000)

    def read_one(self) -> tuple[str, dict[bytes, bytes]]:
        reply = self.client.xreadgroup("workers", self.consumer, {self.stream: ">"}, count=1, block=1000)
        ((_, ((entry_id, fields),)),) = reply
        return entry_id.decode(), fields

    def settle(self, entry_id: str, fields: dict[bytes, bytes]) -> int:
        assert fields[b"v"] == b"1"
        task = unpack(fields[b"task"])
        record = msgpack.packb(
            {
                "status": "succeeded",
                "attempt": int(fields.get(b"attempt", b"1")),
                "worker": self.consumer,
                "finished_at": time.time(),
                "value": task["payload"],  # an echo handler
            },
            use_bin_type=True,
        )
        result_key = cap_key(self.prefix, "echo", f"result:{task['id']}")
        channel = cap_key(self.prefix, "echo", f"done:{task['id']}")
        args = [entry_id, self.consumer, task["id"], record, 60_000, channel]
        return int(self.client.eval(FOREIGN_SETTLE_LUA, 3, self.stream, self.index, result_key, *args))


def test_foreign_worker_next_to_python_ones(dispatcher: Any, redis_server: Any, prefix: str, run_worker: Any) -> None:
    """A worker written from the document serves tasks of the Python producer; when it dies holding one, a Python
    worker's reaper reclaims it as a fresh entry; the dead worker's late settle is refused (lease lost)."""
    client = redis_server.client()
    foreign = ForeignWorker(client, prefix, "foreign-1")
    served, orphan = dispatcher.submit("echo", {"n": 1}), dispatcher.submit("echo", {"n": 2})
    foreign.start()

    entry_id, fields = foreign.read_one()
    assert dispatcher.handle(served.id).status() == "running"
    assert foreign.settle(entry_id, fields) == 1
    assert served.result(timeout_s=DEADLINE_S) == {"n": 1}
    assert not client.hexists(foreign.index, served.id)

    late_id, late_fields = foreign.read_one()  # then it dies: its heartbeat expires
    client.delete(foreign.heartbeat)
    worker = run_worker(
        "--capability", "echo", "--heartbeat-ttl-s", "1", "--reaper-interval-s", "0.3", "--block-ms", "200"
    )  # fmt: skip
    try:
        assert orphan.result(timeout_s=DEADLINE_S) == {"n": 2}
    except Exception as e:
        raise AssertionError(f"{e}\n{worker_log(worker)}") from e
    record = unpack(client.get(cap_key(prefix, "echo", f"result:{orphan.id}")))
    assert record["attempt"] == 2 and record["worker"] != "foreign-1", record  # reclaimed: attempt + 1

    assert foreign.settle(late_id, late_fields) == 0  # the zombie's late result is refused
    assert unpack(client.get(cap_key(prefix, "echo", f"result:{orphan.id}"))) == record
    wait_until(
        lambda: b"foreign-1" not in {c["name"] for c in client.xinfo_consumers(foreign.stream, "workers")},
        timeout_s=DEADLINE_S,
        message="the reaper to forget the dead consumer",
    )
    assert client.xlen(foreign.stream) == 0 and client.xpending(foreign.stream, "workers")["pending"] == 0

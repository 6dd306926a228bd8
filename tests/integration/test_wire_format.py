"""A foreign producer, written from docs/wire-format.md with nothing but redis-py and msgpack.

The producing and reading parts below must not use ``dispatcher``: they check that the document alone is
enough to submit a task with a plain XADD and read its result. Fixtures come from ``tests/conftest.py``.
"""

from __future__ import annotations

import re
import time
import uuid
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
        r"capabilities|workers|reaper:lease|promoter:lease|"
        r"\{[a-z0-9_.\-]{1,64}\}:(stream|tasks|delayed|dead|result:.+|idem:.+|hb:.+)"
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

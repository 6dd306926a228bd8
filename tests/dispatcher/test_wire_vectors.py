"""The test vectors of docs/wire-format.md (section 19), read out of the document and checked against the code.

Each vector is a fenced block labelled ``vector:<name>``: ``json`` blocks hold values (keys in the order the codec
writes them), ``hex`` blocks the bytes, ``text`` blocks one ``name value`` pair per line (``<other>`` stands for
the bytes of vector ``other``). Encoding the values with the codec must give the bytes, decoding the bytes must
give the values, so the document cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dispatcher import Settings, Task
from dispatcher.fleet import decide
from dispatcher.store import codec, scripts, wire
from dispatcher.store.keys import KeySpace
from dispatcher.store.transitions import Bury

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
BLOCK = re.compile(r"^```(json|hex|text) vector:([a-z0-9-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LIMIT = 1 << 20
CAPABILITY = "echo"
WORKER = "host-4242-a1b2c3"


def _blocks() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for kind, name, body in BLOCK.findall(DOC.read_text()):
        assert (kind, name) not in found, f"vector {kind} {name} appears twice in {DOC.name}"
        found[(kind, name)] = body
    return found


BLOCKS = _blocks()


def values(name: str) -> Any:
    """The values of a ``json`` vector, keys in document order."""
    return json.loads(BLOCKS[("json", name)])


def hexbytes(name: str) -> bytes:
    """The bytes of a ``hex`` vector."""
    return bytes.fromhex(BLOCKS[("hex", name)])


def fields(name: str) -> list[tuple[str, bytes]]:
    """The ``name value`` lines of a ``text`` vector, values as bytes (``<other>``: the bytes of vector other)."""
    out = []
    for line in BLOCKS[("text", name)].splitlines():
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        ref = re.fullmatch(r"<([a-z0-9-]+)>", value)
        out.append((key, hexbytes(ref.group(1)) if ref else value.encode()))
    return out


def ascii_fields(flat: list[bytes | str | int] | tuple[tuple[str, bytes | str | int], ...]) -> list[tuple[str, bytes]]:
    """Field/value pairs as Redis stores them (integers as ASCII digits)."""
    pairs = list(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else list(flat)

    def as_bytes(v: bytes | str | int) -> bytes:
        return v if isinstance(v, bytes) else str(v).encode()

    return [(as_bytes(k).decode(), as_bytes(v)) for k, v in pairs]


def fixed_time(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, now: float) -> None:
    """Make ``module``'s ``time.time()`` return ``now`` (only that module's reference is patched)."""
    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: now))


def test_the_document_holds_every_vector_this_test_checks() -> None:
    names = {(kind, name) for kind, name in BLOCKS}
    expected = {
        *(("json", n) for n in ("task-v1", "task-v2", "result-succeeded", "result-dead", "letter-error")),
        ("json", "worker-record"),
        *(("hex", n) for n in ("task-v1", "task-v2", "result-succeeded", "result-dead", "delayed-v1", "delayed-v2")),
        ("hex", "delayed-lane"),
        ("hex", "letter-error"),
        ("hex", "worker-record"),
        *(("text", n) for n in ("entry-v2", "delayed-v1", "delayed-v2", "delayed-lane", "letter-expired")),
    }
    assert names == expected


@pytest.mark.parametrize("name", sorted(n for kind, n in BLOCKS if kind == "json"))
def test_json_vector_packs_to_its_bytes_and_back(name: str) -> None:
    assert codec.pack(values(name)) == hexbytes(name)
    assert codec.unpack(hexbytes(name), LIMIT) == values(name)


@pytest.mark.parametrize(("name", "version"), [("task-v1", b"1"), ("task-v2", b"2")])
def test_task_map(name: str, version: bytes) -> None:
    task = Task(capability=CAPABILITY, **values(name))
    blob = codec.encode_task(task, LIMIT)
    assert blob == hexbytes(name)
    assert codec.version_of(task) == version
    delivery = codec.decode_entry(CAPABILITY, "1-0", codec.entry_fields(blob, version=version), LIMIT)
    assert delivery.task == task
    assert (delivery.blob, delivery.version) == (blob, version)


def test_task_map_of_version_2_is_refused_in_a_version_1_entry() -> None:
    with pytest.raises(codec.DecodeError, match="needs format version 2"):
        codec.decode_entry(CAPABILITY, "1-0", codec.entry_fields(hexbytes("task-v2")), LIMIT)


def test_stream_entry() -> None:
    expected = fields("entry-v2")
    got = dict(expected)
    attempt, reclaims = int(got["attempt"]), int(got["reclaims"])
    assert ascii_fields(codec.entry_fields(got["task"], attempt, reclaims, got["v"])) == expected
    flat = [part for field, value in expected for part in (field.encode(), value)]  # a raw XREADGROUP reply
    delivery = codec.decode_entry(CAPABILITY, "1700000000000-0", flat, LIMIT)
    assert (delivery.version, delivery.attempt, delivery.reclaims, delivery.blob) == (
        got["v"],
        attempt,
        reclaims,
        got["task"],
    )
    assert delivery.task == Task(capability=CAPABILITY, attempt=attempt, **values("task-v2"))


def test_success_result_record(monkeypatch: pytest.MonkeyPatch) -> None:
    record = values("result-succeeded")
    outcome = codec.Outcome(
        status="succeeded",
        value=record["value"],
        attempt=record["attempt"],
        worker=record["worker"],
        finished_at=record["finished_at"],
    )
    assert codec.encode_outcome(outcome) == hexbytes("result-succeeded")
    assert codec.decode_outcome(hexbytes("result-succeeded"), LIMIT) == outcome
    fixed_time(monkeypatch, codec, record["finished_at"])  # the worker's hot path stamps the time itself
    assert codec.encode_success(record["value"], record["attempt"], record["worker"]) == hexbytes("result-succeeded")


def test_dead_result_record() -> None:
    record = values("result-dead")
    outcome = codec.Outcome(
        status="dead",
        error_type=record["error"]["type"],
        error_message=record["error"]["message"],
        traceback=record["error"]["traceback"],
        reason=record["reason"],
        attempt=record["attempt"],
        worker=record["worker"],
        finished_at=record["finished_at"],
    )
    assert codec.encode_outcome(outcome) == hexbytes("result-dead")
    assert codec.decode_outcome(hexbytes("result-dead"), LIMIT) == outcome
    assert record["attempt"] == values("task-v1")["max_retries"] + 1


@pytest.mark.parametrize("name", ["delayed-v1", "delayed-v2", "delayed-lane"])
def test_delayed_record(name: str) -> None:
    got = dict(fields(name))
    lane = got.get("lane", b"")
    delayed = wire.Delayed(got["version"], int(got["attempt"]), int(got["reclaims"]), got["task"], lane)
    assert wire.delayed_record(delayed) == hexbytes(name)
    assert wire.place(hexbytes(name)) == delayed


@pytest.mark.parametrize("name", ["delayed-v1", "delayed-v2", "delayed-lane"])
def test_delayed_record_of_the_lua_twin(name: str) -> None:
    """lua/include/delayed.lua writes and reads the same bytes as wire.py."""
    got = dict(fields(name))
    lane = got.get("lane", b"")
    source = scripts.expand(
        b"-- @include delayed.lua\n"
        b"local record = delayed_record(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\n"
        b"local version, attempt, reclaims, blob, lane = read_delayed(record)\n"
        b"return {record, version, attempt, reclaims, blob, lane}\n"
    )
    client = fakeredis.FakeRedis()
    try:
        reply = client.eval(source, 0, got["version"], got["attempt"], got["reclaims"], got["task"], lane)
    finally:
        client.close()
    assert reply == [hexbytes(name), got["version"], got["attempt"], got["reclaims"], got["task"], lane]


def test_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = fields("letter-expired")
    got = dict(expected)
    assert got["error"] == codec.pack({"type": "", "message": "", "traceback": ""})
    fixed_time(monkeypatch, decide, int(got["failed_at_ms"]) / 1000)
    keys = KeySpace().capability(CAPABILITY)
    entry = codec.entry_fields(got["task"], int(got["attempt"]), int(got["reclaims"]), got["v"])
    delivery = codec.decode_entry(CAPABILITY, got["entry_id"].decode(), entry, LIMIT)
    assert delivery.task.id == got["task_id"].decode()
    ctx = decide.Context(Settings.build(), got["worker"].decode())
    decision = decide.dead(ctx, keys, delivery, got["reason"].decode(), None)
    assert isinstance(decision.transition, Bury)
    assert ascii_fields(decision.transition.letter) == expected
    assert decision.transition.record is None  # the task keeps no result: none stored, none announced


def test_worker_record() -> None:
    body = values("worker-record")
    record = codec.WorkerRecord(**{**body, "capabilities": tuple(body["capabilities"])})
    assert codec.encode_worker(record) == hexbytes("worker-record")
    assert codec.decode_worker(hexbytes("worker-record")) == record

"""Dead letters for operators: list, show, requeue (with a fresh attempt count) and purge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.errors import ConfigError, DecodeError
from dispatcher.settings import FLOW_WINDOW
from dispatcher.store import codec, wire
from dispatcher.store import letters as ops
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import CapabilityKeys, KeySpace
from dispatcher.store.wire import Requeued
from dispatcher.task import MAX_PRIORITY, check_capability

PAGE = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, decoded for people (see docs/wire-format.md for the fields)."""

    letter_id: str
    task_id: str
    reason: str
    attempt: int
    reclaims: int
    error_type: str
    error_message: str
    traceback: str
    worker: str
    entry_id: str
    failed_at_ms: int
    payload: Any
    raw: bytes
    lane: str = ""
    """Where a requeue puts its task (``wire.lane``): a flow-controlled task waits for its gates again."""

    def summary(self) -> dict[str, Any]:
        """The short form ``dlq list`` shows."""
        return {
            "letter_id": self.letter_id,
            "task_id": self.task_id,
            "reason": self.reason,
            "attempt": self.attempt,
            "error": f"{self.error_type}: {self.error_message}" if self.error_type else "",
            "failed_at_ms": self.failed_at_ms,
        }


def decode_letter(letter_id: str, fields: dict[bytes, bytes], max_bytes: int) -> DeadLetter:
    """Decode a dead letter's fields; whatever does not decode is shown as empty, never raised."""

    def text(name: bytes) -> str:
        return fields.get(name, b"").decode("utf-8", "replace")

    def number(name: bytes) -> int:
        try:
            return int(fields.get(name, b"0"))
        except ValueError:
            return 0

    error: dict[str, Any] = {}
    payload: Any = None
    lane = ""
    try:
        decoded = codec.unpack(fields.get(b"error", b"\x80"), max_bytes)
        error = decoded if isinstance(decoded, dict) else {}
        blob = fields.get(b"task", b"")
        body = codec.unpack(blob, max_bytes) if blob else {}
        payload = body.get("payload") if isinstance(body, dict) else None
        lane = lane_of_body(body)
    except DecodeError:
        pass
    return DeadLetter(
        letter_id=letter_id,
        task_id=text(b"task_id"),
        reason=text(b"reason"),
        attempt=number(b"attempt"),
        reclaims=number(b"reclaims"),
        error_type=str(error.get("type", "")),
        error_message=str(error.get("message", "")),
        traceback=str(error.get("traceback", "")),
        worker=text(b"worker"),
        entry_id=text(b"entry_id"),
        failed_at_ms=number(b"failed_at_ms"),
        payload=payload,
        raw=fields.get(b"raw", b""),
        lane=lane,
    )


def lane_of_body(body: Any) -> str:
    """The lane of a decoded task map (its flow-control options, ``wire.lane``); "" for anything else (a task
    that does not decode is not requeued: the script refuses a letter without a task)."""
    if not isinstance(body, dict):
        return ""
    priority = body.get("priority")
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        priority = None
    return wire.lane(
        priority,
        body.get("rate_limits") is not None,
        body.get("concurrency_key") is not None,
        body.get("fairness_key") is not None,
    )


class DeadLetters:
    """The dead letters of every capability under one key prefix."""

    def __init__(self, gateway: Gateway, keyspace: KeySpace, max_bytes: int, window: int = FLOW_WINDOW) -> None:
        self.gateway = gateway
        self.keyspace = keyspace
        self.max_bytes = max_bytes
        self.window = window

    def _keys(self, capability: str) -> CapabilityKeys:
        """The keys of ``capability``, after checking its name (an operator typed it)."""
        try:
            check_capability(capability)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return self.keyspace.capability(capability)

    def oldest(self, capability: str, limit: int = 50) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``capability``.

        Raises:
            ConfigError: ``capability`` is not a valid capability name (so for every method here).
        """
        keys = self._keys(capability)
        return [decode_letter(i, f, self.max_bytes) for i, f in self.gateway.run(ops.read(keys, "-", limit))]

    def find(self, capability: str, ids: Sequence[str] | None) -> list[DeadLetter]:
        """Letters whose letter id or task id is in ``ids`` (all letters when ``ids`` is None)."""
        keys = self._keys(capability)
        wanted = set(ids) if ids is not None else None
        found: list[DeadLetter] = []
        after = "-"
        for _ in range(100_000):  # bounded: a page per round, and the stream is capped
            page = self.gateway.run(ops.read(keys, after, PAGE))
            for letter_id, fields in page:
                letter = decode_letter(letter_id, fields, self.max_bytes)
                if wanted is None or letter.letter_id in wanted or letter.task_id in wanted:
                    found.append(letter)
            if len(page) < PAGE:
                break
            after = page[-1][0]
        return found

    def requeue(self, capability: str, ids: Sequence[str] | None) -> tuple[int, list[str]]:
        """Put letters back on the stream with a fresh attempt count (a flow-controlled task into its waiting set:
        it takes its units and its key's permit again); returns (requeued, problems)."""
        keys = self._keys(capability)
        letters = self.find(capability, ids)
        triples = [(d.letter_id, d.task_id, d.lane) for d in letters]
        replies = self.gateway.run(ops.requeue(keys, triples, self.window))
        problems = [
            f"{d.letter_id}: " + ("already gone" if r is Requeued.GONE else f"holds no task to requeue ({d.reason})")
            for d, r in zip(letters, replies, strict=True)
            if r is not Requeued.REQUEUED
        ]
        return len(letters) - len(problems), problems

    def purge(self, capability: str, ids: Sequence[str] | None) -> int:
        """Delete the given letters (all of the capability's when ``ids`` is None); returns how many."""
        keys = self._keys(capability)
        if ids is None:
            return self.gateway.run(ops.drop_all(keys))
        return self.gateway.run(ops.delete(keys, [d.letter_id for d in self.find(capability, ids)]))

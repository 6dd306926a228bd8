"""What the index hash holds and what every Lua script answers, decoded in one place (docs/wire-format.md).

The scripts return small integers (and, from ``submit``, the id of a task that already exists); this module maps
each to its meaning and raises ``RedisError`` on anything else (a script of another version, a bug), so an
unexpected reply is never counted as a success. The index value of a task is an entry id or a delayed record,
whose Lua twin is ``lua/include/delayed.lua``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from dispatcher.errors import RedisError

_Code = TypeVar("_Code", bound=Enum)

DIGITS = frozenset(b"0123456789")
LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyz")


class Applied(Enum):
    """What a transition script (settle, retry, bury) did."""

    DONE = 1
    """Recorded: the entry was held by the caller (or, for a re-sent settle, its very record is stored)."""
    LEASE_LOST = 0
    """Refused: the entry is no longer held by the caller (the reaper gave the task to another worker)."""
    OWNER_ALIVE = 2
    """Refused: the reaper asked to act only on a dead owner, and the owner's heartbeat is back."""


_APPLIED = {member.value: member for member in Applied}


def applied(reply: Any, script: str) -> Applied:
    """The ``Applied`` a transition script's reply means."""
    found = _APPLIED.get(reply) if type(reply) is int else None
    if found is None:
        raise unexpected(script, reply)
    return found


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One task's fate in a ``submit`` call: added now or delayed, or not added because ``task_id`` exists."""

    task_id: str
    """The submitted task's id, or the id of the task that already existed (same id or idempotency key)."""
    added: bool
    delayed: bool = False


def enqueued(reply: Any, task_id: str) -> Enqueued:
    """Decode one element of ``submit``'s reply for the task ``task_id``."""
    if reply == 1:
        return Enqueued(task_id, added=True)
    if reply == 2:
        return Enqueued(task_id, added=True, delayed=True)
    if isinstance(reply, bytes) and reply:
        return Enqueued(reply.decode(), added=False)
    raise unexpected("submit", reply)


class Requeued(Enum):
    """What ``requeue`` did with a dead letter."""

    REQUEUED = 1
    GONE = 0
    """The letter no longer exists (another operator requeued or purged it)."""
    NO_TASK = -1
    """The letter holds no task to requeue (a ``decode_error`` letter), or another task id."""


def requeued(reply: Any) -> Requeued:
    """The ``Requeued`` a ``requeue`` reply means."""
    return _coded(Requeued, reply, "requeue")


class Dropped(Enum):
    """What ``drop`` did with a capability's keys."""

    DROPPED = 1
    BUSY = 0
    """Kept: tasks wait, run or are delayed."""
    DEAD_LETTERS = -1
    """Kept: it has dead letters, and they were not to be deleted."""


def dropped(reply: Any) -> Dropped:
    """The ``Dropped`` a ``drop`` reply means."""
    return _coded(Dropped, reply, "drop")


def _coded(codes: type[_Code], reply: Any, script: str) -> _Code:
    """The member of ``codes`` whose value is the integer ``reply`` (never a bool or a string that compares
    equal); anything else is an ``UnexpectedReply``."""
    if type(reply) is int:
        for member in codes:
            if member.value == reply:
                return member
    raise unexpected(script, reply)


def flag(reply: Any, script: str) -> bool:
    """A 0/1 reply (``lease``, ``forget``) as a bool."""
    if reply in (0, 1) and isinstance(reply, int):
        return bool(reply)
    raise unexpected(script, reply)


def count(reply: Any, script: str) -> int:
    """A count reply (``promote``)."""
    if isinstance(reply, int) and not isinstance(reply, bool) and reply >= 0:
        return reply
    raise unexpected(script, reply)


def admitted(reply: Any) -> tuple[int, int]:
    """An ``admit`` reply: (tasks moved, tasks still waiting in the ready set)."""
    if isinstance(reply, list) and len(reply) == 2:
        return count(reply[0], "admit"), count(reply[1], "admit")
    raise unexpected("admit", reply)


def unexpected(script: str, reply: Any) -> RedisError:
    """The error for a reply a script should never give."""
    return RedisError(f"unexpected reply from script {script!r}: {reply!r:.200}")


@dataclass(frozen=True, slots=True)
class Delayed:
    """A delayed task's index value: where the mover finds what to XADD when it is due (or, with a ``lane``, which
    waiting set it puts the task into: ``lane``); a waiting task's index value has the same layout."""

    version: bytes
    attempt: int
    reclaims: int
    blob: bytes
    lane: bytes = b""
    """Where a flow-controlled task waits again when due (``lane``); empty: straight onto the stream."""


def lane(priority: int | None, limited: bool, keyed: bool, fair: bool) -> str:
    """The lane of a task with these options (``lua/include/lanes.lua``): where it waits again when it comes back
    from a delay, a retry's backoff or the dead letters. ``w<p>`` the limited set (``rate_limits``), ``k<p>`` the
    keyed set (a ``concurrency_key`` alone), ``r<p>`` the ready set (a ``priority`` alone), ``f<p>`` the rejoin
    set (a ``fairness_key``, with or without the others: the fair gate moves it into its tenant's queue); "" the
    plain path."""
    if fair:
        return f"f{priority or 0}"
    if limited:
        return f"w{priority or 0}"
    if keyed:
        return f"k{priority or 0}"
    return "" if priority is None else f"r{priority}"


def delayed_record(d: Delayed) -> bytes:
    """The index value of a delayed task: ``d<attempt>:<reclaims>:<blob>`` (version 1),
    ``d<attempt>:<reclaims>:<version>:<blob>`` (later versions; a blob never starts with a digit), or
    ``d<attempt>:<reclaims>:<version>:<lane>:<blob>`` with a lane (a blob never starts with a letter either)."""
    head = b"d%d:%d:" % (d.attempt, d.reclaims)
    if d.lane:
        return head + d.version + b":" + d.lane + b":" + d.blob
    return head + d.blob if d.version == b"1" else head + d.version + b":" + d.blob


def place(value: bytes | None) -> str | Delayed | None:
    """A task's index value: its entry id (queued or running), a ``Delayed``, or None (not in the index).

    Raises:
        RedisError: the value is neither (written by something that does not follow the wire format).
    """
    if value is None:
        return None
    if value[:1] != b"d":
        return value.decode()
    try:
        attempt, reclaims, blob = value[1:].split(b":", 2)
        version, lane_ = b"1", b""
        if blob[:1] and blob[0] in DIGITS:
            version, blob = blob.split(b":", 1)
            if blob[:1] and blob[0] in LETTERS:
                lane_, blob = blob.split(b":", 1)
        return Delayed(version, int(attempt), int(reclaims), blob, lane_)
    except ValueError:
        raise unexpected("index", value) from None


@dataclass(frozen=True, slots=True)
class TenantPeek:
    """One tenant as ``peek_fair`` read it: virtual time, weight, queue length, and its best-ranked tasks, each
    (task id, waiting record), the record None for an id whose index field is not a waiting record any more
    (``delayed_of`` reads a record)."""

    tenant: str
    vtime: float
    weight: float
    length: int
    tasks: list[tuple[str, bytes | None]]


def fair_peek(reply: Any) -> tuple[int, list[TenantPeek]]:
    """A ``peek_fair`` reply: (room left in the window, the tenants still waiting, in the order asked)."""
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], int):
        raise unexpected("peek_fair", reply)
    out = []
    try:
        for row in reply[1:]:
            name, vtime, weight, length, *flat = row
            tasks = [(flat[i].decode(), flat[i + 1] or None) for i in range(0, len(flat), 2)]
            out.append(TenantPeek(name.decode(), float(vtime), float(weight), int(length), tasks))
    except (TypeError, ValueError, AttributeError, IndexError):
        raise unexpected("peek_fair", reply) from None
    return reply[0], out


def delayed_of(record: bytes) -> Delayed | None:
    """The ``Delayed`` a waiting record holds; None when the value is no such record.

    Raises:
        RedisError: the value is not a valid index value.
    """
    found = place(record)
    return found if isinstance(found, Delayed) else None


def permit_counts(reply: Any, keys: int) -> list[int]:
    """A ``count_permits`` reply: the cap, then the live permits of each of ``keys`` keys."""
    if isinstance(reply, list) and len(reply) == keys + 1 and all(type(v) is int and v >= 0 for v in reply):
        return reply
    raise unexpected("count_permits", reply)

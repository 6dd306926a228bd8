"""The one place msgpack is called: tasks, results and dead letters to and from bytes.

Decoding trusts nothing: every unpack carries explicit size limits, ext types are refused, and a stream
entry's fields are type-checked by hand (cheaper than pydantic on the worker's hot path, and equivalent for
the fields we read). The format is documented in ``docs/wire-format.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from dispatcher.errors import DecodeError, InvalidTask, PayloadTooLarge
from dispatcher.task import LIMIT_PATTERN, MAX_KEY_LENGTH, MAX_LIMITS, MAX_PRIORITY, MAX_UNITS, Task, is_key

FORMAT_VERSION = b"1"
"""The version of a task that uses no option of a later version."""
STORE_RESULT_VERSION = b"2"
"""Version 2 adds the task key ``store_result`` (a task that keeps no result)."""
PRIORITY_VERSION = b"3"
"""Version 3 adds the flow-control task keys ``priority`` (an integer from 0 to 9) and ``rate_limits`` (a map of
limit names to units)."""
SUPPORTED_VERSIONS = frozenset({FORMAT_VERSION, STORE_RESULT_VERSION, PRIORITY_VERSION})
_MAX_DEPTH = 64
_TASK_DEFAULTS: dict[str, Any] = {
    "max_retries": 3,
    "timeout_s": None,
    "idempotency_key": None,
    "headers": {},
    "not_before": None,
    "expires_at": None,
    "store_result": True,
    "priority": None,
    "rate_limits": None,
    "concurrency_key": None,
    "fairness_key": None,
}
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "max_retries": (int,),
    "timeout_s": (int, float),
    "idempotency_key": (str,),
    "not_before": (int, float),
    "expires_at": (int, float),
    "store_result": (bool,),
    "priority": (int,),
    "rate_limits": (dict,),
    "concurrency_key": (str,),
    "fairness_key": (str,),
}


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not part of the wire format")


def pack(value: Any) -> bytes:
    """Encode ``value`` with msgpack (bin type for bytes). Raises ``TypeError``/``ValueError`` on failure."""
    return msgpack.packb(value, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]


def unpack(data: bytes, max_bytes: int) -> Any:
    """Decode msgpack ``data`` of at most ``max_bytes`` with every container and string bounded by it."""
    if len(data) > max_bytes:
        raise DecodeError(f"{len(data)} bytes is over the limit of {max_bytes}")
    try:
        # Every max_*_len limit defaults to len(data), which is at most max_bytes here.
        value = msgpack.unpackb(data, ext_hook=_refuse_ext)
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise DecodeError(f"not valid msgpack: {type(e).__name__}: {e}") from e
    except RecursionError as e:
        raise DecodeError("msgpack nesting too deep") from e
    _check_value(value, 0)
    return value


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def _check_value(value: Any, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS:  # the common case, first: one set lookup per value
        return
    if kind is dict or kind is list:
        if depth > _MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {_MAX_DEPTH}")
        for item in value.values() if kind is dict else value:
            if type(item) not in _SCALARS:
                _check_value(item, depth + 1)
        return
    # msgpack decodes ext type -1 (timestamp) itself, without calling ext_hook: refuse it here.
    if isinstance(value, msgpack.Timestamp):
        raise DecodeError("msgpack ext type -1 (timestamp) is not part of the wire format")
    raise DecodeError(f"msgpack value of type {kind.__name__} is not part of the wire format")


def version_of(task: Task) -> bytes:
    """The lowest format version that can carry ``task`` (producers write that one, for old readers)."""
    if any(v is not None for v in (task.priority, task.rate_limits, task.concurrency_key, task.fairness_key)):
        return PRIORITY_VERSION
    return FORMAT_VERSION if task.store_result else STORE_RESULT_VERSION


def encode_task(task: Task, max_bytes: int) -> bytes:
    """The ``task`` field of a stream entry: a msgpack map that leaves out fields equal to their defaults.

    The blob is then unpacked as a worker unpacks it (``unpack``: the same limits and rules), so a task that
    msgpack can encode but a worker would refuse (a map key that is not a string, nesting deeper than the decoder
    takes) fails here, at submit, instead of being dead-lettered as ``decode_error`` while its ``result()`` waits.
    The decoder's rules are the one source of truth. Only the value rules are checked again: the task's own fields
    were validated by ``Task`` (``decode_entry`` in full would cost 3 µs more per task; ``unpack`` costs 1 µs).

    Raises:
        InvalidTask: the payload or headers cannot be encoded with msgpack, or a worker would refuse the task.
        PayloadTooLarge: the encoded task is over ``max_bytes``.
    """
    body: dict[str, Any] = {"id": task.id, "payload": task.payload, "submitted_at": task.submitted_at}
    for name, default in _TASK_DEFAULTS.items():
        value = getattr(task, name)
        if value != default:
            body[name] = value
    try:
        blob = pack(body)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidTask(f"payload of task {task.id} cannot be encoded with msgpack: {e}") from e
    if len(blob) > max_bytes:
        raise PayloadTooLarge(f"task {task.id} is {len(blob)} bytes encoded, over the limit of {max_bytes}")
    try:
        unpack(blob, max_bytes)
    except DecodeError as e:
        raise InvalidTask(f"task {task.id} can be encoded but a worker would refuse it: {e}") from None
    return blob


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stream entry as a worker reads it: the decoded task and the raw bytes it travels back with."""

    entry_id: str
    task: Task
    blob: bytes
    attempt: int
    reclaims: int
    version: bytes
    """The entry's format version, kept when the task is re-added (retry, reclaim, delay)."""


Fields = dict[bytes, bytes] | list[bytes]
"""A stream entry's fields: a dict, or the flat field/value list of a raw XREADGROUP reply (the worker's reads)."""


def fields_dict(fields: Fields) -> dict[bytes, bytes]:
    """``fields`` as a dict (a raw reply's flat list is paired up; a repeated field keeps its last value)."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=False))


def decode_entry(capability: str, entry_id: str, fields: Fields, max_bytes: int) -> Delivery:
    """Decode one stream entry of ``capability`` (a valid name: the caller's own) into a ``Delivery``.

    Raises:
        DecodeError: unknown format version, missing or mistyped fields, invalid msgpack, over limits.
    """
    version: bytes | None
    blob: bytes | None
    if (  # as every producer writes it
        type(fields) is list
        and len(fields) == 8
        and fields[0] == b"v"
        and fields[2] == b"task"
        and fields[4] == b"attempt"
        and fields[6] == b"reclaims"
    ):
        version, blob, raw_attempt, raw_reclaims = fields[1], fields[3], fields[5], fields[7]
    else:
        found = fields_dict(fields)
        version, blob = found.get(b"v"), found.get(b"task")
        raw_attempt, raw_reclaims = found.get(b"attempt", b"1"), found.get(b"reclaims", b"0")
    if version not in SUPPORTED_VERSIONS:
        raise DecodeError(f"unknown format version {version!r}")
    if blob is None:
        raise DecodeError("entry has no 'task' field")
    attempt = 1 if raw_attempt == b"1" else _ascii_int(raw_attempt, "attempt", 1)
    reclaims = 0 if raw_reclaims == b"0" else _ascii_int(raw_reclaims, "reclaims", 0)
    body = unpack(blob, max_bytes)
    if type(body) is not dict:
        raise DecodeError("'task' is not a msgpack map")
    return Delivery(entry_id, _task_from_body(capability, body, attempt, version), blob, attempt, reclaims, version)


MAX_COUNT = 1_000_000
"""The most an entry's ``attempt`` or ``reclaims`` may say (a task retried more often is not a task we made)."""
MAX_RETRIES = 1000
MAX_TIMEOUT_S = 30 * 24 * 3600.0
"""The longest ``timeout_s`` accepted (30 days): finite, so that every timer the worker sets is."""


def _ascii_int(raw: bytes | int, name: str, minimum: int) -> int:
    """An entry field's integer (ASCII digits as Redis returns them; an int as ``entry_fields`` builds them)."""
    if type(raw) is int:
        value = raw
    else:
        if len(raw) > 7:  # type: ignore[arg-type]  # MAX_COUNT has 7 digits: refuse longer text before int()
            raise DecodeError(f"field {name!r} is not an integer from {minimum} to {MAX_COUNT}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise DecodeError(f"field {name!r} is not an integer") from None
    if value < minimum:
        raise DecodeError(f"field {name!r} is below {minimum}")
    if value > MAX_COUNT:
        raise DecodeError(f"field {name!r} is above {MAX_COUNT}")
    return value


def is_task_id(value: Any) -> bool:
    """1-128 printable characters, no whitespace: safe in key names and in log lines."""
    return type(value) is str and 1 <= len(value) <= 128 and value.isprintable() and " " not in value


def _finite(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _task_from_body(capability: str, body: dict[str, Any], attempt: int, version: bytes) -> Task:
    task_id = body.get("id")
    if not is_task_id(task_id):
        raise DecodeError("'id' is missing or not 1-128 printable characters without whitespace")
    submitted_at = body.get("submitted_at", 0.0)
    if not _finite(submitted_at):
        raise DecodeError("'submitted_at' is not a finite number")
    values = dict(_BASE)
    values["capability"] = capability
    values["payload"] = body.get("payload")
    values["id"] = task_id
    values["submitted_at"] = float(submitted_at)
    values["attempt"] = attempt
    values["headers"] = {}  # a dict of its own per task: a handler may write to it
    if len(body) != 3 or "payload" not in body or "submitted_at" not in body:  # the common task: just these 3
        _optional_fields(body, values, version)
    # Every field was checked above: build the task without pydantic's validation (hot path).
    return Task.trusted(values)


_REQUIRED = frozenset({"id", "payload", "submitted_at"})
_KNOWN = _REQUIRED | frozenset(_TASK_DEFAULTS)
_BASE: dict[str, Any] = {
    "capability": "",
    "payload": None,
    "id": "",
    "submitted_at": 0.0,
    "attempt": 1,
    **_TASK_DEFAULTS,
}
"""A decoded task's values before its own are filled in."""


def _optional_fields(body: dict[str, Any], values: dict[str, Any], version: bytes) -> None:
    unknown = set(body) - _KNOWN
    if unknown:
        raise DecodeError(f"unknown task fields {sorted(unknown)}")
    if "store_result" in body and version == FORMAT_VERSION:
        raise DecodeError("'store_result' needs format version 2")
    for name in ("priority", "rate_limits", "concurrency_key", "fairness_key"):
        if name in body and version != PRIORITY_VERSION:
            raise DecodeError(f"{name!r} needs format version 3")
    for name, types in _OPTIONAL_TYPES.items():
        value = body.get(name)
        if value is not None:
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise DecodeError(f"{name!r} has the wrong type")
            _check_range(name, value)
            values[name] = value
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise DecodeError("'headers' is not a map of strings to strings")
    values["headers"] = headers


def _check_range(name: str, value: Any) -> None:
    """Refuse a value of the right type but out of its range (NaN and infinities included), naming the field."""
    if name == "max_retries" and not 0 <= value <= MAX_RETRIES:
        raise DecodeError(f"'max_retries' is not from 0 to {MAX_RETRIES}")
    if name == "timeout_s" and not (_finite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise DecodeError(f"'timeout_s' is not a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0f}")
    if name in ("not_before", "expires_at") and not _finite(value):
        raise DecodeError(f"{name!r} is not a finite number")
    if name == "priority" and not 0 <= value <= MAX_PRIORITY:
        raise DecodeError(f"'priority' is not from 0 to {MAX_PRIORITY}")
    if name in ("concurrency_key", "fairness_key") and not is_key(value):
        raise DecodeError(f"{name!r} is not 1-{MAX_KEY_LENGTH} printable characters without whitespace")
    if name == "rate_limits" and not _valid_limits(value):
        raise DecodeError(f"'rate_limits' is not a map of 1-{MAX_LIMITS} limit names to units from 1 to {MAX_UNITS}")
    if name == "idempotency_key" and not 1 <= len(value) <= 256:
        raise DecodeError("'idempotency_key' is not 1-256 characters")


def _valid_limits(value: dict[Any, Any]) -> bool:
    return 1 <= len(value) <= MAX_LIMITS and all(
        type(k) is str and LIMIT_PATTERN.match(k) and type(v) is int and 1 <= v <= MAX_UNITS for k, v in value.items()
    )


def _map_of(blob: bytes, max_bytes: int) -> dict[Any, Any]:
    """An encoded task's map as the admitter reads it from a waiting record; {} for a blob that is not one."""
    try:
        body = unpack(blob, max_bytes)
    except DecodeError:
        return {}
    return body if type(body) is dict else {}


def gates_of(blob: bytes, max_bytes: int) -> tuple[dict[str, int], str | None]:
    """The ``rate_limits`` and ``concurrency_key`` of an encoded task (the admitter reads them from a waiting
    record); ({}, None) for none, or for a blob that does not hold valid ones (the worker dead-letters such a task
    when it reads it)."""
    body = _map_of(blob, max_bytes)
    value, key = body.get("rate_limits"), body.get("concurrency_key")
    return (dict(value) if type(value) is dict and _valid_limits(value) else {}), (key if is_key(key) else None)


def fairness_of(blob: bytes, max_bytes: int) -> str | None:
    """The ``fairness_key`` of an encoded task (the fair gate reads it from a waiting record); None for none, or for
    a blob that does not hold a valid one (the worker dead-letters such a task when it reads it)."""
    key = _map_of(blob, max_bytes).get("fairness_key")
    return key if is_key(key) else None


def entry_fields(
    blob: bytes, attempt: int = 1, reclaims: int = 0, version: bytes = FORMAT_VERSION
) -> list[bytes | str | int]:
    """The flat field/value list of a work-stream entry, as XADD and the scripts take it."""
    return [b"v", version, b"task", blob, b"attempt", attempt, b"reclaims", reclaims]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A task's result record, as stored under its result key."""

    status: str
    value: Any = None
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    reason: str = ""
    attempt: int = 0
    worker: str = ""
    finished_at: float = 0.0


def encode_outcome(outcome: Outcome) -> bytes:
    """Encode a result record. A handler value msgpack cannot encode becomes an ``InvalidTask`` error."""
    body: dict[str, Any] = {
        "status": outcome.status,
        "attempt": outcome.attempt,
        "worker": outcome.worker,
        "finished_at": outcome.finished_at or time.time(),
    }
    if outcome.status == "succeeded":
        body["value"] = outcome.value
    else:
        body["error"] = {
            "type": outcome.error_type,
            "message": outcome.error_message,
            "traceback": outcome.traceback,
        }
        if outcome.reason:
            body["reason"] = outcome.reason
    try:
        return pack(body)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidTask(f"result cannot be encoded with msgpack: {e}") from e


def encode_success(value: Any, attempt: int, worker: str) -> bytes:
    """``encode_outcome`` of a ``succeeded`` record finished now, without building the ``Outcome`` (hot path)."""
    try:
        return pack(
            {"status": "succeeded", "attempt": attempt, "worker": worker, "finished_at": time.time(), "value": value}
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidTask(f"result cannot be encoded with msgpack: {e}") from e


def result_limit(max_payload_bytes: int) -> int:
    """The largest result record a producer reads (``decode_outcome``'s limit): twice the largest task."""
    return max_payload_bytes * 2


def readable(record: bytes, max_bytes: int) -> str:
    """Why a producer could not read this record back ("" when it can): the worker checks a record with the
    producer's own rules before storing it, so that what it stores is never a record ``result()`` chokes on."""
    if len(record) > max_bytes:
        return f"the result is {len(record)} bytes encoded, over the limit of {max_bytes}"
    try:
        unpack(record, max_bytes)
    except DecodeError as e:
        return f"the result cannot be read back: {e}"
    return ""


def decode_outcome(data: bytes, max_bytes: int) -> Outcome:
    """Decode a result record written by ``encode_outcome`` (or by another language, per the wire format)."""
    body = unpack(data, max_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise DecodeError("result record is not a map with a 'status'")
    error = body.get("error") or {}
    if not isinstance(error, dict):
        raise DecodeError("result 'error' is not a map")
    return Outcome(
        status=body["status"],
        value=body.get("value"),
        error_type=str(error.get("type", "")),
        error_message=str(error.get("message", "")),
        traceback=str(error.get("traceback", "")),
        reason=str(body.get("reason", "")),
        attempt=int(body.get("attempt", 0) or 0),
        worker=str(body.get("worker", "")),
        finished_at=float(body.get("finished_at", 0.0) or 0.0),
    )


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """What a worker publishes about itself with every heartbeat (the registry hash ``{p}:workers``)."""

    consumer: str
    host: str
    pid: int
    capabilities: tuple[str, ...]
    concurrency: int
    inflight: int
    version: str
    started_at: float
    last_seen: float
    circuits: dict[str, str]
    """Circuit state per capability: ``closed``, ``open`` or ``half_open``."""


def encode_worker(record: WorkerRecord) -> bytes:
    """Encode a registry record."""
    return pack(
        {
            "consumer": record.consumer,
            "host": record.host,
            "pid": record.pid,
            "capabilities": list(record.capabilities),
            "concurrency": record.concurrency,
            "inflight": record.inflight,
            "version": record.version,
            "started_at": record.started_at,
            "last_seen": record.last_seen,
            "circuits": record.circuits,
        }
    )


def decode_worker(data: bytes) -> WorkerRecord:
    """Decode a registry record; raises ``DecodeError`` when it is not one."""
    body = unpack(data, 64 * 1024)
    try:
        return WorkerRecord(
            consumer=str(body["consumer"]),
            host=str(body["host"]),
            pid=int(body["pid"]),
            capabilities=tuple(str(c) for c in body["capabilities"]),
            concurrency=int(body["concurrency"]),
            inflight=int(body["inflight"]),
            version=str(body["version"]),
            started_at=float(body["started_at"]),
            last_seen=float(body["last_seen"]),
            circuits={str(k): str(v) for k, v in dict(body.get("circuits", {})).items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"not a worker record: {e}") from e

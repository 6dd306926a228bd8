"""The task model: what a producer submits and what a handler receives."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PRIORITY = 9
"""The highest ``priority`` (0 is the lowest)."""
CAPABILITY_PATTERN = re.compile(r"^[a-z0-9_.\-]{1,64}\Z")  # \Z, not $: "$" also matches before a final newline
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

Status = Literal["queued", "running", "succeeded", "failed", "dead", "unknown"]
"""What ``TaskHandle.status()`` reports."""


def new_task_id() -> str:
    """A unique, time-sortable id: 48 bits of epoch milliseconds and 80 random bits, Crockford base32 (26 chars)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def check_capability(name: str) -> str:
    """Return ``name`` if it is a valid capability name, else raise ``ValueError``."""
    if not isinstance(name, str) or not CAPABILITY_PATTERN.match(name):
        raise ValueError(f"invalid capability {name!r}: use 1-64 lowercase letters, digits, '_', '.' or '-'")
    return name


LIMIT_PATTERN = CAPABILITY_PATTERN
"""Rate limit names follow the capability rule (they name a key's hash tag)."""
MAX_UNITS = 1_000_000_000
"""The most units a task may take from one limit."""
MAX_LIMITS = 8
"""The most rate limits one task may take units from."""


MAX_KEY_LENGTH = 128
"""The longest ``concurrency_key`` (it is part of a Redis key name)."""


def is_key(value: object) -> bool:
    """1-128 printable characters, no whitespace: safe in a key name and in a log line."""
    return type(value) is str and 1 <= len(value) <= MAX_KEY_LENGTH and value.isprintable() and " " not in value


def check_limit(name: str) -> str:
    """Return ``name`` if it is a valid rate limit name, else raise ``ValueError``."""
    if not isinstance(name, str) or not LIMIT_PATTERN.match(name):
        raise ValueError(f"invalid rate limit name {name!r}: use 1-64 lowercase letters, digits, '_', '.' or '-'")
    return name


class Task(BaseModel):
    """A unit of work for the workers of one capability.

    Options (``max_retries``, ``timeout_s``, ...) are fields of the task, never part of the payload.
    ``attempt`` is set by the worker: 1 on the first run, one more on each retry or reclaim.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    capability: Annotated[str, Field(description="Which workers may run it.")]
    payload: Any = None
    id: str = Field(default_factory=new_task_id)
    max_retries: Annotated[int, Field(ge=0, le=1000)] = 3
    timeout_s: Annotated[float | None, Field(gt=0, le=30 * 24 * 3600, allow_inf_nan=False)] = None
    idempotency_key: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    headers: dict[str, str] = Field(default_factory=dict)
    submitted_at: float = Field(default_factory=time.time, allow_inf_nan=False)
    not_before: Annotated[float | None, Field(allow_inf_nan=False)] = None
    expires_at: Annotated[float | None, Field(allow_inf_nan=False)] = None
    store_result: Annotated[
        bool, Field(description="Keep the result record (False: fire-and-forget, nothing stored or announced).")
    ] = True
    priority: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_PRIORITY,
            strict=True,
            description="0-9, higher first among the waiting tasks of the capability that have one.",
        ),
    ] = None
    fairness_key: Annotated[
        str | None,
        Field(description="The tenant: tenants of a capability share it by weight, whatever their backlogs."),
    ] = None
    concurrency_key: Annotated[
        str | None,
        Field(description="At most the capability's per-key cap of tasks with this key run at once, fleet-wide."),
    ] = None
    rate_limits: Annotated[
        dict[str, int] | None,
        Field(description="Units this task takes from named rate limits when it is admitted (docs/flow-control.md)."),
    ] = None
    attempt: Annotated[int, Field(ge=1)] = 1

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> Task:
        """A task from ``values`` that the caller has already checked, with every field present.

        What ``model_construct`` does for a complete set of fields, without its default-filling pass: the
        worker builds one task per delivery, and this is 4x cheaper (codec.decode_entry checks each field).
        """
        task = cls.__new__(cls)
        _setattr(task, "__dict__", values)
        _setattr(task, "__pydantic_fields_set__", _ALL_FIELDS)
        _setattr(task, "__pydantic_extra__", None)
        _setattr(task, "__pydantic_private__", None)
        return task

    @field_validator("capability")
    @classmethod
    def _capability(cls, value: str) -> str:
        return check_capability(value)

    @field_validator("concurrency_key", "fairness_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not is_key(value):
            raise ValueError(f"must be 1-{MAX_KEY_LENGTH} printable characters without whitespace")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_LIMITS:
            raise ValueError(f"name 1 to {MAX_LIMITS} rate limits")
        for name, units in value.items():
            check_limit(name)
            if type(units) is not int or not 1 <= units <= MAX_UNITS:
                raise ValueError(f"units of {name!r} must be an integer from 1 to {MAX_UNITS}, not {units!r}")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not 1 <= len(value) <= 128 or not value.isprintable() or " " in value:
            raise ValueError("task id must be 1-128 printable characters without whitespace")
        return value


_setattr = object.__setattr__
_ALL_FIELDS = frozenset(Task.model_fields)
"""A trusted task has every field set; one shared set will do, since a frozen model's set is never changed."""

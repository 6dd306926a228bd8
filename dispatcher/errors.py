"""The exception tree of agent-dispatcher: every error we raise, under one base.

    DispatcherError
    ├── ConfigError            bad settings, unknown app module, no handler for a capability, a bad capability
    │                          name given to an operator call, a command-line mistake (the CLIs' UsageError)
    ├── InvalidTask            a task rejected at submit: bad capability, unknown option, unencodable payload
    │   └── PayloadTooLarge    the encoded task exceeds max_payload_bytes
    ├── DecodeError            bytes in a stream that are not a valid task of a known format version
    ├── RedisError             Redis answered with an error we did not expect (from submit: `submitted`)
    │   ├── RedisUnavailable   Redis could not be reached (connection refused, reset, timed out)
    │   ├── RedisFull          Redis is out of memory (maxmemory with noeviction): the command was refused
    │   ├── PoolExhausted      no free connection in the client's pool within pool_timeout_s (Redis may be fine)
    │   └── UnsupportedRedis   the server is older than the supported 7.0
    ├── ResultTimeout          result(timeout_s=...) elapsed before the task settled
    ├── ResultNotStored        result() of a task submitted with store_result=False: nothing will be stored
    ├── TaskNotFound           no capability knows a task id (also a LookupError)
    ├── DispatcherClosed       the dispatcher was closed and cannot wait for results any more
    ├── HandlerTimeout         a handler ran past its task's timeout_s (recorded as the attempt's error)
    └── TaskFailed             the task failed remotely; carries the remote error type, message, traceback
        └── TaskDead           the task ended in the dead-letter stream; carries the reason

Handlers signal intent with three more exceptions that are not errors of ours: ``Retry``, ``Reject`` and
``RateLimited``.
No module raises a builtin exception type except where ``tests/test_errors.py`` allows it and says why.
"""

from __future__ import annotations

from typing import Any


class DispatcherError(Exception):
    """Base of every error agent-dispatcher raises."""


class ConfigError(DispatcherError):
    """A setting, an app module or a capability's handler is missing or wrong."""


class InvalidTask(DispatcherError):
    """A task was rejected before anything was written to Redis."""


class PayloadTooLarge(InvalidTask):
    """The encoded task is larger than the ``max_payload_bytes`` setting."""


class DecodeError(DispatcherError):
    """A stream entry is not a valid task (not msgpack, missing fields, unknown version, over limits)."""


class RedisError(DispatcherError):
    """Redis answered with an error we did not expect.

    Attributes:
        submitted: on an error of ``submit``/``submit_many``, the handles of the tasks that were written, in input
            order (``[]`` when none was), so that the caller resubmits only the others; ``None`` when that cannot
            be known (the connection was lost during the round trip: submitting the same ``Task`` objects again
            adds none twice) and on the errors of every other call. The message says the same in words.
    """

    submitted: list[Any] | None = None


class RedisUnavailable(RedisError):
    """Redis could not be reached; the message names the URL with its password masked."""


class RedisFull(RedisError):
    """Redis refused a write because it is out of memory; the refused command wrote nothing (of a batch, the
    commands before it may have: see ``submitted``)."""


class PoolExhausted(RedisError):
    """Every connection of the dispatcher's pool (``max_connections``) stayed in use for ``pool_timeout_s``: more
    callers at once than the pool serves. Redis itself may be fine; nothing was sent. Raise ``max_connections`` or
    lower the concurrency of callers."""


class UnsupportedRedis(RedisError):
    """The Redis server is older than 7.0."""


class ResultTimeout(DispatcherError):
    """The task did not settle within the time ``result()`` was given."""


class ResultNotStored(DispatcherError):
    """``result()`` was called on the handle of a task submitted with ``store_result=False``: no result is ever
    stored or announced for it, so there is nothing to wait for."""


class TaskNotFound(DispatcherError, LookupError):
    """No known capability has a task with this id (queued, delayed, running or settled)."""


class DispatcherClosed(DispatcherError):
    """The dispatcher was closed: ``result()`` cannot wait on it any more."""


class HandlerTimeout(DispatcherError):
    """A handler ran past its task's ``timeout_s``; the attempt counts as failed.

    ``thread_running`` is True for a sync handler whose thread could not be stopped and runs on.
    """

    thread_running: bool = False


class TaskFailed(DispatcherError):
    """The task's handler failed.

    Attributes:
        task_id: the task's id.
        error_type: the remote exception's class name.
        error_message: the remote exception's message.
        traceback: the remote traceback as text.
    """

    def __init__(self, task_id: str, error_type: str, error_message: str, traceback: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {error_message}")
        self.task_id = task_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class TaskDead(TaskFailed):
    """The task was dead-lettered; ``reason`` says why (max_retries, poison, decode_error, ...)."""

    def __init__(self, task_id: str, reason: str, error_type: str, error_message: str, traceback: str) -> None:
        super().__init__(task_id, error_type, error_message, traceback)
        self.reason = reason
        self.args = (f"task {task_id} is dead ({reason}): {error_type}: {error_message}",)


class Retry(Exception):
    """Raised by a handler to ask for another attempt after ``delay_s`` seconds (None: the backoff decides)."""

    def __init__(self, delay_s: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.delay_s = delay_s


class RateLimited(Exception):
    """Raised by a handler when a provider refused for quota (HTTP 429): the rate limit ``limit`` is paused
    fleet-wide for ``retry_after_s`` (no waiting task takes its units meanwhile), and this task waits that long and
    runs again without spending an attempt (docs/flow-control.md)."""

    def __init__(self, retry_after_s: float, limit: str) -> None:
        super().__init__(f"rate limited by {limit!r} for {retry_after_s:g} s")
        self.retry_after_s = min(max(float(retry_after_s), 0.0), 24 * 3600.0)
        self.limit = limit


class Reject(Exception):
    """Raised by a handler to fail the task at once, without retry; it is dead-lettered as ``rejected``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

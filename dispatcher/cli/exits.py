"""The exit codes of every command (``dispatcher``, ``worker``, the demo), and the error each one means.

One table for all: a script that runs ``worker`` and ``dispatcher`` reads the same code the same way. A user
mistake is reported as one ``<prog>: error: ...`` line on stderr with ``USAGE``, never a traceback.
"""

from __future__ import annotations

import sys
from enum import IntEnum

from dispatcher.errors import (
    ConfigError,
    DispatcherError,
    InvalidTask,
    RedisUnavailable,
    ResultTimeout,
    TaskFailed,
    TaskNotFound,
)


class Exit(IntEnum):
    """Named exit codes."""

    OK = 0
    ERROR = 1
    """An error of ours not listed below: Redis answered with an error, undecodable data, a partial requeue."""
    USAGE = 2
    """A user mistake: bad arguments, settings, app module, payload or task."""
    UNAVAILABLE = 3
    """Redis could not be reached (within the wait a worker allows at start)."""
    FAILED = 4
    """The task failed (``--wait``), or the demo did not complete every task."""
    TIMEOUT = 5
    """Waiting for a task's result took longer than the given timeout."""
    NOT_FOUND = 6
    """No capability knows the task id that was asked for, or no capability has the name that was given."""
    REFUSED = 7
    """An operator command refused to act on what it found: ``capabilities forget`` of a capability that still
    has tasks waiting, running or delayed, dead letters (without ``--purge-dead``) or live workers."""
    NOT_FINISHED = 8
    """``dispatcher result`` without ``--wait``: the task has not finished yet (it is queued or running)."""
    INTERRUPTED = 130
    """Ctrl-C, or a second SIGTERM/SIGINT (the worker exits at once; the reaper recovers its tasks)."""


def exit_code(error: DispatcherError) -> Exit:
    """The exit code that reports ``error``."""
    if isinstance(error, TaskFailed):
        return Exit.FAILED
    if isinstance(error, RedisUnavailable):
        return Exit.UNAVAILABLE
    if isinstance(error, ResultTimeout):
        return Exit.TIMEOUT
    if isinstance(error, TaskNotFound):
        return Exit.NOT_FOUND
    if isinstance(error, ConfigError | InvalidTask):
        return Exit.USAGE
    return Exit.ERROR


def say_error(prog: str, message: object) -> None:
    """Report an error on stderr as ``<prog>: error: <message>``."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)

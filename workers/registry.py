"""The handler registry: which function runs each capability, filled by the ``@handler`` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dispatcher.errors import ConfigError
from dispatcher.task import Task, check_capability


class SyncHandler(Protocol):
    """A plain handler: called in the worker's thread pool with the task; returns the result."""

    def __call__(self, task: Task, /) -> Any: ...


AsyncHandler = Callable[[Task], Awaitable[Any]]
"""An ``async def`` handler: awaited on the worker's event loop."""


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and how to call it."""

    capability: str
    func: Callable[[Task], Any]
    is_async: bool
    module: str
    input_errors: tuple[type[BaseException], ...] = ()
    """Exceptions that mean "this task's input is bad": the task is dead-lettered as ``rejected`` at once (no
    retry helps), and the circuit breaker does not count them against the worker."""


class Registry:
    """Capability -> handler. One process-wide instance backs ``@handler``; tests may build their own."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(
        self,
        capability: str,
        func: Callable[[Task], Any],
        input_errors: tuple[type[BaseException], ...] = (),
    ) -> Handler:
        """Register ``func`` for ``capability``; ``input_errors`` are exceptions that mean bad input (see
        ``Handler.input_errors``).

        Raises:
            ConfigError: the capability name is invalid, another function already handles it, or an input error
                is not an exception class.
        """
        try:
            check_capability(capability)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not all(isinstance(e, type) and issubclass(e, BaseException) for e in input_errors):
            raise ConfigError(f"input_errors of {capability!r} must be exception classes, got {input_errors!r}")
        found = self._handlers.get(capability)
        module = getattr(func, "__module__", "?")
        entry = Handler(capability, func, inspect.iscoroutinefunction(func), module, tuple(input_errors))
        if found is not None and found.func is not func:
            raise ConfigError(f"capability {capability!r} already has a handler in {found.module}")
        self._handlers[capability] = entry
        return entry

    def get(self, capability: str) -> Handler | None:
        """The handler of ``capability``, if any."""
        return self._handlers.get(capability)

    def capabilities(self) -> list[str]:
        """Every registered capability, sorted."""
        return sorted(self._handlers)


REGISTRY = Registry()
"""The registry that ``@handler`` fills."""


def handler(
    capability: str, *, input_errors: tuple[type[BaseException], ...] = ()
) -> Callable[[Callable[[Task], Any]], Callable[[Task], Any]]:
    """Register the decorated plain or ``async def`` function as the handler of ``capability``.

    ``input_errors``: exceptions that mean the task's input is bad (a ``KeyError`` on a missing payload field, a
    pydantic ``ValidationError``): such a task is dead-lettered as ``rejected`` at once, as if the handler had
    raised ``Reject``, and the circuit breaker does not hold it against the worker.

    Example::

        from workers import handler

        @handler("data_processing", input_errors=(KeyError,))
        async def process(task):
            return {"rows": len(task.payload["rows"])}
    """

    def register(func: Callable[[Task], Any]) -> Callable[[Task], Any]:
        REGISTRY.register(capability, func, input_errors)
        return func

    return register

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


class Registry:
    """Capability -> handler. One process-wide instance backs ``@handler``; tests may build their own."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, capability: str, func: Callable[[Task], Any]) -> Handler:
        """Register ``func`` for ``capability``.

        Raises:
            ConfigError: the capability name is invalid, or another function already handles it.
        """
        try:
            check_capability(capability)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        found = self._handlers.get(capability)
        entry = Handler(capability, func, inspect.iscoroutinefunction(func), getattr(func, "__module__", "?"))
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


def handler(capability: str) -> Callable[[Callable[[Task], Any]], Callable[[Task], Any]]:
    """Register the decorated plain or ``async def`` function as the handler of ``capability``.

    Example::

        from workers import handler

        @handler("data_processing")
        async def process(task):
            return {"rows": len(task.payload)}
    """

    def register(func: Callable[[Task], Any]) -> Callable[[Task], Any]:
        REGISTRY.register(capability, func)
        return func

    return register

"""Runs one handler call: async handlers on the loop, sync handlers in a bounded thread pool, with timeouts.

An async handler past its ``timeout_s`` is cancelled. A sync handler cannot be killed safely: the attempt is
failed at the timeout (and retried), its thread runs on until the function returns, its late result is
discarded, and its slot stays taken until then so the pool never over-commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher.errors import HandlerTimeout
from dispatcher.task import Task
from workers.registry import Handler
from workers.threads import ThreadPool

log = logging.getLogger(__name__)


class Executor:
    """Calls handlers; ``concurrency`` bounds the thread pool (and, through the runtime, async handlers)."""

    def __init__(self, concurrency: int) -> None:
        self.pool = ThreadPool(concurrency)

    @staticmethod
    def in_thread(handler: Handler, task: Task) -> bool:
        """Whether ``thread`` runs this call (a sync handler without a timeout), else ``call``."""
        return not handler.is_async and task.timeout_s is None

    def thread(self, handler: Handler, task: Task) -> asyncio.Future[Any]:
        """Run a sync handler without a timeout in a pool thread; the future resolves on the loop."""
        return self.pool.submit(handler.func, task)

    def call(self, handler: Handler, task: Task, on_late_done: Callable[[], None]) -> Awaitable[Any]:
        """Start ``handler`` on ``task``: await the result for its value, or what it raised, or ``HandlerTimeout``.

        When a sync handler times out while its thread runs on, the ``HandlerTimeout`` has
        ``thread_running=True`` and ``on_late_done`` is called (on the loop) once the thread really ends.
        An async handler without a timeout is its own coroutine: no wrapper per task.
        """
        if task.timeout_s is None:
            return handler.func(task) if handler.is_async else self.thread(handler, task)
        return self._with_timeout(handler, task, task.timeout_s, on_late_done)

    async def _with_timeout(
        self, handler: Handler, task: Task, timeout_s: float, on_late_done: Callable[[], None]
    ) -> Any:
        if handler.is_async:
            coro = handler.func(task)
            try:
                return await asyncio.wait_for(coro, timeout_s)
            except TimeoutError:
                raise HandlerTimeout(f"handler ran past timeout_s={timeout_s}") from None
        future = self.pool.submit(handler.func, task)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            error = HandlerTimeout(f"handler ran past timeout_s={timeout_s} (sync: its thread ran on)")
            error.thread_running = not future.done()
            if error.thread_running:
                future.add_done_callback(lambda _: on_late_done())
            log.warning(
                "sync handler past its timeout: attempt failed, thread left running, late result discarded "
                "task_id=%s timeout_s=%s",
                task.id,
                timeout_s,
            )
            raise error from None

    @property
    def busy_threads(self) -> int:
        """Sync handler calls not yet finished (a timed-out one runs on in its thread)."""
        return self.pool.busy

    def shutdown(self) -> None:
        """Stop the pool without waiting for threads still running a handler."""
        self.pool.shutdown()

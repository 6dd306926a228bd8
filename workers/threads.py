"""A lean thread pool for sync handlers: one C queue in, finished calls batched back to the event loop.

``loop.run_in_executor`` costs a ``concurrent.futures.Future``, a lock dance and one loop wake-up per call;
for sub-millisecond handlers that hand-off was the worker's largest cost. Here a job is a tuple on a
``SimpleQueue``, and finished calls gather in a deque that the loop drains with at most one wake-up
pending at a time, however many calls finish meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[asyncio.Future[Any], Callable[[Any], Any], Any]


class ThreadPool:
    """Up to ``size`` daemon threads, started as the load needs them (a hung handler never blocks exit)."""

    def __init__(self, size: int, name: str = "handler") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.busy = 0
        """Calls submitted and not yet finished (some may still wait for a free thread)."""

    def submit(self, func: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
        """Run ``func(arg)`` in a pool thread; the returned future resolves on the calling loop."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.busy += 1
        if self.busy > len(self._threads) and len(self._threads) < self._size:
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((future, func, arg))
        return future

    def _work(self) -> None:
        while True:
            job: _Job | None = self._jobs.get()
            if job is None:
                return
            future, func, arg = job
            try:
                outcome: tuple[asyncio.Future[Any], Any, BaseException | None] = (future, func(arg), None)
            except BaseException as e:  # handed to the awaiting coroutine, as run_in_executor would
                outcome = (future, None, e if not isinstance(e, StopIteration) else RuntimeError(repr(e)))
            self._done.append(outcome)
            with self._lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody waits for this result any more
                return

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False  # a call finishing from here on schedules another delivery
        while self._done:
            future, value, error = self._done.popleft()
            self.busy -= 1
            if future.cancelled():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def shutdown(self) -> None:
        """Let idle threads end; threads still running a handler end when it returns (they are daemons)."""
        for _ in self._threads:
            self._jobs.put(None)

"""The sync-handler thread pool and the executor's timeout semantics, without Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dispatcher.errors import HandlerTimeout
from dispatcher.task import Task
from workers.executor import Executor
from workers.registry import Handler
from workers.threads import ThreadPool


def test_results_and_errors_reach_their_futures_in_any_order() -> None:
    async def main() -> None:
        pool = ThreadPool(4)

        def work(n: int) -> int:
            if n % 7 == 0:
                raise ValueError(n)
            return n * 2

        futures = [pool.submit(work, n) for n in range(1, 200)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for n, result in zip(range(1, 200), results, strict=True):
            if n % 7 == 0:
                assert isinstance(result, ValueError) and result.args == (n,)
            else:
                assert result == n * 2
        assert pool.busy == 0
        pool.shutdown()

    asyncio.run(main())


def test_never_more_threads_than_its_size_and_they_run_in_parallel() -> None:
    async def main() -> None:
        pool = ThreadPool(3)
        names: set[str] = set()
        lock = threading.Lock()
        running = [0]
        most = [0]
        # Each call waits until three run at once: if the pool ran fewer in parallel, the barrier would break
        # after its timeout and the calls would raise.
        together = threading.Barrier(3, timeout=30)

        def call(_: object) -> None:
            with lock:
                names.add(threading.current_thread().name)
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                together.wait()
            finally:
                with lock:
                    running[0] -= 1

        await asyncio.wait_for(asyncio.gather(*(pool.submit(call, None) for _ in range(6))), 60)
        assert len(names) == 3
        assert most[0] == 3, f"{most[0]} calls ran at once on a pool of 3"
        pool.shutdown()

    asyncio.run(main())


def _task(timeout_s: float | None) -> Task:
    return Task(capability="echo", payload=None, timeout_s=timeout_s)


def test_a_sync_timeout_fails_the_attempt_and_reports_the_thread_still_running() -> None:
    release = threading.Event()
    late: list[float] = []

    def stuck(task: Task) -> str:
        release.wait(10)
        return "late"

    async def main() -> None:
        executor = Executor(2)
        handler = Handler("echo", stuck, False, __name__)
        with pytest.raises(HandlerTimeout) as caught:
            await executor.call(handler, _task(0.2), lambda: late.append(time.monotonic()))
        assert caught.value.thread_running
        assert executor.busy_threads == 1 and late == []
        release.set()
        for _ in range(3000):  # bounded (30 s): the thread ends once released
            if late:
                break
            await asyncio.sleep(0.01)
        assert len(late) == 1, "on_late_done is called once the thread really ends"
        assert executor.busy_threads == 0
        executor.shutdown()

    asyncio.run(main())


def test_an_async_timeout_cancels_the_handler() -> None:
    cancelled: list[bool] = []

    async def slow(task: Task) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        executor = Executor(2)
        with pytest.raises(HandlerTimeout) as caught:
            await executor.call(Handler("echo", slow, True, __name__), _task(0.1), lambda: None)
        assert not caught.value.thread_running
        assert cancelled == [True]
        executor.shutdown()

    asyncio.run(main())

"""A worker's start-up: waiting for Redis (bounded, with backoff), and the banner that says where the worker is.

In Compose and Kubernetes, Redis often starts after its workers: a worker that cannot reach Redis at start waits
for it, up to ``start_wait_s``, instead of exiting at once (and being restarted in a loop by its supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.exceptions

from dispatcher import __version__
from dispatcher.errors import RedisUnavailable
from dispatcher.settings import Backoff, Settings
from dispatcher.store import streams
from dispatcher.store.connection import mask_url
from dispatcher.store.gateway import AsyncGateway
from workers.registry import Handler

log = logging.getLogger(__name__)

START_BACKOFF = Backoff(base_s=0.1, factor=2.0, max_s=2.0, jitter=0.0)
"""Pause between attempts to reach Redis at start: 0.1 s, doubling up to 2 s."""


@dataclass(frozen=True, slots=True)
class About:
    """What the banner says that the worker itself does not know: its app and where its metrics are served."""

    app: str = "workers.builtins"
    app_source: str = "built-ins only"
    metrics: str | None = None


async def wait_for_redis(gateway: AsyncGateway, settings: Settings) -> tuple[str, str]:
    """The Redis version and maxmemory-policy, once Redis answers (see ``streams.server_check``).

    While Redis is unreachable (refused, timed out, still loading its data), try again after ``START_BACKOFF``
    until ``settings.start_wait_s`` has passed; 0 tries once. The first failure of each kind is logged at WARNING
    (the next ones of that kind at DEBUG), and a line at INFO says when Redis answered after a wait.

    Raises:
        RedisUnavailable: Redis did not answer within ``start_wait_s`` (one line: the URL, the wait, the error).
        UnsupportedRedis, RedisError: Redis answered, but cannot be used (too old; a wrong password is not waited
            on either).
    """
    url = mask_url(settings.redis_url)
    started = time.monotonic()
    deadline = started + settings.start_wait_s
    seen: set[str] = set()
    last: RedisUnavailable = RedisUnavailable(f"Redis at {url} is unavailable: no answer")
    attempt = 0
    while True:
        attempt += 1
        try:
            found = await _attempt(gateway, deadline - time.monotonic())
        except TimeoutError:  # the bound passed during a try: report what the tries before it said
            raise _gave_up(last, started, settings) from last.__cause__
        except RedisUnavailable as e:
            last = e
            left_s = deadline - time.monotonic()
            if _refused_for_good(e):
                raise
            if left_s <= 0:
                raise _gave_up(e, started, settings) from e.__cause__
            kind = _kind(e)
            level = logging.DEBUG if kind in seen else logging.WARNING
            seen.add(kind)
            log.log(
                level,
                "redis not reachable at start, waiting for it url=%s attempt=%d left_s=%.1f error=%s",
                url,
                attempt,
                left_s,
                e.__cause__ or e,
            )
            await asyncio.sleep(min(START_BACKOFF.delay_s(attempt), left_s))
            continue
        if attempt > 1:
            log.info("redis reachable url=%s after_s=%.1f attempts=%d", url, time.monotonic() - started, attempt)
        return found


async def _attempt(gateway: AsyncGateway, left_s: float) -> tuple[str, str]:
    """One try; one that would outlast the bound (a host that drops packets, slow client retries) is cut there
    (``TimeoutError``)."""
    if left_s <= 0:  # start_wait_s=0: one try, as long as the client's own timeouts and retries allow
        return await gateway.run(streams.server_check())
    return await asyncio.wait_for(gateway.run(streams.server_check()), timeout=left_s)


def _gave_up(error: RedisUnavailable, started: float, settings: Settings) -> RedisUnavailable:
    waited = f"gave up after {time.monotonic() - started:.1f} s, start_wait_s={settings.start_wait_s:g}"
    return RedisUnavailable(f"{error} ({waited})")


def _kind(error: RedisUnavailable) -> str:
    """The class of a failure, for logging once per class: connection refused, timed out, loading..."""
    cause = error.__cause__
    return f"{type(cause).__name__}: {' '.join(str(cause).split()[:3])}" if cause is not None else "no answer"


def _refused_for_good(error: RedisUnavailable) -> bool:
    """A wrong password or user: Redis is up and said no; waiting will not change it (redis-py makes it a
    ConnectionError, which our gateway reports as unavailable)."""
    return isinstance(error.__cause__, redis.exceptions.AuthenticationError)


def banner(
    about: About,
    settings: Settings,
    redis_version: str,
    consumer: str,
    concurrency: int,
    handlers: Sequence[Handler],
) -> list[str]:
    """The lines a worker logs at INFO once it has joined Redis: one about the worker, one per capability."""
    metrics = f" metrics={about.metrics}" if about.metrics else ""
    lines = [
        f"worker started version={__version__} consumer={consumer} redis={mask_url(settings.redis_url)} "
        f"redis_version={redis_version} prefix={settings.prefix} app={about.app} app_source={about.app_source} "
        f"concurrency={concurrency}{metrics}"
    ]
    for h in handlers:
        name = f"{getattr(h.func, '__module__', h.module)}.{getattr(h.func, '__qualname__', repr(h.func))}"
        runs = "async, on the event loop" if h.is_async else "sync, in the thread pool"
        lines.append(f"serving capability={h.capability} handler={name} ({runs})")
    return lines

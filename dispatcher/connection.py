"""Redis clients built from settings: timeouts, bounded retries with backoff, TLS and ACL users."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dispatcher.settings import Settings


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log and to put in error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by the sync and async clients."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), settings.retry_attempts),
        "health_check_interval": 30,
    }
    if settings.redis_url.startswith("rediss://"):
        if settings.ssl_ca_file:
            options["ssl_ca_certs"] = settings.ssl_ca_file
        if settings.ssl_certfile:
            options["ssl_certfile"] = settings.ssl_certfile
        if settings.ssl_keyfile:
            options["ssl_keyfile"] = settings.ssl_keyfile
    return options


def make_client(settings: Settings, **extra: Any) -> redis.Redis:
    """A sync client for ``settings.redis_url``; nothing connects until the first command."""
    return redis.Redis.from_url(settings.redis_url, **{**client_options(settings), **extra})


def make_async_client(settings: Settings, **extra: Any) -> redis.asyncio.Redis:
    """An asyncio client for ``settings.redis_url``; nothing connects until the first command."""
    return redis.asyncio.Redis.from_url(settings.redis_url, **{**client_options(settings), **extra})

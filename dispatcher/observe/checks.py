"""The checks of ``dispatcher healthcheck``: Redis answers with the settings, or a worker's ``/readyz`` says ok.

Each returns None when healthy, else a one-line reason; an exec probe or a Docker ``HEALTHCHECK`` turns that into
exit code 0 or 1.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.settings import Settings
from dispatcher.store import liveness
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway

BODY_LIMIT = 1024
"""Bytes of a probe's answer read for its reason."""


def redis(settings: Settings, timeout_s: float) -> str | None:
    """None when Redis answers PING within ``timeout_s`` (no retry), else why not."""
    client = make_client(
        settings.model_copy(update={"retry_attempts": 0}), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        Gateway(client, settings.redis_url).run(liveness.ping())
    except DispatcherError as e:
        return str(e)
    finally:
        client.close()
    return None


def readyz_url(url: str) -> str:
    """The ``/readyz`` URL of a worker or exporter given by its base URL (``http://host:9100``) or by the full URL.

    Raises:
        ConfigError: not an http(s) URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--worker: {url!r} is not an http:// URL with a host, e.g. http://127.0.0.1:9100")
    return url if parts.path not in ("", "/") else url.rstrip("/") + "/readyz"


def worker(url: str, timeout_s: float) -> str | None:
    """None when GET ``url`` (a ``/readyz``) answers 200 within ``timeout_s``, else why not (a 503's own reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (the scheme is checked)
            response.read(BODY_LIMIT)
    except urllib.error.HTTPError as e:
        body = e.read(BODY_LIMIT).decode(errors="replace").strip()
        return f"{url} answered {e.code}: {body or e.reason}"
    except (urllib.error.URLError, OSError) as e:  # refused, timed out, no such host
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        return f"cannot reach {url}: {reason}"
    return None

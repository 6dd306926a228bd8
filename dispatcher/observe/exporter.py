"""``dispatcher exporter``: one Prometheus scrape target for the whole system, read from Redis at scrape time.

The gauges are ``metrics.FleetCollector``'s (queue-level: ``sum()`` over them never multiplies across workers),
served with ``/livez`` and ``/readyz`` by ``dispatcher.observe.http``. Each scrape reads Redis through a client
whose socket timeouts are the scrape timeout and which does not retry, so a Redis that is down or hangs makes the
scrape answer ``dispatcher_redis_up 0`` within about that timeout: never a 500, never a hang.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from dispatcher.fleet.stats import collect
from dispatcher.observe import http
from dispatcher.observe.metrics import FleetCollector
from dispatcher.settings import Settings
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

log = logging.getLogger(__name__)

DEFAULT_PORT = 9840
DEFAULT_SCRAPE_TIMEOUT_S = 2.0


class Exporter:
    """The exporter's registry and Redis client; ``serve`` runs it until a stop event is set.

    Args:
        settings: where Redis is, and the key prefix of the fleet.
        scrape_timeout_s: the socket connect and read timeout of each scrape's Redis commands, in seconds.
    """

    def __init__(self, settings: Settings, scrape_timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S) -> None:
        # No client-side retry: a retry after a timeout would double the scrape's bound.
        self.client = make_client(
            settings.model_copy(update={"retry_attempts": 0}),
            socket_timeout=scrape_timeout_s,
            socket_connect_timeout=scrape_timeout_s,
        )
        gateway, keyspace = Gateway(self.client, settings.redis_url), KeySpace(settings.prefix)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(FleetCollector(lambda: collect(gateway, keyspace)))
        self.stopping = threading.Event()
        self._served: http.Served | None = None

    def start(self, addr: str, port: int) -> int:
        """Serve on ``addr:port`` in a thread; returns the port served (a free one for port 0).

        Raises:
            OSError, OverflowError: the address cannot be served (see ``http.serve``).
        """
        ready = lambda: "shutting down" if self.stopping.is_set() else None  # noqa: E731
        self._served = http.serve(addr, port, http.app(http.healthy, ready, self.registry))
        return self._served.port

    def wait(self) -> None:
        """Block until ``stopping`` is set (by a signal handler, or another thread), then stop serving."""
        try:
            while not self.stopping.wait(0.5):  # a timed wait: signal handlers run in between
                pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and close the Redis client."""
        if self._served is not None:
            self._served.close()
            self._served = None
        self.client.close()

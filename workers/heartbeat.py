"""The heartbeat thread: keeps a worker's liveness keys fresh, off the work path, on its own connection.

A long or CPU-bound handler must never make its worker look dead (a heartbeat riding the fetch loop would
get live tasks reclaimed), so the beat runs in a thread of its own with its own Redis client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from dispatcher.errors import DispatcherError
from dispatcher.settings import Settings
from dispatcher.store import liveness
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.connection import make_client
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import KeySpace

log = logging.getLogger(__name__)


class Heartbeat:
    """Refreshes the heartbeat keys every TTL/3 until ``stop()``, which deletes them (a clean exit)."""

    def __init__(
        self, settings: Settings, consumer: str, capabilities: Sequence[str], record: Callable[[], WorkerRecord]
    ) -> None:
        keyspace = KeySpace(settings.prefix)
        self._keys = [keyspace.capability(c).heartbeat(consumer) for c in capabilities]
        self._registry = keyspace.workers
        self._capabilities_key = keyspace.capabilities
        self._capabilities = list(capabilities)
        self._consumer = consumer
        self._record = record
        self._ttl_ms = int(settings.heartbeat_ttl_s * 1000)
        self._interval_s = settings.heartbeat_ttl_s / 3
        self._client = make_client(settings)
        self._gateway = Gateway(self._client, settings.redis_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{consumer}", daemon=True)
        self.failures = 0

    def beat(self) -> None:
        """One refresh (raises our Redis errors)."""
        op = liveness.heartbeat(
            self._keys,
            self._registry,
            self._consumer,
            encode_worker(self._record()),
            self._ttl_ms,
            self._capabilities_key,
            self._capabilities,
        )
        self._gateway.run(op)

    def start(self) -> None:
        """Beat once now (so the worker is alive before it reads), then every TTL/3 in the thread."""
        try:
            self.beat()
        except DispatcherError as e:
            log.warning("heartbeat failed consumer=%s error=%s", self._consumer, e)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.beat()
                if self.failures:
                    log.info("heartbeat restored consumer=%s", self._consumer)
                self.failures = 0
            except DispatcherError as e:
                self.failures += 1
                if self.failures == 1:
                    log.warning("heartbeat failed consumer=%s error=%s", self._consumer, e)
            except Exception:  # the thread must outlive a bug, or the live worker looks dead
                self.failures += 1
                log.exception("heartbeat crashed consumer=%s", self._consumer)

    def stop(self, unregister: bool = True) -> None:
        """Stop beating; with ``unregister``, delete the heartbeat keys and the registry record."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if unregister:
            try:
                self._gateway.run(liveness.unregister(self._keys, self._registry, self._consumer))
            except DispatcherError as e:
                log.warning("heartbeat unregister failed consumer=%s error=%s", self._consumer, e)
        self._client.close()

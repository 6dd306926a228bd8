"""The HTTP side of a process: ``/metrics``, ``/livez`` and ``/readyz`` on one port, for Prometheus and probes.

A small WSGI router in front of prometheus-client's ``make_wsgi_app``, served by prometheus-client's threading
WSGI server (the standard library's ``wsgiref`` underneath): no socket code of ours. A probe is a function that
returns None when healthy, else a one-line reason; the answer is ``200 ok`` or ``503 <reason>``, as text.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

Probe = Callable[[], str | None]
"""None when healthy, else why not (one line)."""

PATHS = ("/metrics", "/livez", "/readyz")


def healthy() -> str | None:
    """The probe of a process that is healthy whenever it answers at all."""
    return None


def app(live: Probe, ready: Probe, registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    """The WSGI app: ``/metrics`` from ``registry``, ``/livez`` from ``live``, ``/readyz`` from ``ready``, else 404."""
    metrics = make_wsgi_app(registry)
    probes = {"/livez": live, "/readyz": ready}

    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        probe = probes.get(path)
        if probe is None:
            return _text(start_response, "404 Not Found", f"not found: try {', '.join(PATHS)}")
        try:
            reason = probe()
        except Exception as e:  # a probe's bug must be a failed probe, not a dropped connection
            log.exception("probe %s failed", path)
            reason = f"probe failed: {type(e).__name__}: {e}"
        if reason is None:
            return _text(start_response, "200 OK", "ok")
        return _text(start_response, "503 Service Unavailable", reason)

    return route


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body.replace("\n", " ") + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


class _Quiet(WSGIRequestHandler):
    """Logs no request (probes come every few seconds)."""

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


class Served:
    """A running server (in a daemon thread); ``close()`` stops it and frees the port."""

    def __init__(self, server: WSGIServer) -> None:
        self.server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="observe-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (within the server's poll interval, 0.5 s) and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def serve(addr: str, port: int, wsgi_app: WSGIApplication) -> Served:
    """Serve ``wsgi_app`` on ``addr:port`` (IPv4 or IPv6; port 0 picks a free one) in a daemon thread.

    Raises:
        OSError: the address is in use or not one of this host (``socket.gaierror`` for a name that does not resolve).
        OverflowError: the port is out of range.
    """
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
    return Served(make_server(addr, port, wsgi_app, server_class, handler_class=_Quiet))

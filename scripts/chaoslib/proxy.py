"""A small TCP proxy between clients and Redis, for network faults (asyncio, in a thread of its own).

Faults, switchable at any time from the harness thread:

- ``latency_s``: every chunk, both ways, is forwarded that much later.
- ``drop_reply_p``: a reply (server to client chunk) is dropped with this probability and its connection is
  then reset: the command ran in Redis, the client never learns it (a reply lost with its connection).
- ``blackhole()``: every connection open now goes silent in both directions, forever, without a FIN or RST
  (a half-open connection: the peer vanished); new connections work.
- ``reset(seconds)``: every open connection is reset (RST) and, for ``seconds``, new ones are reset at once
  (Redis unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    """Listens on a free loopback port and forwards to ``127.0.0.1:<target_port>``."""

    def __init__(self, target_port: int, seed: int = 0) -> None:
        self.target_port = target_port
        self.port = 0
        self.latency_s = 0.0
        self.drop_reply_p = 0.0
        self.replies_dropped = 0
        self.resets = 0
        self._refuse_until = 0.0
        self._rng = random.Random(seed)
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def blackhole(self) -> int:
        """Silence every open connection for good; returns how many."""
        return int(self._call(self._silence))

    def reset(self, seconds: float) -> None:
        """Reset every open connection, and new ones for ``seconds``."""
        self._refuse_until = time.monotonic() + seconds
        self._call(self._reset_all)

    def _call(self, fn: object) -> object:
        async def run() -> object:
            return fn()  # type: ignore[operator]

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _silence(self) -> int:
        for conn in self._conns:
            conn.silent = True
        return len(self._conns)

    def _reset_all(self) -> None:
        for conn in list(self._conns):
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.resets += 1
        _rst(conn.client)
        _rst(conn.server)
        self._conns.discard(conn)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            self.resets += 1
            _rst(writer)
            return
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _rst(writer)
            return
        conn = _Conn(writer, s_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._pump(conn, reader, s_writer, reply=False)),
            asyncio.ensure_future(self._pump(conn, s_reader, writer, reply=True)),
        ]

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, reply: bool) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                if conn.silent:
                    continue  # half-open: swallow everything, close nothing
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                if reply and self.drop_reply_p and self._rng.random() < self.drop_reply_p:
                    self.replies_dropped += 1
                    self._drop(conn)
                    return
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not conn.silent and conn in self._conns:
            self._conns.discard(conn)
            for w in (conn.client, conn.server):
                with contextlib.suppress(Exception):
                    w.close()

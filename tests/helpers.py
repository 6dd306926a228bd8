"""Small test helpers: bounded waiting, listing a prefix's keys, reading a worker's captured output, settling a
task by hand as a worker would, reading a worker's Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import Settings
from dispatcher.store import codec, transitions
from dispatcher.store.codec import WorkerRecord, encode_worker
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, KeySpace
from dispatcher.store.transitions import Settle
from dispatcher.store.wire import Applied


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.02, message: str = ""
) -> Any:
    """Call ``predicate`` until it returns something truthy (returned), or raise ``AssertionError`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting: {message or predicate!r}")
        time.sleep(interval_s)


def one_error_line(err: str, prog: str = "dispatcher") -> str:
    """The one ``<prog>: error: ...`` line that ``err`` (a command's stderr) must be, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def wait_for_worker(dispatcher: Any, capability: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until a live worker serves ``capability``, as ``dispatcher stats`` sees it."""
    from dispatcher.fleet.stats import collect

    def served() -> bool:
        stats = collect(dispatcher.gateway, dispatcher.core.keyspace)
        return any(c.name == capability and c.workers > 0 for c in stats.capabilities)

    wait_until(served, message=f"a live worker of {capability}\n{worker_log(proc) if proc else ''}")


def fake_live_worker(client: redis.Redis, prefix: str, capability: str) -> None:
    """A registry record and a heartbeat, as a live worker of ``capability`` has them."""
    ks = KeySpace(prefix)
    record = WorkerRecord("w1", "box", 7, (capability,), 4, 0, "0.1.0", 1.0, 2.0, {capability: "closed"})
    client.hset(ks.workers, "w1", encode_worker(record))
    client.set(ks.capability(capability).heartbeat("w1"), "w1", px=60_000)
    client.sadd(ks.capabilities, capability)


def keyspace(client: redis.Redis, prefix: str) -> set[str]:
    """Every key whose name starts with ``prefix + ':'`` (SCAN: fine in tests, never on a hot path)."""
    return {k.decode() if isinstance(k, bytes) else k for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


def worker_log(proc: subprocess.Popen[bytes]) -> str:
    """The captured stdout and stderr of a process started by the ``run_worker`` fixture, for messages."""
    parts = []
    for name in ("stdout_path", "stderr_path"):
        path: Path | None = getattr(proc, name, None)
        if path is not None and path.exists():
            parts.append(f"--- {name[:-5]} of pid {proc.pid} ---\n{path.read_text(errors='replace')}")
    return "\n".join(parts)


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """Wait for a worker to exit and return its exit code; on timeout raise ``AssertionError`` with its log."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pid {proc.pid} still running after {timeout_s} s\n{worker_log(proc)}") from None


def read_as(client: redis.Redis, stream: str, consumer: str = "c1") -> str:
    """Take the next entry of ``stream`` as ``consumer`` through the group, as a worker would; its entry id."""
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as e:
        assert str(e).startswith("BUSYGROUP")
    ((_, ((entry_id, _),)),) = client.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
    return entry_id.decode()  # type: ignore[no-any-return]


def settle(client: redis.Redis, settings: Settings, handle: Any, outcome: codec.Outcome) -> None:
    """Read ``handle``'s task as consumer c1 and settle it through the settle script."""
    keys = KeySpace(settings.prefix).capability(handle.capability)
    entry_id = read_as(client, keys.stream)
    transition = Settle(keys, entry_id, "c1", handle.id, codec.encode_outcome(outcome), 60_000)
    assert Gateway(client, settings.redis_url).run(transitions.record([transition])) == [Applied.DONE]


def children() -> set[int]:
    """PIDs of this process's children, zombies included (read from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.add(int(entry.name))
    return out


def free_tcp_port() -> int:
    """A loopback TCP port that was free a moment ago (for ``--metrics-port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, Metric] | None:
    """The metric families served on ``http://127.0.0.1:port/metrics``, by family name (a counter's family has
    no ``_total``); None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families: dict[str, Metric], family: str, sample: str, **labels: str) -> float:
    """The value of ``sample`` (e.g. ``dispatcher_tasks_completed_total``) with exactly ``labels`` in ``family``;
    0.0 when there is none (a labelled metric has no sample until its first use)."""
    found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


@contextlib.contextmanager
def workers_in_threads(
    registry: Any, capabilities: list[str], settings: Settings, *, count: int, concurrency: int
) -> Iterator[list[Any]]:
    """``count`` in-process ``Worker``s serving ``capabilities``, each on its own event loop in a thread; stopped
    (and joined, 30 s at most) on the way out."""
    from workers import Worker

    workers = [Worker(registry, capabilities, settings, concurrency=concurrency) for _ in range(count)]
    threads = [threading.Thread(target=lambda w=w: asyncio.run(w.run()), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)


SERVE_DEADLINE_S = 30.0


def serve_worker(
    settings: Settings,
    registry: Any,
    capability: str,
    scenario: Callable[[Any], Awaitable[Any]],
    *,
    upkeep: bool,
    concurrency: int = 4,
) -> Any:
    """Run an in-process ``Worker`` of ``capability`` while ``scenario(worker)`` runs (at most 30 s); stop it after
    and return what the scenario returned."""
    from workers import Worker

    worker = Worker(registry, [capability], settings, concurrency=concurrency, upkeep=upkeep)

    async def main() -> Any:
        running = asyncio.create_task(worker.run())
        try:
            return await asyncio.wait_for(scenario(worker), SERVE_DEADLINE_S)
        finally:
            worker.stop()
            await asyncio.wait_for(running, SERVE_DEADLINE_S)

    return asyncio.run(main())


async def until(check: Callable[[], bool], what: str, timeout_s: float = SERVE_DEADLINE_S) -> float:
    """Poll ``check`` every 20 ms on the running loop until it holds (failing after ``timeout_s``); the time it held."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic()

"""Helpers the workloads share: task payloads, Redis probes, result records, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from dispatcher import KeySpace

if TYPE_CHECKING:  # the public API only at import time: benchlib.cost runs against older versions too
    from dispatcher.store import codec
    from dispatcher.store.keys import CapabilityKeys

GROUP = "workers"
"""The consumer group (docs/wire-format.md)."""

PAYLOAD = "x" * 100
"""The ≈100-byte payload of every bench task."""
WORKERS = 2


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def pending(client: redis.Redis, stream: str) -> int:
    try:
        return int(client.xpending(stream, GROUP)["pending"])
    except redis.ResponseError:
        return 0


def keys_of(prefix: str, capability: str) -> CapabilityKeys:
    return KeySpace(prefix).capability(capability)


def wait_ready(client: redis.Redis, prefix: str, count: int, timeout_s: float = 20.0) -> None:
    """Until ``count`` workers have published their registry record (they beat once before reading)."""
    registry = KeySpace(prefix).workers
    deadline = time.monotonic() + timeout_s
    while client.hlen(registry) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {count} workers not ready within {timeout_s} s")
        time.sleep(0.01)
    time.sleep(0.2)  # let them reach their blocking read


def wait_drained(client: redis.Redis, stream: str, timeout_s: float, interval_s: float = 0.002) -> float:
    """Until the stream is empty (settle deletes the entry after storing its result): the time.time() seen."""
    deadline = time.monotonic() + timeout_s
    while client.xlen(stream) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {stream} not drained within {timeout_s} s")
        time.sleep(interval_s)
    return time.time()


def outcomes(client: redis.Redis, keys: CapabilityKeys, task_ids: Sequence[str]) -> list[codec.Outcome]:
    """The stored result records of ``task_ids`` (raises if one is missing)."""
    from dispatcher.store import codec

    out: list[codec.Outcome] = []
    for start in range(0, len(task_ids), 1000):
        chunk = task_ids[start : start + 1000]
        for task_id, blob in zip(chunk, client.mget([keys.result(t) for t in chunk]), strict=True):
            if blob is None:
                raise RuntimeError(f"bench: no result for task {task_id}")
            out.append(codec.decode_outcome(blob, 1 << 20))
    return out


def delete_results(client: redis.Redis, keys: CapabilityKeys, task_ids: Sequence[str]) -> None:
    for start in range(0, len(task_ids), 1000):
        client.delete(*[keys.result(t) for t in task_ids[start : start + 1000]])


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def describe(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())

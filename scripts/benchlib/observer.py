"""An idle observer process: subscribes to settlement announcements and notes when each one arrives.

The settle scripts store a result and announce it in one atomic step, so the moment an idle subscriber hears the
announcement is the moment the result became readable (plus one loopback delivery). The latency workload times
``result()`` from there: timing it from the handler's own finish time would also count the worker's settle round
trip, which happens before the result is stored.

Run as ``python -m benchlib.observer URL PATTERN COUNT MAX_S``: prints ``ready`` once subscribed, then, after
COUNT announcements or MAX_S seconds, one JSON object {channel: epoch seconds}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from benchlib.env import Processes


def observe(url: str, pattern: str, count: int, max_s: float) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.psubscribe(pattern)
    deadline = time.monotonic() + max_s
    while (m := pubsub.get_message(timeout=1.0)) is None or m["type"] != "psubscribe":
        if time.monotonic() > deadline:
            raise SystemExit("observer: no psubscribe confirmation")
    print("ready", flush=True)
    seen: dict[str, float] = {}
    while len(seen) < count and time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.5)
        if m is not None and m["type"] == "pmessage":
            seen.setdefault(m["channel"].decode(), time.time())
    pubsub.close()
    client.close()
    return seen


def start_observer(procs: Processes, url: str, pattern: str, count: int, max_s: float) -> subprocess.Popen[bytes]:
    """An observer process (stopped with the bench's other processes), returned once it is subscribed."""
    argv = [sys.executable, "-m", "benchlib.observer", url, pattern, str(count), str(max_s)]
    proc = procs.spawn(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":  # bounded: the observer gives up after max_s
        raise RuntimeError("bench: the announcement observer did not start")
    return proc


def observer_result(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, float]:
    """{channel: when it was heard} from an observer started with ``start_observer``."""
    out, _ = proc.communicate(timeout=timeout_s)
    return {str(k): float(v) for k, v in json.loads(out).items()}


def main(argv: list[str]) -> int:
    url, pattern, count, max_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    print(json.dumps(observe(url, pattern, count, max_s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``scripts/bench --profile``: py-spy over one worker process during a drain; top functions by self and
inclusive share of samples. py-spy comes from ``.bench/tools`` (``python3 -m venv .bench/tools &&
.bench/tools/bin/pip install py-spy``) or PATH."""

from __future__ import annotations

import collections
import shutil
import subprocess
import time
from pathlib import Path

from benchlib.common import WORKERS, keys_of, wait_drained
from benchlib.env import REPO, Processes, RedisServer
from benchlib.ours import queue


def py_spy() -> str:
    local = REPO / ".bench" / "tools" / "bin" / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("bench: py-spy not found; python3 -m venv .bench/tools && .bench/tools/bin/pip install py-spy")
    return found


def _phase(stack: str) -> str:
    """The phase of the worker's main thread a py-spy stack belongs to (as in docs/performance.md)."""
    names = [f.split(" (")[0] for f in stack.split(";")]
    leaf = names[-1]
    if leaf == "EpollSelector.select":
        return "waiting for Redis (epoll)"
    if leaf == "_SelectorSocketTransport.write":
        return "socket send"
    if "Settler.run" in names:
        return "settle: pack pipeline, parse replies"
    if "Reader._read_once" in names or "Reader.recover_pending" in names:
        return "read: XREADGROUP" if "AsyncGateway.run" in names else "dispatch: decode, create tasks"
    if "Runner._execute" in names:
        if "succeeded" in names:
            return "execute: result record + settle command"
        if any(n.startswith(("MetricWrapperBase", "MutexValue", "Histogram", "Counter", "Gauge")) for n in names):
            return "execute: metrics"
        if "Executor.call" in names:
            return "execute: handler call, thread hand-off"
        return "execute: other"
    return "asyncio loop / other"


def phases(raw: Path) -> str:
    """Main-thread samples by phase."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack.startswith("_run_module_as_main"):
            counts[_phase(stack)] += int(count_text)
    total = sum(counts.values()) or 1
    rows = [f"  {count / total:6.1%}  {name}" for name, count in counts.most_common()]
    return "main-thread samples by phase:\n" + "\n".join(rows)


def summarise(raw: Path, top: int) -> str:
    """Top functions from py-spy's collapsed stacks: self share and inclusive share of all samples."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    lines = [f"{total} samples"]
    for title, counts in (("self", self_counts), ("inclusive", incl_counts)):
        lines.append(f"\ntop {top} by {title} time:")
        for frame, count in counts.most_common(top):
            lines.append(f"  {count / total:6.1%}  {frame}")
    return "\n".join(lines)


def run(capability: str, tasks: int, worker_args: list[str], out: Path, top: int = 30) -> str:
    server = RedisServer().start()
    procs = Processes()
    try:
        ids = queue(server, "b-prof", capability, tasks)
        workers = procs.workers(WORKERS, server.url, "b-prof", ["-c", capability, *worker_args])
        time.sleep(0.5)  # past start-up: profile the steady state
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(workers[0].pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--duration",
                "120",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = server.client()
        wait_drained(client, keys_of("b-prof", capability).stream, 300)
        client.close()
        spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        spy.wait(timeout=30)
    finally:
        procs.stop_all()
        server.stop()
    del ids
    return phases(out) + "\n\n" + summarise(out, top)

"""The Compose stack of the check: host networking on free loopback ports, up, health, kill, stop, down."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from deploylib.image import BASE_IMAGE, IMAGE
from deploylib.shell import run, say, wait_until

PROJECT = "dispatcher-check"
FILES = ["-f", "compose/compose.yaml", "-f", "compose/compose.hostnet.yaml"]
# Each worker service with the variable of compose.hostnet.yaml that gives its metrics port.
WORKER_PORTS = {
    "worker-echo": "ECHO_METRICS_PORT",
    "worker-sleep": "SLEEP_METRICS_PORT",
    "worker-sleep-2": "SLEEP2_METRICS_PORT",
}
WORKERS = list(WORKER_PORTS)
SERVICES = ["redis", *WORKERS, "reaper", "exporter"]
PORT_NAMES = ["REDIS_PORT", *WORKER_PORTS.values(), "EXPORTER_PORT"]
MAXMEMORY_MB = 256


def free_ports(count: int) -> list[int]:
    """Loopback ports free a moment ago (held together while picking, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Stack:
    """One run of the stack; ``env`` carries the images and ports compose.hostnet.yaml reads."""

    def __init__(self) -> None:
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.env = {
            **os.environ,
            "DISPATCHER_IMAGE": IMAGE,
            "REDIS_IMAGE": BASE_IMAGE,
            "REDIS_MAXMEMORY": f"{MAXMEMORY_MB}mb",
        }
        self.env.update({k: str(v) for k, v in self.ports.items()})
        self.redis_url = f"redis://127.0.0.1:{self.ports['REDIS_PORT']}/0"
        self.maxmemory_bytes = MAXMEMORY_MB * 2**20

    def compose(self, *args: str, timeout_s: float = 300, check: bool = True) -> str:
        exe = Path(sys.executable).parent / "docker-compose"
        return run([str(exe), "-p", PROJECT, *FILES, *args], timeout_s=timeout_s, check=check, env=self.env)

    def up(self, services: list[str]) -> None:
        self.compose("up", "-d", "--no-build", *services)
        say(f"compose up ({', '.join(services)}); ports {self.ports}")

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "-q", service).strip()

    def state(self, service: str) -> dict[str, object]:
        cid = self.container(service)
        if not cid:
            return {}
        found: dict[str, object] = json.loads(run(["docker", "inspect", "-f", "{{json .State}}", cid]))
        return found

    def health(self, service: str) -> str:
        health = self.state(service).get("Health")
        return str(health["Status"]) if isinstance(health, dict) else "none"

    def wait_healthy(self, services: list[str], deadline_s: float = 120) -> None:
        for service in services:
            wait_until(f"{service} healthy", lambda s=service: self.health(s) == "healthy", deadline_s)  # type: ignore[misc]
        say(f"healthy: {', '.join(services)}")

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "40", timeout_s=300, check=False)
        say("compose down -v")

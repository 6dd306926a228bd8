"""Real Redis topologies on loopback for the cluster and Sentinel tests: a Redis Cluster of ``redis-server
--cluster-enabled yes`` nodes formed with ``redis-cli --cluster create``, and a primary + replica watched by three
Sentinels (``redis-server --sentinel``). Every process is started here and stopped by its PID.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from conftest import RedisServer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from chaoslib.topologies import SYNC_AT_ONCE, cluster_port  # noqa: E402 - the one port picker

FORM_TIMEOUT_S = 30.0


def _wait(what: str, ready: object, timeout_s: float = FORM_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s} s")
        time.sleep(0.1)


class Cluster:
    """``primaries`` cluster nodes (each with ``replicas_per_primary`` replicas), formed with redis-cli."""

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 0) -> None:
        taken: set[int] = set()
        count = primaries * (1 + replicas_per_primary)
        self.replicas_per_primary = replicas_per_primary
        self.nodes = [
            RedisServer(
                port=cluster_port(taken),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                    *SYNC_AT_ONCE,
                ),
            )
            for _ in range(count)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        argv = [
            shutil.which("redis-cli") or "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas",
            str(self.replicas_per_primary),
            "--cluster-yes",
        ]
        done = subprocess.run(argv, capture_output=True, timeout=FORM_TIMEOUT_S, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout.decode()} {done.stderr.decode()}")
        self.wait_ok()
        self.wait_replicas_online()
        return self

    def wait_replicas_online(self) -> None:
        """Wait until every primary has its replicas in sync (state ``online``)."""
        for node in self.nodes:
            c = node.client()

            def synced(c: redis.Redis = c) -> bool:
                info = c.info("replication")
                if info["role"] != "master":
                    return True
                online = [v for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"]
                return len(online) >= self.replicas_per_primary

            _wait(f"replicas of {node.port}", synced)

    def wait_ok(self, nodes: list[RedisServer] | None = None) -> None:
        """Wait until every (running) node says ``cluster_state:ok`` and knows every replica."""
        live = [n for n in (nodes or self.nodes) if n.proc is not None and n.proc.poll() is None]
        for node in live:
            c = node.client()
            _wait(f"cluster node {node.port}", lambda c=c: c.cluster("info")["cluster_state"] == "ok")

    def primary_ports(self) -> dict[int, int]:
        """Slot range start -> port of the primary that owns it, as the cluster says now."""
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        slots = live.client().execute_command("CLUSTER", "SLOTS")
        return {int(s[0]): int(s[2][1]) for s in slots}

    def owner_port(self, key: str) -> int:
        """Port of the primary owning ``key``'s slot."""
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        slot = int(live.client().execute_command("CLUSTER", "KEYSLOT", key))
        for s in live.client().execute_command("CLUSTER", "SLOTS"):
            if int(s[0]) <= slot <= int(s[1]):
                return int(s[2][1])
        raise RuntimeError(f"no owner for slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSet:
    """A primary, one replica and three Sentinels watching them as ``service``."""

    def __init__(self, service: str = "mymaster") -> None:
        self.service = service
        self.primary = RedisServer(extra_args=SYNC_AT_ONCE)
        self.replica = RedisServer(extra_args=(*SYNC_AT_ONCE, "--replicaof", "127.0.0.1", str(self.primary.port)))
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.sentinel_ports: list[int] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{self.service}"

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        taken: set[int] = set()
        for i in range(3):
            port = cluster_port(taken)
            conf = self.dir / f"sentinel-{i}.conf"  # Sentinel rewrites its config: one copy each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            log = (self.dir / f"sentinel-{i}.log").open("ab")
            self.sentinels.append(
                subprocess.Popen(
                    [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            self.sentinel_ports.append(port)
        primary_client = self.primary.client()
        _wait("replica in sync", lambda: primary_client.info("replication")["slave0"]["state"] == "online")
        for port in self.sentinel_ports:
            s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            _wait(
                f"sentinel {port}",
                lambda s=s: (
                    int(s.sentinel_master(self.service)["num-other-sentinels"]) >= 2
                    and int(s.sentinel_master(self.service)["num-slaves"]) >= 1
                ),
            )
            s.close()
        return self

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.primary.stop()
        self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

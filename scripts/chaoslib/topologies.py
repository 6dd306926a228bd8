"""Replicated Redis topologies for the failover scenarios: a Redis Cluster with one replica per primary, and a
primary + replica watched by three Sentinels. Every process is started through ``Procs`` and stopped by PID."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from chaoslib.procs import Procs, RedisProc

FORM_TIMEOUT_S = 30.0
CLUSTER_MAX_PORT = 55535
"""The cluster bus listens on port + 10000: a higher port makes redis-server exit at start."""
SYNC_AT_ONCE = ["--repl-diskless-sync-delay", "0"]
"""A replica's first full sync starts at once (Redis 7.0 waits 5 s for more replicas by default)."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free loopback port whose cluster bus port (+10000) is free too, and neither in ``taken`` (updated)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(20000, CLUSTER_MAX_PORT - 10000)
        if port not in taken and port + 10000 not in taken and _port_free(port) and _port_free(port + 10000):
            taken.update((port, port + 10000))
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found in 500 tries")


def wait_until(what: str, ready: Callable[[], bool], timeout_s: float = FORM_TIMEOUT_S) -> None:
    """Poll ``ready`` (Redis errors count as not ready) until true; raise ``RuntimeError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except (redis.RedisError, OSError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s} s")
        time.sleep(0.1)


def _node(procs: Procs, workdir: Path, port: int, extra: list[str]) -> RedisProc:
    node = RedisProc(procs, workdir, [*SYNC_AT_ONCE, *extra])
    node.port = port
    node.dir = workdir / f"redis-{port}"
    node.dir.mkdir(parents=True, exist_ok=True)
    return node


def replicas_online(client: redis.Redis, count: int) -> bool:
    """Whether a primary has ``count`` replicas in sync (a replica answers True)."""
    info = client.info("replication")
    if info["role"] != "master":
        return True
    return sum(1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online") >= count


class ClusterProcs:
    """``primaries`` cluster nodes with ``replicas`` replicas each, formed with ``redis-cli --cluster create``."""

    def __init__(self, procs: Procs, workdir: Path, primaries: int = 3, replicas: int = 1) -> None:
        taken: set[int] = set()
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]
        self.replicas = replicas
        self.nodes = [_node(procs, workdir, cluster_port(taken), extra) for _ in range(primaries * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> ClusterProcs:
        for node in self.nodes:
            node.start()
        if len(self.nodes) == 1:  # redis-cli wants 3 primaries: a one-node cluster takes every slot itself
            self.nodes[0].client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            self.wait_ok()
            return self
        argv = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, timeout=FORM_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout.decode()} {done.stderr.decode()}")
        self.wait_ok()
        for node in self.nodes:
            c = node.client()
            wait_until(f"replicas of {node.port}", lambda c=c: replicas_online(c, self.replicas))  # type: ignore[misc]
        return self

    def live(self) -> list[RedisProc]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Every live node says ``cluster_state:ok``."""
        for node in self.live():
            c = node.client()
            wait_until(f"cluster node {node.port}", lambda c=c: c.cluster("info")["cluster_state"] == "ok", timeout_s)  # type: ignore[misc]

    def owner(self, key: str) -> RedisProc:
        """The node that is primary for ``key``'s slot now."""
        c = self.live()[0].client()
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise RuntimeError(f"no owner for slot {slot}")

    def client(self) -> redis.RedisCluster:
        node = self.live()[0]
        return redis.RedisCluster(host="127.0.0.1", port=node.port, socket_timeout=10)


class SentinelProcs:
    """A primary, one replica and three Sentinels watching them as ``service``."""

    def __init__(self, procs: Procs, workdir: Path, service: str = "chaos") -> None:
        self.procs = procs
        self.dir = workdir
        self.service = service
        self.primary = RedisProc(procs, workdir, list(SYNC_AT_ONCE))
        self.replica = RedisProc(procs, workdir, [*SYNC_AT_ONCE, "--replicaof", "127.0.0.1", str(self.primary.port)])
        self.ports: list[int] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{self.service}"

    def start(self) -> SentinelProcs:
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
            )
            self.procs.spawn("sentinel", [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"])
            self.ports.append(port)
        primary = self.primary.client()
        wait_until(
            "replica in sync",
            lambda: replicas_online(primary, 1) and primary.info("replication")["connected_slaves"] >= 1,
        )
        for port in self.ports:
            s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            wait_until(f"sentinel {port}", lambda s=s: int(s.sentinel_master(self.service)["num-other-sentinels"]) >= 2)  # type: ignore[misc]
            s.close()
        return self

    def current_primary_port(self) -> int:
        s = redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=2)
        try:
            _host, port = s.sentinel_get_master_addr_by_name(self.service)
            return int(port)
        finally:
            s.close()

    def client(self) -> redis.Redis:
        """A client of the current primary, as the Sentinels say."""
        return redis.Redis(host="127.0.0.1", port=self.current_primary_port(), socket_timeout=10)

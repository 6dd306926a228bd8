"""Which Redis a URL names: one server, a Redis Cluster (``redis+cluster://``) or a Sentinel-managed primary
(``redis+sentinel://``), and the redis-py clients for the last two.

``redis+cluster://host:port[,host:port...]`` lists seed nodes: redis-py's cluster client learns the slot map from
any of them, follows ``MOVED``/``ASK`` and groups a pipeline's commands by node.
``redis+sentinel://[user:password@]host:port[,host:port...]/service`` lists Sentinels; the client asks them for
``service``'s primary before each new connection, so a failover is followed without a restart. The user and
password authenticate with the Redis nodes (not the Sentinels). ``rediss+cluster`` and ``rediss+sentinel`` speak
TLS to the Redis nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis._parsers.commands import AsyncCommandsParser
from redis.crc import key_slot

from dispatcher.errors import ConfigError

Kind = Literal["single", "cluster", "sentinel"]
SCHEMES: dict[str, Kind] = {
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
}


@dataclass(frozen=True, slots=True)
class Topology:
    """What a Redis URL names."""

    kind: Kind
    nodes: tuple[tuple[str, int], ...] = ()
    """Seed nodes (cluster) or Sentinels (sentinel) as (host, port)."""
    service: str = ""
    """The Sentinel service name of the primary."""
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _node(text: str, url_scheme: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"invalid {url_scheme}:// URL: node {text!r} is not host:port")
    return host.strip("[]"), int(port)


def parse(url: str) -> Topology:
    """The topology ``url`` names (``single`` for ``redis://``, ``rediss://`` and ``unix://``).

    Raises:
        ConfigError: a cluster or Sentinel URL without nodes, with a bad node, or a Sentinel URL without service.
    """
    scheme = url.split("://", 1)[0]
    kind = SCHEMES.get(scheme)
    if kind is None:
        return Topology("single")
    rest = url.split("://", 1)[1]
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    nodes = tuple(_node(h, scheme) for h in hosts.split(",") if h)
    if not nodes:
        raise ConfigError(f"invalid {scheme}:// URL: no host:port given")
    service = path.strip("/")
    if kind == "sentinel" and not service:
        raise ConfigError(f"invalid {scheme}:// URL: the service name is missing (…/service_name)")
    user, _, password = userinfo.partition(":")
    return Topology(
        kind,
        nodes,
        unquote(service),
        unquote(user) if user else None,
        unquote(password) if password else None,
        tls=scheme.startswith("rediss"),
    )


def kind(url: str) -> Kind:
    """``single``, ``cluster`` or ``sentinel``, by the URL's scheme alone (never raises)."""
    return SCHEMES.get(urlsplit(url).scheme, "single")


def _auth(topology: Topology, options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if topology.username:
        out["username"] = topology.username
    if topology.password:
        out["password"] = topology.password
    if topology.tls:
        out["ssl"] = True
    return out


def read_slot(args: tuple[Any, ...]) -> int | None:
    """The slot of an ``XREADGROUP`` (its first stream: every stream of one read shares a slot), or None for
    another command.

    redis-py finds the keys of a command with movable keys (XREADGROUP) by asking the server (``COMMAND
    GETKEYS``): one more round trip per read, measured at 0.04 per task on a drain. Our reads name their streams
    after ``STREAMS``, so the slot is computed here instead.
    """
    if not args or str(args[0]).upper() != "XREADGROUP":
        return None
    words = [a.upper() if isinstance(a, str) else a for a in args]
    if "STREAMS" not in words:
        return None
    key = args[words.index("STREAMS") + 1]
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def script_keys(args: tuple[Any, ...]) -> list[Any] | None:
    """The keys of an ``EVALSHA``/``EVAL`` (its ``numkeys`` arguments after the script), or None for another
    command.

    redis-py's sync cluster pipeline looks up each command's routing policy, and for a command with movable keys
    (a script) asks the server for its keys (``COMMAND GETKEYS``, on the default node): one more round trip per
    script in every pipeline, seen 99 times in a 6,000-task drain, all on the first seed. A script's keys are its
    ``numkeys`` arguments, so they are read here instead.
    """
    if len(args) < 3 or str(args[0]).upper() not in ("EVALSHA", "EVAL"):
        return None
    return list(args[3 : 3 + int(args[2])])


Seeds = tuple[tuple[str, int], ...]
_COMMAND_TABLES: dict[Seeds, dict[str, Any]] = {}
"""The ``COMMAND`` reply of each cluster this process talks to, by its seed nodes.

redis-py's cluster client reads the server's whole command table (``COMMAND``, about 240 entries) from one node
when it starts, to find the keys of commands. A worker holds several clients (reads, settles, heartbeats,
start-up), and every one asked the same node, the first seed: measured on a 20,000-task drain over 3 primaries,
that node spent 1.3-2.0 µs per task of its own on ``COMMAND``, the others nothing. One read per process is
enough: every node of a cluster runs the same server. A command the table does not know (a server upgraded
under a running process) still makes redis-py read it again, from the server."""


class _Cluster(redis.RedisCluster):
    """redis-py's cluster client, placing our reads without a ``COMMAND GETKEYS`` (``read_slot``), and
    connecting on first use instead of in its constructor (redis-py's sync client reads the slot map there).

    Built lazily so that making a client never fails: a worker's start-up wait (``start_wait_s``) and the CLI's
    one-line "unavailable" error both need the failure to come from a command. Until then the instance holds
    only its arguments; the first attribute it lacks runs redis-py's constructor, whose failure to reach any node
    is raised as a ``ConnectionError`` (retried and reported as Redis unavailable, as for one server).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__["_lazy_kwargs"] = kwargs
        self.__dict__["_seeds"] = tuple((n.host, n.port) for n in kwargs.get("startup_nodes", ()))

    def __getattr__(self, name: str) -> Any:
        kwargs = self.__dict__.pop("_lazy_kwargs", None)
        if kwargs is None:  # built already (or being built): a real missing attribute
            raise AttributeError(name)
        try:
            super().__init__(**kwargs)
        except redis.exceptions.RedisClusterException as e:
            self.__dict__["_lazy_kwargs"] = kwargs  # try again on the next command
            raise redis.exceptions.ConnectionError(str(e)) from e
        return getattr(self, name)

    def close(self) -> None:
        if "_lazy_kwargs" not in self.__dict__:  # never connected: nothing to close
            super().close()

    def determine_slot(self, *args: Any) -> int | None:
        slot = read_slot(args)
        return slot if slot is not None else super().determine_slot(*args)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        # redis-py builds its pipeline class itself: give it our key lookups (the pipeline adds no state).
        pipe.__class__ = _Pipeline
        return pipe

    def command(self, **kwargs: Any) -> Any:
        """The command table: on this client's first call (redis-py's key parser, at start) the one this process
        read already from this cluster, if any (``_COMMAND_TABLES``); later calls (the parser met a command it
        lacks) read it from the server again."""
        seeds = self.__dict__["_seeds"]
        first = not self.__dict__.get("_table_asked")
        self.__dict__["_table_asked"] = True
        if kwargs or not first or seeds not in _COMMAND_TABLES:
            table = super().command(**kwargs)
            if kwargs:
                return table
            _COMMAND_TABLES[seeds] = table
        return dict(_COMMAND_TABLES[seeds])  # redis-py renames entries of the dict it gets: a copy


class _Pipeline(redis.cluster.ClusterPipeline):
    """redis-py's sync cluster pipeline, placing our reads and scripts without asking the server."""

    def determine_slot(self, *args: Any) -> int | None:
        slot = read_slot(args)
        return slot if slot is not None else super().determine_slot(*args)

    def _get_command_keys(self, *args: Any) -> Any:
        keys = script_keys(args)
        return keys if keys is not None else super()._get_command_keys(*args)  # type: ignore[no-untyped-call]


class _TableParser(AsyncCommandsParser):
    """redis-py's asyncio key parser, taking its command table from ``_COMMAND_TABLES`` when it has one."""

    __slots__ = ("seeds",)

    def __init__(self, seeds: Seeds) -> None:
        super().__init__()
        self.seeds = seeds

    async def initialize(self, node: Any = None) -> None:
        table = _COMMAND_TABLES.get(self.seeds)
        if node is None or table is None:  # no table yet, or redis-py found a command it lacks: ask the server
            await super().initialize(node)
            _COMMAND_TABLES[self.seeds] = self.commands
            return
        self.node = node
        self.commands = dict(table)


class _AsyncCluster(redis.asyncio.RedisCluster):
    """The asyncio twin of ``_Cluster`` (redis-py names the method ``_determine_slot`` there)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands_parser = _TableParser(tuple((n.host, n.port) for n in kwargs.get("startup_nodes", ())))

    async def _determine_slot(self, command: str, *args: Any) -> int:
        slot = read_slot((command, *args))
        return slot if slot is not None else await super()._determine_slot(command, *args)


def cluster_client(topology: Topology, options: dict[str, Any]) -> redis.RedisCluster:
    """A sync cluster client over ``topology``'s seeds; nothing connects until the first command."""
    seeds = [redis.cluster.ClusterNode(host, port) for host, port in topology.nodes]
    return _Cluster(startup_nodes=seeds, **_auth(topology, options))


def async_cluster_client(topology: Topology, options: dict[str, Any]) -> redis.asyncio.RedisCluster:
    """The asyncio twin of ``cluster_client``; nothing connects until the first command."""
    seeds = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in topology.nodes]
    return _AsyncCluster(startup_nodes=seeds, **_auth(topology, options))


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}


def sentinel_client(topology: Topology, options: dict[str, Any]) -> redis.Redis:
    """A sync client of ``topology.service``'s current primary, as the Sentinels name it."""
    sentinel = redis.sentinel.Sentinel(list(topology.nodes), sentinel_kwargs=_sentinel_options(options))
    client: redis.Redis = sentinel.master_for(topology.service, **_auth(topology, options))
    return client


def async_sentinel_client(topology: Topology, options: dict[str, Any]) -> redis.asyncio.Redis:
    """The asyncio twin of ``sentinel_client``."""
    sentinel = redis.asyncio.sentinel.Sentinel(list(topology.nodes), sentinel_kwargs=_sentinel_options(options))
    client: redis.asyncio.Redis = sentinel.master_for(topology.service, **_auth(topology, options))
    return client

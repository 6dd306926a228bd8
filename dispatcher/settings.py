"""One frozen settings object, built in code or from the environment (``DISPATCHER_*``, ``REDIS_URL``)."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dispatcher.errors import ConfigError
from dispatcher.store import topology

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


FLOW_WINDOW = 64
"""The default ``Settings.flow_window``."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``min(max_s, base_s * factor ** (attempt - 1))``, then jittered.

    ``jitter`` is the fraction of the delay that is random: 1.0 is full jitter (uniform in 0..delay),
    0.0 none.
    """

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 600.0
    jitter: float = 1.0

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before the retry that follows failed attempt ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 64)
        try:
            ceiling = min(self.max_s, self.base_s * self.factor**exponent)
        except OverflowError:  # a large factor overflows a float long before 64 attempts
            ceiling = self.max_s
        spread = ceiling * min(max(self.jitter, 0.0), 1.0)
        return ceiling - spread + (rng or random).uniform(0.0, spread)


class Settings(BaseModel):
    """Every knob of producers, workers and the reaper. Flags of the CLIs mirror these field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Every field has a description: the ``worker`` flags take their help from it (``--heartbeat-ttl-s``).
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        pattern=r"^(redis|rediss|unix|redis\+cluster|rediss\+cluster|redis\+sentinel|rediss\+sentinel)://",
        description="Redis URL: redis://, rediss:// (TLS) or unix://; redis://user:password@host works; "
        "redis+cluster://host:port[,host:port...] for a Redis Cluster, "
        "redis+sentinel://[user:password@]host:port[,host:port...]/service for a Sentinel-managed primary.",
    )
    prefix: str = Field(
        "dispatcher", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$", description="Key prefix: every key lives under it."
    )
    max_payload_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest encoded task accepted at submit (and read from a stream), in bytes."
    )
    result_ttl_s: float = Field(24 * 3600.0, gt=0, description="How long a task's result is kept, in seconds.")
    idempotency_ttl_s: float = Field(
        24 * 3600.0, gt=0, description="How long an idempotency key is remembered, in seconds."
    )
    socket_timeout_s: float = Field(5.0, gt=0, description="Redis socket read and write timeout, in seconds.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Redis connect timeout, in seconds.")
    start_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long a starting worker waits for Redis to answer, trying again with backoff (0.1 s doubling "
        "to 2 s), before it exits with code 3; 0 tries once, in seconds.",
    )
    retry_attempts: int = Field(
        3, ge=0, le=20, description="Client-side retries of a Redis command after a connection error (a count)."
    )
    max_connections: int = Field(
        100,
        ge=1,
        description=(
            "Most connections the Redis client of a Dispatcher or AsyncDispatcher opens (its result() listener holds "
            "one); callers beyond it wait for a free one (a count). Workers size their own clients."
        ),
    )
    pool_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "How long a caller of a Dispatcher or AsyncDispatcher waits for a free connection when all "
            "max_connections are in use, then raises PoolExhausted, in seconds."
        ),
    )
    block_ms: int = Field(
        1000, ge=1, description="XREADGROUP BLOCK, in milliseconds; must stay well under the socket timeout."
    )
    heartbeat_ttl_s: float = Field(
        10.0, gt=0, description="A worker whose heartbeat is older is dead, in seconds; refreshed every TTL/3."
    )
    flow_window: int = Field(
        FLOW_WINDOW,
        ge=1,
        le=100_000,
        description=(
            "Admission window of tasks with a priority: the most undelivered entries the admitter keeps on a "
            "capability's stream, so a high-priority task waits behind at most this many (a count)."
        ),
    )
    reaper_interval_s: float = Field(5.0, gt=0, description="How often the (one, leased) reaper runs, in seconds.")
    max_deliveries: int = Field(
        3, ge=1, description="Deliveries that never settled (worker lost each time) before a task is poison (a count)."
    )
    dead_letter_maxlen: int = Field(
        100_000, ge=1, description="Length each dead-letter stream is capped at (approximately), in entries."
    )
    grace_s: float = Field(25.0, ge=0, description="On SIGTERM, how long in-flight tasks may finish, in seconds.")
    hung_exit_s: float = Field(
        60.0,
        gt=0,
        description="How long a worker whose every slot is held by handler threads past their timeout waits before "
        "it exits non-zero for its supervisor to restart it, in seconds.",
    )
    breaker_threshold: int = Field(
        5,
        ge=1,
        description="Different tasks whose failures (not Reject, Retry or declared input errors) a worker must see "
        "among its last breaker_window outcomes before its circuit for the capability opens (a count).",
    )
    breaker_window: int = Field(20, ge=1, description="Outcomes a circuit breaker remembers (a count).")
    breaker_ratio: float = Field(
        0.8, gt=0, le=1, description="Share of failures among the remembered outcomes that opens the circuit."
    )
    breaker_cooldown_s: float = Field(
        5.0, gt=0, description="How long an open circuit waits before a trial task, in seconds; doubles on each trip."
    )
    breaker_max_cooldown_s: float = Field(
        60.0, gt=0, description="Longest cool-down of an open circuit breaker, in seconds."
    )
    backoff_base_s: float = Field(1.0, ge=0, description="Retry backoff: the delay after a first failure, in seconds.")
    backoff_factor: float = Field(2.0, ge=1, description="Retry backoff: the delay's growth factor per failed attempt.")
    backoff_max_s: float = Field(600.0, ge=0, description="Retry backoff: the longest delay, in seconds.")
    backoff_jitter: float = Field(
        1.0, ge=0, le=1, description="Retry backoff: the random fraction of each delay, from 0 (none) to 1 (full)."
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        description="After each submit, wait until this many replicas confirm its writes (WAIT), or fail with "
        "RedisUnavailable; 0 does not wait (a count).",
    )
    wait_replicas_timeout_s: float = Field(
        1.0, gt=0, description="How long a submit waits for wait_replicas replicas, in seconds."
    )
    ssl_ca_file: str | None = Field(None, description="CA bundle that verifies the server, for rediss:// (a path).")
    ssl_certfile: str | None = Field(None, description="Client certificate, for rediss:// (a path).")
    ssl_keyfile: str | None = Field(None, description="Client private key, for rediss:// (a path).")

    @model_validator(mode="after")
    def _block_under_socket_timeout(self) -> Settings:
        # A BLOCK longer than the socket timeout fails late after silent re-sends (REDIS-NOTES).
        if self.block_ms / 1000 >= self.socket_timeout_s * 0.8:
            raise ValueError(f"block_ms={self.block_ms} must stay well under socket_timeout_s={self.socket_timeout_s}")
        if self.wait_replicas and self.wait_replicas_timeout_s >= self.socket_timeout_s * 0.8:
            raise ValueError(
                f"wait_replicas_timeout_s={self.wait_replicas_timeout_s} must stay well under "
                f"socket_timeout_s={self.socket_timeout_s} (WAIT blocks the connection)"
            )
        return self

    @model_validator(mode="after")
    def _topology_url(self) -> Settings:
        try:
            topology.parse(self.redis_url)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self

    @property
    def backoff(self) -> Backoff:
        """The retry backoff these settings describe."""
        return Backoff(self.backoff_base_s, self.backoff_factor, self.backoff_max_s, self.backoff_jitter)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DISPATCHER_<FIELD>`` variables (``REDIS_URL`` as a fallback URL), then ``overrides``.

        Raises:
            ConfigError: a variable or override does not fit its field.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        url = source.get("DISPATCHER_REDIS_URL") or source.get("REDIS_URL")
        if url:
            values["redis_url"] = url
        for name in cls.model_fields:
            raw = source.get(f"DISPATCHER_{name.upper()}")
            if raw is not None and name != "redis_url":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """Validate ``values`` into settings, raising ``ConfigError`` with one readable line per problem."""
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"invalid settings: {problems}") from None

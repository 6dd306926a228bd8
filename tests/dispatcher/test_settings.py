"""Settings from code and the environment, and the Backoff value object."""

from __future__ import annotations

import random

import pytest

from dispatcher import Backoff, ConfigError, Settings
from dispatcher.settings import DEFAULT_REDIS_URL


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.prefix == "dispatcher"


def test_redis_url_falls_back_to_REDIS_URL() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://a:1/0"}).redis_url == "redis://a:1/0"


def test_DISPATCHER_REDIS_URL_takes_precedence() -> None:
    env = {"REDIS_URL": "redis://a:1/0", "DISPATCHER_REDIS_URL": "redis://b:2/0"}
    assert Settings.from_env(env).redis_url == "redis://b:2/0"


def test_empty_DISPATCHER_REDIS_URL_falls_back_to_REDIS_URL() -> None:
    env = {"REDIS_URL": "redis://a:1/0", "DISPATCHER_REDIS_URL": ""}
    assert Settings.from_env(env).redis_url == "redis://a:1/0"


def test_fields_are_parsed_from_strings() -> None:
    env = {
        "DISPATCHER_PREFIX": "jobs",
        "DISPATCHER_MAX_DELIVERIES": "7",
        "DISPATCHER_HEARTBEAT_TTL_S": "2.5",
        "DISPATCHER_BLOCK_MS": "250",
        "DISPATCHER_SSL_CA_FILE": "/ca.pem",
    }
    settings = Settings.from_env(env)
    assert (settings.prefix, settings.max_deliveries, settings.heartbeat_ttl_s, settings.block_ms) == (
        "jobs",
        7,
        2.5,
        250,
    )
    assert settings.ssl_ca_file == "/ca.pem"


def test_overrides_win_over_the_environment_and_none_is_ignored() -> None:
    env = {"DISPATCHER_PREFIX": "env", "REDIS_URL": "redis://env:1/0"}
    settings = Settings.from_env(env, prefix="code", redis_url=None)
    assert (settings.prefix, settings.redis_url) == ("code", "redis://env:1/0")


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_PREFIX", "fromos")
    monkeypatch.delenv("DISPATCHER_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://os:1/0")
    settings = Settings.from_env()
    assert (settings.prefix, settings.redis_url) == ("fromos", "redis://os:1/0")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DISPATCHER_MAX_DELIVERIES": "many"}, "max_deliveries"),
        ({"DISPATCHER_MAX_DELIVERIES": "0"}, "max_deliveries"),
        ({"DISPATCHER_HEARTBEAT_TTL_S": "-1"}, "heartbeat_ttl_s"),
        ({"DISPATCHER_PREFIX": "has space"}, "prefix"),
        ({"DISPATCHER_PREFIX": "ab\n"}, "prefix"),
        ({"DISPATCHER_PREFIX": "x" * 65}, "prefix"),
        ({"DISPATCHER_MAX_PAYLOAD_BYTES": "10"}, "max_payload_bytes"),
        ({"DISPATCHER_BACKOFF_JITTER": "1.5"}, "backoff_jitter"),
        ({"DISPATCHER_RETRY_ATTEMPTS": "21"}, "retry_attempts"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^invalid settings: {field}: "):
        Settings.from_env(env)


def test_unknown_field_in_code_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        Settings.build(nope=1)


def test_unknown_DISPATCHER_variables_are_ignored() -> None:
    assert Settings.from_env({"DISPATCHER_NOPE": "1"}) == Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.prefix = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("block_ms", "socket_timeout_s", "ok"),
    [(200, 5.0, True), (3999, 5.0, True), (4000, 5.0, False), (7000, 5.0, False), (7000, 10.0, True)],
)
def test_block_must_stay_well_under_the_socket_timeout(block_ms: int, socket_timeout_s: float, ok: bool) -> None:
    values = {"block_ms": block_ms, "socket_timeout_s": socket_timeout_s}
    if ok:
        assert Settings.build(**values).block_ms == block_ms
    else:
        with pytest.raises(ConfigError, match=r"block_ms=.* must stay well under socket_timeout_s"):
            Settings.build(**values)


def test_settings_backoff_mirrors_the_fields() -> None:
    settings = Settings.build(backoff_base_s=0.5, backoff_factor=3, backoff_max_s=9, backoff_jitter=0.25)
    assert settings.backoff == Backoff(0.5, 3, 9, 0.25)


def test_backoff_without_jitter_is_exponential_and_capped() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=10.0, jitter=0.0)
    assert [backoff.delay_s(a) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay_s(0) == 1.0
    assert backoff.delay_s(10_000) == 10.0  # no overflow for absurd attempts


def test_backoff_full_jitter_spreads_over_zero_to_ceiling() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=600.0, jitter=1.0)
    rng = random.Random(7)
    delays = [backoff.delay_s(4, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 7.5
    assert 3.5 < sum(delays) / len(delays) < 4.5


def test_backoff_partial_jitter_keeps_the_floor() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=600.0, jitter=0.25)
    delays = [backoff.delay_s(3, random.Random(i)) for i in range(500)]
    assert all(3.0 <= d <= 4.0 for d in delays)


@pytest.mark.parametrize("attempt", [1, 5, 64, 65, 10**6])
def test_backoff_with_jitter_is_bounded_by_max(attempt: int) -> None:
    backoff = Backoff(base_s=2.0, factor=10.0, max_s=30.0, jitter=1.0)
    assert 0.0 <= backoff.delay_s(attempt, random.Random(attempt)) <= 30.0


def test_backoff_with_a_huge_factor_does_not_overflow() -> None:
    assert Backoff(base_s=1.0, factor=1e10, max_s=60.0, jitter=0.0).delay_s(64) == 60.0
    assert Settings.build(backoff_factor=1e10, backoff_jitter=0).backoff.delay_s(1000) == 600.0


def test_every_field_has_a_description() -> None:
    """The ``worker`` flags take their help from it: one sentence, with the unit where there is one."""
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        assert description.endswith(".") and len(description) > 10, name
        if name.endswith("_s"):
            assert "in seconds" in description, name
        if name.endswith("_ms"):
            assert "in milliseconds" in description, name
        if name.endswith("_bytes"):
            assert "in bytes" in description, name

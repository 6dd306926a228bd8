"""The handler registry: registration, duplicates, sync/async detection, and the ``@handler`` decorator."""

from __future__ import annotations

from typing import Any

import pytest

import workers.registry as registry_module
from dispatcher import ConfigError
from workers import Registry, Task, handler


def plain(task: Task) -> Any:
    return task.payload


async def coroutine(task: Task) -> Any:
    return task.payload


def test_register_and_get() -> None:
    registry = Registry()
    entry = registry.register("a.b-c_1", plain)
    assert registry.get("a.b-c_1") == entry
    assert (entry.capability, entry.func, entry.is_async, entry.module) == ("a.b-c_1", plain, False, __name__)
    assert registry.get("other") is None


def test_async_functions_are_told_apart() -> None:
    registry = Registry()
    assert registry.register("s", plain).is_async is False
    assert registry.register("a", coroutine).is_async is True


def test_capabilities_are_sorted() -> None:
    registry = Registry()
    for name in ("zeta", "alpha", "mid"):
        registry.register(name, plain)
    assert registry.capabilities() == ["alpha", "mid", "zeta"]
    assert Registry().capabilities() == []


def test_registering_the_same_function_again_is_harmless() -> None:
    registry = Registry()
    registry.register("x", plain)
    registry.register("x", plain)  # a module imported twice re-runs its decorators
    assert registry.capabilities() == ["x"]


def test_another_function_for_a_taken_capability_is_refused_naming_the_first_module() -> None:
    registry = Registry()
    registry.register("x", plain)
    with pytest.raises(ConfigError, match=rf"'x' already has a handler in {__name__}"):
        registry.register("x", coroutine)
    assert registry.get("x") is not None and registry.get("x").func is plain  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x" * 65, "end\n", "semi;colon", "{tag}"])
def test_invalid_capability_names_are_refused(name: str) -> None:
    registry = Registry()
    with pytest.raises(ConfigError, match="invalid capability"):
        registry.register(name, plain)
    assert registry.capabilities() == []


def test_the_decorator_fills_the_process_registry_and_returns_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Registry()
    monkeypatch.setattr(registry_module, "REGISTRY", fresh)  # keep the real process-wide registry clean

    @handler("decorated")
    async def decorated(task: Task) -> int:
        return 1

    assert fresh.get("decorated") is not None
    assert fresh.get("decorated").func is decorated  # type: ignore[union-attr]
    assert fresh.get("decorated").is_async  # type: ignore[union-attr]


def test_builtins_register_on_import() -> None:
    import workers.builtins  # noqa: F401

    found = registry_module.REGISTRY.capabilities()
    assert {"echo", "noop", "sleep"} <= set(found)
    assert registry_module.REGISTRY.get("echo").is_async  # type: ignore[union-attr]
    assert not registry_module.REGISTRY.get("noop").is_async  # type: ignore[union-attr]

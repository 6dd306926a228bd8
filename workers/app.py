"""Finding the user's handler module: ``--app``, else ``DISPATCHER_APP``, else ``pyproject.toml``."""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.errors import ConfigError
from workers.registry import REGISTRY, Registry


@dataclass(slots=True)
class Loaded:
    """What was imported, for error messages: the modules searched and where the name came from."""

    modules: list[str] = field(default_factory=list)
    source: str = "built-ins only"


def app_name(cli_value: str | None, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[str, str]:
    """The app import string and where it came from; ``("", ...)`` when none is configured."""
    if cli_value:
        return cli_value, "--app"
    environ = os.environ if env is None else env
    if environ.get("DISPATCHER_APP"):
        return environ["DISPATCHER_APP"], "DISPATCHER_APP"
    pyproject = (cwd or Path.cwd()) / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read {pyproject}: {e}") from e
        value = data.get("tool", {}).get("agent-dispatcher", {}).get("app")
        if isinstance(value, str) and value:
            return value, str(pyproject)
    return "", "built-ins only"


def load(cli_value: str | None) -> tuple[Registry, Loaded]:
    """Import the built-ins and the app (``module`` or ``module:attr``) and return the filled registry.

    ``module:attr`` may name a ``Registry`` object; otherwise the module's ``@handler`` functions register
    themselves in the process-wide registry on import.

    Raises:
        ConfigError: the module cannot be imported, or ``attr`` is missing.
    """
    import workers.builtins  # noqa: F401 - registers echo, noop, sleep

    name, source = app_name(cli_value)
    loaded = Loaded(modules=["workers.builtins"], source=source)
    if not name:
        return REGISTRY, loaded
    module_name, _, attr = name.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory's modules are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import app module {module_name!r} (from {source}): {e}") from e
    loaded.modules.append(module_name)
    if not attr:
        return REGISTRY, loaded
    target = getattr(module, attr, None)
    if target is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (from {source})")
    if not isinstance(target, Registry):
        raise ConfigError(f"{name!r} (from {source}) is a {type(target).__name__}, not a workers.Registry")
    loaded.modules = [name]  # handlers come from that registry alone, not from the built-ins
    return target, loaded

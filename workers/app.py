"""Finding the user's handler module: ``--app``, else ``DISPATCHER_APP``, else ``pyproject.toml``."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from dispatcher.errors import ConfigError
from workers.registry import REGISTRY, Registry

log = logging.getLogger(__name__)


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
    """Import the built-ins and the app and return the filled registry.

    The app is ``module`` or ``module:attr``, where ``module`` is a module name (found from the current directory
    or ``sys.path``) or the path of a ``.py`` file (``./myapp.py``, ``src/myapp.py``: its directory is searched
    first, and it is imported by its file name, so it must not rely on being part of a package).
    ``module:attr`` may name a ``Registry`` object; otherwise the module's ``@handler`` functions register
    themselves in the process-wide registry on import.

    Raises:
        ConfigError: a malformed name, a module that cannot be found or fails at import (the message gives the
            exception and its file:line; the traceback is logged at DEBUG), or ``attr`` missing.
    """
    import workers.builtins  # noqa: F401 - registers echo, noop, sleep

    name, source = app_name(cli_value)
    loaded = Loaded(modules=["workers.builtins"], source=source)
    if not name:
        return REGISTRY, loaded
    module_name, attr = _split(name, source)
    module = _import(module_name, source)
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


def _split(name: str, source: str) -> tuple[str, str]:
    """``(module name, attr)`` of an app string; a ``.py`` path puts its directory first on ``sys.path``."""
    spec, colon, attr = name.partition(":")
    usage = "use 'module' or 'module:attr' (or a path to a .py file)"
    if not spec:
        raise ConfigError(f"app {name!r} (from {source}) has no module before ':'; {usage}")
    if colon and not attr:
        raise ConfigError(f"app {name!r} (from {source}) has nothing after ':'; {usage}")
    if spec.endswith(".py") or "/" in spec:
        return _from_path(Path(spec), name, source), attr
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory's modules are importable
    return spec, attr


def _from_path(path: Path, name: str, source: str) -> str:
    if path.suffix != ".py":
        raise ConfigError(f"app {name!r} (from {source}): {path} is not a .py file; give a module name or a .py path")
    if not path.is_file():
        raise ConfigError(f"app {name!r} (from {source}): no file {path} (working directory {os.getcwd()})")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return path.stem


def _import(module_name: str, source: str) -> ModuleType:
    """Import the app module; every way it can fail becomes one ``ConfigError`` line."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):  # the app itself (or its package)
            raise ConfigError(
                f"cannot import app module {module_name!r} (from {source}): {e}; give a module importable from the "
                "current directory or sys.path, or a path to a .py file"
            ) from e
        raise _failed(module_name, source, e) from e
    except SyntaxError as e:
        where = f"{e.filename}:{e.lineno}" if e.filename else f"line {e.lineno}"
        raise ConfigError(f"app module {module_name!r} (from {source}) has a syntax error at {where}: {e.msg}") from e
    except Exception as e:  # whatever the module raises while it runs at import
        raise _failed(module_name, source, e) from e


def _failed(module_name: str, source: str, error: Exception) -> ConfigError:
    log.debug("app module %r failed at import", module_name, exc_info=error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return ConfigError(
        f"app module {module_name!r} (from {source}) failed at import{where}: {type(error).__name__}: {error} "
        "(--log-level DEBUG shows the traceback)"
    )

"""The argument parsing every command shares: mistakes as ``UsageError``, flags that mirror ``Settings`` fields.

argparse's own reaction to a mistake is to print the usage and raise ``SystemExit(2)``, which ends an in-process
caller. ``Parser`` raises ``UsageError`` instead, and ``parse`` turns it into one ``<prog>: error: ...`` line and
``Exit.USAGE``, so a command's ``main(argv)`` returns its exit code for every outcome.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import NoReturn

from dispatcher.cli.exits import Exit, say_error
from dispatcher.errors import ConfigError
from dispatcher.settings import Settings


class UsageError(ConfigError):
    """A command-line mistake, found by argparse or by a command's own checks (one line, ``Exit.USAGE``)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` on a mistake (its subparsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        """Raise the mistake instead of printing the usage and exiting."""
        raise UsageError(message)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | Exit:
    """Parse ``argv`` (``sys.argv[1:]`` when None) with ``parser``, a ``Parser``.

    Returns:
        The parsed arguments; or, once a mistake was reported on stderr, ``Exit.USAGE``; or, once ``--help``
        was printed, ``Exit.OK``.
    """
    try:
        return parser.parse_args(argv)
    except UsageError as e:
        say_error(parser.prog, e)
        return Exit.USAGE
    except SystemExit as e:  # only --help (and --version) get here: mistakes raise UsageError above
        return Exit.OK if e.code in (0, None) else Exit.USAGE


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer of at least 1 (a count such as ``--concurrency``)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count of at least 1")
    return value


def port(text: str) -> int:
    """An argparse ``type``: a TCP port, 1 to 65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def flag(name: str) -> str:
    """The flag of the settings field ``name``: ``heartbeat_ttl_s`` -> ``--heartbeat-ttl-s``."""
    return "--" + name.replace("_", "-")


def setting_help(name: str) -> str:
    """The help of a settings flag: the field's description, then where an unset flag's value comes from."""
    field = Settings.model_fields[name]
    env = "$DISPATCHER_REDIS_URL, $REDIS_URL" if name == "redis_url" else f"$DISPATCHER_{name.upper()}"
    default = "none" if field.default is None else field.default
    # argparse %-formats help strings: a literal % must be doubled.
    return f"{field.description} (default: {env}, else {default})".replace("%", "%%")


def add_settings_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add a flag for each settings field in ``names`` (every field when None), ``dest`` the field's name.

    An unset flag is None, so ``Settings.from_env(**overrides)`` falls back to the environment, then the default.
    """
    for name in Settings.model_fields if names is None else names:
        parser.add_argument(flag(name), dest=name, default=None, metavar=_metavar(name), help=setting_help(name))


def _metavar(name: str) -> str:
    if name.endswith("_s"):
        return "SECONDS"
    if name.endswith("_ms"):
        return "MS"
    annotation = Settings.model_fields[name].annotation
    if annotation in (int, float):
        return "N"
    return "PATH" if annotation is not str else name.rpartition("_")[2].upper()  # the ssl_* files are optional paths

"""How the commands log: human-readable lines by default, or one JSON object per line for log shippers.

``--log-format json`` (or ``DISPATCHER_LOG_FORMAT=json``) on ``worker`` and ``dispatcher``. Each object has
``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``event`` (the message), plus each of ``FIELDS`` that the log
call carried in ``extra=``. Only the commands call ``configure``; library modules just log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from dispatcher.errors import ConfigError

FORMATS = ("text", "json")
ENV = "DISPATCHER_LOG_FORMAT"
FIELDS = ("task_id", "capability", "attempt", "outcome", "duration_s", "consumer", "reason", "error", "entry_id")
"""The ``extra=`` keys a JSON line carries when a log call gives them (never a payload)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object (an exception's traceback under ``exception``, escaped onto the line)."""
        time = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, object] = {
            "time": time.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def format_of(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The log format: the flag's value, else ``DISPATCHER_LOG_FORMAT``, else ``text``.

    Raises:
        ConfigError: the value is not one of ``FORMATS`` (the message names where it came from).
    """
    raw = flag or (os.environ if env is None else env).get(ENV) or "text"
    value = raw.lower()
    if value not in FORMATS:
        source = "--log-format" if flag else ENV
        raise ConfigError(f"{source}: {raw!r} is not one of {', '.join(FORMATS)}")
    return value


def add_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format`` (unset: ``DISPATCHER_LOG_FORMAT``, else text) to a command's parser."""
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=FORMATS,
        help=f"log lines as text or as one JSON object per line (default: ${ENV}, else text)",
    )


def configure(level: str | int, fmt: str, text_format: str, stream: TextIO | None = None) -> None:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr), as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level, handlers=[handler])

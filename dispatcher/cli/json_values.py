"""The JSON form in which the ``dispatcher`` command prints task values (results): msgpack values JSON cannot hold.

A result is msgpack (docs/wire-format.md, section 6), which carries what JSON does not: raw bytes, maps whose keys
are not strings, and the floats NaN and ±infinity. Each of those is printed as a one-key object whose key starts
with ``$`` (documented in the README, "From the shell"):

    b"\\x00\\x01"               {"$bytes": "AAE="}               (standard base64)
    {b"k": 1}                 {"$map": [[{"$bytes": "aw=="}, 1]]}  (key-value pairs, in order)
    float("nan"), ±inf        {"$float": "nan"}, {"$float": "inf"}, {"$float": "-inf"}

A string-keyed map that would read as one of these forms (a single key ``$bytes``, ``$map`` or ``$float``) is
printed as ``$map`` too, so every printed value means one thing. Everything else prints as plain JSON. The
decoder refuses msgpack ext types (and timestamps), so a record holding one never gets here: the command prints
one error line instead.
"""

from __future__ import annotations

import base64
import math
from typing import Any

TAGS = frozenset({"$bytes", "$map", "$float"})


def to_json(value: Any) -> Any:
    """``value`` (as msgpack decodes it: None, bool, int, float, str, bytes, list, dict) in its JSON form."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in TAGS):
            return {k: to_json(v) for k, v in value.items()}
        return {"$map": [[to_json(k), to_json(v)] for k, v in value.items()]}
    return value

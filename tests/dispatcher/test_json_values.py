"""The JSON form of task values: bytes, non-string keys and non-finite floats, nested at any depth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.cli.json_values import to_json


@pytest.mark.parametrize(
    ("value", "form"),
    [
        (b"\x00\xffbin", {"$bytes": "AP9iaW4="}),
        (b"", {"$bytes": ""}),
        ([b"a", [b"b"]], [{"$bytes": "YQ=="}, [{"$bytes": "Yg=="}]]),
        ({"k": b"v"}, {"k": {"$bytes": "dg=="}}),
        ({b"k": 1, "s": 2}, {"$map": [[{"$bytes": "aw=="}, 1], ["s", 2]]}),
        ({1: "int key"}, {"$map": [[1, "int key"]]}),
        (float("nan"), {"$float": "nan"}),
        ([float("inf"), float("-inf")], [{"$float": "inf"}, {"$float": "-inf"}]),
        # A map that would read as a tagged form is a $map itself, so each printed value means one thing.
        ({"$bytes": "AA=="}, {"$map": [["$bytes", "AA=="]]}),
        ({"$bytes": "AA==", "other": 1}, {"$bytes": "AA==", "other": 1}),
        ({"a": [1, 2.5, None, True, "s"]}, {"a": [1, 2.5, None, True, "s"]}),
    ],
)
def test_json_form(value: Any, form: Any) -> None:
    assert to_json(value) == form
    json.dumps(to_json(value), allow_nan=False)  # always valid JSON

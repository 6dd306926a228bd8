"""``dispatcher limits``: set a limit, list limits (table and JSON), and each user mistake as one line."""

from __future__ import annotations

import json

import pytest
from helpers import one_error_line

from dispatcher import Dispatcher, Task
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main


def test_set_then_list_as_json_and_table(
    cli: list[str], dispatcher: Dispatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["limits", "set", "openai-rpm", "--rate", "500/min", "--burst", "50", *cli]) == Exit.OK
    assert main(["limits", "set", "openai-tpm", "--rate", "200000/min", *cli]) == Exit.OK
    assert "burst 3333" in capsys.readouterr().out  # one second of the rate by default
    dispatcher.submit_many([Task(capability="llm", rate_limits={"openai-rpm": 1}) for _ in range(3)])
    assert main(["limits", "--json", *cli]) == Exit.OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["limits"][0] == {"name": "openai-rpm", "rate_per_min": 500.0, "burst": 50, "available": 50}
    assert doc["limits"][1]["name"] == "openai-tpm"
    assert doc["waiting_for_limit"] == {"llm": 3}  # no admitter runs here
    assert main(["limits", *cli]) == Exit.OK
    out = capsys.readouterr().out
    assert "openai-rpm" in out and "waiting for a limit: llm: 3 task(s)" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["limits", "set", "x"], "limits set needs a NAME and --rate"),
        (["limits", "set", "x", "--rate", "fast"], "invalid rate 'fast'"),
        (["limits", "set", "x", "--rate", "0/s"], "invalid rate '0/s'"),
        (["limits", "set", "Bad Name", "--rate", "1/s"], "invalid rate limit name"),
        (["limits", "set", "x", "--rate", "10/s", "--burst", "0"], "invalid burst 0"),
        (["limits", "list", "x"], "limits list takes no NAME"),
        (["limits", "set-concurrency", "repo"], "needs a CAPABILITY and --per-key"),
        (["limits", "set-concurrency", "repo", "--per-key", "0"], "invalid --per-key 0"),
        (["limits", "set-concurrency", "Bad Cap", "--per-key", "2"], "invalid capability"),
        (["limits", "set-weight", "shared", "tenant-42"], "needs a CAPABILITY, a TENANT and a WEIGHT"),
        (["limits", "set-weight", "shared", "tenant-42", "0"], "invalid weight 0"),
    ],
)
def test_mistakes_are_one_line(argv: list[str], said: str, cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, *cli]) == Exit.USAGE
    out, err = capsys.readouterr()
    assert said in one_error_line(err)
    assert out == ""


def test_set_concurrency_shows_in_the_list(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "set-concurrency", "code_generation", "--per-key", "2", *cli]) == Exit.OK
    assert "at most 2 running per concurrency_key" in capsys.readouterr().out
    assert main(["limits", "--json", *cli]) == Exit.OK
    assert json.loads(capsys.readouterr().out)["concurrency_caps"] == {"code_generation": 2}


def test_set_weight(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "set-weight", "code_generation", "tenant-42", "3", *cli]) == Exit.OK
    assert "tenant 'tenant-42' weighs 3" in capsys.readouterr().out

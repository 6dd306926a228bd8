"""``dispatcher capabilities [--json]`` and ``dispatcher capabilities forget NAME``, against the real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from helpers import fake_live_worker, keyspace, one_error_line

from dispatcher import Dispatcher, KeySpace, Settings
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main
from dispatcher.fleet import capabilities
from dispatcher.store import retire


def known(client: redis.Redis, prefix: str) -> set[str]:
    return {m.decode() for m in client.smembers(KeySpace(prefix).capabilities)}


def test_capabilities_list(
    cli: list[str], dispatcher: Dispatcher, client: redis.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatcher.submit("echo", 1)
    dispatcher.submit("ehco", 1)
    dispatcher.submit("ehco", 2, delay_s=3600)
    fake_live_worker(client, prefix, "echo")
    assert main(["capabilities", "--json", *cli]) == Exit.OK
    listed = json.loads(capsys.readouterr().out)
    fields = ("name", "waiting", "running", "delayed", "dead", "workers", "open_circuits")
    # The objects are those of `stats --json` (which carries more fields): the counts must be these.
    assert [{k: c[k] for k in fields} for c in listed["capabilities"]] == [
        {"name": "echo", "waiting": 1, "running": 0, "delayed": 0, "dead": 0, "workers": 1, "open_circuits": 0},
        {"name": "ehco", "waiting": 1, "running": 0, "delayed": 1, "dead": 0, "workers": 0, "open_circuits": 0},
    ]
    assert list(listed) == ["capabilities"]
    assert main(["capabilities", *cli]) == Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["capability", "waiting", "running", "delayed", "dead", "workers"]
    assert lines[1].split() == ["echo", "1", "0", "0", "0", "1"]
    assert lines[2].split() == ["ehco", "1", "0", "1", "0", "0"]
    assert lines[3].startswith("no live worker: ehco ")


def test_forget_removes_a_capability_nothing_uses(
    cli: list[str], dispatcher: Dispatcher, client: redis.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = dispatcher.submit("ehco", 1)
    keys = KeySpace(prefix).capability("ehco")
    client.hdel(keys.index, handle.id)  # the task, cancelled by hand: the capability holds nothing
    client.delete(keys.stream)
    client.xgroup_create(keys.stream, "workers", id="0", mkstream=True)
    assert main(["capabilities", "forget", "ehco", *cli]) == Exit.OK
    assert capsys.readouterr().out.strip() == "forgot capability 'ehco'"
    assert "ehco" not in known(client, prefix)
    assert keyspace(client, prefix) == set()  # every key of it is gone
    assert main(["capabilities", "--json", *cli]) == Exit.OK
    assert json.loads(capsys.readouterr().out) == {"capabilities": []}

    with Dispatcher(Settings.build(redis_url=dispatcher.settings.redis_url, prefix=prefix)) as fresh:
        fresh.submit("ehco", 2)  # a later submit brings it back
    assert "ehco" in known(client, prefix)


@pytest.mark.parametrize("kind", ["waiting", "delayed", "served", "dead"])
def test_forget_refuses_a_capability_in_use(
    kind: str,
    cli: list[str],
    dispatcher: Dispatcher,
    client: redis.Redis,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = KeySpace(prefix).capability("ehco")
    if kind == "waiting":
        dispatcher.submit("ehco", 1)
        said = "it has tasks: 1 waiting, 0 running, 0 delayed"
    elif kind == "delayed":
        dispatcher.submit("ehco", 1, delay_s=3600)
        said = "it has tasks: 0 waiting, 0 running, 1 delayed"
    elif kind == "served":
        fake_live_worker(client, prefix, "ehco")
        said = "1 live worker(s) serve it"
    else:
        client.sadd(KeySpace(prefix).capabilities, "ehco")
        client.xadd(keys.dead, {"reason": "rejected"})
        said = "it has 1 dead letter(s) (dispatcher dlq list ehco; --purge-dead deletes them)"
    before = keyspace(client, prefix)
    assert main(["capabilities", "forget", "ehco", *cli]) == Exit.REFUSED
    out, err = capsys.readouterr()
    assert said in one_error_line(err)
    assert out == ""
    assert keyspace(client, prefix) == before
    assert "ehco" in known(client, prefix)
    if kind == "dead":
        assert main(["capabilities", "forget", "ehco", "--purge-dead", *cli]) == Exit.OK
        assert capsys.readouterr().out.strip() == "forgot capability 'ehco' and its 1 dead letter(s)"
        assert keyspace(client, prefix) == set()


def test_a_submit_between_the_drop_and_leaving_the_set_keeps_the_capability(
    cli: list[str],
    dispatcher: Dispatcher,
    client: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client.sadd(KeySpace(prefix).capabilities, "ehco")
    leave_set = retire.leave_set
    submitted: list[Any] = []

    def submit_first(capabilities_key: str, name: str) -> Any:
        submitted.append(dispatcher.submit("ehco", 1))  # lands after the drop, before the SREM
        return leave_set(capabilities_key, name)

    monkeypatch.setattr(capabilities.retire, "leave_set", submit_first)
    assert main(["capabilities", "forget", "ehco", *cli]) == Exit.REFUSED
    assert "it has tasks" in one_error_line(capsys.readouterr().err)
    assert "ehco" in known(client, prefix)
    assert dispatcher.handle(submitted[0].id).status() == "queued"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["capabilities", "forget", "nothing.here"], Exit.NOT_FOUND),
        (["capabilities", "forget"], Exit.USAGE),
        (["capabilities", "forget", "Bad Name"], Exit.USAGE),
        (["capabilities", "list", "echo"], Exit.USAGE),
        (["capabilities", "purge"], Exit.USAGE),
    ],
)
def test_capabilities_mistakes(argv: list[str], code: int, cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, *cli]) == code
    out, err = capsys.readouterr()
    one_error_line(err)
    assert out == ""

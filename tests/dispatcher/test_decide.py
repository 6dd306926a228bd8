"""Pure decisions (``dispatcher.fleet.decide``): the dead letter of an undecodable entry and error descriptions."""

from __future__ import annotations

from dispatcher import RateLimited, Task
from dispatcher.fleet import decide
from dispatcher.settings import Settings
from dispatcher.store import codec
from dispatcher.store.keys import KeySpace
from dispatcher.store.transitions import Bury, Requeue

KEYS = KeySpace("p").capability("echo")
CTX = decide.Context(Settings.build(), "w1")


def test_the_raw_fields_of_an_undecodable_entry_stay_within_the_limit() -> None:
    fields = {(f"f{i:02}" + "n" * 62).encode(): b"v" * 100_000 for i in range(20)}
    transition = decide.undecodable(CTX, KEYS, "1-0", fields, ValueError("bad")).transition
    assert isinstance(transition, Bury)
    raw = dict(transition.letter)["raw"]
    assert isinstance(raw, bytes) and len(raw) <= decide.RAW_LIMIT
    kept = codec.unpack(raw, 1 << 20)
    assert len(kept) == 16 and all(len(k) == 64 for k in kept)


def test_an_untrusted_task_id_is_marked_so_the_script_checks_it() -> None:
    task = b"\x83\xa2id\xa3t-1\xa7payload\x01\xacsubmitted_at\x00"
    transition = decide.undecodable(CTX, KEYS, "1-0", {b"v": b"9", b"task": task}, ValueError("v")).transition
    assert isinstance(transition, Bury)
    assert (transition.task_id, transition.trusted_id) == ("t-1", False)


def test_describing_an_exception_whose_str_raises_never_raises() -> None:
    class Bad(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    name, message, _ = decide.describe(Bad())
    assert (name, message) == ("Bad", "<unprintable Bad>")
    long = decide.describe(ValueError("x" * 100_000))[1]
    assert len(long) < decide.MESSAGE_LIMIT + 40 and long.endswith("(100000 characters)")


def _delivery(attempt: int) -> codec.Delivery:
    task = Task(capability="echo", payload=1, max_retries=0)
    return codec.Delivery("1-0", task, codec.encode_task(task, 1 << 16), attempt, 0, b"1")


def test_rate_limited_hands_back_after_the_wait_spending_no_attempt_and_pauses_the_limit() -> None:
    decision = decide.failed(CTX, KEYS, _delivery(1), RateLimited(retry_after_s=2.5, limit="openai-rpm"))
    t = decision.transition
    assert isinstance(t, Requeue)
    assert (decision.outcome, decision.reason) == ("rate_limited", "openai-rpm")
    assert (t.attempt, t.delay_ms, t.failed_attempt) == (1, 2500, False)  # max_retries=0 would have buried it
    assert t.pause_limit == KeySpace(CTX.settings.prefix).limit("openai-rpm").state


def test_rate_limited_with_a_bad_limit_name_pauses_nothing_and_still_waits() -> None:
    t = decide.failed(CTX, KEYS, _delivery(1), RateLimited(retry_after_s=1, limit="Not A Name")).transition
    assert isinstance(t, Requeue)
    assert (t.pause_limit, t.delay_ms) == (None, 1000)


def _flow_delivery(**options: object) -> codec.Delivery:
    task = Task(capability="echo", payload=1, **options)  # type: ignore[arg-type]
    return codec.Delivery("1-0", task, codec.encode_task(task, 1 << 16), 1, 0, codec.version_of(task))


def test_a_retry_of_a_flow_controlled_task_names_its_lane_a_hand_back_and_a_keyed_reclaim_none() -> None:
    limited = _flow_delivery(rate_limits={"api": 1}, priority=3)
    keyed = _flow_delivery(concurrency_key="repo-1")
    retried = decide.failed(CTX, KEYS, limited, ValueError("x")).transition
    assert isinstance(retried, Requeue) and (retried.lane, retried.attempt) == ("w3", 2)
    assert getattr(decide.failed(CTX, KEYS, keyed, ValueError("x")).transition, "lane", None) == "k0"
    back = decide.failed(CTX, KEYS, limited, RateLimited(retry_after_s=1, limit="api")).transition
    assert isinstance(back, Requeue) and (back.lane, back.attempt, back.failed_attempt) == ("w3", 1, False)
    for decision in (decide.reclaim(CTX, KEYS, keyed, True), decide.hand_back(CTX, KEYS, keyed)):
        assert getattr(decision.transition, "lane", None) == ""  # on the stream at once: the permit it holds stays
    both = _flow_delivery(rate_limits={"api": 1}, concurrency_key="repo-1")
    assert getattr(decide.reclaim(CTX, KEYS, both, True).transition, "lane", None) == ""  # keeps its permit
    reclaimed = decide.reclaim(CTX, KEYS, limited, False).transition  # no key: its rerun takes its units again
    assert isinstance(reclaimed, Requeue) and (reclaimed.lane, reclaimed.attempt, reclaimed.reclaims) == ("w3", 2, 1)
    assert decide.hand_back(CTX, KEYS, limited).transition.lane == ""  # type: ignore[union-attr]
    plain = decide.failed(CTX, KEYS, _flow_delivery(), ValueError("x")).transition
    assert getattr(plain, "lane", None) == ""

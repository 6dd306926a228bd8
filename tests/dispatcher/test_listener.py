"""The listener's bookkeeping (sans-IO): who is subscribed, whom a message wakes, what to unsubscribe."""

from __future__ import annotations

import time

import pytest

from dispatcher.errors import ResultTimeout
from dispatcher.producer.subscriptions import MAX_HELD, MAX_HELD_BYTES, RECHECK_S, Subscriptions, Waiter, remaining_s


class Recorder:
    """A waiter whose wake-ups are counted."""

    def __init__(self, channel: str) -> None:
        self.wakes = 0
        self.waiter = Waiter(channel, self._wake)

    def _wake(self) -> None:
        self.wakes += 1


def message(kind: str, channel: str, data: object = 1) -> dict[str, object]:
    return {"type": kind, "channel": channel.encode(), "data": data, "pattern": None}


def test_only_the_first_waiter_of_a_channel_subscribes_and_later_ones_re_read_at_once() -> None:
    subs = Subscriptions()
    first, second = Recorder("c"), Recorder("c")
    assert subs.join(first.waiter) is True
    assert (first.wakes, subs.busy) == (0, True)
    assert subs.join(second.waiter) is False
    assert (first.wakes, second.wakes) == (0, 1)  # the confirmation may have come already: re-read now


def test_a_subscribe_confirmation_wakes_its_channels_waiters_to_re_read() -> None:
    subs = Subscriptions()
    a, b = Recorder("a"), Recorder("b")
    subs.join(a.waiter)
    subs.join(b.waiter)
    subs.deliver(message("subscribe", "a"))
    assert (a.wakes, b.wakes) == (1, 0)
    assert a.waiter.record is None


def test_an_announcement_hands_its_record_to_every_waiter_of_the_channel() -> None:
    subs = Subscriptions()
    one, two, other = Recorder("c"), Recorder("c"), Recorder("d")
    for r in (one, two, other):
        subs.join(r.waiter)
    subs.deliver(message("message", "c", b"record"))
    assert (one.waiter.record, two.waiter.record, other.waiter.record) == (b"record", b"record", None)
    assert other.wakes == 0


def test_messages_for_channels_nobody_waits_on_are_ignored_and_a_stray_subscription_is_dropped() -> None:
    subs = Subscriptions()
    subs.deliver(message("message", "gone", b"x"))
    assert subs.take_idle() == []
    subs.deliver(message("subscribe", "gone"))  # re-subscribed after a reconnect, nobody waits any more
    assert subs.take_idle() == ["gone"]


def test_a_channel_is_unsubscribed_only_when_its_last_waiter_left_and_nobody_rejoined() -> None:
    subs = Subscriptions()
    one, two = Recorder("c"), Recorder("c")
    subs.join(one.waiter)
    subs.join(two.waiter)
    subs.leave(one.waiter)
    assert subs.take_idle() == []
    subs.leave(two.waiter)
    subs.leave(two.waiter)  # leaving twice is harmless
    assert not subs.busy
    again = Recorder("c")
    assert subs.join(again.waiter) is True  # re-joined before the reader unsubscribed: subscribe again
    assert subs.take_idle() == []
    subs.leave(again.waiter)
    assert subs.take_idle() == ["c"]
    assert subs.take_idle() == []


def test_wake_all_asks_every_waiter_to_re_read() -> None:
    subs = Subscriptions()
    recorders = [Recorder(c) for c in ("a", "a", "b")]
    for r in recorders:
        subs.join(r.waiter)
    before = [r.wakes for r in recorders]
    subs.wake_all()
    assert [r.wakes - w for r, w in zip(recorders, before, strict=True)] == [1, 1, 1]


def test_remaining_is_capped_by_the_recheck_period_and_raises_past_the_deadline() -> None:
    assert remaining_s(None) == RECHECK_S
    assert 0 < remaining_s(time.monotonic() + 0.5) <= 0.5
    assert remaining_s(time.monotonic() + 3600) == RECHECK_S
    with pytest.raises(ResultTimeout):
        remaining_s(time.monotonic() - 0.001)


def test_held_channels_are_subscribed_once_and_keep_an_announcement_for_a_later_waiter() -> None:
    subs = Subscriptions()
    assert subs.hold(["a", "b"]) == ["a", "b"]
    assert subs.hold(["a"]) == []  # held already
    assert subs.busy and subs.holds("a")
    subs.deliver(message("subscribe", "a"))
    assert subs.take_idle() == []  # a held channel's confirmation is no reason to unsubscribe
    subs.deliver(message("message", "a", b"record"))
    assert subs.take_idle() == ["a"]  # announced: nothing more will come on it
    late = Recorder("a")
    assert subs.join(late.waiter) is False  # no SUBSCRIBE: the announcement is at hand
    assert (late.wakes, late.waiter.record) == (1, b"record")
    subs.leave(late.waiter)
    assert subs.take_idle() == []


def test_a_waiter_on_a_held_channel_re_reads_once_and_then_gets_the_announcement() -> None:
    subs = Subscriptions()
    subs.hold(["a"])
    waiter = Recorder("a")
    assert subs.join(waiter.waiter) is False
    assert (waiter.wakes, waiter.waiter.record) == (1, None)  # the hold may not be confirmed yet: read once
    subs.deliver(message("message", "a", b"record"))
    assert (waiter.wakes, waiter.waiter.record) == (2, b"record")
    subs.leave(waiter.waiter)
    subs.release("a")
    assert subs.take_idle() == ["a"]
    assert not subs.busy


def test_releasing_a_held_channel_unsubscribes_it_unless_someone_waits_on_it() -> None:
    subs = Subscriptions()
    subs.hold(["a", "b"])
    waiter = Recorder("b")
    subs.join(waiter.waiter)
    subs.release_later("a")  # from a finalizer: applied at the reader's next turn
    subs.release_later("b")
    assert sorted(subs.take_idle()) == ["a"]
    assert not subs.holds("a") and not subs.holds("b")
    subs.leave(waiter.waiter)
    assert subs.take_idle() == ["b"]


def test_holding_stops_at_the_cap() -> None:
    subs = Subscriptions()
    assert len(subs.hold([f"c{i}" for i in range(MAX_HELD + 5)])) == MAX_HELD
    assert not subs.holds(f"c{MAX_HELD}")


def test_kept_announcements_are_bounded_by_bytes_and_the_rest_keep_only_the_fact() -> None:
    # 1,000 held tasks settled with 200 KB results while no result() waits: at most MAX_HELD_BYTES of records
    # are kept; a waiter of one whose record was not kept is woken to read it (one GET), without a SUBSCRIBE.
    subs = Subscriptions()
    channels = [f"c{i}" for i in range(1000)]
    subs.hold(channels)
    record = b"r" * 200_000
    for channel in channels:
        subs.deliver(message("message", channel, record))
    got = []
    for channel in channels:
        waiter = Recorder(channel)
        assert subs.join(waiter.waiter) is False  # announced already: never subscribed again
        assert waiter.wakes == 1
        got.append(waiter.waiter.record)
        subs.leave(waiter.waiter)
    kept = [r for r in got if r is not None]
    assert all(r == record for r in kept)
    assert 0 < len(kept) * len(record) <= MAX_HELD_BYTES
    assert sorted(subs.take_idle()) == sorted(channels)  # nothing more will come on any of them


def test_releasing_a_kept_announcement_frees_its_bytes_for_the_next() -> None:
    subs = Subscriptions()
    big = b"r" * (MAX_HELD_BYTES // 2 + 1)
    subs.hold(["a", "b", "c"])
    subs.deliver(message("message", "a", big))
    subs.deliver(message("message", "b", big))  # over the bound: only the fact is kept
    subs.release("a")
    subs.deliver(message("message", "c", big))  # a's bytes were given back
    for channel, expected in (("b", None), ("c", big)):
        waiter = Recorder(channel)
        subs.join(waiter.waiter)
        assert waiter.waiter.record == expected, channel

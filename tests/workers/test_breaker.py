"""The per-capability circuit breaker, on a fake clock."""

from __future__ import annotations

import pytest

from workers.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tripped(clock: Clock, threshold: int = 3, cooldown_s: float = 5.0, max_cooldown_s: float = 30.0) -> Breaker:
    b = Breaker(threshold, cooldown_s, max_cooldown_s, clock=clock)
    assert [b.record(False) for _ in range(threshold)] == [False] * (threshold - 1) + [True]
    return b


def test_closed_lets_every_slot_through(clock: Clock) -> None:
    b = Breaker(3, 5.0, 30.0, clock=clock)
    assert (b.state, b.allowance(7), b.seconds_until_trial()) == ("closed", 7, 0.0)


def test_threshold_consecutive_failures_open_the_circuit(clock: Clock) -> None:
    b = tripped(clock)
    assert (b.state, b.allowance(7), b.trips) == ("open", 0, 1)
    assert b.seconds_until_trial() == pytest.approx(5.0)
    clock.now += 2
    assert b.seconds_until_trial() == pytest.approx(3.0)


def test_a_success_resets_the_count(clock: Clock) -> None:
    b = Breaker(3, 5.0, 30.0, clock=clock)
    b.record(False)
    b.record(False)
    b.record(True)
    assert [b.record(False), b.record(False)] == [False, False]
    assert b.state == "closed"


def test_after_the_cooldown_one_trial_is_let_through(clock: Clock) -> None:
    b = tripped(clock)
    clock.now += 5.0
    assert (b.state, b.allowance(7), b.allowance(0)) == ("half_open", 1, 0)
    b.started()
    assert b.allowance(7) == 0  # only one trial at a time
    assert b.state == "half_open"


def test_a_successful_trial_closes_the_circuit_and_resets_the_cooldown(clock: Clock) -> None:
    b = tripped(clock)
    clock.now += 5.0
    b.started()
    b.record(False)  # a failed trial: the next cool-down is doubled
    assert b.seconds_until_trial() == pytest.approx(10.0)
    clock.now += 10.0
    b.started()
    assert b.record(True) is False
    assert (b.state, b.allowance(7), b.failures) == ("closed", 7, 0)
    assert [b.record(False) for _ in range(3)] == [False, False, True]
    assert b.seconds_until_trial() == pytest.approx(5.0)  # back to the base cool-down


def test_a_failed_trial_reopens_with_a_doubled_cooldown_up_to_the_max(clock: Clock) -> None:
    b = tripped(clock, cooldown_s=5.0, max_cooldown_s=12.0)
    expected = [10.0, 12.0, 12.0]
    for cooldown_s in expected:
        clock.now += b.seconds_until_trial()
        assert b.allowance(5) == 1  # half-open: one trial
        b.started()
        assert b.record(False) is True
        assert b.state == "open"
        assert b.seconds_until_trial() == pytest.approx(cooldown_s)
    assert b.trips == 4


def test_late_failures_of_tasks_taken_before_the_trip_do_not_trip_again(clock: Clock) -> None:
    b = tripped(clock)
    clock.now += 1.0
    assert [b.record(False), b.record(False)] == [False, False]
    assert b.trips == 1
    assert b.seconds_until_trial() == pytest.approx(4.0)  # the open period was not extended


def test_started_while_closed_is_not_a_trial(clock: Clock) -> None:
    b = Breaker(1, 5.0, 30.0, clock=clock)
    b.started()
    assert b.record(False) is True  # a plain failure trips at the threshold, not as a failed trial
    assert b.seconds_until_trial() == pytest.approx(5.0)

"""The per-capability circuit breaker, on a fake clock: it trips on a broken worker, never on a batch of bad input."""

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


def breaker(clock: Clock, threshold: int = 3, cooldown_s: float = 5.0, max_cooldown_s: float = 30.0) -> Breaker:
    return Breaker(threshold, cooldown_s, max_cooldown_s, clock=clock, window=10, ratio=0.8)


def tripped(clock: Clock, threshold: int = 3, cooldown_s: float = 5.0, max_cooldown_s: float = 30.0) -> Breaker:
    b = breaker(clock, threshold, cooldown_s, max_cooldown_s)
    assert [b.failed(f"t{i}") for i in range(threshold)] == [False] * (threshold - 1) + [True]
    return b


def test_closed_lets_every_slot_through(clock: Clock) -> None:
    b = breaker(clock)
    assert (b.state, b.allowance(7), b.seconds_until_trial()) == ("closed", 7, 0.0)


def test_failures_of_enough_different_tasks_open_the_circuit(clock: Clock) -> None:
    b = tripped(clock)
    assert (b.state, b.allowance(7), b.trips) == ("open", 0, 1)
    assert b.seconds_until_trial() == pytest.approx(5.0)
    clock.now += 2
    assert b.seconds_until_trial() == pytest.approx(3.0)


def test_one_task_failing_again_and_again_is_one_bad_task_not_a_broken_worker(clock: Clock) -> None:
    b = breaker(clock, threshold=3)
    assert not any(b.failed("same-task") for _ in range(10))
    assert b.state == "closed"


def test_failures_among_many_successes_do_not_open_it(clock: Clock) -> None:
    b = breaker(clock, threshold=3)
    for i in range(30):  # one failing task in three: a share of 0.33, under the ratio of 0.8
        b.succeeded()
        b.succeeded()
        assert not b.failed(f"t{i}")
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
    b.failed("trial-1")  # a failed trial: the next cool-down is doubled
    assert b.seconds_until_trial() == pytest.approx(10.0)
    clock.now += 10.0
    b.started()
    assert b.succeeded() is True
    assert (b.state, b.allowance(7), b.failures) == ("closed", 7, 0)
    assert [b.failed(f"x{i}") for i in range(3)] == [False, False, True]
    assert b.seconds_until_trial() == pytest.approx(5.0)  # back to the base cool-down


def test_a_failed_trial_reopens_with_a_doubled_cooldown_up_to_the_max(clock: Clock) -> None:
    b = tripped(clock, cooldown_s=5.0, max_cooldown_s=12.0)
    for cooldown_s in [10.0, 12.0, 12.0]:
        clock.now += b.seconds_until_trial()
        assert b.allowance(5) == 1  # half-open: one trial
        b.started()
        assert b.failed("trial") is True
        assert b.state == "open"
        assert b.seconds_until_trial() == pytest.approx(cooldown_s)
    assert b.trips == 4


def test_late_failures_of_tasks_taken_before_the_trip_do_not_trip_again(clock: Clock) -> None:
    b = tripped(clock)
    clock.now += 1.0
    assert [b.failed("late-1"), b.failed("late-2")] == [False, False]
    assert b.trips == 1
    assert b.seconds_until_trial() == pytest.approx(4.0)  # the open period was not extended


def test_a_trial_without_a_verdict_lets_the_next_trial_through(clock: Clock) -> None:
    b = tripped(clock)
    clock.now += 5.0
    b.started()
    assert b.allowance(3) == 0
    b.neutral()  # the trial raised Retry, Reject or a declared input error
    assert b.allowance(3) == 1

"""When a node on simulated time tells the user it is still waiting for /clock."""
from __future__ import annotations

import pytest

from robot_model_deployer.nodes.clock_wait import (ClockNotice, ClockWait, FIRST_WARNING_S, REPEAT_EVERY_S,
                                                   started_message, waiting_message)

POLL_S = 0.5


def notices(wait: ClockWait, until_s: float, time_from_s: float = float("inf")) -> list[tuple[float, ClockNotice]]:
    """Polls like the node's timer; ROS time starts at ``time_from_s``. Returns every notice with its time."""
    said = []
    for tick in range(1, int(until_s / POLL_S) + 1):
        now = tick * POLL_S
        notice = wait.update(now, time_started=now >= time_from_s)
        if notice is not ClockNotice.NOTHING:
            said.append((now, notice))
    return said


def test_it_warns_after_a_few_seconds_then_every_ten_seconds_while_time_stands_still() -> None:
    assert (FIRST_WARNING_S, REPEAT_EVERY_S) == (3.0, 10.0)
    assert notices(ClockWait(), 35.0) == [(3.0, ClockNotice.STILL_WAITING), (13.0, ClockNotice.STILL_WAITING),
                                          (23.0, ClockNotice.STILL_WAITING), (33.0, ClockNotice.STILL_WAITING)]


def test_a_clock_that_comes_in_time_needs_no_word() -> None:
    wait = ClockWait()
    assert notices(wait, 30.0, time_from_s=2.5) == []
    assert wait.done


def test_after_a_warning_it_says_once_that_time_started_and_then_nothing() -> None:
    wait = ClockWait()
    assert notices(wait, 30.0, time_from_s=8.0) == [(3.0, ClockNotice.STILL_WAITING), (8.0, ClockNotice.STARTED)]
    assert wait.done
    assert wait.update(40.0, time_started=False) is ClockNotice.NOTHING, "once started it stays quiet"


def test_a_caller_that_was_away_long_gets_one_warning_not_a_burst() -> None:
    wait = ClockWait()
    assert wait.update(47.0, time_started=False) is ClockNotice.STILL_WAITING
    assert wait.update(47.5, time_started=False) is ClockNotice.NOTHING
    assert wait.update(53.0, time_started=False) is ClockNotice.STILL_WAITING


def test_the_intervals_can_be_chosen() -> None:
    wait = ClockWait(first_after_s=1.0, repeat_every_s=2.0)
    assert notices(wait, 6.0) == [(1.0, ClockNotice.STILL_WAITING), (3.0, ClockNotice.STILL_WAITING),
                                  (5.0, ClockNotice.STILL_WAITING)]


@pytest.mark.parametrize("first, repeat", [(0.0, 10.0), (3.0, -1.0), (float("nan"), 10.0), (3.0, float("inf"))])
def test_intervals_must_be_positive_seconds(first: float, repeat: float) -> None:
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        ClockWait(first, repeat)


def test_the_messages_name_the_topic_and_the_way_out() -> None:
    waiting = waiting_message("/sim/clock", 3.2)
    assert waiting.startswith("waiting for /sim/clock: use_sim_time is true and ROS time is still 0 after 3 s")
    assert "use_sim_time:=false" in waiting
    assert started_message("/sim/clock", 8.4) == "time started on /sim/clock after 8 s"

"""When to tell the user that a node on simulated time is still waiting for ``/clock``.

With ``use_sim_time`` true, ROS time stays at zero until a clock message
arrives, and a node without a simulator (or a bag played without ``--clock``)
waits for ever in silence: no timer fires, no shadow or probation gate
advances. So it says so after a few seconds, then now and again, and once
more when time starts. Plain logic, no ROS: the node feeds it wall-clock
seconds and whether time has started.
"""
from __future__ import annotations

import math
from enum import Enum

FIRST_WARNING_S = 3.0
REPEAT_EVERY_S = 10.0


class ClockNotice(Enum):
    """What to tell the user now."""

    NOTHING = "nothing"
    STILL_WAITING = "still waiting"
    STARTED = "started"  # only after a warning: a clock that comes in time needs no word


class ClockWait:
    """Warns ``first_after_s`` after the node started, then every ``repeat_every_s``, until time starts."""

    def __init__(self, first_after_s: float = FIRST_WARNING_S, repeat_every_s: float = REPEAT_EVERY_S) -> None:
        for name, value in (("first_after_s", first_after_s), ("repeat_every_s", repeat_every_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        self._next_warning_s = first_after_s
        self._repeat_every_s = repeat_every_s
        self._warned = False
        self.done = False  # time has started: nothing more to say, stop asking

    def update(self, waited_s: float, time_started: bool) -> ClockNotice:
        """``waited_s``: wall-clock seconds since the node started; ``time_started``: ROS time is no longer 0."""
        if self.done:
            return ClockNotice.NOTHING
        if time_started:
            self.done = True
            return ClockNotice.STARTED if self._warned else ClockNotice.NOTHING
        if waited_s < self._next_warning_s:
            return ClockNotice.NOTHING
        self._warned = True
        while self._next_warning_s <= waited_s:  # one warning, however long the caller was away
            self._next_warning_s += self._repeat_every_s
        return ClockNotice.STILL_WAITING


def waiting_message(topic: str, waited_s: float) -> str:
    return (f"waiting for {topic}: use_sim_time is true and ROS time is still 0 after {waited_s:.0f} s, so every "
            f"timer and time gate waits. Start the simulator (or play the bag with --clock), or set "
            f"use_sim_time:=false")


def started_message(topic: str, waited_s: float) -> str:
    return f"time started on {topic} after {waited_s:.0f} s"

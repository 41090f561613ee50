"""Caller-given time (ROS time, possibly simulated) as seconds actually watched.

The shadow gate and the probation watch are told the time by their node and
never read a clock, so they work in simulation. Simulation time can jump:
forward when the simulator skips ahead or a bag is seeked, backward when the
simulation is reset or a bag loops. Such a jump is not time spent watching
frames, so it must neither complete a "T seconds" gate nor freeze one.
"""
from __future__ import annotations

import math

# Going back by less than this is two callbacks reading the clock out of
# order, not a reset of the simulation.
DEFAULT_REORDER_TOLERANCE_S = 0.5


class WatchClock:
    """Maps caller times to a steady, never-decreasing count of watched seconds.

    A forward step counts in full up to ``max_step_s`` and is capped beyond
    it; a backward step counts as zero (after a reset the clock follows the
    new timeline). Call it at least every ``max_step_s`` of real progress
    (frames or a timer do) so that ordinary time is never undercounted.
    """

    def __init__(self, max_step_s: float, reorder_tolerance_s: float = DEFAULT_REORDER_TOLERANCE_S) -> None:
        if not (math.isfinite(max_step_s) and max_step_s > 0):
            raise ValueError(f"max_step_s must be a positive number of seconds, got {max_step_s}")
        if not (math.isfinite(reorder_tolerance_s) and reorder_tolerance_s >= 0):
            raise ValueError(f"reorder_tolerance_s must be >= 0 seconds, got {reorder_tolerance_s}")
        self._max_step_s = max_step_s
        self._reorder_tolerance_s = reorder_tolerance_s
        self._latest: float | None = None
        self._watched = 0.0
        self._resets = 0

    @property
    def watched_s(self) -> float:
        """Seconds watched since the first time given."""
        return self._watched

    @property
    def resets(self) -> int:
        """How many times the clock went back (a simulation reset or a bag loop)."""
        return self._resets

    def observe(self, now: float) -> float:
        """Take the caller's time ``now`` (seconds); return the watched seconds at that instant."""
        if not math.isfinite(now):
            raise ValueError(f"time must be a finite number of seconds, got {now}")
        if self._latest is None:
            self._latest = now
        elif now > self._latest:
            self._watched += min(now - self._latest, self._max_step_s)
            self._latest = now
        elif self._latest - now > self._reorder_tolerance_s:
            self._latest = now
            self._resets += 1
        return self._watched

"""Which camera frames the shadow node runs, and on which model.

The shadow node must stay off the live path's CPU, so it runs a frame only
once the live node has answered that frame (in the gap before the next one),
at most ``max_rate`` candidate frames a second, and never queues: a frame
that arrives while a model runs is dropped. After each candidate frame the
next answered frame times the live model (the latency reference), so one gap
between frames never holds two runs.

This is the decision alone, fed with events and told nothing about threads or
ROS; it is not thread-safe, so the node calls it under its own lock.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

P = TypeVar("P")

# Live answers remembered for frames that reach the shadow node after their result does.
ANSWERED_STAMPS = 16


class FrameRun(Enum):
    """Which model a frame taken from the camera is for."""

    CANDIDATE = "candidate"
    REFERENCE = "reference"


@dataclass(frozen=True)
class ScheduledFrame(Generic[P]):
    """A frame to run now: its stamp, what the caller gave with it (e.g. the serialized image), and the model."""

    stamp_ns: int
    payload: P
    run: FrameRun


@dataclass(frozen=True)
class Step(Generic[P]):
    """What one event asks of the caller: count ``dropped`` frames against the candidate, run ``ready``."""

    dropped: int = 0
    ready: ScheduledFrame[P] | None = None


class FrameSchedule(Generic[P]):
    """Takes camera frames and live answers; says which frame to run and which frames were dropped.

    Every frame the candidate does not run on counts as dropped: frames within
    ``1 / max_rate`` of the last candidate frame, frames that arrive while a
    model runs, frames given to the reference, and a candidate frame the live
    node never answered (replaced by a newer one). Nothing is counted while
    the schedule is stopped.
    """

    def __init__(self, max_rate: float, with_reference: bool, answered_memory: int = ANSWERED_STAMPS) -> None:
        if not (math.isfinite(max_rate) and max_rate >= 0):
            raise ValueError(f"max_rate must be >= 0 frames a second (0: no limit), got {max_rate}")
        if answered_memory < 1:
            raise ValueError(f"answered_memory must be >= 1, got {answered_memory}")
        self._min_interval_ns = int(1e9 / max_rate) if max_rate > 0 else 0
        self._with_reference = with_reference
        self._active = False
        self._last_candidate_ns: int | None = None
        self._waiting: ScheduledFrame[P] | None = None  # taken, until the live node answers it
        self._answered: deque[int] = deque(maxlen=answered_memory)
        self._running: FrameRun | None = None  # handed out, until run_done()
        self._reference_due = False

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        self._active = True

    def stop(self) -> None:
        """Stop taking frames and forget the one waiting for its live answer (a running one still finishes)."""
        self._active = False
        self._waiting = None

    def on_image(self, stamp_ns: int, payload: P) -> Step[P]:
        """A camera frame arrived."""
        if not self._active:
            return Step()
        if self._running is not None:
            return Step(dropped=1)
        dropped = 0
        if self._reference_due:
            run = FrameRun.REFERENCE
            dropped += 1
        elif self._last_candidate_ns is None or stamp_ns - self._last_candidate_ns >= self._min_interval_ns:
            run = FrameRun.CANDIDATE
            self._last_candidate_ns = stamp_ns
        else:
            return Step(dropped=1)
        if self._waiting is not None and self._waiting.run is FrameRun.CANDIDATE:
            dropped += 1  # the live node never answered it
        self._waiting = ScheduledFrame(stamp_ns, payload, run)
        return Step(dropped=dropped, ready=self._hand_out() if stamp_ns in self._answered else None)

    def on_live_answer(self, stamp_ns: int) -> Step[P]:
        """The live node published its result for the frame stamped ``stamp_ns``."""
        if not self._active:
            return Step()
        self._answered.append(stamp_ns)
        if self._waiting is not None and self._waiting.stamp_ns == stamp_ns:
            return Step(ready=self._hand_out())
        return Step()

    def run_done(self) -> None:
        """The frame handed out last has finished running; the next frame may be taken."""
        if self._running is None:
            raise RuntimeError("run_done() without a frame handed out")
        self._reference_due = self._running is FrameRun.CANDIDATE and self._with_reference
        self._running = None

    def _hand_out(self) -> ScheduledFrame[P]:
        frame, self._waiting = self._waiting, None
        self._running = frame.run
        self._reference_due = False
        return frame

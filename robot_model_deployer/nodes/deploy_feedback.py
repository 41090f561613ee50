"""Deploy action feedback only when it says something new.

The flow reports progress as often as it has it (every shadow report, every
probation frame: "healthy, 41/41 frames answered"); a client printing each
feedback would scroll a line per frame. Feedback goes out when the stage or
the wording of the message changes (e.g. warming_up -> healthy -> unhealthy),
when progress moves by at least ``PROGRESS_STEP``, or when only its numbers
changed and ``REFRESH_S`` has passed since the last one (so a long stage,
such as a shadow run far from its target, still shows its counts moving).
"""
from __future__ import annotations

import re
import time
from typing import Callable

PROGRESS_STEP = 0.1
REFRESH_S = 2.0
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def wording(message: str) -> str:
    """The message with its numbers masked: what a reader sees as 'the same message'."""
    return _NUMBER.sub("#", message)


class FeedbackGate:
    """Remembers the last feedback sent; ``changed`` says whether the next one is worth sending."""

    def __init__(self, step: float = PROGRESS_STEP, refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._step, self._refresh_s, self._clock = step, refresh_s, clock
        self._last: tuple[str, str, float, str, float] | None = None  # stage, wording, progress, message, time

    def changed(self, stage: str, fraction: float, message: str) -> bool:
        now, last = self._clock(), self._last
        if last is not None and last[0] == stage and last[1] == wording(message):
            moved = abs(fraction - last[2]) >= self._step or fraction >= 1.0 > last[2]
            refreshed = message != last[3] and now - last[4] >= self._refresh_s
            if not (moved or refreshed):
                return False
        self._last = (stage, wording(message), fraction, message, now)
        return True

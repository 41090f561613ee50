"""Deploy action feedback only when it says something new.

The flow reports progress as often as it has it (every shadow report, every
probation frame: "healthy, 41/41 frames answered"); a client printing each
feedback would scroll a line per frame. Feedback goes out when the stage or
the wording of the message changes (e.g. warming_up -> healthy -> unhealthy),
or when progress moves by at least ``PROGRESS_STEP``; counts alone changing
wait for the next step, which carries them.
"""
from __future__ import annotations

import re

PROGRESS_STEP = 0.1
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def wording(message: str) -> str:
    """The message with its numbers masked: what a reader sees as 'the same message'."""
    return _NUMBER.sub("#", message)


class FeedbackGate:
    """Remembers the last feedback sent; ``changed`` says whether the next one is worth sending."""

    def __init__(self, step: float = PROGRESS_STEP) -> None:
        self._step = step
        self._last: tuple[str, str, float] | None = None

    def changed(self, stage: str, fraction: float, message: str) -> bool:
        last = self._last
        if (last is not None and last[0] == stage and last[1] == wording(message)
                and abs(fraction - last[2]) < self._step and not (fraction >= 1.0 > last[2])):
            return False
        self._last = (stage, wording(message), fraction)
        return True

"""Deploy action feedback only when it says something new.

The flow reports progress as often as it has it (every shadow report, every
probation check); a client printing each feedback message would show the
same line many times. Feedback goes out when the stage or the message
changes, or when progress moves by at least ``PROGRESS_STEP``.
"""
from __future__ import annotations

PROGRESS_STEP = 0.05


class FeedbackGate:
    """Remembers the last feedback sent; ``changed`` says whether the next one is worth sending."""

    def __init__(self, step: float = PROGRESS_STEP) -> None:
        self._step = step
        self._last: tuple[str, str, float] | None = None

    def changed(self, stage: str, fraction: float, message: str) -> bool:
        last = self._last
        if (last is not None and last[0] == stage and last[1] == message
                and abs(fraction - last[2]) < self._step and not (fraction >= 1.0 > last[2])):
            return False
        self._last = (stage, message, fraction)
        return True

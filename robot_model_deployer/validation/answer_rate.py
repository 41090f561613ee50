"""How well the old model answered the camera, as the bar for the new one on probation.

A frame lost in transport is lost for every model alike: under Fast DDS's
defaults most 640x480 frames never cross UDP loopback, to the live node or to
the listener that counts them. So probation does not demand a share of the
frames sent. It asks whether the new model answers the frames the listener
heard about as often as the old model did just before the swap, measured by
the same listener on the same graph (AnswerTracker), and it rolls back only
when the new model's count is improbably low for that bar (a one-sided
binomial test, ``improbably_few``): a lossy graph gives less evidence, never a
false verdict.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

# Seconds of live traffic the baseline is measured over (it ends at the swap).
BASELINE_WINDOW_S = 20.0
# Fewer heard frames than this give no baseline: probation then holds the new model to the bar alone.
MIN_BASELINE_FRAMES = 20
# Frames remembered, whatever the clock does.
_MAX_FRAMES = 5_000
# A clock going back further than this is a new timeline (a simulation reset), not jitter between threads.
_CLOCK_BACK_S = 1.0


@dataclass(frozen=True)
class AnswerBaseline:
    """The old model on live traffic: ``share`` of ``frames`` heard got an answer; ``longest_gap_s`` between answers."""

    share: float
    frames: int
    longest_gap_s: float


class AnswerTracker:
    """Rolling record of heard camera frames and answers by stamp, for ``baseline``.

    Fed with the caller's clock (ROS time) from one thread or under a lock.
    """

    def __init__(self, window_s: float = BASELINE_WINDOW_S) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        self._window_s = window_s
        self._frames: OrderedDict[int, tuple[float, bool, bool]] = OrderedDict()  # stamp -> (first seen, heard, answered)
        self._answer_times: deque[float] = deque(maxlen=_MAX_FRAMES)
        self._latest = -math.inf

    def add_frame(self, stamp_ns: int, now: float) -> None:
        """The camera frame stamped ``stamp_ns`` was heard."""
        self._forget(now)
        seen, _, answered = self._frames.get(stamp_ns, (now, False, False))
        self._put(stamp_ns, (seen, True, answered))

    def add_answer(self, stamp_ns: int, now: float) -> None:
        """A result (or a reported error) for the frame stamped ``stamp_ns`` arrived."""
        self._forget(now)
        seen, heard, _ = self._frames.get(stamp_ns, (now, False, False))
        self._put(stamp_ns, (seen, heard, True))
        self._answer_times.append(now)

    def baseline(self, now: float, grace_s: float) -> AnswerBaseline | None:
        """The answered share of the heard frames that have waited ``grace_s``; None with too few of them."""
        self._forget(now)
        judged = [answered for seen, heard, answered in self._frames.values() if heard and seen <= now - grace_s]
        if len(judged) < MIN_BASELINE_FRAMES:
            return None
        times = list(self._answer_times)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        if times:
            gaps.append(now - times[-1])
        return AnswerBaseline(share=sum(judged) / len(judged), frames=len(judged),
                              longest_gap_s=max(gaps, default=self._window_s))

    def _put(self, stamp_ns: int, record: tuple[float, bool, bool]) -> None:
        self._frames[stamp_ns] = record
        if len(self._frames) > _MAX_FRAMES:
            self._frames.popitem(last=False)

    def _forget(self, now: float) -> None:
        if now < self._latest - _CLOCK_BACK_S:
            # The clock went back (a simulation reset): the old timeline says nothing about the new one.
            self._frames.clear()
            self._answer_times.clear()
        self._latest = now
        oldest = now - self._window_s
        while self._frames and next(iter(self._frames.values()))[0] < oldest:
            self._frames.popitem(last=False)
        while self._answer_times and self._answer_times[0] < oldest:
            self._answer_times.popleft()


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if not (0 <= k and 0 < n):
        raise ValueError(f"need 0 <= k and n > 0, got k={k}, n={n}")
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def improbably_few(answered: int, judged: int, bar: float, alpha: float) -> tuple[bool, float]:
    """(too few, tail probability): is ``answered`` of ``judged`` below ``bar`` beyond chance at level ``alpha``?"""
    tail = binomial_tail(answered, judged, bar)
    return tail < alpha, tail

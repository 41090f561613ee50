"""Probation after a swap: is the newly live model keeping up, fast and sane?

The shadow gate judged the candidate beside the old model; probation judges
it alone on the live path, where a failure means an automatic rollback to
the old model (still configured and warm). The manager feeds this watch with
camera frames, published results and errors reported by the live node, and
acts on the first decided status. Times come from the caller (ROS time,
possibly simulated); see watch_clock for jumps.

Frames are matched by camera stamp, never by when things arrived: a frame is
answered when a result or a reported error carries its stamp, however late,
and it is judged only once it has waited the acceptance's grace period. So
delivery jitter (a result heard before its image, a burst of late results)
cannot turn a model that answers every frame into a model that drops them.
The frames judged are those the watcher heard itself; the bar for their
answered share is the old model's, measured the same way before the swap
(answer_rate.AnswerBaseline), and a shortfall counts only when it is beyond
chance, so a lossy transport gives less evidence, never a false rollback.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.validation.answer_rate import AnswerBaseline, improbably_few
from robot_model_deployer.validation.metrics import percentile
from robot_model_deployer.validation.watch_clock import WatchClock

# Bounds the frame records even if the caller's clock stands still while
# frames keep coming (a paused simulator with a live camera).
_MAX_FRAMES = 10_000
# Wall-clock seconds probation may run beyond acceptance.probation_seconds
# before it ends unjudged (the manager's parameter probation_wall_margin_s).
DEFAULT_WALL_MARGIN_S = 30.0


def _require(ok: bool, name: str, value: float, problem: str) -> None:
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"health threshold {name} {problem}, got {value}")


class HealthState(str, Enum):
    WARMING_UP = "warming_up"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    PASSED = "passed"
    # ROS time did not get through probation within the wall-clock limit (a paused /clock):
    # the candidate goes back unjudged, it is not proven bad.
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class HealthThresholds:
    """How probation measures, as opposed to what it demands (that is the bundle's AcceptanceSpec).

    ``latency_samples``: the reported latency percentiles are over the last
    this many results.
    ``max_clock_step_s``: see WatchClock. ``wall_margin_s``: wall-clock
    seconds probation may take beyond ``probation_seconds`` before it ends
    as TIMED_OUT. ``rate_alpha``: a window's answered count fails only when a
    model meeting the bar would answer that few less often than this (a
    one-sided binomial test; the window is re-judged as frames come, so the
    chance of a false rollback per probation is a small multiple of it).
    ``stall_gap_factor``: a stall must also last this many times the old
    model's longest gap between answers (a lossy graph has long gaps).
    ``min_judged_baseline``: when the old model answered less than this
    share of the frames heard, the graph itself loses frames (Fast DDS
    defaults with camera-sized images), and in bursts that follow the CPU
    load, so the share is not judged at all (stalls, errors and NaN still
    are): under load on 2 cores it fell from 68% to 29% for an identical
    model, which no test of independent losses allows for.
    """

    latency_samples: int = 500
    max_clock_step_s: float = 1.0
    wall_margin_s: float = DEFAULT_WALL_MARGIN_S
    rate_alpha: float = 1e-3
    stall_gap_factor: float = 3.0
    min_judged_baseline: float = 0.9

    def __post_init__(self) -> None:
        _require(self.latency_samples >= 1, "latency_samples", self.latency_samples, "must be at least 1")
        _require(self.max_clock_step_s > 0, "max_clock_step_s", self.max_clock_step_s, "must be > 0 seconds")
        _require(self.wall_margin_s > 0, "wall_margin_s", self.wall_margin_s, "must be > 0 seconds")
        _require(0 < self.rate_alpha < 1, "rate_alpha", self.rate_alpha, "must be between 0 and 1")
        _require(self.stall_gap_factor >= 1, "stall_gap_factor", self.stall_gap_factor, "must be at least 1")
        _require(0 <= self.min_judged_baseline <= 1, "min_judged_baseline", self.min_judged_baseline,
                 "must be between 0 and 1")


@dataclass(frozen=True)
class HealthStatus:
    """The probation's state with its reasons and the numbers behind them.

    ``inputs``: camera frames seen (by stamp); ``outputs``, ``errors``: those
    answered with a result or with a reported error, so neither exceeds
    ``inputs``. ``output_ratio`` is the answered share of the heard frames
    last judged (None before a window was judged) and ``answered_bar`` the
    share they are held to; ``latency_p50_ms`` and ``latency_p99_ms`` (reported, not judged) are 0 before
    any result.
    ``clock_idle_s``: wall-clock seconds ROS time has stood still (0 while it
    moves, or when the caller gives no wall time). ``lowest_output_ratio``,
    ``lowest_rate_tail`` (the smallest binomial tail probability of a window;
    it fails below HealthThresholds.rate_alpha) and ``longest_wait_s`` (the
    longest a frame has gone without an answer for it or a newer frame) are
    the worst seen so far; ``stall_limit_s`` is what that wait is held to.
    ``rate_not_judged`` says why the share was not judged ("" when it was).
    """

    state: HealthState
    reasons: tuple[str, ...]
    watched_s: float
    inputs: int
    outputs: int
    errors: int
    non_finite: int
    output_ratio: float | None
    latency_p99_ms: float
    latency_p50_ms: float = 0.0
    clock_idle_s: float = 0.0
    lowest_output_ratio: float | None = None
    longest_wait_s: float = 0.0
    answered_bar: float = 0.0
    rate_not_judged: str = ""
    lowest_rate_tail: float | None = None
    stall_limit_s: float = 0.0

    @property
    def decided(self) -> bool:
        """True once probation is over: roll back unless PASSED."""
        return self.state in (HealthState.UNHEALTHY, HealthState.PASSED, HealthState.TIMED_OUT)


@dataclass
class _Frame:
    seen_s: float  # watched seconds when the frame (or its answer, if that came first) was heard of
    heard: bool = False  # the image itself arrived (only those are judged for rate)
    answered: bool = False
    errored: bool = False


class HealthWatch:
    """Watches the live node during acceptance.probation_seconds after a swap.

    ``answers``: how the old model answered the same listener before the
    swap (None: too few frames heard; the bar is then
    ``probation_min_answered`` of every heard frame and the stall limit
    ``probation_stall_s``). Latency is reported, not judged: the shadow
    compared it side by side with the old model, while two windows of time
    apart on a shared CPU measured the same model up to 3.4x apart. A model
    too slow for the camera fails on its answered share. The first decided
    status is final and returned from then on. Not thread-safe: call it
    from one callback group.
    """

    def __init__(self, acceptance: AcceptanceSpec, thresholds: HealthThresholds = HealthThresholds(),
                 answers: AnswerBaseline | None = None) -> None:
        self.acceptance = acceptance
        self.thresholds = thresholds
        self.answered_bar = acceptance.probation_min_answered * (answers.share if answers else 1.0)
        # Why the share is not judged ("" when it is): the graph drops frames for every model.
        self.rate_not_judged = (
            f"the answered share is not judged: the old model answered only {answers.share:.0%} of the camera "
            "frames the manager heard, so the graph itself loses frames (use the shipped Fast DDS profile, "
            "config/fastdds_large_data.xml)"
            if answers is not None and answers.share < thresholds.min_judged_baseline else "")
        self._bar_source = "acceptance.probation_min_answered" + (
            f" {acceptance.probation_min_answered:.0%} of the {answers.share:.0%} the old model answered"
            if answers else "")
        self.stall_limit_s = max(acceptance.probation_stall_s,
                                 thresholds.stall_gap_factor * answers.longest_gap_s if answers else 0.0)
        self._clock = WatchClock(thresholds.max_clock_step_s)
        self._frames: OrderedDict[int, _Frame] = OrderedDict()
        # Frames with no answer for them or a newer frame, oldest first: a stall is measured by their age.
        self._unanswered: deque[tuple[int, float]] = deque()
        self._newest_heard_s = 0.0  # watched seconds of the newest frame heard: a stall grows only while frames come
        self._latencies: deque[float] = deque(maxlen=thresholds.latency_samples)
        self._inputs = 0
        self._outputs = 0
        self._errors = 0
        self._non_finite = 0
        self._output_ratio: float | None = None
        self._lowest_output_ratio: float | None = None
        self._lowest_rate_tail: float | None = None
        self._longest_wait_s = 0.0
        self._clock_moved = (0.0, 0.0)  # (watched seconds, wall seconds) when ROS time last advanced
        self._decision: HealthStatus | None = None

    def add_input(self, stamp_ns: int, now: float) -> None:
        """A camera frame stamped ``stamp_ns`` was heard at ``now``."""
        watched = self._observe(now)
        self._newest_heard_s = max(self._newest_heard_s, watched)
        if stamp_ns in self._frames:
            self._frames[stamp_ns].heard = True
            return  # its answer came first
        self._frame(stamp_ns, watched).heard = True
        if len(self._unanswered) < _MAX_FRAMES:
            self._unanswered.append((stamp_ns, watched))

    def add_output(self, stamp_ns: int, now: float, latency_ms: float, finite: bool) -> None:
        """The live node published its result for the frame stamped ``stamp_ns``.

        ``finite`` is False when the result held NaN or Inf
        (Prediction.is_finite()). A second result for one frame (two nodes
        during the hand-over) counts once.
        """
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {latency_ms}")
        watched = self._observe(now)
        frame = self._frame(stamp_ns, watched)
        self._answered_up_to(stamp_ns)
        if frame.answered or frame.errored:
            return
        frame.answered = True
        self._outputs += 1
        if not finite:
            self._non_finite += 1
        if frame.seen_s >= self.acceptance.probation_warm_up_s:
            self._latencies.append(latency_ms)

    def add_error(self, stamp_ns: int, now: float) -> None:
        """The live node reported an exception on the frame stamped ``stamp_ns``."""
        watched = self._observe(now)
        frame = self._frame(stamp_ns, watched)
        self._answered_up_to(stamp_ns)
        if frame.answered or frame.errored:
            return
        frame.errored = True
        self._errors += 1

    def status(self, now: float, wall_s: float | None = None) -> HealthStatus:
        """WARMING_UP or HEALTHY while probation runs; UNHEALTHY, PASSED or TIMED_OUT (final) once decided.

        ``wall_s``: wall-clock seconds since probation started, for the
        wall-clock limit and ``clock_idle_s`` (None: neither is judged).
        """
        if self._decision is not None:
            return self._decision
        watched = self._observe(now)
        clock_idle_s = self._clock_idle(watched, wall_s)
        acceptance = self.acceptance
        reasons = self._problems(watched)
        probation_over = watched >= acceptance.probation_seconds
        # probation_seconds 0 is the bundle author opting out of probation, not a silent camera.
        if not reasons and probation_over and self._inputs == 0 and acceptance.probation_seconds > 0:
            reasons = [f"no camera frame arrived during the {acceptance.probation_seconds:g} s probation, "
                       "so the new model was never exercised; check the camera topic"]
        wall_limit = acceptance.probation_seconds + self.thresholds.wall_margin_s
        if reasons:
            state = HealthState.UNHEALTHY
        elif probation_over:
            state = HealthState.PASSED
        elif wall_s is not None and wall_s > wall_limit:
            state = HealthState.TIMED_OUT
            reasons = [f"ROS time advanced only {watched:.1f} of the {acceptance.probation_seconds:g} s of probation "
                       f"in {wall_s:.0f} s of wall-clock time (allowed {wall_limit:g} s: probation_seconds plus the "
                       "manager's probation_wall_margin_s); is /clock paused? The model was not judged"]
        elif watched < acceptance.probation_warm_up_s:
            state = HealthState.WARMING_UP
        else:
            state = HealthState.HEALTHY
        status = HealthStatus(
            state=state, reasons=tuple(reasons), watched_s=watched, inputs=self._inputs, outputs=self._outputs,
            errors=self._errors, non_finite=self._non_finite, output_ratio=self._output_ratio,
            latency_p99_ms=percentile(self._latencies, 99), latency_p50_ms=percentile(self._latencies, 50),
            clock_idle_s=clock_idle_s,
            lowest_output_ratio=self._lowest_output_ratio, longest_wait_s=self._longest_wait_s,
            answered_bar=self.answered_bar, rate_not_judged=self.rate_not_judged, lowest_rate_tail=self._lowest_rate_tail, stall_limit_s=self.stall_limit_s)
        if status.decided:
            self._decision = status
        return status

    def _problems(self, watched: float) -> list[str]:
        acceptance = self.acceptance
        reasons = []
        if self._non_finite:
            reasons.append(f"the model output NaN or Inf in {self._non_finite} of {self._outputs} results; "
                           "none are allowed")
        attempts = self._outputs + self._errors
        error_rate = self._errors / attempts if attempts else 0.0
        # With no error allowed the first one decides; otherwise early frames are too few to give a rate.
        judge_errors = watched >= acceptance.probation_warm_up_s or acceptance.max_error_rate == 0
        if judge_errors and error_rate > acceptance.max_error_rate:
            reasons.append(f"the model raised an error on {self._errors} of {attempts} frames ({error_rate:.1%}); "
                           f"the bundle allows at most {acceptance.max_error_rate:.1%} "
                           "(acceptance.max_error_rate)")
        if watched < acceptance.probation_warm_up_s:
            return reasons
        if self._unanswered:
            waited = self._newest_heard_s - max(self._unanswered[0][1], acceptance.probation_warm_up_s)
            self._longest_wait_s = max(self._longest_wait_s, waited)
            if waited > self.stall_limit_s:
                reasons.append(f"no result for {waited:.1f} s while camera frames keep arriving "
                               f"({len(self._unanswered)} frames unanswered); allowed at most "
                               f"{self.stall_limit_s:.1f} s (acceptance.probation_stall_s, or "
                               f"{self.thresholds.stall_gap_factor:g}x the old model's longest gap between results)")
        reasons += self._rate_problems(watched)
        return reasons

    def _rate_problems(self, watched: float) -> list[str]:
        """Answered share of the heard frames whose answer is overdue, over the last window of them."""
        acceptance = self.acceptance
        newest = watched - acceptance.probation_answer_grace_s
        oldest = max(newest - acceptance.probation_window_s, acceptance.probation_warm_up_s)
        judged = answered = 0
        for frame in reversed(self._frames.values()):  # heard in order of watched time, newest last
            if frame.seen_s > newest:
                continue
            if frame.seen_s < oldest:
                break
            if frame.heard:
                judged += 1
                answered += frame.answered or frame.errored
        if judged < acceptance.probation_min_frames:
            return []
        self._output_ratio = answered / judged
        self._lowest_output_ratio = min(self._output_ratio, self._lowest_output_ratio or 1.0)
        if self.rate_not_judged:
            return []
        too_few, tail = improbably_few(answered, judged, self.answered_bar, self.thresholds.rate_alpha)
        self._lowest_rate_tail = min(tail, self._lowest_rate_tail if self._lowest_rate_tail is not None else 1.0)
        if not too_few:
            return []
        return [f"only {answered} of {judged} camera frames got a result within "
                f"{acceptance.probation_answer_grace_s:g} s ({self._output_ratio:.0%}, over the last "
                f"{min(acceptance.probation_window_s, newest - oldest):.1f} s), well below the "
                f"{self.answered_bar:.0%} required ({self._bar_source})"]

    def _frame(self, stamp_ns: int, watched: float) -> _Frame:
        frame = self._frames.get(stamp_ns)
        if frame is None:
            frame = self._frames[stamp_ns] = _Frame(watched)
            self._inputs += 1
            if len(self._frames) > _MAX_FRAMES:
                self._frames.popitem(last=False)
        return frame

    def _answered_up_to(self, stamp_ns: int) -> None:
        """An answer for a frame means the node got past every older frame: none of them is a stall."""
        while self._unanswered and self._unanswered[0][0] <= stamp_ns:
            self._unanswered.popleft()

    def _clock_idle(self, watched: float, wall_s: float | None) -> float:
        if wall_s is None:
            return 0.0
        if watched > self._clock_moved[0] or self._clock_moved[1] > wall_s:
            self._clock_moved = (watched, wall_s)
        return wall_s - self._clock_moved[1]

    def _observe(self, now: float) -> float:
        resets = self._clock.resets
        watched = self._clock.observe(now)
        if self._clock.resets != resets:
            # Frames stamped on the old timeline can never be answered by the new one's stamps.
            self._unanswered.clear()
        keep_s = (self.acceptance.probation_window_s + self.acceptance.probation_answer_grace_s
                  + self.acceptance.probation_stall_s)
        while self._frames and next(iter(self._frames.values())).seen_s < watched - keep_s:
            self._frames.popitem(last=False)
        return watched

"""Probation after a swap: is the newly live model keeping up, fast and sane?

The shadow gate judged the candidate beside the old model; probation judges
it alone on the live path, where a failure means an automatic rollback to
the old model (still configured and warm). The manager feeds this watch with
camera frames, published results and exceptions of the live node, and acts on
the first UNHEALTHY or PASSED status. Times come from the caller (ROS time,
possibly simulated); see watch_clock for jumps.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.validation.metrics import percentile
from robot_model_deployer.validation.watch_clock import WatchClock

# Bounds the event windows even if the caller's clock stands still while
# frames keep coming (a paused simulator with a live camera).
_MAX_WINDOW_EVENTS = 10_000


def _require(ok: bool, name: str, value: float, problem: str) -> None:
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"health threshold {name} {problem}, got {value}")


class HealthState(str, Enum):
    WARMING_UP = "warming_up"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    PASSED = "passed"


@dataclass(frozen=True)
class HealthThresholds:
    """Probation checks beyond the bundle's acceptance thresholds.

    ``warm_up_s``: the first watched seconds after the swap, when output
    rate, stalls and latency are not judged (first frames are slow and the
    rate window is still filling); NaN/Inf outputs and exceptions are judged
    from the first frame. ``rate_window_s``, ``min_output_ratio``,
    ``min_window_inputs``: unhealthy when fewer than this share of the camera
    frames of the last window produced a result, judged once the window holds
    that many frames. ``stall_s``: unhealthy when a camera frame got no result
    (for it or a newer frame) for this long. ``latency_samples``,
    ``min_latency_samples``: latency p99 is over the last this many results,
    judged once there are at least the minimum. ``max_clock_step_s``: see
    WatchClock.
    """

    warm_up_s: float = 1.0
    rate_window_s: float = 2.0
    min_output_ratio: float = 0.8
    min_window_inputs: int = 5
    stall_s: float = 1.0
    latency_samples: int = 500
    min_latency_samples: int = 20
    max_clock_step_s: float = 1.0

    def __post_init__(self) -> None:
        _require(self.warm_up_s >= 0, "warm_up_s", self.warm_up_s, "must be >= 0 seconds")
        _require(self.rate_window_s > 0, "rate_window_s", self.rate_window_s, "must be > 0 seconds")
        _require(0.0 <= self.min_output_ratio <= 1.0, "min_output_ratio", self.min_output_ratio,
                 "must be a share in [0, 1] of camera frames that get a result")
        _require(self.min_window_inputs >= 1, "min_window_inputs", self.min_window_inputs, "must be at least 1")
        _require(self.stall_s > 0, "stall_s", self.stall_s, "must be > 0 seconds")
        _require(self.latency_samples >= 1, "latency_samples", self.latency_samples, "must be at least 1")
        _require(1 <= self.min_latency_samples <= self.latency_samples, "min_latency_samples",
                 self.min_latency_samples, f"must be between 1 and latency_samples ({self.latency_samples})")
        _require(self.max_clock_step_s > 0, "max_clock_step_s", self.max_clock_step_s, "must be > 0 seconds")


@dataclass(frozen=True)
class HealthStatus:
    """The probation's state with its reasons and the numbers behind them.

    ``output_ratio`` is results per camera frame over the rate window (None
    with no frame in it); ``latency_p99_ms`` is 0 before any result.
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

    @property
    def decided(self) -> bool:
        """True once probation is over: roll back on UNHEALTHY, commit on PASSED."""
        return self.state in (HealthState.UNHEALTHY, HealthState.PASSED)


class HealthWatch:
    """Watches the live node during acceptance.probation_seconds after a swap.

    ``baseline_latency_p99_ms`` is the old model's latency p99 (None for a
    first deployment with no old model: latency is then not judged). The
    first UNHEALTHY or PASSED status is final and returned from then on.
    Not thread-safe: call it from one callback group.
    """

    def __init__(self, acceptance: AcceptanceSpec, baseline_latency_p99_ms: float | None,
                 thresholds: HealthThresholds = HealthThresholds()) -> None:
        if baseline_latency_p99_ms is not None and not (
                math.isfinite(baseline_latency_p99_ms) and baseline_latency_p99_ms > 0):
            raise ValueError(f"baseline_latency_p99_ms must be > 0 ms (the old model's measured p99) or None "
                             f"when there is no old model, got {baseline_latency_p99_ms}")
        self.acceptance = acceptance
        self.baseline_latency_p99_ms = baseline_latency_p99_ms
        self.thresholds = thresholds
        self._clock = WatchClock(thresholds.max_clock_step_s)
        self._input_times: deque[float] = deque(maxlen=_MAX_WINDOW_EVENTS)
        self._output_times: deque[float] = deque(maxlen=_MAX_WINDOW_EVENTS)
        self._unanswered: deque[tuple[int, float]] = deque()
        self._latencies: deque[float] = deque(maxlen=thresholds.latency_samples)
        self._inputs = 0
        self._outputs = 0
        self._errors = 0
        self._non_finite = 0
        self._decision: HealthStatus | None = None

    def add_input(self, stamp_ns: int, now: float) -> None:
        """A camera frame stamped ``stamp_ns`` reached the live node at ``now``."""
        watched = self._observe(now)
        self._inputs += 1
        self._input_times.append(watched)
        # When full, keep the oldest: its age is what a stall is measured by.
        if len(self._unanswered) < _MAX_WINDOW_EVENTS:
            self._unanswered.append((stamp_ns, watched))

    def add_output(self, stamp_ns: int, now: float, latency_ms: float, finite: bool) -> None:
        """The live node published its result for the frame stamped ``stamp_ns``.

        ``finite`` is False when the result held NaN or Inf
        (Prediction.is_finite()). A result also answers older frames the node
        skipped to keep up.
        """
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {latency_ms}")
        watched = self._observe(now)
        self._outputs += 1
        self._output_times.append(watched)
        if not finite:
            self._non_finite += 1
        if watched >= self.thresholds.warm_up_s:
            self._latencies.append(latency_ms)
        while self._unanswered and self._unanswered[0][0] <= stamp_ns:
            self._unanswered.popleft()

    def add_error(self, now: float) -> None:
        """The live node raised an exception on a frame."""
        self._observe(now)
        self._errors += 1

    def status(self, now: float) -> HealthStatus:
        """WARMING_UP or HEALTHY while probation runs; UNHEALTHY or PASSED (final) once decided."""
        if self._decision is not None:
            return self._decision
        watched = self._observe(now)
        reasons = self._problems(watched)
        probation_over = watched >= self.acceptance.probation_seconds
        # probation_seconds 0 is the bundle author opting out of probation, not a silent camera.
        if not reasons and probation_over and self._inputs == 0 and self.acceptance.probation_seconds > 0:
            reasons = [f"no camera frame arrived during the {self.acceptance.probation_seconds:g} s probation, "
                       "so the new model was never exercised; check the camera topic"]
        if reasons:
            state = HealthState.UNHEALTHY
        elif probation_over:
            state = HealthState.PASSED
        elif watched < self.thresholds.warm_up_s:
            state = HealthState.WARMING_UP
        else:
            state = HealthState.HEALTHY
        status = HealthStatus(
            state=state,
            reasons=tuple(reasons),
            watched_s=watched,
            inputs=self._inputs,
            outputs=self._outputs,
            errors=self._errors,
            non_finite=self._non_finite,
            output_ratio=len(self._output_times) / len(self._input_times) if self._input_times else None,
            latency_p99_ms=percentile(self._latencies, 99),
        )
        if status.decided:
            self._decision = status
        return status

    def _problems(self, watched: float) -> list[str]:
        limits = self.thresholds
        reasons = []
        if self._non_finite:
            reasons.append(f"the model output NaN or Inf in {self._non_finite} of {self._outputs} results; "
                           "none are allowed")
        attempts = self._outputs + self._errors
        error_rate = self._errors / attempts if attempts else 0.0
        # With no error allowed the first one decides; otherwise early frames are too few to give a rate.
        judge_errors = watched >= limits.warm_up_s or self.acceptance.max_error_rate == 0
        if judge_errors and error_rate > self.acceptance.max_error_rate:
            reasons.append(f"the model raised an error on {self._errors} of {attempts} frames ({error_rate:.1%}); "
                           f"the bundle allows at most {self.acceptance.max_error_rate:.1%} "
                           "(acceptance.max_error_rate)")
        if watched < limits.warm_up_s:
            return reasons
        if self._unanswered and watched - self._unanswered[0][1] > limits.stall_s:
            waited = watched - self._unanswered[0][1]
            reasons.append(f"no result for {waited:.1f} s while camera frames keep arriving "
                           f"({len(self._unanswered)} frames unanswered); allowed at most {limits.stall_s:g} s")
        frames = len(self._input_times)
        if frames >= limits.min_window_inputs:
            ratio = len(self._output_times) / frames
            if ratio < limits.min_output_ratio:
                reasons.append(f"only {len(self._output_times)} results for {frames} camera frames in the last "
                               f"{limits.rate_window_s:g} s ({ratio:.0%}); at least {limits.min_output_ratio:.0%} "
                               "must get a result")
        if self.baseline_latency_p99_ms is not None and len(self._latencies) >= limits.min_latency_samples:
            p99 = percentile(self._latencies, 99)
            if p99 > self.acceptance.allowed_latency_ms(self.baseline_latency_p99_ms):
                reasons.append(f"latency p99 is {p99:.1f} ms against {self.baseline_latency_p99_ms:.1f} ms for the "
                               f"old model ({p99 / self.baseline_latency_p99_ms:.2f}x); the bundle allows at most "
                               f"{self.acceptance.max_latency_ratio:.2f}x or +{self.acceptance.latency_slack_ms:g} ms "
                               "(acceptance.max_latency_ratio, acceptance.latency_slack_ms)")
        return reasons

    def _observe(self, now: float) -> float:
        resets = self._clock.resets
        watched = self._clock.observe(now)
        if self._clock.resets != resets:
            # Frames stamped on the old timeline can never be answered by the new one's stamps.
            self._unanswered.clear()
        oldest_kept = watched - self.thresholds.rate_window_s
        for times in (self._input_times, self._output_times):
            while times and times[0] < oldest_kept:
                times.popleft()
        return watched

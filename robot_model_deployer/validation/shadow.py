"""Shadow validation: the candidate model against the live one, frame by frame.

While the live model keeps serving, the shadow node runs the candidate on the
same camera topic. Both results for one image carry that image's header
stamp, so pairing by stamp compares the two models on exactly the same
pixels, whichever result arrives first. The comparator only keeps running
totals and bounded windows, so a long shadow run costs constant memory.

Latency is judged against a reference: the live model run by the shadow node
itself with the same settings, on frames next to the candidate's. The live
node's own latency is measured in another process with other threads and
another load, so an identical model can look 1.5x slower in shadow; it is
kept in the report and is the baseline only when no reference ran.

Time is always given by the caller (ROS time, possibly simulated); see
watch_clock for how jumps in simulated time are handled.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.metrics import DetectionMatch, match_detections, percentile, top1_agrees
from robot_model_deployer.validation.watch_clock import WatchClock


class ShadowOutcome(str, Enum):
    PENDING = "pending"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class ShadowConfig:
    """How the comparator pairs results and bounds its memory.

    ``pair_window_s``: a result whose partner has not arrived after this many
    watched seconds is dropped (the other model skipped that frame).
    ``max_pending``: at most this many unpaired results per side, whatever
    the clock does. ``latency_samples``: latency percentiles are over the last
    this many paired frames. ``max_clock_step_s``: see WatchClock.
    """

    pair_window_s: float = 2.0
    max_pending: int = 256
    latency_samples: int = 1000
    iou_threshold: float = 0.5
    max_clock_step_s: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pair_window_s) and self.pair_window_s > 0):
            raise ValueError(f"pair_window_s must be > 0 seconds, got {self.pair_window_s}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")
        if self.latency_samples < 1:
            raise ValueError(f"latency_samples must be at least 1, got {self.latency_samples}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not (math.isfinite(self.max_clock_step_s) and self.max_clock_step_s > 0):
            raise ValueError(f"max_clock_step_s must be > 0 seconds, got {self.max_clock_step_s}")


@dataclass(frozen=True)
class ShadowReport:
    """Every number of a shadow run so far (the node copies it into a ShadowReport message).

    ``frames_judged`` counts paired frames plus frames the candidate failed
    (exception or NaN/Inf output): a candidate that fails every frame still
    reaches its verdict. ``agreement`` is the top-1 share (classification) or
    the pooled matched-box F1 (detection); with nothing paired it is 1.0, as
    in validation.metrics. ``box_precision`` and ``box_recall`` are None for
    classification. ``mean_score_drift`` is over agreeing top-1 classes
    (classification) or matched boxes (detection). ``reference_*`` is the live
    model as run by the shadow node beside the candidate (0 when it ran none).
    The ``*_p99_ms`` figures leave out the single slowest frame: over the
    few dozen frames of a shadow run p99 is otherwise the maximum, and one
    scheduler hiccup would decide the latency gate.
    """

    task: Task
    watched_s: float
    frames_judged: int
    frames_paired: int
    candidate_frames: int
    live_frames: int
    agreement: float
    box_precision: float | None
    box_recall: float | None
    mean_score_drift: float
    candidate_latency_p50_ms: float
    candidate_latency_p99_ms: float
    live_latency_p50_ms: float
    live_latency_p99_ms: float
    reference_latency_p50_ms: float
    reference_latency_p99_ms: float
    reference_frames: int
    candidate_errors: int
    candidate_non_finite: int
    live_non_finite: int
    dropped_frames: int
    expired_candidate: int
    expired_live: int

    @property
    def error_rate(self) -> float:
        """Share of the candidate's frames that raised an exception."""
        return self.candidate_errors / self.candidate_frames if self.candidate_frames else 0.0


@dataclass(frozen=True)
class ShadowVerdict:
    """PENDING until enough frames or seconds were watched, then PASS or FAIL with reasons.

    ``progress`` (0..1) is how far the run is towards a verdict, for action
    feedback.
    """

    outcome: ShadowOutcome
    reasons: tuple[str, ...]
    progress: float
    report: ShadowReport


@dataclass(frozen=True)
class _Pending:
    prediction: Prediction
    watched_s: float
    latency_ms: float


class ShadowComparator:
    """Pairs candidate and live results by image stamp and gates on the bundle's acceptance thresholds.

    Not thread-safe: a node with a multi-threaded executor calls it from one
    mutually exclusive callback group (or under a lock).
    """

    def __init__(self, task: Task, acceptance: AcceptanceSpec, config: ShadowConfig = ShadowConfig()) -> None:
        self.task = task
        self.acceptance = acceptance
        self.config = config
        self._clock = WatchClock(config.max_clock_step_s)
        self._candidates: OrderedDict[int, _Pending] = OrderedDict()
        self._lives: OrderedDict[int, _Pending] = OrderedDict()
        self._candidate_latencies: deque[float] = deque(maxlen=config.latency_samples)
        self._live_latencies: deque[float] = deque(maxlen=config.latency_samples)
        self._reference_latencies: deque[float] = deque(maxlen=config.latency_samples)
        self._reference_frames = 0
        self._candidate_frames = 0
        self._live_frames = 0
        self._paired = 0
        self._top1_agreed = 0
        self._true_positives = 0
        self._candidate_boxes = 0
        self._live_boxes = 0
        self._drift_total = 0.0
        self._drift_count = 0
        self._errors = 0
        self._non_finite = 0
        self._live_non_finite = 0
        self._dropped = 0
        self._expired_candidate = 0
        self._expired_live = 0

    def add_candidate(self, stamp_ns: int, prediction: Prediction, now: float, latency_ms: float) -> None:
        """The candidate's result for the image stamped ``stamp_ns``, received at ``now``."""
        _check_latency(latency_ms)
        watched = self._observe(now)
        self._candidate_frames += 1
        if not prediction.is_finite():
            # A NaN/Inf output is a failed frame: it is never compared.
            self._non_finite += 1
            self._lives.pop(stamp_ns, None)
            return
        live = self._lives.pop(stamp_ns, None)
        if live is None:
            self._hold(self._candidates, stamp_ns, _Pending(prediction, watched, latency_ms), live_side=False)
        else:
            self._compare(_Pending(prediction, watched, latency_ms), live)

    def add_live(self, stamp_ns: int, prediction: Prediction, now: float, latency_ms: float) -> None:
        """The live model's result for the image stamped ``stamp_ns``, received at ``now``."""
        _check_latency(latency_ms)
        watched = self._observe(now)
        self._live_frames += 1
        candidate = self._candidates.pop(stamp_ns, None)
        if candidate is None:
            self._hold(self._lives, stamp_ns, _Pending(prediction, watched, latency_ms), live_side=True)
        else:
            self._compare(candidate, _Pending(prediction, watched, latency_ms))

    def add_reference(self, latency_ms: float) -> None:
        """The live model, run by the shadow node beside the candidate on one frame, took ``latency_ms``."""
        _check_latency(latency_ms)
        self._reference_frames += 1
        self._reference_latencies.append(latency_ms)

    def add_candidate_error(self, stamp_ns: int, now: float) -> None:
        """The candidate raised an exception on the image stamped ``stamp_ns``."""
        self._observe(now)
        self._candidate_frames += 1
        self._errors += 1
        self._lives.pop(stamp_ns, None)

    def add_dropped_frames(self, count: int = 1) -> None:
        """The candidate did not run on ``count`` camera frames (busy, rate limit, reference runs)."""
        if count < 0:
            raise ValueError(f"dropped frame count must be >= 0, got {count}")
        self._dropped += count

    def report(self) -> ShadowReport:
        """A snapshot of every statistic so far."""
        drift = self._drift_total / self._drift_count if self._drift_count else 0.0
        boxes = DetectionMatch(self._true_positives, self._candidate_boxes, self._live_boxes, drift)
        detection = self.task is Task.DETECTION
        if detection:
            agreement = boxes.f1
        else:
            agreement = self._top1_agreed / self._paired if self._paired else 1.0
        return ShadowReport(
            task=self.task,
            watched_s=self._clock.watched_s,
            frames_judged=self._paired + self._errors + self._non_finite,
            frames_paired=self._paired,
            candidate_frames=self._candidate_frames,
            live_frames=self._live_frames,
            agreement=agreement,
            box_precision=boxes.precision if detection else None,
            box_recall=boxes.recall if detection else None,
            mean_score_drift=drift,
            candidate_latency_p50_ms=percentile(self._candidate_latencies, 50),
            candidate_latency_p99_ms=_tail_latency(self._candidate_latencies),
            live_latency_p50_ms=percentile(self._live_latencies, 50),
            live_latency_p99_ms=_tail_latency(self._live_latencies),
            reference_latency_p50_ms=percentile(self._reference_latencies, 50),
            reference_latency_p99_ms=_tail_latency(self._reference_latencies),
            reference_frames=self._reference_frames,
            candidate_errors=self._errors,
            candidate_non_finite=self._non_finite,
            live_non_finite=self._live_non_finite,
            dropped_frames=self._dropped,
            expired_candidate=self._expired_candidate,
            expired_live=self._expired_live,
        )

    def verdict(self, now: float) -> ShadowVerdict:
        """PENDING until acceptance.shadow_frames frames or shadow_seconds seconds, then PASS or FAIL.

        With both targets 0, the first judged frame decides. The verdict is
        recomputed on each call; the caller acts on the first decided one.
        """
        self._observe(now)
        report = self.report()
        progress = self._progress(report)
        if progress < 1.0:
            return ShadowVerdict(ShadowOutcome.PENDING, (), progress, report)
        reasons = self._failures(report)
        return ShadowVerdict(ShadowOutcome.FAIL if reasons else ShadowOutcome.PASS, reasons, 1.0, report)

    def _progress(self, report: ShadowReport) -> float:
        frames_target = self.acceptance.shadow_frames
        seconds_target = self.acceptance.shadow_seconds
        if frames_target == 0 and seconds_target == 0:
            frames_target = 1
        shares = []
        if frames_target > 0:
            shares.append(report.frames_judged / frames_target)
        if seconds_target > 0:
            shares.append(report.watched_s / seconds_target)
        return min(1.0, max(shares))

    def _failures(self, report: ShadowReport) -> tuple[str, ...]:
        spec = self.acceptance
        if report.frames_judged == 0:
            return (f"no frame could be compared in {report.watched_s:.1f} s: check that the camera, the live "
                    f"results and the shadow node all publish (received {report.candidate_frames} candidate "
                    f"and {report.live_frames} live results, none with a partner of the same image stamp)",)
        reasons = []
        if report.frames_paired:
            reasons.extend(self._agreement_failures(report))
            reasons.extend(self._latency_failures(report))
        if report.candidate_non_finite:
            reasons.append(f"the candidate output NaN or Inf on {report.candidate_non_finite} of "
                           f"{report.candidate_frames} frames; none are allowed")
        if report.error_rate > spec.max_error_rate:
            reasons.append(f"the candidate raised an error on {report.candidate_errors} of "
                           f"{report.candidate_frames} frames ({report.error_rate:.1%}); the bundle allows at "
                           f"most {spec.max_error_rate:.1%} (acceptance.max_error_rate)")
        return tuple(reasons)

    def _agreement_failures(self, report: ShadowReport) -> list[str]:
        spec = self.acceptance
        reasons = []
        if self.task is Task.CLASSIFICATION:
            if report.agreement < spec.min_top1_agreement:
                reasons.append(f"top-1 class agreement with the live model is {report.agreement:.1%} over "
                               f"{report.frames_paired} frames; the bundle requires at least "
                               f"{spec.min_top1_agreement:.1%} (acceptance.min_top1_agreement)")
            compared = "agreeing top-1 classes"
        else:
            if report.agreement < spec.min_detection_f1:
                reasons.append(f"detection agreement with the live model is F1 {report.agreement:.3f} at IoU "
                               f"{self.config.iou_threshold:g} over {report.frames_paired} frames (precision "
                               f"{report.box_precision:.3f}, recall {report.box_recall:.3f}); the bundle "
                               f"requires at least {spec.min_detection_f1:.3f} (acceptance.min_detection_f1)")
            compared = "matched boxes"
        if report.mean_score_drift > spec.max_score_drift:
            reasons.append(f"scores differ from the live model's by {report.mean_score_drift:.3f} on average "
                           f"on {compared}; the bundle allows at most {spec.max_score_drift:.3f} "
                           "(acceptance.max_score_drift)")
        return reasons

    def _latency_failures(self, report: ShadowReport) -> list[str]:
        spec = self.acceptance
        candidate = report.candidate_latency_p99_ms
        if report.reference_frames:
            baseline, measured = report.reference_latency_p99_ms, "run beside it in the shadow node"
        else:
            baseline, measured = report.live_latency_p99_ms, "as the live node reports it"
        if candidate <= spec.allowed_latency_ms(baseline):
            return []
        if baseline == 0:
            return [f"the live model's latency {measured} is 0 ms (inference_ms unset?), so the candidate's "
                    f"p99 of {candidate:.1f} ms exceeds the {spec.latency_slack_ms:g} ms allowed "
                    "(acceptance.latency_slack_ms)"]
        return [f"latency p99 is {candidate:.1f} ms against {baseline:.1f} ms for the live model {measured} "
                f"({candidate / baseline:.2f}x); the bundle allows at most {spec.max_latency_ratio:.2f}x or "
                f"+{spec.latency_slack_ms:g} ms (acceptance.max_latency_ratio, acceptance.latency_slack_ms)"]

    def _compare(self, candidate: _Pending, live: _Pending) -> None:
        if not live.prediction.is_finite():
            # A broken reference says nothing about the candidate.
            self._live_non_finite += 1
            return
        self._paired += 1
        self._candidate_latencies.append(candidate.latency_ms)
        self._live_latencies.append(live.latency_ms)
        if self.task is Task.DETECTION:
            match = match_detections(candidate.prediction, live.prediction, self.config.iou_threshold)
            self._true_positives += match.true_positives
            self._candidate_boxes += match.candidate_boxes
            self._live_boxes += match.reference_boxes
            self._drift_total += match.mean_score_drift * match.true_positives
            self._drift_count += match.true_positives
        elif top1_agrees(candidate.prediction, live.prediction):
            self._top1_agreed += 1
            if len(candidate.prediction.scores):
                self._drift_total += abs(float(candidate.prediction.scores[0]) - float(live.prediction.scores[0]))
                self._drift_count += 1

    def _hold(self, pending: OrderedDict[int, _Pending], stamp_ns: int, entry: _Pending, live_side: bool) -> None:
        pending[stamp_ns] = entry
        pending.move_to_end(stamp_ns)
        while len(pending) > self.config.max_pending:
            pending.popitem(last=False)
            self._count_expired(live_side)

    def _observe(self, now: float) -> float:
        watched = self._clock.observe(now)
        oldest_kept = watched - self.config.pair_window_s
        for pending, live_side in ((self._candidates, False), (self._lives, True)):
            # Entries are in arrival order and watched time never decreases.
            while pending and next(iter(pending.values())).watched_s < oldest_kept:
                pending.popitem(last=False)
                self._count_expired(live_side)
        return watched

    def _count_expired(self, live_side: bool) -> None:
        if live_side:
            self._expired_live += 1
        else:
            self._expired_candidate += 1


def _tail_latency(latencies: deque[float]) -> float:
    """p99 without the single slowest sample (see ShadowReport)."""
    kept = sorted(latencies)[:-1] if len(latencies) > 1 else list(latencies)
    return percentile(kept, 99)


def _check_latency(latency_ms: float) -> None:
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {latency_ms}")

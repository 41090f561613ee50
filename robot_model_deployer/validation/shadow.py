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

The shadow asks the promotion question: is the candidate at least as good
as the live model? Not the optimize stage's equivalence question: a better
retrained model disagrees with the old one exactly where the old one was
wrong. So agreement with the live model is a loose floor
(acceptance.min_live_agreement) with a sanity check of the score and box
count distributions, and "better" is decided on ground truth: the node
scores both models on the labelled images of the candidate's bundle and of
the live version's (``add_labelled``), and the candidate may be at most
acceptance.max_regression worse on either.

Time is always given by the caller (ROS time, possibly simulated); see
watch_clock for how jumps in simulated time are handled.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.dense_metrics import Tally
from robot_model_deployer.validation.metrics import (DetectionMatch, frame_disagreement, match_detections, measure_for,
                                                     percentile, top1_agrees)
from robot_model_deployer.validation.shadow_report import (Disagreement, LabelledComparison, LabelledSource,
                                                           ShadowOutcome, ShadowReport, ShadowVerdict)
from robot_model_deployer.validation.watch_clock import WatchClock


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
class _Pending:
    prediction: Prediction
    watched_s: float
    latency_ms: float


class ShadowComparator:
    """Pairs candidate and live results by image stamp and gates on the bundle's acceptance thresholds.

    ``labelled``: the labelled sets the node will score (``add_labelled``);
    the verdict waits for each of them.

    Not thread-safe: a node with a multi-threaded executor calls it from one
    mutually exclusive callback group (or under a lock).
    """

    def __init__(self, task: Task, acceptance: AcceptanceSpec, config: ShadowConfig = ShadowConfig(),
                 labelled: tuple[LabelledSource, ...] = ()) -> None:
        self.task = task
        self._measure = measure_for(task)
        self._tally = Tally()
        self.acceptance = acceptance
        self.config = config
        self._labelled_due = frozenset(labelled)
        self._labelled: dict[LabelledSource, LabelledComparison] = {}
        self._score_sums = [0.0, 0.0]  # candidate, live: top-1 or box scores
        self._score_counts = [0, 0]
        self._box_counts = [0, 0]
        self._disagreements = 0
        self._samples_saved = 0
        self._samples_dir = ""
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

    def add_candidate(self, stamp_ns: int, prediction: Prediction, now: float,
                      latency_ms: float) -> Disagreement | None:
        """The candidate's result for the image stamped ``stamp_ns``, received at ``now``.

        Returns the disagreement when it pairs with a live result it differs
        from (the node runs a frame after the live node answered it, so this
        is where pairs are normally made, while the node still has the image).
        """
        _check_latency(latency_ms)
        watched = self._observe(now)
        self._candidate_frames += 1
        if not prediction.is_finite():
            # A NaN/Inf output is a failed frame: it is never compared.
            self._non_finite += 1
            self._lives.pop(stamp_ns, None)
            return None
        live = self._lives.pop(stamp_ns, None)
        if live is None:
            self._hold(self._candidates, stamp_ns, _Pending(prediction, watched, latency_ms), live_side=False)
            return None
        return self._compare(stamp_ns, _Pending(prediction, watched, latency_ms), live)

    def add_live(self, stamp_ns: int, prediction: Prediction, now: float, latency_ms: float) -> None:
        """The live model's result for the image stamped ``stamp_ns``, received at ``now``."""
        _check_latency(latency_ms)
        watched = self._observe(now)
        self._live_frames += 1
        candidate = self._candidates.pop(stamp_ns, None)
        if candidate is None:
            self._hold(self._lives, stamp_ns, _Pending(prediction, watched, latency_ms), live_side=True)
        else:
            self._compare(stamp_ns, candidate, _Pending(prediction, watched, latency_ms))

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

    def add_labelled(self, comparison: LabelledComparison) -> None:
        """Both models' scores on one labelled set (or why it could not be scored)."""
        self._labelled[comparison.source] = comparison

    def record_sample(self, directory: str) -> None:
        """The node kept one more disagreement sample in ``directory``."""
        self._samples_saved += 1
        self._samples_dir = directory

    def add_dropped_frames(self, count: int = 1) -> None:
        """The candidate did not run on ``count`` camera frames (busy, rate limit, reference runs)."""
        if count < 0:
            raise ValueError(f"dropped frame count must be >= 0, got {count}")
        self._dropped += count

    def report(self) -> ShadowReport:
        """A snapshot of every statistic so far."""
        drift = self._drift_total / self._drift_count if self._drift_count else 0.0
        boxes = DetectionMatch(self._true_positives, self._candidate_boxes, self._live_boxes, drift)
        detection = self._measure.boxes
        agreement = self._tally.value
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
            candidate_mean_score=_mean(self._score_sums[0], self._score_counts[0]),
            live_mean_score=_mean(self._score_sums[1], self._score_counts[1]),
            candidate_mean_boxes=_mean(self._box_counts[0], self._paired) if detection else 0.0,
            live_mean_boxes=_mean(self._box_counts[1], self._paired) if detection else 0.0,
            disagreements=self._disagreements,
            **self._labelled_fields(LabelledSource.CANDIDATE, "labelled_images", "candidate_labelled_score",
                                    "live_labelled_score"),
            **self._labelled_fields(LabelledSource.LIVE, "live_set_images", "candidate_live_set_score",
                                    "live_live_set_score"),
            samples_saved=self._samples_saved,
            samples_dir=self._samples_dir,
        )

    def _labelled_fields(self, source: LabelledSource, images: str, candidate: str, live: str) -> dict:
        scored = self._labelled.get(source)
        if scored is None:
            return {images: 0, candidate: math.nan, live: math.nan}
        return {images: scored.images, candidate: scored.candidate_score, live: scored.live_score}

    def verdict(self, now: float) -> ShadowVerdict:
        """PENDING until acceptance.shadow_frames frames or shadow_seconds seconds, then PASS or FAIL.

        With both targets 0, the first judged frame decides. The verdict is
        recomputed on each call; the caller acts on the first decided one.
        """
        self._observe(now)
        report = self.report()
        progress = self._progress(report)
        if progress < 1.0:
            hopeless = self._hopeless(report)
            if hopeless:
                return ShadowVerdict(ShadowOutcome.FAIL, hopeless, progress, report)
            return ShadowVerdict(ShadowOutcome.PENDING, (), progress, report)
        if not self._labelled_due <= self._labelled.keys():
            return ShadowVerdict(ShadowOutcome.PENDING, (), min(progress, 0.99), report)
        reasons = self._failures(report)
        return ShadowVerdict(ShadowOutcome.FAIL if reasons else ShadowOutcome.PASS, reasons, 1.0, report)

    def _hopeless(self, report: ShadowReport) -> tuple[str, ...]:
        """Failures no frame still to come can undo, so the run stops now instead of at its target.

        NaN/Inf outputs (none are allowed), errors when the bundle allows none,
        a labelled set already scored too low, and (classification with a
        frame target) an agreement that stays below the floor even if every
        frame left to judge agrees. An error rate above 0 is judged at the end:
        frames still to come could bring it down.
        """
        spec = self.acceptance
        reasons = list(self._labelled_failures())
        if report.candidate_non_finite:
            reasons.append(f"the candidate output NaN or Inf on {report.candidate_non_finite} of "
                           f"{report.candidate_frames} frames; none are allowed")
        if report.candidate_errors and spec.max_error_rate == 0:
            reasons.append(f"the candidate raised an error on {report.candidate_errors} of {report.candidate_frames} "
                           "frames; the bundle allows none (acceptance.max_error_rate 0)")
        left = spec.shadow_frames - report.frames_judged
        if self.task is Task.CLASSIFICATION and spec.shadow_frames > 0 and report.frames_paired and left >= 0:
            best = (self._tally.matched + left) / (self._tally.total + left)  # one per paired frame
            if best < spec.min_live_agreement:
                reasons.append(
                    f"top-1 class agreement with the live model is {report.agreement:.1%} over "
                    f"{report.frames_paired} frames and can reach at most {best:.1%} in the {left} frames left; "
                    f"the bundle requires at least {spec.min_live_agreement:.1%} (acceptance.min_live_agreement), "
                    "a floor meant to catch a broken model, not a better one")
        return tuple(f"stopped early: {reason}" for reason in reasons)

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
        reasons = self._labelled_failures()
        if report.frames_paired:
            reasons.extend(self._agreement_failures(report))
            reasons.extend(self._distribution_failures(report))
            reasons.extend(self._latency_failures(report))
        if report.candidate_non_finite:
            reasons.append(f"the candidate output NaN or Inf on {report.candidate_non_finite} of "
                           f"{report.candidate_frames} frames; none are allowed")
        if report.error_rate > spec.max_error_rate:
            reasons.append(f"the candidate raised an error on {report.candidate_errors} of "
                           f"{report.candidate_frames} frames ({report.error_rate:.1%}); the bundle allows at "
                           f"most {spec.max_error_rate:.1%} (acceptance.max_error_rate)")
        return tuple(reasons)

    def _labelled_failures(self) -> list[str]:
        reasons = []
        allowed = self.acceptance.max_regression
        measure = "top-1 accuracy" if self.task is Task.CLASSIFICATION else self._measure.name
        for source in LabelledSource:
            scored = self._labelled.get(source)
            if scored is None:
                continue
            whose = "the candidate's" if source is LabelledSource.CANDIDATE else "the live version's"
            if scored.error:
                reasons.append(f"{whose} labelled images could not be scored: {scored.error}")
            elif scored.candidate_score < scored.live_score - allowed:
                reasons.append(f"on {whose} {scored.images} labelled images the candidate's {measure} is "
                               f"{scored.candidate_score:.3f} against {scored.live_score:.3f} for the live model; "
                               f"the bundle allows at most {allowed:.3f} lower (acceptance.max_regression)")
        return reasons

    def _agreement_failures(self, report: ShadowReport) -> list[str]:
        spec = self.acceptance
        if report.agreement >= spec.min_live_agreement:
            return []
        if self.task is Task.CLASSIFICATION:
            measured = f"top-1 class agreement with the live model is {report.agreement:.1%}"
        elif self.task is not Task.DETECTION:
            measured = f"{self._measure.name} against the live model is {report.agreement:.3f}"
        else:
            measured = (f"detection agreement with the live model is F1 {report.agreement:.3f} at IoU "
                        f"{self.config.iou_threshold:g} (precision {report.box_precision:.3f}, recall "
                        f"{report.box_recall:.3f})")
        return [f"{measured} over {report.frames_paired} frames; the bundle requires at least "
                f"{spec.min_live_agreement:.1%} (acceptance.min_live_agreement), a floor meant to catch a broken "
                "model, not a better one"]

    def _distribution_failures(self, report: ShadowReport) -> list[str]:
        """Mean scores (and boxes per frame, +1 so that none is comparable) within a factor of the live model's."""
        factor = self.acceptance.max_distribution_ratio
        measures = [(self._measure.distribution, report.candidate_mean_score, report.live_mean_score, 0.0)]
        if self._measure.boxes:
            measures.append(("boxes per frame", report.candidate_mean_boxes, report.live_mean_boxes, 1.0))
        reasons = []
        for name, candidate, live, offset in measures:
            low, high = sorted((candidate + offset, live + offset))
            if high == 0 or (low > 0 and high / low <= factor):
                continue
            reasons.append(f"the candidate's {name} is {candidate:.3f} against {live:.3f} for the live model; "
                           f"the bundle allows a factor of at most {factor:g} either way "
                           "(acceptance.max_distribution_ratio)")
        return reasons

    def _latency_failures(self, report: ShadowReport) -> list[str]:
        """The candidate's median latency against the reference's (or the live node's): see AcceptanceSpec."""
        spec = self.acceptance
        candidate = report.candidate_latency_p50_ms
        if report.reference_frames:
            baseline, measured = report.reference_latency_p50_ms, "run beside it in the shadow node"
        else:
            baseline, measured = report.live_latency_p50_ms, "as the live node reports it"
        if candidate <= spec.allowed_latency_ms(baseline):
            return []
        if baseline == 0:
            return [f"the live model's latency {measured} is 0 ms (inference_ms unset?), so the candidate's "
                    f"median of {candidate:.1f} ms exceeds the {spec.latency_slack_ms:g} ms allowed "
                    "(acceptance.latency_slack_ms)"]
        return [f"median latency is {candidate:.1f} ms against {baseline:.1f} ms for the live model {measured} "
                f"({candidate / baseline:.2f}x); the bundle allows at most {spec.max_latency_ratio:.2f}x or "
                f"+{spec.latency_slack_ms:g} ms (acceptance.max_latency_ratio, acceptance.latency_slack_ms)"]

    def _compare(self, stamp_ns: int, candidate: _Pending, live: _Pending) -> Disagreement | None:
        if not live.prediction.is_finite():
            # A broken reference says nothing about the candidate.
            self._live_non_finite += 1
            return None
        self._paired += 1
        self._count_distribution(0, candidate.prediction)
        self._count_distribution(1, live.prediction)
        self._candidate_latencies.append(candidate.latency_ms)
        self._live_latencies.append(live.latency_ms)
        match = (match_detections(candidate.prediction, live.prediction, self.config.iou_threshold)
                 if self._measure.boxes else None)
        if self.task is Task.DETECTION:  # box F1 at the shadow's own iou_threshold (ShadowConfig)
            self._tally += Tally(2.0 * match.true_positives, float(match.candidate_boxes + match.reference_boxes))
        else:
            self._tally += self._measure.tally(candidate.prediction, live.prediction)
        if match is not None:
            self._true_positives += match.true_positives
            self._candidate_boxes += match.candidate_boxes
            self._live_boxes += match.reference_boxes
            self._drift_total += match.mean_score_drift * match.true_positives
            self._drift_count += match.true_positives
        elif self.task is Task.CLASSIFICATION and top1_agrees(candidate.prediction, live.prediction):
            if len(candidate.prediction.scores):
                self._drift_total += abs(float(candidate.prediction.scores[0]) - float(live.prediction.scores[0]))
                self._drift_count += 1
        reason = frame_disagreement(self.task, candidate.prediction, live.prediction, self.config.iou_threshold)
        if not reason:
            return None
        self._disagreements += 1
        return Disagreement(stamp_ns, reason, candidate.prediction, live.prediction)

    def _count_distribution(self, side: int, prediction: Prediction) -> None:
        scores = prediction.scores
        if self._measure.boxes:
            self._box_counts[side] += len(scores)
            self._score_sums[side] += float(scores.sum())
            self._score_counts[side] += len(scores)
        elif len(scores):
            self._score_sums[side] += float(scores[0])
            self._score_counts[side] += 1

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


def _mean(total: float, count: int) -> float:
    return total / count if count else 0.0


def _tail_latency(latencies: deque[float]) -> float:
    """p99 without the single slowest sample (see ShadowReport)."""
    kept = sorted(latencies)[:-1] if len(latencies) > 1 else list(latencies)
    return percentile(kept, 99)


def _check_latency(latency_ms: float) -> None:
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {latency_ms}")

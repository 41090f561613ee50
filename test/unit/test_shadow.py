"""Shadow gate: pairing by stamp, statistics and verdicts, with times passed in."""
from __future__ import annotations

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowConfig, ShadowOutcome

LABELS = ("red", "green", "blue")
FRAME_S = 0.1


def stamp(frame: int) -> int:
    return 1_000_000_000 + frame * 100_000_000


def label(class_id: int, score: float = 0.9) -> Prediction:
    others = [c for c in range(3) if c != class_id]
    return Prediction(np.array([class_id, *others], np.int32), np.array([score, 0.05, 0.05], np.float32),
                      tuple(LABELS[c] for c in (class_id, *others)))


def boxes(rows: list[tuple[float, float, float, float, int, float]]) -> Prediction:
    """Rows of (x1, y1, x2, y2, class id, score)."""
    data = np.array(rows, np.float32).reshape(-1, 6)
    ids = data[:, 4].astype(np.int32)
    return Prediction(ids, data[:, 5].copy(), tuple(LABELS[i] for i in ids), data[:, :4].copy())


def feed(shadow: ShadowComparator, frames: range, candidate, live, candidate_ms: float = 10.0,
         live_ms: float = 10.0) -> float:
    """Live result then candidate result for each frame, 0.1 s apart; returns the last time."""
    now = 0.0
    for frame in frames:
        now = frame * FRAME_S
        shadow.add_live(stamp(frame), live(frame), now, live_ms)
        shadow.add_candidate(stamp(frame), candidate(frame), now + 0.02, candidate_ms)
    return now + 0.02


def classifier_shadow(**acceptance) -> ShadowComparator:
    return ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(**{"shadow_frames": 20, **acceptance}))


def test_agreeing_candidate_is_pending_until_enough_frames_then_passes():
    shadow = classifier_shadow()
    now = feed(shadow, range(19), lambda f: label(f % 3, 0.88), lambda f: label(f % 3, 0.9))
    pending = shadow.verdict(now)
    assert pending.outcome is ShadowOutcome.PENDING
    assert pending.progress == pytest.approx(19 / 20)

    now = feed(shadow, range(19, 20), lambda f: label(f % 3, 0.88), lambda f: label(f % 3, 0.9))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.PASS
    assert verdict.reasons == ()
    report = verdict.report
    assert (report.frames_paired, report.frames_judged, report.agreement) == (20, 20, 1.0)
    assert report.mean_score_drift == pytest.approx(0.02, abs=1e-6)
    assert report.box_precision is None
    assert report.candidate_latency_p99_ms == pytest.approx(10.0)


def test_disagreeing_candidate_fails_naming_agreement_measured_and_required():
    shadow = classifier_shadow()
    now = feed(shadow, range(20), lambda f: label(1 if f < 5 else 0), lambda f: label(0))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert len(verdict.reasons) == 1
    assert "top-1 class agreement" in verdict.reasons[0]
    assert "75.0%" in verdict.reasons[0] and "99.0%" in verdict.reasons[0]
    assert verdict.report.agreement == pytest.approx(0.75)


def test_slow_candidate_fails_on_latency_p99_against_live():
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=31.0, live_ms=10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert len(verdict.reasons) == 1
    assert "latency p99 is 31.0 ms against 10.0 ms" in verdict.reasons[0]
    assert "3.10x" in verdict.reasons[0] and "1.50x" in verdict.reasons[0]


def test_latency_within_ratio_passes():
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=14.0, live_ms=10.0)
    assert shadow.verdict(now).outcome is ShadowOutcome.PASS


def test_latency_is_judged_against_the_reference_run_beside_the_candidate_when_there_is_one():
    # The live node answers in 5 ms with all cores; the same model in the shadow node takes 10 ms.
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=14.0, live_ms=5.0)
    assert shadow.verdict(now).outcome is ShadowOutcome.FAIL  # against the live node's 5 ms
    for _ in range(20):
        shadow.add_reference(10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    report = verdict.report
    assert (report.reference_frames, report.reference_latency_p99_ms, report.live_latency_p99_ms) == (20, 10.0, 5.0)


def test_slower_than_the_reference_fails_naming_it():
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=31.0, live_ms=40.0)
    for _ in range(20):
        shadow.add_reference(10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("latency p99 is 31.0 ms against 10.0 ms for the live model run beside it in the "
                               "shadow node (3.10x); the bundle allows at most 1.50x or +2 ms "
                               "(acceptance.max_latency_ratio, acceptance.latency_slack_ms)",)


@pytest.mark.parametrize("latency_ms", [-1.0, float("nan"), float("inf")])
def test_reference_latency_must_be_a_finite_positive_number(latency_ms):
    shadow = classifier_shadow()
    with pytest.raises(ValueError, match="latency must be a finite number"):
        shadow.add_reference(latency_ms)
    assert shadow.report().reference_frames == 0


def test_sub_millisecond_latency_within_the_slack_passes():
    # 4x the live latency, but 0.3 ms more: not a slower model.
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=0.4, live_ms=0.1)
    assert shadow.verdict(now).outcome is ShadowOutcome.PASS


def test_nan_outputs_fail_and_count_as_judged_frames():
    shadow = classifier_shadow()
    nan = Prediction(np.array([0], np.int32), np.array([np.nan], np.float32), ("red",))
    now = feed(shadow, range(20), lambda f: nan if f in (3, 7) else label(0), lambda f: label(0))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("the candidate output NaN or Inf on 2 of 20 frames; none are allowed",)
    report = verdict.report
    assert (report.candidate_non_finite, report.frames_paired, report.frames_judged) == (2, 18, 20)
    # The live results of the two failed frames are settled, not left to expire as unpaired.
    assert shadow.verdict(now + 1.0).report.expired_live == 0


def test_inf_box_in_detection_is_caught():
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=1))
    broken = boxes([(0, 0, np.inf, 10, 0, 0.9)])
    shadow.add_candidate(stamp(0), broken, 0.0, 5.0)
    verdict = shadow.verdict(0.1)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert "NaN or Inf" in verdict.reasons[0]


def test_candidate_errors_fail_above_max_error_rate_and_pass_within_it():
    strict = classifier_shadow(max_error_rate=0.0)
    tolerant = classifier_shadow(max_error_rate=0.1)
    for shadow in (strict, tolerant):
        feed(shadow, range(19), lambda f: label(0), lambda f: label(0))
        shadow.add_live(stamp(19), label(0), 1.9, 10.0)
        shadow.add_candidate_error(stamp(19), 1.95)
    strict.verdict(2.95)
    verdict = strict.verdict(3.95)
    assert verdict.outcome is ShadowOutcome.FAIL
    # The live result of the failed frame is settled, not left to expire as unpaired.
    assert verdict.report.expired_live == 0
    assert "error on 1 of 20 frames (5.0%)" in verdict.reasons[0]
    assert "acceptance.max_error_rate" in verdict.reasons[0]
    assert tolerant.verdict(2.95).outcome is ShadowOutcome.PASS


def test_a_candidate_that_fails_every_frame_still_reaches_a_verdict():
    shadow = classifier_shadow()
    for frame in range(20):
        shadow.add_candidate_error(stamp(frame), frame * FRAME_S)
    verdict = shadow.verdict(2.0)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert "error on 20 of 20 frames (100.0%)" in verdict.reasons[0]


def test_pairs_by_stamp_whichever_side_arrives_first_and_in_any_order():
    shadow = classifier_shadow(shadow_frames=6)
    order = [5, 2, 0, 4, 1, 3]
    for i, frame in enumerate(order):
        if frame % 2:
            shadow.add_candidate(stamp(frame), label(frame % 3), 0.01 * i, 10.0)
        else:
            shadow.add_live(stamp(frame), label(frame % 3), 0.01 * i, 10.0)
    for i, frame in enumerate(reversed(order)):
        if frame % 2:
            shadow.add_live(stamp(frame), label(frame % 3), 0.1 + 0.01 * i, 10.0)
        else:
            shadow.add_candidate(stamp(frame), label(frame % 3), 0.1 + 0.01 * i, 10.0)
    verdict = shadow.verdict(0.2)
    assert verdict.outcome is ShadowOutcome.PASS
    assert (verdict.report.frames_paired, verdict.report.agreement) == (6, 1.0)


def test_unpaired_results_expire_after_the_window_and_late_partners_do_not_pair():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=1),
                              ShadowConfig(pair_window_s=1.0))
    shadow.add_candidate(stamp(0), label(0), 0.0, 10.0)
    shadow.add_live(stamp(1), label(0), 0.5, 10.0)
    assert shadow.verdict(0.9).outcome is ShadowOutcome.PENDING
    report = shadow.verdict(1.2).report
    assert (report.expired_candidate, report.expired_live) == (1, 0)

    shadow.add_live(stamp(0), label(0), 1.3, 10.0)
    shadow.add_candidate(stamp(1), label(0), 1.6, 10.0)
    shadow.verdict(2.5)
    verdict = shadow.verdict(3.0)
    assert verdict.report.frames_paired == 0
    assert (verdict.report.expired_candidate, verdict.report.expired_live) == (2, 2)


def test_unpaired_results_are_bounded_even_when_time_stands_still():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(), ShadowConfig(max_pending=4))
    for frame in range(10):
        shadow.add_candidate(stamp(frame), label(0), 0.0, 10.0)
    assert shadow.report().expired_candidate == 6
    shadow.add_live(stamp(0), label(0), 0.0, 10.0)
    shadow.add_live(stamp(9), label(0), 0.0, 10.0)
    report = shadow.report()
    assert report.frames_paired == 1
    assert report.expired_candidate == 6


def test_latency_percentiles_keep_only_the_last_samples():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(), ShadowConfig(latency_samples=10))
    feed(shadow, range(10), lambda f: label(0), lambda f: label(0), candidate_ms=100.0)
    feed(shadow, range(10, 20), lambda f: label(0), lambda f: label(0), candidate_ms=5.0)
    report = shadow.report()
    assert report.candidate_latency_p99_ms == pytest.approx(5.0)
    assert report.candidate_latency_p50_ms == pytest.approx(5.0)


def test_time_based_verdict_on_simulated_time():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=1000, shadow_seconds=5.0))
    now = feed(shadow, range(0, 49), lambda f: label(0), lambda f: label(0))
    pending = shadow.verdict(now)
    assert pending.outcome is ShadowOutcome.PENDING
    assert pending.progress == pytest.approx(4.82 / 5.0)
    feed(shadow, range(49, 51), lambda f: label(0), lambda f: label(0))
    verdict = shadow.verdict(5.02)
    assert verdict.outcome is ShadowOutcome.PASS
    assert verdict.report.frames_paired == 51
    assert verdict.report.watched_s == pytest.approx(5.02)


def test_jumps_of_simulated_time_neither_complete_nor_freeze_the_time_gate():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=1000, shadow_seconds=5.0),
                              ShadowConfig(max_clock_step_s=1.0))
    feed(shadow, range(10), lambda f: label(0), lambda f: label(0))  # 0 .. 0.92 s
    # The simulator skips ahead by 100 s: only one second of it counts.
    assert shadow.verdict(100.92).outcome is ShadowOutcome.PENDING
    assert shadow.report().watched_s == pytest.approx(1.92)
    # Then it is reset to 0 (stamps restart too): no time is lost or subtracted, pairing goes on.
    now = feed(shadow, range(0, 31), lambda f: label(0), lambda f: label(0))
    verdict = shadow.verdict(now)
    assert verdict.report.watched_s == pytest.approx(1.92 + 3.02)
    assert verdict.outcome is ShadowOutcome.PENDING
    verdict = shadow.verdict(now + 0.1)
    assert verdict.outcome is ShadowOutcome.PASS
    assert verdict.report.frames_paired == 41


def test_no_frames_within_the_time_gate_fails_with_a_hint():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=100, shadow_seconds=2.0))
    shadow.add_candidate(stamp(0), label(0), 0.0, 10.0)
    for tick in range(1, 21):
        verdict = shadow.verdict(tick * 0.1)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons[0].startswith("no frame could be compared in 2.0 s")
    assert "received 1 candidate and 0 live results" in verdict.reasons[0]


def test_detection_with_matching_boxes_passes_with_pooled_f1():
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=10))
    live = boxes([(0, 0, 10, 10, 0, 0.9), (20, 20, 40, 40, 2, 0.8)])
    candidate = boxes([(1, 0, 10, 10, 0, 0.85), (20, 21, 40, 40, 2, 0.8)])
    verdict = shadow.verdict(feed(shadow, range(10), lambda f: candidate, lambda f: live))
    assert verdict.outcome is ShadowOutcome.PASS
    report = verdict.report
    assert (report.agreement, report.box_precision, report.box_recall) == (1.0, 1.0, 1.0)
    assert report.mean_score_drift == pytest.approx(0.025, abs=1e-6)


def test_detection_missing_and_misplaced_boxes_fail_naming_f1():
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=10, min_detection_f1=0.95))
    live = boxes([(0, 0, 10, 10, 0, 0.9), (20, 20, 40, 40, 2, 0.8)])
    moved = boxes([(0, 0, 10, 10, 0, 0.9), (30, 30, 50, 50, 2, 0.8)])
    verdict = shadow.verdict(feed(shadow, range(10), lambda f: moved if f < 5 else live, lambda f: live))
    assert verdict.outcome is ShadowOutcome.FAIL
    # 15 of 20 boxes match on each side: F1 = 2 * 15 / 40.
    assert verdict.report.agreement == pytest.approx(0.75)
    assert "detection agreement with the live model is F1 0.750 at IoU 0.5" in verdict.reasons[0]
    assert "precision 0.750, recall 0.750" in verdict.reasons[0]


def test_detection_score_drift_fails_when_boxes_agree_but_scores_do_not():
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=5, max_score_drift=0.1))
    verdict = shadow.verdict(feed(shadow, range(5), lambda f: boxes([(0, 0, 10, 10, 0, 0.5)]),
                                  lambda f: boxes([(0, 0, 10, 10, 0, 0.9)])))
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("scores differ from the live model's by 0.400 on average on matched boxes; "
                               "the bundle allows at most 0.100 (acceptance.max_score_drift)",)


def test_a_broken_live_result_is_not_held_against_the_candidate():
    shadow = classifier_shadow(shadow_frames=3)
    nan = Prediction(np.array([0], np.int32), np.array([np.nan], np.float32), ("red",))
    verdict = shadow.verdict(feed(shadow, range(4), lambda f: label(0), lambda f: nan if f == 0 else label(0)))
    assert verdict.outcome is ShadowOutcome.PASS
    assert (verdict.report.live_non_finite, verdict.report.frames_paired) == (1, 3)


def test_bad_configuration_and_inputs_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="pair_window_s"):
        ShadowConfig(pair_window_s=0.0)
    with pytest.raises(ValueError, match="max_pending"):
        ShadowConfig(max_pending=0)
    with pytest.raises(ValueError, match="iou_threshold"):
        ShadowConfig(iou_threshold=1.5)
    shadow = classifier_shadow()
    with pytest.raises(ValueError, match="latency"):
        shadow.add_live(stamp(0), label(0), 0.0, -1.0)
    with pytest.raises(ValueError, match="time"):
        shadow.add_live(stamp(0), label(0), float("nan"), 1.0)
    with pytest.raises(ValueError, match="dropped"):
        shadow.add_dropped_frames(-1)


def test_dropped_frames_are_reported():
    shadow = classifier_shadow()
    shadow.add_dropped_frames()
    shadow.add_dropped_frames(3)
    assert shadow.report().dropped_frames == 4


def test_callbacks_reading_the_clock_slightly_out_of_order_neither_reset_nor_add_time():
    shadow = classifier_shadow()
    shadow.add_live(stamp(0), label(0), 1.0, 10.0)
    shadow.add_candidate(stamp(0), label(0), 0.8, 10.0)  # read 0.2 s earlier, delivered later
    shadow.add_live(stamp(1), label(0), 1.1, 10.0)
    report = shadow.report()
    assert report.watched_s == pytest.approx(0.1)
    assert report.frames_paired == 1


def test_one_scheduler_hiccup_does_not_decide_the_latency_gate_but_two_slow_frames_do():
    shadow = classifier_shadow(max_latency_ratio=1.5, shadow_frames=60)
    now = feed(shadow, range(59), lambda f: label(0), lambda f: label(0), candidate_ms=10.0, live_ms=10.0)
    now = feed(shadow, range(59, 60), lambda f: label(0), lambda f: label(0), candidate_ms=90.0, live_ms=10.0)
    for _ in range(60):
        shadow.add_reference(10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    assert verdict.report.candidate_latency_p99_ms == pytest.approx(10.0)

    now = feed(shadow, range(60, 61), lambda f: label(0), lambda f: label(0), candidate_ms=90.0, live_ms=10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert "latency p99" in verdict.reasons[0]

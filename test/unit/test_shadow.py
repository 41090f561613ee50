"""Shadow gate: pairing by stamp, statistics and verdicts, with times passed in."""
from __future__ import annotations

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowConfig, ShadowOutcome
from robot_model_deployer.validation.shadow_report import LabelledComparison, LabelledSource

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
    shadow = classifier_shadow(min_live_agreement=0.99)
    now = feed(shadow, range(20), lambda f: label(1 if f < 5 else 0), lambda f: label(0))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert len(verdict.reasons) == 1
    assert "top-1 class agreement" in verdict.reasons[0]
    assert "75.0%" in verdict.reasons[0] and "99.0%" in verdict.reasons[0]
    assert "acceptance.min_live_agreement" in verdict.reasons[0]
    assert verdict.report.agreement == pytest.approx(0.75)
    assert verdict.report.disagreements == 5


def test_agreement_with_the_live_model_is_a_loose_floor_not_the_int8_threshold():
    # A retrained model that differs on a quarter of the frames is not refused for it (the old gate
    # asked for 99%); one that agrees on a third, as a constant class of three does, is.
    differs = classifier_shadow()
    now = feed(differs, range(20), lambda f: label(1 if f % 4 == 0 else 0), lambda f: label(0))
    assert differs.verdict(now).outcome is ShadowOutcome.PASS, differs.verdict(now).reasons
    constant = classifier_shadow()
    now = feed(constant, range(21), lambda f: label(0), lambda f: label(f % 3))
    verdict = constant.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.report.agreement == pytest.approx(1 / 3)
    assert "33.3%" in verdict.reasons[0] and "at least 50.0% (acceptance.min_live_agreement)" in verdict.reasons[0]


def test_scores_far_from_the_live_models_fail_the_distribution_check_either_way():
    # Same answers, but the candidate is barely sure of any: its scores collapsed (factor 2.25 < 1 / 0.4).
    unsure = classifier_shadow()
    verdict = unsure.verdict(feed(unsure, range(20), lambda f: label(0, 0.4), lambda f: label(0, 0.9)))
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("the candidate's mean top-1 score is 0.400 against 0.900 for the live model; the "
                               "bundle allows a factor of at most 2 either way (acceptance.max_distribution_ratio)",)
    assert (verdict.report.candidate_mean_score, verdict.report.live_mean_score) == pytest.approx((0.4, 0.9))
    surer = classifier_shadow()
    assert surer.verdict(feed(surer, range(20), lambda f: label(0, 0.95), lambda f: label(0, 0.5))).outcome \
        is ShadowOutcome.PASS
    loose = classifier_shadow(max_distribution_ratio=3.0)
    assert loose.verdict(feed(loose, range(20), lambda f: label(0, 0.4), lambda f: label(0, 0.9))).outcome \
        is ShadowOutcome.PASS


def test_slow_candidate_fails_on_median_latency_against_live():
    shadow = classifier_shadow(max_latency_ratio=1.5)
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0), candidate_ms=31.0, live_ms=10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert len(verdict.reasons) == 1
    assert "median latency is 31.0 ms against 10.0 ms" in verdict.reasons[0]
    assert "3.10x" in verdict.reasons[0] and "1.50x" in verdict.reasons[0]


def test_a_few_preempted_candidate_frames_do_not_fail_latency():
    shadow = classifier_shadow(max_latency_ratio=1.5)
    for frame in range(20):
        shadow.add_live(stamp(frame), label(0), frame * FRAME_S, 10.0)
        shadow.add_candidate(stamp(frame), label(0), frame * FRAME_S + 0.02, 40.0 if frame % 10 == 0 else 10.0)
    verdict = shadow.verdict(19 * FRAME_S + 0.02)
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    assert verdict.report.candidate_latency_p99_ms > 30.0  # the tail a shared CPU gives; the median is 10 ms


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
    assert verdict.reasons == ("median latency is 31.0 ms against 10.0 ms for the live model run beside it in the "
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
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=10, min_live_agreement=0.95))
    live = boxes([(0, 0, 10, 10, 0, 0.9), (20, 20, 40, 40, 2, 0.8)])
    moved = boxes([(0, 0, 10, 10, 0, 0.9), (30, 30, 50, 50, 2, 0.8)])
    verdict = shadow.verdict(feed(shadow, range(10), lambda f: moved if f < 5 else live, lambda f: live))
    assert verdict.outcome is ShadowOutcome.FAIL
    # 15 of 20 boxes match on each side: F1 = 2 * 15 / 40.
    assert verdict.report.agreement == pytest.approx(0.75)
    assert "detection agreement with the live model is F1 0.750 at IoU 0.5" in verdict.reasons[0]
    assert "precision 0.750, recall 0.750" in verdict.reasons[0]


def test_detection_score_drift_is_reported_not_gated_in_shadow():
    # A retrained detector is rightly more or less sure of the same boxes: max_score_drift is the optimize
    # stage's equivalence threshold, the shadow only bounds the distribution (factor 0.9 / 0.5 = 1.8 < 2).
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=5, max_score_drift=0.1))
    verdict = shadow.verdict(feed(shadow, range(5), lambda f: boxes([(0, 0, 10, 10, 0, 0.5)]),
                                  lambda f: boxes([(0, 0, 10, 10, 0, 0.9)])))
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    assert verdict.report.mean_score_drift == pytest.approx(0.4)


def test_detection_box_counts_far_from_the_live_models_fail_the_distribution_check():
    # Both live boxes are found, plus four the live model does not see: F1 4/8 passes the floor, but
    # 6 boxes a frame against 2 is not the same kind of output ((6 + 1) / (2 + 1) = 2.33 > 2).
    found = [(0, 0, 10, 10, 0, 0.9), (20, 20, 40, 40, 2, 0.9)]
    live = boxes(found)
    noisy = boxes(found + [(20 * i, 50, 20 * i + 10, 60, 1, 0.9) for i in range(4)])
    shadow = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=5))
    verdict = shadow.verdict(feed(shadow, range(5), lambda f: noisy, lambda f: live))
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("the candidate's boxes per frame is 6.000 against 2.000 for the live model; the "
                               "bundle allows a factor of at most 2 either way (acceptance.max_distribution_ratio)",)
    # No box at all in either: nothing to compare, and nothing wrong.
    empty = ShadowComparator(Task.DETECTION, AcceptanceSpec(shadow_frames=5))
    assert empty.verdict(feed(empty, range(5), lambda f: boxes([]), lambda f: boxes([]))).outcome is ShadowOutcome.PASS


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


def test_scheduler_hiccups_do_not_decide_the_latency_gate_but_a_slower_median_does():
    shadow = classifier_shadow(max_latency_ratio=1.5, shadow_frames=60)
    now = feed(shadow, range(58), lambda f: label(0), lambda f: label(0), candidate_ms=10.0, live_ms=10.0)
    now = feed(shadow, range(58, 60), lambda f: label(0), lambda f: label(0), candidate_ms=90.0, live_ms=10.0)
    for _ in range(60):
        shadow.add_reference(10.0)
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    assert verdict.report.candidate_latency_p99_ms > 40.0  # p99 would have failed it (allowed: 15 ms)

    slower = classifier_shadow(max_latency_ratio=1.5, shadow_frames=60)
    now = feed(slower, range(29), lambda f: label(0), lambda f: label(0), candidate_ms=10.0, live_ms=10.0)
    now = feed(slower, range(29, 60), lambda f: label(0), lambda f: label(0), candidate_ms=16.0, live_ms=10.0)
    for _ in range(60):
        slower.add_reference(10.0)
    verdict = slower.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons[0].startswith("median latency is 16.0 ms against 10.0 ms")


# Promotion on ground truth ------------------------------------------------------------


def labelled_shadow(**acceptance) -> ShadowComparator:
    return ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(**{"shadow_frames": 20, **acceptance}),
                            labelled=(LabelledSource.CANDIDATE, LabelledSource.LIVE))


def test_the_verdict_waits_for_every_labelled_set_and_reports_both_scores():
    shadow = labelled_shadow()
    now = feed(shadow, range(20), lambda f: label(0), lambda f: label(0))
    shadow.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 9, 1.0, 0.667))
    waiting = shadow.verdict(now)
    assert waiting.outcome is ShadowOutcome.PENDING and waiting.progress == pytest.approx(0.99)
    shadow.add_labelled(LabelledComparison(LabelledSource.LIVE, 6, 1.0, 1.0))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.PASS, verdict.reasons
    report = verdict.report
    assert (report.labelled_images, report.candidate_labelled_score, report.live_labelled_score) == (9, 1.0, 0.667)
    assert (report.live_set_images, report.candidate_live_set_score, report.live_live_set_score) == (6, 1.0, 1.0)


def test_a_candidate_worse_than_live_on_either_labelled_set_fails_naming_the_set_and_both_scores():
    own = labelled_shadow()
    now = feed(own, range(20), lambda f: label(0), lambda f: label(0))
    own.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 9, 0.667, 1.0))
    own.add_labelled(LabelledComparison(LabelledSource.LIVE, 6, 1.0, 1.0))
    verdict = own.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("on the candidate's 9 labelled images the candidate's top-1 accuracy is 0.667 "
                               "against 1.000 for the live model; the bundle allows at most 0.020 lower "
                               "(acceptance.max_regression)",)
    # It scores well on its own images but forgot what the live version knew.
    forgot = labelled_shadow()
    now = feed(forgot, range(20), lambda f: label(0), lambda f: label(0))
    forgot.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 6, 1.0, 1.0))
    forgot.add_labelled(LabelledComparison(LabelledSource.LIVE, 9, 0.667, 1.0))
    assert forgot.verdict(now).reasons[0].startswith("on the live version's 9 labelled images")


def test_max_regression_is_the_allowed_drop():
    for allowed, outcome in ((0.02, ShadowOutcome.FAIL), (0.05, ShadowOutcome.PASS)):
        shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=5, max_regression=allowed),
                                  labelled=(LabelledSource.CANDIDATE,))
        now = feed(shadow, range(5), lambda f: label(0), lambda f: label(0))
        shadow.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 100, 0.96, 1.0))
        assert shadow.verdict(now).outcome is outcome, allowed


def test_a_labelled_set_that_could_not_be_scored_fails_with_its_reason():
    shadow = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=5),
                              labelled=(LabelledSource.CANDIDATE,))
    now = feed(shadow, range(5), lambda f: label(0), lambda f: label(0))
    shadow.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 3, float("nan"), float("nan"),
                                           "the candidate output NaN or Inf on 1 of them (first: v/0.png)"))
    verdict = shadow.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("the candidate's labelled images could not be scored: the candidate output NaN or "
                               "Inf on 1 of them (first: v/0.png)",)


def test_without_labelled_sets_the_scores_are_nan_and_nothing_waits():
    shadow = classifier_shadow()
    report = shadow.verdict(feed(shadow, range(20), lambda f: label(0), lambda f: label(0))).report
    assert (report.labelled_images, report.live_set_images) == (0, 0)
    assert np.isnan(report.candidate_labelled_score) and np.isnan(report.live_live_set_score)


def test_a_disagreeing_pair_is_handed_back_with_both_outputs_and_why():
    shadow = classifier_shadow()
    shadow.add_live(stamp(0), label(0), 0.0, 1.0)
    assert shadow.add_candidate(stamp(0), label(0), 0.01, 1.0) is None
    shadow.add_live(stamp(1), label(0), 0.1, 1.0)
    disagreement = shadow.add_candidate(stamp(1), label(2), 0.11, 1.0)
    assert disagreement is not None and disagreement.stamp_ns == stamp(1)
    assert disagreement.reason == "top-1 blue (2) vs red (0)"
    assert (int(disagreement.candidate.class_ids[0]), int(disagreement.live.class_ids[0])) == (2, 0)
    # Unpaired (the live result has not come): nothing to show yet, and later pairing still counts it.
    assert shadow.add_candidate(stamp(2), label(1), 0.2, 1.0) is None
    shadow.add_live(stamp(2), label(0), 0.21, 1.0)
    shadow.record_sample("/store/samples")
    report = shadow.report()
    assert (report.disagreements, report.samples_saved, report.samples_dir) == (2, 1, "/store/samples")

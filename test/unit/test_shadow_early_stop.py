"""A shadow run stops as soon as its verdict can no longer pass, and never sooner."""
from __future__ import annotations

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.shadow import ShadowComparator, ShadowOutcome
from robot_model_deployer.validation.shadow_report import LabelledComparison, LabelledSource

from test_shadow import feed, label, stamp


def shadow(frames: int = 20, **acceptance) -> ShadowComparator:
    return ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=frames, **acceptance))


def test_agreement_stops_the_run_once_even_perfect_frames_left_cannot_reach_the_floor():
    # Floor 50% over 20 frames: after 11 disagreements, 9 agreeing frames make 9/20 at best.
    run = shadow(min_live_agreement=0.5)
    now = feed(run, range(10), lambda f: label(1), lambda f: label(0))
    assert run.verdict(now).outcome is ShadowOutcome.PENDING  # 10/20 is still reachable
    now = feed(run, range(10, 11), lambda f: label(1), lambda f: label(0))
    verdict = run.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.progress == pytest.approx(11 / 20)
    assert verdict.reasons == ("stopped early: top-1 class agreement with the live model is 0.0% over 11 frames "
                               "and can reach at most 45.0% in the 9 frames left; the bundle requires at least "
                               "50.0% (acceptance.min_live_agreement), a floor meant to catch a broken model, not "
                               "a better one",)


def test_a_candidate_that_can_still_reach_the_floor_runs_to_its_target_and_passes():
    run = shadow(min_live_agreement=0.5)
    # Disagrees on the first 10 frames, then agrees on all the rest: exactly 50% at the end.
    for end in range(1, 20):
        now = feed(run, range(end - 1, end), lambda f: label(1 if f < 10 else 0), lambda f: label(0))
        assert run.verdict(now).outcome is ShadowOutcome.PENDING, end
    now = feed(run, range(19, 20), lambda f: label(0), lambda f: label(0))
    assert run.verdict(now).outcome is ShadowOutcome.PASS


def test_a_nan_output_stops_the_run_at_once():
    run = shadow()
    nan = Prediction(np.array([0], np.int32), np.array([np.nan], np.float32), ("red",))
    now = feed(run, range(3), lambda f: nan if f == 2 else label(0), lambda f: label(0))
    verdict = run.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("stopped early: the candidate output NaN or Inf on 1 of 3 frames; none are allowed",)


def test_an_error_stops_the_run_when_the_bundle_allows_none():
    run = shadow(max_error_rate=0.0)
    feed(run, range(2), lambda f: label(0), lambda f: label(0))
    run.add_candidate_error(stamp(2), 0.3)
    verdict = run.verdict(0.3)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons == ("stopped early: the candidate raised an error on 1 of 3 frames; the bundle allows "
                               "none (acceptance.max_error_rate 0)",)


def test_errors_within_a_nonzero_rate_wait_for_the_end_where_more_frames_can_dilute_them():
    run = shadow(max_error_rate=0.1)
    run.add_candidate_error(stamp(0), 0.0)  # 1 of 1 frames for now, 1 of 20 at the end
    assert run.verdict(0.0).outcome is ShadowOutcome.PENDING
    feed(run, range(1, 20), lambda f: label(0), lambda f: label(0))
    assert run.verdict(2.0).outcome is ShadowOutcome.PASS


def test_a_labelled_set_already_scored_too_low_stops_the_run():
    run = ShadowComparator(Task.CLASSIFICATION, AcceptanceSpec(shadow_frames=20),
                           labelled=(LabelledSource.CANDIDATE,))
    now = feed(run, range(2), lambda f: label(0), lambda f: label(0))
    run.add_labelled(LabelledComparison(LabelledSource.CANDIDATE, 9, 0.667, 1.0))
    verdict = run.verdict(now)
    assert verdict.outcome is ShadowOutcome.FAIL
    assert verdict.reasons[0].startswith("stopped early: on the candidate's 9 labelled images")


def test_a_time_only_run_has_no_frame_budget_so_agreement_waits_for_the_end():
    run = shadow(frames=0, shadow_seconds=10.0, min_live_agreement=0.5)
    now = feed(run, range(30), lambda f: label(1), lambda f: label(0))
    assert run.verdict(now).outcome is ShadowOutcome.PENDING

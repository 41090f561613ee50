"""Probation health watch: every check, with times passed in."""
from __future__ import annotations

import re

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.health import HealthState, HealthThresholds, HealthWatch

FRAME_S = 0.05  # a 20 Hz camera
GOOD = Prediction(np.array([0, 1], np.int32), np.array([0.9, 0.1], np.float32), ("red", "green"))
BROKEN = Prediction(np.array([0, 1], np.int32), np.array([np.nan, 0.1], np.float32), ("red", "green"))


def stamp(frame: int) -> int:
    return 5_000_000_000 + frame * 50_000_000


def watch(thresholds: HealthThresholds = HealthThresholds(), **acceptance) -> HealthWatch:
    return HealthWatch(AcceptanceSpec(**{"probation_seconds": 5.0, **acceptance}), thresholds)


def run(health: HealthWatch, frames: range, answered=lambda f: True, latency_ms=lambda f: 10.0,
        prediction=lambda f: GOOD, start_s: float = 0.0):
    """Camera frames at 20 Hz, each answered 10 ms later when ``answered``; returns statuses per frame."""
    statuses = []
    for frame in frames:
        now = start_s + frame * FRAME_S
        health.add_input(stamp(frame), now)
        if answered(frame):
            health.add_output(stamp(frame), now + 0.01, latency_ms(frame), prediction(frame).is_finite())
        statuses.append(health.status(now + 0.02))
    return statuses


def test_healthy_probation_warms_up_then_passes_at_the_end_and_stays_passed():
    health = watch()
    statuses = run(health, range(100))  # 0 .. 4.97 s
    assert statuses[0].state is HealthState.WARMING_UP
    assert statuses[30].state is HealthState.HEALTHY
    assert statuses[-1].state is HealthState.HEALTHY
    final = health.status(5.0)
    assert final.state is HealthState.PASSED and final.decided
    assert final.reasons == ()
    assert (final.inputs, final.outputs, final.errors, final.non_finite) == (100, 100, 0, 0)
    assert final.latency_p99_ms == pytest.approx(10.0)
    health.add_error(stamp(101), 5.1)
    assert health.status(5.2) is final


def test_stalled_output_is_unhealthy_after_stall_seconds_while_frames_keep_coming():
    # The output-ratio check would also catch this; switched off to see the stall check alone.
    health = watch(probation_min_answered=0.0)
    statuses = run(health, range(80), answered=lambda f: f < 40)  # output stops at 2.0 s
    first_bad = next(i for i, s in enumerate(statuses) if s.state is HealthState.UNHEALTHY)
    # Frame 40 arrived at 2.0 s; it is a stall once it waited more than 1 s.
    assert first_bad * FRAME_S + 0.02 - 2.0 == pytest.approx(1.02, abs=0.051)
    assert any(re.match(r"no result for 1\.[01] s while camera frames keep arriving", reason)
               and "allowed at most 1.0 s (acceptance.probation_stall_s" in reason
               for reason in statuses[first_bad].reasons)
    assert statuses[first_bad].decided


def test_results_lagging_ever_further_behind_are_a_stall_even_though_results_come():
    health = watch()
    # Each result is for a frame ever older: the node's queue grows.
    for frame in range(60):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        health.add_output(stamp(frame // 2), now + 0.01, 10.0, True)
    status = health.status(60 * FRAME_S)
    assert status.state is HealthState.UNHEALTHY
    assert "no result for" in status.reasons[0]


def test_output_rate_drop_is_unhealthy():
    health = watch()
    statuses = run(health, range(100), answered=lambda f: f < 20 or f % 2 == 0)
    bad = [s for s in statuses if s.state is HealthState.UNHEALTHY]
    assert bad, "half the frames unanswered must fail the 80% bar"
    # Frames seen from 1.0 s (the warm-up is not judged) to 0.5 s ago (the newer ones are within their grace):
    # 10 of 20 is not beyond chance for an 80% model at rate_alpha 0.1% (0.26%); 12 of 24 is (0.09%).
    assert bad[0].reasons == ("only 12 of 24 camera frames got a result within 0.5 s (50%, over the last 1.2 s), "
                              "well below the 80% required (acceptance.probation_min_answered)",)
    assert bad[0].output_ratio == pytest.approx(12 / 24)
    assert bad[0].lowest_rate_tail < HealthThresholds().rate_alpha
    assert bad[0].outputs <= bad[0].inputs


def test_a_shortfall_within_chance_is_healthy():
    # 70% answered against an 80% bar: over 40-60 frames that happens to an 80% model (tail above 1%).
    health = watch()
    statuses = run(health, range(99), answered=lambda f: f % 10 > 2)
    assert {s.state for s in statuses[20:]} == {HealthState.HEALTHY}
    assert health.status(5.0).lowest_output_ratio < 0.8
    assert health.status(5.0).state is HealthState.PASSED


def test_skipping_frames_within_the_ratio_is_healthy():
    health = watch()
    statuses = run(health, range(99), answered=lambda f: f % 10 != 0)
    assert {s.state for s in statuses[20:]} == {HealthState.HEALTHY}


def test_latency_is_reported_not_judged():
    # 50x an old model's 10 ms and a tail of preempted frames: the shadow judged latency side by side;
    # here a model that keeps up with the camera is healthy, whatever its latency.
    health = watch()
    statuses = run(health, range(99), latency_ms=lambda f: 2000.0 if f % 10 == 0 else 500.0)
    assert {s.state for s in statuses[20:]} == {HealthState.HEALTHY}
    final = health.status(5.0)
    assert final.state is HealthState.PASSED
    assert (final.latency_p50_ms, final.latency_p99_ms) == (pytest.approx(500.0), pytest.approx(2000.0))


def test_latency_of_warm_up_frames_is_left_out_of_the_report():
    health = watch()
    run(health, range(100), latency_ms=lambda f: 200.0 if f < 10 else 10.0)
    assert health.status(5.0).latency_p99_ms == pytest.approx(10.0)


def test_nan_output_is_unhealthy_at_once_even_while_warming_up():
    health = watch()
    statuses = run(health, range(10), prediction=lambda f: BROKEN if f == 3 else GOOD)
    assert [s.state for s in statuses[:3]] == [HealthState.WARMING_UP] * 3
    assert statuses[3].state is HealthState.UNHEALTHY
    assert statuses[3].reasons == ("the model output NaN or Inf in 1 of 4 results; none are allowed",)
    assert statuses[9] is statuses[3]


def test_an_exception_is_unhealthy_at_once_when_no_error_is_allowed():
    health = watch(max_error_rate=0.0)
    run(health, range(5))
    health.add_input(stamp(5), 0.25)
    health.add_error(stamp(5), 0.3)
    status = health.status(0.3)
    assert status.state is HealthState.UNHEALTHY
    assert "the model raised an error on 1 of 6 frames" in status.reasons[0]
    assert (status.inputs, status.outputs, status.errors) == (6, 5, 1)


def test_error_rate_is_judged_against_max_error_rate_after_warm_up():
    tolerant, strict = watch(max_error_rate=0.1), watch(max_error_rate=0.05)
    # One early error is a 100% rate on the first frame; it is not judged until warm-up ends.
    run(tolerant, range(100), answered=lambda f: f != 0)
    tolerant.add_error(stamp(0), 0.0)
    assert tolerant.status(5.0).state is HealthState.PASSED
    # Every tenth frame raises: 10% of frames, above the 5% allowed.
    statuses = []
    for frame in range(40):
        now = frame * FRAME_S
        strict.add_input(stamp(frame), now)
        if frame % 10 == 9:
            strict.add_error(stamp(frame), now + 0.01)
        else:
            strict.add_output(stamp(frame), now + 0.01, 10.0, True)
        statuses.append(strict.status(now + 0.02))
    first_bad = next(s for s in statuses if s.state is HealthState.UNHEALTHY)
    assert first_bad.watched_s == pytest.approx(1.02)
    assert first_bad.reasons == ("the model raised an error on 2 of 21 frames (9.5%); the bundle allows at most "
                                 "5.0% (acceptance.max_error_rate)",)


def test_no_camera_frames_during_probation_is_not_a_pass():
    health = watch()
    for tick in range(51):
        status = health.status(tick * 0.1)
    assert status.state is HealthState.UNHEALTHY
    assert "no camera frame arrived during the 5 s probation" in status.reasons[0]


def test_zero_probation_seconds_passes_at_once():
    assert watch(probation_seconds=0.0).status(12.0).state is HealthState.PASSED


def test_simulated_time_jumps_neither_end_probation_nor_fake_a_stall():
    health = watch()
    run(health, range(40))  # 0 .. 1.97 s
    # The simulator skips ahead 60 s: probation is not over, and no frame waited that long.
    assert health.status(61.97).state is HealthState.HEALTHY
    # Then it resets to 0: stamps restart; the frames of the old timeline are forgotten.
    health.add_input(stamp(10_000), 62.0)
    statuses = run(health, range(40))
    assert {s.state for s in statuses} == {HealthState.HEALTHY}
    assert health.status(2.0).watched_s == pytest.approx(1.97 + 1.0 + 1.99, abs=0.05)
    # Probation ends after 5 watched seconds.
    run(health, range(40, 45))
    assert health.status(2.3).state is HealthState.PASSED


@pytest.mark.parametrize("field, value", [
    ("latency_samples", 0), ("max_clock_step_s", 0.0), ("wall_margin_s", float("inf")), ("wall_margin_s", 0.0),
    ("rate_alpha", 0.0), ("rate_alpha", 1.0), ("stall_gap_factor", 0.5),
])
def test_bad_thresholds_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"health threshold {field} "):
        HealthThresholds(**{field: value})


def test_a_bad_latency_is_refused():
    with pytest.raises(ValueError, match="latency"):
        watch().add_output(stamp(0), 0.0, float("nan"), True)


# Frames by stamp: jitter, late and early results, errors -------------------------------------------


def test_results_arriving_late_in_bursts_still_count_for_their_frames():
    # Every result comes, but up to 0.4 s late and four at a time (a transport that buffers).
    health = watch()
    for frame in range(96):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        if frame % 8 == 7:
            for late in range(frame - 7, frame + 1):
                health.add_output(stamp(late), now + 0.01, 10.0, True)
        status = health.status(now + 0.02)
        assert not status.decided, status.reasons
    final = health.status(5.0)
    assert final.state is HealthState.PASSED
    assert final.output_ratio == pytest.approx(1.0) and final.lowest_output_ratio == pytest.approx(1.0)
    assert (final.inputs, final.outputs) == (96, 96)


def test_a_result_heard_before_its_image_answers_it_and_counts_once():
    health = watch()
    for frame in range(100):
        now = frame * FRAME_S
        health.add_output(stamp(frame), now, 10.0, True)
        health.add_output(stamp(frame), now + 0.001, 10.0, True)  # the old node's last results, in the hand-over
        health.add_input(stamp(frame), now + 0.03)
        health.status(now + 0.04)
    final = health.status(5.0)
    assert final.state is HealthState.PASSED
    assert (final.inputs, final.outputs) == (100, 100), "one frame was counted twice"


def test_a_frame_is_judged_only_once_its_grace_has_passed():
    health = watch(probation_answer_grace_s=0.5, probation_stall_s=2.0, probation_min_answered=1.0)
    # Every result arrives 0.4 s after its frame: within the grace, so every frame is answered.
    for frame in range(100):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        if frame >= 8:
            health.add_output(stamp(frame - 8), now, 10.0, True)
        assert not health.status(now + 0.001).decided
    assert health.status(5.0).state is HealthState.PASSED
    # With a tighter grace the frames of the last 0.2 s before each judgement count as unanswered.
    tight = watch(probation_answer_grace_s=0.2, probation_stall_s=2.0, probation_min_answered=1.0)
    for frame in range(100):
        now = frame * FRAME_S
        tight.add_input(stamp(frame), now)
        if frame >= 8:
            tight.add_output(stamp(frame - 8), now, 10.0, True)
        tight.status(now + 0.001)
    assert tight.status(5.0).state is HealthState.UNHEALTHY
    assert "got a result within 0.2 s" in tight.status(5.0).reasons[0]


def test_the_rate_is_not_judged_on_fewer_frames_than_probation_min_frames():
    # A 4 Hz camera holds 12 frames in a 3 s window: too few for a share, whatever it is.
    health = watch(probation_stall_s=4.0)
    for frame in range(20):
        now = frame * 0.25
        health.add_input(stamp(frame), now)
        if frame % 4 == 0:
            health.add_output(stamp(frame), now + 0.01, 10.0, True)
        assert health.status(now + 0.02).output_ratio is None
    assert health.status(5.0).state is HealthState.PASSED
    strict = watch(probation_stall_s=4.0, probation_min_frames=5)
    for frame in range(20):
        now = frame * 0.25
        strict.add_input(stamp(frame), now)
        if frame % 4 == 0:
            strict.add_output(stamp(frame), now + 0.01, 10.0, True)
        strict.status(now + 0.02)
    assert strict.status(5.0).state is HealthState.UNHEALTHY


def test_a_reported_error_answers_its_frame_for_the_rate_and_counts_as_an_error():
    health = watch(max_error_rate=0.2)
    for frame in range(100):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        if frame % 10 == 0:
            health.add_error(stamp(frame), now + 0.01)
            health.add_error(stamp(frame), now + 0.02)  # counted once per frame
        else:
            health.add_output(stamp(frame), now + 0.01, 10.0, True)
        health.status(now + 0.03)
    final = health.status(5.0)
    assert final.state is HealthState.PASSED, final.reasons
    assert (final.inputs, final.outputs, final.errors) == (100, 90, 10)
    assert final.output_ratio == pytest.approx(1.0)


def test_a_model_that_raises_on_every_frame_is_unhealthy_for_its_errors_not_a_stall():
    health = watch()
    statuses = []
    for frame in range(10):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        health.add_error(stamp(frame), now + 0.01)
        statuses.append(health.status(now + 0.02))
    assert statuses[0].state is HealthState.UNHEALTHY
    assert statuses[0].reasons == ("the model raised an error on 1 of 1 frames (100.0%); the bundle allows at "
                                   "most 0.0% (acceptance.max_error_rate)",)


# Wall-clock limit: a paused /clock ---------------------------------------------------------------------


def test_a_paused_clock_ends_probation_unjudged_after_the_wall_clock_limit():
    health = watch(thresholds=HealthThresholds(wall_margin_s=10.0))
    run(health, range(40))  # 2 s of ROS time, then the simulator pauses at 1.97 s
    statuses = [health.status(1.97, wall_s=2.0 + tick * 0.5) for tick in range(40)]
    waiting = [s for s in statuses if not s.decided]
    assert waiting and {s.state for s in waiting} == {HealthState.HEALTHY}
    assert waiting[-1].clock_idle_s == pytest.approx(13.0)
    timed_out = statuses[-1]
    assert timed_out.state is HealthState.TIMED_OUT and timed_out.decided
    assert timed_out.reasons == ("ROS time advanced only 2.0 of the 5 s of probation in 16 s of wall-clock time "
                                 "(allowed 15 s: probation_seconds plus the manager's probation_wall_margin_s); "
                                 "is /clock paused? The model was not judged",)
    assert statuses[-1] is health.status(30.0, wall_s=100.0)


def test_a_moving_clock_is_never_idle_and_passes_however_slowly_the_wall_goes():
    health = watch()
    for frame in range(101):
        now = frame * FRAME_S
        health.add_input(stamp(frame), now)
        health.add_output(stamp(frame), now + 0.01, 10.0, True)
        status = health.status(now + 0.02, wall_s=frame * FRAME_S * 3)  # simulation at a third of real time
        assert status.clock_idle_s <= 3 * FRAME_S + 1e-9
    assert status.state is HealthState.PASSED

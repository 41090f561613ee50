"""The old model's answered share as probation's bar: the tracker, the binomial test, and probation using both."""
from __future__ import annotations

import math
import random

import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec
from robot_model_deployer.validation.answer_rate import (
    MIN_BASELINE_FRAMES, AnswerBaseline, AnswerTracker, binomial_tail, improbably_few)
from robot_model_deployer.validation.health import HealthState, HealthWatch

FRAME_S = 1 / 30


def stamp(frame: int) -> int:
    return 1_000_000_000 + frame * 33_333_333


def test_binomial_tail_matches_the_sum_of_the_probabilities():
    for n, p in ((1, 0.5), (7, 0.3), (40, 0.8), (200, 0.24)):
        for k in range(n + 1):
            exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
            assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert binomial_tail(3, 3, 0.9) == 1.0
    assert binomial_tail(2, 3, 1.0) == 0.0  # a bar of 100%: any unanswered frame fails
    assert binomial_tail(0, 3, 0.0) == 1.0
    with pytest.raises(ValueError):
        binomial_tail(-1, 3, 0.5)
    with pytest.raises(ValueError):
        binomial_tail(0, 0, 0.5)


def test_improbably_few_needs_evidence_not_only_a_lower_share():
    assert improbably_few(3, 5, 0.8, 0.01)[0] is False  # 60% of 5: chance
    assert improbably_few(30, 50, 0.8, 0.01)[0] is True  # 60% of 50: not chance
    too_few, tail = improbably_few(0, 20, 0.24, 0.01)
    assert too_few and tail == pytest.approx(0.76**20)


def test_tracker_gives_the_share_of_heard_frames_answered_after_their_grace():
    tracker = AnswerTracker(window_s=20.0)
    for frame in range(60):
        now = frame * FRAME_S
        tracker.add_frame(stamp(frame), now)
        if frame % 3:
            tracker.add_answer(stamp(frame), now + 0.01)
    tracker.add_answer(stamp(1000), 2.0)  # a result for a frame never heard: not in the share
    baseline = tracker.baseline(60 * FRAME_S, grace_s=0.5)
    assert baseline is not None
    judged = [f for f in range(60) if f * FRAME_S <= 60 * FRAME_S - 0.5]
    assert baseline.frames == len(judged)
    assert baseline.share == pytest.approx(sum(1 for f in judged if f % 3) / len(judged))
    assert baseline.longest_gap_s == pytest.approx(2 * FRAME_S, abs=0.02)


def test_tracker_has_no_baseline_on_too_few_frames_and_forgets_old_ones_and_old_timelines():
    tracker = AnswerTracker(window_s=5.0)
    for frame in range(MIN_BASELINE_FRAMES - 1):
        tracker.add_frame(stamp(frame), frame * 0.1)
    assert tracker.baseline(10.0, 0.5) is None  # and they are older than the window anyway
    for frame in range(100):
        tracker.add_frame(stamp(frame), 10.0 + frame * 0.1)
    assert tracker.baseline(20.0, 0.5).frames == 46  # 15.0 .. 19.5 s
    tracker.add_frame(stamp(0), 1.0)  # the clock went back: a simulation reset
    assert tracker.baseline(1.0, 0.5) is None
    with pytest.raises(ValueError):
        AnswerTracker(window_s=0.0)


def lossy_probation(answers: AnswerBaseline | None, delivered: float, seed: int) -> HealthState:
    """A graph that loses frames at random: the listener hears ``delivered`` of them, the node answers ``delivered``."""
    rng = random.Random(seed)
    health = HealthWatch(AcceptanceSpec(probation_seconds=5.0), answers=answers)
    for frame in range(150):
        now = frame * FRAME_S
        if rng.random() < delivered:
            health.add_input(stamp(frame), now)
        if rng.random() < delivered:
            health.add_output(stamp(frame), now + 0.01, 10.0, True)
        if health.status(now + 0.02).decided:
            break
    return health.status(6.0).state  # past probation_seconds, whenever the first frame came


def test_a_lossy_transport_does_not_roll_back_a_model_that_answers_like_the_old_one():
    # The old model answered 95% of the frames heard: the share is judged, against 80% of 95%.
    old = AnswerBaseline(share=0.95, frames=300, longest_gap_s=0.1)
    assert [lossy_probation(old, 0.95, seed) for seed in range(40)].count(HealthState.PASSED) == 40
    assert HealthState.UNHEALTHY in [lossy_probation(old, 0.4, seed) for seed in range(10)]
    # Held to the absolute bar, a graph that loses 70% of its frames rolls every model back.
    assert HealthState.UNHEALTHY in [lossy_probation(None, 0.3, seed) for seed in range(40)]


def test_on_a_graph_that_loses_frames_for_the_old_model_too_the_share_is_not_judged():
    old = AnswerBaseline(share=0.68, frames=120, longest_gap_s=0.6)
    health = HealthWatch(AcceptanceSpec(probation_seconds=5.0), answers=old)
    assert "the old model answered only 68%" in health.rate_not_judged
    assert [lossy_probation(old, 0.3, seed) for seed in range(40)].count(HealthState.PASSED) == 40
    status = health.status(0.0)
    assert status.rate_not_judged == health.rate_not_judged
    assert HealthWatch(AcceptanceSpec(), answers=AnswerBaseline(0.95, 100, 0.1)).rate_not_judged == ""


def test_a_model_that_stops_answering_is_rolled_back_on_a_lossy_graph_too():
    old = AnswerBaseline(share=0.5, frames=200, longest_gap_s=0.3)  # not judged for share: the stall decides
    health = HealthWatch(AcceptanceSpec(probation_seconds=5.0), answers=old)
    rng = random.Random(1)
    for frame in range(150):
        now = frame * FRAME_S
        if rng.random() < 0.5:
            health.add_input(stamp(frame), now)
        if frame < 60 and rng.random() < 0.5:
            health.add_output(stamp(frame), now + 0.01, 10.0, True)
        health.status(now + 0.02)
    status = health.status(6.0)
    assert status.state is HealthState.UNHEALTHY
    assert status.answered_bar == pytest.approx(0.4) and status.rate_not_judged
    assert any(r.startswith("no result for") for r in status.reasons), status.reasons


def test_the_stall_limit_grows_with_the_old_models_longest_gap():
    acceptance = AcceptanceSpec(probation_seconds=5.0, probation_stall_s=1.0)
    assert HealthWatch(acceptance).stall_limit_s == 1.0
    assert HealthWatch(acceptance, answers=AnswerBaseline(1.0, 100, 0.1)).stall_limit_s == 1.0
    slow_graph = HealthWatch(acceptance, answers=AnswerBaseline(0.2, 40, 0.8))
    assert slow_graph.stall_limit_s == pytest.approx(2.4)
    for frame in range(120):  # answers stop at 1.5 s: a 2 s gap is within 2.4 s, a longer one is not
        now = frame * FRAME_S
        slow_graph.add_input(stamp(frame), now)
        if frame < 45:
            slow_graph.add_output(stamp(frame), now + 0.01, 10.0, True)
        status = slow_graph.status(now + 0.02)
        if now < 3.4:
            assert not any(r.startswith("no result") for r in status.reasons), now
    assert any(r.startswith("no result") and "at most 2.4 s" in r for r in slow_graph.status(4.0).reasons)


def test_answers_for_frames_never_heard_do_not_count_as_judged_frames():
    health = HealthWatch(AcceptanceSpec(probation_seconds=5.0, probation_min_frames=10))
    for frame in range(150):
        now = frame * FRAME_S
        if frame % 2 == 0:
            health.add_input(stamp(frame), now)  # the listener hears half the frames
        health.add_output(stamp(frame), now + 0.01, 10.0, True)  # the node answers all
        health.status(now + 0.02)
    status = health.status(5.0)
    assert status.state is HealthState.PASSED
    assert status.lowest_output_ratio == 1.0

"""The shadow node's frame schedule: rate limit, waiting for the live answer, reference runs, drops."""
from __future__ import annotations

import pytest

from robot_model_deployer.validation.frame_schedule import FrameRun, FrameSchedule, ScheduledFrame, Step

FRAME_NS = 33_000_000  # a 30 Hz camera
START_NS = 7_000_000_000


def stamp(frame: int) -> int:
    return START_NS + frame * FRAME_NS


def started(max_rate: float = 0.0, with_reference: bool = False, **kwargs) -> FrameSchedule[str]:
    schedule: FrameSchedule[str] = FrameSchedule(max_rate, with_reference, **kwargs)
    schedule.start()
    return schedule


class Camera:
    """Drives a schedule like the node does: image, then the live answer; a handed-out frame runs at once."""

    def __init__(self, schedule: FrameSchedule[str]) -> None:
        self.schedule = schedule
        self.dropped = 0
        self.ran: list[tuple[int, FrameRun]] = []

    def _take(self, step: Step[str]) -> None:
        self.dropped += step.dropped
        if step.ready is not None:
            self.ran.append((step.ready.stamp_ns, step.ready.run))
            self.schedule.run_done()

    def frames(self, frames: range) -> None:
        for frame in frames:
            self._take(self.schedule.on_image(stamp(frame), f"frame {frame}"))
            self._take(self.schedule.on_live_answer(stamp(frame)))


def test_a_frame_is_handed_out_only_once_the_live_node_has_answered_it() -> None:
    schedule = started()
    assert schedule.on_image(stamp(0), "pixels") == Step()
    assert schedule.on_live_answer(stamp(1)) == Step(), "an answer to another frame releases nothing"
    step = schedule.on_live_answer(stamp(0))
    assert step == Step(ready=ScheduledFrame(stamp(0), "pixels", FrameRun.CANDIDATE))
    assert schedule.on_image(stamp(2), "while it runs") == Step(dropped=1)


def test_a_frame_whose_answer_came_first_is_handed_out_at_once() -> None:
    schedule = started()
    assert schedule.on_live_answer(stamp(0)) == Step()
    step = schedule.on_image(stamp(0), "pixels")
    assert step.ready == ScheduledFrame(stamp(0), "pixels", FrameRun.CANDIDATE) and step.dropped == 0


def test_only_the_last_answers_are_remembered() -> None:
    schedule = started(answered_memory=4)
    for frame in range(5):
        schedule.on_live_answer(stamp(frame))
    assert schedule.on_image(stamp(0), "old").ready is None, "the answer to frame 0 is forgotten"
    assert schedule.on_image(stamp(1), "newer").ready is not None


def test_every_frame_runs_without_a_rate_limit_or_reference() -> None:
    camera = Camera(started())
    camera.frames(range(10))
    assert camera.ran == [(stamp(f), FrameRun.CANDIDATE) for f in range(10)]
    assert camera.dropped == 0


def test_max_rate_keeps_candidate_frames_apart_and_counts_the_rest_as_dropped() -> None:
    camera = Camera(started(max_rate=10.0))  # 100 ms apart: every fourth 33 ms frame
    camera.frames(range(12))
    assert [s for s, _ in camera.ran] == [stamp(0), stamp(4), stamp(8)]
    assert camera.dropped == 9


def test_after_each_candidate_frame_the_next_one_times_the_reference() -> None:
    camera = Camera(started(with_reference=True))
    camera.frames(range(6))
    assert [run for _, run in camera.ran] == [FrameRun.CANDIDATE, FrameRun.REFERENCE] * 3
    assert camera.dropped == 3, "reference frames are frames the candidate did not run on"


def test_the_reference_frame_does_not_wait_for_the_rate_limit() -> None:
    camera = Camera(started(max_rate=10.0, with_reference=True))
    camera.frames(range(9))
    assert camera.ran == [(stamp(0), FrameRun.CANDIDATE), (stamp(1), FrameRun.REFERENCE),
                          (stamp(4), FrameRun.CANDIDATE), (stamp(5), FrameRun.REFERENCE),
                          (stamp(8), FrameRun.CANDIDATE)]
    assert camera.dropped == 6  # two reference frames, four within 100 ms of a candidate frame


def test_frames_arriving_while_a_model_runs_are_dropped_not_queued() -> None:
    schedule = started()
    assert schedule.on_live_answer(stamp(0)) == Step()
    assert schedule.on_image(stamp(0), "first").ready is not None
    for frame in (1, 2, 3):
        assert schedule.on_image(stamp(frame), "late") == Step(dropped=1)
        assert schedule.on_live_answer(stamp(frame)) == Step()
    schedule.run_done()
    assert schedule.on_image(stamp(4), "next") == Step(), "the next frame waits for its own answer"
    assert schedule.on_live_answer(stamp(4)).ready == ScheduledFrame(stamp(4), "next", FrameRun.CANDIDATE)


def test_a_candidate_frame_the_live_node_never_answered_is_replaced_and_counted() -> None:
    schedule = started()
    assert schedule.on_image(stamp(0), "unanswered") == Step()
    assert schedule.on_image(stamp(1), "newer") == Step(dropped=1)
    assert schedule.on_live_answer(stamp(0)) == Step(), "the replaced frame is gone"
    assert schedule.on_live_answer(stamp(1)).ready.payload == "newer"


def test_a_waiting_reference_frame_replaced_by_a_newer_one_is_counted_once() -> None:
    schedule = started(with_reference=True)
    schedule.on_live_answer(stamp(0))
    schedule.on_image(stamp(0), "candidate")
    schedule.run_done()
    assert schedule.on_image(stamp(1), "reference") == Step(dropped=1)
    assert schedule.on_image(stamp(2), "reference again") == Step(dropped=1)
    assert schedule.on_live_answer(stamp(2)).ready == ScheduledFrame(stamp(2), "reference again", FrameRun.REFERENCE)


def test_nothing_is_taken_or_counted_before_start_or_after_stop() -> None:
    schedule: FrameSchedule[str] = FrameSchedule(0.0, with_reference=False)
    assert not schedule.active
    assert schedule.on_live_answer(stamp(0)) == Step()
    assert schedule.on_image(stamp(0), "before start") == Step()
    schedule.start()
    assert schedule.on_image(stamp(0), "not yet answered before start") == Step(), \
        "answers heard while stopped are not remembered"
    schedule.stop()
    assert schedule.on_live_answer(stamp(0)) == Step(), "stop forgets the waiting frame"
    assert schedule.on_image(stamp(1), "after stop") == Step()


def test_a_frame_running_when_stopped_keeps_the_schedule_busy_until_it_finishes() -> None:
    schedule = started()
    schedule.on_live_answer(stamp(0))
    schedule.on_image(stamp(0), "running")
    schedule.stop()
    schedule.start()
    assert schedule.on_image(stamp(1), "while it runs") == Step(dropped=1)
    schedule.run_done()
    schedule.on_live_answer(stamp(2))
    assert schedule.on_image(stamp(2), "after").ready is not None


def test_run_done_without_a_frame_handed_out_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without a frame handed out"):
        started().run_done()


@pytest.mark.parametrize("max_rate", [-1.0, float("nan"), float("inf")])
def test_max_rate_must_be_a_finite_rate_or_zero(max_rate: float) -> None:
    with pytest.raises(ValueError, match="max_rate must be >= 0"):
        FrameSchedule(max_rate, with_reference=False)
